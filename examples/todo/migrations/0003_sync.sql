-- Live updates: capture every change to the example's tables (from the API, psql or anyone).
select rowcast.enable_sync('public.lists');
select rowcast.enable_sync('public.list_members');
select rowcast.enable_sync('public.todos');
select rowcast.enable_sync('public.comments');
