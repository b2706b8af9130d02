// `rowcast gen types` against the e2e schema: its output is what `createClient<Database>`
// reads, so columns are checked at compile time (tsc runs on a usage file with
// `@ts-expect-error` lines that must stay errors). Also, on this file's server whose tokens
// live 4 s: refreshed tokens reach the live socket as `auth`, without resubscribing.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { recordingSockets, signedIn } from './helpers.js';
import { BIN, TestServer, until } from './server.js';

const run = promisify(execFile);
const server = new TestServer({ ROWCAST_JWT_EXPIRY: '4s' });
beforeAll(() => server.start());
afterAll(() => server.stop());

const USAGE = `
import { createClient } from '../../src/index.js';
import type { Database } from './database.js';

const c = createClient<Database>('http://127.0.0.1:1');
export async function usage(): Promise<void> {
  const { data } = await c.from('todos').select('id,title').eq('done', false).gte('prio', 2);
  const titles: string[] | undefined = data?.map((r) => r.title);
  const live = c.from('todos').eq('done', false).live();
  const first: boolean | undefined = live.current().rows[0]?.done;
  const ev = await c.from('events').select().eq('id', 3);
  const id: number | undefined = ev.data?.[0]?.id;
  // @ts-expect-error no such column
  c.from('todos').eq('nope', 1);
  // @ts-expect-error done is a boolean
  c.from('todos').eq('done', 'yes');
  // @ts-expect-error prio is a number
  const wrong: string | undefined = live.current().rows[0]?.prio;
  c.from('todos').insert({ id: 'a', title: 'b' }).enqueue();
  // @ts-expect-error title is required on insert
  c.from('todos').insert({ id: 'a' });
  // @ts-expect-error the identity id is generated always
  c.from('events').insert({ id: 5, body: 'x' });
  c.from('todos').update({ done: true }).eq('id', 'a');
  void titles; void first; void id; void wrong;
}
`;

it('writes row types the client generics use', async () => {
  const pid = readFileSync(join(server.dir, 'data', 'pg', 'postmaster.pid'), 'utf8').split('\n');
  const url = `postgres://rowcast@127.0.0.1:${pid[3]!.trim()}/rowcast`;
  const dir = resolve(__dirname, '../../build/gen');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, 'database.ts');
  await run(BIN, ['gen', 'types', '--database-url', url, '--out', out]);
  const ts = readFileSync(out, 'utf8');
  expect(ts).toContain('export interface Database');
  expect(ts).toMatch(/todos: \{\n\s+Row: \{\n\s+id: string;\n\s+owner_id: string;\n\s+title: string;\n\s+done: boolean;\n\s+prio: number;\n\s+_v: number \| null;/);
  writeFileSync(join(dir, 'usage.ts'), USAGE);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ extends: '../../tsconfig.json', compilerOptions: { noEmit: true, noUnusedLocals: false }, include: ['usage.ts', 'database.ts'] }),
  );
  const tsc = resolve(__dirname, '../../node_modules/.bin/tsc');
  const r = await run(tsc, ['-p', join(dir, 'tsconfig.json')]).then(
    () => ({ ok: true, out: '' }),
    (e: { stdout?: string }) => ({ ok: false, out: String(e.stdout) }),
  );
  expect(r.out).toBe('');
  expect(r.ok).toBe(true);
});

it('keeps a live query running across token refreshes, pushing each token as `auth`', async () => {
  const rec = recordingSockets();
  const { c } = await signedIn(server.url, 'short', { webSocketFactory: rec.factory });
  const q = c.from('todos').select('id,title').live();
  await q.ready();
  const first = c.auth.currentSession()!.access_token;
  // three refreshes: the first token has long expired on the server by then
  await until(() => rec.ofType('auth').length >= 3, 'three tokens pushed', 30000);
  expect(new Set(rec.ofType('auth').map((m) => m.token)).size).toBeGreaterThanOrEqual(3);
  expect(rec.ofType('auth').map((m) => m.token)).not.toContain(first);
  expect((await c.from('todos').insert({ id: 'late', title: 'after refreshes' })).error).toBeNull();
  await until(() => q.current().rows.some((r) => r.id === 'late'), 'the row, live');
  expect(rec.ofType('subscribe')).toHaveLength(1);
  expect(rec.ofType('hello')).toHaveLength(1);
  await c.close();
});
