// A StorageAdapter (the SDK's storage interface) on the browser's IndexedDB, so the session,
// the live-query cache and the outbox survive a reload and work offline. The SDK ships
// memory, AsyncStorage-shaped and SQLite adapters; IndexedDB is the browser's equivalent of
// the SQLite one: ordered keys (so `list(prefix)` is a range scan) and transactions (so one
// `write` is atomic, as the interface asks).
import type { StorageAdapter, StorageOp } from '@rowcast/client';

const STORE = 'kv';

function done(request: IDBRequest): Promise<unknown> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function open(name: string): Promise<IDBDatabase> {
  const request = indexedDB.open(name, 1);
  request.onupgradeneeded = () => request.result.createObjectStore(STORE);
  return done(request) as Promise<IDBDatabase>;
}

/** Every key that starts with `prefix`: keys are strings, so this is one contiguous range. */
function range(prefix: string): IDBKeyRange {
  return IDBKeyRange.bound(prefix, prefix + '\uffff', false, true);
}

export function indexedDbStorage(name = 'rowcast'): StorageAdapter {
  const db = open(name);
  return {
    async get(key) {
      const value = await done((await db).transaction(STORE).objectStore(STORE).get(key));
      return typeof value === 'string' ? value : null;
    },
    async list(prefix) {
      const store = (await db).transaction(STORE).objectStore(STORE);
      const [keys, values] = await Promise.all([done(store.getAllKeys(range(prefix))), done(store.getAll(range(prefix)))]);
      return (keys as string[]).map((k, i) => [k, (values as string[])[i]!] as [string, string]);
    },
    async write(ops: StorageOp[]) {
      const tx = (await db).transaction(STORE, 'readwrite');
      const store = tx.objectStore(STORE);
      for (const op of ops) {
        if (op.op === 'set') store.put(op.value, op.key);
        else if (op.op === 'remove') store.delete(op.key);
        else store.delete(range(op.prefix));
      }
      await new Promise<void>((resolve, reject) => {
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    },
  };
}
