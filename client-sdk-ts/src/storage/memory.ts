/** The default storage: a sorted-on-read in-memory map. Nothing survives a restart. */
import type { StorageAdapter, StorageOp } from './types.js';

export function memoryStorage(): StorageAdapter {
  const map = new Map<string, string>();
  return {
    get: (key) => Promise.resolve(map.has(key) ? (map.get(key) as string) : null),
    list: (prefix) => {
      const out: Array<[string, string]> = [];
      for (const [k, v] of map) if (k.startsWith(prefix)) out.push([k, v]);
      out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      return Promise.resolve(out);
    },
    write: (ops: StorageOp[]) => {
      for (const o of ops) {
        if (o.op === 'set') map.set(o.key, o.value);
        else if (o.op === 'remove') map.delete(o.key);
        else for (const k of [...map.keys()]) if (k.startsWith(o.prefix)) map.delete(k);
      }
      return Promise.resolve();
    },
  };
}
