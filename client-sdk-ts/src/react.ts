/**
 * `@rowcast/client/react`: React (and React Native) bindings. A provider holds the client;
 * hooks give a live query's result, the session and the connection state, each re-rendering
 * only when its value changes.
 */
import { createContext, createElement, useContext, useEffect, useRef, useState, type ReactNode } from 'react';
import type { Row } from './apply.js';
import type { Session } from './auth.js';
import type { GenericDatabase, RowcastClient } from './client.js';
import type { ConnectionState } from './connection-state.js';
import type { LiveQueryHandle, LiveResult } from './live-query.js';
import type { QueryBuilder } from './query.js';

// The provider takes a client of any database type; hooks narrow it again with `DB`.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyClient = RowcastClient<any>;

const Ctx = createContext<AnyClient | null>(null);

export function RowcastProvider(props: { client: AnyClient; children?: ReactNode }) {
  return createElement(Ctx.Provider, { value: props.client }, props.children);
}

/** The client from the nearest `RowcastProvider`. */
export function useRowcast<DB = GenericDatabase>(): RowcastClient<DB> {
  const c = useContext(Ctx);
  if (!c) throw new Error('useRowcast: wrap your app in <RowcastProvider client={…}>');
  return c as unknown as RowcastClient<DB>;
}

const LOADING: LiveResult<never> = { rows: [], status: 'loading', hasPendingWrites: false, error: null };

/**
 * The live result of a query. `build` returns a select builder (its `.live()` is called for
 * you), or null to skip; the query is restarted when `deps` change.
 *
 * ```tsx
 * const { rows, status } = useLiveQuery((c) => c.from('todos').select('id,title,done').eq('done', false), []);
 * ```
 */
export function useLiveQuery<R extends Record<string, unknown> = Row, DB = GenericDatabase>(
  build: (client: RowcastClient<DB>) => QueryBuilder<R, unknown> | null,
  deps: readonly unknown[],
): LiveResult<R> {
  const client = useRowcast<DB>();
  const [result, setResult] = useState<LiveResult<R>>(LOADING as LiveResult<R>);
  const buildRef = useRef(build);
  buildRef.current = build;
  useEffect(() => {
    const builder = buildRef.current(client);
    if (!builder) {
      setResult(LOADING as LiveResult<R>);
      return undefined;
    }
    const handle: LiveQueryHandle<R> = (builder as unknown as QueryBuilder<R>).live();
    const off = handle.subscribe(setResult);
    return () => {
      off();
      handle.unsubscribe();
    };
    // `deps` are the caller's, as with useEffect; `build` is read through a ref.
  }, [client, ...deps]);
  return result;
}

/** The current session (null when signed out); re-renders on sign-in, sign-out and refresh. */
export function useSession(): Session | null {
  const client = useRowcast();
  const [session, setSession] = useState<Session | null>(() => client.auth.currentSession());
  useEffect(() => {
    setSession(client.auth.currentSession());
    const sub = client.auth.onAuthStateChange((_e, s) => setSession(s));
    return () => sub.unsubscribe();
  }, [client]);
  return session;
}

/** The connection state (`idle`, `connecting`, `live`, `offline`, `suspended`, `failed`, `closed`). */
export function useConnectionState(): ConnectionState {
  const client = useRowcast();
  const [state, setState] = useState<ConnectionState>(() => client.connectionState());
  useEffect(() => {
    setState(client.connectionState());
    return client.onConnectionStateChange((s) => setState(s));
  }, [client]);
  return state;
}
