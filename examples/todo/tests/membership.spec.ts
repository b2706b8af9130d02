// A user removed from a list sees it disappear, and never sees a list not shared with them.
import { expect, test, User } from './support';

test('a removed member sees the list disappear and never sees lists not shared with them', async ({ browser }) => {
  const alice = await User.open(browser, 'alice');
  const bob = await User.open(browser, 'bob');
  // Every list name Bob's page ever renders, on every page load, reported as it happens.
  const seenByBob = new Set<string>();
  await bob.context.exposeFunction('recordListNames', (names: string[]) => names.forEach((n) => seenByBob.add(n)));
  await bob.context.addInitScript(() => {
    const report = () => {
      const names = Array.from(document.querySelectorAll('[data-testid="list-item"]'), (e) => e.textContent ?? '');
      if (names.length > 0) (window as unknown as { recordListNames: (n: string[]) => void }).recordListNames(names);
    };
    new MutationObserver(report).observe(document, { subtree: true, childList: true, characterData: true });
  });
  await alice.signUp();
  await bob.signUp();

  await alice.createList('Private plans');
  await alice.addTodo('secret todo');
  await alice.createList('Shared chores');
  await alice.addTodo('vacuum');
  await alice.share(bob.email);
  await expect(bob.listItem('Shared chores')).toBeVisible();
  await bob.openList('Shared chores');
  await expect(bob.todo('vacuum')).toBeVisible();

  // More activity in the private list while Bob watches.
  await alice.openList('Private plans');
  await alice.addTodo('another secret');
  await alice.openList('Shared chores');
  await alice.addTodo('dishes');
  await expect(bob.todo('dishes')).toBeVisible();

  // Alice removes Bob: the list and its todos leave Bob's screen.
  await alice.page.getByTestId('member').filter({ hasText: bob.email }).getByTestId('remove-member').click();
  await expect(alice.page.getByTestId('member')).toHaveCount(1);
  await expect(bob.listItem('Shared chores')).toHaveCount(0);
  await expect(bob.page.getByTestId('todo')).toHaveCount(0);
  await expect(bob.page.getByTestId('no-lists')).toBeVisible();

  // Edits after the removal do not reach Bob, not even after a reload.
  await alice.addTodo('after bob left');
  await bob.page.reload();
  await bob.expectLive();
  await expect(bob.page.getByTestId('no-lists')).toBeVisible();
  const seen = [...seenByBob];
  expect(seen.some((name) => name.includes('Shared chores'))).toBe(true);
  expect(seen.some((name) => name.includes('Private plans'))).toBe(false);
  await alice.close();
  await bob.close();
});
