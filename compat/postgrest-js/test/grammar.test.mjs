// The newer parts of the grammar through @supabase/postgrest-js: JSON paths, many-to-many,
// spread and empty embeds, quantified and full-text operators, missing=default, GET rpc,
// PostgREST's statuses. Run by server/tests/it/rest_grammar.rs, which seeds the gadgets
// schema and passes the results of hand-written SQL on the same data as ROWCAST_EXPECT.
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

test('JSON paths in select, filters and order, also inside embeds', async () => {
  assert.deepEqual(ok(await db.from('gadgets').select('id,meta->>color,meta->size').order('id')), expect.json_select);
  assert.deepEqual(
    ok(await db.from('gadgets').select('id,sz:meta->>size::int').eq('meta->nested->>depth', 2)),
    expect.json_filter,
  );
  assert.deepEqual(
    ok(await db.from('gadgets').select('id').order('meta->>color', { ascending: false, nullsFirst: false })),
    expect.json_order,
  );
  assert.deepEqual(
    ok(
      await db
        .from('makers')
        .select('name,gadgets(id,color:meta->>color)')
        .gte('gadgets.meta->>size', '5')
        .order('meta->>color', { referencedTable: 'gadgets' })
        .order('id'),
    ),
    expect.json_embed,
  );
});

test('many-to-many, nested, with !inner, spread and empty embeds', async () => {
  assert.deepEqual(
    ok(await db.from('tags').select('name,gadgets(id)').order('id', { referencedTable: 'gadgets' }).order('id')),
    expect.m2m,
  );
  assert.deepEqual(
    ok(
      await db
        .from('makers')
        .select('name,gadgets(id,tags(name))')
        .order('id', { referencedTable: 'gadgets' })
        .order('id', { referencedTable: 'gadgets.tags' })
        .order('id'),
    ),
    expect.m2m_nested,
  );
  assert.deepEqual(
    ok(await db.from('gadgets').select('id,tags!inner(name)').eq('tags.name', 'cheap').order('id')),
    expect.m2m_inner,
  );
  assert.deepEqual(ok(await db.from('gadgets').select('id,...makers(maker:name,mid:id)').order('id')), expect.spread);
  assert.deepEqual(
    ok(await db.from('makers').select('id,gadgets()').eq('gadgets.meta->>color', 'red').not('gadgets', 'is', null)),
    expect.with_red,
  );
  assert.deepEqual(
    ok(await db.from('makers').select('id,gadgets()').eq('gadgets.meta->>color', 'red').is('gadgets', null)),
    expect.without_red,
  );
});

test('like/ilike any/all, isdistinct and full-text search', async () => {
  const ids = (r) => ok(r).map((x) => x.id);
  assert.deepEqual(ids(await db.from('gadgets').select('id').likeAnyOf('name', ['red*', '*lamp']).order('id')), expect.like_any);
  assert.deepEqual(ids(await db.from('gadgets').select('id').ilikeAllOf('name', ['*E*', '*N*']).order('id')), expect.ilike_all);
  assert.deepEqual(
    ids(await db.from('gadgets').select('id').filter('notes', 'isdistinct', 'Fat cats eat rats').order('id')),
    expect.isdistinct,
  );
  assert.deepEqual(
    ids(await db.from('gadgets').select('id').textSearch('doc', 'jumping', { config: 'english' }).order('id')),
    expect.fts,
  );
  assert.deepEqual(
    ids(await db.from('gadgets').select('id').textSearch('doc', 'lazy dog', { config: 'english', type: 'plain' }).order('id')),
    expect.plfts,
  );
  assert.deepEqual(
    ids(await db.from('gadgets').select('id').textSearch('doc', 'lazy dogs', { config: 'english', type: 'phrase' }).order('id')),
    expect.phfts,
  );
  assert.deepEqual(
    ids(await db.from('gadgets').select('id').textSearch('doc', 'fox -quick', { config: 'english', type: 'websearch' }).order('id')),
    expect.wfts,
  );
  assert.deepEqual(
    ids(await db.from('gadgets').select('id').not('doc', 'wfts(english)', 'fox').order('id')),
    expect.not_wfts,
  );
});

test('insert with defaultToNull: false, GET rpc and json-argument rpc', async () => {
  ok(
    await db.from('notes').insert(
      [{ id: 1, body: 'a' }, { id: 2, prio: 9 }],
      { defaultToNull: false },
    ),
  );
  assert.deepEqual(ok(await db.from('notes').select('id,body,prio').order('id')), expect.notes);
  assert.equal(ok(await db.rpc('gadget_count', { min_size: 5 }, { get: true })), expect.gadget_count);
  const volatile = await db.rpc('bump', {}, { get: true });
  assert.equal(volatile.status, 405);
  assert.equal(volatile.error.code, 'method-not-allowed');
  assert.deepEqual(ok(await db.rpc('echo_json', { a: [1, 2] })), { a: [1, 2] });
});

test("PostgREST's statuses: 400 unknown column, 300 ambiguous, 416 past the end", async () => {
  const unknown = await db.from('gadgets').select('nope');
  assert.equal(unknown.status, 400);
  assert.equal(unknown.error.code, 'unknown-column');
  const ambiguous = await db.from('messages').select('body,users(name)');
  assert.equal(ambiguous.status, 300);
  assert.equal(ambiguous.error.code, 'ambiguous-relationship');
  assert.equal(JSON.parse(ambiguous.error.details).length, 2);
  const past = await db.from('gadgets').select('id', { count: 'exact' }).range(10, 19);
  assert.equal(past.status, 416);
  assert.equal(past.error.code, 'range-not-satisfiable');
});
