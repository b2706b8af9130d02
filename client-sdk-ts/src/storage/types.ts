/**
 * The one small interface every storage adapter implements. The SDK keeps the session, the
 * live-query cache (one entry per row plus one per query, never one giant value) and the
 * outbox in it, under keys it namespaces itself.
 */

export type StorageOp =
  | { op: 'set'; key: string; value: string }
  | { op: 'remove'; key: string }
  | { op: 'removePrefix'; prefix: string };

export interface StorageAdapter {
  get(key: string): Promise<string | null>;
  /** Every entry whose key starts with `prefix`, ordered by key. */
  list(prefix: string): Promise<Array<[string, string]>>;
  /** Apply the operations in order; adapters on engines with transactions apply them atomically. */
  write(ops: StorageOp[]): Promise<void>;
}
