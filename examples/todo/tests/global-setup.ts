// Starts what the tests run against: `rowcast dev` with a temporary data dir (its own
// embedded Postgres), a free port and the example's migrations, and the built page served
// by vite preview on another free port with the API proxied. Tests find them through the
// environment (see tests/support.ts). Returns the teardown.
import { spawn } from 'node:child_process';
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { preview } from 'vite';

const app = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(app, '../..');

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}

async function waitReady(url: string, server: { exitCode: number | null }, log: string) {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`rowcast exited with ${server.exitCode}; log in ${log}`);
    try {
      if ((await fetch(`${url}/ready`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`rowcast did not become ready in 120 s; log in ${log}`);
}

export default async function globalSetup() {
  const bin = process.env.ROWCAST_BIN ?? join(repo, 'target/debug/rowcast');
  if (!existsSync(bin)) throw new Error(`no server binary at ${bin}: run \`cargo build --bin rowcast\` first`);
  if (!existsSync(join(app, 'dist/index.html'))) throw new Error('the page is not built: run `npm run build` first');

  const dataDir = mkdtempSync(join(tmpdir(), 'rowcast-todo-e2e-'));
  // Run as root, the embedded cluster runs as `postgres`, which must reach DATA_DIR/pg.
  chmodSync(dataDir, 0o755);
  const apiPort = await freePort();
  const api = `http://127.0.0.1:${apiPort}`;
  // The server's log and the tests' screenshots are kept in artifacts/ (gitignored).
  mkdirSync(join(app, 'artifacts'), { recursive: true });
  const logPath = join(app, 'artifacts', 'rowcast.log');
  const log = createWriteStream(logPath, { flags: 'w' });
  await new Promise((r) => log.once('open', r));
  const server = spawn(bin, ['dev'], {
    stdio: ['ignore', log, log],
    env: {
      ...process.env,
      ROWCAST_DATA_DIR: dataDir,
      ROWCAST_LISTEN: `127.0.0.1:${apiPort}`,
      ROWCAST_APP_MIGRATIONS: join(app, 'migrations'),
      ROWCAST_LOG_FORMAT: 'pretty',
      ROWCAST_LOG: process.env.ROWCAST_LOG ?? 'info',
      // Every test user signs up from 127.0.0.1: lift the per-address sign-up limits of
      // servers that have them (a server without these settings ignores the variables).
      ROWCAST_AUTH_SIGNUPS_PER_ADDRESS: '10000',
      ROWCAST_AUTH_ANONYMOUS_PER_ADDRESS: '10000',
    },
  });
  await waitReady(api, server, logPath);
  const pgPort = readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[3]!.trim();

  process.env.ROWCAST_API = api;
  const pagePort = await freePort();
  const page = await preview({ root: app, preview: { port: pagePort, strictPort: true }, logLevel: 'warn' });

  process.env.TODO_URL = `http://127.0.0.1:${pagePort}/`;
  process.env.TODO_API = api;
  process.env.TODO_PG_PORT = pgPort;

  return async () => {
    // The server's counters at the end of the run, e.g. which realtime path decided who
    // receives each change (rowcast_realtime_*_evaluations_total, where the server has them).
    try {
      writeFileSync(join(app, 'artifacts', 'metrics.txt'), await (await fetch(`${api}/metrics`)).text());
    } catch {
      // best effort: the run's result does not depend on it
    }
    await page.close();
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await exited;
    log.end();
    rmSync(dataDir, { recursive: true, force: true });
  };
}
