// The page's service worker: keeps the app shell (the HTML and the built assets) so the page
// opens without a network. Data never goes through here: the SDK caches it (localStorage)
// and the API paths below are left to the network. Network first, so a rebuilt page is seen
// at once while online.
const CACHE = 'rowcast-todo-shell-v1';
const API = ['/rest/', '/auth/', '/realtime/'];

// The shell is cached at install: the page and the assets it names (Vite's hashed files).
self.addEventListener('install', (event) =>
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      const html = await (await fetch('/', { cache: 'no-store' })).text();
      const assets = Array.from(html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g), (m) => m[1]);
      await cache.addAll(['/', ...assets]);
      await self.skipWaiting();
    })(),
  ),
);
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (API.some((prefix) => url.pathname.startsWith(prefix))) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(request, response.clone());
        return response;
      } catch (offline) {
        // ignoreVary: the preview server answers with `Vary: Origin`, and module scripts send an Origin.
        const cached =
          (await cache.match(request, { ignoreVary: true })) ??
          (request.mode === 'navigate' ? await cache.match('/', { ignoreVary: true }) : undefined);
        if (cached) return cached;
        throw offline;
      }
    })(),
  );
});
