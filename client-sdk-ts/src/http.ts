/**
 * One HTTP round trip with the SDK's conventions: JSON bodies, the bearer token, server
 * errors turned into `RowcastError`, network failures into `network-error`. Query strings
 * are built by hand (React Native's `URLSearchParams` is incomplete).
 */
import { errorFromBody, networkError, RowcastError } from './errors.js';
import type { FetchLike } from './runtime.js';

export interface HttpAnswer {
  status: number;
  headers: { get(name: string): string | null };
  /** The parsed JSON body, or null when empty. */
  body: unknown;
}

/** `a=1&b=x%20y` from unencoded pairs. */
export function encodeQuery(pairs: ReadonlyArray<readonly [string, string]>): string {
  return pairs.map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v)).join('&');
}

export async function httpRequest(
  fetchImpl: FetchLike,
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
): Promise<{ ok: true; answer: HttpAnswer } | { ok: false; error: RowcastError; answer?: HttpAnswer }> {
  let res;
  try {
    res = await fetchImpl(url, init);
  } catch (e) {
    return { ok: false, error: networkError(e) };
  }
  let text: string;
  try {
    text = await res.text();
  } catch (e) {
    return { ok: false, error: networkError(e) };
  }
  let body: unknown = null;
  if (text !== '') {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  const answer: HttpAnswer = { status: res.status, headers: res.headers, body };
  if (res.status >= 200 && res.status < 300) return { ok: true, answer };
  const ra = res.headers.get('retry-after');
  const retryAfter = ra !== null && /^\d+$/.test(ra) ? Number(ra) : undefined;
  return { ok: false, error: errorFromBody(body, res.status, retryAfter), answer };
}
