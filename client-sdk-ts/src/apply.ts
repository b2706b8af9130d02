/**
 * The protocol's apply rule (docs/protocol.md, "An item"): per primary key keep the highest
 * version seen, a deleted or removed key as a tombstone, and apply an item only if its
 * version is higher. Applying is idempotent and order-independent, so duplicated or
 * reordered transactions, and the overlap between a snapshot and the changes after it, are
 * harmless.
 */

export type Row = Record<string, unknown>;

export type ChangeOp = 'insert' | 'update' | 'delete' | 'remove';

/** One item of a `snapshot` or `changes` frame. */
export interface ChangeItem {
  op: ChangeOp;
  pk: Row;
  v: number;
  row?: Row;
}

/** What is held for one key: the row, or `null` for a tombstone. */
export interface Entry {
  v: number;
  row: Row | null;
}

/** A stable string for a primary key: its columns in name order with their values. */
export function keyOf(pk: Row): string {
  const cols = Object.keys(pk).sort();
  return JSON.stringify(cols.map((c) => [c, pk[c] ?? null]));
}

/** The primary key of a row, or null when a key column is missing. */
export function pkOf(row: Row, pkColumns: readonly string[]): Row | null {
  const pk: Row = {};
  for (const c of pkColumns) {
    const v = row[c];
    if (v === undefined || v === null) return null;
    pk[c] = v;
  }
  return pk;
}

export class RowSet {
  readonly entries = new Map<string, Entry>();

  /** Apply one item; returns whether anything changed. */
  apply(item: ChangeItem): boolean {
    return this.put(keyOf(item.pk), {
      v: item.v,
      row: item.op === 'insert' || item.op === 'update' ? (item.row ?? {}) : null,
    });
  }

  /** Apply an entry by key under the version rule; returns whether it won. */
  put(key: string, entry: Entry): boolean {
    const held = this.entries.get(key);
    if (held && held.v >= entry.v) return false;
    this.entries.set(key, entry);
    return true;
  }

  /** The live rows by key (tombstones left out). */
  rows(): Map<string, Row> {
    const out = new Map<string, Row>();
    for (const [k, e] of this.entries) if (e.row) out.set(k, e.row);
    return out;
  }
}
