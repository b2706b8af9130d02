/**
 * `@rowcast/client/storage/sqlite`: storage in one SQLite table, for the live-query cache and
 * the outbox of any size. Works with expo-sqlite (`expoSqlite(db)`), op-sqlite
 * (`opSqlite(db)`) or anything that can run a statement and return rows (`SqlExecutor`).
 * Every `write` runs in one transaction, so a row's cache entry and its query's cursor are
 * stored together or not at all.
 */
import type { StorageAdapter, StorageOp } from './types.js';

export interface SqlExecutor {
  /** Run a statement that returns no rows. */
  run(sql: string, params: unknown[]): Promise<void>;
  /** Run a query and return its rows as objects. */
  all(sql: string, params: unknown[]): Promise<Array<Record<string, unknown>>>;
}

/** The expo-sqlite (`SQLiteDatabase`, SDK 50+) methods used. */
export interface ExpoSqliteLike {
  runAsync(sql: string, params: unknown[]): Promise<unknown>;
  getAllAsync(sql: string, params: unknown[]): Promise<unknown[]>;
}

/** The op-sqlite (`DB`) method used. */
export interface OpSqliteLike {
  execute(sql: string, params?: unknown[]): Promise<{ rows?: unknown[] | { _array: unknown[] } }>;
}

export function expoSqlite(db: ExpoSqliteLike): SqlExecutor {
  return {
    run: async (sql, params) => {
      await db.runAsync(sql, params);
    },
    all: async (sql, params) => (await db.getAllAsync(sql, params)) as Array<Record<string, unknown>>,
  };
}

export function opSqlite(db: OpSqliteLike): SqlExecutor {
  const rowsOf = (r: { rows?: unknown[] | { _array: unknown[] } }): unknown[] =>
    Array.isArray(r.rows) ? r.rows : r.rows ? r.rows._array : [];
  return {
    run: async (sql, params) => {
      await db.execute(sql, params);
    },
    all: async (sql, params) => rowsOf(await db.execute(sql, params)) as Array<Record<string, unknown>>,
  };
}

export interface SqliteStorageOptions {
  /** Table name (letters, digits, `_`). Default `rowcast_kv`. */
  table?: string;
}

/** Escape `%`, `_` and `\` for a LIKE prefix match. */
function likePrefix(prefix: string): string {
  return prefix.replace(/[\\%_]/g, (c) => '\\' + c) + '%';
}

export function sqliteStorage(exec: SqlExecutor, options: SqliteStorageOptions = {}): StorageAdapter {
  const table = options.table ?? 'rowcast_kv';
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(table)) throw new Error('sqliteStorage: table must be letters, digits and _');
  let ready: Promise<void> | null = null;
  const init = () =>
    (ready ??= exec.run(`CREATE TABLE IF NOT EXISTS ${table} (k TEXT PRIMARY KEY NOT NULL, v TEXT NOT NULL)`, []));
  // One statement sequence at a time: SQLite connections do not nest transactions.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  };
  return {
    get: (key) =>
      serial(async () => {
        await init();
        const rows = await exec.all(`SELECT v FROM ${table} WHERE k = ?`, [key]);
        const first = rows[0];
        return first ? String(first.v) : null;
      }),
    list: (prefix) =>
      serial(async () => {
        await init();
        const rows = await exec.all(`SELECT k, v FROM ${table} WHERE k LIKE ? ESCAPE '\\' ORDER BY k`, [likePrefix(prefix)]);
        return rows.map((r) => [String(r.k), String(r.v)] as [string, string]);
      }),
    write: (ops: StorageOp[]) =>
      serial(async () => {
        await init();
        await exec.run('BEGIN', []);
        try {
          for (const o of ops) {
            if (o.op === 'set') await exec.run(`INSERT OR REPLACE INTO ${table} (k, v) VALUES (?, ?)`, [o.key, o.value]);
            else if (o.op === 'remove') await exec.run(`DELETE FROM ${table} WHERE k = ?`, [o.key]);
            else await exec.run(`DELETE FROM ${table} WHERE k LIKE ? ESCAPE '\\'`, [likePrefix(o.prefix)]);
          }
          await exec.run('COMMIT', []);
        } catch (e) {
          await exec.run('ROLLBACK', []).catch(() => undefined);
          throw e;
        }
      }),
  };
}

export type { StorageAdapter, StorageOp } from './types.js';
