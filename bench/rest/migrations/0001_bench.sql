-- Benchmark data for `make bench-rest`: 10,000 items in 100 categories, readable by any
-- signed-in user through a row-level security policy (so the policy is on the hot path).
create table public.categories (id int primary key, name text not null);
create table public.items (
  id bigint primary key,
  name text not null,
  price numeric(10, 2) not null,
  owner uuid not null,
  category_id int not null references public.categories(id),
  created_at timestamptz not null default now()
);
insert into public.categories select g, 'category ' || g from generate_series(1, 100) g;
insert into public.items (id, name, price, owner, category_id)
  select g, 'item ' || g, (g % 1000) / 10.0, '00000000-0000-0000-0000-000000000001', 1 + g % 100
  from generate_series(1, 10000) g;
create index on public.items (category_id);
alter table public.items enable row level security;
create policy items_readable on public.items for select to rowcast_authenticated using (true);
grant select on public.items, public.categories to rowcast_authenticated;
analyze public.items;
analyze public.categories;
