/**
 * `createClient(url, options)`: one client per app, composing auth, the REST query builder,
 * live queries on one shared socket, and the outbox.
 */
import { AuthClient, type AuthOptions } from './auth.js';
import type { Row } from './apply.js';
import { Connection, type ConnectionOptions, type StateListener } from './connection.js';
import type { ConnectionState } from './connection-state.js';
import type { RowcastError } from './errors.js';
import { httpRequest } from './http.js';
import { LiveQuery, type LiveQueryHandle, type LiveQueryOptions, type LiveQuerySpec } from './live-query.js';
import { Outbox, type OutboxEntry } from './outbox.js';
import { QueryBuilder, type QueryContext, type QueryResult } from './query.js';
import { resolveRuntime, type Runtime, type RuntimeOptions } from './runtime.js';
import { memoryStorage } from './storage/memory.js';
import type { StorageAdapter } from './storage/types.js';

/**
 * The database's shape as `rowcast gen types` writes it:
 * `{ public: { Tables: { todos: { Row: {...}; Insert: {...}; Update: {...} } } } }`.
 */
export interface GenericTable {
  Row: Record<string, unknown>;
  Insert?: Record<string, unknown>;
  Update?: Record<string, unknown>;
}
export interface GenericDatabase {
  public: { Tables: Record<string, GenericTable>; Views?: Record<string, { Row: Record<string, unknown> }> };
}

type TablesOf<DB> = DB extends { public: { Tables: infer T } } ? T : Record<string, GenericTable>;
type ViewsOf<DB> = DB extends { public: { Views: infer V } } ? V : Record<never, never>;
type Relations<DB> = TablesOf<DB> & ViewsOf<DB>;
type RowOf<DB, Name> = Name extends keyof Relations<DB>
  ? Relations<DB>[Name] extends { Row: infer R extends Record<string, unknown> }
    ? R
    : Row
  : Row;

type InsertOf<DB, Name> = Name extends keyof TablesOf<DB>
  ? TablesOf<DB>[Name] extends { Insert: infer I } ? I : Partial<RowOf<DB, Name>>
  : Partial<Row>;
type UpdateOf<DB, Name> = Name extends keyof TablesOf<DB>
  ? TablesOf<DB>[Name] extends { Update: infer U } ? U : Partial<RowOf<DB, Name>>
  : Partial<Row>;

export interface ClientOptions extends RuntimeOptions {
  /** Where the cache and the outbox live (and the session, unless `authStorage`). Default: memory. */
  storage?: StorageAdapter;
  /** Where the session lives, if not in `storage` (e.g. an AsyncStorage adapter). */
  authStorage?: StorageAdapter;
  auth?: AuthOptions;
  realtime?: ConnectionOptions;
}

export interface RowcastClient<DB = GenericDatabase> {
  readonly auth: AuthClient;
  /** A REST query on a table or view. */
  from<Name extends keyof Relations<DB> & string>(
    table: Name,
  ): QueryBuilder<RowOf<DB, Name>, RowOf<DB, Name>[], InsertOf<DB, Name>, UpdateOf<DB, Name>>;
  from(table: string): QueryBuilder<Row>;
  /** Call a database function (`POST /rest/v1/rpc/{fn}`). */
  rpc<T = unknown>(fn: string, args?: Record<string, unknown>): Promise<QueryResult<T>>;
  /** A live query from a spec (the builder's `.live()` is the usual way). */
  live<R = Row>(spec: LiveQuerySpec, options?: LiveQueryOptions<R>): LiveQueryHandle<R>;
  /** The connection's state (see docs/sdk.md, "Connection state machine"). */
  connectionState(): ConnectionState;
  onConnectionStateChange(listener: StateListener): () => void;
  /** Writes waiting for the server, oldest first. */
  pendingWrites(): readonly OutboxEntry[];
  /** Called for every queued write the server rejected (it has been rolled back). */
  onWriteRejected(listener: (write: OutboxEntry, error: RowcastError) => void): () => void;
  /** Retry the socket and the outbox now (e.g. when the app knows the network is back). */
  reconnect(): void;
  /** Resolves once the persisted session and outbox have been read. */
  ready(): Promise<void>;
  /** Stop timers, close the socket; pending writes stay stored for the next client. */
  close(): Promise<void>;
  /** Internals for tests and debugging. */
  readonly _internal: { connection: Connection; outbox: Outbox; runtime: Runtime };
}

export function createClient<DB = GenericDatabase>(url: string, options: ClientOptions = {}): RowcastClient<DB> {
  const baseUrl = url.replace(/\/+$/, '');
  const rt = resolveRuntime(options);
  const storage = options.storage ?? memoryStorage();
  const auth = new AuthClient(baseUrl, rt, options.authStorage ?? storage, options.auth);
  const namespace = () => auth.currentSession()?.user.id ?? 'anon';
  let lastNs: string | null = null;
  let lastToken: string | null = null;
  const refreshed = async () => {
    const r = await auth.refresh();
    return r.session ? r.session.access_token : null;
  };
  // Declared before the outbox, whose hooks reach the connection built just after it.
  // eslint-disable-next-line prefer-const
  let connection: Connection;
  const outbox = new Outbox(baseUrl, rt, storage, {
    accessToken: () => auth.accessToken(),
    currentUserId: () => auth.currentSession()?.user.id ?? null,
    refreshToken: async () => {
      await auth.refresh();
    },
    changed: (table) => {
      for (const q of connection.liveQueries()) if (q.spec.table === table) q.emit();
    },
    confirmed: (entry, rows) => {
      for (const q of connection.liveQueries()) if (q.spec.table === entry.optimistic.table) q.confirmWrite(entry, rows);
    },
  });
  connection = new Connection(
    baseUrl,
    rt,
    {
      accessToken: () => auth.accessToken(),
      refreshToken: refreshed,
      pendingFor: (t) => outbox.pendingFor(t),
      onLive: () => outbox.flush(),
    },
    options.realtime,
  );

  const authSub = auth.onAuthStateChange((event, session) => {
    const ns = session?.user.id ?? 'anon';
    if (lastNs !== null && ns !== lastNs) connection.identityChanged(ns);
    else if (event === 'TOKEN_REFRESHED' && session && session.access_token !== lastToken) connection.pushToken(session.access_token);
    lastNs = ns;
    lastToken = session?.access_token ?? null;
    if (event === 'SIGNED_IN' || event === 'TOKEN_REFRESHED') outbox.flush();
  });

  let unsubscribeAppState: (() => void) | undefined;
  if (rt.appState) {
    unsubscribeAppState = rt.appState.subscribe((s) => {
      if (s === 'active') {
        auth.onForeground();
        connection.dispatch('foreground');
        outbox.flush();
      } else connection.dispatch('background');
    });
    if (rt.appState.current && rt.appState.current() === 'background') connection.dispatch('background');
  }

  const ctx: QueryContext = {
    baseUrl,
    fetch: rt.fetch,
    accessToken: () => auth.accessToken(),
    newId: rt.newId,
    live: (spec, o) => client.live(spec, o),
    enqueue: (req, opt) => outbox.enqueue(req, opt),
  };

  const loaded = Promise.all([auth.ready(), outbox.loaded]).then(() => undefined);

  const client: RowcastClient<DB> = {
    auth,
    from: ((table: string) => new QueryBuilder<Row>(ctx, table)) as RowcastClient<DB>['from'],
    async rpc<T>(fn: string, args: Record<string, unknown> = {}) {
      const token = await auth.accessToken();
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      if (token) headers['Authorization'] = 'Bearer ' + token;
      const r = await httpRequest(rt.fetch, baseUrl + '/rest/v1/rpc/' + encodeURIComponent(fn), {
        method: 'POST',
        headers,
        body: JSON.stringify(args),
      });
      if (!r.ok) return { data: null, error: r.error, count: null, status: r.answer ? r.answer.status : 0 };
      return { data: r.answer.body as T, error: null, count: null, status: r.answer.status };
    },
    live<R = Row>(spec: LiveQuerySpec, o: LiveQueryOptions<R> = {}): LiveQueryHandle<R> {
      const q = new LiveQuery<R>(spec, o, connection, storage, namespace(), rt.newId().slice(0, 8));
      // Start after the session is known, so the right user's cache is read.
      void auth.ready().then(() => {
        if (q.isClosed()) return;
        q.switchNamespace(namespace());
        connection.add(q as unknown as LiveQuery);
      });
      return q;
    },
    connectionState: () => connection.state(),
    onConnectionStateChange: (l) => connection.onStateChange(l),
    pendingWrites: () => outbox.pending(),
    onWriteRejected: (l) => outbox.onRejected(l),
    reconnect() {
      connection.dispatch('reconnect');
      outbox.flush();
    },
    ready: () => loaded,
    async close() {
      authSub.unsubscribe();
      unsubscribeAppState?.();
      auth.stop();
      outbox.close();
      connection.close();
      await Promise.all(connection.liveQueries().map((q) => q.flushed()));
    },
    _internal: { connection, outbox, runtime: rt },
  };
  return client;
}
