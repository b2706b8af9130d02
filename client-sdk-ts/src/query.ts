/**
 * `client.from(table)`: the REST query builder (docs/rest.md's grammar), with one result
 * convention: every request resolves to `{ data, error, count, status }` and never throws.
 *
 * Written here instead of wrapping `@supabase/postgrest-js` (which our REST API is
 * compatible with, see compat/) because that builder assembles URLs with `URL` and
 * `URLSearchParams`, which React Native implements only partly, and because the same
 * builder must also turn into a live query and into a durable offline write: both need the
 * filter as data (to evaluate on cached rows), not only as a query string.
 */
import type { RowcastError } from './errors.js';
import { RowcastError as RowcastErrorClass } from './errors.js';
import { allOf, conditionToRest, filterToRestParams, validateFilter, type Condition, type Filter, type FilterOp } from './filter.js';
import { encodeQuery, httpRequest } from './http.js';
import type { LiveQueryHandle, LiveQueryOptions, LiveQuerySpec } from './live-query.js';
import type { OptimisticWrite, PendingWrite, WriteRequest } from './outbox.js';
import type { FetchLike } from './runtime.js';

export interface QueryResult<T> {
  data: T | null;
  error: RowcastError | null;
  /** The total when `count` was asked for (`select(cols, { count: 'exact' })`). */
  count: number | null;
  status: number;
}

/** What the builder needs from the client. */
export interface QueryContext {
  baseUrl: string;
  fetch: FetchLike;
  accessToken(): Promise<string | null>;
  newId(): string;
  live<R>(spec: LiveQuerySpec, options: LiveQueryOptions<R>): LiveQueryHandle<R>;
  enqueue(request: WriteRequest, optimistic: OptimisticWrite): PendingWrite;
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PATCH' | 'DELETE';

type Kind = 'select' | 'insert' | 'upsert' | 'update' | 'delete';

/** Strip whitespace outside double quotes, as PostgREST clients do. */
function cleanSelect(columns: string): string {
  let out = '';
  let quoted = false;
  for (const ch of columns) {
    if (ch === '"') quoted = !quoted;
    if (!quoted && /\s/.test(ch)) continue;
    out += ch;
  }
  return out;
}

/**
 * A query on one table. `Row` is the table's row type (from `rowcast gen types`), `Result`
 * what the request resolves to.
 */
export class QueryBuilder<Row extends Record<string, unknown>, Result = Row[], Ins = Partial<Row>, Upd = Partial<Row>>
  implements PromiseLike<QueryResult<Result>>
{
  private kind: Kind = 'select';
  private columns = '*';
  private countMode: 'exact' | 'planned' | 'estimated' | null = null;
  private head = false;
  private readonly structured: Filter[] = [];
  private readonly params: Array<[string, string]> = [];
  /** Filters not expressible as live-query filters (like, not, or-strings …). */
  private unstructured = 0;
  private orders: Array<{ column: string; ascending: boolean; nullsFirst: boolean | undefined }> = [];
  private limitN: number | null = null;
  private offsetN: number | null = null;
  private singleMode: 'single' | 'maybe' | null = null;
  private body: unknown = undefined;
  private onConflict: string | null = null;
  private ignoreDuplicates = false;
  private idemKey: string | null = null;

  constructor(
    private readonly ctx: QueryContext,
    readonly table: string,
  ) {}

  /** Columns to return, PostgREST syntax (embeds, aliases, casts). */
  select(columns = '*', options: { count?: 'exact' | 'planned' | 'estimated'; head?: boolean } = {}): this {
    this.columns = cleanSelect(columns);
    this.countMode = options.count ?? null;
    this.head = options.head ?? false;
    return this;
  }

  insert(values: Ins | Ins[]): QueryBuilder<Row, Row[], Ins, Upd> {
    this.kind = 'insert';
    this.body = values;
    return this as unknown as QueryBuilder<Row, Row[], Ins, Upd>;
  }

  /** Insert, or update the row with the same primary key (or `onConflict` columns). */
  upsert(values: Ins | Ins[], options: { onConflict?: string; ignoreDuplicates?: boolean } = {}): QueryBuilder<Row, Row[], Ins, Upd> {
    this.kind = 'upsert';
    this.body = values;
    this.onConflict = options.onConflict ?? null;
    this.ignoreDuplicates = options.ignoreDuplicates ?? false;
    return this as unknown as QueryBuilder<Row, Row[], Ins, Upd>;
  }

  update(values: Upd): QueryBuilder<Row, Row[], Ins, Upd> {
    this.kind = 'update';
    this.body = values;
    return this as unknown as QueryBuilder<Row, Row[], Ins, Upd>;
  }

  delete(): QueryBuilder<Row, Row[], Ins, Upd> {
    this.kind = 'delete';
    return this as unknown as QueryBuilder<Row, Row[], Ins, Upd>;
  }

  private cond<K extends keyof Row & string>(column: K, op: FilterOp, value: unknown): this {
    const c: Condition = { column, op, value };
    this.structured.push(c);
    this.params.push([column, conditionToRest(c)]);
    return this;
  }

  eq<K extends keyof Row & string>(column: K, value: Row[K]): this {
    return this.cond(column, 'eq', value);
  }
  neq<K extends keyof Row & string>(column: K, value: Row[K]): this {
    return this.cond(column, 'neq', value);
  }
  gt<K extends keyof Row & string>(column: K, value: Row[K]): this {
    return this.cond(column, 'gt', value);
  }
  gte<K extends keyof Row & string>(column: K, value: Row[K]): this {
    return this.cond(column, 'gte', value);
  }
  lt<K extends keyof Row & string>(column: K, value: Row[K]): this {
    return this.cond(column, 'lt', value);
  }
  lte<K extends keyof Row & string>(column: K, value: Row[K]): this {
    return this.cond(column, 'lte', value);
  }
  in<K extends keyof Row & string>(column: K, values: ReadonlyArray<Row[K]>): this {
    return this.cond(column, 'in', [...values]);
  }
  /** `is.null`, `is.not_null`, `is.true`, `is.false`. */
  is<K extends keyof Row & string>(column: K, value: null | boolean | 'not_null'): this {
    return this.cond(column, 'is', value);
  }
  /** A filter tree as data (`{ or: [...] }` etc.); usable in live queries too. */
  where(filter: Filter): this {
    validateFilter(filter);
    this.structured.push(filter);
    this.params.push(...filterToRestParams(filter));
    return this;
  }
  like<K extends keyof Row & string>(column: K, pattern: string): this {
    return this.raw(column, 'like.' + pattern);
  }
  ilike<K extends keyof Row & string>(column: K, pattern: string): this {
    return this.raw(column, 'ilike.' + pattern);
  }
  /** `not.op.value`, e.g. `.not('rating', 'is', null)`. */
  not<K extends keyof Row & string>(column: K, op: string, value: unknown): this {
    return this.raw(column, 'not.' + op + '.' + (value === null ? 'null' : String(value)));
  }
  /** PostgREST `or=(…)` text, e.g. `.or('rating.eq.5,published.is.false')`. */
  or(filters: string): this {
    return this.raw('or', '(' + filters + ')');
  }
  /** Any `column=operator.value` pair. */
  filter(column: string, operator: string, value: unknown): this {
    return this.raw(column, operator + '.' + String(value));
  }
  private raw(key: string, value: string): this {
    this.unstructured++;
    this.params.push([key, value]);
    return this;
  }

  order<K extends keyof Row & string>(column: K, options: { ascending?: boolean; nullsFirst?: boolean } = {}): this {
    this.orders.push({ column, ascending: options.ascending ?? true, nullsFirst: options.nullsFirst });
    return this;
  }
  limit(n: number): this {
    this.limitN = n;
    return this;
  }
  /** Rows `from` to `to`, inclusive, zero-based. */
  range(from: number, to: number): this {
    this.offsetN = from;
    this.limitN = to - from + 1;
    return this;
  }
  /** Exactly one row as an object; 0 or 2+ rows are `not-acceptable`. */
  single(): QueryBuilder<Row, Row, Ins, Upd> {
    this.singleMode = 'single';
    return this as unknown as QueryBuilder<Row, Row, Ins, Upd>;
  }
  /** One row as an object, or null when none matched. */
  maybeSingle(): QueryBuilder<Row, Row | null, Ins, Upd> {
    this.singleMode = 'maybe';
    return this as unknown as QueryBuilder<Row, Row | null, Ins, Upd>;
  }
  /** Send this `Idempotency-Key` (a retry with the same key is not applied twice). */
  idempotencyKey(key: string): this {
    this.idemKey = key;
    return this;
  }

  /** The request this builder stands for (method, path with query, headers, body). */
  toRequest(): WriteRequest & { method: Method } {
    const q: Array<[string, string]> = [];
    const headers: Record<string, string> = {};
    let method: Method = 'GET';
    const prefer: string[] = [];
    if (this.kind === 'select') {
      method = this.head ? 'HEAD' : 'GET';
      q.push(['select', this.columns]);
    } else {
      method = this.kind === 'update' ? 'PATCH' : this.kind === 'delete' ? 'DELETE' : 'POST';
      prefer.push('return=representation');
      if (this.columns !== '*') q.push(['select', this.columns]);
      if (this.kind === 'upsert') {
        prefer.push(this.ignoreDuplicates ? 'resolution=ignore-duplicates' : 'resolution=merge-duplicates');
        if (this.onConflict) q.push(['on_conflict', this.onConflict]);
      }
    }
    q.push(...this.params);
    if (this.orders.length) {
      q.push([
        'order',
        this.orders
          .map((o) => o.column + (o.ascending ? '.asc' : '.desc') + (o.nullsFirst === undefined ? '' : o.nullsFirst ? '.nullsfirst' : '.nullslast'))
          .join(','),
      ]);
    }
    if (this.limitN !== null) q.push(['limit', String(this.limitN)]);
    if (this.offsetN !== null) q.push(['offset', String(this.offsetN)]);
    if (this.countMode) prefer.push('count=' + this.countMode);
    if (prefer.length) headers['Prefer'] = prefer.join(',');
    if (this.singleMode) headers['Accept'] = 'application/vnd.pgrst.object+json';
    let body: string | undefined;
    if (this.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(this.body);
    }
    const query = encodeQuery(q);
    return {
      method,
      path: '/rest/v1/' + encodeURIComponent(this.table) + (query ? '?' + query : ''),
      headers,
      body,
      idempotencyKey: this.idemKey ?? undefined,
    };
  }

  then<A = QueryResult<Result>, B = never>(
    onfulfilled?: ((value: QueryResult<Result>) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.execute().then(onfulfilled, onrejected);
  }

  private async execute(): Promise<QueryResult<Result>> {
    const req = this.toRequest();
    const headers: Record<string, string> = { ...req.headers };
    const token = await this.ctx.accessToken();
    if (token) headers['Authorization'] = 'Bearer ' + token;
    if (req.idempotencyKey) headers['Idempotency-Key'] = req.idempotencyKey;
    const r = await httpRequest(this.ctx.fetch, this.ctx.baseUrl + req.path, { method: req.method, headers, body: req.body });
    const status = r.answer ? r.answer.status : 0;
    let count: number | null = null;
    const range = r.answer ? r.answer.headers.get('content-range') : null;
    if (range) {
      const total = range.split('/')[1];
      if (total && total !== '*') count = Number(total);
    }
    if (!r.ok) {
      if (this.singleMode === 'maybe' && r.error.code === 'not-acceptable' && r.answer) {
        // maybeSingle: no row is not an error; 2+ rows still are (the server cannot tell us which).
        const n = await this.countMatches();
        if (n === 0) return { data: null, error: null, count, status: 200 };
      }
      return { data: null, error: r.error, count, status };
    }
    let data = r.answer.body as Result;
    if (req.method === 'HEAD') data = null as unknown as Result;
    return { data, error: null, count, status };
  }

  private async countMatches(): Promise<number> {
    const clone = new QueryBuilder<Row>(this.ctx, this.table).select(this.columns);
    (clone as unknown as { params: Array<[string, string]> }).params.push(...this.params);
    clone.limit(2);
    const r = await clone;
    return Array.isArray(r.data) ? r.data.length : 0;
  }

  /** The filter as data, for live queries and optimistic writes; null when not expressible. */
  structuredFilter(): Filter | undefined | null {
    if (this.unstructured > 0) return null;
    return allOf(this.structured);
  }

  /**
   * Turn this select into a live query: the rows matching its filters, kept current over
   * the realtime socket, cached for offline use. Columns must be plain names (no embeds);
   * filters must be `eq, neq, gt, gte, lt, lte, in, is` or `where(...)`; `order` sorts locally.
   */
  live(options: LiveQueryOptions<Row> = {}): LiveQueryHandle<Row> {
    if (this.kind !== 'select') throw new RowcastErrorClass({ code: 'unsupported', message: 'live() works on a select', retryable: false });
    const filter = this.structuredFilter();
    if (filter === null) {
      throw new RowcastErrorClass({
        code: 'unsupported',
        message: 'live queries support the filters eq, neq, gt, gte, lt, lte, in, is and where(); not like/not/or strings',
        retryable: false,
      });
    }
    if (this.limitN !== null || this.offsetN !== null || this.singleMode) {
      throw new RowcastErrorClass({ code: 'unsupported', message: 'live queries do not support limit, range or single', retryable: false });
    }
    let columns: string[] | undefined;
    if (this.columns !== '*') {
      columns = this.columns.split(',');
      if (columns.some((c) => !/^[A-Za-z_][A-Za-z0-9_$]*$/.test(c))) {
        throw new RowcastErrorClass({ code: 'unsupported', message: 'live queries take plain column names (no embeds, aliases or casts)', retryable: false });
      }
    }
    const order = options.order ?? (this.orders.length ? this.orders : undefined);
    return this.ctx.live<Row>({ table: this.table, filter, columns }, { ...options, order });
  }

  /**
   * Put this write in the durable outbox instead of sending it now: it is applied to every
   * live query at once, sent (in order, with an idempotency key) when the server can be
   * reached, and rolled back and reported if the server rejects it.
   */
  enqueue(): PendingWrite {
    if (this.kind === 'select') throw new RowcastErrorClass({ code: 'unsupported', message: 'enqueue() works on insert, upsert, update and delete', retryable: false });
    if (this.singleMode) throw new RowcastErrorClass({ code: 'unsupported', message: 'enqueue() does not support single()', retryable: false });
    const req = this.toRequest();
    req.idempotencyKey = this.idemKey ?? this.ctx.newId();
    const filter = this.structuredFilter();
    const optimistic: OptimisticWrite = {
      table: this.table,
      kind: this.kind,
      rows: this.kind === 'insert' || this.kind === 'upsert' ? ((Array.isArray(this.body) ? this.body : [this.body]) as Array<Record<string, unknown>>) : undefined,
      patch: this.kind === 'update' ? (this.body as Record<string, unknown>) : undefined,
      filter: filter === null ? undefined : filter,
      applicable: filter !== null || this.kind === 'insert' || this.kind === 'upsert',
    };
    return this.ctx.enqueue(req, optimistic);
  }
}
