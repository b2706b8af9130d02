// Starts a real `rowcast dev` (embedded Postgres in a temp data dir, free loopback port) with
// the app schema the SDK tests use, and can kill and restart it on the same data.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = resolve(__dirname, '../../..');
export const BIN = process.env.ROWCAST_BIN ?? join(ROOT, 'target/debug/rowcast');

const SCHEMA = `
create table public.todos (
  id text primary key,
  owner_id uuid not null default rowcast.uid() references rowcast.users (id) on delete cascade,
  title text not null check (length(title) > 0),
  done boolean not null default false,
  prio int not null default 0
);
alter table public.todos enable row level security;
create policy todos_owner on public.todos using (owner_id = rowcast.uid()) with check (owner_id = rowcast.uid());
grant select, insert, update, delete on public.todos to rowcast_authenticated;
select rowcast.enable_sync('public.todos');

create table public.events (
  id bigint generated always as identity primary key,
  owner_id uuid not null default rowcast.uid() references rowcast.users (id) on delete cascade,
  body text not null
);
alter table public.events enable row level security;
create policy events_owner on public.events using (owner_id = rowcast.uid()) with check (owner_id = rowcast.uid());
grant select, insert, update, delete on public.events to rowcast_authenticated;
select rowcast.enable_sync('public.events');

create table public.projects (id bigint primary key, name text not null);
create table public.tasks (
  id bigint primary key,
  project_id bigint not null references public.projects (id),
  title text not null, rating int
);
grant select, insert, update, delete on public.projects, public.tasks to rowcast_anon, rowcast_authenticated;
select rowcast.enable_sync('public.tasks');
`;

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

export class TestServer {
  readonly dir = mkdtempSync(join(tmpdir(), 'rowcast-sdk-'));
  port = 0;
  private proc: ChildProcess | null = null;
  private log = '';

  /** `env`: extra server settings for this file's server (e.g. a short token lifetime). */
  constructor(private readonly extraEnv: Record<string, string> = {}) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run \`cargo build --bin rowcast\` (make sdk-test does)`);
    if (!this.port) {
      this.port = await freePort();
      mkdirSync(join(this.dir, 'migrations'), { recursive: true });
      writeFileSync(join(this.dir, 'migrations', '0001_sdk.sql'), SCHEMA);
    }
    const env = {
      ...process.env,
      ROWCAST_LISTEN: `127.0.0.1:${this.port}`,
      ROWCAST_DATA_DIR: join(this.dir, 'data'),
      ROWCAST_APP_MIGRATIONS: join(this.dir, 'migrations'),
      ROWCAST_LOG: 'warn',
      ROWCAST_ARGON2_MEMORY_KIB: '64',
      ROWCAST_ARGON2_ITERATIONS: '1',
      ROWCAST_SIGNIN_FAILURES_PER_ADDRESS: '10000',
      // Every test user signs up from 127.0.0.1; the per-address sign-up limits would bite.
      ROWCAST_AUTH_SIGNUPS_PER_ADDRESS: '10000',
      ROWCAST_AUTH_ANONYMOUS_PER_ADDRESS: '10000',
      ROWCAST_POLL_INTERVAL: '20ms',
      ROWCAST_SHUTDOWN_TIMEOUT: '2s',
      ...this.extraEnv,
    };
    delete (env as Record<string, string | undefined>).DATABASE_URL;
    const proc = spawn(BIN, ['dev'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    proc.stderr?.on('data', (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-20000);
    });
    const deadline = Date.now() + 90000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`rowcast dev exited (${proc.exitCode}):\n${this.log}`);
      try {
        const r = await fetch(this.url + '/ready');
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`rowcast dev not ready in 90 s:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** SIGKILL: no drain, sockets just drop (the embedded Postgres keeps running until restart). */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    this.proc = null;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    this.proc = null;
    // A cluster orphaned by kill() is stopped by the next start(); after the last test, stop it here.
    const pg = join(this.dir, 'data', 'pg');
    if (existsSync(join(pg, 'postmaster.pid'))) {
      await run('bash', ['-c', `pg_ctl=$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | tail -1); "\${pg_ctl:-pg_ctl}" -D "${pg}" stop -m immediate`]).catch(() => undefined);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Run SQL as the database owner (bypasses row-level security), through psql. */
  async sql(query: string): Promise<string> {
    const pid = readFileSync(join(this.dir, 'data', 'pg', 'postmaster.pid'), 'utf8').split('\n');
    const pgPort = pid[3]!.trim();
    const { stdout } = await run('psql', ['-h', '127.0.0.1', '-p', pgPort, '-U', 'rowcast', '-d', 'rowcast', '-At', '-v', 'ON_ERROR_STOP=1', '-c', query]);
    return stdout.trim();
  }
}

/** Wait until `check` returns a truthy value (polls; fails after `ms`). */
export async function until<T>(check: () => T | Promise<T>, what: string, ms = 20000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 25));
  }
}
