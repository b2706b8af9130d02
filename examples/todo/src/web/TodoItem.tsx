// One todo: tick it, assign it to a member, delete it, and read or add comments.
import { useState, type FormEvent } from 'react';
import { memberLabel, type Member, type Todo } from '../model';
import { useActions, useComments } from '../data';

export function TodoItem({ todo, members }: { todo: Todo; members: Member[] }) {
  const actions = useActions();
  const [open, setOpen] = useState(false);
  return (
    <li className={`todo ${todo.done ? 'done' : ''}`} data-testid="todo" data-todo-id={todo.id} data-done={todo.done}>
      <div className="row">
        <input type="checkbox" data-testid="todo-done" checked={todo.done} aria-label={`done: ${todo.title}`}
          onChange={(e) => actions.setDone(todo, e.target.checked)} />
        <span className="title" data-testid="todo-title">{todo.title}</span>
        <span className="spacer" />
        <select data-testid="todo-assignee" aria-label={`assignee of ${todo.title}`} value={todo.assignee_id ?? ''}
          onChange={(e) => actions.assign(todo, e.target.value || null)}>
          <option value="">unassigned</option>
          {members.map((m) => (
            <option key={m.user_id} value={m.user_id}>{memberLabel(m)}</option>
          ))}
        </select>
        <button className="link" data-testid="toggle-comments" onClick={() => setOpen(!open)}>
          {open ? 'hide comments' : 'comments'}
        </button>
        <button className="link danger" data-testid="delete-todo" aria-label={`delete ${todo.title}`}
          onClick={() => actions.deleteTodo(todo)}>×</button>
      </div>
      {open && <Comments todoId={todo.id} members={members} />}
    </li>
  );
}

function Comments({ todoId, members }: { todoId: string; members: Member[] }) {
  const comments = useComments(todoId);
  const actions = useActions();
  const [body, setBody] = useState('');
  const author = (id: string) => {
    const member = members.find((m) => m.user_id === id);
    return member ? memberLabel(member) : 'a former member';
  };

  function add(event: FormEvent) {
    event.preventDefault();
    const trimmed = body.trim();
    if (!trimmed) return;
    actions.addComment(todoId, trimmed);
    setBody('');
  }

  return (
    <div className="comments" data-testid="comments">
      {comments.map((c) => (
        <p key={c.id} data-testid="comment"><span className="muted">{author(c.author_id)}:</span> {c.body}</p>
      ))}
      {comments.length === 0 && <p className="muted">No comments yet.</p>}
      <form onSubmit={add} className="row">
        <input data-testid="new-comment" placeholder="Comment" value={body} onChange={(e) => setBody(e.target.value)} />
        <button data-testid="add-comment" type="submit">Send</button>
      </form>
    </div>
  );
}
