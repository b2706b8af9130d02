// The app's data layer: every read is a live query and every write an outbox write of
// @rowcast/client, wrapped in hooks named after what the screens need. Nothing here touches
// the DOM, so it runs unchanged under React Native (see README, "An Expo app").
import { useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import { randomUuid, type RowcastClient, type RowcastError } from '@rowcast/client';
import { useConnectionState, useLiveQuery, useRowcast, useSession } from '@rowcast/client/react';
import { byCreatedAt, type Comment, type List, type Me, type Member, type Todo } from './model';

/** The example's tables, in the shape `rowcast gen types` writes, for typed `from()`. */
export interface Database {
  public: {
    Tables: {
      lists: { Row: List & Record<string, unknown> };
      list_members: { Row: Member & Record<string, unknown> };
      todos: { Row: Todo & Record<string, unknown> };
      comments: { Row: Comment & Record<string, unknown> };
    };
  };
}
export type Client = RowcastClient<Database>;
const useClient = () => useRowcast<Database>();

export function useMe(): Me | null {
  const session = useSession();
  return useMemo(() => {
    if (!session) return null;
    const { id, email, is_anonymous } = session.user;
    return { id, email: email ?? null, isAnonymous: is_anonymous ?? false };
  }, [session?.user.id, session?.user.email, session?.user.is_anonymous]);
}

/** True until the persisted session has been read (so we do not flash the sign-in screen). */
export function useSessionLoading(): boolean {
  const client = useClient();
  const [loading, setLoading] = useState(true);
  useEffect(() => {
    let live = true;
    void client.ready().then(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [client]);
  return loading;
}

/**
 * The lists I can see: the ones I own, and the ones my memberships name. Membership is
 * followed as its own live query (my rows of list_members), and the shared lists are asked
 * for by id, so a list shared with me appears, and one I am removed from disappears, as
 * soon as the membership row changes, whichever realtime path the server takes.
 */
export function useMyLists(): List[] {
  const me = useMe();
  const uid = me?.id ?? null;
  const memberships = useLiveQuery<Member & Record<string, unknown>, Database>(
    (c) => (uid ? c.from('list_members').select('list_id,user_id').eq('user_id', uid) : null),
    [uid],
  ).rows;
  const memberOf = useMemo(() => [...new Set(memberships.map((m) => m.list_id))].sort(), [memberships]);
  const memberKey = memberOf.join(',');
  const owned = useLiveQuery<List & Record<string, unknown>, Database>(
    (c) => (uid ? c.from('lists').select().eq('owner_id', uid) : null),
    [uid],
  ).rows;
  const shared = useLiveQuery<List & Record<string, unknown>, Database>(
    (c) => (uid && memberOf.length > 0 ? c.from('lists').select().in('id', memberOf) : null),
    [uid, memberKey],
  ).rows;
  return useMemo(() => {
    const byId = new Map<string, List>();
    for (const l of owned) byId.set(l.id, l);
    for (const l of shared) if (memberOf.includes(l.id)) byId.set(l.id, l);
    return [...byId.values()].sort(byCreatedAt);
  }, [owned, shared, memberKey]);
}

export function useMembers(listId: string): Member[] {
  const rows = useLiveQuery<Member & Record<string, unknown>, Database>(
    (c) => c.from('list_members').select().eq('list_id', listId),
    [listId],
  ).rows;
  return useMemo(() => [...rows].sort((a, b) => (a.added_at < b.added_at ? -1 : 1)), [rows]);
}

export function useTodos(listId: string): Todo[] {
  const rows = useLiveQuery<Todo & Record<string, unknown>, Database>(
    (c) => c.from('todos').select().eq('list_id', listId),
    [listId],
  ).rows;
  return useMemo(() => [...rows].sort(byCreatedAt), [rows]);
}

export function useComments(todoId: string): Comment[] {
  const rows = useLiveQuery<Comment & Record<string, unknown>, Database>(
    (c) => c.from('comments').select().eq('todo_id', todoId),
    [todoId],
  ).rows;
  return useMemo(() => [...rows].sort(byCreatedAt), [rows]);
}

/**
 * The connection state and the number of writes waiting for the server. The SDK has no
 * listener for the outbox's size, so it is re-read whenever something that changes it
 * happens: our own writes, live-query results, connection changes, and a slow tick.
 */
export function useSyncStatus(): { connection: string; pendingWrites: number } {
  const client = useClient();
  const connection = useConnectionState();
  const pendingWrites = useSyncExternalStore(
    (notify) => subscribePending(client, notify),
    () => client.pendingWrites().length,
  );
  return { connection, pendingWrites };
}

const pendingListeners = new Set<() => void>();
function subscribePending(client: Client, notify: () => void): () => void {
  pendingListeners.add(notify);
  const offState = client.onConnectionStateChange(() => notify());
  const tick = setInterval(notify, 500);
  return () => {
    pendingListeners.delete(notify);
    offState();
    clearInterval(tick);
  };
}
function pendingChanged() {
  for (const l of pendingListeners) l();
}

export interface WriteError {
  id: string;
  message: string;
}

/** Writes the server rejected: the SDK has already rolled them back on screen. */
export function useWriteErrors(): { errors: WriteError[]; dismiss: (id: string) => void } {
  const client = useClient();
  const [errors, setErrors] = useState<WriteError[]>([]);
  useEffect(
    () =>
      client.onWriteRejected((write, error: RowcastError) => {
        setErrors((all) => [...all, { id: write.id, message: error.message }]);
        pendingChanged();
      }),
    [client],
  );
  return { errors, dismiss: (id) => setErrors((all) => all.filter((e) => e.id !== id)) };
}

/** The settlement of the newest write this page queued (the outbox sends in order). */
let lastWrite: Promise<unknown> = Promise.resolve();

function fail(error: RowcastError | null): void {
  if (error) throw new Error(error.message);
}

/** Everything the user can do. Data writes go through the outbox, so they work offline. */
export function useActions() {
  const client = useClient();
  const me = useMe();
  return useMemo(() => {
    const queued = (pending: { persisted: Promise<void>; settled: Promise<unknown> }) => {
      lastWrite = pending.settled;
      pendingChanged();
      void pending.persisted.then(pendingChanged, pendingChanged);
      void pending.settled.then(pendingChanged);
    };
    const now = () => new Date().toISOString();
    return {
      async signUp(email: string, password: string) {
        fail((await client.auth.signUp({ email, password })).error);
      },
      async signIn(email: string, password: string) {
        fail((await client.auth.signInWithPassword({ email, password })).error);
      },
      async signInAnonymously() {
        fail((await client.auth.signInAnonymously()).error);
      },
      async signOut() {
        fail((await client.auth.signOut()).error);
      },
      /** Returns the new list's id at once (it is made on the device). */
      createList(name: string): string {
        const id = randomUuid();
        if (!me) throw new Error('not signed in');
        queued(client.from('lists').insert({ id, name, owner_id: me.id, created_at: now() }).enqueue());
        return id;
      },
      deleteList(listId: string) {
        queued(client.from('lists').delete().eq('id', listId).enqueue());
      },
      /**
       * Sharing asks the server who has that email, so it needs the network. It goes after
       * the writes queued before it (the outbox sends in order): a list created a moment
       * ago must exist on the server before it can be shared.
       */
      async shareList(listId: string, email: string) {
        if (client.pendingWrites().length > 0 && client.connectionState() !== 'live') {
          throw new Error('sharing needs the network; try again when online');
        }
        await lastWrite;
        const { error } = await client.rpc('share_list', { list_id: listId, email });
        if (error) throw new Error(error.retryable ? 'cannot reach the server; try again when online' : error.message);
      },
      removeMember(listId: string, userId: string) {
        queued(client.from('list_members').delete().eq('list_id', listId).eq('user_id', userId).enqueue());
      },
      addTodo(listId: string, title: string) {
        queued(
          client
            .from('todos')
            .insert({ id: randomUuid(), list_id: listId, title, done: false, assignee_id: null, created_by: me?.id ?? null, created_at: now() })
            .enqueue(),
        );
      },
      setDone(todo: Todo, done: boolean) {
        queued(client.from('todos').update({ done }).eq('id', todo.id).enqueue());
      },
      assign(todo: Todo, userId: string | null) {
        queued(client.from('todos').update({ assignee_id: userId }).eq('id', todo.id).enqueue());
      },
      deleteTodo(todo: Todo) {
        queued(client.from('todos').delete().eq('id', todo.id).enqueue());
      },
      addComment(todoId: string, body: string) {
        if (!me) throw new Error('not signed in');
        queued(client.from('comments').insert({ id: randomUuid(), todo_id: todoId, author_id: me.id, body, created_at: now() }).enqueue());
      },
    };
  }, [client, me]);
}
