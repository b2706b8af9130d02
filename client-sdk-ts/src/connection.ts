/**
 * The one WebSocket a client shares between all its live queries: carries out the state
 * machine's effects (connection-state.ts), speaks the realtime protocol (docs/protocol.md),
 * routes frames to live queries by subscription id, runs the heartbeat, and pushes fresh
 * tokens onto the open socket.
 */
import {
  backoffDelay,
  closeEvent,
  transition,
  type BackoffOptions,
  type ConnectionEvent,
  type ConnectionState,
  type Effect,
} from './connection-state.js';
import { RowcastError } from './errors.js';
import type { LiveQuery, LiveQueryHost } from './live-query.js';
import type { OutboxEntry } from './outbox.js';
import type { Runtime, TimerHandle, WebSocketLike } from './runtime.js';

export interface ConnectionOptions {
  /** How often the client pings when nothing else is sent (ms). Default 10000. */
  heartbeatIntervalMs?: number;
  /** A socket with no frame for this long after a ping (or while connecting) is dead (ms). Default 5000. */
  heartbeatTimeoutMs?: number;
  /** Longest wait for `welcome` after starting to connect (ms). Default 10000. */
  connectTimeoutMs?: number;
  backoff?: BackoffOptions;
}

export interface ConnectionHooks {
  accessToken(): Promise<string | null>;
  refreshToken(): Promise<string | null>;
  pendingFor(table: string): OutboxEntry[];
  /** The socket reached `live` (a good moment to flush the outbox). */
  onLive(): void;
}

export type StateListener = (state: ConnectionState, previous: ConnectionState) => void;

/** `http(s)://host` → `ws(s)://host/realtime/v1/websocket`, without `URL`. */
export function socketUrl(baseUrl: string): string {
  const u = baseUrl.replace(/\/+$/, '');
  const ws = u.startsWith('https://') ? 'wss://' + u.slice(8) : u.startsWith('http://') ? 'ws://' + u.slice(7) : u;
  return ws + '/realtime/v1/websocket';
}

export class Connection implements LiveQueryHost {
  private st: ConnectionState = 'idle';
  private readonly listeners = new Set<StateListener>();
  private readonly queries = new Map<string, LiveQuery>();
  private socket: WebSocketLike | null = null;
  private gen = 0;
  private attempt = 0;
  private retryTimer: TimerHandle | undefined;
  private pingTimer: TimerHandle | undefined;
  private deadline: TimerHandle | undefined;
  private pingRef = 0;
  /** Set after `token-expired`: subscriptions resume once `authenticated` arrives. */
  private awaitingAuth = false;
  /** The token the open socket last got (in `hello` or `auth`), so a refresh is sent once. */
  private sentToken: string | null = null;
  /** What the server said in `welcome`. */
  welcome: { role: string; expires_at?: number; heartbeat_ms: number } | null = null;
  /** Every event dispatched, for tests and debugging (bounded). */
  readonly trace: Array<{ event: ConnectionEvent; from: ConnectionState; to: ConnectionState }> = [];
  private readonly o: Required<Omit<ConnectionOptions, 'backoff'>> & { backoff: BackoffOptions };

  constructor(
    private readonly url: string,
    private readonly rt: Runtime,
    private readonly hooks: ConnectionHooks,
    options: ConnectionOptions = {},
  ) {
    this.o = {
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 10000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 5000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      backoff: options.backoff ?? {},
    };
  }

  state(): ConnectionState {
    return this.st;
  }

  onStateChange(listener: StateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  dispatch(event: ConnectionEvent): void {
    const tr = transition(this.st, event);
    if (!tr) return;
    const from = this.st;
    this.st = tr.to;
    this.trace.push({ event, from, to: tr.to });
    if (this.trace.length > 200) this.trace.shift();
    for (const e of tr.effects) this.run(e);
    if (from !== tr.to) {
      for (const l of [...this.listeners]) {
        try {
          l(tr.to, from);
        } catch {
          // listeners must not break the connection
        }
      }
    }
  }

  // ---- live queries (LiveQueryHost) ----

  add(q: LiveQuery): void {
    this.queries.set(q.id, q);
    void q.load().then(() => this.subscribe(q));
    if (this.queries.size === 1) this.dispatch('demand');
  }

  subscribe(q: LiveQuery): void {
    if (q.isClosed() || q.active || !q.isLoaded() || this.st !== 'live' || !this.socket || this.awaitingAuth) return;
    if (!this.queries.has(q.id)) return;
    q.active = true;
    this.send(q.subscribeMessage());
  }

  unsubscribe(q: LiveQuery): void {
    if (!this.queries.delete(q.id)) return;
    if (q.active && this.st === 'live') this.send({ type: 'unsubscribe', id: q.id });
    q.active = false;
    if (this.queries.size === 0) this.dispatch('no-demand');
  }

  pendingFor(table: string): OutboxEntry[] {
    return this.hooks.pendingFor(table);
  }

  liveQueries(): LiveQuery[] {
    return [...this.queries.values()];
  }

  // ---- outside events ----

  /** The user changed: every query moves to that user's cache and the socket starts over. */
  identityChanged(namespace: string): void {
    for (const q of this.queries.values()) q.switchNamespace(namespace);
    for (const q of this.queries.values()) void q.load().then(() => this.subscribe(q));
    this.dispatch('reconnect');
  }

  /** A refreshed token for the same user: hand it to the live socket (no resubscribe). */
  pushToken(token: string): void {
    if (!this.socket || token === this.sentToken) return;
    if (this.st !== 'live' && !(this.st === 'connecting' && this.sentToken !== null)) return;
    this.sentToken = token;
    this.send({ type: 'auth', token });
  }

  close(): void {
    this.dispatch('close');
    this.clearRetry();
  }

  // ---- effects ----

  private run(effect: Effect): void {
    switch (effect) {
      case 'open':
        this.open();
        break;
      case 'send-hello':
        void this.sendHello(this.gen);
        break;
      case 'close-socket':
        this.closeSocket();
        break;
      case 'schedule-retry': {
        this.clearRetry();
        const delay = backoffDelay(this.attempt++, this.rt.random, this.o.backoff);
        this.retryTimer = this.rt.timers.setTimeout(() => {
          this.retryTimer = undefined;
          this.dispatch('retry-timer');
        }, delay);
        break;
      }
      case 'cancel-retry':
        this.clearRetry();
        break;
      case 'reset-backoff':
        this.attempt = 0;
        break;
      case 'resubscribe':
        this.awaitingAuth = false;
        for (const q of this.queries.values()) {
          if (q.status === 'error' && q.error && !q.error.retryable) continue;
          this.subscribe(q);
        }
        this.schedulePing();
        this.hooks.onLive();
        break;
      case 'refresh-token':
        void this.hooks.refreshToken();
        break;
      case 'probe':
        // Back from the background: the socket may have died silently (iOS suspends it).
        this.ping();
        break;
      case 'check-demand':
        if (this.queries.size > 0) this.dispatch('demand');
        break;
    }
  }

  private open(): void {
    const gen = ++this.gen;
    let ws: WebSocketLike;
    try {
      ws = this.rt.webSocket(socketUrl(this.url));
    } catch {
      // Report asynchronously so the transition that opened finishes first.
      this.rt.timers.setTimeout(() => gen === this.gen && this.dispatch('socket-lost'), 0);
      return;
    }
    this.socket = ws;
    ws.onopen = () => gen === this.gen && this.dispatch('opened');
    ws.onmessage = (ev) => gen === this.gen && this.onFrame(ev.data);
    ws.onclose = (ev) => {
      if (gen !== this.gen) return;
      this.socket = null;
      for (const q of this.queries.values()) q.detached();
      this.dispatch(closeEvent(ev && typeof ev.code === 'number' ? ev.code : 1006));
    };
    ws.onerror = () => undefined; // a close event follows
    this.armDeadline(this.o.connectTimeoutMs);
  }

  private async sendHello(gen: number): Promise<void> {
    const token = await this.hooks.accessToken().catch(() => null);
    if (gen !== this.gen || this.st !== 'connecting') return;
    const hello: Record<string, unknown> = { type: 'hello', v: 1 };
    if (token) hello.token = token;
    this.sentToken = token;
    this.send(hello);
  }

  private closeSocket(): void {
    this.clearPing();
    this.clearDeadline();
    const ws = this.socket;
    this.socket = null;
    this.gen++;
    for (const q of this.queries.values()) q.detached();
    if (ws) {
      // Handlers stay set (as no-ops): closing a socket that is still connecting makes some
      // implementations (the `ws` package) emit an error event, which throws if nobody listens.
      const ignore = () => undefined;
      ws.onopen = ws.onmessage = ws.onerror = ignore;
      ws.onclose = ignore;
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closed
      }
    }
  }

  private send(msg: Record<string, unknown>): void {
    if (!this.socket) return;
    try {
      this.socket.send(JSON.stringify(msg));
    } catch {
      // The close event that follows moves the machine on.
    }
  }

  private onFrame(data: unknown): void {
    // Any frame proves the socket alive.
    this.clearDeadline();
    if (typeof data !== 'string') return;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(data) as Record<string, unknown>;
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    const type = msg.type;
    if (type === 'welcome') {
      this.welcome = msg as unknown as { role: string; expires_at?: number; heartbeat_ms: number };
      this.dispatch('welcome');
      return;
    }
    if (type === 'pong') return;
    if (type === 'authenticated') {
      if (this.awaitingAuth) {
        this.awaitingAuth = false;
        for (const q of this.queries.values()) this.subscribe(q);
      }
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    if (type === 'error' && msg.code === 'token-expired') {
      // The server ended every subscription; get a fresh token, send `auth`, resume by cursor.
      this.awaitingAuth = true;
      for (const q of this.queries.values()) q.detached();
      const gen = this.gen;
      void this.hooks.refreshToken().then((token) => {
        if (gen !== this.gen) return;
        if (token) this.pushToken(token);
        else for (const q of this.queries.values()) q.fail(new RowcastError({ code: 'token-expired', message: 'the session expired; sign in again', retryable: false }));
      });
      return;
    }
    if (!id) return;
    const q = this.queries.get(id);
    if (q) q.handle(msg);
  }

  // ---- heartbeat ----

  private ping(): void {
    this.send({ type: 'ping', ref: String(++this.pingRef) });
    if (this.deadline === undefined) this.armDeadline(this.o.heartbeatTimeoutMs);
  }

  private schedulePing(): void {
    this.clearPing();
    this.pingTimer = this.rt.timers.setTimeout(() => {
      this.pingTimer = undefined;
      if (this.st !== 'live') return;
      this.ping();
      this.schedulePing();
    }, this.o.heartbeatIntervalMs);
  }

  private armDeadline(ms: number): void {
    this.clearDeadline();
    const gen = this.gen;
    this.deadline = this.rt.timers.setTimeout(() => {
      this.deadline = undefined;
      if (gen === this.gen) this.dispatch('heartbeat-timeout');
    }, ms);
  }

  private clearDeadline(): void {
    if (this.deadline !== undefined) this.rt.timers.clearTimeout(this.deadline);
    this.deadline = undefined;
  }

  private clearPing(): void {
    if (this.pingTimer !== undefined) this.rt.timers.clearTimeout(this.pingTimer);
    this.pingTimer = undefined;
  }

  private clearRetry(): void {
    if (this.retryTimer !== undefined) this.rt.timers.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }
}
