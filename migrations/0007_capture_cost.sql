-- Change capture, cheaper single-row INSERTs (issue 14). Measured per transaction on the
-- backend (docs/benchmarks.md, capture run 7), a captured single-row INSERT cost about 6x
-- a plain one with the default doorbell on; three parts of that were
-- not the log row itself: the doorbell's WHEN clause, the log's CHECK constraint and
-- capture_insert's second query over the transition table.
--
-- 1. No CHECK on change_log.op. Postgres reads a check constraint's expression from the
--    catalog and plans it again for every INSERT statement into the table (it is prepared
--    per executor run, not cached with the plan), which for one-row statements costs more
--    than the row itself. The log is written only by rowcast's own functions, and readers
--    reject an unknown op as a corrupt log (capture::change) rather than guess.
alter table rowcast.change_log drop constraint if exists change_log_op_check;

-- 2. capture_insert in one statement over the transition table. Re-stamping (see
--    rowcast.tombstones in 0005) is needed when a tombstone ticked since the transaction's
--    mark, or when a row's `_v` did not come from the column default in this transaction
--    (written explicitly, e.g. INSERT … SELECT * from another synced table). The first is a
--    sequence read; the second used to be a second scan of the transition table on every
--    statement. Now the log INSERT notes it while it reads each row anyway: a suspect row's
--    image goes through rowcast.note_restamp, which sets a transaction-local flag, and only
--    a statement that raced or was flagged takes the second scan.
create or replace function rowcast.note_restamp(j jsonb) returns jsonb
language sql volatile
as $$ select case when set_config('rowcast.restamp', 'on', true) is not null then j end $$;

create or replace function rowcast.capture_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
declare
  keys jsonb;
  mark text := current_setting('rowcast.capture_mark', true);
  vmark bigint := coalesce(nullif(split_part(coalesce(mark, ''), ' ', 2), ''), '0')::bigint;
  one text := case when tg_nargs = 1 then tg_argv[0] end;
  raced boolean;
begin
  insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row)
  select tg_table_schema, tg_table_name, 'I',
         case when one is not null then jsonb_build_object(one, j -> one) else rowcast.pk_of(j, tg_argv) end,
         nextval('rowcast.row_version_seq'),
         case when (j ->> '_v') is null or (j ->> '_v')::bigint <= vmark then rowcast.note_restamp(j)
              else j end
  from (select to_jsonb(r) as j from rowcast_new r) x;
  raced := rowcast.raced(mark);
  if raced or current_setting('rowcast.restamp', true) = 'on' then
    perform set_config('rowcast.restamp', '', true);
    if raced then
      select jsonb_agg(rowcast.pk_of(to_jsonb(r), tg_argv)) into keys from rowcast_new r;
    else
      select jsonb_agg(rowcast.pk_of(to_jsonb(r), tg_argv)) into keys
      from rowcast_new r where r._v is null or r._v <= vmark;
    end if;
    if keys is not null then
      perform rowcast.restamp_many(tg_relid, tg_argv, keys);
    end if;
  end if;
  return null;
end $$;

-- 3. The doorbell (0005) without a WHEN clause. Like a CHECK constraint, a trigger's WHEN
--    expression is read from the catalog and planned again for every statement that inserts
--    into the log, which cost more than calling a PL/pgSQL function whose cached plan makes
--    the same test. Same rule: ring when the last ring is at least 20 ms old. Enabling and
--    disabling the trigger (ROWCAST_NOTIFY) works as before; its state is kept.
create or replace function rowcast.ring_doorbell() returns trigger
language plpgsql security definer set search_path = pg_catalog, rowcast
as $$
begin
  if (extract(epoch from clock_timestamp()) * 1000)::bigint
     - pg_sequence_last_value('rowcast.doorbell_rung_ms'::regclass) >= 20 then
    perform setval('rowcast.doorbell_rung_ms', (extract(epoch from clock_timestamp()) * 1000)::bigint);
    perform pg_notify('rowcast_changes', '');
  end if;
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
    for each statement execute function rowcast.ring_doorbell();
  if was = 'A' then
    alter table rowcast.change_log enable always trigger rowcast_doorbell;
  else
    alter table rowcast.change_log disable trigger rowcast_doorbell;
  end if;
end $$;
