// The page: the sign-in screen until there is a session, then the lists and the open list.
import { useState } from 'react';
import { useMe, useMyLists, useSessionLoading, useWriteErrors } from '../data';
import { AuthScreen } from './AuthScreen';
import { ListsPane } from './ListsPane';
import { ListView } from './ListView';
import { StatusBar } from './StatusBar';

export function App() {
  const loading = useSessionLoading();
  const me = useMe();
  if (loading) return <p className="muted">Loading…</p>;
  if (!me) return <AuthScreen />;
  // Keyed by user so that nothing of one user's screen survives into another's.
  return <Home key={me.id} />;
}

function Home() {
  const lists = useMyLists();
  const [selected, setSelected] = useState<string | null>(null);
  // A list that disappears (deleted, or we were removed from it) closes by itself.
  const list = lists.find((l) => l.id === selected) ?? lists[0] ?? null;
  return (
    <>
      <StatusBar />
      <WriteErrors />
      <div className="layout">
        <ListsPane selected={list?.id ?? null} onSelect={setSelected} />
        {list ? <ListView key={list.id} list={list} /> : <p className="muted">Create a list to start.</p>}
      </div>
    </>
  );
}

/** Writes the server refused (after being shown optimistically), with its reason. */
function WriteErrors() {
  const { errors, dismiss } = useWriteErrors();
  if (errors.length === 0) return null;
  return (
    <div className="write-errors" role="alert" data-testid="write-errors">
      {errors.map((e) => (
        <p key={e.id}>
          A change was refused and undone: {e.message}{' '}
          <button className="link" onClick={() => dismiss(e.id)}>dismiss</button>
        </p>
      ))}
    </div>
  );
}
