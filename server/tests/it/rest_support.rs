//! What the REST tests share: the app schema and its users, a request builder, the
//! comparison with hand-written SQL, and the postgrest-js runner.

use std::time::Duration;

use reqwest::{header::HeaderMap, Method};
use rowcast::{
    auth::{token::TokenKeys, Identity},
    config::{self, Config},
};
use serde_json::{json, Value};

use crate::support::{self, TestApp};

/// The app schema the tests run against: users, posts (owner-only RLS), comments (visible
/// when their post is), messages (two foreign keys to users), a canary, and functions.
pub const SCHEMA: &str = r#"
create table users (id uuid primary key, name text not null, email text unique);
create table posts (
  id bigserial primary key,
  owner uuid not null default rowcast.uid() references users(id),
  title text not null,
  rating int,
  published boolean not null default false,
  tags text[] not null default '{}'
);
create table comments (
  id bigserial primary key,
  post_id bigint not null references posts(id) on delete cascade,
  author_id uuid references users(id),
  body text not null
);
create table messages (
  id bigserial primary key,
  sender uuid not null references users(id),
  recipient uuid not null references users(id),
  body text not null
);
create table canary (id int primary key, v text not null);
insert into canary values (1, 'alive');

alter table posts enable row level security;
create policy posts_owner on posts using (owner = rowcast.uid()) with check (owner = rowcast.uid());
alter table comments enable row level security;
create policy comments_of_visible_posts on comments
  using (exists (select 1 from posts p where p.id = post_id))
  with check (exists (select 1 from posts p where p.id = post_id));

grant select, insert, update, delete on users, posts, comments, messages to rowcast_authenticated, rowcast_service;
grant select on canary to rowcast_authenticated, rowcast_anon;
grant usage on all sequences in schema public to rowcast_authenticated, rowcast_service;
grant select on users to rowcast_anon;

create function add_numbers(a int, b int default 10) returns int language sql immutable as 'select a + b';
create function posts_titled(q text) returns setof posts language sql stable
  as $$ select * from posts where title ilike '%' || q || '%' order by id $$;
create function fail_loudly() returns int language plpgsql as $$ begin raise exception 'custom failure'; end $$;
create function touch_nothing() returns void language sql as 'select null';
create function server_setting(name text) returns text language sql stable as 'select current_setting(name)';
"#;

pub struct Rest {
    pub app: TestApp,
    pub alice_id: String,
    pub bob_id: String,
    pub alice: String,
    pub bob: String,
    pub service: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn token(identity: &Identity) -> String {
    TokenKeys::hs256(config::TEST_JWT_SECRET.as_bytes(), "rowcast", "rowcast")
        .sign(identity, Duration::from_secs(3600))
        .unwrap()
}

impl Rest {
    pub async fn start() -> Rest {
        Rest::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Rest {
        let db_url = support::migrated_db().await;
        let mut config = Config::for_database(&db_url);
        tweak(&mut config);
        let app = TestApp::spawn_with(config).await;
        let alice_id = uuid::Uuid::new_v4().to_string();
        let bob_id = uuid::Uuid::new_v4().to_string();
        let db = app.db().await;
        db.batch_execute("set search_path = public").await.unwrap();
        db.batch_execute(SCHEMA).await.unwrap();
        db.execute(
            "insert into users (id, name, email) values ($1::text::uuid, 'Alice', 'a@x'), ($2::text::uuid, 'Bob', 'b@x')",
            &[&alice_id, &bob_id],
        )
        .await
        .unwrap();
        // Two posts each, with comments, written as their owners would.
        db.execute(
            "insert into posts (owner, title, rating, published, tags) values
               ($1::text::uuid, 'alice first', 5, true, '{rust,pg}'),
               ($1::text::uuid, 'alice second', null, false, '{}'),
               ($2::text::uuid, 'bob first', 3, true, '{pg}'),
               ($2::text::uuid, 'bob secret', 1, false, '{}')",
            &[&alice_id, &bob_id],
        )
        .await
        .unwrap();
        db.execute(
            "insert into comments (post_id, author_id, body) values
               (1, $2::text::uuid, 'nice one'), (1, $1::text::uuid, 'thanks'), (3, $1::text::uuid, 'hi bob'),
               (4, $2::text::uuid, 'bob private note')",
            &[&alice_id, &bob_id],
        )
        .await
        .unwrap();
        let rest = Rest {
            alice: token(&Identity::user(&alice_id, json!({}))),
            bob: token(&Identity::user(&bob_id, json!({}))),
            service: token(&Identity::service()),
            alice_id,
            bob_id,
            app,
        };
        rest.reload().await;
        rest
    }

    pub async fn reload(&self) {
        let r = self
            .request(Method::POST, "/rest/v1/admin/reload-schema")
            .auth(&self.service)
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    /// A request to `path`; add a token, headers and a body, then `send` it.
    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            rest: self,
            method,
            path: path.to_string(),
            token: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// A direct connection as the admin, resolving names in `public` (the test user's own
    /// schema, `rowcast`, would otherwise come first on the search path).
    pub async fn db(&self) -> tokio_postgres::Client {
        let db = self.app.db().await;
        db.batch_execute("set search_path = public").await.unwrap();
        db
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, path).token(token).send().await
    }
}

/// One request being built (see [`Rest::request`]).
pub struct Call<'a> {
    rest: &'a Rest,
    method: Method,
    path: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

impl Call<'_> {
    /// Send `token` as the bearer token, if there is one.
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    pub fn auth(self, token: &str) -> Self {
        self.token(Some(token))
    }

    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        self.headers
            .extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// A JSON body (sent with `content-type: application/json`).
    pub fn body(self, body: &str) -> Self {
        self.body_opt(Some(body))
    }

    pub fn body_opt(mut self, body: Option<&str>) -> Self {
        self.body = body.map(str::to_string);
        self
    }

    pub async fn send(self) -> Reply {
        let app = &self.rest.app;
        let mut req = app.http.request(self.method, app.url(&self.path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = self.body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        Reply {
            status,
            headers,
            body,
            text,
        }
    }
}

/// The rows a hand-written query returns, as JSON (`query` selects one JSON value per row).
pub async fn by_sql(t: &Rest, query: &str) -> Value {
    let row = t
        .db()
        .await
        .query_one(
            &format!("select coalesce(json_agg(q.j), '[]')::text from ({query}) q(j)"),
            &[],
        )
        .await
        .unwrap();
    serde_json::from_str(&row.get::<_, String>(0)).unwrap()
}

/// GET `path` as the service role and compare it with `query` run by hand.
pub async fn same(t: &Rest, path: &str, query: &str) {
    let r = t.get(path, Some(&t.service)).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    let want = by_sql(t, query).await;
    assert_eq!(r.body, want, "{path}");
    assert!(
        want.as_array().is_some_and(|a| !a.is_empty()),
        "{path}: the hand-written query matched nothing, so the comparison proves little"
    );
}

/// Run one file of the postgrest-js suite (compat/postgrest-js/test) against `t`; returns
/// node's output. `env` adds variables (e.g. expected results computed by SQL).
pub async fn run_postgrest_js(t: &Rest, file: &str, env: &[(&str, String)]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compat/postgrest-js");
    let install = tokio::process::Command::new("npm")
        .args([
            "ci",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&dir)
        .output()
        .await
        .expect("npm (Node 20+) is needed for the postgrest-js compatibility suite");
    assert!(
        install.status.success(),
        "npm ci failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.args(["--test", file])
        .current_dir(&dir)
        .env("ROWCAST_REST_URL", t.app.url("/rest/v1"))
        .env("ROWCAST_ALICE_TOKEN", &t.alice)
        .env("ROWCAST_BOB_TOKEN", &t.bob)
        .env("ROWCAST_SERVICE_TOKEN", &t.service)
        .env("ROWCAST_BOB_ID", &t.bob_id);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = cmd.output().await.expect("run node --test");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "postgrest-js suite {file} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}
