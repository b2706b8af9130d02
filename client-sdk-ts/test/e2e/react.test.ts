// The React bindings in a real React renderer (react-test-renderer), against a real server:
// the provider, useLiveQuery re-rendering on changes, useSession and useConnectionState.
import { createElement as h } from 'react';
import { act, create, type ReactTestRenderer } from 'react-test-renderer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RowcastProvider, useConnectionState, useLiveQuery, useSession } from '../../src/react.js';
import { client, uniqueEmail } from './helpers.js';
import { TestServer, until } from './server.js';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const server = new TestServer();
beforeAll(() => server.start());
afterAll(() => server.stop());

function TodoList() {
  const session = useSession();
  const state = useConnectionState();
  const { rows, status } = useLiveQuery((c) => (session ? c.from('todos').select('id,title').eq('done', false) : null), [session?.user.id]);
  return h('div', null, [
    h('span', { key: 's' }, session ? 'signed-in' : 'signed-out'),
    h('span', { key: 'c' }, state),
    h('span', { key: 'q' }, status),
    ...rows.map((r) => h('li', { key: String(r.id) }, String(r.title))),
  ]);
}

const text = (r: ReactTestRenderer) => JSON.stringify(r.toJSON());

describe('react bindings', () => {
  it('render a live list that follows the database', async () => {
    const c = client(server.url);
    let r!: ReactTestRenderer;
    await act(async () => {
      r = create(h(RowcastProvider, { client: c }, h(TodoList)));
    });
    expect(text(r)).toContain('signed-out');
    await act(async () => {
      await c.auth.signUp({ email: uniqueEmail('react'), password: 'correct horse battery' });
    });
    await until(async () => {
      await act(async () => undefined);
      return text(r).includes('"live"');
    }, 'the live status');
    expect(text(r)).toContain('signed-in');
    await act(async () => {
      await c.from('todos').insert([{ id: 'x1', title: 'milk' }, { id: 'x2', title: 'eggs' }]);
    });
    await until(async () => {
      await act(async () => undefined);
      return text(r).includes('milk') && text(r).includes('eggs');
    }, 'rows rendered');
    await act(async () => {
      await c.from('todos').update({ done: true }).eq('id', 'x1');
    });
    await until(async () => {
      await act(async () => undefined);
      return !text(r).includes('milk');
    }, 'the done row to leave the list');
    expect(text(r)).toContain('eggs');
    await act(async () => {
      r.unmount();
    });
    // unmounting ends the live query, so the socket has no demand left
    await until(() => c.connectionState() === 'idle', 'the socket to go idle');
    await c.close();
  });
});
