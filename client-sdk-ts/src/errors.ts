/**
 * Errors: one class for everything the SDK reports, carrying the server's stable code.
 *
 * Codes are the kebab-case codes of docs/protocol.md plus a few the client itself produces
 * (`network-error`, `aborted`, `unsupported`, `session-missing`). `retryable` says whether
 * the same request can succeed later without a change (network down, server unavailable,
 * rate limited); the outbox keeps retryable writes and rejects the others.
 *
 * A brand (`__isRowcastError`) is used instead of `instanceof`, which fails when two copies
 * of the package end up in one bundle.
 */

/** Codes the server sends (docs/protocol.md) and the ones the client adds. */
export type KnownErrorCode =
  | 'bad-request'
  | 'invalid-json'
  | 'invalid-field'
  | 'not-found'
  | 'unauthorized'
  | 'forbidden'
  | 'conflict'
  | 'payload-too-large'
  | 'rate-limited'
  | 'database-unavailable'
  | 'not-ready'
  | 'timeout'
  | 'invalid-credentials'
  | 'internal'
  | 'not-acceptable'
  | 'unknown-table'
  | 'unknown-column'
  | 'unknown-function'
  | 'unknown-relationship'
  | 'ambiguous-relationship'
  | 'invalid-value'
  | 'constraint-violation'
  | 'filter-required'
  | 'idempotency-key-reused'
  | 'method-not-allowed'
  | 'resync-required'
  | 'token-expired'
  | 'limit-exceeded'
  // produced by the client
  | 'network-error'
  | 'aborted'
  | 'unsupported'
  | 'session-missing'
  | 'protocol-version';

/** A known code, or any other string a newer server may send. */
export type ErrorCode = KnownErrorCode | (string & {});

const RETRYABLE: ReadonlySet<string> = new Set([
  'network-error',
  'database-unavailable',
  'not-ready',
  'timeout',
  'rate-limited',
  'internal',
  'limit-exceeded',
]);

/** Whether a request that failed with `code` may succeed if sent again unchanged. */
export function isRetryableCode(code: string, status?: number): boolean {
  if (RETRYABLE.has(code)) return code !== 'internal' || (status ?? 500) >= 500;
  return status !== undefined && (status === 502 || status === 503 || status === 504);
}

export interface RowcastErrorInit {
  code: ErrorCode;
  message: string;
  status?: number;
  details?: string;
  hint?: string;
  retryable?: boolean;
  /** Seconds the server asked to wait (`Retry-After`). */
  retryAfter?: number;
}

export class RowcastError extends Error {
  readonly __isRowcastError = true as const;
  readonly code: ErrorCode;
  /** HTTP status, when the error came from an HTTP answer. */
  readonly status: number | undefined;
  readonly details: string | undefined;
  readonly hint: string | undefined;
  /** True when sending the same request again later can succeed. */
  readonly retryable: boolean;
  readonly retryAfter: number | undefined;

  constructor(init: RowcastErrorInit) {
    super(init.message);
    this.name = 'RowcastError';
    this.code = init.code;
    this.status = init.status;
    this.details = init.details;
    this.hint = init.hint;
    this.retryable = init.retryable ?? isRetryableCode(init.code, init.status);
    this.retryAfter = init.retryAfter;
  }

  toJSON(): RowcastErrorInit {
    return {
      code: this.code,
      message: this.message,
      status: this.status,
      details: this.details,
      hint: this.hint,
      retryable: this.retryable,
      retryAfter: this.retryAfter,
    };
  }
}

/** Structural check that works across bundle copies. */
export function isRowcastError(e: unknown): e is RowcastError {
  return typeof e === 'object' && e !== null && (e as { __isRowcastError?: unknown }).__isRowcastError === true;
}

/** Build an error from a server error body (`{code, message, details?, hint?}`) or status. */
export function errorFromBody(body: unknown, status: number, retryAfter?: number): RowcastError {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const code = typeof b.code === 'string' && b.code !== '' ? b.code : codeForStatus(status);
  const message = typeof b.message === 'string' ? b.message : `request failed with status ${status}`;
  return new RowcastError({
    code,
    message,
    status,
    details: typeof b.details === 'string' ? b.details : undefined,
    hint: typeof b.hint === 'string' ? b.hint : undefined,
    retryAfter,
  });
}

function codeForStatus(status: number): string {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 409) return 'conflict';
  if (status === 429) return 'rate-limited';
  if (status === 503) return 'database-unavailable';
  if (status === 504) return 'timeout';
  if (status >= 500) return 'internal';
  return 'bad-request';
}

export function networkError(cause: unknown): RowcastError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new RowcastError({ code: 'network-error', message: 'the server could not be reached', details: detail, retryable: true });
}
