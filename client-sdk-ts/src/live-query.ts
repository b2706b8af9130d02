/**
 * One live query: the rows of a table that match a filter, kept current from the realtime
 * socket with the apply rule, cached (rows + cursor) in storage so a cold start shows the
 * last result at once and resumes from its cursor, and overlaid with the outbox's pending
 * writes so the app sees its own offline changes immediately.
 *
 * The socket side (sending `subscribe`, routing frames here) is `connection.ts`.
 */
import { keyOf, pkOf, RowSet, type ChangeItem, type Entry, type Row } from './apply.js';
import { RowcastError } from './errors.js';
import { matches, type Filter } from './filter.js';
import type { OutboxEntry } from './outbox.js';
import type { StorageAdapter, StorageOp } from './storage/types.js';

export interface LiveQuerySpec {
  table: string;
  filter?: Filter | undefined;
  columns?: string[] | undefined;
}

export type OrderSpec = Array<{ column: string; ascending?: boolean; nullsFirst?: boolean | undefined }>;

/**
 * `loading`: nothing to show yet; `cached`: rows from the device cache, not yet confirmed by
 * the server; `syncing`: the server is sending the snapshot or catching up; `live`: current;
 * `error`: the server refused the subscription (see `error`).
 */
export type LiveStatus = 'loading' | 'cached' | 'syncing' | 'live' | 'error';

export interface LiveResult<R> {
  rows: R[];
  status: LiveStatus;
  /** True while some rows come from writes the server has not confirmed yet. */
  hasPendingWrites: boolean;
  error: RowcastError | null;
}

export interface LiveQueryOptions<R> {
  /** Called with the whole current result on every change (and once at start). */
  onResult?: (result: LiveResult<R>) => void;
  /** Called with the server's changes (after the apply rule dropped stale ones). */
  onChange?: (changes: ChangeItem[]) => void;
  onError?: (error: RowcastError) => void;
  /** Local sort of `rows` (default: primary key ascending), or a comparator. */
  order?: OrderSpec | ((a: R, b: R) => number) | undefined;
  /** Primary-key columns, for offline inserts before the server has told us (default learned, else `id`). */
  primaryKey?: string[];
}

export interface LiveQueryHandle<R> {
  /** The current result (also available before the first server answer, from cache). */
  current(): LiveResult<R>;
  /** Listen for results; called at once with the current one. Returns an unsubscribe. */
  subscribe(listener: (result: LiveResult<R>) => void): () => void;
  /** Resolves with the first result the server confirmed (`live`), or rejects on error. */
  ready(): Promise<LiveResult<R>>;
  unsubscribe(): void;
}

/** What the live query asks of the connection. */
export interface LiveQueryHost {
  subscribe(q: LiveQuery): void;
  unsubscribe(q: LiveQuery): void;
  pendingFor(table: string): OutboxEntry[];
}

/** FNV-1a over the spec, two seeds: a short key for storage. */
function hash(s: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x5bd1e995) >>> 0;
  }
  return a.toString(36) + b.toString(36);
}

/** A canonical JSON of the spec (object keys sorted), so equal specs share a cache entry. */
export function specKey(spec: LiveQuerySpec): string {
  const canon = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canon);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(v as Row).sort()) o[k] = canon((v as Row)[k]);
      return o;
    }
    return v;
  };
  return JSON.stringify(canon({ t: spec.table, f: spec.filter ?? null, c: spec.columns ?? null }));
}

function cmpValues(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  const x = String(a);
  const y = String(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function sortRows<R>(rows: R[], order: OrderSpec | ((a: R, b: R) => number)): R[] {
  if (typeof order === 'function') return rows.sort(order);
  return rows.sort((ra, rb) => {
    for (const o of order) {
      const a = (ra as Row)[o.column];
      const b = (rb as Row)[o.column];
      const an = a === null || a === undefined;
      const bn = b === null || b === undefined;
      const asc = o.ascending ?? true;
      if (an !== bn) {
        const nullsFirst = o.nullsFirst ?? !asc;
        return an ? (nullsFirst ? -1 : 1) : nullsFirst ? 1 : -1;
      }
      const c = cmpValues(a, b);
      if (c !== 0) return asc ? c : -c;
    }
    return 0;
  });
}

function project(row: Row, columns: string[] | undefined, pkColumns: readonly string[]): Row {
  if (!columns) return row;
  const out: Row = {};
  for (const c of columns) if (c in row) out[c] = row[c];
  for (const c of pkColumns) if (c in row) out[c] = row[c];
  return out;
}

/** Apply one pending write to a view (key → row) of a live query. Pure. */
export function applyOptimistic(
  view: Map<string, Row>,
  write: OutboxEntry['optimistic'],
  spec: LiveQuerySpec,
  pkColumns: readonly string[],
): void {
  if (!write.applicable) return;
  const put = (row: Row) => {
    const pk = pkOf(row, pkColumns);
    if (!pk) return; // server-generated key: shown once the server confirms
    const key = keyOf(pk);
    if (matches(spec.filter, row)) view.set(key, project(row, spec.columns, pkColumns));
    else view.delete(key);
  };
  switch (write.kind) {
    case 'insert':
      for (const r of write.rows ?? []) put(r);
      break;
    case 'upsert':
      for (const r of write.rows ?? []) {
        const pk = pkOf(r, pkColumns);
        const held = pk ? view.get(keyOf(pk)) : undefined;
        put(held ? { ...held, ...r } : r);
      }
      break;
    case 'update':
      for (const [, r] of [...view]) if (matches(write.filter, r)) put({ ...r, ...(write.patch ?? {}) });
      break;
    case 'delete':
      for (const [k, r] of [...view]) if (matches(write.filter, r)) view.delete(k);
      break;
  }
}

let counter = 0;

export class LiveQuery<R = Row> implements LiveQueryHandle<R> {
  /** Subscription id on the socket (fresh per query). */
  readonly id: string;
  readonly key: string;
  private confirmed = new RowSet();
  private staging: RowSet | null = null;
  private stagingItems: ChangeItem[] = [];
  cursor: string | null = null;
  private pkColumns: string[] | null = null;
  status: LiveStatus = 'loading';
  error: RowcastError | null = null;
  /** Whether the server currently holds this subscription. */
  active = false;
  private loadedNs: string | null = null;
  private loading: Promise<void> | null = null;
  private loadDone = false;
  private persistChain: Promise<void> = Promise.resolve();
  private readonly listeners = new Set<(r: LiveResult<R>) => void>();
  private readyWaiters: Array<{ resolve: (r: LiveResult<R>) => void; reject: (e: RowcastError) => void }> = [];
  private last: LiveResult<R> = { rows: [], status: 'loading', hasPendingWrites: false, error: null };
  private closed = false;
  /** Bumped on every namespace switch so a slow cache load for the old user is dropped. */
  private generation = 0;

  constructor(
    readonly spec: LiveQuerySpec,
    private readonly options: LiveQueryOptions<R>,
    private readonly host: LiveQueryHost,
    private readonly storage: StorageAdapter,
    private namespace: string,
    idSuffix: string,
  ) {
    this.id = 'q' + ++counter + '-' + idSuffix;
    this.key = hash(specKey(spec));
    if (options.primaryKey) this.pkColumns = options.primaryKey;
    if (options.onResult) this.listeners.add(options.onResult);
  }

  private prefix(): string {
    return 'cache:' + this.namespace + ':' + this.key + ':';
  }

  /** Read the cached rows and cursor (once per namespace); the connection subscribes after. */
  load(): Promise<void> {
    if (this.loadedNs === this.namespace && this.loading) return this.loading;
    this.loadedNs = this.namespace;
    this.loadDone = false;
    const gen = this.generation;
    this.loading = (async () => {
      let entries: Array<[string, string]> = [];
      let meta: string | null = null;
      try {
        meta = await this.storage.get(this.prefix() + 'm');
        entries = await this.storage.list(this.prefix() + 'r:');
      } catch {
        entries = [];
        meta = null;
      }
      if (gen !== this.generation || this.closed) return;
      if (meta && this.status === 'loading') {
        try {
          const m = JSON.parse(meta) as { cursor: string | null; pk: string[] | null };
          const set = new RowSet();
          const skip = this.prefix().length + 2;
          for (const [k, v] of entries) set.entries.set(k.slice(skip), JSON.parse(v) as Entry);
          this.confirmed = set;
          this.cursor = m.cursor;
          this.pkColumns ??= m.pk;
          this.status = 'cached';
        } catch {
          this.cursor = null;
        }
      }
      this.loadDone = true;
      this.emit();
    })();
    return this.loading;
  }

  /** The cache for the current user has been read (so the cursor is known). */
  isLoaded(): boolean {
    return this.loadDone && this.loadedNs === this.namespace;
  }

  /** The signed-in user changed: drop what we hold and use that user's cache. */
  switchNamespace(ns: string): void {
    if (ns === this.namespace) return;
    this.namespace = ns;
    this.generation++;
    this.confirmed = new RowSet();
    this.staging = null;
    this.cursor = null;
    this.status = 'loading';
    this.active = false;
    this.loading = null;
    this.loadDone = false;
    this.emit();
  }

  /** The `subscribe` message for the socket (with the cursor when we hold one). */
  subscribeMessage(): Record<string, unknown> {
    const m: Record<string, unknown> = { type: 'subscribe', id: this.id, table: this.spec.table };
    if (this.spec.filter) m.filter = this.spec.filter;
    if (this.spec.columns) m.columns = this.spec.columns;
    if (this.cursor) m.cursor = this.cursor;
    return m;
  }

  /** The socket dropped: the server no longer holds the subscription. */
  detached(): void {
    this.active = false;
    this.staging = null;
    this.stagingItems = [];
  }

  /** Handle one server frame addressed to this subscription. */
  handle(msg: Record<string, unknown>): void {
    if (this.closed) return;
    switch (msg.type) {
      case 'snapshot': {
        this.staging ??= new RowSet();
        const rows = (msg.rows as ChangeItem[]) ?? [];
        for (const it of rows) {
          this.learnPk(it);
          if (this.staging.apply(it)) this.stagingItems.push(it);
        }
        if (this.status !== 'cached') this.status = 'syncing';
        break;
      }
      case 'snapshot-end': {
        // The snapshot is complete: it replaces what we held (tombstones of the old state
        // are dropped; a fresh snapshot is authoritative).
        const fresh = this.staging ?? new RowSet();
        this.staging = null;
        this.confirmed = fresh;
        this.cursor = String(msg.cursor);
        this.status = 'syncing';
        this.persistAll();
        this.emit();
        const items = this.stagingItems;
        this.stagingItems = [];
        if (items.length) this.options.onChange?.(items);
        break;
      }
      case 'changes': {
        const items = (msg.changes as ChangeItem[]) ?? [];
        const won: ChangeItem[] = [];
        const ops: StorageOp[] = [];
        for (const it of items) {
          this.learnPk(it);
          if (this.confirmed.apply(it)) {
            won.push(it);
            const k = keyOf(it.pk);
            ops.push({ op: 'set', key: this.prefix() + 'r:' + k, value: JSON.stringify(this.confirmed.entries.get(k)) });
          }
        }
        this.cursor = String(msg.cursor);
        ops.push(this.metaOp());
        this.persist(ops);
        if (won.length) {
          this.emit();
          this.options.onChange?.(won);
        }
        break;
      }
      case 'live': {
        this.cursor = String(msg.cursor);
        this.status = 'live';
        this.persist([this.metaOp()]);
        this.emit();
        for (const w of this.readyWaiters.splice(0)) w.resolve(this.last);
        break;
      }
      case 'resync-required': {
        // Start over from a snapshot; what we show stays until the new snapshot replaces it.
        this.active = false;
        this.cursor = null;
        this.staging = null;
        this.persist([this.metaOp()]);
        this.host.subscribe(this as unknown as LiveQuery);
        break;
      }
      case 'error': {
        this.active = false;
        this.staging = null;
        const e = new RowcastError({
          code: String(msg.code ?? 'internal'),
          message: String(msg.message ?? 'subscription failed'),
          details: typeof msg.details === 'string' ? msg.details : undefined,
          hint: typeof msg.hint === 'string' ? msg.hint : undefined,
        });
        this.fail(e);
        break;
      }
    }
  }

  fail(e: RowcastError): void {
    this.error = e;
    this.status = 'error';
    this.emit();
    this.options.onError?.(e);
    for (const w of this.readyWaiters.splice(0)) w.reject(e);
  }

  /** A queued write was applied by the server: take its answer rows (with `_v`) as confirmed. */
  confirmWrite(entry: OutboxEntry, rows: Row[]): void {
    const pkCols = this.pkColumns ?? ['id'];
    const ops: StorageOp[] = [];
    for (const row of rows) {
      const v = row._v;
      const pk = pkOf(row, pkCols);
      if (typeof v !== 'number' || !pk) continue;
      const key = keyOf(pk);
      const visible = entry.optimistic.kind !== 'delete' && matches(this.spec.filter, row);
      const e: Entry = { v, row: visible ? project(row, this.spec.columns, pkCols) : null };
      if (this.confirmed.put(key, e)) ops.push({ op: 'set', key: this.prefix() + 'r:' + key, value: JSON.stringify(e) });
    }
    if (ops.length && this.cursor) this.persist(ops);
  }

  private learnPk(it: ChangeItem): void {
    if (!this.pkColumns && it.pk && typeof it.pk === 'object') this.pkColumns = Object.keys(it.pk).sort();
  }

  private metaOp(): StorageOp {
    return { op: 'set', key: this.prefix() + 'm', value: JSON.stringify({ cursor: this.cursor, pk: this.pkColumns }) };
  }

  private persistAll(): void {
    const ops: StorageOp[] = [{ op: 'removePrefix', prefix: this.prefix() }];
    for (const [k, e] of this.confirmed.entries) ops.push({ op: 'set', key: this.prefix() + 'r:' + k, value: JSON.stringify(e) });
    ops.push(this.metaOp());
    this.persist(ops);
  }

  private persist(ops: StorageOp[]): void {
    // In order, one batch per frame: a row and the cursor after it are stored together.
    this.persistChain = this.persistChain.then(() => this.storage.write(ops)).catch(() => undefined);
  }

  /** Resolves when every cache write issued so far is stored. */
  flushed(): Promise<void> {
    return this.persistChain;
  }

  /** Recompute the result (confirmed rows + pending writes) and tell listeners. */
  emit(): void {
    const pk = this.pkColumns ?? ['id'];
    const view = this.confirmed.rows();
    const pending = this.host.pendingFor(this.spec.table);
    for (const w of pending) applyOptimistic(view, w.optimistic, this.spec, pk);
    const rows = sortRows([...view.values()] as R[], this.options.order ?? pk.map((column) => ({ column })));
    this.last = {
      rows,
      status: this.status,
      hasPendingWrites: pending.some((w) => w.optimistic.applicable),
      error: this.error,
    };
    for (const l of [...this.listeners]) {
      try {
        l(this.last);
      } catch {
        // a listener's failure must not stop the others
      }
    }
  }

  current(): LiveResult<R> {
    return this.last;
  }

  subscribe(listener: (result: LiveResult<R>) => void): () => void {
    this.listeners.add(listener);
    listener(this.last);
    return () => this.listeners.delete(listener);
  }

  ready(): Promise<LiveResult<R>> {
    if (this.status === 'live') return Promise.resolve(this.last);
    if (this.status === 'error' && this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  unsubscribe(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    this.host.unsubscribe(this as unknown as LiveQuery);
  }

  isClosed(): boolean {
    return this.closed;
  }
}
