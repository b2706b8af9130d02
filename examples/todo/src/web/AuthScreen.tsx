// Sign up, sign in, or try the app without an account (an anonymous user that can later
// set an email and password and keep its lists).
import { useState, type FormEvent } from 'react';
import { useActions } from '../data';

export function AuthScreen() {
  const actions = useActions();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function run(what: () => Promise<void>) {
    setBusy(true);
    setError(null);
    try {
      await what();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }

  function submit(event: FormEvent, mode: 'sign-in' | 'sign-up') {
    event.preventDefault();
    void run(() => (mode === 'sign-in' ? actions.signIn(email, password) : actions.signUp(email, password)));
  }

  return (
    <main className="auth">
      <h1>Shared todo lists</h1>
      <p className="muted">Use two windows (or two browsers) as two users and share a list: every change shows up live.</p>
      <form onSubmit={(e) => submit(e, 'sign-in')}>
        <label>
          Email
          <input data-testid="email" type="email" autoComplete="username" value={email}
            onChange={(e) => setEmail(e.target.value)} required />
        </label>
        <label>
          Password
          <input data-testid="password" type="password" autoComplete="current-password" value={password}
            onChange={(e) => setPassword(e.target.value)} required minLength={8} />
        </label>
        <div className="row">
          <button data-testid="sign-in" type="submit" disabled={busy}>Sign in</button>
          <button data-testid="sign-up" type="button" disabled={busy}
            onClick={(e) => submit(e, 'sign-up')}>Create account</button>
        </div>
      </form>
      <button data-testid="anonymous" className="link" disabled={busy}
        onClick={() => void run(() => actions.signInAnonymously())}>
        Try it without an account
      </button>
      {error && <p role="alert" data-testid="auth-error" className="error">{error}</p>}
    </main>
  );
}
