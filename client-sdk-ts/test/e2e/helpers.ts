// Shared e2e helpers: a client wired to the test server with the `ws` package and Node's fetch.
import WebSocket from 'ws';
import { createClient, type ClientOptions, type RowcastClient } from '../../src/index.js';
import type { Database } from './database.js';

let n = 0;
export const uniqueEmail = (tag: string) => `${tag}-${Date.now()}-${++n}@example.com`;

export function client(url: string, options: ClientOptions = {}): RowcastClient<Database> {
  return createClient<Database>(url, {
    WebSocket: WebSocket as unknown as ClientOptions['WebSocket'],
    realtime: { heartbeatIntervalMs: 2000, heartbeatTimeoutMs: 2000, backoff: { baseMs: 100, maxMs: 1000 } },
    ...options,
  });
}

export async function signedIn(url: string, tag: string, options: ClientOptions = {}) {
  const c = client(url, options);
  const { data, error } = await c.auth.signUp({ email: uniqueEmail(tag), password: 'correct horse battery' });
  if (error) throw error;
  return { c, user: data.user };
}

/** A `ws` socket factory that records every frame the client sends. */
export function recordingSockets() {
  const sent: Array<Record<string, unknown>> = [];
  const factory = (url: string) => {
    const ws = new WebSocket(url);
    const send = ws.send.bind(ws);
    (ws as unknown as { send: (d: string) => void }).send = (d: string) => {
      sent.push(JSON.parse(d) as Record<string, unknown>);
      send(d);
    };
    return ws as unknown as import('../../src/runtime.js').WebSocketLike;
  };
  return { sent, factory, ofType: (t: string) => sent.filter((m) => m.type === t) };
}

/** better-sqlite3 behind the expo-sqlite shape the SQLite adapter takes. */
export function expoShim(db: import('better-sqlite3').Database) {
  return {
    runAsync: async (sql: string, params: unknown[]) => db.prepare(sql).run(params),
    getAllAsync: async (sql: string, params: unknown[]) => db.prepare(sql).all(params),
  };
}
