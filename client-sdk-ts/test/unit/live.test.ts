// The apply rule and live queries over a fake socket: snapshots, duplicate and reordered
// changes, resync, resume by cursor, token expiry on a live socket, the heartbeat, and the
// optimistic overlay of queued writes.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { keyOf, RowSet } from '../../src/apply.js';
import { createClient } from '../../src/client.js';
import { matches } from '../../src/filter.js';
import { applyOptimistic } from '../../src/live-query.js';
import { memoryStorage } from '../../src/storage/memory.js';
import type { FetchLike } from '../../src/runtime.js';
import { fakeSockets, WELCOME, type FakeSocket } from '../support/fake-socket.js';

describe('the apply rule', () => {
  const pk = { id: 1 };
  it('keeps the highest version and ignores duplicates', () => {
    const s = new RowSet();
    expect(s.apply({ op: 'insert', pk, v: 5, row: { id: 1, t: 'a' } })).toBe(true);
    expect(s.apply({ op: 'insert', pk, v: 5, row: { id: 1, t: 'a' } })).toBe(false);
    expect(s.apply({ op: 'update', pk, v: 7, row: { id: 1, t: 'c' } })).toBe(true);
    // an older update arriving late changes nothing
    expect(s.apply({ op: 'update', pk, v: 6, row: { id: 1, t: 'b' } })).toBe(false);
    expect(s.rows().get(keyOf(pk))).toEqual({ id: 1, t: 'c' });
  });

  it('keeps tombstones so a late insert cannot resurrect a deleted row', () => {
    const s = new RowSet();
    s.apply({ op: 'delete', pk, v: 9 });
    expect(s.apply({ op: 'insert', pk, v: 8, row: { id: 1 } })).toBe(false);
    expect(s.rows().size).toBe(0);
    expect(s.apply({ op: 'insert', pk, v: 10, row: { id: 1 } })).toBe(true);
    expect(s.rows().size).toBe(1);
  });

  it('converges to the same result in any order', () => {
    const items = [
      { op: 'insert' as const, pk: { id: 1 }, v: 1, row: { id: 1, n: 1 } },
      { op: 'update' as const, pk: { id: 1 }, v: 4, row: { id: 1, n: 2 } },
      { op: 'insert' as const, pk: { id: 2 }, v: 2, row: { id: 2, n: 1 } },
      { op: 'remove' as const, pk: { id: 2 }, v: 5 },
      { op: 'insert' as const, pk: { id: 3 }, v: 3, row: { id: 3, n: 1 } },
    ];
    const expected = new RowSet();
    items.forEach((i) => expected.apply(i));
    for (let trial = 0; trial < 50; trial++) {
      const shuffled = [...items, ...items].sort(() => Math.random() - 0.5);
      const s = new RowSet();
      shuffled.forEach((i) => s.apply(i));
      expect([...s.rows()]).toEqual(expect.arrayContaining([...expected.rows()]));
      expect(s.rows().size).toBe(expected.rows().size);
    }
  });

  it('composite keys are independent of column order', () => {
    expect(keyOf({ a: 1, b: 'x' })).toBe(keyOf({ b: 'x', a: 1 }));
  });
});

describe('filters evaluated locally', () => {
  it('follow SQL null semantics and the operators', () => {
    expect(matches({ column: 'a', op: 'eq', value: 1 }, { a: 1 })).toBe(true);
    expect(matches({ column: 'a', op: 'neq', value: 1 }, { a: null })).toBe(false);
    expect(matches({ column: 'a', op: 'is', value: null }, { a: null })).toBe(true);
    expect(matches({ column: 'a', op: 'is', value: 'not_null' }, { a: 0 })).toBe(true);
    expect(matches({ column: 'a', op: 'in', value: ['x', 'y'] }, { a: 'y' })).toBe(true);
    expect(matches({ column: 'a', op: 'gte', value: 3 }, { a: 3 })).toBe(true);
    expect(matches({ column: 't', op: 'lt', value: '2024-01-02T00:00:00Z' }, { t: '2024-01-01T23:00:00+00:00' })).toBe(true);
    expect(matches({ or: [{ column: 'a', op: 'eq', value: 1 }, { and: [{ column: 'b', op: 'gt', value: 2 }] }] }, { a: 0, b: 3 })).toBe(true);
  });

  it('optimistic update moves a row out of a filtered view', () => {
    const view = new Map([[keyOf({ id: 1 }), { id: 1, done: false }]]);
    applyOptimistic(
      view,
      { table: 't', kind: 'update', rows: undefined, patch: { done: true }, filter: { column: 'id', op: 'eq', value: 1 }, applicable: true },
      { table: 't', filter: { column: 'done', op: 'eq', value: false } },
      ['id'],
    );
    expect(view.size).toBe(0);
  });
});

function setup(opts: { fetch?: FetchLike; heartbeatIntervalMs?: number } = {}) {
  const fs = fakeSockets();
  const storage = memoryStorage();
  let n = 0;
  const client = createClient('http://127.0.0.1:1', {
    webSocketFactory: fs.factory,
    fetch: opts.fetch ?? (() => Promise.reject(new Error('offline'))),
    storage,
    newId: () => 'id-' + ++n,
    random: () => 0.5,
    realtime: { heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 10000 },
  });
  return { fs, client, storage };
}

async function goLive(fs: ReturnType<typeof fakeSockets>): Promise<FakeSocket> {
  await vi.advanceTimersByTimeAsync(0);
  const s = fs.last();
  s.open();
  await vi.advanceTimersByTimeAsync(0);
  s.deliver(WELCOME);
  await vi.advanceTimersByTimeAsync(0);
  return s;
}

describe('live queries over a fake socket', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('snapshot, then changes; duplicates and reordering are harmless', async () => {
    const { fs, client } = setup();
    const q = client.from('todos').select('id,title').eq('done', false).live();
    const s = await goLive(fs);
    const sub = s.sentOfType('subscribe')[0]!;
    expect(sub).toMatchObject({ table: 'todos', filter: { column: 'done', op: 'eq', value: false }, columns: ['id', 'title'] });
    expect(sub.cursor).toBeUndefined();
    const id = sub.id as string;
    s.deliver({ type: 'snapshot', id, rows: [{ op: 'insert', pk: { id: 1 }, v: 10, row: { id: 1, title: 'a' } }] });
    expect(q.current().rows).toEqual([]); // a partial snapshot is not shown
    s.deliver({ type: 'snapshot-end', id, cursor: 'c1' });
    expect(q.current().rows).toEqual([{ id: 1, title: 'a' }]);
    // catch-up re-sends what the snapshot had, then a newer change, then the old one again
    s.deliver({ type: 'changes', id, cursor: 'c2', changes: [{ op: 'insert', pk: { id: 1 }, v: 10, row: { id: 1, title: 'a' } }] });
    s.deliver({ type: 'changes', id, cursor: 'c4', changes: [{ op: 'update', pk: { id: 1 }, v: 12, row: { id: 1, title: 'b' } }] });
    s.deliver({ type: 'changes', id, cursor: 'c3', changes: [{ op: 'update', pk: { id: 1 }, v: 11, row: { id: 1, title: 'stale' } }] });
    s.deliver({ type: 'changes', id, cursor: 'c5', changes: [{ op: 'insert', pk: { id: 2 }, v: 13, row: { id: 2, title: 'c' } }] });
    s.deliver({ type: 'live', id, cursor: 'c5' });
    expect(q.current()).toMatchObject({ status: 'live', rows: [{ id: 1, title: 'b' }, { id: 2, title: 'c' }] });
    s.deliver({ type: 'changes', id, cursor: 'c6', changes: [{ op: 'remove', pk: { id: 1 }, v: 14 }] });
    expect(q.current().rows).toEqual([{ id: 2, title: 'c' }]);
    await client.close();
  });

  it('resumes from the cursor after a drop, and restarts from a snapshot on resync-required', async () => {
    const { fs, client } = setup();
    const q = client.live({ table: 'todos' });
    let s = await goLive(fs);
    const id = s.sentOfType('subscribe')[0]!.id as string;
    s.deliver({ type: 'snapshot', id, rows: [{ op: 'insert', pk: { id: 1 }, v: 1, row: { id: 1 } }] });
    s.deliver({ type: 'snapshot-end', id, cursor: 'c1' });
    s.deliver({ type: 'live', id, cursor: 'c1' });
    s.serverClose(1012);
    expect(client.connectionState()).toBe('offline');
    await vi.advanceTimersByTimeAsync(1000);
    s = await goLive(fs);
    const resume = s.sentOfType('subscribe')[0]!;
    expect(resume).toMatchObject({ id, cursor: 'c1' });
    s.deliver({ type: 'resync-required', id, reason: 'history pruned' });
    const again = s.sentOfType('subscribe')[1]!;
    expect(again.id).toBe(id);
    expect(again.cursor).toBeUndefined();
    // the old rows stay visible until the new snapshot replaces them
    expect(q.current().rows).toEqual([{ id: 1 }]);
    s.deliver({ type: 'snapshot', id, rows: [{ op: 'insert', pk: { id: 2 }, v: 5, row: { id: 2 } }] });
    s.deliver({ type: 'snapshot-end', id, cursor: 'c9' });
    expect(q.current().rows).toEqual([{ id: 2 }]);
    await client.close();
  });

  it('token expiry on a live socket: refresh, `auth`, then resubscribe from the cursors', async () => {
    const session = (tok: string, exp: number) => ({
      access_token: tok,
      token_type: 'bearer',
      expires_in: 3600,
      expires_at: exp,
      refresh_token: 'r-' + tok,
      user: { id: 'u1' },
    });
    const fetch: FetchLike = async (url) => {
      const body = url.includes('grant_type=refresh_token') ? session('t2', Date.now() / 1000 + 3600) : session('t1', Date.now() / 1000 + 3600);
      return { status: 200, headers: { get: () => null }, text: async () => JSON.stringify(body) };
    };
    const { fs, client } = setup({ fetch });
    await client.auth.signInWithPassword({ email: 'a@b.c', password: 'p' });
    client.live({ table: 'todos' });
    const s = await goLive(fs);
    expect(s.sentOfType('hello')[0]).toMatchObject({ token: 't1' });
    const id = s.sentOfType('subscribe')[0]!.id as string;
    s.deliver({ type: 'snapshot-end', id, cursor: 'c1' });
    s.deliver({ type: 'error', code: 'token-expired', message: 'expired' });
    await vi.advanceTimersByTimeAsync(0);
    expect(s.sentOfType('auth')).toEqual([{ type: 'auth', token: 't2' }]);
    expect(s.sentOfType('subscribe')).toHaveLength(1); // nothing until the server accepts
    s.deliver({ type: 'authenticated', role: 'authenticated', expires_at: 0 });
    expect(s.sentOfType('subscribe')[1]).toMatchObject({ id, cursor: 'c1' });
    expect(client.connectionState()).toBe('live');
    expect(fs.sockets).toHaveLength(1); // same socket throughout
    await client.close();
  });

  it('a refresh before expiry is pushed onto the socket without resubscribing', async () => {
    const now = Date.now() / 1000;
    let tok = 0;
    const fetch: FetchLike = async () => {
      tok++;
      const body = { access_token: 't' + tok, token_type: 'bearer', expires_in: 120, expires_at: Date.now() / 1000 + 120, refresh_token: 'r' + tok, user: { id: 'u1' } };
      return { status: 200, headers: { get: () => null }, text: async () => JSON.stringify(body) };
    };
    const { fs, client } = setup({ fetch, heartbeatIntervalMs: 1e9 });
    await client.auth.signInWithPassword({ email: 'a@b.c', password: 'p' });
    client.live({ table: 'todos' });
    const s = await goLive(fs);
    expect(now).toBeGreaterThan(0);
    // refresh margin is 60 s: at 60 s of a 120 s token the refresh runs
    await vi.advanceTimersByTimeAsync(61000);
    expect(s.sentOfType('auth')).toEqual([{ type: 'auth', token: 't2' }]);
    expect(s.sentOfType('subscribe')).toHaveLength(1);
    await client.close();
  });

  it('notices a dead socket within seconds (heartbeat) and reconnects', async () => {
    const { fs, client } = setup();
    client.live({ table: 'todos' });
    const s = await goLive(fs);
    // the server stops answering: the next ping gets no frame back
    await vi.advanceTimersByTimeAsync(10000);
    expect(s.sentOfType('ping')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5000);
    expect(client.connectionState()).not.toBe('live');
    expect(s.closedByClient).not.toBeNull();
    await vi.advanceTimersByTimeAsync(1000);
    expect(fs.sockets).toHaveLength(2);
    await client.close();
  });

  it('answered pings keep the socket', async () => {
    const { fs, client } = setup();
    client.live({ table: 'todos' });
    const s = await goLive(fs);
    for (let i = 0; i < 5; i++) {
      await vi.advanceTimersByTimeAsync(10000);
      const ping = s.sentOfType('ping').at(-1)!;
      s.deliver({ type: 'pong', ref: ping.ref });
    }
    expect(client.connectionState()).toBe('live');
    expect(fs.sockets).toHaveLength(1);
    await client.close();
  });

  it('goes suspended in the background and resumes by cursor on foreground', async () => {
    const fs = fakeSockets();
    let listener: ((s: 'active' | 'background') => void) | undefined;
    const client = createClient('http://127.0.0.1:1', {
      webSocketFactory: fs.factory,
      fetch: () => Promise.reject(new Error('offline')),
      random: () => 0.5,
      appState: { subscribe: (l) => ((listener = l), () => undefined) },
    });
    client.live({ table: 'todos' });
    const s = await goLive(fs);
    const id = s.sentOfType('subscribe')[0]!.id as string;
    s.deliver({ type: 'snapshot-end', id, cursor: 'c7' });
    listener!('background');
    expect(client.connectionState()).toBe('suspended');
    expect(s.closedByClient).not.toBeNull();
    listener!('active');
    expect(client.connectionState()).toBe('connecting');
    const s2 = await goLive(fs);
    expect(s2.sentOfType('subscribe')[0]).toMatchObject({ id, cursor: 'c7' });
    await client.close();
  });

  it('a queued write shows at once and is rolled back and reported when rejected', async () => {
    let answer: (v: { status: number; body: unknown }) => void = () => undefined;
    const fetch: FetchLike = () =>
      new Promise((resolve) => {
        answer = ({ status, body }) => resolve({ status, headers: { get: () => null }, text: async () => JSON.stringify(body) });
      });
    const { fs, client } = setup({ fetch });
    const q = client.from('todos').select('*').live();
    const s = await goLive(fs);
    const id = s.sentOfType('subscribe')[0]!.id as string;
    s.deliver({ type: 'snapshot', id, rows: [{ op: 'insert', pk: { id: 1 }, v: 1, row: { id: 1, title: 'a' } }] });
    s.deliver({ type: 'snapshot-end', id, cursor: 'c1' });
    const rejected = vi.fn();
    client.onWriteRejected(rejected);
    const w = client.from('todos').insert({ id: 2, title: 'mine' }).enqueue();
    expect(q.current().rows).toEqual([{ id: 1, title: 'a' }, { id: 2, title: 'mine' }]);
    expect(q.current().hasPendingWrites).toBe(true);
    await w.persisted;
    await vi.advanceTimersByTimeAsync(0);
    answer({ status: 403, body: { code: 'forbidden', message: 'no' } });
    const outcome = await w.settled;
    expect(outcome.status).toBe('rejected');
    expect(rejected).toHaveBeenCalledTimes(1);
    expect(rejected.mock.calls[0]![1]).toMatchObject({ code: 'forbidden', retryable: false });
    expect(q.current().rows).toEqual([{ id: 1, title: 'a' }]);
    expect(q.current().hasPendingWrites).toBe(false);
    await client.close();
  });
});
