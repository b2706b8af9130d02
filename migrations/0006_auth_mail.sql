-- Rowcast auth, part two: confirmed email addresses, one-time email tokens (confirmation,
-- recovery, magic link / code, email change), and abuse-limit counters shared by every
-- instance on this database.

-- When the user proved they receive mail at `email`. Users that existed before this
-- migration keep signing in: their address counts as confirmed.
alter table rowcast.users add column email_confirmed_at timestamptz;
update rowcast.users set email_confirmed_at = created_at where email is not null;
grant select (email_confirmed_at) on rowcast.users to rowcast_service;

-- One-time tokens sent by email. Neither secret is stored: `link_hash` is the SHA-256 of the
-- 256-bit token in the link, `code_hash` the SHA-256 of the address and the six-digit code.
-- A token is spent by setting `used_at` in the statement that accepts it.
create table rowcast.email_tokens (
  link_hash bytea primary key,
  code_hash bytea not null,
  kind text not null check (kind in ('signup', 'recovery', 'magiclink', 'email_change')),
  user_id uuid not null references rowcast.users (id) on delete cascade,
  -- The address the mail went to (for email_change: the new address).
  email text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index email_tokens_code_hash on rowcast.email_tokens (code_hash);
create index email_tokens_user_id on rowcast.email_tokens (user_id, kind);

-- Fixed-window counters of attempts (sign-ins, sign-ups, mails, codes) by key, e.g.
-- `signin:account:a@b.io` or `signup:address:203.0.113.7`.
create table rowcast.auth_limits (
  key text primary key,
  window_end timestamptz not null,
  count integer not null
);

-- Reserve one attempt against every key at once, or none: returns 0 when reserved, else the
-- seconds until the fullest key's window ends. One call is one statement, and the row locks
-- (taken in key order, so concurrent calls cannot deadlock) make check-and-count atomic
-- across connections and server instances.
create function rowcast.reserve_auth_attempt(keys text[], limits integer[], windows double precision[])
returns double precision
language plpgsql
as $$
declare
  wait double precision := 0;
  r record;
begin
  insert into rowcast.auth_limits (key, window_end, count)
    select k, now(), 0 from unnest(keys) as k order by k
    on conflict (key) do nothing;
  for r in
    select l.key, l.window_end, l.count, x.lim
      from rowcast.auth_limits l
      join unnest(keys, limits, windows) as x (key, lim, win) on x.key = l.key
     order by l.key
       for update of l
  loop
    if r.window_end > clock_timestamp() and r.count >= r.lim then
      wait := greatest(wait, extract(epoch from r.window_end - clock_timestamp()));
    end if;
  end loop;
  if wait > 0 then
    return wait;
  end if;
  update rowcast.auth_limits l
     set window_end = case when l.window_end <= clock_timestamp()
                           then clock_timestamp() + make_interval(secs => x.win)
                           else l.window_end end,
         count = case when l.window_end <= clock_timestamp() then 1 else l.count + 1 end
    from unnest(keys, limits, windows) as x (key, lim, win)
   where l.key = x.key;
  return 0;
end $$;

revoke all on rowcast.email_tokens, rowcast.auth_limits
  from public, rowcast_anon, rowcast_authenticated, rowcast_service;
revoke all on function rowcast.reserve_auth_attempt(text[], integer[], double precision[]) from public;
