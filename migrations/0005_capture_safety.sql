-- Change capture, second round (issue 14 and the doorbell of issue 13):
--   1. the `_v`/tombstone race closed: an INSERT (or the new-key half of a key change) whose
--      stored `_v` may be older than a concurrent delete's tombstone is re-stamped;
--   2. schema changes and anything that silently stops capture on a synced table become an
--      'S' event in the log, in log order, and a status in rowcast.synced_tables();
--   3. the NOTIFY doorbell rings at most once per 20 ms per database instead of on every
--      writing transaction, so it can be on by default without serializing writers;
--   4. live readers register their position so count-based retention never prunes past it;
--   5. enable_sync grants SELECT on `_v` to roles with column-level SELECT on the table.
-- Tables synced under 0002's triggers are upgraded below: the trigger functions keep their
-- names and are replaced in place, and their shape and status are recorded.
-- See docs/adr/0001-change-capture.md.

-- 1. The race. An INSERT's stored `_v` is drawn in the BEFORE trigger, before the unique
-- check, which may wait for (or follow) a concurrent DELETE of the same key whose tombstone
-- version is drawn later. Every tombstone ticks `rowcast.tombstones` right after drawing its
-- version; the BEFORE trigger notes the tick count (once per transaction, before drawing any
-- version); the AFTER trigger of an insert compares. If a tombstone was drawn since, the row
-- might carry a `_v` below it, so it is rewritten once (`update … set _v = _v`, which draws
-- a new version under the row lock and logs a U). Writes that race no delete pay two
-- sequence reads.
create sequence rowcast.tombstones;
select setval('rowcast.tombstones', 1, true);

-- The mark is "<tombstone ticks> <last version drawn>" as of this transaction's first stamp
-- (rowcast.capture_mark, transaction-local). INSERTs get `_v` from the column default below
-- (no PL/pgSQL call per row); UPDATEs from this BEFORE trigger, which runs after the
-- executor holds the row lock.
create or replace function rowcast.bump_version() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
begin
  if coalesce(current_setting('rowcast.capture_mark', true), '') = '' then
    perform set_config('rowcast.capture_mark',
                       coalesce(pg_sequence_last_value('rowcast.tombstones'::regclass), 0)::text || ' '
                       || coalesce(pg_sequence_last_value('rowcast.row_version_seq'::regclass), 0)::text, true);
  end if;
  new._v := nextval('rowcast.row_version_seq');
  return new;
end $$;

-- The `_v` default of synced tables: note the mark (once per transaction), then draw the
-- version. Built-in functions only, evaluated in C. Runs as the inserting role, hence the
-- grants (USAGE on the version sequence lets a role draw versions, nothing more).
create or replace function rowcast.version_default_sql() returns text
language sql immutable
as $f$ select $d$(case when coalesce(set_config('rowcast.capture_mark', coalesce(nullif(current_setting('rowcast.capture_mark', true), ''), coalesce(pg_sequence_last_value('rowcast.tombstones'::regclass), 0)::text || ' ' || coalesce(pg_sequence_last_value('rowcast.row_version_seq'::regclass), 0)::text), true), '') is not null then nextval('rowcast.row_version_seq'::regclass) end)$d$ $f$;
grant usage, select on sequence rowcast.row_version_seq, rowcast.tombstones to public;

-- Whether a row stamped under `mark` may carry a `_v` below a concurrent tombstone: a
-- tombstone ticked since the mark.
create or replace function rowcast.raced(mark text) returns boolean
language sql volatile
as $$ select pg_sequence_last_value('rowcast.tombstones'::regclass)
              > coalesce(nullif(split_part(coalesce(mark, ''), ' ', 1), ''), '0')::bigint $$;

-- Rewrite the row with primary key `key` (a JSON object) of `rel` so its `_v` is drawn now.
create or replace function rowcast.restamp(rel regclass, pk text[], key jsonb) returns void
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  cond text;
begin
  select string_agg(format('t.%1$I = r.%1$I', c), ' and ') into cond from unnest(pk) as c;
  execute format('update %1$s t set _v = t._v from jsonb_populate_record(null::%1$s, $1) r where %2$s',
                 rel, cond)
    using key;
end $$;

create or replace function rowcast.capture_row() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  n  jsonb;
  o  jsonb;
  kn jsonb;
  ko jsonb;
  i  int;
  raced boolean := false;
begin
  if tg_op <> 'DELETE' then n := to_jsonb(new); end if;
  if tg_op <> 'INSERT' then o := to_jsonb(old); end if;
  if tg_nargs = 1 then
    -- The common single-column key without a loop.
    if n is not null then kn := jsonb_build_object(tg_argv[0], n -> tg_argv[0]); end if;
    if o is not null then ko := jsonb_build_object(tg_argv[0], o -> tg_argv[0]); end if;
  else
    if n is not null then kn := '{}'; end if;
    if o is not null then ko := '{}'; end if;
    for i in 0 .. tg_nargs - 1 loop
      if n is not null then kn := kn || jsonb_build_object(tg_argv[i], n -> tg_argv[i]); end if;
      if o is not null then ko := ko || jsonb_build_object(tg_argv[i], o -> tg_argv[i]); end if;
    end loop;
  end if;
  if tg_op = 'INSERT' then
    insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row)
    values (tg_table_schema, tg_table_name, 'I', kn, nextval('rowcast.row_version_seq'), n);
    raced := true;
  elsif tg_op = 'UPDATE' then
    if kn = ko then
      insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row, old_row)
      values (tg_table_schema, tg_table_name, 'U', kn, (n ->> '_v')::bigint, n, o);
    else
      insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row, old_row)
      values (tg_table_schema, tg_table_name, 'D', ko, nextval('rowcast.row_version_seq'), null, o),
             (tg_table_schema, tg_table_name, 'I', kn, nextval('rowcast.row_version_seq'), n, null);
      -- The new key's stored `_v` may be older than a concurrent delete of that key: check
      -- before this change ticks for its own tombstone (the old key's).
      if pg_sequence_last_value('rowcast.tombstones'::regclass)
           > coalesce(nullif(split_part(coalesce(current_setting('rowcast.capture_mark', true), ''), ' ', 1), ''), '0')::bigint then
        perform rowcast.restamp(tg_relid, tg_argv, kn);
      end if;
      perform nextval('rowcast.tombstones');
    end if;
  else
    insert into rowcast.change_log (table_schema, table_name, op, pk, version, old_row)
    values (tg_table_schema, tg_table_name, 'D', ko, nextval('rowcast.row_version_seq'), o);
    -- After the tombstone's version is drawn: an inserter that noted the count before
    -- drawing its `_v` sees this tick if and only if the tombstone may be above its `_v`.
    perform nextval('rowcast.tombstones');
  end if;
  if raced and rowcast.raced(current_setting('rowcast.capture_mark', true)) then
    perform rowcast.restamp(tg_relid, tg_argv, kn);
  end if;
  return null;
end $$;

-- Statement-level capture (issue 14): one PL/pgSQL call and one INSERT … SELECT into the log
-- per statement, over its transition tables, instead of one call and one INSERT per row.
-- Same rows in the log as capture_row writes, in the same order within the statement
-- (transition tables keep the order rows were processed in), same versions: U carries the
-- `_v` the BEFORE trigger drew under the row lock; I and D draw theirs here, after the
-- statement's unique checks. An UPDATE's old and new rows are paired by primary key (a
-- transition table has no row identity): a key present before and after is a U, a key
-- only before is a D, a key only after is an I, which is how a key change is logged.
-- TG_ARGV holds the primary-key columns. capture_row stays for 0002-era triggers.
create or replace function rowcast.pk_of(j jsonb, cols text[]) returns jsonb
language sql immutable parallel safe
as $$ select jsonb_object_agg(c, j -> c) from unnest(cols) as c $$;

create or replace function rowcast.capture_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  keys jsonb;
  mark text := current_setting('rowcast.capture_mark', true);
  vmark bigint := coalesce(nullif(split_part(coalesce(mark, ''), ' ', 2), ''), '0')::bigint;
  one text := case when tg_nargs = 1 then tg_argv[0] end;
begin
  insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row)
  select tg_table_schema, tg_table_name, 'I',
         case when one is not null then jsonb_build_object(one, j -> one) else rowcast.pk_of(j, tg_argv) end,
         nextval('rowcast.row_version_seq'), j
  from (select to_jsonb(r) as j from rowcast_new r) x;
  -- Re-stamp rows that may carry a `_v` below a concurrent tombstone, and rows whose `_v`
  -- did not come from the default in this transaction (written explicitly, e.g. copied
  -- from another synced table with INSERT … SELECT *).
  if rowcast.raced(mark) then
    select jsonb_agg(rowcast.pk_of(to_jsonb(r), tg_argv)) into keys from rowcast_new r;
  else
    select jsonb_agg(rowcast.pk_of(to_jsonb(r), tg_argv)) into keys
    from rowcast_new r where r._v is null or r._v <= vmark;
  end if;
  if keys is not null then
    perform rowcast.restamp_many(tg_relid, tg_argv, keys);
  end if;
  return null;
end $$;

create or replace function rowcast.capture_update() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  keys jsonb;
  gone boolean;
  one text := case when tg_nargs = 1 then tg_argv[0] end;
begin
  with o as (select j, case when one is not null then jsonb_build_object(one, j -> one)
                            else rowcast.pk_of(j, tg_argv) end as k,
                    row_number() over () as ord
             from (select to_jsonb(r) as j from rowcast_old r) x),
       n as (select j, case when one is not null then jsonb_build_object(one, j -> one)
                            else rowcast.pk_of(j, tg_argv) end as k,
                    row_number() over () as ord
             from (select to_jsonb(r) as j from rowcast_new r) x),
       pairs as (
         select coalesce(n.k, o.k) as k, o.j as oj, n.j as nj, coalesce(n.ord, o.ord) as ord
         from o full join n on o.k = n.k),
       logged as (
         insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row, old_row)
         select tg_table_schema, tg_table_name,
                case when oj is null then 'I' when nj is null then 'D' else 'U' end,
                k,
                case when oj is not null and nj is not null then (nj ->> '_v')::bigint
                     else nextval('rowcast.row_version_seq') end,
                nj, oj
         from pairs
         -- D before I, as capture_row logs a key change; otherwise the statement's order.
         order by case when nj is null then 0 else 1 end, ord
         returning op, pk)
  select bool_or(op = 'D'), jsonb_agg(pk) filter (where op = 'I') into gone, keys from logged;
  -- A new key's stored `_v` may be older than a concurrent delete of that key: check
  -- before this statement ticks for its own tombstones.
  if keys is not null and rowcast.raced(current_setting('rowcast.capture_mark', true)) then
    perform rowcast.restamp_many(tg_relid, tg_argv, keys);
  end if;
  if gone then
    perform nextval('rowcast.tombstones');
  end if;
  return null;
end $$;

create or replace function rowcast.capture_delete() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  n bigint;
  one text := case when tg_nargs = 1 then tg_argv[0] end;
begin
  insert into rowcast.change_log (table_schema, table_name, op, pk, version, old_row)
  select tg_table_schema, tg_table_name, 'D',
         case when one is not null then jsonb_build_object(one, j -> one) else rowcast.pk_of(j, tg_argv) end,
         nextval('rowcast.row_version_seq'), j
  from (select to_jsonb(r) as j from rowcast_old r) x;
  get diagnostics n = row_count;
  -- After every tombstone's version is drawn (see rowcast.tombstones).
  if n > 0 then
    perform nextval('rowcast.tombstones');
  end if;
  return null;
end $$;

-- Rewrite the rows with primary keys `keys` (a JSON array of objects) so their `_v` is
-- drawn now (the bulk form of rowcast.restamp).
create or replace function rowcast.restamp_many(rel regclass, pk text[], keys jsonb) returns void
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  cond text;
begin
  select string_agg(format('t.%1$I = r.%1$I', c), ' and ') into cond from unnest(pk) as c;
  execute format('update %1$s t set _v = t._v from jsonb_populate_recordset(null::%1$s, $1) r where %2$s',
                 rel, cond)
    using keys;
end $$;

-- Install (or re-install, for a new key) the capture triggers on `target`. Called with
-- rowcast.in_sync_ddl set, so the event trigger ignores the intermediate states.
create or replace function rowcast.install_capture(target regclass, pk text[]) returns void
language plpgsql set search_path = pg_catalog, rowcast
as $$
declare
  q    text := target::text;
  args text;
begin
  select string_agg(quote_literal(c), ', ') into args from unnest(pk) as c;
  execute format('drop trigger if exists zz_rowcast_capture on %s', q);
  execute format('drop trigger if exists zz_rowcast_capture_update on %s', q);
  execute format('drop trigger if exists zz_rowcast_capture_delete on %s', q);
  execute format('alter table %s alter column _v set default %s', q, rowcast.version_default_sql());
  execute format('create or replace trigger zz_rowcast_version before update on %s
                  for each row execute function rowcast.bump_version()', q);
  execute format('create trigger zz_rowcast_capture after insert on %s
                  referencing new table as rowcast_new
                  for each statement execute function rowcast.capture_insert(%s)', q, args);
  execute format('create trigger zz_rowcast_capture_update after update on %s
                  referencing old table as rowcast_old new table as rowcast_new
                  for each statement execute function rowcast.capture_update(%s)', q, args);
  execute format('create trigger zz_rowcast_capture_delete after delete on %s
                  referencing old table as rowcast_old
                  for each statement execute function rowcast.capture_delete(%s)', q, args);
  execute format('create or replace trigger zz_rowcast_truncate after truncate on %s
                  for each statement execute function rowcast.capture_truncate()', q);
  -- ENABLE ALWAYS: still fire under session_replication_role = replica.
  execute format('alter table %s enable always trigger zz_rowcast_version', q);
  execute format('alter table %s enable always trigger zz_rowcast_capture', q);
  execute format('alter table %s enable always trigger zz_rowcast_capture_update', q);
  execute format('alter table %s enable always trigger zz_rowcast_capture_delete', q);
  execute format('alter table %s enable always trigger zz_rowcast_truncate', q);
end $$;
revoke execute on function rowcast.install_capture(regclass, text[]), rowcast.restamp_many(regclass, text[], jsonb) from public;

-- 2. Schema changes and capture health.
alter table rowcast.change_log drop constraint change_log_op_check;
-- S: a schema change or a change in capture's state on the table; consumers resync it.
-- NOT VALID: existing rows are known to satisfy it, and validating would scan the log.
alter table rowcast.change_log add constraint change_log_op_check
  check (op in ('I', 'U', 'D', 'T', 'S')) not valid;

alter table rowcast.synced add column shape jsonb;
alter table rowcast.synced add column status text not null default 'ok';
alter table rowcast.synced add column status_since timestamptz not null default now();

-- The shape consumers see of a table: its name, columns (name and type, in order) and key.
create or replace function rowcast.table_shape(rel oid) returns jsonb
language sql stable set search_path = pg_catalog, rowcast
as $$
  select jsonb_build_object(
    'schema', n.nspname::text,
    'name', c.relname::text,
    'columns', (select coalesce(jsonb_agg(jsonb_build_array(a.attname::text, format_type(a.atttypid, a.atttypmod))
                                          order by a.attnum), '[]'::jsonb)
                from pg_attribute a where a.attrelid = rel and a.attnum > 0 and not a.attisdropped),
    'primary_key', (select coalesce(jsonb_agg(a.attname::text order by k.ord), '[]'::jsonb)
                    from pg_index i
                    cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
                    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                    where i.indrelid = rel and i.indisprimary))
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.oid = rel
$$;

-- Whether capture works on a table: 'ok'; 'triggers-missing' (one of the five is gone);
-- 'triggers-disabled' (ALTER TABLE … DISABLE TRIGGER); 'origin-only' (re-enabled without
-- ALWAYS, so writes under session_replication_role = replica are missed); 'no-primary-key';
-- 'no-version-column'.
create or replace function rowcast.capture_status(rel oid) returns text
language sql stable set search_path = pg_catalog, rowcast
as $$
  select case
    when count(t.tgname) < 5 then 'triggers-missing'
    when bool_or(t.tgenabled = 'D') then 'triggers-disabled'
    when bool_or(t.tgenabled <> 'A') then 'origin-only'
    when not exists (select 1 from pg_index i where i.indrelid = rel and i.indisprimary) then 'no-primary-key'
    when not exists (select 1 from pg_attribute a where a.attrelid = rel and a.attname = '_v' and not a.attisdropped)
      then 'no-version-column'
    else 'ok' end
  from (select 1) one
  left join pg_trigger t on t.tgrelid = rel
   and t.tgname in ('zz_rowcast_version', 'zz_rowcast_capture', 'zz_rowcast_capture_update',
                    'zz_rowcast_capture_delete', 'zz_rowcast_truncate')
$$;

-- Compare every synced table with what was recorded and log an S for each difference, in
-- the transaction that made it (from the event trigger) or when a server notices (its
-- periodic check, for databases where the event trigger could not be installed). A
-- primary-key change also re-creates the capture trigger for the new key. Returns the
-- tables whose state or shape changed.
create or replace function rowcast.check_synced()
returns table (table_schema text, table_name text, event text, status text)
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  s      record;
  now_sh jsonb;
  now_st text;
  ev     text;
  pk     text[];
begin
  for s in
    select y.rel, y.shape, y.status, y.pk_columns from rowcast.synced y
    where exists (select 1 from pg_class c where c.oid = y.rel)
      and (y.shape is distinct from rowcast.table_shape(y.rel)
           or y.status is distinct from rowcast.capture_status(y.rel))
    order by y.rel
    for update of y
  loop
    now_sh := rowcast.table_shape(s.rel);
    now_st := rowcast.capture_status(s.rel);
    if s.shape is distinct from now_sh and s.shape is not null then
      ev := case
        when s.shape -> 'primary_key' is distinct from now_sh -> 'primary_key' then 'primary-key-changed'
        when (s.shape ->> 'schema', s.shape ->> 'name') is distinct from (now_sh ->> 'schema', now_sh ->> 'name')
          then 'table-renamed'
        when jsonb_array_length(s.shape -> 'columns') < jsonb_array_length(now_sh -> 'columns') then 'column-added'
        when jsonb_array_length(s.shape -> 'columns') > jsonb_array_length(now_sh -> 'columns') then 'column-dropped'
        else 'column-changed' end;
      if ev = 'primary-key-changed' and jsonb_array_length(now_sh -> 'primary_key') > 0 then
        select array_agg(x order by o) into pk from jsonb_array_elements_text(now_sh -> 'primary_key') with ordinality as e(x, o);
        perform set_config('rowcast.in_sync_ddl', 'on', true);
        perform rowcast.install_capture(s.rel::regclass, pk);
        perform set_config('rowcast.in_sync_ddl', '', true);
        update rowcast.synced y set pk_columns = pk where y.rel = s.rel;
        now_st := rowcast.capture_status(s.rel);
      end if;
    elsif s.status is distinct from now_st then
      ev := case when now_st = 'ok' then 'capture-resumed' else 'capture-stopped' end;
    else
      ev := null; -- first record of a table synced before this migration
    end if;
    if ev is not null then
      -- Logged under the name consumers knew the table by.
      insert into rowcast.change_log (table_schema, table_name, op, version, new_row, old_row)
      values (coalesce(s.shape ->> 'schema', now_sh ->> 'schema'), coalesce(s.shape ->> 'name', now_sh ->> 'name'),
              'S', nextval('rowcast.row_version_seq'),
              jsonb_build_object('event', ev, 'status', now_st, 'shape', now_sh),
              jsonb_build_object('status', s.status, 'shape', s.shape));
      table_schema := now_sh ->> 'schema';
      table_name := now_sh ->> 'name';
      event := ev;
      status := now_st;
      return next;
    end if;
    update rowcast.synced y
    set shape = now_sh, status = now_st,
        status_since = case when y.status is distinct from now_st then now() else y.status_since end
    where y.rel = s.rel;
  end loop;
end $$;

-- The event trigger needs a superuser to install; without one, servers run check_synced()
-- periodically instead (S events then land when noticed, not in the DDL's transaction).
create or replace function rowcast.on_ddl() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
begin
  if coalesce(current_setting('rowcast.in_sync_ddl', true), '') = 'on' then
    return;
  end if;
  perform rowcast.check_synced();
end $$;

do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    create event trigger rowcast_ddl on ddl_command_end
      when tag in ('ALTER TABLE', 'CREATE TRIGGER', 'DROP TRIGGER', 'ALTER TRIGGER', 'DROP INDEX', 'ALTER INDEX')
      execute function rowcast.on_ddl();
  else
    raise notice 'rowcast: not a superuser, so no event trigger: schema changes on synced tables are noticed by the server''s periodic check';
  end if;
end $$;

-- Opt a table in (replaces 0002's): also records the shape, grants SELECT on `_v` to roles
-- that hold column-level SELECT on the table (table-level SELECT covers `_v` already), and
-- logs 'capture-resumed' when re-run on a table whose capture had stopped.
create or replace function rowcast.enable_sync(target regclass) returns void
language plpgsql set search_path = pg_catalog, rowcast
as $$
declare
  q      text := target::text;
  kind   "char";
  pk     text[];
  v_type text;
  r      text;
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

  perform set_config('rowcast.in_sync_ddl', 'on', true);
  select format_type(atttypid, atttypmod) into v_type
  from pg_attribute where attrelid = target and attname = '_v' and not attisdropped;
  if v_type is null then
    execute format('alter table %s add column _v bigint', q);
  elsif v_type <> 'bigint' then
    raise exception 'rowcast.enable_sync: table % already has a column _v of type %; Rowcast needs _v bigint', q, v_type
      using errcode = 'invalid_table_definition';
  end if;

  perform rowcast.install_capture(target, pk);

  -- Realtime reads `_v` as the subscriber's role: a role granted SELECT on some columns
  -- only would otherwise get "permission denied" on it.
  for r in
    select distinct g.grantee::regrole::text
    from pg_attribute a, aclexplode(a.attacl) g
    where a.attrelid = target and a.attnum > 0 and not a.attisdropped and a.attname <> '_v'
      and g.privilege_type = 'SELECT' and g.grantee <> 0
  loop
    execute format('grant select (_v) on %s to %s', q, r);
  end loop;
  perform set_config('rowcast.in_sync_ddl', '', true);

  delete from rowcast.synced s where not exists (select 1 from pg_class c where c.oid = s.rel);
  insert into rowcast.synced (rel, pk_columns, shape, status)
  values (target, pk, rowcast.table_shape(target), 'ok')
  on conflict (rel) do update set pk_columns = excluded.pk_columns;
  -- A re-run: a changed shape or a repaired capture becomes an S event here.
  perform rowcast.check_synced();
end $$;

create or replace function rowcast.disable_sync(target regclass) returns void
language plpgsql set search_path = pg_catalog, rowcast
as $$
declare
  q   text := target::text;
  was boolean;
begin
  perform set_config('rowcast.in_sync_ddl', 'on', true);
  execute format('drop trigger if exists zz_rowcast_version on %s', q);
  execute format('drop trigger if exists zz_rowcast_capture on %s', q);
  execute format('drop trigger if exists zz_rowcast_capture_update on %s', q);
  execute format('drop trigger if exists zz_rowcast_capture_delete on %s', q);
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
  perform set_config('rowcast.in_sync_ddl', '', true);
end $$;
revoke execute on function rowcast.enable_sync(regclass), rowcast.disable_sync(regclass) from public;
revoke execute on function rowcast.check_synced(), rowcast.restamp(regclass, text[], jsonb) from public;

drop function rowcast.synced_tables();
create function rowcast.synced_tables()
returns table (table_schema text, table_name text, primary_key text[], enabled_at timestamptz,
               status text, status_since timestamptz)
language sql stable set search_path = pg_catalog, rowcast
as $$
  select n.nspname::text, c.relname::text, s.pk_columns, s.enabled_at,
         rowcast.capture_status(s.rel),
         case when s.status = rowcast.capture_status(s.rel) then s.status_since end
  from rowcast.synced s
  join pg_class c on c.oid = s.rel
  join pg_namespace n on n.oid = c.relnamespace
  order by 1, 2
$$;

-- Upgrade tables synced before this migration: statement-level capture triggers in place
-- of 0002's row-level one (in this transaction, so no write falls between the two), then
-- record shape and status (no S event), and grant `_v` to column-level readers.
do $$
declare
  t record;
begin
  perform set_config('rowcast.in_sync_ddl', 'on', true);
  for t in
    select s.rel, s.pk_columns from rowcast.synced s
    where exists (select 1 from pg_class c where c.oid = s.rel)
  loop
    perform rowcast.install_capture(t.rel::regclass, t.pk_columns);
  end loop;
  perform set_config('rowcast.in_sync_ddl', '', true);
end $$;
update rowcast.synced s set shape = rowcast.table_shape(s.rel), status = rowcast.capture_status(s.rel)
where exists (select 1 from pg_class c where c.oid = s.rel);
do $$
declare
  t record;
begin
  for t in
    select distinct s.rel::regclass::text as q, g.grantee::regrole::text as r
    from rowcast.synced s
    join pg_attribute a on a.attrelid = s.rel and a.attnum > 0 and not a.attisdropped and a.attname <> '_v'
    cross join lateral aclexplode(a.attacl) g
    where g.privilege_type = 'SELECT' and g.grantee <> 0
      and exists (select 1 from pg_attribute v where v.attrelid = s.rel and v.attname = '_v' and not v.attisdropped)
  loop
    execute format('grant select (_v) on %s to %s', t.q, t.r);
  end loop;
end $$;

-- 3. The doorbell, coalesced. A notifying commit holds a cluster-wide lock through its WAL
-- flush, so one per writing transaction serializes writers. Instead the trigger fires only
-- when the last ring is at least 20 ms old (the WHEN clause is evaluated in C, no PL/pgSQL
-- call when it is false); a server woken by it polls every few ms for a while, which covers
-- the writers that did not ring. The poll interval stays the safety net.
create sequence rowcast.doorbell_rung_ms;
select setval('rowcast.doorbell_rung_ms', 1, true);

create or replace function rowcast.ring_doorbell() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
begin
  perform setval('rowcast.doorbell_rung_ms', (extract(epoch from clock_timestamp()) * 1000)::bigint);
  perform pg_notify('rowcast_changes', '');
  return null;
end $$;

do $$
declare
  was "char";
begin
  select tgenabled into was from pg_trigger
  where tgrelid = 'rowcast.change_log'::regclass and tgname = 'rowcast_doorbell';
  drop trigger if exists rowcast_doorbell on rowcast.change_log;
  create trigger rowcast_doorbell after insert on rowcast.change_log
    for each statement
    when ((extract(epoch from clock_timestamp()) * 1000)::bigint
          - pg_sequence_last_value('rowcast.doorbell_rung_ms'::regclass) >= 20)
    execute function rowcast.ring_doorbell();
  if was = 'A' then
    alter table rowcast.change_log enable always trigger rowcast_doorbell;
  else
    alter table rowcast.change_log disable trigger rowcast_doorbell;
  end if;
end $$;

-- 4. Live readers: each server instance's live tail records how far it has read, about once
-- a second. Retention never prunes past the slowest reader seen in the last minute, so a
-- prune cannot overtake a connected reader and push its subscribers into a resync.
create table rowcast.live_readers (
    instance uuid        primary key,
    xid      xid8        not null,
    id       bigint      not null,
    seen_at  timestamptz not null default now()
);

-- The doorbell's WHEN clause runs as whoever inserts into the log; disable_sync runs as the
-- admin who calls it. The sequence holds only a timestamp.
grant select on sequence rowcast.doorbell_rung_ms to public;
