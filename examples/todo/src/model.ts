// The rows of the example's tables (migrations/0001_schema.sql), as the app sees them.
// `_v` is the row version the server adds to every synced row.

export interface List {
  id: string;
  owner_id: string;
  name: string;
  created_at: string;
}

export interface Member {
  list_id: string;
  user_id: string;
  email: string | null;
  added_at: string;
}

export interface Todo {
  id: string;
  list_id: string;
  title: string;
  done: boolean;
  assignee_id: string | null;
  created_by: string | null;
  created_at: string;
}

export interface Comment {
  id: string;
  todo_id: string;
  author_id: string;
  body: string;
  created_at: string;
}

/** Who is signed in. */
export interface Me {
  id: string;
  email: string | null;
  isAnonymous: boolean;
}

/** How a member is shown: their email, or a short id for anonymous users. */
export function memberLabel(member: Pick<Member, 'user_id' | 'email'>): string {
  return member.email ?? `anonymous ${member.user_id.slice(0, 8)}`;
}

export function byCreatedAt<T extends { created_at: string; id: string }>(a: T, b: T): number {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1;
}
