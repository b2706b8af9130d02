-- REST data API: the DDL doorbell that reloads the schema cache, and stored responses of
-- writes sent with an Idempotency-Key.

-- Rings `rowcast_rest_schema` after any DDL, so an `alter table` in psql reaches the REST
-- schema cache without a restart. The notification carries nothing: the server reloads
-- the whole catalog snapshot whenever it rings.
create or replace function rowcast.rest_schema_changed() returns event_trigger
language plpgsql
as $$
begin
  perform pg_notify('rowcast_rest_schema', '');
end $$;

-- Event triggers need a superuser. Without one (managed Postgres), the cache is reloaded
-- by POST /rest/v1/admin/reload-schema instead.
do $$
begin
  if not exists (select 1 from pg_event_trigger where evtname = 'rowcast_rest_ddl') then
    create event trigger rowcast_rest_ddl on ddl_command_end
      execute function rowcast.rest_schema_changed();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'rowcast_rest_drop') then
    create event trigger rowcast_rest_drop on sql_drop
      execute function rowcast.rest_schema_changed();
  end if;
exception when insufficient_privilege then
  raise notice 'cannot create the REST schema event triggers (needs a superuser); reload the schema cache with POST /rest/v1/admin/reload-schema after DDL';
end $$;

-- One row per (key, caller, method, path). Written in the same transaction as the write
-- it answers for, so a crash can never leave a write applied without its stored response
-- (or the reverse). Only the server's own role touches it; request roles have no grant.
create table if not exists rowcast.rest_idempotency (
  key          text        not null,
  subject      text        not null,
  method       text        not null,
  path         text        not null,
  request_hash text        not null,
  status       smallint,
  headers      jsonb,
  body         text,
  created_at   timestamptz not null default now(),
  primary key (key, subject, method, path)
);

create index if not exists rest_idempotency_created_at on rowcast.rest_idempotency (created_at);
