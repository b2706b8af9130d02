// The REST API through @supabase/postgrest-js, a client nobody here wrote. Run by
// server/tests/it/rest_compat.rs against a live server seeded with the schema of
// server/tests/it/rest.rs; each expectation matches the HTTP-level test of the same feature.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PostgrestClient } from '@supabase/postgrest-js';

const base = process.env.ROWCAST_REST_URL;
const tokens = {
  alice: process.env.ROWCAST_ALICE_TOKEN,
  bob: process.env.ROWCAST_BOB_TOKEN,
  service: process.env.ROWCAST_SERVICE_TOKEN,
};
const bobId = process.env.ROWCAST_BOB_ID;
if (!base) throw new Error('ROWCAST_REST_URL is not set (this suite is run by `cargo test rest_compat`)');

const as = (who) =>
  new PostgrestClient(base, { headers: { Authorization: `Bearer ${tokens[who]}` } });
const titles = (rows) => rows.map((r) => r.title);

test('select with alias, cast and nested embeds', async () => {
  const { data, error, status } = await as('service')
    .from('posts')
    .select('id,title,writer:users(name),comments(id,body,author:users(name))')
    .eq('id', 1)
    .order('id', { referencedTable: 'comments' });
  assert.equal(error, null);
  assert.equal(status, 200);
  assert.deepEqual(data, [
    {
      id: 1,
      title: 'alice first',
      writer: { name: 'Alice' },
      comments: [
        { id: 1, body: 'nice one', author: { name: 'Bob' } },
        { id: 2, body: 'thanks', author: { name: 'Alice' } },
      ],
    },
  ]);
  const cast = await as('service').from('posts').select('id,headline:title,rating::text').eq('id', 1);
  assert.deepEqual(cast.data, [{ id: 1, headline: 'alice first', rating: '5' }]);
});

test('filters: comparison, pattern, in, is, not, or, contains', async () => {
  const db = as('service');
  const cases = [
    [db.from('posts').select('title').eq('rating', 5), ['alice first']],
    [db.from('posts').select('title').neq('rating', 5), ['bob first', 'bob secret']],
    [db.from('posts').select('title').gt('rating', 3), ['alice first']],
    [db.from('posts').select('title').gte('rating', 3), ['alice first', 'bob first']],
    [db.from('posts').select('title').lt('rating', 3), ['bob secret']],
    [db.from('posts').select('title').lte('rating', 3), ['bob first', 'bob secret']],
    [db.from('posts').select('title').like('title', 'alice%'), ['alice first', 'alice second']],
    [db.from('posts').select('title').ilike('title', '%SECRET'), ['bob secret']],
    [db.from('posts').select('title').in('id', [2, 3]), ['alice second', 'bob first']],
    [db.from('posts').select('title').in('title', ['alice first', 'nope']), ['alice first']],
    [db.from('posts').select('title').is('rating', null), ['alice second']],
    [db.from('posts').select('title').not('rating', 'is', null), ['alice first', 'bob first', 'bob secret']],
    [db.from('posts').select('title').is('published', true), ['alice first', 'bob first']],
    [db.from('posts').select('title').contains('tags', ['pg']), ['alice first', 'bob first']],
    [db.from('posts').select('title').overlaps('tags', ['rust', 'x']), ['alice first']],
    [db.from('posts').select('title').or('rating.eq.5,title.eq.bob secret'), ['alice first', 'bob secret']],
    [db.from('posts').select('title').or('and(published.is.true,rating.lt.4),title.eq.alice second'), ['alice second', 'bob first']],
    [db.from('posts').select('title').gt('id', 1).lt('id', 4), ['alice second', 'bob first']],
  ];
  for (const [query, want] of cases) {
    const { data, error } = await query.order('id');
    assert.equal(error, null, JSON.stringify(error));
    assert.deepEqual(titles(data), want);
  }
});

test('filters on embedded rows, order on a to-one embed, range and counts', async () => {
  const db = as('service');
  const emb = await db
    .from('posts')
    .select('title,comments(body)')
    .like('comments.body', '%bob%')
    .order('id');
  assert.equal(emb.data.length, 4);
  assert.deepEqual(emb.data[0].comments, []);
  assert.deepEqual(emb.data[2].comments, [{ body: 'hi bob' }]);

  const ordered = await db
    .from('posts')
    .select('title,users(name)')
    .order('users(name)', { ascending: false })
    .order('id');
  assert.equal(ordered.error, null, JSON.stringify(ordered.error));
  assert.deepEqual(titles(ordered.data), ['bob first', 'bob secret', 'alice first', 'alice second']);

  const nulls = await db.from('posts').select('title').order('rating', { ascending: false, nullsFirst: false });
  assert.deepEqual(titles(nulls.data), ['alice first', 'bob first', 'bob secret', 'alice second']);

  const page = await db.from('posts').select('id', { count: 'exact' }).order('id').range(1, 2);
  assert.deepEqual(page.data, [{ id: 2 }, { id: 3 }]);
  assert.equal(page.count, 4);
  assert.equal(page.status, 206);

  const limited = await db.from('posts').select('id').order('id').limit(2);
  assert.deepEqual(limited.data, [{ id: 1 }, { id: 2 }]);

  const head = await db.from('posts').select('*', { count: 'exact', head: true });
  assert.equal(head.count, 4);
  assert.equal(head.data, null);
});

test('single object and its 406', async () => {
  const one = await as('service').from('posts').select('title').eq('id', 3).single();
  assert.deepEqual(one.data, { title: 'bob first' });
  const none = await as('service').from('posts').select('title').eq('id', 99).single();
  assert.equal(none.status, 406);
  assert.equal(none.error.code, 'not-acceptable');
  const maybe = await as('service').from('posts').select('title').eq('id', 99).maybeSingle();
  assert.equal(maybe.error, null);
  assert.equal(maybe.data, null);
});

test('writes: insert, bulk insert, upsert, update, delete, rpc', async () => {
  const alice = as('alice');
  const ins = await alice.from('posts').insert({ title: 'js one', rating: 7 }).select('title,rating');
  assert.equal(ins.status, 201);
  assert.deepEqual(ins.data, [{ title: 'js one', rating: 7 }]);

  const quiet = await alice.from('posts').insert({ title: 'js quiet' });
  assert.equal(quiet.status, 201);
  assert.equal(quiet.data, null);

  const bulk = await alice.from('posts').insert([{ title: 'js b1', rating: 1 }, { title: 'js b2' }]).select();
  assert.equal(bulk.data.length, 2);
  assert.equal(bulk.data[1].rating, null);

  const svc = as('service');
  const up = await svc
    .from('users')
    .upsert({ id: bobId, name: 'Bobby', email: 'b@x' }, { onConflict: 'email' })
    .select('name');
  assert.equal(up.error, null, JSON.stringify(up.error));
  assert.deepEqual(up.data, [{ name: 'Bobby' }]);
  const ignored = await svc
    .from('users')
    .upsert({ id: crypto.randomUUID(), name: 'Impostor', email: 'b@x' }, { onConflict: 'email', ignoreDuplicates: true });
  assert.equal(ignored.error, null, JSON.stringify(ignored.error));
  const bob = await svc.from('users').select('name').eq('email', 'b@x').single();
  assert.equal(bob.data.name, 'Bobby');

  const upd = await alice.from('posts').update({ rating: 42 }).like('title', 'alice%').select('rating');
  assert.equal(upd.status, 200);
  assert.deepEqual(upd.data, [{ rating: 42 }, { rating: 42 }]);

  const del = await alice.from('posts').delete().eq('title', 'js quiet').select('title');
  assert.deepEqual(del.data, [{ title: 'js quiet' }]);

  const sum = await alice.rpc('add_numbers', { a: 1, b: 2 });
  assert.equal(sum.data, 3);
  const dflt = await alice.rpc('add_numbers', { a: 5 });
  assert.equal(dflt.data, 15);
  const set = await alice.rpc('posts_titled', { q: 'FIRST' });
  assert.deepEqual(titles(set.data), ['alice first']);
});

test('errors come back as {code, message} with the HTTP status', async () => {
  const db = as('service');
  const unknownTable = await db.from('nope').select();
  assert.equal(unknownTable.status, 404);
  assert.equal(unknownTable.error.code, 'unknown-table');
  const unknownColumn = await db.from('posts').select('nope');
  assert.equal(unknownColumn.status, 400);
  assert.equal(unknownColumn.error.code, 'unknown-column');
  const badValue = await db.from('posts').select().eq('id', 'abc');
  assert.equal(badValue.status, 400);
  assert.equal(badValue.error.code, 'invalid-value');
  const dup = await db.from('users').insert({ id: bobId, name: 'dup' });
  assert.equal(dup.status, 409);
  assert.equal(dup.error.code, 'conflict');
  const unfiltered = await db.from('posts').delete();
  assert.equal(unfiltered.status, 400);
  assert.equal(unfiltered.error.code, 'filter-required');
});

test('row-level security: Alice cannot read, change or delete Bob\'s posts', async () => {
  const alice = as('alice');
  const mine = await alice.from('posts').select('title').like('title', 'bob%');
  assert.deepEqual(mine.data, []);
  const viaEmbed = await alice.from('users').select('name,posts(title)').eq('id', bobId);
  assert.deepEqual(viaEmbed.data[0].posts, []);
  const upd = await alice.from('posts').update({ title: 'pwned' }).eq('id', 3).select();
  assert.deepEqual(upd.data, []);
  const del = await alice.from('posts').delete().eq('id', 4).select();
  assert.deepEqual(del.data, []);
  const forged = await alice.from('posts').insert({ title: 'forged', owner: bobId });
  assert.equal(forged.status, 403);
  assert.equal(forged.error.code, 'forbidden');
  const still = await as('bob').from('posts').select('title').order('id');
  assert.deepEqual(titles(still.data), ['bob first', 'bob secret']);
});
