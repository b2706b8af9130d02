-- The todo example's tables: lists, who a list is shared with, the todos in a list and the
-- comments on a todo. Ids are uuids so that a client can create a row offline and go on
-- editing it (ticking a todo it created, commenting on it) before the server has seen it.

create table public.lists (
  id         uuid primary key default gen_random_uuid(),
  owner_id   uuid not null default rowcast.uid() references rowcast.users (id) on delete cascade,
  name       text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now()
);

-- One row per user who may see a list, the owner included (added by a trigger below), so
-- that every rule below "a user sees a list's rows" is one membership lookup. `email` is a
-- copy for display: users cannot read rowcast.users, so the app shows members from here.
create table public.list_members (
  list_id  uuid not null references public.lists (id) on delete cascade,
  user_id  uuid not null references rowcast.users (id) on delete cascade,
  email    text,
  added_at timestamptz not null default now(),
  primary key (list_id, user_id)
);
create index list_members_user_id on public.list_members (user_id);

create table public.todos (
  id          uuid primary key default gen_random_uuid(),
  list_id     uuid not null references public.lists (id) on delete cascade,
  title       text not null check (length(title) between 1 and 500),
  done        boolean not null default false,
  -- Only a member of the list can be assigned; removing the member clears the assignment.
  assignee_id uuid,
  created_by  uuid default rowcast.uid() references rowcast.users (id) on delete set null,
  created_at  timestamptz not null default now(),
  foreign key (list_id, assignee_id) references public.list_members (list_id, user_id)
    on delete set null (assignee_id)
);
create index todos_list_id on public.todos (list_id);

create table public.comments (
  id         uuid primary key default gen_random_uuid(),
  todo_id    uuid not null references public.todos (id) on delete cascade,
  author_id  uuid not null default rowcast.uid() references rowcast.users (id) on delete cascade,
  body       text not null check (length(body) between 1 and 2000),
  created_at timestamptz not null default now()
);
create index comments_todo_id on public.comments (todo_id);

-- The owner of a new list becomes its first member. Security definer because members are
-- only ever added by the server (here and in share_list), never inserted by clients.
create function public.add_list_owner_as_member() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  insert into public.list_members (list_id, user_id, email)
  select new.id, new.owner_id, u.email from rowcast.users u where u.id = new.owner_id;
  return null;
end;
$$;
revoke all on function public.add_list_owner_as_member() from public;

create trigger lists_owner_is_member after insert on public.lists
  for each row execute function public.add_list_owner_as_member();
