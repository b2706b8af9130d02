// To-many spreads, GET rpc with select/filters/order on a function's rows, and the presence
// of related rows inside `or` through @supabase/postgrest-js. Run by
// server/tests/it/rest_grammar.rs, which seeds the gadgets schema and passes the results of
// hand-written SQL on the same data as ROWCAST_EXPECT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PostgrestClient } from '@supabase/postgrest-js';

const base = process.env.ROWCAST_REST_URL;
if (!base) throw new Error('ROWCAST_REST_URL is not set (this suite is run by `cargo test rest_grammar`)');
const expect = JSON.parse(process.env.ROWCAST_EXPECT);
const db = new PostgrestClient(base, {
  headers: { Authorization: `Bearer ${process.env.ROWCAST_SERVICE_TOKEN}` },
});

const ok = ({ data, error, status }) => {
  assert.equal(error, null, JSON.stringify(error));
  assert.ok(status >= 200 && status < 300, String(status));
  return data;
};

test('to-many spreads give correlated arrays', async () => {
  assert.deepEqual(
    ok(
      await db
        .from('makers')
        .select('name,...gadgets(names:name,sizes:meta->size)')
        .order('id', { referencedTable: 'gadgets' })
        .order('id'),
    ),
    expect.spread_many,
  );
  assert.deepEqual(
    ok(
      await db
        .from('makers')
        .select('id,...gadgets(gid:id)')
        .like('gadgets.name', '*e*')
        .order('id', { referencedTable: 'gadgets', ascending: false })
        .limit(1, { referencedTable: 'gadgets' })
        .order('id'),
    ),
    expect.spread_many_filtered,
  );
  assert.deepEqual(
    ok(
      await db
        .from('gadgets')
        .select('id,...tags(tag_names:name)')
        .order('id', { referencedTable: 'tags' })
        .order('id'),
    ),
    expect.spread_m2m,
  );
});

test('GET rpc shapes a function\'s rows', async () => {
  assert.deepEqual(
    ok(
      await db
        .rpc('gadgets_of', { mid: 1 }, { get: true })
        .select('id,label:name')
        .like('name', '*e*')
        .order('id', { ascending: false }),
    ),
    expect.rpc_rows,
  );
  assert.deepEqual(
    ok(
      await db
        .rpc('gadget_labels', { lo: 2 }, { get: true })
        .or('label.ilike.*L*,gid.eq.4')
        .order('gid', { ascending: false })
        .limit(2),
    ),
    expect.rpc_table,
  );
});

test('presence of related rows inside or', async () => {
  assert.deepEqual(
    ok(
      await db
        .from('makers')
        .select('id,gadgets()')
        .eq('gadgets.meta->>color', 'red')
        .or('gadgets.not.is.null,name.eq.Globex')
        .order('id'),
    ),
    expect.or_present,
  );
  assert.deepEqual(
    ok(
      await db
        .from('makers')
        .select('id,gadgets(id)')
        .or('gadgets.is.null,id.eq.1')
        .order('id', { referencedTable: 'gadgets' })
        .order('id'),
    ),
    expect.or_absent,
  );
});
