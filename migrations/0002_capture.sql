-- Change capture: the durable change log of synced tables, the per-row version, the capture
-- triggers, the optional NOTIFY doorbell, and the functions admins use to opt tables in.
--
-- Correctness rests on the log alone: a reader takes rows in (xid, id) order and only below
-- pg_snapshot_xmin(pg_current_snapshot()), so a transaction that commits late can delay
-- delivery but never be skipped. NOTIFY only says "look now". See docs/adr/0001-change-capture.md.

-- Per-row versions come from one global sequence, so a key deleted and inserted again still
-- gets a larger version, and TRUNCATE gets a version that orders it against row writes.
create sequence rowcast.row_version_seq;

create table rowcast.change_log (
    -- Top-level transaction id: 64-bit, never wraps, equal for every row of a transaction.
    xid          xid8        not null default pg_current_xact_id(),
    -- Order within a transaction (drawn at write time; gaps are normal).
    id           bigint      not null generated always as identity,
    -- Transaction start time; used for retention and lag only, never for ordering.
    created_at   timestamptz not null default now(),
    table_schema text        not null,
    table_name   text        not null,
    -- I insert, U update, D delete, T truncate.
    op           "char"      not null check (op in ('I', 'U', 'D', 'T')),
    -- The primary key as a JSON object; null for T.
    pk           jsonb,
    -- The row's version after this change (the tombstone's for D, the truncate's for T).
    version      bigint      not null,
    new_row      jsonb,
    old_row      jsonb,
    primary key (xid, id)
);

-- The largest (xid, id) ever pruned. A cursor below it may have missed changes: resync.
create table rowcast.change_floor (
    one bool   primary key default true check (one),
    xid xid8   not null default '0',
    id  bigint not null default 0
);
insert into rowcast.change_floor default values;

-- Which tables are synced, with their primary-key columns.
create table rowcast.synced (
    rel        oid         primary key,
    pk_columns text[]      not null,
    enabled_at timestamptz not null default now()
);

-- BEFORE ROW (INSERT, UPDATE): stamp the row's version. For UPDATE, row BEFORE triggers run
-- after the executor holds the newest tuple version's lock, so one key's versions follow its
-- commit order. The trigger's name sorts last so other BEFORE triggers have changed NEW.
create function rowcast.bump_version() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
begin
  new._v := nextval('rowcast.row_version_seq');
  return new;
end $$;

-- AFTER ROW: append the change to the log in the writer's transaction. TG_ARGV holds the
-- primary-key columns. A primary-key change is logged as D (old key) + I (new key).
-- SECURITY DEFINER: any writing role is captured without rights on the log.
--
-- Versions: U carries the _v the BEFORE trigger stored (drawn under the row lock). I and D
-- draw a fresh version here, after the statement's unique-index checks, which wait for a
-- concurrent deleter/inserter of the same key to commit: so a key deleted by one
-- transaction and inserted by another gets versions in their commit order. An I's version
-- is therefore >= the _v stored in the row (snapshot reads see the stored one).
create function rowcast.capture_row() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  n  jsonb;
  o  jsonb;
  kn jsonb := '{}';
  ko jsonb := '{}';
  i  int;
begin
  if tg_op <> 'DELETE' then n := to_jsonb(new); end if;
  if tg_op <> 'INSERT' then o := to_jsonb(old); end if;
  for i in 0 .. tg_nargs - 1 loop
    if n is not null then kn := kn || jsonb_build_object(tg_argv[i], n -> tg_argv[i]); end if;
    if o is not null then ko := ko || jsonb_build_object(tg_argv[i], o -> tg_argv[i]); end if;
  end loop;
  if tg_op = 'INSERT' then
    insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row)
    values (tg_table_schema, tg_table_name, 'I', kn, nextval('rowcast.row_version_seq'), n);
  elsif tg_op = 'UPDATE' then
    if kn = ko then
      insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row, old_row)
      values (tg_table_schema, tg_table_name, 'U', kn, (n ->> '_v')::bigint, n, o);
    else
      insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row, old_row)
      values (tg_table_schema, tg_table_name, 'D', ko, nextval('rowcast.row_version_seq'), null, o),
             (tg_table_schema, tg_table_name, 'I', kn, nextval('rowcast.row_version_seq'), n, null);
    end if;
  else
    insert into rowcast.change_log (table_schema, table_name, op, pk, version, old_row)
    values (tg_table_schema, tg_table_name, 'D', ko, nextval('rowcast.row_version_seq'), o);
  end if;
  return null;
end $$;

-- AFTER TRUNCATE (statement): row triggers do not fire on TRUNCATE. The version is drawn
-- while TRUNCATE holds its ACCESS EXCLUSIVE lock, so every row written before it has a
-- smaller version and every row written after it a larger one.
create function rowcast.capture_truncate() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
begin
  insert into rowcast.change_log (table_schema, table_name, op, version)
  values (tg_table_schema, tg_table_name, 'T', nextval('rowcast.row_version_seq'));
  return null;
end $$;

-- The doorbell: statement-level with a constant payload, so Postgres folds it into at most
-- one notification per writing transaction. Created disabled: a server started with
-- ROWCAST_NOTIFY=true enables it (ENABLE ALWAYS), one started with false disables it.
create function rowcast.ring_doorbell() returns trigger
language plpgsql
as $$
begin
  perform pg_notify('rowcast_changes', '');
  return null;
end $$;

create trigger rowcast_doorbell after insert on rowcast.change_log
  for each statement execute function rowcast.ring_doorbell();
alter table rowcast.change_log disable trigger rowcast_doorbell;

-- Opt a table in. Idempotent; re-run it after changing the table's primary key.
create function rowcast.enable_sync(target regclass) returns void
language plpgsql set search_path = pg_catalog, rowcast
as $$
declare
  q      text := target::text;
  kind   "char";
  pk     text[];
  v_type text;
  args   text;
begin
  select relkind into kind from pg_class where oid = target;
  if kind in ('v', 'm') then
    raise exception 'rowcast.enable_sync: % is a view; only tables can be synced', q
      using errcode = 'wrong_object_type';
  elsif kind = 'p' then
    raise exception 'rowcast.enable_sync: % is a partitioned table, which is not supported yet', q
      using errcode = 'feature_not_supported';
  elsif kind is distinct from 'r' then
    raise exception 'rowcast.enable_sync: % is not a table', q
      using errcode = 'wrong_object_type';
  end if;

  select array_agg(a.attname::text order by k.ord) into pk
  from pg_index i
  cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
  where i.indrelid = target and i.indisprimary;
  if pk is null then
    raise exception 'rowcast.enable_sync: table % has no primary key', q
      using errcode = 'invalid_table_definition',
            hint = format('add one, e.g. ALTER TABLE %s ADD PRIMARY KEY (id), then enable sync again', q);
  end if;
  if '_v' = any (pk) then
    raise exception 'rowcast.enable_sync: table % uses _v in its primary key; Rowcast keeps row versions in _v', q
      using errcode = 'invalid_table_definition';
  end if;

  select format_type(atttypid, atttypmod) into v_type
  from pg_attribute where attrelid = target and attname = '_v' and not attisdropped;
  if v_type is null then
    -- No default: adding the column is a catalog change, not a table rewrite. Rows that
    -- predate sync have version null, which readers treat as 0.
    execute format('alter table %s add column _v bigint', q);
  elsif v_type <> 'bigint' then
    raise exception 'rowcast.enable_sync: table % already has a column _v of type %; Rowcast needs _v bigint', q, v_type
      using errcode = 'invalid_table_definition';
  end if;

  select string_agg(quote_literal(c), ', ') into args from unnest(pk) as c;
  execute format('create or replace trigger zz_rowcast_version before insert or update on %s
                  for each row execute function rowcast.bump_version()', q);
  execute format('create or replace trigger zz_rowcast_capture after insert or update or delete on %s
                  for each row execute function rowcast.capture_row(%s)', q, args);
  execute format('create or replace trigger zz_rowcast_truncate after truncate on %s
                  for each statement execute function rowcast.capture_truncate()', q);
  -- ENABLE ALWAYS: still fire under session_replication_role = replica.
  execute format('alter table %s enable always trigger zz_rowcast_version', q);
  execute format('alter table %s enable always trigger zz_rowcast_capture', q);
  execute format('alter table %s enable always trigger zz_rowcast_truncate', q);

  delete from rowcast.synced s where not exists (select 1 from pg_class c where c.oid = s.rel);
  insert into rowcast.synced (rel, pk_columns) values (target, pk)
  on conflict (rel) do update set pk_columns = excluded.pk_columns;
end $$;

-- Opt a table out: removes every trigger enable_sync added and the _v column, and logs a T
-- so subscribers drop what they hold of it. Idempotent.
create function rowcast.disable_sync(target regclass) returns void
language plpgsql set search_path = pg_catalog, rowcast
as $$
declare
  q   text := target::text;
  was boolean;
begin
  execute format('drop trigger if exists zz_rowcast_version on %s', q);
  execute format('drop trigger if exists zz_rowcast_capture on %s', q);
  execute format('drop trigger if exists zz_rowcast_truncate on %s', q);
  delete from rowcast.synced where rel = target returning true into was;
  if was then
    if exists (select 1 from pg_attribute where attrelid = target and attname = '_v' and not attisdropped) then
      execute format('alter table %s drop column _v', q);
    end if;
    insert into rowcast.change_log (table_schema, table_name, op, version)
    select n.nspname, c.relname, 'T', nextval('rowcast.row_version_seq')
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.oid = target;
  end if;
end $$;

create function rowcast.synced_tables()
returns table (table_schema text, table_name text, primary_key text[], enabled_at timestamptz)
language sql stable set search_path = pg_catalog, rowcast
as $$
  select n.nspname::text, c.relname::text, s.pk_columns, s.enabled_at
  from rowcast.synced s
  join pg_class c on c.oid = s.rel
  join pg_namespace n on n.oid = c.relnamespace
  order by 1, 2
$$;

-- Changing what is synced is for table owners and admins, not request roles.
revoke execute on function rowcast.enable_sync(regclass), rowcast.disable_sync(regclass) from public;
