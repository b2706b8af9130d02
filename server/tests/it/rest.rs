//! The REST data API over real HTTP against real Postgres: the PostgREST grammar, writes,
//! row-level security through every route, error statuses, an injection corpus, idempotent
//! writes, and schema cache reloads.

use std::time::Duration;

use reqwest::Method;
use rowcast::config::Config;
use serde_json::{json, Value};

use crate::{
    rest_support::{run_postgrest_js, Rest},
    support::{self, TestApp},
};

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
        .request(Method::GET, "/rest/v1/posts?select=id&order=id")
        .token(svc)
        .headers(&[
            ("range", "1-2"),
            ("range-unit", "items"),
            ("prefer", "count=exact"),
        ])
        .send()
        .await;
    assert_eq!(r.status, 206, "{}", r.text);
    assert_eq!(r.body, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(r.header("content-range"), Some("1-2/4"));
    let r = t
        .request(Method::GET, "/rest/v1/posts?select=id&rating=gte.3")
        .token(svc)
        .headers(&[("prefer", "count=exact")])
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-range"), Some("0-1/2"));
    for kind in ["planned", "estimated"] {
        let r = t
            .request(Method::GET, "/rest/v1/posts?select=id&rating=gte.3")
            .token(svc)
            .headers(&[("prefer", &format!("count={kind}"))])
            .send()
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
        .request(Method::HEAD, "/rest/v1/posts?select=id")
        .token(svc)
        .headers(&[("prefer", "count=exact")])
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-range"), Some("0-3/4"));

    // Single object.
    let object = [("accept", "application/vnd.pgrst.object+json")];
    let r = t
        .request(Method::GET, "/rest/v1/posts?select=title&id=eq.3")
        .token(svc)
        .headers(&object)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"title": "bob first"}));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/vnd.pgrst.object+json"));
    for filter in ["id=eq.99", "id=gt.1"] {
        let r = t
            .request(Method::GET, &format!("/rest/v1/posts?{filter}"))
            .token(svc)
            .headers(&object)
            .send()
            .await;
        assert_eq!(r.status, 406, "{filter}");
        assert_eq!(r.body["code"], "not-acceptable");
    }
    let r = t
        .request(Method::GET, "/rest/v1/posts")
        .token(svc)
        .headers(&[("accept", "text/csv")])
        .send()
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
        .request(Method::POST, "/rest/v1/posts?select=title,rating")
        .token(alice)
        .headers(&rep)
        .body(r#"{"title":"new","rating":7}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body, json!([{"title": "new", "rating": 7}]));
    // Minimal (the default) returns no body.
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .body(r#"{"title":"quiet"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.text, "");
    // headers-only gives the Location of the new row.
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .headers(&[("prefer", "return=headers-only")])
        .body(r#"{"title":"located"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with("/rest/v1/posts?id=eq."), "{location}");
    let r = t.get(&format!("{location}&select=title"), alice).await;
    assert_eq!(r.body, json!([{"title": "located"}]));

    // Bulk insert of an array, in one statement: one bad row and none are written.
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .headers(&rep)
        .body(r#"[{"title":"b1","rating":1},{"title":"b2"}]"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert_eq!(r.body[1]["rating"], Value::Null);
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .body(r#"[{"title":"c1"},{"title":null}]"#)
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "constraint-violation");
    let r = t.get("/rest/v1/posts?title=eq.c1", alice).await;
    assert_eq!(r.body, json!([]));
    // columns= limits what is inserted.
    let r = t
        .request(Method::POST, "/rest/v1/posts?columns=title")
        .token(alice)
        .headers(&rep)
        .body(r#"{"title":"cols","rating":9}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body[0]["rating"], Value::Null);

    // Upsert: merge and ignore, on the primary key and on_conflict=.
    let svc = Some(t.service.as_str());
    let r = t
        .request(Method::POST, "/rest/v1/users").token(svc).headers(&[("prefer", "return=representation,resolution=merge-duplicates")]).body(&format!(r#"[{{"id":"{}","name":"Alice II","email":"a@x"}},{{"id":"{}","name":"Carol","email":"c@x"}}]"#, t.alice_id, uuid::Uuid::new_v4())).send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.get("/rest/v1/users?select=name&order=name", svc).await;
    assert_eq!(
        r.body,
        json!([{"name": "Alice II"}, {"name": "Bob"}, {"name": "Carol"}])
    );
    let r = t
        .request(Method::POST, "/rest/v1/users?on_conflict=email")
        .token(svc)
        .headers(&[("prefer", "resolution=ignore-duplicates")])
        .body(&format!(
            r#"{{"id":"{}","name":"Impostor","email":"b@x"}}"#,
            uuid::Uuid::new_v4()
        ))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.get("/rest/v1/users?select=name&email=eq.b@x", svc).await;
    assert_eq!(r.body, json!([{"name": "Bob"}]));
    let r = t
        .request(Method::POST, "/rest/v1/users?on_conflict=email")
        .token(svc)
        .headers(&[("prefer", "resolution=merge-duplicates")])
        .body(&format!(
            r#"{{"id":"{}","name":"Bobby","email":"b@x"}}"#,
            t.bob_id
        ))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t.get("/rest/v1/users?select=name&email=eq.b@x", svc).await;
    assert_eq!(r.body, json!([{"name": "Bobby"}]));
    // A plain duplicate is a conflict.
    let r = t
        .request(Method::POST, "/rest/v1/users")
        .token(svc)
        .body(&format!(r#"{{"id":"{}","name":"dup"}}"#, t.bob_id))
        .send()
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["code"], "conflict");

    // PATCH with filters and representation.
    let r = t
        .request(
            Method::PATCH,
            "/rest/v1/posts?title=like.alice*&select=title,rating",
        )
        .token(alice)
        .headers(&rep)
        .body(r#"{"rating":42}"#)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert!(r.body.as_array().unwrap().iter().all(|p| p["rating"] == 42));
    let r = t
        .request(Method::PATCH, "/rest/v1/posts?id=eq.1")
        .token(alice)
        .body(r#"{"rating":1}"#)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Single object on a write that touches two rows is refused and rolled back.
    let r = t
        .request(Method::PATCH, "/rest/v1/posts?title=like.alice*")
        .token(alice)
        .headers(&[
            ("accept", "application/vnd.pgrst.object+json"),
            ("prefer", "return=representation"),
        ])
        .body(r#"{"rating":0}"#)
        .send()
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
    let r = t.get("/rest/v1/posts?select=rating&id=eq.2", alice).await;
    assert_eq!(r.body, json!([{"rating": 42}]));

    // DELETE with filters; without any filter it is refused.
    let r = t
        .request(Method::DELETE, "/rest/v1/posts?title=eq.quiet")
        .token(alice)
        .headers(&rep)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(titles(&r.body), ["quiet"]);
    for method in [Method::DELETE, Method::PATCH] {
        let r = t
            .request(method.clone(), "/rest/v1/posts")
            .token(alice)
            .body(r#"{"rating":0}"#)
            .send()
            .await;
        assert_eq!(r.status, 400, "{method}: {}", r.text);
        assert_eq!(r.body["code"], "filter-required");
    }

    // RPC with named arguments: scalar, default argument, set-returning, void, raise.
    let r = t
        .request(Method::POST, "/rest/v1/rpc/add_numbers")
        .token(alice)
        .body(r#"{"a":1,"b":2}"#)
        .send()
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!(3)), "{}", r.text);
    let r = t
        .request(Method::POST, "/rest/v1/rpc/add_numbers")
        .token(alice)
        .body(r#"{"a":5}"#)
        .send()
        .await;
    assert_eq!(r.body, json!(15));
    // The server's connections run with JIT off: its statements are short, and compiling
    // them (the live tail's read of a large change log, hundreds of times a second) cost
    // more CPU than the writes they deliver.
    let r = t
        .request(Method::POST, "/rest/v1/rpc/server_setting")
        .token(alice)
        .body(r#"{"name":"jit"}"#)
        .send()
        .await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!("off")),
        "{}",
        r.text
    );
    let r = t
        .request(Method::POST, "/rest/v1/rpc/posts_titled")
        .token(alice)
        .body(r#"{"q":"FIRST"}"#)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        titles(&r.body),
        ["alice first"],
        "RLS applies inside functions too"
    );
    let r = t
        .request(Method::POST, "/rest/v1/rpc/touch_nothing")
        .token(alice)
        .body("{}")
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .request(Method::POST, "/rest/v1/rpc/fail_loudly")
        .token(alice)
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["message"], "custom failure");
    let r = t
        .request(Method::POST, "/rest/v1/rpc/add_numbers")
        .token(alice)
        .body(r#"{"x":1}"#)
        .send()
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["code"], "unknown-function");
    let r = t
        .request(Method::POST, "/rest/v1/rpc/add_numbers")
        .token(alice)
        .body(r#"{"a":"one"}"#)
        .send()
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
        .request(Method::GET, "/rest/v1/posts?select=id")
        .token(alice)
        .headers(&[("prefer", "count=exact")])
        .send()
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
        .request(Method::POST, "/rest/v1/rpc/posts_titled")
        .token(alice)
        .body(r#"{"q":"bob"}"#)
        .send()
        .await;
    assert_eq!(r.body, json!([]));

    // Writes to Bob's rows touch nothing.
    let r = t
        .request(Method::PATCH, "/rest/v1/posts?id=eq.3")
        .token(alice)
        .headers(&[("prefer", "return=representation")])
        .body(r#"{"title":"pwned"}"#)
        .send()
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])), "{}", r.text);
    let r = t
        .request(Method::PATCH, "/rest/v1/posts?id=gt.0")
        .token(alice)
        .body(r#"{"rating":0}"#)
        .send()
        .await;
    assert_eq!(r.status, 204);
    let r = t
        .request(
            Method::DELETE,
            &format!("/rest/v1/posts?owner=eq.{}", t.bob_id),
        )
        .token(alice)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .request(Method::DELETE, "/rest/v1/comments?id=eq.4")
        .token(alice)
        .send()
        .await;
    assert_eq!(r.status, 204);
    // Creating a row owned by Bob, or taking his post over with an upsert, is a 403.
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .body(&format!(r#"{{"title":"forged","owner":"{}"}}"#, t.bob_id))
        .send()
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], "forbidden");
    assert!(
        !r.text.contains("posts_owner"),
        "policy name leaked: {}",
        r.text
    );
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .headers(&[("prefer", "resolution=merge-duplicates")])
        .body(r#"{"id":3,"title":"mine now"}"#)
        .send()
        .await;
    assert!(
        r.status == 403 || r.status == 409,
        "{}: {}",
        r.status,
        r.text
    );
    let r = t
        .request(Method::POST, "/rest/v1/comments")
        .token(alice)
        .body(r#"{"post_id":4,"body":"sneaky"}"#)
        .send()
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Reassigning her own post to Bob is refused by WITH CHECK.
    let r = t
        .request(Method::PATCH, "/rest/v1/posts?id=eq.1")
        .token(alice)
        .body(&format!(r#"{{"owner":"{}"}}"#, t.bob_id))
        .send()
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
        let r = t
            .request(method.clone(), path)
            .token(svc)
            .body_opt(*body)
            .send()
            .await;
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
            // To-many spreads, presence inside `or`/`and`, and a function's rows over GET.
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,...comments({e})"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/users?select=id,...{e}(title)"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,...comments(body)&comments.{e}=eq.1"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,comments()&or=({e}.is.null,id.eq.0)"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/posts?select=id,comments()&and=(comments.not.is.null,id.eq.{e})"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/rpc/posts_titled?q=zz&select={e}"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/rpc/posts_titled?q=zz&{e}=eq.1"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/rpc/posts_titled?q=zz&order={e}"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/rpc/posts_titled?q=zz&or=({e}.is.null)"),
                None,
            ),
            (
                Method::GET,
                format!("/rest/v1/rpc/posts_titled?q={e}&select=id&title=eq.{e}"),
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
                    .request(method.clone(), &path)
                    .token(who)
                    .body_opt(body.as_deref())
                    .send()
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
        .request(Method::POST, "/rest/v1/posts?select=id,title")
        .token(alice)
        .headers(&headers)
        .body(r#"{"title":"once"}"#)
        .send()
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = t
        .request(Method::POST, "/rest/v1/posts?select=id,title")
        .token(alice)
        .headers(&headers)
        .body(r#"{"title":"once"}"#)
        .send()
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
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .headers(&headers)
        .body(r#"{"title":"other"}"#)
        .send()
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["code"], "idempotency-key-reused");
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .auth(&t.bob)
        .headers(&headers)
        .body(r#"{"title":"once"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(count("once").await, 2);

    // A failed write is not remembered: the retry runs again.
    let fail = [("idempotency-key", "k-2")];
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .headers(&fail)
        .body(r#"{"title":null}"#)
        .send()
        .await;
    assert_eq!(r.status, 400);
    let r = t
        .request(Method::POST, "/rest/v1/posts")
        .token(alice)
        .headers(&fail)
        .body(r#"{"title":null}"#)
        .send()
        .await;
    assert_eq!(r.status, 400);

    // PATCH, DELETE and rpc replays.
    let k = [("idempotency-key", "k-3")];
    let r1 = t
        .request(Method::PATCH, "/rest/v1/posts?id=eq.1")
        .token(alice)
        .headers(&k)
        .body(r#"{"rating":100}"#)
        .send()
        .await;
    assert_eq!(r1.status, 204);
    db.execute("update posts set rating = 0 where id = 1", &[])
        .await
        .unwrap();
    let r2 = t
        .request(Method::PATCH, "/rest/v1/posts?id=eq.1")
        .token(alice)
        .headers(&k)
        .body(r#"{"rating":100}"#)
        .send()
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
        t.request(Method::POST, "/rest/v1/posts?select=id")
            .token(alice)
            .headers(&concurrent)
            .body(r#"{"title":"raced"}"#)
            .send()
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
        .request(Method::POST, "/rest/v1/posts?select=id,title")
        .token(alice)
        .headers(&headers)
        .body(r#"{"title":"once"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201);
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(count("once").await, 3);
    t.app.shutdown().await;
}

/// A connection of its own that LISTENs on `channels`; yields each notification's channel
/// (for as long as the returned client lives).
async fn listen(
    url: &str,
    channels: &[&str],
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use futures::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                if tx.send(n.channel().to_string()).is_err() {
                    return;
                }
            }
        }
    });
    for channel in channels {
        client
            .batch_execute(&format!("listen {channel}"))
            .await
            .unwrap();
    }
    (client, rx)
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
    // Let reloads rung by the DDL above finish first: ring the doorbell by hand after a
    // marker table, and wait until a reload has seen the marker.
    db.batch_execute(
        "create table quiet_marker (id int primary key);
         grant select on quiet_marker to rowcast_service;
         select pg_notify('rowcast_rest_schema', '');",
    )
    .await
    .unwrap();
    support::eventually(Duration::from_secs(10), "marker table visible", || async {
        t.get("/rest/v1/quiet_marker", svc).await.status == 200
    })
    .await;
    // Our own listener hears the doorbell channel and a sentinel: Postgres delivers
    // notifications in commit order, so once the sentinel arrives, a doorbell rung by the
    // DDL before it would already have arrived.
    let (_listening, mut heard) = listen(
        &t.app.db_url,
        &["rowcast_rest_schema", "rest_test_sentinel"],
    )
    .await;
    db.batch_execute("alter table posts add column quiet text default 'q'")
        .await
        .unwrap();
    db.batch_execute("notify rest_test_sentinel").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("the sentinel notification arrives");
    assert_eq!(
        first.as_deref(),
        Some("rest_test_sentinel"),
        "the DDL rang the doorbell"
    );
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
        .request(Method::POST, "/rest/v1/admin/reload-schema")
        .auth(&t.alice)
        .send()
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
        .request(Method::POST, "/rest/v1/posts")
        .token(svc)
        .body(&big)
        .send()
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
        .request(Method::GET, "/rest/v1/schema_migrations")
        .token(svc)
        .headers(&[("accept-profile", "rowcast")])
        .send()
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
        .request(Method::DELETE, &format!("/rest/v1/posts?or=({many})"))
        .token(svc)
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("filter values"), "{}", r.text);

    // on_conflict needs a unique index.
    let r = t
        .request(Method::POST, "/rest/v1/users?on_conflict=name")
        .token(svc)
        .headers(&[("prefer", "resolution=merge-duplicates")])
        .body(r#"{"id":"00000000-0000-0000-0000-000000000009","name":"x"}"#)
        .send()
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
        .request(Method::POST, "/rest/v1/rpc/slow")
        .token(svc)
        .body("{}")
        .send()
        .await;
    assert_eq!(r.status, 504, "{}", r.text);
    assert_eq!(r.body["code"], "timeout");

    // With ROWCAST_REST_ALLOW_UNFILTERED_WRITES an unfiltered DELETE is allowed.
    let r = t
        .request(Method::DELETE, "/rest/v1/comments")
        .token(svc)
        .send()
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
        .request(Method::POST, "/rest/v1/posts?select=id")
        .token(alice)
        .headers(&[("prefer", "return=representation")])
        .body(r#"{"title":"synced"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body[0]["id"].as_i64().unwrap();
    let r = t
        .request(Method::PATCH, &format!("/rest/v1/posts?id=eq.{id}"))
        .token(alice)
        .body(r#"{"rating":2}"#)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .request(Method::DELETE, &format!("/rest/v1/posts?id=eq.{id}"))
        .token(alice)
        .send()
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
