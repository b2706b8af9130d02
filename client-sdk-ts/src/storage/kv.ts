/**
 * `@rowcast/client/storage/kv`: storage on a key-value store shaped like React Native's
 * AsyncStorage. Good for the session and small caches; Android caps AsyncStorage at 6 MB, so
 * keep a result cache of real size in the SQLite adapter instead.
 */
import type { StorageAdapter, StorageOp } from './types.js';

/** The AsyncStorage methods used (`@react-native-async-storage/async-storage` has them all). */
export interface AsyncStorageLike {
  getItem(key: string): Promise<string | null>;
  setItem(key: string, value: string): Promise<void>;
  removeItem(key: string): Promise<void>;
  getAllKeys(): Promise<readonly string[]>;
  multiGet?(keys: readonly string[]): Promise<ReadonlyArray<readonly [string, string | null]>>;
  multiSet?(pairs: Array<[string, string]>): Promise<void>;
  multiRemove?(keys: readonly string[]): Promise<void>;
}

export interface KvStorageOptions {
  /** Prefix for every key, so the SDK's keys do not mix with the app's. Default `rowcast:`. */
  prefix?: string;
}

export function kvStorage(kv: AsyncStorageLike, options: KvStorageOptions = {}): StorageAdapter {
  const ns = options.prefix ?? 'rowcast:';
  const keysWith = async (prefix: string): Promise<string[]> =>
    (await kv.getAllKeys()).filter((k) => k.startsWith(ns + prefix)).sort();
  return {
    get: (key) => kv.getItem(ns + key),
    async list(prefix) {
      const keys = await keysWith(prefix);
      const pairs = kv.multiGet
        ? await kv.multiGet(keys)
        : await Promise.all(keys.map(async (k) => [k, await kv.getItem(k)] as const));
      const out: Array<[string, string]> = [];
      for (const [k, v] of pairs) if (v !== null) out.push([k.slice(ns.length), v]);
      out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      return out;
    },
    async write(ops: StorageOp[]) {
      // Group runs of sets and removes so multiSet/multiRemove keep the write count low;
      // order between a set and a later remove of the same key is preserved.
      let sets: Array<[string, string]> = [];
      let removes: string[] = [];
      const flush = async () => {
        if (sets.length) {
          if (kv.multiSet) await kv.multiSet(sets);
          else for (const [k, v] of sets) await kv.setItem(k, v);
          sets = [];
        }
        if (removes.length) {
          if (kv.multiRemove) await kv.multiRemove(removes);
          else for (const k of removes) await kv.removeItem(k);
          removes = [];
        }
      };
      for (const o of ops) {
        if (o.op === 'set') {
          if (removes.length) await flush();
          sets.push([ns + o.key, o.value]);
        } else {
          if (sets.length) await flush();
          if (o.op === 'remove') removes.push(ns + o.key);
          else removes.push(...(await keysWith(o.prefix)));
        }
      }
      await flush();
    },
  };
}

export type { StorageAdapter, StorageOp } from './types.js';
