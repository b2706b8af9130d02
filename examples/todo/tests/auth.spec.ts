// Signing up, out and in again, a refused sign-in, and trying the app without an account.
import { expect, password, test, User } from './support';

test('a user signs up, signs out, and signs in again to find their lists', async ({ browser }) => {
  const dana = await User.open(browser, 'dana');
  await dana.signUp();
  await dana.createList('Garden');
  await dana.expectSynced();
  await dana.page.getByTestId('sign-out').click();
  await expect(dana.page.getByTestId('sign-in')).toBeVisible();

  await dana.page.getByTestId('email').fill(dana.email);
  await dana.page.getByTestId('password').fill('not the password');
  await dana.page.getByTestId('sign-in').click();
  await expect(dana.page.getByTestId('auth-error')).toBeVisible();

  await dana.page.getByTestId('password').fill(password);
  await dana.page.getByTestId('sign-in').click();
  await expect(dana.page.getByTestId('me')).toHaveText(dana.email);
  await expect(dana.listItem('Garden')).toBeVisible();
  await dana.close();
});

test('trying the app without an account gives a working anonymous user', async ({ browser }) => {
  const guest = await User.open(browser, 'guest');
  await guest.page.goto(process.env.TODO_URL!);
  await guest.page.getByTestId('anonymous').click();
  await expect(guest.page.getByTestId('me')).toHaveText('anonymous');
  await guest.expectLive();
  await guest.createList('Just looking');
  await guest.addTodo('try Rowcast');
  await guest.expectSynced();
  // The session survives a reload.
  await guest.page.reload();
  await expect(guest.todo('try Rowcast')).toBeVisible();
  await guest.close();
});
