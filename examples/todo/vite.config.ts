// Builds the page, and serves it (`vite preview`, or `vite` while editing) on the same origin
// as the API: /rest, /auth and /realtime are proxied to the Rowcast server, so the page
// needs no CORS and finds the API at its own origin.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// @rowcast/client is compiled from its TypeScript sources (its public entry points:
// `@rowcast/client`, `@rowcast/client/react`, `@rowcast/client/storage/*`), so the page
// needs no separate SDK build; tsconfig.json maps the same paths for type checking.
const sdk = fileURLToPath(new URL('../../client-sdk-ts/src/', import.meta.url));

const api = process.env.ROWCAST_API ?? 'http://127.0.0.1:8080';
const proxy = {
  '/rest': { target: api },
  '/auth': { target: api },
  '/realtime': { target: api, ws: true },
};

export default defineConfig({
  // Two copies of React (the SDK's own dev copy and ours, through the file: link) would
  // break hooks; always use the app's.
  resolve: {
    alias: [
      { find: /^@rowcast\/client$/, replacement: `${sdk}index.ts` },
      { find: /^@rowcast\/client\/(.+)$/, replacement: `${sdk}$1.ts` },
    ],
    dedupe: ['react', 'react-dom'],
  },
  server: { host: '127.0.0.1', port: 5173, proxy },
  preview: { host: '127.0.0.1', port: 5173, strictPort: true, proxy },
  build: { outDir: 'dist', emptyOutDir: true },
});
