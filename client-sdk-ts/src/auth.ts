/**
 * `client.auth`: sign-up, sign-in (password, anonymous), sign-out, and a session that is
 * persisted through the storage adapter and refreshed before it expires.
 *
 * Refresh tokens rotate and work once (docs/auth.md), so refreshing is single-flight and the
 * new session is stored before anything uses it. Timers do not run while a phone app is in
 * the background, so on foreground a session past its refresh time is refreshed at once.
 */
import { RowcastError } from './errors.js';
import { httpRequest } from './http.js';
import type { Runtime, TimerHandle } from './runtime.js';
import type { StorageAdapter } from './storage/types.js';

export interface User {
  id: string;
  aud?: string;
  role?: string;
  email?: string | null;
  is_anonymous?: boolean;
  app_metadata?: Record<string, unknown>;
  user_metadata?: Record<string, unknown>;
  created_at?: string;
  updated_at?: string;
  last_sign_in_at?: string | null;
}

export interface Session {
  access_token: string;
  token_type: string;
  expires_in: number;
  /** Seconds since the epoch. */
  expires_at: number;
  refresh_token: string;
  user: User;
}

export type AuthEvent = 'INITIAL_SESSION' | 'SIGNED_IN' | 'SIGNED_OUT' | 'TOKEN_REFRESHED' | 'USER_UPDATED';

export type AuthResult = { data: { session: Session; user: User }; error: null } | { data: { session: null; user: null }; error: RowcastError };

export interface AuthOptions {
  /** Refresh this long before expiry (ms). Default 60 s, at most half the token lifetime. */
  refreshMarginMs?: number;
  /** Storage key of the session. Default `auth:session`. */
  storageKey?: string;
}

type Listener = (event: AuthEvent, session: Session | null) => void;

export class AuthClient {
  private session: Session | null = null;
  private readonly listeners = new Set<Listener>();
  private refreshing: Promise<Session | null> | null = null;
  private timer: TimerHandle | undefined;
  private readonly loaded: Promise<void>;
  private readonly key: string;
  private readonly margin: number;
  private stopped = false;

  constructor(
    private readonly baseUrl: string,
    private readonly rt: Runtime,
    private readonly storage: StorageAdapter,
    options: AuthOptions = {},
  ) {
    this.key = options.storageKey ?? 'auth:session';
    this.margin = options.refreshMarginMs ?? 60000;
    this.loaded = this.load();
  }

  private async load(): Promise<void> {
    try {
      const raw = await this.storage.get(this.key);
      if (raw) {
        const s = JSON.parse(raw) as Session;
        if (s && typeof s.access_token === 'string' && typeof s.refresh_token === 'string') this.session = s;
      }
    } catch {
      this.session = null;
    }
    this.schedule();
    this.emit('INITIAL_SESSION');
  }

  /** Resolves once the persisted session (if any) has been read. */
  ready(): Promise<void> {
    return this.loaded;
  }

  /** The current session, refreshed first when it is about to expire. */
  async getSession(): Promise<{ data: { session: Session | null }; error: RowcastError | null }> {
    await this.loaded;
    if (this.session && this.dueForRefresh(this.session)) {
      const r = await this.refresh();
      if (r.error && !r.error.retryable) return { data: { session: null }, error: r.error };
    }
    return { data: { session: this.session }, error: null };
  }

  /** The access token to send, or null when signed out (anonymous). */
  async accessToken(): Promise<string | null> {
    const { data } = await this.getSession();
    return data.session ? data.session.access_token : null;
  }

  /** The session held now, without waiting or refreshing. */
  currentSession(): Session | null {
    return this.session;
  }

  onAuthStateChange(listener: Listener): { unsubscribe(): void } {
    this.listeners.add(listener);
    return { unsubscribe: () => this.listeners.delete(listener) };
  }

  signUp(credentials: { email: string; password: string; data?: Record<string, unknown> }): Promise<AuthResult> {
    return this.grant('/auth/v1/signup', credentials, 'SIGNED_IN');
  }

  signInWithPassword(credentials: { email: string; password: string }): Promise<AuthResult> {
    return this.grant('/auth/v1/token?grant_type=password', credentials, 'SIGNED_IN');
  }

  /** Creates an anonymous user (its rows survive a later upgrade to email and password). */
  signInAnonymously(): Promise<AuthResult> {
    return this.grant('/auth/v1/signup', {}, 'SIGNED_IN');
  }

  /** Ends the session on the server (best effort) and forgets it here. */
  async signOut(options: { scope?: 'local' | 'global' | 'others' } = {}): Promise<{ error: RowcastError | null }> {
    await this.loaded;
    const s = this.session;
    let error: RowcastError | null = null;
    if (s) {
      const scope = options.scope && options.scope !== 'local' ? '?scope=' + options.scope : '';
      const r = await httpRequest(this.rt.fetch, this.baseUrl + '/auth/v1/logout' + scope, {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + s.access_token },
      });
      // An expired token cannot sign out on the server; the session is forgotten anyway.
      if (!r.ok && r.error.code !== 'unauthorized') error = r.error;
    }
    if (options.scope !== 'others') await this.setSession(null, 'SIGNED_OUT');
    return { error };
  }

  /** Exchange the refresh token now (single-flight). */
  async refresh(): Promise<{ session: Session | null; error: RowcastError | null }> {
    await this.loaded;
    if (!this.session) return { session: null, error: new RowcastError({ code: 'session-missing', message: 'not signed in', retryable: false }) };
    let err: RowcastError | null = null;
    this.refreshing ??= (async () => {
      const current = this.session;
      if (!current) return null;
      const r = await httpRequest(this.rt.fetch, this.baseUrl + '/auth/v1/token?grant_type=refresh_token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: current.refresh_token }),
      });
      if (r.ok) {
        const s = r.answer.body as Session;
        await this.setSession(s, 'TOKEN_REFRESHED');
        return s;
      }
      err = r.error;
      if (!r.error.retryable) await this.setSession(null, 'SIGNED_OUT');
      else this.scheduleRetry();
      return null;
    })().finally(() => {
      this.refreshing = null;
    });
    const session = await this.refreshing;
    return { session, error: err };
  }

  /** Called when the app comes to the foreground: refresh at once if the timer was due. */
  onForeground(): void {
    if (this.session && this.dueForRefresh(this.session)) void this.refresh();
    else this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  private async grant(path: string, body: unknown, event: AuthEvent): Promise<AuthResult> {
    await this.loaded;
    const r = await httpRequest(this.rt.fetch, this.baseUrl + path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!r.ok) return { data: { session: null, user: null }, error: r.error };
    const s = r.answer.body as Session;
    await this.setSession(s, event);
    return { data: { session: s, user: s.user }, error: null };
  }

  private refreshAt(s: Session): number {
    const lifetimeMs = Math.max(0, s.expires_in * 1000);
    const margin = Math.min(this.margin, lifetimeMs / 2);
    return s.expires_at * 1000 - margin;
  }

  private dueForRefresh(s: Session): boolean {
    return this.rt.timers.now() >= this.refreshAt(s);
  }

  private async setSession(s: Session | null, event: AuthEvent): Promise<void> {
    // Stored before anyone uses it: a refresh token works once.
    if (s) await this.storage.write([{ op: 'set', key: this.key, value: JSON.stringify(s) }]);
    else await this.storage.write([{ op: 'remove', key: this.key }]);
    this.session = s;
    this.schedule();
    this.emit(event);
  }

  private emit(event: AuthEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event, this.session);
      } catch {
        // A listener's failure must not stop the others.
      }
    }
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.rt.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.clearTimer();
    if (this.stopped || !this.session) return;
    const delay = Math.max(0, this.refreshAt(this.session) - this.rt.timers.now());
    this.timer = this.rt.timers.setTimeout(() => {
      this.timer = undefined;
      void this.refresh();
    }, delay);
  }

  private scheduleRetry(): void {
    this.clearTimer();
    if (this.stopped) return;
    this.timer = this.rt.timers.setTimeout(() => {
      this.timer = undefined;
      void this.refresh();
    }, 5000);
  }
}
