// The storage adapters behind one interface: memory, AsyncStorage-shaped KV, and SQLite
// (real better-sqlite3 behind the expo-sqlite and op-sqlite shapes).
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { memoryStorage } from '../../src/storage/memory.js';
import { kvStorage, type AsyncStorageLike } from '../../src/storage/kv.js';
import { expoSqlite, opSqlite, sqliteStorage } from '../../src/storage/sqlite.js';
import type { StorageAdapter } from '../../src/storage/types.js';

function fakeAsyncStorage(): AsyncStorageLike & { map: Map<string, string> } {
  const map = new Map<string, string>();
  return {
    map,
    getItem: async (k) => map.get(k) ?? null,
    setItem: async (k, v) => void map.set(k, v),
    removeItem: async (k) => void map.delete(k),
    getAllKeys: async () => [...map.keys()],
    multiGet: async (keys) => keys.map((k) => [k, map.get(k) ?? null] as const),
    multiSet: async (pairs) => pairs.forEach(([k, v]) => map.set(k, v)),
    multiRemove: async (keys) => keys.forEach((k) => map.delete(k)),
  };
}

function betterSqlite(): Database.Database {
  return new Database(':memory:');
}

const adapters: Array<[string, () => StorageAdapter]> = [
  ['memory', () => memoryStorage()],
  ['kv (AsyncStorage shape)', () => kvStorage(fakeAsyncStorage())],
  [
    'sqlite (expo-sqlite shape)',
    () => {
      const db = betterSqlite();
      return sqliteStorage(expoSqlite({ runAsync: async (s, p) => db.prepare(s).run(p), getAllAsync: async (s, p) => db.prepare(s).all(p) }));
    },
  ],
  [
    'sqlite (op-sqlite shape)',
    () => {
      const db = betterSqlite();
      return sqliteStorage(
        opSqlite({
          execute: async (s, p = []) => {
            const st = db.prepare(s);
            return st.reader ? { rows: st.all(p) } : (st.run(p), { rows: [] });
          },
        }),
      );
    },
  ],
];

describe.each(adapters)('%s storage', (_name, make) => {
  it('gets, lists by prefix in key order, and applies batches in order', async () => {
    const s = make();
    expect(await s.get('a')).toBeNull();
    await s.write([
      { op: 'set', key: 'cache:q:r:2', value: 'two' },
      { op: 'set', key: 'cache:q:r:1', value: 'one' },
      { op: 'set', key: 'cache:q_x', value: 'not under the prefix' },
      { op: 'set', key: 'outbox:1', value: 'w' },
    ]);
    expect(await s.list('cache:q:')).toEqual([
      ['cache:q:r:1', 'one'],
      ['cache:q:r:2', 'two'],
    ]);
    await s.write([
      { op: 'removePrefix', prefix: 'cache:q:' },
      { op: 'set', key: 'cache:q:r:3', value: 'three' },
      { op: 'remove', key: 'outbox:1' },
    ]);
    expect(await s.list('cache:')).toEqual([
      ['cache:q:r:3', 'three'],
      ['cache:q_x', 'not under the prefix'],
    ]);
    expect(await s.get('outbox:1')).toBeNull();
    expect(await s.get('cache:q:r:3')).toBe('three');
  });
});

describe('sqlite storage', () => {
  it('applies a batch atomically: a failing statement leaves nothing behind', async () => {
    const db = betterSqlite();
    let fail = false;
    const s = sqliteStorage({
      run: async (sql, p) => {
        if (fail && sql.startsWith('INSERT') && p[0] === 'k2') throw new Error('disk full');
        db.prepare(sql).run(p);
      },
      all: async (sql, p) => db.prepare(sql).all(p) as Array<Record<string, unknown>>,
    });
    await s.write([{ op: 'set', key: 'k0', value: 'kept' }]);
    fail = true;
    await expect(s.write([{ op: 'set', key: 'k1', value: 'a' }, { op: 'remove', key: 'k0' }, { op: 'set', key: 'k2', value: 'b' }])).rejects.toThrow('disk full');
    expect(await s.list('k')).toEqual([['k0', 'kept']]);
  });

  it('keeps keys in its own table and prefix matching literal (% and _ are not wildcards)', async () => {
    const db = betterSqlite();
    const s = sqliteStorage(expoSqlite({ runAsync: async (q, p) => db.prepare(q).run(p), getAllAsync: async (q, p) => db.prepare(q).all(p) }), { table: 'my_cache' });
    await s.write([{ op: 'set', key: 'a%b', value: '1' }, { op: 'set', key: 'axb', value: '2' }]);
    expect(await s.list('a%')).toEqual([['a%b', '1']]);
    expect(db.prepare('select count(*) as n from my_cache').get()).toEqual({ n: 2 });
  });
});

describe('kv storage', () => {
  it('namespaces its keys so the app’s own AsyncStorage keys are untouched', async () => {
    const kv = fakeAsyncStorage();
    kv.map.set('app:theme', 'dark');
    const s = kvStorage(kv);
    await s.write([{ op: 'set', key: 'auth:session', value: '{}' }, { op: 'removePrefix', prefix: '' }]);
    expect([...kv.map.keys()]).toEqual(['app:theme']);
  });
});
