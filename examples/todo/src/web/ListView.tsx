// One list: who it is shared with, its todos, and the forms to share it and add todos.
import { useState, type FormEvent } from 'react';
import { memberLabel, type List } from '../model';
import { useActions, useMe, useMembers, useTodos } from '../data';
import { TodoItem } from './TodoItem';

export function ListView({ list }: { list: List }) {
  const me = useMe();
  const members = useMembers(list.id);
  const todos = useTodos(list.id);
  const actions = useActions();
  const [title, setTitle] = useState('');
  const [email, setEmail] = useState('');
  const [shareError, setShareError] = useState<string | null>(null);
  const isOwner = me?.id === list.owner_id;

  function add(event: FormEvent) {
    event.preventDefault();
    const trimmed = title.trim();
    if (!trimmed) return;
    actions.addTodo(list.id, trimmed);
    setTitle('');
  }

  async function share(event: FormEvent) {
    event.preventDefault();
    setShareError(null);
    try {
      await actions.shareList(list.id, email.trim());
      setEmail('');
    } catch (e) {
      setShareError(e instanceof Error ? e.message : String(e));
    }
  }

  const open = todos.filter((t) => !t.done).length;
  return (
    <section className="list" data-testid="list-view" data-list-id={list.id}>
      <div className="row">
        <h2 data-testid="list-title">{list.name}</h2>
        <span className="muted">{open} open · {todos.length} in all</span>
        <span className="spacer" />
        {isOwner && (
          <button className="link danger" data-testid="delete-list"
            onClick={() => actions.deleteList(list.id)}>Delete list</button>
        )}
      </div>

      <div className="members" data-testid="members">
        Shared with:{' '}
        {members.map((m) => (
          <span key={m.user_id} className="chip" data-testid="member" data-user-id={m.user_id}>
            {memberLabel(m)}{m.user_id === list.owner_id ? ' (owner)' : ''}
            {isOwner && m.user_id !== list.owner_id && (
              <button className="link" data-testid="remove-member" aria-label={`remove ${memberLabel(m)}`}
                onClick={() => actions.removeMember(list.id, m.user_id)}>×</button>
            )}
          </span>
        ))}
      </div>
      {isOwner && (
        <form onSubmit={share} className="row">
          <input data-testid="share-email" type="email" placeholder="Share with (email)" value={email}
            onChange={(e) => setEmail(e.target.value)} required />
          <button data-testid="share" type="submit">Share</button>
          {shareError && <span role="alert" data-testid="share-error" className="error">{shareError}</span>}
        </form>
      )}

      <ul className="todos" data-testid="todos">
        {todos.map((todo) => (
          <TodoItem key={todo.id} todo={todo} members={members} />
        ))}
      </ul>
      <form onSubmit={add} className="row">
        <input data-testid="new-todo" placeholder="What needs doing?" value={title}
          onChange={(e) => setTitle(e.target.value)} />
        <button data-testid="add-todo" type="submit">Add</button>
      </form>
    </section>
  );
}
