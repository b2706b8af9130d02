// The lists the user can see (own and shared), and a form to start a new one.
import { useState, type FormEvent } from 'react';
import { useActions, useMe, useMyLists } from '../data';

export function ListsPane({ selected, onSelect }: { selected: string | null; onSelect: (id: string) => void }) {
  const lists = useMyLists();
  const me = useMe();
  const actions = useActions();
  const [name, setName] = useState('');

  function create(event: FormEvent) {
    event.preventDefault();
    const trimmed = name.trim();
    if (!trimmed) return;
    onSelect(actions.createList(trimmed));
    setName('');
  }

  return (
    <nav className="lists">
      <h2>Lists</h2>
      <ul data-testid="lists">
        {lists.map((list) => (
          <li key={list.id}>
            <button data-testid="list-item" data-list-id={list.id}
              className={list.id === selected ? 'selected' : ''} onClick={() => onSelect(list.id)}>
              {list.name}
              {me && list.owner_id !== me.id && <span className="muted"> · shared</span>}
            </button>
          </li>
        ))}
        {lists.length === 0 && <li className="muted" data-testid="no-lists">No lists yet.</li>}
      </ul>
      <form onSubmit={create} className="row">
        <input data-testid="new-list" placeholder="New list" value={name} onChange={(e) => setName(e.target.value)} />
        <button data-testid="create-list" type="submit">Add</button>
      </form>
    </nav>
  );
}
