/**
 * The durable outbox of writes made with `.enqueue()`.
 *
 * A write is stored (with its idempotency key and the exact request) before it is first
 * sent, sent one at a time in order, and removed only after the server's answer. If the app
 * dies between sending and the answer, the next start sends the identical request with the
 * same `Idempotency-Key`, and the server answers with the stored response instead of
 * applying it again (docs/rest.md, "Idempotent writes"). Retryable failures (network,
 * 5xx, 429) keep the write and retry with full-jitter backoff; any other error rejects it:
 * it is removed, rolled back in the live queries, and reported.
 */
import { backoffDelay } from './connection-state.js';
import { RowcastError } from './errors.js';
import type { Filter } from './filter.js';
import { httpRequest } from './http.js';
import type { Row } from './apply.js';
import type { Runtime, TimerHandle } from './runtime.js';
import type { StorageAdapter } from './storage/types.js';

/** The HTTP request of a write, exactly as it is (re)sent. */
export interface WriteRequest {
  method: string;
  /** Path and query string under the server URL. */
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
  idempotencyKey: string | undefined;
}

/** How the write changes rows, for applying it to live queries before the server answers. */
export interface OptimisticWrite {
  table: string;
  kind: 'insert' | 'upsert' | 'update' | 'delete';
  rows: Row[] | undefined;
  patch: Row | undefined;
  /** The write's filter (update/delete) as data; undefined means every row. */
  filter: Filter | undefined;
  /** False when the filter cannot be evaluated locally; the write is then only sent. */
  applicable: boolean;
}

export interface OutboxEntry {
  id: string;
  seq: number;
  /** The user the write was made as (null: anonymous); it is only sent as that user. */
  userId: string | null;
  request: WriteRequest;
  optimistic: OptimisticWrite;
  createdAt: number;
}

export type WriteOutcome = { status: 'applied'; data: Row[] } | { status: 'rejected'; error: RowcastError };

export interface PendingWrite {
  /** The idempotency key, also the write's id. */
  id: string;
  /** Resolves once the write is stored durably. */
  persisted: Promise<void>;
  /** Resolves when the server applied or rejected it (never, if the client closes first). */
  settled: Promise<WriteOutcome>;
}

export interface OutboxHooks {
  accessToken(): Promise<string | null>;
  currentUserId(): string | null;
  refreshToken(): Promise<void>;
  /** The set of pending writes changed (optimistic views must be recomputed). */
  changed(table: string): void;
  /** The server applied `entry` and answered with `rows` (with their `_v`). */
  confirmed(entry: OutboxEntry, rows: Row[]): void;
}

export type RejectionListener = (write: OutboxEntry, error: RowcastError) => void;

const PREFIX = 'outbox:';

function seqKey(seq: number): string {
  return PREFIX + String(seq).padStart(12, '0');
}

export class Outbox {
  private entries: OutboxEntry[] = [];
  private nextSeq = 1;
  private readonly waiters = new Map<string, (o: WriteOutcome) => void>();
  private readonly rejectionListeners = new Set<RejectionListener>();
  private sending = false;
  private attempt = 0;
  private timer: TimerHandle | undefined;
  private closed = false;
  private persistChain: Promise<void> = Promise.resolve();
  readonly loaded: Promise<void>;

  constructor(
    private readonly baseUrl: string,
    private readonly rt: Runtime,
    private readonly storage: StorageAdapter,
    private readonly hooks: OutboxHooks,
  ) {
    this.loaded = this.load();
  }

  private async load(): Promise<void> {
    const stored = await this.storage.list(PREFIX);
    const loaded: OutboxEntry[] = [];
    for (const [, v] of stored) {
      try {
        loaded.push(JSON.parse(v) as OutboxEntry);
      } catch {
        // An unreadable entry cannot be sent faithfully; skip it.
      }
    }
    // Writes enqueued before the load finished come after the stored ones; they get their
    // sequence number when they are persisted (after this).
    loaded.sort((a, b) => a.seq - b.seq);
    this.entries = [...loaded, ...this.entries];
    this.nextSeq = loaded.reduce((m, e) => Math.max(m, e.seq), 0) + 1;
    for (const t of new Set(loaded.map((e) => e.optimistic.table))) this.hooks.changed(t);
  }

  /** Pending writes, oldest first. */
  pending(): readonly OutboxEntry[] {
    return this.entries;
  }

  pendingFor(table: string): OutboxEntry[] {
    return this.entries.filter((e) => e.optimistic.table === table);
  }

  onRejected(listener: RejectionListener): () => void {
    this.rejectionListeners.add(listener);
    return () => this.rejectionListeners.delete(listener);
  }

  enqueue(request: WriteRequest, optimistic: OptimisticWrite): PendingWrite {
    const id = request.idempotencyKey ?? this.rt.newId();
    const entry: OutboxEntry = {
      id,
      seq: 0,
      userId: this.hooks.currentUserId(),
      request: { ...request, idempotencyKey: id },
      optimistic,
      createdAt: this.rt.timers.now(),
    };
    this.entries.push(entry);
    const persisted = this.persistChain.then(() =>
      this.loaded.then(() => {
        entry.seq = this.nextSeq++;
        return this.storage.write([{ op: 'set', key: seqKey(entry.seq), value: JSON.stringify(entry) }]);
      }),
    );
    // A failed store must not block later writes; that write's `persisted` rejects.
    this.persistChain = persisted.catch(() => undefined);
    const settled = new Promise<WriteOutcome>((resolve) => this.waiters.set(id, resolve));
    this.hooks.changed(optimistic.table);
    void persisted.then(
      () => this.flush(),
      () => undefined,
    );
    return { id, persisted, settled };
  }

  /** Try to send now (after a reconnect, on foreground, after enqueue). */
  flush(): void {
    if (this.closed || this.sending) return;
    if (this.timer !== undefined) {
      this.rt.timers.clearTimeout(this.timer);
      this.timer = undefined;
    }
    void this.run();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) this.rt.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async run(): Promise<void> {
    this.sending = true;
    try {
      await this.loaded;
      await this.persistChain;
      for (;;) {
        if (this.closed) return;
        const user = this.hooks.currentUserId();
        const entry = this.entries.find((e) => e.userId === user);
        // Not stored yet: its `persisted` callback flushes again.
        if (!entry || entry.seq === 0) return;
        const outcome = await this.send(entry);
        if (this.closed) return; // the answer of a torn-down client is ignored; the next start resends
        if (outcome === 'retry') {
          this.scheduleRetry();
          return;
        }
        this.attempt = 0;
      }
    } finally {
      this.sending = false;
    }
  }

  private async send(entry: OutboxEntry): Promise<'done' | 'retry'> {
    const headers: Record<string, string> = { ...entry.request.headers, 'Idempotency-Key': entry.id };
    const token = await this.hooks.accessToken();
    if (token) headers['Authorization'] = 'Bearer ' + token;
    const r = await httpRequest(this.rt.fetch, this.baseUrl + entry.request.path, {
      method: entry.request.method,
      headers,
      body: entry.request.body,
    });
    if (this.closed) return 'retry';
    if (r.ok) {
      const rows = Array.isArray(r.answer.body) ? (r.answer.body as Row[]) : [];
      await this.remove(entry);
      this.hooks.confirmed(entry, rows);
      this.hooks.changed(entry.optimistic.table);
      this.settle(entry, { status: 'applied', data: rows });
      return 'done';
    }
    if (r.error.code === 'unauthorized' && token) {
      await this.hooks.refreshToken();
      return 'retry';
    }
    if (r.error.retryable) return 'retry';
    await this.remove(entry);
    this.hooks.changed(entry.optimistic.table);
    for (const l of [...this.rejectionListeners]) {
      try {
        l(entry, r.error);
      } catch {
        // one listener's failure must not hide the rejection from the others
      }
    }
    this.settle(entry, { status: 'rejected', error: r.error });
    return 'done';
  }

  private async remove(entry: OutboxEntry): Promise<void> {
    await this.storage.write([{ op: 'remove', key: seqKey(entry.seq) }]);
    this.entries = this.entries.filter((e) => e !== entry);
  }

  private settle(entry: OutboxEntry, outcome: WriteOutcome): void {
    const w = this.waiters.get(entry.id);
    this.waiters.delete(entry.id);
    if (w) w(outcome);
  }

  private scheduleRetry(): void {
    if (this.closed) return;
    const delay = Math.max(100, backoffDelay(this.attempt++, this.rt.random, { baseMs: 1000, maxMs: 30000 }));
    this.timer = this.rt.timers.setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, delay);
  }
}

export { RowcastError };
