// Edits made offline are shown at once, counted as waiting, and reach the other user exactly
// once when the network returns (also when an answer is lost and the write is sent again);
// a reload while offline shows the cached lists.
import { expect, sql, test, User } from './support';

test('edits made offline reach the other user exactly once when the network returns', async ({ browser }) => {
  const alice = await User.open(browser, 'alice');
  const bob = await User.open(browser, 'bob');
  await alice.signUp();
  await bob.signUp();
  const listId = await alice.createList('Trip');
  await alice.addTodo('passport');
  await alice.share(bob.email);
  await bob.openList('Trip');
  await expect(bob.todo('passport')).toBeVisible();

  await bob.offline();
  await expect(bob.page.getByTestId('connection')).not.toHaveAttribute('data-state', 'live');
  await bob.addTodo('tickets');
  await bob.addTodo('sunscreen');
  await bob.todo('passport').getByTestId('todo-done').check();
  // Shown at once on Bob's screen, waiting to be sent, not yet anywhere else.
  await expect(bob.page.getByTestId('pending')).toHaveAttribute('data-count', '3');
  await expect(bob.todo('passport')).toHaveAttribute('data-done', 'true');
  expect(sql(`select count(*) from public.todos where list_id = '${listId}'`)).toBe('1');
  await expect(alice.todo('tickets')).toHaveCount(0);

  await bob.online();
  await bob.expectLive();
  await bob.expectSynced();
  await expect(alice.todo('tickets')).toHaveCount(1);
  await expect(alice.todo('sunscreen')).toHaveCount(1);
  await expect(alice.todo('passport')).toHaveAttribute('data-done', 'true');
  // Exactly once in the database, and on both screens, after everything has settled.
  expect(sql(`select string_agg(title, ',' order by title) from public.todos where list_id = '${listId}'`)).toBe(
    'passport,sunscreen,tickets',
  );
  await alice.addTodo('after the replay');
  await expect(bob.todo('after the replay')).toBeVisible();

  // A write that reaches the server but whose answer is lost on the way back: the SDK sends
  // it again with the same idempotency key, and the server answers from its record instead
  // of applying it twice.
  let answerDropped = false;
  await bob.context.route('**/rest/v1/todos*', async (route) => {
    if (answerDropped || route.request().method() !== 'POST') return route.continue();
    answerDropped = true;
    await route.fetch();
    await route.abort('connectionreset');
  });
  const replayed: string[] = [];
  bob.page.on('response', (response) => {
    if (response.headers()['idempotent-replayed'] === 'true') replayed.push(response.url());
  });
  await bob.addTodo('batteries');
  await bob.expectSynced();
  expect(answerDropped).toBe(true);
  expect(replayed).toHaveLength(1);
  await expect(alice.todo('batteries')).toHaveCount(1);
  expect(sql(`select count(*) from public.todos where list_id = '${listId}' and title = 'batteries'`)).toBe('1');
  for (const user of [alice, bob]) await expect(user.page.getByTestId('todo')).toHaveCount(5);
  await alice.close();
  await bob.close();
});

test('a reload while offline shows the cached lists', async ({ browser }) => {
  // Only here may the service worker run: it is what serves the page without a network.
  // (This test makes no writes while offline; see User.open.)
  const carol = await User.open(browser, 'carol', { serviceWorker: true });
  await carol.signUp();
  await carol.createList('Books');
  await carol.addTodo('Middlemarch');
  // The device caches what its open live queries see: let the todo reach the server while
  // its list is on screen (opening 'Films' closes the query on 'Books').
  await carol.expectSynced();
  await carol.createList('Films');
  await carol.expectSynced();
  // The page itself comes from the service worker's cache once it is installed.
  await carol.page.evaluate(async () => {
    await navigator.serviceWorker.ready;
  });

  await carol.offline();
  await carol.page.reload();
  await expect(carol.page.getByTestId('me')).toHaveText(carol.email);
  await expect(carol.listItem('Books')).toBeVisible();
  await expect(carol.listItem('Films')).toBeVisible();
  await carol.openList('Books');
  await expect(carol.todo('Middlemarch')).toBeVisible();
  await expect(carol.page.getByTestId('connection')).not.toHaveAttribute('data-state', 'live');

  await carol.online();
  await carol.expectLive();
  await carol.close();
});

test('an offline write the server refuses is undone and reported', async ({ browser }) => {
  const alice = await User.open(browser, 'alice');
  const bob = await User.open(browser, 'bob');
  await alice.signUp();
  await bob.signUp();
  const listId = await alice.createList('Party');
  await alice.share(bob.email);
  await bob.openList('Party');

  await bob.offline();
  await bob.addTodo('too late');
  await expect(bob.page.getByTestId('pending')).toHaveAttribute('data-count', '1');
  // Meanwhile Alice takes Bob off the list, so his queued insert is no longer allowed.
  await alice.page.getByTestId('member').filter({ hasText: bob.email }).getByTestId('remove-member').click();
  await expect(alice.page.getByTestId('member')).toHaveCount(1);
  // Alice's screen shows the removal at once; wait until the server has it too.
  await alice.expectSynced();
  expect(sql(`select count(*) from public.list_members where list_id = '${listId}'`)).toBe('1');

  await bob.online();
  await expect(bob.page.getByTestId('write-errors')).toContainText('A change was refused and undone');
  await bob.expectSynced();
  await expect(bob.todo('too late')).toHaveCount(0);
  await expect(bob.listItem('Party')).toHaveCount(0);
  expect(sql(`select count(*) from public.todos where list_id = '${listId}'`)).toBe('0');
  await alice.close();
  await bob.close();
});
