// Who is signed in, whether the live connection is up, and how many writes wait to be sent.
import { useActions, useMe, useSyncStatus } from '../data';

export function StatusBar() {
  const me = useMe();
  const { connection, pendingWrites } = useSyncStatus();
  const actions = useActions();
  const online = connection === 'live';
  return (
    <header className="status">
      <strong>Todo</strong>
      <span data-testid="connection" data-state={connection} className={`badge ${online ? 'ok' : 'warn'}`}>
        {online ? 'live' : connection}
      </span>
      <span data-testid="pending" data-count={pendingWrites} className="muted">
        {pendingWrites === 0 ? 'all changes saved' : `${pendingWrites} change${pendingWrites === 1 ? '' : 's'} waiting to sync`}
      </span>
      <span className="spacer" />
      <span data-testid="me" className="muted">{me ? (me.email ?? 'anonymous') : ''}</span>
      <button className="link" data-testid="sign-out" onClick={() => void actions.signOut()}>Sign out</button>
    </header>
  );
}
