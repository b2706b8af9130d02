// The web entry point: one Rowcast client for the page, stored in IndexedDB, on the page's
// own origin (the dev server proxies the API there), and the app's screens.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { createClient } from '@rowcast/client';
import { RowcastProvider } from '@rowcast/client/react';
import type { Database } from './data';
import { App } from './web/App';
import { indexedDbStorage } from './web/indexeddb-storage';
import './styles.css';

const client = createClient<Database>(window.location.origin, {
  storage: indexedDbStorage('rowcast-todo'),
  // The page's visibility is the browser's foreground/background.
  appState: {
    current: () => (document.visibilityState === 'hidden' ? 'background' : 'active'),
    subscribe(listener) {
      const onChange = () => listener(document.visibilityState === 'hidden' ? 'background' : 'active');
      document.addEventListener('visibilitychange', onChange);
      return () => document.removeEventListener('visibilitychange', onChange);
    },
  },
});
// The browser knows when the network comes and goes: reconnect at once rather than at the
// next backoff step, or, going offline, rather than when the heartbeat notices (an open
// WebSocket can outlive the network, e.g. under the browser's offline emulation).
window.addEventListener('online', () => client.reconnect());
window.addEventListener('offline', () => client.reconnect());

if ('serviceWorker' in navigator) void navigator.serviceWorker.register('/sw.js');

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <RowcastProvider client={client}>
      <App />
    </RowcastProvider>
  </StrictMode>,
);
