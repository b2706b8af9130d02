-- Rowcast auth: users, sign-in sessions with rotating refresh tokens, and links from external
-- identity providers' subjects to users.
--
-- App tables reference users with `references rowcast.users(id)`. Request roles cannot read
-- password or token hashes: the tables below are owned by the server's login role and only
-- the safe columns of `users` are granted.

create table rowcast.users (
  id uuid primary key default gen_random_uuid(),
  email text,
  password_hash text,
  is_anonymous boolean not null default false,
  -- Set by admins (service key); included in access tokens, so policies may trust it.
  app_metadata jsonb not null default '{}'::jsonb,
  -- Set by the user; included in tokens too, but policies must not trust it.
  user_metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_sign_in_at timestamptz,
  constraint users_email_shape check (email is null or (length(email) between 3 and 254 and position('@' in email) > 1)),
  constraint users_app_metadata_object check (jsonb_typeof(app_metadata) = 'object'),
  constraint users_user_metadata_object check (jsonb_typeof(user_metadata) = 'object')
);

-- Emails are unique regardless of case.
create unique index users_email_key on rowcast.users (lower(email));

-- One sign-in on one device. The session id is the refresh-token family: reusing a spent
-- refresh token revokes the whole session.
create table rowcast.sessions (
  id uuid primary key,
  user_id uuid not null references rowcast.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  refreshed_at timestamptz,
  expires_at timestamptz not null,
  revoked_at timestamptz
);
create index sessions_user_id on rowcast.sessions (user_id);

-- Refresh tokens are opaque to clients and stored only as SHA-256 hashes.
create table rowcast.refresh_tokens (
  token_hash bytea primary key,
  session_id uuid not null references rowcast.sessions (id) on delete cascade,
  created_at timestamptz not null default now(),
  -- Set when the token is exchanged; a second exchange is reuse.
  used_at timestamptz
);
create index refresh_tokens_session_id on rowcast.refresh_tokens (session_id);

-- A user known through an external identity provider (Firebase Auth, Auth0, …): the
-- provider's issuer and subject, and the internal user id Postgres policies see.
create table rowcast.identities (
  issuer text not null,
  subject text not null,
  user_id uuid not null references rowcast.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (issuer, subject)
);
create index identities_user_id on rowcast.identities (user_id);

revoke all on rowcast.users, rowcast.sessions, rowcast.refresh_tokens, rowcast.identities
  from public, rowcast_anon, rowcast_authenticated, rowcast_service;

-- Admin tooling (the service role) may read users without their password hashes.
grant select (id, email, is_anonymous, app_metadata, user_metadata, created_at, updated_at, last_sign_in_at)
  on rowcast.users to rowcast_service;
grant select on rowcast.identities to rowcast_service;
