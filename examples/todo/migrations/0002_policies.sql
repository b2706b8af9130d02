-- Who sees what: a user sees and edits the lists they own or are a member of, and every
-- todo and comment in them. The rules on todos and comments are written in the relational
-- forms the realtime server evaluates itself (see examples/todo/README.md for which path
-- each policy takes).

alter table public.lists enable row level security;
alter table public.list_members enable row level security;
alter table public.todos enable row level security;
alter table public.comments enable row level security;

-- Only a list's name can change; its owner cannot be rewritten by a member.
grant select, insert, delete on public.lists to rowcast_authenticated;
grant update (name) on public.lists to rowcast_authenticated;
-- Members are added by share_list (below) and the owner trigger; clients only read and remove.
grant select, delete on public.list_members to rowcast_authenticated;
grant select, insert, update, delete on public.todos to rowcast_authenticated;
grant select, insert, update, delete on public.comments to rowcast_authenticated;

-- Lists. `owner_id = rowcast.uid()` lets the creator see the new row in the INSERT's own
-- RETURNING, before the trigger has made them a member.
create policy lists_select on public.lists for select to rowcast_authenticated
  using (owner_id = rowcast.uid()
         or id in (select m.list_id from public.list_members m where m.user_id = (select rowcast.uid())));
create policy lists_insert on public.lists for insert to rowcast_authenticated
  with check (owner_id = rowcast.uid());
create policy lists_update on public.lists for update to rowcast_authenticated
  using (id in (select m.list_id from public.list_members m where m.user_id = (select rowcast.uid())))
  with check (true);
create policy lists_delete on public.lists for delete to rowcast_authenticated
  using (owner_id = rowcast.uid());

-- Members of a list see each other (to show who it is shared with and whom to assign).
-- A policy on list_members cannot look at list_members itself (Postgres refuses the
-- recursion), so membership of the *other* rows is asked of a security-definer function.
create function public.is_list_member(p_list_id uuid) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (select 1 from public.list_members m
                 where m.list_id = p_list_id and m.user_id = rowcast.uid())
$$;
revoke all on function public.is_list_member(uuid) from public;
grant execute on function public.is_list_member(uuid) to rowcast_authenticated;

create policy list_members_select on public.list_members for select to rowcast_authenticated
  using (user_id = rowcast.uid() or public.is_list_member(list_id));
-- The owner removes anyone but themselves (the owner leaves by deleting the list); any
-- other member may leave.
create policy list_members_delete on public.list_members for delete to rowcast_authenticated
  using ((user_id = rowcast.uid()
          and list_id not in (select l.id from public.lists l where l.owner_id = rowcast.uid()))
         or (user_id <> rowcast.uid()
             and list_id in (select l.id from public.lists l where l.owner_id = rowcast.uid())));

-- Todos: one membership lookup.
create policy todos_member on public.todos for all to rowcast_authenticated
  using (exists (select 1 from public.list_members m
                 where m.list_id = todos.list_id and m.user_id = rowcast.uid()))
  with check (exists (select 1 from public.list_members m
                      where m.list_id = todos.list_id and m.user_id = rowcast.uid()));

-- Comments: one foreign-key step deeper (comment → todo → the list's members). Anyone in
-- the list may read them; only the author writes or deletes their own.
create policy comments_select on public.comments for select to rowcast_authenticated
  using (todo_id in (select t.id from public.todos t
                     where t.list_id in (select m.list_id from public.list_members m
                                         where m.user_id = (select rowcast.uid()))));
create policy comments_insert on public.comments for insert to rowcast_authenticated
  with check (author_id = rowcast.uid()
              and todo_id in (select t.id from public.todos t
                              where t.list_id in (select m.list_id from public.list_members m
                                                  where m.user_id = (select rowcast.uid()))));
create policy comments_update on public.comments for update to rowcast_authenticated
  using (author_id = rowcast.uid()) with check (author_id = rowcast.uid());
create policy comments_delete on public.comments for delete to rowcast_authenticated
  using (author_id = rowcast.uid());

-- Sharing by email: users cannot read rowcast.users, so the lookup runs as the function's
-- owner. Only the list's owner may share it. Returns the new (or existing) member row.
create function public.share_list(list_id uuid, email text) returns public.list_members
language plpgsql security definer set search_path = '' as $$
declare
  target uuid;
  member public.list_members;
begin
  if not exists (select 1 from public.lists l
                 where l.id = share_list.list_id and l.owner_id = rowcast.uid()) then
    raise exception 'only the owner of a list can share it' using errcode = '42501';
  end if;
  select u.id into target from rowcast.users u where u.email = lower(trim(share_list.email));
  if target is null then
    raise exception 'no user with that email';
  end if;
  insert into public.list_members (list_id, user_id, email)
  values (share_list.list_id, target, lower(trim(share_list.email)))
  on conflict on constraint list_members_pkey do update set email = excluded.email
  returning * into member;
  return member;
end;
$$;
revoke all on function public.share_list(uuid, text) from public;
grant execute on function public.share_list(uuid, text) to rowcast_authenticated;
