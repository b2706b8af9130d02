/**
 * `@rowcast/client`: the Rowcast SDK's core entry point. Storage adapters beyond memory and
 * the React bindings have their own entry points (`/storage/kv`, `/storage/sqlite`, `/react`).
 */
export { createClient } from './client.js';
export type { ClientOptions, RowcastClient, GenericDatabase, GenericTable } from './client.js';
export { AuthClient } from './auth.js';
export type { Session, User, AuthEvent, AuthResult, AuthOptions } from './auth.js';
export { QueryBuilder } from './query.js';
export type { QueryResult } from './query.js';
export type { LiveQueryHandle, LiveQueryOptions, LiveQuerySpec, LiveResult, LiveStatus, OrderSpec } from './live-query.js';
export type { Filter, Condition, FilterOp } from './filter.js';
export type { ChangeItem, ChangeOp, Row } from './apply.js';
export type { OutboxEntry, PendingWrite, WriteOutcome } from './outbox.js';
export { RowcastError, isRowcastError } from './errors.js';
export type { ErrorCode, KnownErrorCode } from './errors.js';
export { STATES, EVENTS, TRANSITIONS, backoffDelay } from './connection-state.js';
export type { ConnectionState, ConnectionEvent } from './connection-state.js';
export type { ConnectionOptions } from './connection.js';
export { memoryStorage } from './storage/memory.js';
export type { StorageAdapter, StorageOp } from './storage/types.js';
export { appStateSource, randomUuid } from './runtime.js';
export type { AppState, AppStateSource, FetchLike, WebSocketLike, Timers, ReactNativeAppStateLike } from './runtime.js';
