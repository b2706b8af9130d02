/**
 * The platform the SDK runs on, as plain injectable parts: `fetch`, `WebSocket`, timers, the
 * clock, the id generator and the app-state (foreground/background) source.
 *
 * The core never reaches for a global other than through `resolveRuntime`, so tests inject
 * fakes and React Native needs no Node polyfills.
 */

/** The part of a `fetch` response the SDK reads. */
export interface FetchResponseLike {
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
) => Promise<FetchResponseLike>;

/** The part of the WebSocket interface the SDK uses (browser, React Native and `ws` all fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

export type TimerHandle = unknown;

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Milliseconds since the epoch. */
  now(): number;
}

export type AppState = 'active' | 'background';

/**
 * Where foreground/background changes come from. On React Native pass
 * `appStateSource(AppState)` (see docs/sdk.md); the core does not import `react-native`.
 */
export interface AppStateSource {
  current?(): AppState;
  subscribe(listener: (state: AppState) => void): () => void;
}

/** The shape of React Native's `AppState` module that `appStateSource` adapts. */
export interface ReactNativeAppStateLike {
  currentState?: string | null;
  addEventListener(type: 'change', listener: (state: string) => void): { remove(): void };
}

/** Adapt React Native's `AppState` (or anything shaped like it) to an `AppStateSource`. */
export function appStateSource(appState: ReactNativeAppStateLike): AppStateSource {
  const map = (s: string | null | undefined): AppState => (s === 'background' || s === 'inactive' ? 'background' : 'active');
  return {
    current: () => map(appState.currentState),
    subscribe(listener) {
      const sub = appState.addEventListener('change', (s) => listener(map(s)));
      return () => sub.remove();
    },
  };
}

export interface Runtime {
  fetch: FetchLike;
  webSocket: WebSocketFactory;
  timers: Timers;
  newId: () => string;
  appState: AppStateSource | undefined;
  random: () => number;
}

export interface RuntimeOptions {
  fetch?: FetchLike;
  /** A WebSocket constructor (e.g. the `ws` package in Node) or a factory function. */
  WebSocket?: (new (url: string) => WebSocketLike) | undefined;
  webSocketFactory?: WebSocketFactory;
  timers?: Timers;
  /** Generates idempotency keys and subscription ids; defaults to a random UUID v4. */
  newId?: () => string;
  appState?: AppStateSource;
  random?: () => number;
}

const g = globalThis as unknown as {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  fetch?: FetchLike;
  WebSocket?: new (url: string) => WebSocketLike;
  crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array };
};

export const defaultTimers: Timers = {
  // Looked up at call time, so fake timers installed later are honoured.
  setTimeout: (fn, ms) => g.setTimeout(fn, ms),
  clearTimeout: (h) => g.clearTimeout(h),
  now: () => Date.now(),
};

const HEX = '0123456789abcdef';

/** A UUID v4: `crypto.getRandomValues` when present, else `Math.random` (ids, not secrets). */
export function randomUuid(): string {
  const bytes = new Uint8Array(16);
  const grv = g.crypto && g.crypto.getRandomValues;
  if (grv) grv.call(g.crypto, bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  let s = '';
  for (let i = 0; i < 16; i++) {
    const b = bytes[i] ?? 0;
    s += HEX.charAt(b >> 4) + HEX.charAt(b & 15);
    if (i === 3 || i === 5 || i === 7 || i === 9) s += '-';
  }
  return s;
}

export function resolveRuntime(o: RuntimeOptions): Runtime {
  const fetchImpl = o.fetch ?? (g.fetch ? (g.fetch.bind(globalThis) as FetchLike) : undefined);
  const WS = o.WebSocket ?? g.WebSocket;
  const webSocket: WebSocketFactory =
    o.webSocketFactory ??
    ((url: string) => {
      if (!WS) {
        throw new Error('no WebSocket implementation: pass `WebSocket` (e.g. the `ws` package in Node) to createClient');
      }
      return new WS(url);
    });
  return {
    fetch:
      fetchImpl ??
      (() => Promise.reject(new Error('no fetch implementation: pass `fetch` to createClient'))),
    webSocket,
    timers: o.timers ?? defaultTimers,
    newId: o.newId ?? randomUuid,
    appState: o.appState,
    random: o.random ?? Math.random,
  };
}
