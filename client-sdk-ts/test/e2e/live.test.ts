// Live queries against a real server: convergence under concurrent writers (another client
// and plain SQL), the server killed and restarted mid-stream, and a cold start from the
// SQLite cache with the server down.
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sqliteStorage, expoSqlite } from '../../src/storage/sqlite.js';
import { client, expoShim, recordingSockets, signedIn } from './helpers.js';
import { TestServer, until } from './server.js';

const server = new TestServer();
const tmp = mkdtempSync(join(tmpdir(), 'rowcast-sdk-sqlite-'));
beforeAll(() => server.start());
afterAll(async () => {
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
});

type Todo = { id: string; title: string; done: boolean; prio: number };
const strip = (rows: Array<Record<string, unknown>>) =>
  rows.map((r) => ({ id: r.id, title: r.title, done: r.done, prio: r.prio })).sort((a, b) => String(a.id).localeCompare(String(b.id)));

async function dbTodos(owner: string, where = 'true'): Promise<Todo[]> {
  const out = await server.sql(`select coalesce(json_agg(json_build_object('id', id, 'title', title, 'done', done, 'prio', prio) order by id), '[]') from todos where owner_id = '${owner}' and ${where}`);
  return strip(JSON.parse(out)) as Todo[];
}

describe('live queries', () => {
  it('converge to the database under concurrent writes from another client and from SQL', async () => {
    const { c: phone, user } = await signedIn(server.url, 'conv');
    const email = user!.email!;
    const laptop = client(server.url);
    await laptop.auth.signInWithPassword({ email, password: 'correct horse battery' });
    const all = phone.from('todos').select('id,title,done,prio').live();
    const open = phone.from('todos').select('id,title,done,prio').eq('done', false).gte('prio', 2).live();
    await all.ready();
    await open.ready();
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 30; i++) {
      writes.push(laptop.from('todos').insert({ id: `c-${i}`, title: `t${i}`, prio: i % 5 }).then((r) => expect(r.error).toBeNull()));
    }
    await Promise.all(writes);
    await Promise.all([
      (async () => {
        for (let i = 0; i < 30; i += 3) await laptop.from('todos').update({ done: true }).eq('id', `c-${i}`);
      })(),
      (async () => {
        for (let k = 0; k < 10; k++) await server.sql(`update todos set prio = prio + 1 where owner_id = '${user!.id}' and id like 'c-1%'`);
      })(),
      (async () => {
        for (let i = 1; i < 30; i += 7) await laptop.from('todos').delete().eq('id', `c-${i}`);
      })(),
      server.sql(`delete from todos where id = 'c-2'`),
    ]);
    const wantAll = await dbTodos(user!.id);
    const wantOpen = await dbTodos(user!.id, 'not done and prio >= 2');
    expect(wantAll.length).toBeGreaterThan(20);
    await until(() => JSON.stringify(strip(all.current().rows)) === JSON.stringify(wantAll), 'the full query to converge');
    await until(() => JSON.stringify(strip(open.current().rows)) === JSON.stringify(wantOpen), 'the filtered query to converge');
    expect(all.current().status).toBe('live');
    await phone.close();
    await laptop.close();
  });

  it('resume from their cursors after the server is killed and restarted mid-stream, losing nothing', async () => {
    const rec = recordingSockets();
    const { c, user } = await signedIn(server.url, 'kill', { webSocketFactory: rec.factory });
    const states: string[] = [];
    c.onConnectionStateChange((s) => states.push(s));
    const all = c.from('todos').select('id,title,done,prio').live();
    const hi = c.from('todos').select('id,title,done,prio').gte('prio', 5).live();
    await all.ready();
    await hi.ready();
    const owner = user!.id;
    let i = 0;
    const insert = () => server.sql(`insert into todos (id, owner_id, title, prio) values ('k-${i}', '${owner}', 'k${i}', ${i++ % 10})`);
    for (let k = 0; k < 10; k++) await insert();
    await until(() => all.current().rows.length === 10, 'first rows');
    // mid-stream: writes keep coming while the server is gone (Postgres stays up)
    await server.kill();
    await until(() => c.connectionState() === 'offline' || c.connectionState() === 'connecting', 'the client to notice');
    for (let k = 0; k < 10; k++) await insert();
    await server.start();
    for (let k = 0; k < 10; k++) await insert();
    const want = await dbTodos(owner);
    const wantHi = await dbTodos(owner, 'prio >= 5');
    expect(want).toHaveLength(30);
    await until(() => JSON.stringify(strip(all.current().rows)) === JSON.stringify(want), 'all rows after restart', 40000);
    await until(() => JSON.stringify(strip(hi.current().rows)) === JSON.stringify(wantHi), 'filtered rows after restart', 40000);
    // resumed from the cursors, not re-snapshotted
    const subs = rec.ofType('subscribe');
    const resumed = subs.filter((s) => typeof s.cursor === 'string');
    expect(resumed.length).toBeGreaterThanOrEqual(2);
    expect(new Set(resumed.map((s) => s.id))).toEqual(new Set(subs.slice(0, 2).map((s) => s.id)));
    expect(states).toContain('offline');
    expect(states.at(-1)).toBe('live');
    await c.close();
  });

  it('start over from a snapshot when the server says resync-required (TRUNCATE)', async () => {
    const rec = recordingSockets();
    const c = client(server.url, { webSocketFactory: rec.factory });
    await server.sql(`insert into projects values (50, 'p') on conflict do nothing;
      insert into tasks values (500, 50, 'old a', 1), (501, 50, 'old b', 2)`);
    const q = c.from('tasks').select('id,title').gte('id', 500).live();
    await until(() => q.current().rows.length === 2 && q.current().status === 'live', 'the first snapshot');
    await server.sql(`truncate tasks; insert into tasks values (502, 50, 'new', 3)`);
    await until(() => JSON.stringify(q.current().rows) === JSON.stringify([{ id: 502, title: 'new' }]), 'the new snapshot');
    const subs = rec.ofType('subscribe');
    expect(subs.length).toBeGreaterThanOrEqual(2);
    expect(subs.at(-1)!.cursor).toBeUndefined();
    expect(subs.at(-1)!.id).toBe(subs[0]!.id);
    await c.close();
  });

  it('a cold start with the server down shows the cached rows, then resumes by cursor', async () => {
    const file = join(tmp, 'cache.db');
    const db1 = new Database(file);
    const storage1 = sqliteStorage(expoSqlite(expoShim(db1)));
    const { c, user } = await signedIn(server.url, 'cold', { storage: storage1 });
    for (let k = 0; k < 5; k++) await c.from('todos').insert({ id: `cold-${k}`, title: `cold ${k}` });
    const q = c.from('todos').select('id,title').live();
    await until(() => q.current().rows.length === 5, 'cached rows');
    await c.close();
    db1.close();

    await server.kill();
    await server.sql(`insert into todos (id, owner_id, title) values ('cold-new', '${user!.id}', 'while away')`);
    // the app is started again, without a server
    const db2 = new Database(file);
    const rec = recordingSockets();
    const c2 = client(server.url, { storage: sqliteStorage(expoSqlite(expoShim(db2))), webSocketFactory: rec.factory });
    const q2 = c2.from('todos').select('id,title').live();
    const cached = await until(() => (q2.current().status === 'cached' ? q2.current() : null), 'the cached result');
    expect(cached!.rows.map((r) => r.id)).toEqual(['cold-0', 'cold-1', 'cold-2', 'cold-3', 'cold-4']);
    expect(c2.connectionState()).not.toBe('live');
    await server.start();
    c2.reconnect();
    await until(() => q2.current().rows.length === 6 && q2.current().status === 'live', 'the row written while away', 40000);
    expect(rec.ofType('subscribe')[0]!.cursor).toEqual(expect.any(String));
    await c2.close();
    db2.close();
  });
});
