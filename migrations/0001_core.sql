-- Rowcast core: the schema, the roles requests run as, and the helpers policies use.
--
-- Roles are cluster-wide, so creating them tolerates another database (or a concurrent
-- instance) having created them first.
create schema if not exists rowcast;

do $$
declare
  r text;
begin
  foreach r in array array['rowcast_anon', 'rowcast_authenticated', 'rowcast_service'] loop
    begin
      if not exists (select 1 from pg_roles where rolname = r) then
        execute format('create role %I nologin', r);
      end if;
    exception when duplicate_object or unique_violation then
      null;
    end;
  end loop;
end $$;

-- The service role is for admin tooling and bypasses row-level security. Only a superuser
-- may grant BYPASSRLS; on managed Postgres without one, an operator sets it once.
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    alter role rowcast_service bypassrls;
  end if;
exception when others then
  raise notice 'could not grant bypassrls to rowcast_service: %', sqlerrm;
end $$;

-- The server's login role switches into these per transaction.
do $$
begin
  execute format('grant rowcast_anon, rowcast_authenticated, rowcast_service to %I', current_user);
exception when others then
  raise notice 'could not grant request roles to %: %', current_user, sqlerrm;
end $$;

grant usage on schema rowcast to rowcast_anon, rowcast_authenticated, rowcast_service;

-- The verified claims of the current request, as set by the server with
-- set_config('rowcast.claims', …, true). Empty object outside a request.
create or replace function rowcast.claims() returns jsonb
language sql stable
as $$
  select coalesce(nullif(current_setting('rowcast.claims', true), ''), '{}')::jsonb
$$;

-- The current user's id (the `sub` claim), or null when anonymous.
create or replace function rowcast.uid() returns uuid
language sql stable
as $$
  select nullif(rowcast.claims() ->> 'sub', '')::uuid
$$;

-- The request's role claim: 'anon', 'authenticated' or 'service'.
create or replace function rowcast.role() returns text
language sql stable
as $$
  select coalesce(rowcast.claims() ->> 'role', 'anon')
$$;

grant execute on function rowcast.claims(), rowcast.uid(), rowcast.role()
  to rowcast_anon, rowcast_authenticated, rowcast_service;
