// Two people sharing a list see each other's edits live, and so does a change made in psql.
import { join } from 'node:path';
import { artifacts, expect, sql, test, User } from './support';

test('two users sharing a list see each other\'s edits live, and a change made in SQL', async ({ browser }) => {
  const alice = await User.open(browser, 'alice');
  const bob = await User.open(browser, 'bob');
  await alice.signUp();
  await bob.signUp();

  const listId = await alice.createList('Groceries');
  await alice.addTodo('milk');
  await expect(bob.listItem('Groceries')).toHaveCount(0);

  // Sharing makes the list, and what is already in it, appear for Bob without a reload.
  await alice.share(bob.email);
  await expect(bob.listItem('Groceries')).toBeVisible();
  await bob.openList('Groceries');
  await expect(bob.todo('milk')).toBeVisible();
  await expect(bob.page.getByTestId('member')).toHaveCount(2);

  // Bob's edits reach Alice.
  await bob.addTodo('bread');
  await expect(alice.todo('bread')).toBeVisible();
  await bob.todo('milk').getByTestId('todo-done').check();
  await expect(alice.todo('milk')).toHaveAttribute('data-done', 'true');

  // Alice's edits reach Bob: an assignment and a comment.
  await alice.todo('bread').getByTestId('todo-assignee').selectOption({ label: bob.email });
  await expect(bob.todo('bread').getByTestId('todo-assignee')).toHaveValue(
    sql(`select id from rowcast.users where email = '${bob.email}'`),
  );
  await alice.todo('bread').getByTestId('toggle-comments').click();
  await alice.page.getByTestId('new-comment').fill('wholemeal, please');
  await alice.page.getByTestId('add-comment').click();
  await bob.todo('bread').getByTestId('toggle-comments').click();
  await expect(bob.todo('bread').getByTestId('comment')).toHaveText(`${alice.email}: wholemeal, please`);

  // Plain SQL, as an admin in psql: both see it.
  sql(`update public.todos set title = 'oat milk', done = false where list_id = '${listId}' and title = 'milk'`);
  sql(`insert into public.todos (list_id, title) values ('${listId}', 'added in psql')`);
  for (const user of [alice, bob]) {
    await expect(user.todo('oat milk')).toHaveAttribute('data-done', 'false');
    await expect(user.todo('added in psql')).toBeVisible();
    await expect(user.todo('milk')).toHaveCount(0);
  }

  await alice.expectSynced();
  await bob.expectSynced();
  await alice.page.screenshot({ path: join(artifacts, 'sharing-alice.png') });
  await bob.page.screenshot({ path: join(artifacts, 'sharing-bob.png') });
  await alice.close();
  await bob.close();
});
