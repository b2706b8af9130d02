// Builds the page, and serves it (`vite preview`, or `vite` while editing) on the same origin
// as the API: /rest, /auth and /realtime are proxied to the Rowcast server, so the page
// needs no CORS and finds the API at its own origin.
import { defineConfig } from 'vite';

const api = process.env.ROWCAST_API ?? 'http://127.0.0.1:8080';
const proxy = {
  '/rest': { target: api },
  '/auth': { target: api },
  '/realtime': { target: api, ws: true },
};

export default defineConfig({
  // Two copies of React (the SDK's own dev copy and ours, through the file: link) would
  // break hooks; always use the app's.
  resolve: { dedupe: ['react', 'react-dom'] },
  server: { host: '127.0.0.1', port: 5173, proxy },
  preview: { host: '127.0.0.1', port: 5173, strictPort: true, proxy },
  build: { outDir: 'dist', emptyOutDir: true },
});
