// The connection state machine: the table agrees with docs/sdk.md cell by cell, and every
// state × event pair does what the table says on the real Connection with a fake socket.
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay, EVENTS, STATES, TRANSITIONS, type ConnectionEvent, type ConnectionState } from '../../src/connection-state.js';
import { Connection } from '../../src/connection.js';
import { resolveRuntime } from '../../src/runtime.js';
import { LiveQuery } from '../../src/live-query.js';
import { memoryStorage } from '../../src/storage/memory.js';
import { fakeSockets, WELCOME } from '../support/fake-socket.js';

function docTable(): Map<string, string> {
  const md = readFileSync(new URL('../../../docs/sdk.md', import.meta.url), 'utf8');
  const start = md.indexOf('<!-- state-table -->');
  const end = md.indexOf('<!-- /state-table -->');
  expect(start).toBeGreaterThan(0);
  const lines = md.slice(start, end).split('\n').filter((l) => l.startsWith('|'));
  const header = lines[0]!.split('|').slice(2, -1).map((s) => s.trim());
  const cells = new Map<string, string>();
  for (const line of lines.slice(2)) {
    const parts = line.split('|').slice(1, -1).map((s) => s.trim());
    const event = parts[0]!.replace(/\*\*/g, '');
    header.forEach((state, i) => cells.set(`${state}/${event}`, parts[i + 1]!));
  }
  return cells;
}

function cellText(state: ConnectionState, event: ConnectionEvent): string {
  const t = TRANSITIONS[state][event];
  if (!t) return '—';
  return t.effects.length ? `${t.to}: ${t.effects.join(', ')}` : t.to;
}

describe('the state table', () => {
  it('is the one written in docs/sdk.md, in both directions', () => {
    const doc = docTable();
    const expected = new Map<string, string>();
    for (const s of STATES) for (const e of EVENTS) expected.set(`${s}/${e}`, cellText(s, e));
    expect(Object.fromEntries(doc)).toEqual(Object.fromEntries(expected));
  });

  it('lets every non-terminal state be closed, and closed ignores everything', () => {
    for (const s of STATES) {
      if (s === 'closed') {
        for (const e of EVENTS) expect(TRANSITIONS.closed[e]).toBeNull();
      } else expect(TRANSITIONS[s].close?.to).toBe('closed');
    }
  });
});

describe('full-jitter backoff', () => {
  it('stays within [0, min(max, base·2^attempt))', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const cap = Math.min(30000, 500 * 2 ** attempt);
      expect(backoffDelay(attempt, () => 0)).toBe(0);
      const top = backoffDelay(attempt, () => 0.999999);
      expect(top).toBeLessThan(cap);
      expect(top).toBeGreaterThanOrEqual(Math.floor(cap * 0.999));
    }
    expect(backoffDelay(3, () => 0.5, { baseMs: 100, maxMs: 250 })).toBe(125);
  });

  it('spreads clients out (uniform, not in lockstep)', () => {
    const delays = Array.from({ length: 2000 }, () => backoffDelay(6, Math.random));
    const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
    expect(mean).toBeGreaterThan(30000 * 0.4);
    expect(mean).toBeLessThan(30000 * 0.6);
  });
});

/** A Connection with one live query, driven into `state` through real socket events. */
function harness() {
  const fs = fakeSockets();
  const rt = resolveRuntime({ webSocketFactory: fs.factory, fetch: () => Promise.reject(new Error('no http')), random: () => 0.5 });
  const refresh = vi.fn(async () => 'fresh-token');
  const conn = new Connection('http://127.0.0.1:1', rt, {
    accessToken: async () => 'tok',
    refreshToken: refresh,
    pendingFor: () => [],
    onLive: () => undefined,
  });
  const storage = memoryStorage();
  const query = () => new LiveQuery({ table: 'todos' }, {}, conn, storage, 'anon', 'x');
  return { fs, conn, refresh, query };
}

async function reach(state: ConnectionState) {
  const h = harness();
  const { conn, fs } = h;
  if (state === 'idle') return h;
  if (state === 'closed') {
    conn.close();
    return h;
  }
  if (state === 'suspended') {
    conn.dispatch('background');
    conn.add(h.query());
    return h;
  }
  conn.add(h.query());
  expect(conn.state()).toBe('connecting');
  if (state === 'connecting') return h;
  fs.last().open();
  await vi.advanceTimersByTimeAsync(0);
  if (state === 'failed') {
    fs.last().serverClose(4002);
    return h;
  }
  fs.last().deliver(WELCOME);
  expect(conn.state()).toBe('live');
  if (state === 'live') return h;
  fs.last().serverClose(1012);
  expect(conn.state()).toBe('offline');
  return h;
}

describe('every state × event on the real connection', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  for (const state of STATES) {
    for (const event of EVENTS) {
      it(`${state} + ${event}`, async () => {
        const h = await reach(state);
        expect(h.conn.state()).toBe(state);
        const socketsBefore = h.fs.sockets.length;
        const current = h.fs.sockets[socketsBefore - 1];
        const wasClosed = current?.closedByClient !== null;
        h.conn.dispatch(event);
        const cell = TRANSITIONS[state][event];
        const expectedState = cell ? cell.to : state;
        const effects = cell ? cell.effects : [];
        // check-demand re-dispatches `demand`: with a query present, idle moves on to connecting.
        const after = effects.includes('check-demand') && expectedState === 'idle' && h.conn.liveQueries().length > 0 ? 'connecting' : expectedState;
        expect(h.conn.state()).toBe(after);
        const opened = effects.includes('open') || (effects.includes('check-demand') && after === 'connecting');
        expect(h.fs.sockets.length).toBe(socketsBefore + (opened ? 1 : 0));
        if (effects.includes('close-socket') && current && !wasClosed && state !== 'offline') {
          expect(current.closedByClient).not.toBeNull();
        }
        if (!cell && current) expect(current.closedByClient === null).toBe(!wasClosed);
        if (effects.includes('schedule-retry')) {
          // The retry timer brings the machine back to connecting with a new socket.
          const n = h.fs.sockets.length;
          await vi.advanceTimersByTimeAsync(1000);
          expect(h.fs.sockets.length).toBe(n + 1);
          expect(h.conn.state()).toBe('connecting');
        }
        if (effects.includes('refresh-token')) expect(h.refresh).toHaveBeenCalled();
        if (effects.includes('probe')) expect(current!.sentOfType('ping').length).toBeGreaterThan(0);
      });
    }
  }
});
