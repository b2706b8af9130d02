// Auth flows, the REST query builder (CRUD, embeds, filters, order, range, single, count),
// typed errors, and two users under an owner-only policy, against a real server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRowcastError } from '../../src/index.js';
import { memoryStorage } from '../../src/storage/memory.js';
import { client, signedIn, uniqueEmail } from './helpers.js';
import { TestServer, until } from './server.js';

const server = new TestServer();
beforeAll(() => server.start());
afterAll(() => server.stop());

describe('auth', () => {
  it('signs up, signs in, persists the session, refreshes and signs out', async () => {
    const storage = memoryStorage();
    const email = uniqueEmail('ada');
    const a = client(server.url, { storage });
    const events: string[] = [];
    a.auth.onAuthStateChange((e) => events.push(e));
    const up = await a.auth.signUp({ email, password: 'correct horse battery', data: { name: 'Ada' } });
    expect(up.error).toBeNull();
    expect(up.data.user?.email).toBe(email);
    expect(up.data.user?.user_metadata).toEqual({ name: 'Ada' });
    await a.close();

    // a new client on the same storage starts signed in
    const b = client(server.url, { storage });
    const { data } = await b.auth.getSession();
    expect(data.session?.user.email).toBe(email);
    const old = data.session!.refresh_token;
    const r = await b.auth.refresh();
    expect(r.error).toBeNull();
    expect(r.session!.refresh_token).not.toBe(old);
    expect(JSON.parse((await storage.get('auth:session'))!).refresh_token).toBe(r.session!.refresh_token);
    expect((await b.auth.signOut()).error).toBeNull();
    expect((await b.auth.getSession()).data.session).toBeNull();
    expect(await storage.get('auth:session')).toBeNull();
    await b.close();

    const c = client(server.url);
    const bad = await c.auth.signInWithPassword({ email, password: 'wrong password!' });
    expect(bad.error).toMatchObject({ code: 'invalid-credentials', status: 400, retryable: false });
    const good = await c.auth.signInWithPassword({ email, password: 'correct horse battery' });
    expect(good.data.session?.user.email).toBe(email);
    expect(events).toContain('SIGNED_IN');
    await c.close();
  });

  it('signs in anonymously', async () => {
    const c = client(server.url);
    const { data, error } = await c.auth.signInAnonymously();
    expect(error).toBeNull();
    expect(data.user?.is_anonymous).toBe(true);
    await c.close();
  });

  it('a spent refresh token is reported with the server code and signs the user out', async () => {
    const storage = memoryStorage();
    const { c } = await signedIn(server.url, 'spent', { storage });
    const first = c.auth.currentSession()!.refresh_token;
    await c.auth.refresh();
    // replaying the spent token (copied session) revokes the whole session on the server
    const stale = JSON.parse((await storage.get('auth:session'))!);
    stale.refresh_token = first;
    await storage.write([{ op: 'set', key: 'auth:session', value: JSON.stringify(stale) }]);
    const d = client(server.url, { storage });
    const r = await d.auth.refresh();
    expect(r.error).toMatchObject({ code: 'invalid-credentials', retryable: false });
    expect(d.auth.currentSession()).toBeNull();
    await c.close();
    await d.close();
  });
});

describe('the REST query builder', () => {
  beforeAll(async () => {
    await server.sql(`insert into projects values (1, 'alpha'), (2, 'beta') on conflict do nothing;
      insert into tasks values (1, 1, 'one', 5), (2, 1, 'two', null), (3, 2, 'three, with comma', 3), (4, 2, 'four', 1) on conflict do nothing;`);
  });

  it('selects with embeds, filters, order, range, count and single', async () => {
    const c = client(server.url);
    const all = await c.from('tasks').select('id,title,projects(name)', { count: 'exact' }).order('id').range(0, 1);
    expect(all.error).toBeNull();
    expect(all.count).toBe(4);
    expect(all.data).toEqual([
      { id: 1, title: 'one', projects: { name: 'alpha' } },
      { id: 2, title: 'two', projects: { name: 'alpha' } },
    ]);
    const f = await c.from('tasks').select('id').in('title', ['three, with comma', 'four']).gte('rating', 1).order('rating', { ascending: false });
    expect(f.data).toEqual([{ id: 3 }, { id: 4 }]);
    const nul = await c.from('tasks').select('id').is('rating', null);
    expect(nul.data).toEqual([{ id: 2 }]);
    const tree = await c.from('tasks').select('id').where({ or: [{ column: 'id', op: 'eq', value: 1 }, { column: 'rating', op: 'eq', value: 1 }] }).order('id');
    expect(tree.data).toEqual([{ id: 1 }, { id: 4 }]);
    const like = await c.from('tasks').select('id').like('title', 't*').order('id');
    expect(like.data).toEqual([{ id: 2 }, { id: 3 }]);
    const one = await c.from('projects').select('name').eq('id', 2).single();
    expect(one.data).toEqual({ name: 'beta' });
    const none = await c.from('projects').select('name').eq('id', 99).maybeSingle();
    expect(none).toMatchObject({ data: null, error: null });
    const many = await c.from('projects').select('name').single();
    expect(many.error).toMatchObject({ code: 'not-acceptable', status: 406 });
    await c.close();
  });

  it('inserts, upserts, updates and deletes with one result convention', async () => {
    const c = client(server.url);
    const ins = await c.from('projects').insert([{ id: 10, name: 'x' }, { id: 11, name: 'y' }]);
    expect(ins.error).toBeNull();
    expect(ins.status).toBe(201);
    expect(ins.data).toEqual([{ id: 10, name: 'x' }, { id: 11, name: 'y' }]);
    const up = await c.from('projects').upsert({ id: 10, name: 'x2' });
    expect(up.data).toEqual([{ id: 10, name: 'x2' }]);
    const upd = await c.from('projects').update({ name: 'yy' }).eq('id', 11);
    expect(upd.data).toEqual([{ id: 11, name: 'yy' }]);
    const del = await c.from('projects').delete().in('id', [10, 11]);
    expect(del.data).toHaveLength(2);
    expect(await server.sql('select count(*) from projects where id >= 10')).toBe('0');
    const rpc = await c.rpc('no_such_function');
    expect(rpc.error?.code).toBe('unknown-function');
    await c.close();
  });

  it('errors carry the stable code, the status and whether a retry can help', async () => {
    const c = client(server.url);
    const dup = await c.from('projects').insert({ id: 1, name: 'again' });
    expect(dup.data).toBeNull();
    expect(isRowcastError(dup.error)).toBe(true);
    expect(dup.error).toMatchObject({ code: 'conflict', status: 409, retryable: false });
    expect((await c.from('nope').select()).error).toMatchObject({ code: 'unknown-table', status: 404 });
    expect((await c.from('tasks').select('nope')).error?.code).toBe('unknown-column');
    expect((await c.from('tasks').select().eq('id', 'abc' as unknown as number)).error?.code).toBe('invalid-value');
    expect((await c.from('projects').delete()).error?.code).toBe('filter-required');
    const down = client('http://127.0.0.1:1');
    const net = await down.from('tasks').select();
    expect(net.error).toMatchObject({ code: 'network-error', retryable: true });
    await c.close();
    await down.close();
  });
});

describe('two users under an owner-only policy', () => {
  it('never see each other’s rows, over REST or live', async () => {
    const { c: alice } = await signedIn(server.url, 'alice');
    const { c: bob } = await signedIn(server.url, 'bob');
    const aliceLive = alice.from('todos').live();
    const bobLive = bob.from('todos').live();
    await aliceLive.ready();
    await bobLive.ready();
    expect((await alice.from('todos').insert({ id: 'a-1', title: 'alice secret' })).error).toBeNull();
    expect((await bob.from('todos').insert({ id: 'b-1', title: 'bob secret' })).error).toBeNull();
    await until(() => aliceLive.current().rows.length === 1 && bobLive.current().rows.length === 1, 'both live queries');
    // Bob's own write after Alice's proves Bob's stream is past Alice's insert.
    expect((await bob.from('todos').insert({ id: 'b-2', title: 'bob again' })).error).toBeNull();
    await until(() => bobLive.current().rows.length === 2, 'bob sees his second row');
    expect(aliceLive.current().rows.map((r) => r.id)).toEqual(['a-1']);
    expect(bobLive.current().rows.map((r) => r.id)).toEqual(['b-1', 'b-2']);
    expect((await alice.from('todos').select('id')).data).toEqual([{ id: 'a-1' }]);
    // Alice updating Bob's row touches nothing; writing as Bob is forbidden
    expect((await alice.from('todos').update({ title: 'hacked' }).eq('id', 'b-1')).data).toEqual([]);
    const bobId = bob.auth.currentSession()!.user.id;
    expect((await alice.from('todos').insert({ id: 'a-x', title: 't', owner_id: bobId })).error?.code).toBe('forbidden');
    expect(await server.sql(`select title from todos where id = 'b-1'`)).toBe('bob secret');
    await alice.close();
    await bob.close();
  });
});
