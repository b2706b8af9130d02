/**
 * Filters in the REST operators that live queries and offline writes understand
 * (`eq, neq, gt, gte, lt, lte, in, is`, combined with `and` / `or`): their wire form (the
 * realtime protocol's JSON), their REST query-string form, and evaluation on a row in memory
 * with the server's semantics (SQL nulls, code-point text order, timestamps as instants).
 */

export type FilterOp = 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte' | 'in' | 'is';

export interface Condition {
  column: string;
  op: FilterOp;
  value: unknown;
}

export type Filter = Condition | { and: Filter[] } | { or: Filter[] };

export const FILTER_OPS: readonly FilterOp[] = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in', 'is'];

function isCondition(f: Filter): f is Condition {
  return (f as Condition).column !== undefined;
}

/** AND the filters together (undefined when there are none). */
export function allOf(filters: Filter[]): Filter | undefined {
  if (filters.length === 0) return undefined;
  if (filters.length === 1) return filters[0];
  return { and: filters };
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$/;

/** Order two non-null JSON values as the server does; null when they do not compare. */
function compare(a: unknown, b: unknown): number | null {
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'string' && typeof b === 'number') return compare(Number(a), b);
  if (typeof a === 'number' && typeof b === 'string') return compare(a, Number(b));
  if (typeof a === 'string' && typeof b === 'string') {
    if (ISO_DATE.test(a) && ISO_DATE.test(b) && /[T ]/.test(a) === /[T ]/.test(b)) {
      const x = Date.parse(a.replace(' ', 'T'));
      const y = Date.parse(b.replace(' ', 'T'));
      if (!isNaN(x) && !isNaN(y)) return x < y ? -1 : x > y ? 1 : 0;
    }
    return a < b ? -1 : a > b ? 1 : 0; // UTF-16 order; equal to code points outside surrogates
  }
  if (typeof a === 'boolean' && typeof b === 'boolean') return a === b ? 0 : a ? 1 : -1;
  return JSON.stringify(a) === JSON.stringify(b) ? 0 : null;
}

function conditionMatches(c: Condition, row: Record<string, unknown>): boolean {
  const v = row[c.column];
  if (c.op === 'is') {
    if (c.value === null) return v === null || v === undefined;
    if (c.value === 'not_null') return v !== null && v !== undefined;
    return v === c.value;
  }
  if (v === null || v === undefined) return false;
  if (c.op === 'in') {
    const list = Array.isArray(c.value) ? c.value : [];
    return list.some((x) => x !== null && compare(v, x) === 0);
  }
  if (c.value === null) return false;
  const r = compare(v, c.value);
  if (r === null) return c.op === 'neq';
  switch (c.op) {
    case 'eq':
      return r === 0;
    case 'neq':
      return r !== 0;
    case 'gt':
      return r > 0;
    case 'gte':
      return r >= 0;
    case 'lt':
      return r < 0;
    case 'lte':
      return r <= 0;
  }
  return false;
}

/** Does `row` satisfy `filter`? (No filter matches every row.) */
export function matches(filter: Filter | undefined, row: Record<string, unknown>): boolean {
  if (!filter) return true;
  if (isCondition(filter)) return conditionMatches(filter, row);
  if ('and' in filter) return filter.and.every((f) => matches(f, row));
  return filter.or.some((f) => matches(f, row));
}

/** A value in PostgREST's grammar; inside lists and logic groups, quoted when it holds `,()"\\` or spaces. */
function restValue(v: unknown, grouped: boolean): string {
  if (v === null) return 'null';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  if (grouped && /[,()"\\\s]/.test(s)) return '"' + s.replace(/["\\]/g, (c) => '\\' + c) + '"';
  return s;
}

/** `op.value` for one condition (`in.(a,b)`, `is.null`, `eq.5`). */
export function conditionToRest(c: Condition, grouped = false): string {
  if (c.op === 'in') {
    const list = Array.isArray(c.value) ? c.value : [c.value];
    return 'in.(' + list.map((x) => restValue(x, true)).join(',') + ')';
  }
  if (c.op === 'is') return 'is.' + (c.value === null ? 'null' : String(c.value));
  return c.op + '.' + restValue(c.value, grouped);
}

/** The inside of an `or=(…)` / `and(…)` group. */
function treeToRest(f: Filter): string {
  if (isCondition(f)) return f.column + '.' + conditionToRest(f, true);
  if ('and' in f) return 'and(' + f.and.map(treeToRest).join(',') + ')';
  return 'or(' + f.or.map(treeToRest).join(',') + ')';
}

/** Query-string pairs (unencoded) for a filter tree, ANDed at the top level. */
export function filterToRestParams(f: Filter): Array<[string, string]> {
  if (isCondition(f)) return [[f.column, conditionToRest(f)]];
  if ('and' in f) return f.and.flatMap(filterToRestParams);
  return [['or', '(' + f.or.map(treeToRest).join(',') + ')']];
}

/** Throw unless `f` is a filter the realtime protocol accepts. */
export function validateFilter(f: Filter): void {
  if (isCondition(f)) {
    if (!FILTER_OPS.includes(f.op)) throw new Error(`live queries support ${FILTER_OPS.join(', ')}; not ${String(f.op)}`);
    return;
  }
  const list = 'and' in f ? f.and : f.or;
  if (!Array.isArray(list)) throw new Error('a filter group needs an array');
  list.forEach(validateFilter);
}
