// What the browser tests share: the servers global-setup started, users in their own
// browser contexts with a network switch, and SQL on the test's database.
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as base, expect, type Browser, type BrowserContext, type Page, type WebSocketRoute } from '@playwright/test';

export const appUrl = () => required('TODO_URL');
export const apiUrl = () => required('TODO_API');
export const artifacts = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'artifacts');
export const password = 'correct horse battery';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npx playwright test\` (global setup)`);
  return value;
}

let counter = 0;
/** An email no other test (or earlier run against the same server) uses. */
export function uniqueEmail(name: string): string {
  counter += 1;
  return `${name}-${Date.now().toString(36)}-${counter}@example.com`;
}

/** Runs SQL as the database's owner (like an admin in psql) and returns psql's unaligned output. */
export function sql(query: string): string {
  return execFileSync(
    'psql',
    ['-h', '127.0.0.1', '-p', required('TODO_PG_PORT'), '-U', 'rowcast', '-d', 'rowcast', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-c', query],
    { encoding: 'utf8' },
  ).trim();
}

/**
 * A person using the app in their own browser context. `offline()` is Playwright's offline
 * mode for HTTP plus cutting the realtime WebSocket (Chromium's offline emulation leaves
 * open WebSockets alone, microsoft/playwright#4910): the socket is routed through the test,
 * which drops it and refuses new ones until `online()`.
 */
export class User {
  private sockets = new Set<WebSocketRoute>();
  /** Whether `offline()` is in effect (a test's own `context.route` handler must honour it). */
  isOffline = false;

  private constructor(
    readonly context: BrowserContext,
    readonly page: Page,
    readonly email: string,
  ) {}

  /**
   * `serviceWorker`: let the page's service worker run (it serves the page offline). Off by
   * default, because requests that pass through a service worker escape Playwright's
   * offline mode (microsoft/playwright#2311): writes would reach the server while "offline".
   */
  static async open(browser: Browser, name: string, options: { serviceWorker?: boolean } = {}): Promise<User> {
    const context = await browser.newContext({
      viewport: { width: 1000, height: 720 },
      serviceWorkers: options.serviceWorker ? 'allow' : 'block',
    });
    const page = await context.newPage();
    const user = new User(context, page, uniqueEmail(name));
    await context.routeWebSocket(/\/realtime\//, (ws) => user.route(ws));
    return user;
  }

  private route(ws: WebSocketRoute) {
    if (this.isOffline) {
      void ws.close({ code: 1006, reason: 'offline' }).catch(() => undefined);
      return;
    }
    ws.connectToServer();
    this.sockets.add(ws);
    ws.onClose(() => this.sockets.delete(ws));
  }

  async offline() {
    this.isOffline = true;
    await this.context.setOffline(true);
    for (const ws of this.sockets) await ws.close({ code: 1006, reason: 'offline' }).catch(() => undefined);
    this.sockets.clear();
  }

  async online() {
    this.isOffline = false;
    await this.context.setOffline(false);
  }

  async signUp() {
    await this.page.goto(appUrl());
    await this.page.getByTestId('email').fill(this.email);
    await this.page.getByTestId('password').fill(password);
    await this.page.getByTestId('sign-up').click();
    await expect(this.page.getByTestId('me')).toHaveText(this.email);
    await this.expectLive();
  }

  async expectLive() {
    await expect(this.page.getByTestId('connection')).toHaveAttribute('data-state', 'live');
  }

  async createList(name: string): Promise<string> {
    await this.page.getByTestId('new-list').fill(name);
    await this.page.getByTestId('create-list').click();
    const item = this.listItem(name);
    await expect(item).toBeVisible();
    await item.click();
    await expect(this.page.getByTestId('list-title')).toHaveText(name);
    return (await item.getAttribute('data-list-id'))!;
  }

  listItem(name: string) {
    return this.page.getByTestId('list-item').filter({ hasText: name });
  }

  async openList(name: string) {
    await this.listItem(name).click();
    await expect(this.page.getByTestId('list-title')).toHaveText(name);
  }

  async share(email: string) {
    await this.page.getByTestId('share-email').fill(email);
    await this.page.getByTestId('share').click();
    await expect(this.page.getByTestId('member').filter({ hasText: email })).toBeVisible();
  }

  async addTodo(title: string) {
    await this.page.getByTestId('new-todo').fill(title);
    await this.page.getByTestId('add-todo').click();
    await expect(this.todo(title)).toBeVisible();
  }

  todo(title: string) {
    return this.page.getByTestId('todo').filter({ has: this.page.getByTestId('todo-title').getByText(title, { exact: true }) });
  }

  async expectSynced() {
    await expect(this.page.getByTestId('pending')).toHaveAttribute('data-count', '0');
  }

  async close() {
    await this.context.close();
  }
}

export const test = base;
export { expect };
