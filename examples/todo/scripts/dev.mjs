// `make dev`: the Rowcast server with its embedded Postgres and the example's migrations,
// and the built page on the same origin (vite preview, proxying the API). Ctrl-C stops both.
//
// Settings (all optional): ROWCAST_BIN (the server binary), ROWCAST_DATA_DIR (default
// .rowcast at the repository root), ROWCAST_LISTEN (default 127.0.0.1:8080), TODO_PORT
// (the page, default 5173).
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, preview } from 'vite';

const app = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(app, '../..');
const bin = process.env.ROWCAST_BIN ?? join(repo, 'target/debug/rowcast');
const listen = process.env.ROWCAST_LISTEN ?? '127.0.0.1:8080';
const api = `http://${listen.replace('0.0.0.0', '127.0.0.1')}`;
const pagePort = Number(process.env.TODO_PORT ?? 5173);
process.env.ROWCAST_API = api;

await build({ root: app, logLevel: 'warn' });

const server = spawn(bin, ['dev'], {
  stdio: 'inherit',
  env: {
    ...process.env,
    ROWCAST_LISTEN: listen,
    ROWCAST_DATA_DIR: process.env.ROWCAST_DATA_DIR ?? join(repo, '.rowcast'),
    ROWCAST_APP_MIGRATIONS: join(app, 'migrations'),
  },
});
let stopping = false;
server.on('exit', (code, signal) => {
  if (!stopping) console.error(`rowcast exited (${signal ?? code}); stopping`);
  process.exit(code ?? 0);
});

// /health answers as soon as the server listens; /ready only once migrations and the schema
// cache are done, and the server logs each 503 it gives. So wait on /health, then /ready.
async function poll(path, ms) {
  for (;;) {
    try {
      if ((await fetch(`${api}${path}`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, ms));
  }
}
async function ready() {
  await poll('/health', 250);
  await poll('/ready', 500);
}
await ready();

const page = await preview({ root: app, preview: { port: pagePort, strictPort: true }, logLevel: 'warn' });
const url = `http://127.0.0.1:${pagePort}/`;
console.log(`\n  Todo example: open ${url} in two windows (e.g. one private), sign up as two users`);
console.log(`  and share a list. API: ${api}  ·  psql: make psql  ·  Ctrl-C stops everything.\n`);

function stop() {
  if (stopping) return;
  stopping = true;
  void page.close();
  server.kill('SIGTERM');
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
