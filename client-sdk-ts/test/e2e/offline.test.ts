// Offline writes against a real server: queued while the server is down, shown at once,
// applied exactly once on reconnect (also when the client is torn down between sending
// and the answer), and a rejected write rolled back and reported, in order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FetchLike } from '../../src/runtime.js';
import { memoryStorage } from '../../src/storage/memory.js';
import type { OutboxEntry, RowcastError } from '../../src/index.js';
import { client, signedIn } from './helpers.js';
import { TestServer, until } from './server.js';

const server = new TestServer();
beforeAll(() => server.start());
afterAll(() => server.stop());

const nodeFetch: FetchLike = (url, init) => fetch(url, init);

describe('the outbox', () => {
  it('queues writes while the server is down, shows them at once, applies each exactly once', async () => {
    const storage = memoryStorage();
    const { c, user } = await signedIn(server.url, 'off', { storage });
    const todos = c.from('todos').select('id,title,done').live();
    const events = c.from('events').select('id,body').live();
    await todos.ready();
    await events.ready();
    await c.from('todos').insert({ id: 'o-0', title: 'before' });
    await until(() => todos.current().rows.length === 1, 'the first row');

    await server.kill();
    const w1 = c.from('todos').insert({ id: 'o-1', title: 'offline one' }).enqueue();
    const w2 = c.from('todos').update({ done: true }).eq('id', 'o-0').enqueue();
    const w3 = c.from('events').insert({ body: 'offline event' }).enqueue();
    const w4 = c.from('todos').delete().eq('id', 'o-1').enqueue();
    const w5 = c.from('todos').upsert({ id: 'o-2', title: 'upserted' }).enqueue();
    await Promise.all([w1.persisted, w2.persisted, w3.persisted, w4.persisted, w5.persisted]);
    // optimistic: o-1 inserted then deleted, o-0 done, o-2 present
    expect(todos.current().rows).toEqual([
      { id: 'o-0', title: 'before', done: true },
      { id: 'o-2', title: 'upserted' },
    ]);
    expect(todos.current().hasPendingWrites).toBe(true);
    expect(c.pendingWrites()).toHaveLength(5);

    await server.start();
    c.reconnect();
    const outcomes = await Promise.all([w1.settled, w2.settled, w3.settled, w4.settled, w5.settled]);
    expect(outcomes.map((o) => o.status)).toEqual(['applied', 'applied', 'applied', 'applied', 'applied']);
    expect(c.pendingWrites()).toHaveLength(0);
    expect(await server.sql(`select count(*) from events where owner_id = '${user!.id}' and body = 'offline event'`)).toBe('1');
    expect(await server.sql(`select string_agg(id || ':' || done, ',' order by id) from todos where owner_id = '${user!.id}'`)).toBe('o-0:true,o-2:false');
    await until(
      () => JSON.stringify(todos.current().rows.map((r) => [r.id, r.done])) === JSON.stringify([['o-0', true], ['o-2', false]]) && !todos.current().hasPendingWrites,
      'confirmed rows without pending writes',
    );
    await until(() => events.current().rows.length === 1, 'the event with its server id');
    await c.close();
  });

  it('is exactly once when the client is torn down between sending and the answer', async () => {
    const storage = memoryStorage();
    let sent = 0;
    let answered!: () => void;
    const gotAnswer = new Promise<void>((r) => (answered = r));
    // The request reaches the server (which applies it); the answer is lost with the app.
    const dying: FetchLike = async (url, init) => {
      const res = await fetch(url, init);
      if (init.headers['Idempotency-Key']) {
        sent++;
        await res.text();
        answered();
        return new Promise(() => undefined);
      }
      return res;
    };
    const { c, user } = await signedIn(server.url, 'tear', { storage, fetch: dying });
    const w = c.from('events').insert({ body: 'exactly once' }).enqueue();
    await w.persisted;
    await gotAnswer;
    expect(sent).toBe(1);
    await c.close();
    expect(await server.sql(`select count(*) from events where owner_id = '${user!.id}'`)).toBe('1');

    // the app starts again on the same storage: the write is still pending and is resent
    const replayed: string[] = [];
    const watching: FetchLike = async (url, init) => {
      const res = await fetch(url, init);
      if (init.headers['Idempotency-Key']) replayed.push(res.headers.get('idempotent-replayed') ?? 'no');
      return res;
    };
    const c2 = client(server.url, { storage, fetch: watching });
    await c2.ready();
    expect(c2.pendingWrites().map((p) => p.id)).toEqual([w.id]);
    c2.reconnect();
    await until(() => c2.pendingWrites().length === 0, 'the resent write to settle');
    expect(replayed).toEqual(['true']);
    expect(await server.sql(`select count(*) from events where owner_id = '${user!.id}'`)).toBe('1');
    const q = c2.from('events').select('id,body').live();
    await q.ready();
    expect(q.current().rows.map((r) => r.body)).toEqual(['exactly once']);
    await c2.close();
  });

  it('rolls back and reports a rejected write, keeping the order of the others', async () => {
    const { c, user } = await signedIn(server.url, 'rej', { fetch: nodeFetch });
    const todos = c.from('todos').select('id,title').live();
    await todos.ready();
    const rejected: Array<[OutboxEntry, RowcastError]> = [];
    c.onWriteRejected((w, e) => rejected.push([w, e]));
    await server.kill();
    const ok1 = c.from('todos').insert({ id: 'r-1', title: 'fine' }).enqueue();
    const bad = c.from('todos').insert({ id: 'r-2', title: '' }).enqueue(); // breaks the check constraint
    const ok2 = c.from('todos').update({ title: 'fine, edited' }).eq('id', 'r-1').enqueue();
    expect(todos.current().rows.map((r) => r.id)).toEqual(['r-1', 'r-2']);
    await server.start();
    c.reconnect();
    const [o1, ob, o2] = await Promise.all([ok1.settled, bad.settled, ok2.settled]);
    expect(o1.status).toBe('applied');
    expect(ob).toMatchObject({ status: 'rejected', error: { code: 'constraint-violation', retryable: false } });
    expect(o2.status).toBe('applied');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]![0].id).toBe(bad.id);
    expect(rejected[0]![1].code).toBe('constraint-violation');
    await until(() => JSON.stringify(todos.current().rows) === JSON.stringify([{ id: 'r-1', title: 'fine, edited' }]), 'the rolled-back view');
    expect(await server.sql(`select string_agg(id || ':' || title, ',') from todos where owner_id = '${user!.id}'`)).toBe('r-1:fine, edited');
    await c.close();
  });
});
