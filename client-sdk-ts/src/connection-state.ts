/**
 * The connection state machine, as data. docs/sdk.md ("Connection state machine") has the
 * same table; a unit test checks that the two agree cell by cell, and another walks every
 * state × event pair through `transition`.
 *
 * ```
 *            demand                 welcome
 *   idle ──────────────▶ connecting ───────▶ live
 *    ▲  ▲                 │   ▲ ▲             │
 *    │  │ no-demand       │   │ │ retry-timer │ socket-lost / heartbeat-timeout / auth-rejected
 *    │  └─────────────────┤   │ └── offline ◀─┘
 *    │                    └───┼──────▶ ▲ (same events while connecting)
 *    │ foreground             │ foreground (retry now)
 *   suspended ◀── background (from idle, connecting, live, offline)
 *   failed   ◀── version-rejected;   closed ◀── close (from every state)
 * ```
 *
 * The socket itself (timers, frames, the heartbeat) is driven by `connection.ts`, which
 * carries out the effects listed here; the table is pure so it can be tested exhaustively.
 */

export const STATES = ['idle', 'connecting', 'live', 'offline', 'suspended', 'failed', 'closed'] as const;
export type ConnectionState = (typeof STATES)[number];

export const EVENTS = [
  'demand',
  'no-demand',
  'opened',
  'welcome',
  'socket-lost',
  'auth-rejected',
  'version-rejected',
  'heartbeat-timeout',
  'retry-timer',
  'background',
  'foreground',
  'reconnect',
  'close',
] as const;
export type ConnectionEvent = (typeof EVENTS)[number];

export const EFFECTS = [
  'open',
  'send-hello',
  'close-socket',
  'schedule-retry',
  'cancel-retry',
  'reset-backoff',
  'resubscribe',
  'refresh-token',
  'probe',
  'check-demand',
] as const;
export type Effect = (typeof EFFECTS)[number];

/** One cell: the next state and the effects, in order; `null` means the event is ignored. */
export type Transition = { to: ConnectionState; effects: readonly Effect[] } | null;

const t = (to: ConnectionState, ...effects: Effect[]): Transition => ({ to, effects });
const _ = null;

/** Every state × event pair is spelled out (no `Partial`): TypeScript checks completeness. */
export const TRANSITIONS: Record<ConnectionState, Record<ConnectionEvent, Transition>> = {
  idle: {
    demand: t('connecting', 'open'),
    'no-demand': _,
    opened: _,
    welcome: _,
    'socket-lost': _,
    'auth-rejected': _,
    'version-rejected': _,
    'heartbeat-timeout': _,
    'retry-timer': _,
    background: t('suspended'),
    foreground: _,
    reconnect: t('idle', 'check-demand'),
    close: t('closed'),
  },
  connecting: {
    demand: _,
    'no-demand': t('idle', 'close-socket'),
    opened: t('connecting', 'send-hello'),
    welcome: t('live', 'reset-backoff', 'resubscribe'),
    'socket-lost': t('offline', 'close-socket', 'schedule-retry'),
    'auth-rejected': t('offline', 'close-socket', 'refresh-token', 'schedule-retry'),
    'version-rejected': t('failed', 'close-socket'),
    'heartbeat-timeout': t('offline', 'close-socket', 'schedule-retry'),
    'retry-timer': _,
    background: t('suspended', 'close-socket'),
    foreground: _,
    reconnect: t('connecting', 'close-socket', 'open'),
    close: t('closed', 'close-socket'),
  },
  live: {
    demand: _,
    'no-demand': t('idle', 'close-socket'),
    opened: _,
    welcome: _,
    'socket-lost': t('offline', 'close-socket', 'schedule-retry'),
    'auth-rejected': t('offline', 'close-socket', 'refresh-token', 'schedule-retry'),
    'version-rejected': t('failed', 'close-socket'),
    'heartbeat-timeout': t('offline', 'close-socket', 'schedule-retry'),
    'retry-timer': _,
    background: t('suspended', 'close-socket'),
    foreground: t('live', 'probe'),
    reconnect: t('connecting', 'close-socket', 'open'),
    close: t('closed', 'close-socket'),
  },
  offline: {
    demand: _,
    'no-demand': t('idle', 'cancel-retry'),
    opened: _,
    welcome: _,
    'socket-lost': _,
    'auth-rejected': _,
    'version-rejected': _,
    'heartbeat-timeout': _,
    'retry-timer': t('connecting', 'open'),
    background: t('suspended', 'cancel-retry'),
    foreground: t('connecting', 'cancel-retry', 'open'),
    reconnect: t('connecting', 'cancel-retry', 'open'),
    close: t('closed', 'cancel-retry'),
  },
  suspended: {
    demand: _,
    'no-demand': _,
    opened: _,
    welcome: _,
    'socket-lost': _,
    'auth-rejected': _,
    'version-rejected': _,
    'heartbeat-timeout': _,
    'retry-timer': _,
    background: _,
    foreground: t('idle', 'reset-backoff', 'check-demand'),
    reconnect: _,
    close: t('closed'),
  },
  failed: {
    demand: _,
    'no-demand': _,
    opened: _,
    welcome: _,
    'socket-lost': _,
    'auth-rejected': _,
    'version-rejected': _,
    'heartbeat-timeout': _,
    'retry-timer': _,
    background: _,
    foreground: _,
    reconnect: t('idle', 'reset-backoff', 'check-demand'),
    close: t('closed'),
  },
  closed: {
    demand: _,
    'no-demand': _,
    opened: _,
    welcome: _,
    'socket-lost': _,
    'auth-rejected': _,
    'version-rejected': _,
    'heartbeat-timeout': _,
    'retry-timer': _,
    background: _,
    foreground: _,
    reconnect: _,
    close: _,
  },
};

export function transition(state: ConnectionState, event: ConnectionEvent): Transition {
  return TRANSITIONS[state][event];
}

/** What a server close code means for the machine (docs/protocol.md, "Close codes"). */
export function closeEvent(code: number): ConnectionEvent {
  if (code === 4001) return 'auth-rejected';
  if (code === 4002) return 'version-rejected';
  if (code === 4000) return 'heartbeat-timeout';
  return 'socket-lost';
}

export interface BackoffOptions {
  /** First retry's upper bound (ms). Default 500. */
  baseMs?: number;
  /** Largest upper bound (ms). Default 30000. */
  maxMs?: number;
}

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(max, base·2^attempt)), so many
 * clients dropped by one server restart do not come back in lockstep.
 */
export function backoffDelay(attempt: number, random: () => number, o: BackoffOptions = {}): number {
  const base = o.baseMs ?? 500;
  const max = o.maxMs ?? 30000;
  const cap = Math.min(max, base * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * cap);
}
