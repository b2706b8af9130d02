// The SDK's core — the apply rule, the state machine and a live query over a fake socket —
// run inside the Hermes VM (`hermes` from hermes-engine-cli). scripts/hermes-core.mjs
// compiles this file down to ES5 (that engine predates class support) and runs it.
import { keyOf, RowSet } from '../../src/apply.js';
import { EVENTS, STATES, TRANSITIONS, backoffDelay } from '../../src/connection-state.js';
import { Connection } from '../../src/connection.js';
import { LiveQuery } from '../../src/live-query.js';
import { resolveRuntime, randomUuid, type TimerHandle, type Timers, type WebSocketLike } from '../../src/runtime.js';
import { memoryStorage } from '../../src/storage/memory.js';

declare const print: (...args: unknown[]) => void;

let failures = 0;
let checks = 0;
function check(cond: boolean, what: string): void {
  checks++;
  if (!cond) {
    failures++;
    print('FAIL: ' + what);
  }
}

// ---- fake timers ----
let now = 1000;
let nextId = 1;
const pending: Array<{ id: number; at: number; fn: () => void }> = [];
const timers: Timers = {
  setTimeout(fn, ms) {
    const id = nextId++;
    pending.push({ id, at: now + ms, fn });
    return id;
  },
  clearTimeout(h: TimerHandle) {
    const i = pending.findIndex((p) => p.id === h);
    if (i >= 0) pending.splice(i, 1);
  },
  now: () => now,
};
function advance(ms: number): void {
  const end = now + ms;
  for (;;) {
    pending.sort((a, b) => a.at - b.at);
    const first = pending[0];
    if (!first || first.at > end) break;
    pending.shift();
    now = first.at;
    first.fn();
  }
  now = end;
}

// ---- fake socket ----
class Fake implements WebSocketLike {
  readyState = 0;
  sent: Array<Record<string, unknown>> = [];
  closed = false;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  send(d: string) {
    this.sent.push(JSON.parse(d) as Record<string, unknown>);
  }
  close() {
    this.closed = true;
  }
  deliver(m: Record<string, unknown>) {
    if (this.onmessage) this.onmessage({ data: JSON.stringify(m) });
  }
}
const sockets: Fake[] = [];

/** Let pending promise jobs run (the cache load and the token lookup are async). */
async function tick(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => r());
}

async function main(): Promise<void> {
  // apply rule
  const s = new RowSet();
  s.apply({ op: 'insert', pk: { id: 1 }, v: 2, row: { id: 1, t: 'new' } });
  s.apply({ op: 'update', pk: { id: 1 }, v: 1, row: { id: 1, t: 'old' } });
  s.apply({ op: 'delete', pk: { id: 2 }, v: 9 });
  s.apply({ op: 'insert', pk: { id: 2 }, v: 8, row: { id: 2 } });
  check(s.rows().size === 1 && (s.rows().get(keyOf({ id: 1 })) as { t: string }).t === 'new', 'apply rule');

  // state table complete, backoff bounded
  let cells = 0;
  for (const st of STATES) for (const ev of EVENTS) if (TRANSITIONS[st][ev] !== undefined) cells++;
  check(cells === STATES.length * EVENTS.length, 'every state × event has a cell');
  for (let a = 0; a < 20; a++) check(backoffDelay(a, () => 0.9999) < Math.min(30000, 500 * Math.pow(2, a)), 'backoff bound ' + a);
  check(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(randomUuid()), 'uuid fallback');

  // a live query over the fake socket
  const rt = resolveRuntime({
    timers,
    random: () => 0.5,
    fetch: () => Promise.reject(new Error('none')),
    webSocketFactory: () => {
      const f = new Fake();
      sockets.push(f);
      return f;
    },
  });
  const conn = new Connection('http://example', rt, {
    accessToken: () => Promise.resolve(null),
    refreshToken: () => Promise.resolve(null),
    pendingFor: () => [],
    onLive: () => undefined,
  });
  const q = new LiveQuery({ table: 'todos', filter: { column: 'done', op: 'eq', value: false } }, {}, conn, memoryStorage(), 'anon', 'h');
  conn.add(q);
  await tick();
  await tick();
  check(conn.state() === 'connecting', 'connecting after demand');
  const ws = sockets[0]!;
  ws.readyState = 1;
  if (ws.onopen) ws.onopen({});
  await tick();
  check(ws.sent[0]!.type === 'hello', 'hello first');
  ws.deliver({ type: 'welcome', v: 1, role: 'anon', heartbeat_ms: 20000, max_message_bytes: 65536, max_subscriptions: 100 });
  check(conn.state() === 'live', 'live after welcome');
  const sub = ws.sent.filter((m) => m.type === 'subscribe')[0]!;
  ws.deliver({ type: 'snapshot', id: sub.id, rows: [{ op: 'insert', pk: { id: 1 }, v: 1, row: { id: 1, done: false } }] });
  ws.deliver({ type: 'snapshot-end', id: sub.id, cursor: 'c1' });
  ws.deliver({ type: 'changes', id: sub.id, cursor: 'c2', changes: [{ op: 'insert', pk: { id: 2 }, v: 3, row: { id: 2, done: false } }] });
  ws.deliver({ type: 'changes', id: sub.id, cursor: 'c2', changes: [{ op: 'insert', pk: { id: 2 }, v: 3, row: { id: 2, done: false } }] });
  ws.deliver({ type: 'live', id: sub.id, cursor: 'c2' });
  check(q.current().rows.length === 2 && q.current().status === 'live', 'snapshot + changes, duplicate ignored');
  // heartbeat: no answer to the ping → dead → offline → retry with the cursor
  advance(10000);
  check(ws.sent.some((m) => m.type === 'ping'), 'ping sent');
  advance(5000);
  check(conn.state() === 'offline' && ws.closed, 'dead socket noticed');
  advance(1000);
  check(sockets.length === 2 && conn.state() === 'connecting', 'reconnecting');
  const ws2 = sockets[1]!;
  ws2.readyState = 1;
  if (ws2.onopen) ws2.onopen({});
  await tick();
  ws2.deliver({ type: 'welcome', v: 1, role: 'anon', heartbeat_ms: 20000, max_message_bytes: 65536, max_subscriptions: 100 });
  const resume = ws2.sent.filter((m) => m.type === 'subscribe')[0]!;
  check(resume.cursor === 'c2', 'resumed from the cursor');
  ws2.deliver({ type: 'resync-required', id: sub.id, reason: 'truncate' });
  const again = ws2.sent.filter((m) => m.type === 'subscribe')[1]!;
  check(again !== undefined && again.cursor === undefined, 'resubscribed without cursor on resync-required');
  conn.close();
  check(conn.state() === 'closed', 'closed');
  print((failures === 0 ? 'HERMES CORE OK' : 'HERMES CORE FAILED') + ' ' + (checks - failures) + '/' + checks);
}

main().then(
  () => undefined,
  (e: unknown) => print('HERMES CORE FAILED: ' + String(e)),
);
