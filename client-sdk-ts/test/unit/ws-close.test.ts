// Closing the client while the `ws` socket is still connecting must not raise an uncaught
// error (ws emits `error` for an aborted handshake; vitest fails the run on uncaught errors).
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import WebSocket from 'ws';
import { expect, it } from 'vitest';
import { createClient, type ClientOptions } from '../../src/index.js';

it('closing while the handshake is pending is quiet', async () => {
  // Accepts TCP and never answers the HTTP upgrade: the socket stays CONNECTING.
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const c = createClient(`http://127.0.0.1:${port}`, {
    WebSocket: WebSocket as unknown as ClientOptions['WebSocket'],
    fetch: () => Promise.reject(new Error('no http here')),
  });
  c.live({ table: 'todos' });
  const [peer] = (await once(srv, 'connection')) as [Socket];
  expect(c.connectionState()).toBe('connecting');
  const aborted = once(peer, 'close');
  await c.close();
  expect(c.connectionState()).toBe('closed');
  await aborted; // the client aborted the handshake; ws has emitted its error by now
  await new Promise((r) => setImmediate(r));
  srv.close();
});
