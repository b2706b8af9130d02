// The schema's row-level security through the REST API (no browser): who may see, share,
// assign and comment. The browser tests build on these rules.
import { expect, test, type APIRequestContext } from '@playwright/test';
import { apiUrl, password, uniqueEmail } from './support';

interface Session {
  token: string;
  id: string;
  email: string;
}

async function signUp(request: APIRequestContext, name: string): Promise<Session> {
  const email = uniqueEmail(name);
  const response = await request.post(`${apiUrl()}/auth/v1/signup`, { data: { email, password } });
  expect(response.status()).toBe(200);
  const body = await response.json();
  return { token: body.access_token, id: body.user.id, email };
}

function as(request: APIRequestContext, who: Session) {
  const headers = { Authorization: `Bearer ${who.token}`, Prefer: 'return=representation' };
  const url = (path: string) => `${apiUrl()}/rest/v1/${path}`;
  return {
    get: (path: string) => request.get(url(path), { headers }),
    post: (path: string, data: unknown) => request.post(url(path), { headers, data }),
    patch: (path: string, data: unknown) => request.patch(url(path), { headers, data }),
    delete: (path: string) => request.delete(url(path), { headers }),
    rows: async (path: string) => {
      const response = await request.get(url(path), { headers });
      expect(response.status()).toBe(200);
      return (await response.json()) as Record<string, unknown>[];
    },
  };
}

test('lists, todos and comments are visible to members only; only the owner shares', async ({ request }) => {
  const [alice, bob, carol] = [await signUp(request, 'alice'), await signUp(request, 'bob'), await signUp(request, 'carol')];
  const a = as(request, alice);
  const b = as(request, bob);
  const c = as(request, carol);

  const created = await a.post('lists', { name: 'Groceries' });
  expect(created.status()).toBe(201);
  const list = (await created.json())[0];
  expect(list.owner_id).toBe(alice.id);
  // The owner is its first member.
  expect((await a.rows(`list_members?list_id=eq.${list.id}`)).map((m) => m.user_id)).toEqual([alice.id]);
  expect(await b.rows('lists')).toEqual([]);

  // Only the owner shares; by email, matched without regard to case; an unknown email is an error.
  expect((await b.post('rpc/share_list', { list_id: list.id, email: carol.email })).status()).toBe(403);
  const unknown = await a.post('rpc/share_list', { list_id: list.id, email: 'nobody@example.com' });
  expect(unknown.status()).toBe(400);
  expect((await unknown.json()).message).toBe('no user with that email');
  const shared = await a.post('rpc/share_list', { list_id: list.id, email: ` ${bob.email.toUpperCase()}` });
  expect(shared.status()).toBe(200);
  expect((await shared.json()).user_id).toBe(bob.id);

  // Bob now sees the list and both members, and may add and assign todos within it.
  expect((await b.rows('lists')).map((l) => l.id)).toEqual([list.id]);
  expect((await b.rows(`list_members?list_id=eq.${list.id}&order=added_at`)).map((m) => m.email)).toEqual([alice.email, bob.email]);
  const todo = (await (await b.post('todos', { list_id: list.id, title: 'milk', assignee_id: alice.id })).json())[0];
  expect(todo.created_by).toBe(bob.id);
  // The assignee must be a member of the list.
  expect((await b.post('todos', { list_id: list.id, title: 'eggs', assignee_id: carol.id })).status()).toBe(409);
  expect((await b.post('comments', { todo_id: todo.id, body: 'semi-skimmed?' })).status()).toBe(201);

  // Carol, not a member, sees nothing and can write nothing into the list.
  for (const table of ['lists', 'list_members', 'todos', 'comments']) expect(await c.rows(table)).toEqual([]);
  expect((await c.post('todos', { list_id: list.id, title: 'spam' })).status()).toBe(403);
  expect((await c.post('comments', { todo_id: todo.id, body: 'spam' })).status()).toBe(403);
  expect(await (await c.patch(`todos?id=eq.${todo.id}`, { done: true })).json()).toEqual([]);

  // A member renames but neither deletes the list nor changes its owner, nor removes the owner.
  expect((await (await b.patch(`lists?id=eq.${list.id}`, { name: 'Shopping' })).json())[0].name).toBe('Shopping');
  expect((await b.patch(`lists?id=eq.${list.id}`, { owner_id: bob.id })).status()).toBe(403);
  expect(await (await b.delete(`lists?id=eq.${list.id}`)).json()).toEqual([]);
  expect(await (await b.delete(`list_members?list_id=eq.${list.id}&user_id=eq.${alice.id}`)).json()).toEqual([]);
  // The owner cannot leave their own list (they delete it instead).
  expect(await (await a.delete(`list_members?list_id=eq.${list.id}&user_id=eq.${alice.id}`)).json()).toEqual([]);
});

test('removing a member hides everything in the list from them and clears their assignments', async ({ request }) => {
  const [alice, bob] = [await signUp(request, 'alice'), await signUp(request, 'bob')];
  const a = as(request, alice);
  const b = as(request, bob);
  const list = (await (await a.post('lists', { name: 'Chores' })).json())[0];
  await a.post('rpc/share_list', { list_id: list.id, email: bob.email });
  const todo = (await (await b.post('todos', { list_id: list.id, title: 'vacuum', assignee_id: bob.id })).json())[0];
  await b.post('comments', { todo_id: todo.id, body: 'on it' });

  const removed = await a.delete(`list_members?list_id=eq.${list.id}&user_id=eq.${bob.id}`);
  expect((await removed.json()).map((m: { user_id: string }) => m.user_id)).toEqual([bob.id]);
  for (const table of ['lists', 'list_members', 'todos', 'comments']) expect(await b.rows(table)).toEqual([]);
  const [after] = await a.rows(`todos?id=eq.${todo.id}&select=assignee_id,comments(body)`);
  expect(after).toEqual({ assignee_id: null, comments: [{ body: 'on it' }] });

  // A member may leave by themselves; deleting the list removes everything in it.
  await a.post('rpc/share_list', { list_id: list.id, email: bob.email });
  expect((await (await b.delete(`list_members?list_id=eq.${list.id}&user_id=eq.${bob.id}`)).json()).length).toBe(1);
  expect((await (await a.delete(`lists?id=eq.${list.id}`)).json()).length).toBe(1);
  for (const table of ['lists', 'list_members', 'todos', 'comments']) expect(await a.rows(table)).toEqual([]);
});
