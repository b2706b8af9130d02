//! The rest of PostgREST's grammar over real HTTP: JSON paths, quantified and full-text
//! operators, PostgREST's statuses (400 / 300 / 416), and writes on a table with
//! column-level grants. Each result is compared with SQL written by hand on the same data.

use reqwest::Method;
use serde_json::{json, Value};

use crate::rest_support::{by_sql, same, Rest};

/// Makers and their gadgets: JSON columns, a text column, a generated `tsvector`.
pub const GADGETS: &str = r#"
create table makers (id int primary key, name text not null);
create table gadgets (
  id int primary key,
  maker_id int references makers(id),
  name text not null,
  meta jsonb not null default '{}',
  labels jsonb not null default '[]',
  notes text,
  doc tsvector generated always as (to_tsvector('english', coalesce(notes, ''))) stored
);
insert into makers values (1, 'Acme'), (2, 'Globex');
insert into gadgets (id, maker_id, name, meta, labels, notes) values
  (1, 1, 'red kettle', '{"color":"red","size":3,"nested":{"depth":2}}', '["work","home"]',
   'The quick brown fox jumps over the lazy dogs'),
  (2, 1, 'blue lamp', '{"color":"blue","size":10,"nested":{"depth":1}}', '["home"]',
   'Fat cats eat rats'),
  (3, 2, 'green fan', '{"color":"green","size":7}', '["work"]', 'The fox runs; the dog sleeps'),
  (4, 2, 'Plain', '{}', '[]', null);
create table tags (id int primary key, name text not null);
create table gadget_tags (
  gadget_id int references gadgets(id), tag_id int references tags(id),
  primary key (gadget_id, tag_id)
);
-- A second junction between the same tables, so that `tags(...)` alone is ambiguous.
create table gadget_favs (
  gadget_id int references gadgets(id), tag_id int references tags(id),
  primary key (gadget_id, tag_id)
);
insert into tags values (1, 'kitchen'), (2, 'light'), (3, 'cheap');
insert into gadget_tags values (1, 1), (1, 3), (2, 2), (3, 3);
insert into gadget_favs values (2, 1);
grant select, insert, update, delete on makers, gadgets, tags, gadget_tags, gadget_favs
  to rowcast_authenticated, rowcast_service;
"#;

pub async fn start() -> Rest {
    let t = Rest::start().await;
    t.db().await.batch_execute(GADGETS).await.unwrap();
    t.reload().await;
    t
}

#[tokio::test]
async fn rest_json_paths_in_select_filters_order_and_embeds_match_sql() {
    let t = start().await;
    same(
        &t,
        "/rest/v1/gadgets?select=id,meta->>color,meta->size&order=id",
        "select json_build_object('id', id, 'color', meta->>'color', 'size', meta->'size') from gadgets order by id",
    )
    .await;
    same(
        &t,
        "/rest/v1/gadgets?select=id,sz:meta->>size::int&meta->nested->>depth=eq.2",
        "select json_build_object('id', id, 'sz', (meta->>'size')::int) from gadgets where meta->'nested'->>'depth' = '2'",
    )
    .await;
    same(
        &t,
        "/rest/v1/gadgets?select=id,first:labels->0&labels->>0=eq.work&order=id",
        "select json_build_object('id', id, 'first', labels->0) from gadgets where labels->>0 = 'work' order by id",
    )
    .await;
    same(
        &t,
        "/rest/v1/gadgets?select=id&order=meta->>color.desc.nullslast",
        "select json_build_object('id', id) from gadgets order by meta->>'color' desc nulls last",
    )
    .await;
    same(
        &t,
        "/rest/v1/gadgets?select=id&or=(meta->>color.eq.blue,meta->>size.eq.7)&order=id",
        "select json_build_object('id', id) from gadgets where meta->>'color' = 'blue' or meta->>'size' = '7' order by id",
    )
    .await;
    // Inside an embedding: its select, filter and order.
    same(
        &t,
        "/rest/v1/makers?select=name,gadgets(id,color:meta->>color)&gadgets.meta->>size=gte.5&gadgets.order=meta->>color&order=id",
        "select json_build_object('name', m.name, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id, 'color', g.meta->>'color') order by g.meta->>'color') from gadgets g where g.maker_id = m.id and g.meta->>'size' >= '5'), '[]')) from makers m order by m.id",
    )
    .await;
    // A key is a bound value: quotes and SQL in it find nothing and break nothing.
    let r = t
        .get(
            "/rest/v1/gadgets?select=id,x:meta->>%27;drop%20table%20makers;--&meta->>a%22b=eq.1",
            Some(&t.service),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!([]));
    // A path into a column that is not JSON is a type error, not a 500.
    let r = t
        .get("/rest/v1/gadgets?select=id,name->>x", Some(&t.service))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-value");
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_quantified_distinct_and_full_text_operators_match_sql() {
    let t = start().await;
    let cases: &[(&str, &str)] = &[
        (
            "name=like(any).{red*,*lamp}",
            "name like any(array['red%','%lamp'])",
        ),
        (
            "name=ilike(all).{*E*,*N*}",
            "name ilike all(array['%e%','%n%'])",
        ),
        ("id=eq(any).{1,3}", "id = any(array[1,3])"),
        ("id=gt(all).{1,2}", "id > all(array[1,2])"),
        ("id=not.eq(any).{1,3}", "not (id = any(array[1,3]))"),
        (
            "notes=isdistinct.Fat cats eat rats",
            "notes is distinct from 'Fat cats eat rats'",
        ),
        ("doc=fts.fox %26 dog", "doc @@ to_tsquery('fox & dog')"),
        (
            "doc=fts(english).jumping",
            "doc @@ to_tsquery('english', 'jumping')",
        ),
        (
            "notes=fts(english).jumping",
            "to_tsvector('english', notes) @@ to_tsquery('english', 'jumping')",
        ),
        (
            "doc=plfts(english).lazy dog",
            "doc @@ plainto_tsquery('english', 'lazy dog')",
        ),
        (
            "doc=phfts(english).lazy dogs",
            "doc @@ phraseto_tsquery('english', 'lazy dogs')",
        ),
        (
            "doc=wfts(english).fox -quick",
            "doc @@ websearch_to_tsquery('english', 'fox -quick')",
        ),
        (
            "doc=not.wfts(english).fox",
            "not (doc @@ websearch_to_tsquery('english', 'fox'))",
        ),
        (
            "or=(doc.fts(english).cats,id.eq(any).{1})",
            "doc @@ to_tsquery('english', 'cats') or id = 1",
        ),
    ];
    for (filter, sql) in cases {
        same(
            &t,
            &format!("/rest/v1/gadgets?select=id&{filter}&order=id"),
            &format!("select json_build_object('id', id) from gadgets where {sql} order by id"),
        )
        .await;
    }
    // An unknown language is a bad value (it is bound, never spliced into SQL).
    let r = t
        .get(
            "/rest/v1/gadgets?doc=fts(klingon%27--).fox",
            Some(&t.service),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-value");
    let r = t
        .get("/rest/v1/gadgets?doc=fts(english.fox", Some(&t.service))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = t
        .get("/rest/v1/gadgets?id=in(any).{1}", Some(&t.service))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "bad-request");
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_statuses_follow_postgrest_unknown_column_ambiguous_embed_and_range() {
    let t = start().await;
    let svc = Some(t.service.as_str());
    let r = t.get("/rest/v1/gadgets?select=nope", svc).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "unknown-column");
    let r = t.get("/rest/v1/gadgets?nope=eq.1", svc).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Two foreign keys from messages to users: 300 with the candidates in `details`.
    let r = t
        .get("/rest/v1/messages?select=body,users(name)", svc)
        .await;
    assert_eq!(r.status, 300, "{}", r.text);
    assert_eq!(r.body["code"], "ambiguous-relationship");
    let details: Value = serde_json::from_str(r.body["details"].as_str().unwrap()).unwrap();
    let mut rels: Vec<&str> = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["relationship"].as_str().unwrap())
        .collect();
    rels.sort();
    assert_eq!(
        rels,
        [
            "messages_recipient_fkey using messages(recipient) and users(id)",
            "messages_sender_fkey using messages(sender) and users(id)"
        ]
    );
    assert_eq!(details[0]["cardinality"], "many-to-one");

    // Offset past the end of a counted read: 416 with `*/total`; at the end: an empty partial page (206, as PostgREST).
    let r = t
        .request(Method::GET, "/rest/v1/gadgets?offset=10")
        .token(svc)
        .headers(&[("prefer", "count=exact")])
        .send()
        .await;
    assert_eq!(r.status, 416, "{}", r.text);
    assert_eq!(r.body["code"], "range-not-satisfiable");
    assert_eq!(r.header("content-range"), Some("*/4"));
    let r = t
        .request(Method::GET, "/rest/v1/gadgets")
        .token(svc)
        .headers(&[("prefer", "count=exact"), ("range", "4-9")])
        .send()
        .await;
    assert_eq!(r.status, 206, "{}", r.text);
    assert_eq!(r.body, json!([]));
    assert_eq!(r.header("content-range"), Some("*/4"));
    // Without a count nothing is known about the total: an empty page, 200.
    let r = t.get("/rest/v1/gadgets?offset=10", svc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    t.app.shutdown().await;
}

/// Issue 18 item 7: with SELECT granted on some columns only, writes must not ask for the
/// others (`returning *` did, so every write was refused).
#[tokio::test]
async fn rest_writes_on_a_table_with_column_grants_return_only_readable_columns() {
    let t = start().await;
    t.db()
        .await
        .batch_execute(
            "create table profiles (id int primary key, owner uuid, display_name text, secret text);
             insert into profiles values (1, null, 'one', 's1'), (2, null, 'two', 's2');
             grant select (id, owner, display_name) on profiles to rowcast_authenticated;
             grant insert, update, delete on profiles to rowcast_authenticated;",
        )
        .await
        .unwrap();
    t.reload().await;
    let alice = Some(t.alice.as_str());
    let minimal = [("prefer", "return=minimal")];
    let r = t
        .request(Method::PATCH, "/rest/v1/profiles?id=eq.1")
        .token(alice)
        .headers(&minimal)
        .body(r#"{"display_name":"uno"}"#)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.header("content-range"), Some("0-0/*"));
    let r = t
        .request(Method::POST, "/rest/v1/profiles")
        .token(alice)
        .headers(&minimal)
        .body(r#"{"id":3,"display_name":"three","secret":"s3"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = t
        .request(Method::POST, "/rest/v1/profiles?select=id,display_name")
        .token(alice)
        .headers(&[("prefer", "return=representation")])
        .body(r#"{"id":4,"display_name":"four"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body, json!([{"id": 4, "display_name": "four"}]));
    let r = t
        .request(Method::POST, "/rest/v1/profiles")
        .token(alice)
        .headers(&[("prefer", "return=headers-only")])
        .body(r#"{"id":5,"display_name":"five"}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/rest/v1/profiles?id=eq.5"));
    let r = t
        .request(Method::DELETE, "/rest/v1/profiles?id=eq.2")
        .token(alice)
        .headers(&minimal)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Asking for a column the role may not read is still refused, and changes nothing.
    let r = t
        .request(Method::PATCH, "/rest/v1/profiles?id=eq.1&select=secret")
        .token(alice)
        .headers(&[("prefer", "return=representation")])
        .body(r#"{"display_name":"nope"}"#)
        .send()
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], "forbidden");
    let rows = by_sql(
        &t,
        "select json_build_object('id', id, 'name', display_name, 'secret', secret) from profiles order by id",
    )
    .await;
    assert_eq!(
        rows,
        json!([
            {"id": 1, "name": "uno", "secret": "s1"},
            {"id": 3, "name": "three", "secret": "s3"},
            {"id": 4, "name": "four", "secret": null},
            {"id": 5, "name": "five", "secret": null}
        ])
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn rest_many_to_many_spread_and_empty_embeds_match_sql() {
    let t = start().await;
    let tags_of = |g: &str, junction: &str, filter: &str| {
        format!(
            "coalesce((select json_agg(json_build_object('name', t.name) order by t.id) from tags t \
             where exists (select 1 from {junction} j where j.gadget_id = {g}.id and j.tag_id = t.id){filter}), '[]')"
        )
    };
    // Through the junction named by its table.
    same(
        &t,
        "/rest/v1/gadgets?select=id,tags!gadget_tags(name)&tags.order=id&order=id",
        &format!(
            "select json_build_object('id', g.id, 'tags', {}) from gadgets g order by g.id",
            tags_of("g", "gadget_tags", "")
        ),
    )
    .await;
    // Without a hint: both junctions link gadgets and tags, so the bare name is ambiguous
    // (300, with both candidates) ...
    let r = t
        .get("/rest/v1/gadgets?select=id,tags(name)", Some(&t.service))
        .await;
    assert_eq!(r.status, 300, "{}", r.text);
    let details: Value = serde_json::from_str(r.body["details"].as_str().unwrap()).unwrap();
    assert_eq!(details.as_array().unwrap().len(), 2);
    assert!(details
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["cardinality"] == "many-to-many"));
    // ... and with one junction gone, the bare name resolves.
    t.db()
        .await
        .batch_execute("drop table gadget_favs")
        .await
        .unwrap();
    t.reload().await;
    same(
        &t,
        "/rest/v1/tags?select=name,gadgets(id)&gadgets.order=id&order=id",
        "select json_build_object('name', t.name, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id) order by g.id) from gadgets g where exists (select 1 from gadget_tags j where j.tag_id = t.id and j.gadget_id = g.id)), '[]')) from tags t order by t.id",
    )
    .await;
    // Three levels: makers → gadgets → tags (many-to-many inside a one-to-many).
    same(
        &t,
        "/rest/v1/makers?select=name,gadgets(id,tags(name))&gadgets.order=id&gadgets.tags.order=id&order=id",
        &format!(
            "select json_build_object('name', m.name, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id, 'tags', {}) order by g.id) from gadgets g where g.maker_id = m.id), '[]')) from makers m order by m.id",
            tags_of("g", "gadget_tags", "")
        ),
    )
    .await;
    // `!inner` with a filter on the far table: only gadgets tagged `cheap`.
    same(
        &t,
        "/rest/v1/gadgets?select=id,tags!inner(name)&tags.name=eq.cheap&order=id",
        &format!(
            "select json_build_object('id', g.id, 'tags', {}) from gadgets g \
             where exists (select 1 from tags t join gadget_tags j on j.tag_id = t.id where j.gadget_id = g.id and t.name = 'cheap') order by g.id",
            tags_of("g", "gadget_tags", " and t.name = 'cheap'")
        ),
    )
    .await;

    // Spread: the to-one relation's fields in the parent's object.
    same(
        &t,
        "/rest/v1/gadgets?select=id,...makers(maker:name,mid:id)&order=id",
        "select json_build_object('id', g.id, 'maker', m.name, 'mid', m.id) from gadgets g left join makers m on m.id = g.maker_id order by g.id",
    )
    .await;
    // A to-many spread is no longer refused: each field becomes an array (see
    // `rest_to_many_spread_get_rpc_shaping_and_presence_in_or_match_sql`).
    let r = t
        .get(
            "/rest/v1/makers?select=id,...gadgets(name)",
            Some(&t.service),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Empty embeddings as filters: makers with a red gadget, and the anti-join.
    same(
        &t,
        "/rest/v1/makers?select=id,gadgets()&gadgets.meta->>color=eq.red&gadgets=not.is.null",
        "select json_build_object('id', m.id) from makers m where exists (select 1 from gadgets g where g.maker_id = m.id and g.meta->>'color' = 'red')",
    )
    .await;
    same(
        &t,
        "/rest/v1/makers?select=id,gadgets()&gadgets.meta->>color=eq.red&gadgets=is.null",
        "select json_build_object('id', m.id) from makers m where not exists (select 1 from gadgets g where g.maker_id = m.id and g.meta->>'color' = 'red')",
    )
    .await;
    same(
        &t,
        "/rest/v1/tags?select=name,gadgets()&gadgets.name=like.*lamp&gadgets=not.is.null",
        "select json_build_object('name', t.name) from tags t where exists (select 1 from gadgets g join gadget_tags j on j.gadget_id = g.id where j.tag_id = t.id and g.name like '%lamp')",
    )
    .await;
    t.app.shutdown().await;
}

/// Functions and a table with defaults for the write and rpc shapes.
const EXTRAS: &str = r#"
create table notes (id int primary key, body text not null default 'empty', prio int default 3, tag text);
grant select, insert, update, delete on notes to rowcast_authenticated, rowcast_service;
create function gadget_count(min_size int default 0) returns int language sql stable
  as $$ select count(*)::int from gadgets where coalesce((meta->>'size')::int, 0) >= min_size $$;
create function bump() returns int language sql volatile as 'select 1';
create function echo_json(json) returns json language sql immutable as 'select $1';
create function sum_items(jsonb) returns int language sql immutable
  as $$ select sum((e->>'n')::int)::int from jsonb_array_elements($1) e $$;
"#;

#[tokio::test]
async fn rest_missing_default_put_get_rpc_and_json_argument_functions() {
    let t = start().await;
    t.db().await.batch_execute(EXTRAS).await.unwrap();
    t.reload().await;
    let svc = Some(t.service.as_str());
    let notes = || {
        by_sql(
            &t,
            "select json_build_object('id', id, 'body', body, 'prio', prio, 'tag', tag) from notes order by id",
        )
    };

    // `missing=default` with `columns=`: left-out keys take the column default; keys
    // outside `columns` are ignored.
    let r = t
        .request(Method::POST, "/rest/v1/notes?columns=id,body,prio")
        .token(svc)
        .headers(&[("prefer", "missing=default, return=minimal")])
        .body(r#"[{"id":1,"body":"a"},{"id":2,"prio":9},{"id":3,"body":"c","prio":1,"tag":"x"}]"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("content-range"), Some("0-2/*"));
    // Without it, a left-out key is null (PostgREST's default).
    let r = t
        .request(Method::POST, "/rest/v1/notes")
        .token(svc)
        .body(r#"[{"id":4,"body":"d"},{"id":5,"body":"e","prio":1}]"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        notes().await,
        json!([
            {"id": 1, "body": "a", "prio": 3, "tag": null},
            {"id": 2, "body": "empty", "prio": 9, "tag": null},
            {"id": 3, "body": "c", "prio": 1, "tag": null},
            {"id": 4, "body": "d", "prio": null, "tag": null},
            {"id": 5, "body": "e", "prio": 1, "tag": null}
        ])
    );

    // PUT: a single-row upsert addressed by the primary key.
    let r = t
        .request(Method::PUT, "/rest/v1/notes?id=eq.7")
        .token(svc)
        .body(r#"{"id":7,"body":"seven"}"#)
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t
        .request(Method::PUT, "/rest/v1/notes?id=eq.7")
        .token(svc)
        .headers(&[("prefer", "return=representation")])
        .body(r#"{"id":7,"body":"seven again","prio":2}"#)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!([{"id": 7, "body": "seven again", "prio": 2, "tag": null}])
    );
    let seven = by_sql(
        &t,
        "select json_build_object('body', body, 'prio', prio) from notes where id = 7",
    )
    .await;
    assert_eq!(seven, json!([{"body": "seven again", "prio": 2}]));
    for (path, body) in [
        ("/rest/v1/notes?id=eq.8", r#"{"id":9,"body":"x"}"#),
        ("/rest/v1/notes?body=eq.x", r#"{"id":8,"body":"x"}"#),
        ("/rest/v1/notes?id=gt.8", r#"{"id":8,"body":"x"}"#),
        ("/rest/v1/notes?id=eq.8", r#"[{"id":8},{"id":8}]"#),
    ] {
        let r = t
            .request(Method::PUT, path)
            .token(svc)
            .body(body)
            .send()
            .await;
        assert_eq!(r.status, 400, "PUT {path} {body}: {}", r.text);
    }

    // GET on rpc: stable and immutable functions, arguments from the query string.
    let r = t.get("/rest/v1/rpc/gadget_count?min_size=5", svc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let want = by_sql(&t, "select gadget_count(5)").await;
    assert_eq!(json!([r.body]), want);
    let r = t.get("/rest/v1/rpc/add_numbers?a=1", svc).await;
    assert_eq!((r.status, r.body.clone()), (200, json!(11)), "{}", r.text);
    let r = t.get("/rest/v1/rpc/bump", svc).await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.body["code"], "method-not-allowed");
    let r = t.get("/rest/v1/rpc/add_numbers?nope=1", svc).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // A single unnamed json/jsonb argument takes the whole body.
    let r = t
        .request(Method::POST, "/rest/v1/rpc/echo_json")
        .token(svc)
        .body(r#"{"a":[1,2],"b":"c"}"#)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"a": [1, 2], "b": "c"}));
    let r = t
        .request(Method::POST, "/rest/v1/rpc/sum_items")
        .token(svc)
        .body(r#"[{"n":1},{"n":2},{"n":39}]"#)
        .send()
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!(42)), "{}", r.text);
    t.app.shutdown().await;
}

/// The same features through `@supabase/postgrest-js` (compat/postgrest-js/test/
/// grammar.test.mjs); the expected results come from SQL written by hand, run here.
#[tokio::test]
async fn rest_grammar_through_postgrest_js_matches_sql() {
    let t = start().await;
    let db = t.db().await;
    db.batch_execute(EXTRAS).await.unwrap();
    // One junction only, so that `tags(...)` and `gadgets(...)` need no hint.
    db.batch_execute("drop table gadget_favs").await.unwrap();
    t.reload().await;
    let tags = |g: &str, filter: &str| {
        format!(
            "coalesce((select json_agg(json_build_object('name', t.name) order by t.id) from tags t \
             where exists (select 1 from gadget_tags j where j.gadget_id = {g}.id and j.tag_id = t.id){filter}), '[]')"
        )
    };
    let ids = |cond: &str| format!("select id from gadgets where {cond} order by id");
    let cases: Vec<(&str, String)> = vec![
        ("json_select", "select json_build_object('id', id, 'color', meta->>'color', 'size', meta->'size') from gadgets order by id".into()),
        ("json_filter", "select json_build_object('id', id, 'sz', (meta->>'size')::int) from gadgets where meta->'nested'->>'depth' = '2'".into()),
        ("json_order", "select json_build_object('id', id) from gadgets order by meta->>'color' desc nulls last".into()),
        ("json_embed", "select json_build_object('name', m.name, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id, 'color', g.meta->>'color') order by g.meta->>'color') from gadgets g where g.maker_id = m.id and g.meta->>'size' >= '5'), '[]')) from makers m order by m.id".into()),
        ("m2m", "select json_build_object('name', t.name, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id) order by g.id) from gadgets g where exists (select 1 from gadget_tags j where j.tag_id = t.id and j.gadget_id = g.id)), '[]')) from tags t order by t.id".into()),
        ("m2m_nested", format!("select json_build_object('name', m.name, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id, 'tags', {}) order by g.id) from gadgets g where g.maker_id = m.id), '[]')) from makers m order by m.id", tags("g", ""))),
        ("m2m_inner", format!("select json_build_object('id', g.id, 'tags', {}) from gadgets g where exists (select 1 from tags t join gadget_tags j on j.tag_id = t.id where j.gadget_id = g.id and t.name = 'cheap') order by g.id", tags("g", " and t.name = 'cheap'"))),
        ("spread", "select json_build_object('id', g.id, 'maker', m.name, 'mid', m.id) from gadgets g left join makers m on m.id = g.maker_id order by g.id".into()),
        ("with_red", "select json_build_object('id', m.id) from makers m where exists (select 1 from gadgets g where g.maker_id = m.id and g.meta->>'color' = 'red')".into()),
        ("without_red", "select json_build_object('id', m.id) from makers m where not exists (select 1 from gadgets g where g.maker_id = m.id and g.meta->>'color' = 'red')".into()),
        ("like_any", ids("name like any(array['red%','%lamp'])")),
        ("ilike_all", ids("name ilike all(array['%e%','%n%'])")),
        ("isdistinct", ids("notes is distinct from 'Fat cats eat rats'")),
        ("fts", ids("doc @@ to_tsquery('english', 'jumping')")),
        ("plfts", ids("doc @@ plainto_tsquery('english', 'lazy dog')")),
        ("phfts", ids("doc @@ phraseto_tsquery('english', 'lazy dogs')")),
        ("wfts", ids("doc @@ websearch_to_tsquery('english', 'fox -quick')")),
        ("not_wfts", ids("not (doc @@ websearch_to_tsquery('english', 'fox'))")),
    ];
    let mut expect = serde_json::Map::new();
    for (name, sql) in &cases {
        let v = by_sql(&t, sql).await;
        assert!(
            v.as_array().is_some_and(|a| !a.is_empty()),
            "{name}: the hand-written query matched nothing"
        );
        expect.insert(name.to_string(), v);
    }
    let count = db
        .query_one("select gadget_count(5)", &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    expect.insert("gadget_count".into(), json!(count));
    // What `missing=default` must leave: the defaults of `body` and `prio`.
    expect.insert(
        "notes".into(),
        json!([{"id": 1, "body": "a", "prio": 3}, {"id": 2, "body": "empty", "prio": 9}]),
    );
    let stdout = crate::rest_support::run_postgrest_js(
        &t,
        "test/grammar.test.mjs",
        &[("ROWCAST_EXPECT", Value::Object(expect).to_string())],
    )
    .await;
    assert!(
        stdout.contains("# pass 5") && stdout.contains("# fail 0"),
        "the postgrest-js grammar suite did not run all its tests:\n{stdout}"
    );
    t.app.shutdown().await;
}

/// Functions returning rows, for `GET /rpc/…` with `select`, filters and `order`, and a
/// maker without gadgets (for empty spreads and the anti-join inside `or`).
const LEFTOVERS: &str = r#"
insert into makers values (3, 'Initech');
create function gadgets_of(mid int) returns setof gadgets language sql stable
  as 'select * from gadgets where maker_id = mid';
create function gadget_labels(lo int default 0) returns table (gid int, label text)
  language sql immutable as 'select id, name from gadgets where id >= lo';
create function churn(mid int) returns setof gadgets language sql volatile
  as 'select * from gadgets where maker_id = mid';
"#;

/// The hand-written SQL for the cases of the leftovers test, shared with the postgrest-js
/// run: (name, URL path, SQL).
fn leftover_cases() -> Vec<(&'static str, &'static str, String)> {
    let per_maker = |expr: &str, filter: &str| {
        format!(
            "coalesce((select json_agg({expr} order by g.id) from gadgets g where g.maker_id = m.id{filter}), '[]')"
        )
    };
    let tag_names = "coalesce((select json_agg(t.name order by t.id) from tags t \
         where exists (select 1 from gadget_tags j where j.gadget_id = g.id and j.tag_id = t.id)), '[]')";
    vec![
        (
            "spread_many",
            "/rest/v1/makers?select=name,...gadgets(names:name,sizes:meta->size)&gadgets.order=id&order=id",
            format!(
                "select json_build_object('name', m.name, 'names', {}, 'sizes', {}) from makers m order by m.id",
                per_maker("g.name", ""),
                per_maker("g.meta->'size'", "")
            ),
        ),
        (
            "spread_many_filtered",
            "/rest/v1/makers?select=id,...gadgets(gid:id)&gadgets.name=like.*e*&gadgets.order=id.desc&gadgets.limit=1&order=id",
            "select json_build_object('id', m.id, 'gid', coalesce((select json_agg(x.id) from \
               (select g.id from gadgets g where g.maker_id = m.id and g.name like '%e%' order by g.id desc limit 1) x), '[]')) \
             from makers m order by m.id"
                .to_string(),
        ),
        (
            "spread_m2m",
            "/rest/v1/gadgets?select=id,...tags!gadget_tags(tag_names:name)&tags.order=id&order=id",
            format!("select json_build_object('id', g.id, 'tag_names', {tag_names}) from gadgets g order by g.id"),
        ),
        (
            "rpc_rows",
            "/rest/v1/rpc/gadgets_of?mid=1&select=id,label:name&name=like.*e*&order=id.desc",
            "select json_build_object('id', g.id, 'label', g.name) from gadgets_of(1) g where g.name like '%e%' order by g.id desc"
                .to_string(),
        ),
        (
            "rpc_table",
            "/rest/v1/rpc/gadget_labels?lo=2&or=(label.ilike.*L*,gid.eq.4)&order=gid.desc&limit=2",
            "select json_build_object('gid', r.gid, 'label', r.label) from gadget_labels(2) r \
             where r.label ilike '%l%' or r.gid = 4 order by r.gid desc limit 2"
                .to_string(),
        ),
        (
            "or_present",
            "/rest/v1/makers?select=id,gadgets()&gadgets.meta->>color=eq.red&or=(gadgets.not.is.null,name.eq.Globex)&order=id",
            "select json_build_object('id', m.id) from makers m where exists (select 1 from gadgets g \
               where g.maker_id = m.id and g.meta->>'color' = 'red') or m.name = 'Globex' order by m.id"
                .to_string(),
        ),
        (
            "or_absent",
            "/rest/v1/makers?select=id,gadgets(id)&or=(gadgets.is.null,id.eq.1)&gadgets.order=id&order=id",
            "select json_build_object('id', m.id, 'gadgets', coalesce((select json_agg(json_build_object('id', g.id) order by g.id) \
               from gadgets g where g.maker_id = m.id), '[]')) from makers m \
             where not exists (select 1 from gadgets g where g.maker_id = m.id) or m.id = 1 order by m.id"
                .to_string(),
        ),
    ]
}

async fn start_leftovers() -> Rest {
    let t = start().await;
    let db = t.db().await;
    db.batch_execute(LEFTOVERS).await.unwrap();
    // One junction only, so that `tags(...)` needs no hint from postgrest-js either.
    db.batch_execute("drop table gadget_favs").await.unwrap();
    t.reload().await;
    t
}

#[tokio::test]
async fn rest_to_many_spread_get_rpc_shaping_and_presence_in_or_match_sql() {
    let t = start_leftovers().await;
    for (_, path, query) in leftover_cases() {
        same(&t, path, &query).await;
    }
    // Initech has no gadgets: its spread arrays are empty, not null.
    let r = t
        .get(
            "/rest/v1/makers?select=...gadgets(names:name)&id=eq.3",
            Some(&t.service),
        )
        .await;
    assert_eq!(r.body, json!([{"names": []}]), "{}", r.text);
    // A function's rows take no embedding, its arguments still win over filters, and a
    // name that is neither is an unknown column there.
    let svc = Some(t.service.as_str());
    let r = t
        .get("/rest/v1/rpc/gadgets_of?mid=1&select=id,makers(name)", svc)
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("bad-request")),
        "{}",
        r.text
    );
    let r = t.get("/rest/v1/rpc/gadgets_of?mid=1&ghost=eq.1", svc).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("unknown-column")),
        "{}",
        r.text
    );
    let r = t.get("/rest/v1/rpc/gadget_labels?lo=4", svc).await;
    assert_eq!(r.body, json!([{"gid": 4, "label": "Plain"}]), "{}", r.text);
    // Volatile functions stay POST-only, shaped or not.
    let r = t.get("/rest/v1/rpc/churn?mid=1&select=id", svc).await;
    assert_eq!(r.status, 405, "{}", r.text);
    // A scalar function takes no shaping; an unknown name stays an unknown argument.
    t.db().await.batch_execute(EXTRAS).await.unwrap();
    t.reload().await;
    let r = t
        .get("/rest/v1/rpc/gadget_count?min_size=5&select=x", svc)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = t
        .get("/rest/v1/rpc/gadget_count?min_size=5&zzz=1", svc)
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (404, Some("unknown-function")),
        "{}",
        r.text
    );
    t.app.shutdown().await;
}

/// The same cases through `@supabase/postgrest-js` (compat/postgrest-js/test/
/// leftovers.test.mjs), against the same hand-written SQL.
#[tokio::test]
async fn rest_to_many_spread_get_rpc_shaping_and_presence_in_or_through_postgrest_js() {
    let t = start_leftovers().await;
    let mut expect = serde_json::Map::new();
    for (name, _, query) in leftover_cases() {
        let v = by_sql(&t, &query).await;
        assert!(
            v.as_array().is_some_and(|a| !a.is_empty()),
            "{name}: the hand-written query matched nothing"
        );
        expect.insert(name.to_string(), v);
    }
    let stdout = crate::rest_support::run_postgrest_js(
        &t,
        "test/leftovers.test.mjs",
        &[("ROWCAST_EXPECT", Value::Object(expect).to_string())],
    )
    .await;
    assert!(
        stdout.contains("# pass 3") && stdout.contains("# fail 0"),
        "the postgrest-js leftovers suite did not run all its tests:\n{stdout}"
    );
    t.app.shutdown().await;
}
