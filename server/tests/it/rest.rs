//! The REST data API over real HTTP against real Postgres: the PostgREST grammar, writes,
//! row-level security through every route, error statuses, an injection corpus, idempotent
//! writes, and schema cache reloads.

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
            .call(
                Method::POST,
                "/rest/v1/admin/reload-schema",
                Some(&self.service),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut req = self.app.http.request(method, self.app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
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

    /// A direct connection as the admin, resolving names in `public` (the test user's own
    /// schema, `rowcast`, would otherwise come first on the search path).
    pub async fn db(&self) -> tokio_postgres::Client {
        let db = self.app.db().await;
        db.batch_execute("set search_path = public").await.unwrap();
        db
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, &[], None).await
    }
}

fn titles(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rest_reads_select_embed_filter_order_and_page() {
    let t = Rest::start().await;
    let svc = Some(t.service.as_str());

    // Columns, alias, cast.
    let r = t
        .get(
            "/rest/v1/posts?select=id,headline:title,rating::text&id=eq.1",
            svc,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!([{"id": 1, "headline": "alice first", "rating": "5"}])
    );
    assert_eq!(r.header("content-range"), Some("0-0/*"));

    // Embedding to-one and to-many, nested two levels, with aliases.
    let r = t
        .get(
            "/rest/v1/posts?select=id,title,writer:users(name),comments(id,body,author:users(name))&id=eq.1&comments.order=id",
            svc,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!([{"id": 1, "title": "alice first", "writer": {"name": "Alice"},
                "comments": [{"id": 1, "body": "nice one", "author": {"name": "Bob"}},
                             {"id": 2, "body": "thanks", "author": {"name": "Alice"}}]}])
    );

    // Ambiguous embedding (two foreign keys to users) is refused; a hint disambiguates.
    t.db().await.batch_execute("insert into messages (sender, recipient, body) select (select id from users where name='Alice'), (select id from users where name='Bob'), 'hey'").await.unwrap();
    let r = t
        .get("/rest/v1/messages?select=body,users(name)", svc)
        .await;
    assert_eq!(r.status, 300, "{}", r.text);
    assert_eq!(r.body["code"], "ambiguous-relationship");
    let r = t
        .get("/rest/v1/messages?select=body,from:users!sender(name),to:users!messages_recipient_fkey(name)", svc)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!([{"body": "hey", "from": {"name": "Alice"}, "to": {"name": "Bob"}}])
    );
    // Embedding by the foreign key column's name.
    let r = t
        .get("/rest/v1/messages?select=body,sender(name)", svc)
        .await;
    assert_eq!(
        r.body,
        json!([{"body": "hey", "sender": {"name": "Alice"}}]),
        "{}",
        r.text
    );

    // Operators.
    let cases: &[(&str, &[&str])] = &[
        ("rating=eq.5", &["alice first"]),
        ("rating=neq.5", &["bob first", "bob secret"]),
        ("rating=gt.3", &["alice first"]),
        ("rating=gte.3", &["alice first", "bob first"]),
        ("rating=lt.3", &["bob secret"]),
        ("rating=lte.3", &["bob first", "bob secret"]),
        ("title=like.alice*", &["alice first", "alice second"]),
        ("title=ilike.*SECRET", &["bob secret"]),
        ("title=match.^bob", &["bob first", "bob secret"]),
        ("title=imatch.FIRST$", &["alice first", "bob first"]),
        ("id=in.(2,3)", &["alice second", "bob first"]),
        ("title=in.(\"alice first\",nope)", &["alice first"]),
        ("rating=is.null", &["alice second"]),
        (
            "rating=not.is.null",
            &["alice first", "bob first", "bob secret"],
        ),
        ("published=is.true", &["alice first", "bob first"]),
        ("published=is.false", &["alice second", "bob secret"]),
        ("title=not.like.*first", &["alice second", "bob secret"]),
        ("tags=cs.{pg}", &["alice first", "bob first"]),
        ("tags=ov.{rust,x}", &["alice first"]),
        (
            "or=(rating.eq.5,title.eq.bob%20secret)",
            &["alice first", "bob secret"],
        ),
        (
            "and=(rating.gte.1,or(published.is.false,rating.gt.4))",
            &["alice first", "bob secret"],
        ),
        ("not.or=(rating.is.null,rating.lt.4)", &["alice first"]),
        (
            "or=(and(published.is.true,rating.lt.4),title.eq.\"alice second\")",
            &["alice second", "bob first"],
        ),
        ("id=gt.1&id=lt.4", &["alice second", "bob first"]),
    ];
    for (filter, want) in cases {
        let r = t
            .get(
                &format!("/rest/v1/posts?select=title&order=id&{filter}"),
                svc,
            )
            .await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text);
        assert_eq!(titles(&r.body), *want, "{filter}");
    }

    // Filters on an embedded table filter the embedded rows, not the parents.
    let r = t
        .get(
            "/rest/v1/posts?select=title,comments(body)&comments.body=like.*bob*&order=id",
            svc,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body[0]["comments"], json!([]));
    assert_eq!(r.body[2]["comments"], json!([{"body": "hi bob"}]));
    assert_eq!(r.body.as_array().unwrap().len(), 4);
    // `!inner` turns the embedded filter into a filter on the parents.
    let r = t
        .get(
            "/rest/v1/posts?select=title,comments!inner(body)&comments.body=like.*bob*",
            svc,
        )
        .await;
    assert_eq!(titles(&r.body), ["bob first", "bob secret"]);

    // Order: desc, nulls first/last, on an embedded to-one column.
    let r = t
        .get(
            "/rest/v1/posts?select=title&order=rating.desc.nullslast",
            svc,
        )
        .await;
    assert_eq!(
        titles(&r.body),
        ["alice first", "bob first", "bob secret", "alice second"]
    );
    let r = t
        .get(
            "/rest/v1/posts?select=title&order=rating.asc.nullsfirst",
            svc,
        )
        .await;
    assert_eq!(
        titles(&r.body),
        ["alice second", "bob secret", "bob first", "alice first"]
    );
    let r = t
        .get(
            "/rest/v1/posts?select=title,users(name)&order=users(name).desc,id.asc",
            svc,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        titles(&r.body),
        ["bob first", "bob secret", "alice first", "alice second"]
    );

    // limit/offset, Range, counts and Content-Range.
    let r = t
        .get("/rest/v1/posts?select=id&order=id&limit=2&offset=1", svc)
        .await;
    assert_eq!(r.body, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(r.header("content-range"), Some("1-2/*"));
    let r = t
        .call(
            Method::GET,
            "/rest/v1/posts?select=id&order=id",
            svc,
            &[
                ("range", "1-2"),
                ("range-unit", "items"),
                ("prefer", "count=exact"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 206, "{}", r.text);
    assert_eq!(r.body, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(r.header("content-range"), Some("1-2/4"));
    let r = t
        .call(
            Method::GET,
            "/rest/v1/posts?select=id&rating=gte.3",
            svc,
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-range"), Some("0-1/2"));
    for kind in ["planned", "estimated"] {
        let r = t
            .call(
                Method::GET,
                "/rest/v1/posts?select=id&rating=gte.3",
                svc,
                &[("prefer", &format!("count={kind}"))],
                None,
            )
            .await;
        // An estimate above the rows returned makes it a partial response.
        assert!(r.status == 200 || r.status == 206, "{kind}: {}", r.text);
        assert_eq!(r.body.as_array().unwrap().len(), 2);
        let range = r.header("content-range").unwrap();
        let total: i64 = range
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{range}"));
        assert!(total >= 1, "{kind}: {range}");
    }
    // HEAD answers with the headers only.
    let r = t
        .call(
            Method::HEAD,
            "/rest/v1/posts?select=id",
            svc,
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-range"), Some("0-3/4"));

    // Single object.
    let object = [("accept", "application/vnd.pgrst.object+json")];
    let r = t
        .call(
            Method::GET,
            "/rest/v1/posts?select=title&id=eq.3",
            svc,
            &object,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"title": "bob first"}));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/vnd.pgrst.object+json"));
    for filter in ["id=eq.99", "id=gt.1"] {
        let r = t
            .call(
                Method::GET,
                &format!("/rest/v1/posts?{filter}"),
                svc,
                &object,
                None,
            )
            .await;
        assert_eq!(r.status, 406, "{filter}");
        assert_eq!(r.body["code"], "not-acceptable");
    }
    let r = t
        .call(
            Method::GET,
            "/rest/v1/posts",
            svc,
            &[("accept", "text/csv")],
            None,
        )
        .await;
    assert_eq!(r.status, 406);
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_writes_insert_bulk_upsert_patch_delete_and_rpc() {
    let t = Rest::start().await;
    let alice = Some(t.alice.as_str());
    let rep = [("prefer", "return=representation")];

    // One object, representation with select=.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts?select=title,rating",
            alice,
            &rep,
            Some(r#"{"title":"new","rating":7}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body, json!([{"title": "new", "rating": 7}]));
    // Minimal (the default) returns no body.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &[],
            Some(r#"{"title":"quiet"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.text, "");
    // headers-only gives the Location of the new row.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &[("prefer", "return=headers-only")],
            Some(r#"{"title":"located"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with("/rest/v1/posts?id=eq."), "{location}");
    let r = t.get(&format!("{location}&select=title"), alice).await;
    assert_eq!(r.body, json!([{"title": "located"}]));

    // Bulk insert of an array, in one statement: one bad row and none are written.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &rep,
            Some(r#"[{"title":"b1","rating":1},{"title":"b2"}]"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert_eq!(r.body[1]["rating"], Value::Null);
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &[],
            Some(r#"[{"title":"c1"},{"title":null}]"#),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "constraint-violation");
    let r = t.get("/rest/v1/posts?title=eq.c1", alice).await;
    assert_eq!(r.body, json!([]));
    // columns= limits what is inserted.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts?columns=title",
            alice,
            &rep,
            Some(r#"{"title":"cols","rating":9}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body[0]["rating"], Value::Null);

    // Upsert: merge and ignore, on the primary key and on_conflict=.
    let svc = Some(t.service.as_str());
    let r = t
        .call(Method::POST, "/rest/v1/users", svc, &[("prefer", "return=representation,resolution=merge-duplicates")],
              Some(&format!(r#"[{{"id":"{}","name":"Alice II","email":"a@x"}},{{"id":"{}","name":"Carol","email":"c@x"}}]"#, t.alice_id, uuid::Uuid::new_v4())))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.get("/rest/v1/users?select=name&order=name", svc).await;
    assert_eq!(
        r.body,
        json!([{"name": "Alice II"}, {"name": "Bob"}, {"name": "Carol"}])
    );
    let r = t
        .call(
            Method::POST,
            "/rest/v1/users?on_conflict=email",
            svc,
            &[("prefer", "resolution=ignore-duplicates")],
            Some(&format!(
                r#"{{"id":"{}","name":"Impostor","email":"b@x"}}"#,
                uuid::Uuid::new_v4()
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.get("/rest/v1/users?select=name&email=eq.b@x", svc).await;
    assert_eq!(r.body, json!([{"name": "Bob"}]));
    let r = t
        .call(
            Method::POST,
            "/rest/v1/users?on_conflict=email",
            svc,
            &[("prefer", "resolution=merge-duplicates")],
            Some(&format!(
                r#"{{"id":"{}","name":"Bobby","email":"b@x"}}"#,
                t.bob_id
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.get("/rest/v1/users?select=name&email=eq.b@x", svc).await;
    assert_eq!(r.body, json!([{"name": "Bobby"}]));
    // A plain duplicate is a conflict.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/users",
            svc,
            &[],
            Some(&format!(r#"{{"id":"{}","name":"dup"}}"#, t.bob_id)),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["code"], "conflict");

    // PATCH with filters and representation.
    let r = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?title=like.alice*&select=title,rating",
            alice,
            &rep,
            Some(r#"{"rating":42}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert!(r.body.as_array().unwrap().iter().all(|p| p["rating"] == 42));
    let r = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?id=eq.1",
            alice,
            &[],
            Some(r#"{"rating":1}"#),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Single object on a write that touches two rows is refused and rolled back.
    let r = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?title=like.alice*",
            alice,
            &[
                ("accept", "application/vnd.pgrst.object+json"),
                ("prefer", "return=representation"),
            ],
            Some(r#"{"rating":0}"#),
        )
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
    let r = t.get("/rest/v1/posts?select=rating&id=eq.2", alice).await;
    assert_eq!(r.body, json!([{"rating": 42}]));

    // DELETE with filters; without any filter it is refused.
    let r = t
        .call(
            Method::DELETE,
            "/rest/v1/posts?title=eq.quiet",
            alice,
            &rep,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(titles(&r.body), ["quiet"]);
    for method in [Method::DELETE, Method::PATCH] {
        let r = t
            .call(
                method.clone(),
                "/rest/v1/posts",
                alice,
                &[],
                Some(r#"{"rating":0}"#),
            )
            .await;
        assert_eq!(r.status, 400, "{method}: {}", r.text);
        assert_eq!(r.body["code"], "filter-required");
    }

    // RPC with named arguments: scalar, default argument, set-returning, void, raise.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/add_numbers",
            alice,
            &[],
            Some(r#"{"a":1,"b":2}"#),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!(3)), "{}", r.text);
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/add_numbers",
            alice,
            &[],
            Some(r#"{"a":5}"#),
        )
        .await;
    assert_eq!(r.body, json!(15));
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/posts_titled",
            alice,
            &[],
            Some(r#"{"q":"FIRST"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        titles(&r.body),
        ["alice first"],
        "RLS applies inside functions too"
    );
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/touch_nothing",
            alice,
            &[],
            Some("{}"),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .call(Method::POST, "/rest/v1/rpc/fail_loudly", alice, &[], None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["message"], "custom failure");
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/add_numbers",
            alice,
            &[],
            Some(r#"{"x":1}"#),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["code"], "unknown-function");
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/add_numbers",
            alice,
            &[],
            Some(r#"{"a":"one"}"#),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-value");
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_rls_owner_only_user_a_cannot_read_update_or_delete_bs_rows_by_any_route() {
    let t = Rest::start().await;
    let alice = Some(t.alice.as_str());
    let db = t.db().await;
    let snapshot = || async {
        let rows = db
            .query("select id, owner::text, title, rating from posts where owner::text = $1 order by id", &[&t.bob_id])
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                format!(
                    "{}|{}|{}|{:?}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, Option<i32>>(3)
                )
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot().await;
    assert_eq!(before.len(), 2);

    // Reads: directly, by id, by filter, counted, and through embedding from users.
    let r = t.get("/rest/v1/posts?select=title&order=id", alice).await;
    assert_eq!(titles(&r.body), ["alice first", "alice second"]);
    let r = t.get("/rest/v1/posts?id=eq.3", alice).await;
    assert_eq!(r.body, json!([]));
    let r = t
        .call(
            Method::GET,
            "/rest/v1/posts?select=id",
            alice,
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    assert_eq!(r.header("content-range"), Some("0-1/2"));
    let r = t
        .get(
            &format!("/rest/v1/users?select=name,posts(title)&id=eq.{}", t.bob_id),
            alice,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!([{"name": "Bob", "posts": []}]));
    // Comments on Bob's posts are invisible too, also when embedded from comments upward.
    let r = t
        .get("/rest/v1/comments?select=body,posts(title)&order=id", alice)
        .await;
    assert_eq!(
        r.body,
        json!([{"body": "nice one", "posts": {"title": "alice first"}}, {"body": "thanks", "posts": {"title": "alice first"}}])
    );
    let r = t
        .get(
            "/rest/v1/users?select=name,posts!inner(title)&posts.title=like.bob*",
            alice,
        )
        .await;
    assert_eq!(r.body, json!([]));
    // Functions run as the caller.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/rpc/posts_titled",
            alice,
            &[],
            Some(r#"{"q":"bob"}"#),
        )
        .await;
    assert_eq!(r.body, json!([]));

    // Writes to Bob's rows touch nothing.
    let r = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?id=eq.3",
            alice,
            &[("prefer", "return=representation")],
            Some(r#"{"title":"pwned"}"#),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])), "{}", r.text);
    let r = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?id=gt.0",
            alice,
            &[],
            Some(r#"{"rating":0}"#),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = t
        .call(
            Method::DELETE,
            &format!("/rest/v1/posts?owner=eq.{}", t.bob_id),
            alice,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .call(
            Method::DELETE,
            "/rest/v1/comments?id=eq.4",
            alice,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    // Creating a row owned by Bob, or taking his post over with an upsert, is a 403.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &[],
            Some(&format!(r#"{{"title":"forged","owner":"{}"}}"#, t.bob_id)),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], "forbidden");
    assert!(
        !r.text.contains("posts_owner"),
        "policy name leaked: {}",
        r.text
    );
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &[("prefer", "resolution=merge-duplicates")],
            Some(r#"{"id":3,"title":"mine now"}"#),
        )
        .await;
    assert!(
        r.status == 403 || r.status == 409,
        "{}: {}",
        r.status,
        r.text
    );
    let r = t
        .call(
            Method::POST,
            "/rest/v1/comments",
            alice,
            &[],
            Some(r#"{"post_id":4,"body":"sneaky"}"#),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Reassigning her own post to Bob is refused by WITH CHECK.
    let r = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?id=eq.1",
            alice,
            &[],
            Some(&format!(r#"{{"owner":"{}"}}"#, t.bob_id)),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    assert_eq!(snapshot().await, before, "Bob's posts changed");
    let comments: i64 = db
        .query_one("select count(*) from comments where post_id in (3, 4)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(comments, 2);

    // Anonymous callers have no grant on posts at all.
    let r = t.get("/rest/v1/posts", None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // A bad token is a 401, not an anonymous request.
    let r = t.get("/rest/v1/posts", Some("not-a-token")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "unauthorized");
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_errors_have_codes_statuses_and_no_database_text() {
    let t = Rest::start().await;
    let svc = Some(t.service.as_str());
    let cases: &[(Method, &str, Option<&str>, u16, &str)] = &[
        (Method::GET, "/rest/v1/nope", None, 404, "unknown-table"),
        (
            Method::GET,
            "/rest/v1/posts?select=nope",
            None,
            400,
            "unknown-column",
        ),
        (
            Method::GET,
            "/rest/v1/posts?nope=eq.1",
            None,
            400,
            "unknown-column",
        ),
        (
            Method::GET,
            "/rest/v1/posts?order=nope",
            None,
            400,
            "unknown-column",
        ),
        (
            Method::GET,
            "/rest/v1/posts?select=id,canary(*)",
            None,
            400,
            "unknown-relationship",
        ),
        (
            Method::GET,
            "/rest/v1/posts?select=id,nothing(*)",
            None,
            404,
            "unknown-table",
        ),
        (
            Method::GET,
            "/rest/v1/posts?id=eq.abc",
            None,
            400,
            "invalid-value",
        ),
        (
            Method::GET,
            "/rest/v1/posts?id=bogus.1",
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/rest/v1/posts?or=(id.eq.1",
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/rest/v1/posts?limit=x",
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/rest/v1/posts?select=id::regclass",
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/rest/v1/posts?comments.id=eq.1",
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/rest/v1/posts?select=id,comments(id)&order=comments(id)",
            None,
            400,
            "bad-request",
        ),
        (
            Method::POST,
            "/rest/v1/posts",
            Some("{"),
            400,
            "invalid-json",
        ),
        (
            Method::POST,
            "/rest/v1/posts",
            Some("[1,2]"),
            400,
            "invalid-field",
        ),
        (
            Method::POST,
            "/rest/v1/posts",
            Some(r#"{"nope":1}"#),
            400,
            "unknown-column",
        ),
        (
            Method::POST,
            "/rest/v1/posts",
            Some(r#"{"title":"x","owner":"not-a-uuid"}"#),
            400,
            "invalid-value",
        ),
        (
            Method::POST,
            "/rest/v1/comments",
            Some(r#"{"post_id":999,"body":"x"}"#),
            409,
            "conflict",
        ),
        (
            Method::POST,
            "/rest/v1/rpc/nope",
            Some("{}"),
            404,
            "unknown-function",
        ),
        (
            Method::PATCH,
            "/rest/v1/posts?id=eq.1",
            Some("[]"),
            400,
            "invalid-field",
        ),
        (
            Method::PUT,
            "/rest/v1/posts?id=eq.1",
            Some("{}"),
            400,
            "invalid-field",
        ),
        (
            Method::GET,
            "/rest/v1/rpc/fail_loudly",
            None,
            405,
            "method-not-allowed",
        ),
        (
            Method::GET,
            "/rest/v1/rpc/add_numbers",
            None,
            404,
            "unknown-function",
        ),
        (
            Method::OPTIONS,
            "/rest/v1/posts",
            None,
            405,
            "method-not-allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = t.call(method.clone(), path, svc, &[], *body).await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text);
        assert_eq!(r.body["code"], *code, "{method} {path}: {}", r.text);
        assert!(r.body["message"].is_string(), "{}", r.text);
        for leak in [
            "violates",
            "constraint \"",
            "syntax error",
            "relation \"",
            "SQLSTATE",
            "_fkey",
            "postgres",
        ] {
            assert!(
                !r.text.contains(leak),
                "{method} {path} leaks database text: {}",
                r.text
            );
        }
    }
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_injection_corpus_in_every_position_only_gives_4xx_and_changes_nothing() {
    let t = Rest::start().await;
    let db = t.db().await;
    // A JSON column, so that JSON path keys reach SQL (as bound values) rather than
    // stopping at a type error.
    db.batch_execute("alter table posts add column meta jsonb")
        .await
        .unwrap();
    t.reload().await;
    let state = || async {
        let canary: String = db
            .query_one("select v from canary where id = 1", &[])
            .await
            .unwrap()
            .get(0);
        let posts: i64 = db
            .query_one("select count(*) from posts", &[])
            .await
            .unwrap()
            .get(0);
        let titles: String = db.query_one("select string_agg(title || coalesce(rating::text, ''), ',' order by id) from posts", &[]).await.unwrap().get(0);
        (canary, posts, titles)
    };
    let before = state().await;
    let payloads = [
        "x'; drop table canary; --",
        "\"; drop table canary; --",
        "1; update canary set v='dead'",
        "1) or (1=1",
        "id\" = 1 or \"1\"=\"1",
        "canary\"--",
        "$1",
        "pg_sleep(5)",
        "(select v from canary)",
        "*/ drop table canary /*",
        "\\\"",
        "%00",
        "id)::text,(select v from canary",
    ];
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let svc = Some(t.service.as_str());
    let alice = Some(t.alice.as_str());
    for p in payloads {
        let e = enc(p);
        let reqs: Vec<(Method, String, Option<String>)> = vec![
            (Method::GET, format!("/rest/v1/{e}"), None),
            (Method::GET, format!("/rest/v1/posts?select={e}"), None),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,{e}(id)"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select={e}x:title"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select=title::{e}"),
                None,
            ),
            (Method::GET, format!("/rest/v1/posts?{e}=eq.1"), None),
            (Method::GET, format!("/rest/v1/posts?id={e}.1"), None),
            (Method::GET, format!("/rest/v1/posts?id=eq.{e}"), None),
            (Method::GET, format!("/rest/v1/posts?title=in.({e})"), None),
            (Method::GET, format!("/rest/v1/posts?or=(id.eq.{e})"), None),
            (Method::GET, format!("/rest/v1/posts?or=({e}.eq.1)"), None),
            (Method::GET, format!("/rest/v1/posts?order={e}"), None),
            (Method::GET, format!("/rest/v1/posts?order=id.{e}"), None),
            (Method::GET, format!("/rest/v1/posts?limit={e}"), None),
            // JSON path keys, quantified lists, full-text languages, embedding hints.
            (Method::GET, format!("/rest/v1/posts?meta->>{e}=eq.1"), None),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,m:meta->{e}->>{e}&id=eq.0"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?order=meta->>{e}.desc&id=eq.0"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?or=(meta->>{e}.eq.1)"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?title=like(any).{{{e},x}}"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?title=fts({e}).x"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?title=wfts(english).{e}&id=eq.0"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,users!{e}(name)"),
                None,
            ),
            // Spread names and their fields, and empty embeddings used as filters.
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,...{e}(name)"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/comments?select=id,...posts({e})"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,comments()&{e}=not.is.null"),
                None,
            ),
            (
                Method::PATCH,
                format!("/rest/v1/posts?meta->>{e}=eq.1"),
                Some(json!({"title": p}).to_string()),
            ),
            (
                Method::POST,
                format!("/rest/v1/posts?on_conflict={e}"),
                Some(r#"{"title":"t"}"#.to_string()),
            ),
            (
                Method::POST,
                format!("/rest/v1/posts?columns={e}"),
                Some(r#"{"title":"t"}"#.to_string()),
            ),
            (
                Method::POST,
                "/rest/v1/posts".to_string(),
                Some(json!({ p: 1 }).to_string()),
            ),
            (
                Method::PATCH,
                format!("/rest/v1/posts?id=eq.{e}"),
                Some(json!({"title": p}).to_string()),
            ),
            (Method::DELETE, format!("/rest/v1/posts?title=eq.{e}"), None),
            (Method::DELETE, format!("/rest/v1/posts?{e}=eq.1"), None),
            (
                Method::POST,
                format!("/rest/v1/rpc/{e}"),
                Some("{}".to_string()),
            ),
            (
                Method::POST,
                "/rest/v1/rpc/add_numbers".to_string(),
                Some(json!({ p: 1 }).to_string()),
            ),
            (
                Method::POST,
                "/rest/v1/rpc/add_numbers".to_string(),
                Some(json!({ "a": p }).to_string()),
            ),
        ];
        for (method, path, body) in reqs {
            for who in [svc, alice] {
                let r = t
                    .call(method.clone(), &path, who, &[], body.as_deref())
                    .await;
                // Values and aliases are data (bound parameters): a filter value may match
                // nothing, and an alias comes back verbatim as a JSON key.
                let alias_echoed = path.contains("x:title")
                    && r.status == 200
                    && r.body[0]
                        .as_object()
                        .is_some_and(|o| o.contains_key(&format!("{p}x")));
                let ok = (400..500).contains(&r.status)
                    || (r.status == 200 && r.body == json!([]))
                    || (r.status == 204 && [Method::DELETE, Method::PATCH].contains(&method))
                    || alias_echoed;
                assert!(ok, "{method} {path} ({p}) gave {}: {}", r.status, r.text);
            }
        }
    }
    assert_eq!(state().await, before, "the injection corpus changed data");
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_idempotency_key_replays_the_first_response_and_concurrent_duplicates_apply_once() {
    let t = Rest::start().await;
    let alice = Some(t.alice.as_str());
    let db = t.db().await;
    let count = |title: &'static str| {
        let db = &db;
        async move {
            db.query_one("select count(*) from posts where title = $1", &[&title])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let headers = [
        ("idempotency-key", "k-1"),
        ("prefer", "return=representation"),
    ];
    let first = t
        .call(
            Method::POST,
            "/rest/v1/posts?select=id,title",
            alice,
            &headers,
            Some(r#"{"title":"once"}"#),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = t
        .call(
            Method::POST,
            "/rest/v1/posts?select=id,title",
            alice,
            &headers,
            Some(r#"{"title":"once"}"#),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(
        again.body, first.body,
        "the retry must get the first response"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), first.header("content-type"));
    assert_eq!(count("once").await, 1);

    // The same key for a different request is refused; for another user it is independent.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &headers,
            Some(r#"{"title":"other"}"#),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["code"], "idempotency-key-reused");
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            Some(&t.bob),
            &headers,
            Some(r#"{"title":"once"}"#),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(count("once").await, 2);

    // A failed write is not remembered: the retry runs again.
    let fail = [("idempotency-key", "k-2")];
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &fail,
            Some(r#"{"title":null}"#),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts",
            alice,
            &fail,
            Some(r#"{"title":null}"#),
        )
        .await;
    assert_eq!(r.status, 400);

    // PATCH, DELETE and rpc replays.
    let k = [("idempotency-key", "k-3")];
    let r1 = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?id=eq.1",
            alice,
            &k,
            Some(r#"{"rating":100}"#),
        )
        .await;
    assert_eq!(r1.status, 204);
    db.execute("update posts set rating = 0 where id = 1", &[])
        .await
        .unwrap();
    let r2 = t
        .call(
            Method::PATCH,
            "/rest/v1/posts?id=eq.1",
            alice,
            &k,
            Some(r#"{"rating":100}"#),
        )
        .await;
    assert_eq!(r2.status, 204);
    let rating: Option<i32> = db
        .query_one("select rating from posts where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rating, Some(0), "the replayed PATCH was applied again");

    // Concurrent duplicates: exactly one applies, all get the same answer.
    let concurrent = [
        ("idempotency-key", "k-many"),
        ("prefer", "return=representation"),
    ];
    let calls = (0..8).map(|_| {
        t.call(
            Method::POST,
            "/rest/v1/posts?select=id",
            alice,
            &concurrent,
            Some(r#"{"title":"raced"}"#),
        )
    });
    let replies = futures::future::join_all(calls).await;
    for r in &replies {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body, replies[0].body);
    }
    assert_eq!(
        count("raced").await,
        1,
        "a concurrent duplicate applied twice"
    );

    // Expired keys are forgotten.
    db.execute("update rowcast.rest_idempotency set created_at = now() - interval '25 hours' where key = 'k-1'", &[]).await.unwrap();
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts?select=id,title",
            alice,
            &headers,
            Some(r#"{"title":"once"}"#),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(count("once").await, 3);
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_schema_cache_picks_up_ddl_without_restart_and_on_admin_call() {
    let t = Rest::start().await;
    let svc = Some(t.service.as_str());
    let db = t.db().await;
    // An admin adds a column and a table in psql; the event trigger rings the doorbell.
    db.batch_execute(
        "alter table posts add column subtitle text default 'sub';
         create table later (id int primary key, note text);
         insert into later values (1, 'hello');
         grant select on later to rowcast_service;",
    )
    .await
    .unwrap();
    support::eventually(
        Duration::from_secs(10),
        "new column visible over REST",
        || async {
            t.get("/rest/v1/posts?select=subtitle&id=eq.1", svc)
                .await
                .body
                == json!([{"subtitle": "sub"}])
        },
    )
    .await;
    support::eventually(
        Duration::from_secs(10),
        "new table visible over REST",
        || async { t.get("/rest/v1/later", svc).await.body == json!([{"id": 1, "note": "hello"}]) },
    )
    .await;
    db.batch_execute("alter table posts drop column subtitle")
        .await
        .unwrap();
    support::eventually(Duration::from_secs(10), "dropped column gone", || async {
        t.get("/rest/v1/posts?select=subtitle", svc).await.status == 400
    })
    .await;

    // Prepared statements do not outlive a column's type change.
    for _ in 0..3 {
        let r = t.get("/rest/v1/posts?select=id&rating=eq.5", svc).await;
        assert_eq!(r.body, json!([{"id": 1}]));
    }
    db.batch_execute("alter table posts alter column rating type text using rating::text")
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(10),
        "text comparison after the type change",
        || async {
            let r = t.get("/rest/v1/posts?select=id&rating=eq.abc", svc).await;
            r.status == 200 && r.body == json!([])
        },
    )
    .await;

    // With the event trigger off, DDL goes unnoticed until `rowcast reload-schema` rings
    // the doorbell from outside.
    db.batch_execute(
        "alter event trigger rowcast_rest_ddl disable; alter event trigger rowcast_rest_drop disable",
    )
    .await
    .unwrap();
    // Let reloads rung by the DDL above finish first.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    db.batch_execute("alter table posts add column quiet text default 'q'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.get("/rest/v1/posts?select=quiet", svc).await.status, 400);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args(["reload-schema", "--database-url", &t.app.db_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::eventually(
        Duration::from_secs(10),
        "reload-schema CLI picked up",
        || async {
            t.get("/rest/v1/posts?select=quiet&id=eq.1", svc).await.body == json!([{"quiet": "q"}])
        },
    )
    .await;
    db.batch_execute(
        "alter event trigger rowcast_rest_ddl enable; alter event trigger rowcast_rest_drop enable",
    )
    .await
    .unwrap();

    // The admin call reloads synchronously, and only for the service role.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/admin/reload-schema",
            Some(&t.alice),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    db.batch_execute("alter table later rename to renamed")
        .await
        .unwrap();
    t.reload().await;
    assert_eq!(t.get("/rest/v1/later", svc).await.status, 404);
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_schema_listener_reconnects_after_losing_the_database() {
    use crate::support::proxy::{self, Proxy};
    let url = support::migrated_db().await;
    let direct = support::connect(&url).await;
    direct
        .batch_execute(
            "set search_path = public;
             create table gauge (id int primary key, v int);
             insert into gauge values (1, 10);
             grant select on gauge to rowcast_anon;",
        )
        .await
        .unwrap();
    let proxy = Proxy::start(proxy::target_of(&url), true).await;
    let mut config = Config::for_database(&proxy.url_through(&url));
    config.database.connect_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(config).await;
    let get = |path: &'static str| {
        let app = &app;
        async move {
            app.http
                .get(app.url(path))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    support::eventually(Duration::from_secs(10), "cache loaded", || async {
        get("/rest/v1/gauge").await == 200
    })
    .await;
    // Cut every connection (the listener's too), change the schema meanwhile, come back.
    proxy.set_up(false);
    support::eventually(
        Duration::from_secs(10),
        "503 while the database is away",
        || async {
            let r = app
                .http
                .get(app.url("/rest/v1/gauge"))
                .send()
                .await
                .unwrap();
            r.status() == 503 && r.json::<Value>().await.unwrap()["code"] == "database-unavailable"
        },
    )
    .await;
    direct
        .batch_execute("alter table gauge add column unit text default 'kPa'")
        .await
        .unwrap();
    proxy.set_up(true);
    support::eventually(
        Duration::from_secs(20),
        "reloaded after reconnect",
        || async { get("/rest/v1/gauge?select=unit").await == 200 },
    )
    .await;
    // And it is listening again: a later change arrives by doorbell.
    direct
        .batch_execute("alter table gauge add column later int default 1")
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(10),
        "doorbell after reconnect",
        || async { get("/rest/v1/gauge?select=later").await == 200 },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn rest_limits_body_size_rows_embed_depth_and_exposed_schemas() {
    let t = Rest::start_with(|c| {
        c.http.max_body_bytes = 200;
        c.rest.max_rows = 3;
        c.rest.max_embed_depth = 1;
        c.rest.allow_unfiltered_writes = true;
        c.database.statement_timeout = Duration::from_millis(500);
    })
    .await;
    let svc = Some(t.service.as_str());
    let big = json!({ "title": "x".repeat(500) }).to_string();
    let r = t
        .call(Method::POST, "/rest/v1/posts", svc, &[], Some(&big))
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.body["code"], "payload-too-large");
    let r = t.get("/rest/v1/posts?select=id", svc).await;
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let r = t.get("/rest/v1/posts?select=id&limit=100", svc).await;
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let r = t.get("/rest/v1/posts?select=id,comments(id)", svc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = t
        .get("/rest/v1/posts?select=id,comments(id,users(name))", svc)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // The server's own schema is not exposed.
    let r = t.get("/rest/v1/rest_idempotency", svc).await;
    assert_eq!(r.status, 404);
    let r = t
        .call(
            Method::GET,
            "/rest/v1/schema_migrations",
            svc,
            &[("accept-profile", "rowcast")],
            None,
        )
        .await;
    assert_eq!(r.status, 406, "{}", r.text);

    // Grammar nesting is bounded before anything recurses deeply.
    let deep = format!(
        "/rest/v1/posts?or=({}id.eq.1{})",
        "and(".repeat(5000),
        ")".repeat(5000)
    );
    let r = t.get(&deep, svc).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let deep = format!(
        "/rest/v1/posts?select={}id{}",
        "comments(".repeat(5000),
        ")".repeat(5000)
    );
    assert_eq!(t.get(&deep, svc).await.status, 400);

    // Too many filter values is a 400, not a failed statement.
    let many = (0..5100).map(|_| "id=gt.1").collect::<Vec<_>>().join("&");
    let r = t.get(&format!("/rest/v1/posts?{many}"), svc).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("filter values"), "{}", r.text);
    let many = (0..5100).map(|_| "id.eq.1").collect::<Vec<_>>().join(",");
    let r = t
        .call(
            Method::DELETE,
            &format!("/rest/v1/posts?or=({many})"),
            svc,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("filter values"), "{}", r.text);

    // on_conflict needs a unique index.
    let r = t
        .call(
            Method::POST,
            "/rest/v1/users?on_conflict=name",
            svc,
            &[("prefer", "resolution=merge-duplicates")],
            Some(r#"{"id":"00000000-0000-0000-0000-000000000009","name":"x"}"#),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    // The statement timeout ends a slow request with 504.
    t.db()
        .await
        .batch_execute(
            "create function slow() returns int language sql as 'select 1 from pg_sleep(3)';",
        )
        .await
        .unwrap();
    t.reload().await;
    let r = t
        .call(Method::POST, "/rest/v1/rpc/slow", svc, &[], Some("{}"))
        .await;
    assert_eq!(r.status, 504, "{}", r.text);
    assert_eq!(r.body["code"], "timeout");

    // With ROWCAST_REST_ALLOW_UNFILTERED_WRITES an unfiltered DELETE is allowed.
    let r = t
        .call(Method::DELETE, "/rest/v1/comments", svc, &[], None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(t.get("/rest/v1/comments", svc).await.body, json!([]));
    assert_eq!(t.get("/health", None).await.status, 200);
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_writes_to_a_synced_table_are_captured_in_order() {
    let t = Rest::start().await;
    let alice = Some(t.alice.as_str());
    let db = t.db().await;
    db.batch_execute("select rowcast.enable_sync('public.posts')")
        .await
        .unwrap();
    t.reload().await;
    let r = t
        .call(
            Method::POST,
            "/rest/v1/posts?select=id",
            alice,
            &[("prefer", "return=representation")],
            Some(r#"{"title":"synced"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body[0]["id"].as_i64().unwrap();
    let r = t
        .call(
            Method::PATCH,
            &format!("/rest/v1/posts?id=eq.{id}"),
            alice,
            &[],
            Some(r#"{"rating":2}"#),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .call(
            Method::DELETE,
            &format!("/rest/v1/posts?id=eq.{id}"),
            alice,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let ops: Vec<String> = db
        .query(
            "select op::text from rowcast.change_log where table_name = 'posts' and pk ->> 'id' = $1 order by xid, id",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ops, ["I", "U", "D"]);
    t.app.shutdown().await;
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

/// The same requests through `@supabase/postgrest-js` (compat/postgrest-js), against this
/// server: the Node suite asserts the results the HTTP-level tests above assert.
#[tokio::test]
async fn rest_postgrest_js_client_gets_the_same_results() {
    let t = Rest::start().await;
    let stdout = run_postgrest_js(&t, "test/rest.test.mjs", &[]).await;
    assert!(
        stdout.contains("# pass 7") && stdout.contains("# fail 0"),
        "the postgrest-js suite did not run all its tests:\n{stdout}"
    );
    t.app.shutdown().await;
}
