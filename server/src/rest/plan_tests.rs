//! Unit tests of `rest::plan` on a hand-built catalog (no Postgres): names are resolved or
//! refused, limits and ranges shape the page, relationships are found, and writes and rpc
//! calls are checked before any SQL exists.

use std::{collections::HashMap, sync::Arc};

use super::*;
use crate::{
    protocol::{ApiError, ErrorCode},
    rest::{
        query::{parse_prefer, parse_query, Cast},
        schema::{Column, FunctionArg},
    },
};

fn id(s: &str) -> Ident {
    Ident::from_catalog(s.to_string())
}

fn table(name: &str, columns: &[(&str, &str)], pk: &[&str]) -> Table {
    Table {
        schema: id("public"),
        name: id(name),
        columns: columns
            .iter()
            .map(|(n, ty)| Column {
                name: id(n),
                type_name: ty.to_string(),
                nullable: true,
                has_default: *n == "id",
            })
            .collect(),
        primary_key: pk.iter().map(|c| id(c)).collect(),
        insertable: true,
    }
}

fn fk(name: &str, from: &str, cols: &[&str], to: &str, ref_cols: &[&str]) -> ForeignKey {
    ForeignKey {
        name: id(name),
        table: (id("public"), id(from)),
        columns: cols.iter().map(|c| id(c)).collect(),
        ref_table: (id("public"), id(to)),
        ref_columns: ref_cols.iter().map(|c| id(c)).collect(),
    }
}

fn function(
    name: &str,
    args: &[(&str, bool)],
    read_only: bool,
    result: &[(&str, &str)],
) -> Arc<Function> {
    Arc::new(Function {
        schema: id("public"),
        name: id(name),
        args: args
            .iter()
            .map(|(n, d)| FunctionArg {
                name: id(n),
                has_default: *d,
            })
            .collect(),
        has_unnamed_args: false,
        returns_set: true,
        returns_void: false,
        read_only,
        json_arg: None,
        result_columns: table("result", result, &[]).columns,
    })
}

/// users ← posts (owner) ← comments (post_id); messages has two keys to users; posts and
/// tags are linked through post_tags.
fn catalog() -> SchemaCache {
    let tables = [
        table("users", &[("id", "uuid"), ("name", "text")], &["id"]),
        table(
            "posts",
            &[
                ("id", "bigint"),
                ("owner", "uuid"),
                ("title", "text"),
                ("meta", "jsonb"),
                ("doc", "tsvector"),
            ],
            &["id"],
        ),
        table(
            "comments",
            &[("id", "bigint"), ("post_id", "bigint"), ("body", "text")],
            &["id"],
        ),
        table(
            "messages",
            &[("id", "bigint"), ("sender", "uuid"), ("recipient", "uuid")],
            &["id"],
        ),
        table("tags", &[("id", "int"), ("name", "text")], &["id"]),
        table(
            "post_tags",
            &[("post_id", "bigint"), ("tag_id", "int")],
            &["post_id", "tag_id"],
        ),
        table("logs", &[("line", "text")], &[]),
    ];
    let mut functions = HashMap::new();
    for f in [
        function(
            "search",
            &[("q", false), ("lim", true)],
            true,
            &[("id", "bigint"), ("title", "text")],
        ),
        function("bump", &[("n", false)], false, &[]),
        function("total", &[("n", false)], true, &[]),
    ] {
        functions.insert(("public".to_string(), f.name.as_str().to_string()), vec![f]);
    }
    SchemaCache {
        schemas: vec!["public".into(), "extra".into()],
        tables: tables
            .into_iter()
            .map(|t| {
                (
                    ("public".to_string(), t.name.as_str().to_string()),
                    Arc::new(t),
                )
            })
            .collect(),
        foreign_keys: vec![
            fk("posts_owner_fkey", "posts", &["owner"], "users", &["id"]),
            fk(
                "comments_post_id_fkey",
                "comments",
                &["post_id"],
                "posts",
                &["id"],
            ),
            fk(
                "messages_sender_fkey",
                "messages",
                &["sender"],
                "users",
                &["id"],
            ),
            fk(
                "messages_recipient_fkey",
                "messages",
                &["recipient"],
                "users",
                &["id"],
            ),
            fk(
                "post_tags_post_id_fkey",
                "post_tags",
                &["post_id"],
                "posts",
                &["id"],
            ),
            fk(
                "post_tags_tag_id_fkey",
                "post_tags",
                &["tag_id"],
                "tags",
                &["id"],
            ),
        ],
        functions,
    }
}

const LIMITS: Limits = Limits {
    max_rows: 100,
    max_embed_depth: 3,
    allow_unfiltered_writes: false,
};

fn plan_read(cache: &SchemaCache, name: &str, q: &str) -> Result<ReadPlan, RestError> {
    plan_read_with(cache, name, q, None, Accept::Json)
}

fn plan_read_with(
    cache: &SchemaCache,
    name: &str,
    q: &str,
    range: Option<(u64, Option<u64>)>,
    accept: Accept,
) -> Result<ReadPlan, RestError> {
    let t = super::table(cache, "public", name)?;
    read(
        cache,
        t,
        &parse_query(q)?,
        &Prefer::default(),
        range,
        accept,
        LIMITS,
    )
}

fn code(e: RestError) -> ErrorCode {
    ApiError::from(e).code
}

fn keys(node: &Node) -> Vec<&str> {
    node.fields
        .iter()
        .map(|f| match f {
            Field::Column { key, .. } => key.as_str(),
            Field::Embed(e) => e.key.as_str(),
        })
        .collect()
}

fn embed<'a>(node: &'a Node, key: &str) -> &'a Embed {
    node.fields
        .iter()
        .find_map(|f| match f {
            Field::Embed(e) if e.key == key => Some(&**e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no embedding {key}"))
}

#[test]
fn star_selects_every_column_in_catalog_order_and_the_page_is_capped() {
    let cache = catalog();
    let p = plan_read(&cache, "users", "").unwrap();
    assert_eq!(keys(&p.node), ["id", "name"]);
    assert_eq!(p.node.limit, Some(100));
    let p = plan_read(&cache, "users", "limit=500").unwrap();
    assert_eq!(p.node.limit, Some(100), "limit never exceeds max_rows");
    let p = plan_read(&cache, "users", "limit=5&offset=2").unwrap();
    assert_eq!((p.node.limit, p.node.offset), (Some(5), 2));
}

#[test]
fn a_range_narrows_the_page_and_single_object_is_carried() {
    let cache = catalog();
    let p = plan_read_with(
        &cache,
        "users",
        "",
        Some((10, Some(14))),
        Accept::SingleObject,
    )
    .unwrap();
    assert_eq!((p.node.limit, p.node.offset), (Some(5), 10));
    assert!(p.single);
}

#[test]
fn unknown_names_are_refused_with_their_codes() {
    let cache = catalog();
    assert_eq!(
        code(plan_read(&cache, "nope", "").unwrap_err()),
        ErrorCode::UnknownTable
    );
    assert_eq!(
        code(plan_read(&cache, "users", "select=id,secret").unwrap_err()),
        ErrorCode::UnknownColumn
    );
    assert_eq!(
        code(plan_read(&cache, "users", "ghost=eq.1").unwrap_err()),
        ErrorCode::UnknownColumn
    );
    assert_eq!(
        code(plan_read(&cache, "users", "order=ghost.desc").unwrap_err()),
        ErrorCode::UnknownColumn
    );
    assert_eq!(
        code(plan_read(&cache, "users", "select=id,tags(name)").unwrap_err()),
        ErrorCode::UnknownRelationship
    );
    assert_eq!(
        code(schema_for(&cache, Some("hidden")).unwrap_err()),
        ErrorCode::NotAcceptable
    );
    assert_eq!(schema_for(&cache, None).unwrap(), "public");
    assert_eq!(schema_for(&cache, Some("extra")).unwrap(), "extra");
}

#[test]
fn aliases_casts_and_json_paths_become_keys_and_bound_steps() {
    let cache = catalog();
    let p = plan_read(
        &cache,
        "posts",
        "select=t:title,meta->>color,sz:meta->size::int,meta->tags->0",
    )
    .unwrap();
    assert_eq!(keys(&p.node), ["t", "color", "sz", "0"]);
    let Field::Column { path, cast, .. } = &p.node.fields[2] else {
        panic!("a column");
    };
    assert_eq!(
        path,
        &[JsonStep {
            key: "size".into(),
            index: None,
            as_text: false
        }]
    );
    assert_eq!(*cast, Some(Cast::Int4));
    let Field::Column { path, .. } = &p.node.fields[3] else {
        panic!("a column");
    };
    assert_eq!(path[1].index, Some(0), "a digit key is an array index");
}

#[test]
fn relationships_resolve_to_one_to_many_many_to_many_and_by_column() {
    let cache = catalog();
    let p = plan_read(
        &cache,
        "posts",
        "select=id,users(name),comments(body),tags(name)",
    )
    .unwrap();
    let users = embed(&p.node, "users");
    assert!(users.to_one);
    assert_eq!(users.join.pairs, [(id("owner"), id("id"))]);
    let comments = embed(&p.node, "comments");
    assert!(!comments.to_one);
    assert_eq!(comments.join.pairs, [(id("id"), id("post_id"))]);
    let tags = embed(&p.node, "tags");
    assert!(!tags.to_one);
    let via = tags.join.via.as_ref().expect("through the junction");
    assert_eq!(via.junction.name, id("post_tags"));
    assert_eq!(via.parent, [(id("id"), id("post_id"))]);
    assert_eq!(via.child, [(id("id"), id("tag_id"))]);

    let p = plan_read(&cache, "messages", "select=id,from:sender(name)").unwrap();
    let from = embed(&p.node, "from");
    assert!(from.to_one);
    assert_eq!(from.node.table.name, id("users"));
}

#[test]
fn an_ambiguous_embedding_lists_its_candidates_and_a_hint_picks_one() {
    let cache = catalog();
    let e = plan_read(&cache, "users", "select=id,messages(id)").unwrap_err();
    let api = ApiError::from(e);
    assert_eq!(api.code, ErrorCode::AmbiguousRelationship);
    let details: serde_json::Value =
        serde_json::from_str(api.details.as_deref().expect("details")).unwrap();
    assert_eq!(details.as_array().map(Vec::len), Some(2));
    let p = plan_read(&cache, "users", "select=id,messages!sender(id)").unwrap();
    assert_eq!(
        embed(&p.node, "messages").join.pairs,
        [(id("id"), id("sender"))]
    );
}

#[test]
fn embedded_filters_order_and_presence_land_on_their_node() {
    let cache = catalog();
    let p = plan_read(
        &cache,
        "posts",
        "select=id,comments(body)&comments.body=like.*x*&comments.order=id.desc&comments=not.is.null",
    )
    .unwrap();
    let comments = embed(&p.node, "comments");
    assert_eq!(comments.node.condition.len(), 1);
    assert_eq!(comments.node.order.len(), 1);
    assert!(matches!(
        p.node.condition.as_slice(),
        [Cond::Exists { key, present: true }] if key == "comments"
    ));
    let e = plan_read(&cache, "posts", "select=id&comments.body=eq.x").unwrap_err();
    assert_eq!(
        code(e),
        ErrorCode::BadRequest,
        "filters need the embedding in select"
    );
    let e = plan_read(&cache, "posts", "select=id,comments(id)&order=comments(id)").unwrap_err();
    assert_eq!(
        code(e),
        ErrorCode::BadRequest,
        "cannot order by a to-many relation"
    );
}

#[test]
fn embeddings_deeper_than_the_limit_are_refused() {
    let cache = catalog();
    assert!(plan_read(&cache, "users", "select=id,posts(id,comments(id))").is_ok());
    let e = plan_read(
        &cache,
        "comments",
        "select=id,posts(id,users(id,posts(id,comments(id))))",
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::BadRequest);
}

#[test]
fn a_full_text_filter_on_a_tsvector_column_uses_it_as_is() {
    let cache = catalog();
    let p = plan_read(&cache, "posts", "doc=fts(english).fox&title=fts.fox").unwrap();
    let tsvector: Vec<bool> = p
        .node
        .condition
        .iter()
        .map(|c| match c {
            Cond::Pred { column, .. } => column.tsvector,
            _ => panic!("a predicate"),
        })
        .collect();
    assert_eq!(tsvector, [true, false]);
}

fn write_query(q: &str) -> Query {
    parse_query(q).unwrap()
}

#[test]
fn inserts_check_columns_and_upserts_need_a_conflict_target() {
    let cache = catalog();
    let posts = super::table(&cache, "public", "posts").unwrap();
    let none = Prefer::default();
    let p = insert(
        &cache,
        posts,
        &write_query(""),
        &none,
        Accept::Json,
        br#"[{"title":"a"},{"title":"b","owner":null}]"#,
        LIMITS,
    )
    .unwrap();
    assert_eq!(p.columns, [id("title"), id("owner")]);
    assert_eq!(p.row_count, 2);
    assert!(p.conflict.is_none() && p.groups.is_empty());

    let e = insert(
        &cache,
        posts,
        &write_query(""),
        &none,
        Accept::Json,
        br#"{"nope":1}"#,
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::UnknownColumn);
    let e = insert(
        &cache,
        posts,
        &write_query(""),
        &none,
        Accept::Json,
        b"{",
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidJson);
    let e = insert(
        &cache,
        posts,
        &write_query(""),
        &none,
        Accept::Json,
        b"3",
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidField);

    let merge = parse_prefer(["resolution=merge-duplicates, missing=default"].into_iter());
    let p = insert(
        &cache,
        posts,
        &write_query(""),
        &merge,
        Accept::Json,
        br#"[{"id":1,"title":"a"},{"id":2}]"#,
        LIMITS,
    )
    .unwrap();
    let conflict = p.conflict.expect("an upsert");
    assert_eq!(conflict.columns, [id("id")], "the primary key by default");
    assert_eq!(p.groups.len(), 2, "one insert per set of given columns");
    let logs = super::table(&cache, "public", "logs").unwrap();
    let e = insert(
        &cache,
        logs,
        &write_query(""),
        &merge,
        Accept::Json,
        br#"{"line":"x"}"#,
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(
        code(e),
        ErrorCode::BadRequest,
        "no primary key, no on_conflict"
    );
}

#[test]
fn patch_and_delete_need_a_root_filter_and_return_what_prefer_asks() {
    let cache = catalog();
    let posts = super::table(&cache, "public", "posts").unwrap();
    let none = Prefer::default();
    let e = update(
        &cache,
        posts,
        &write_query(""),
        &none,
        Accept::Json,
        br#"{"title":"x"}"#,
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::FilterRequired);
    let e = delete(&cache, posts, &write_query(""), &none, Accept::Json, LIMITS).unwrap_err();
    assert_eq!(code(e), ErrorCode::FilterRequired);
    let open = Limits {
        allow_unfiltered_writes: true,
        ..LIMITS
    };
    assert!(delete(&cache, posts, &write_query(""), &none, Accept::Json, open).is_ok());

    let rep = parse_prefer(["return=representation"].into_iter());
    let p = update(
        &cache,
        posts,
        &write_query("id=eq.1&select=id,title"),
        &rep,
        Accept::Json,
        br#"{"title":"x"}"#,
        LIMITS,
    )
    .unwrap();
    assert_eq!(p.columns, [id("title")]);
    assert!(matches!(&p.returning, Returning::Rows(n) if keys(n) == ["id", "title"]));
    let keys_only = parse_prefer(["return=headers-only"].into_iter());
    let p = delete(
        &cache,
        posts,
        &write_query("id=eq.1"),
        &keys_only,
        Accept::Json,
        LIMITS,
    )
    .unwrap();
    assert!(matches!(&p.returning, Returning::Keys(k) if k == &[id("id")]));
}

#[test]
fn rpc_matches_argument_names_and_get_needs_a_read_only_function() {
    let cache = catalog();
    let p = rpc(&cache, "public", "search", Accept::Json, br#"{"q":"x"}"#).unwrap();
    assert_eq!(p.args, [(id("q"), Some("x".to_string()))]);
    let p = rpc_get(
        &cache,
        "public",
        "search",
        Accept::Json,
        "q=x&lim=3",
        LIMITS,
    )
    .unwrap();
    assert_eq!(p.args.len(), 2);
    let e = rpc(&cache, "public", "search", Accept::Json, br#"{"lim":3}"#).unwrap_err();
    assert_eq!(code(e), ErrorCode::UnknownFunction, "q has no default");
    let e = rpc(
        &cache,
        "public",
        "search",
        Accept::Json,
        br#"{"q":"x","z":1}"#,
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::UnknownFunction);
    let e = rpc_get(&cache, "public", "bump", Accept::Json, "n=1", LIMITS).unwrap_err();
    assert_eq!(code(e), ErrorCode::MethodNotAllowed);
    let e = rpc_get(&cache, "public", "search", Accept::Json, "q=a&q=b", LIMITS).unwrap_err();
    assert_eq!(code(e), ErrorCode::BadRequest);
}

#[test]
fn get_rpc_shapes_a_set_returning_functions_rows_and_keeps_arguments_apart() {
    let cache = catalog();
    let get = |q: &str| rpc_get(&cache, "public", "search", Accept::Json, q, LIMITS);
    let p = get("q=x&select=t:title&title=like.*a*&order=id.desc&limit=500").unwrap();
    assert_eq!(p.args, [(id("q"), Some("x".to_string()))]);
    let node = p.read.expect("shaped rows");
    assert_eq!(keys(&node), ["t"]);
    assert_eq!((node.condition.len(), node.order.len()), (1, 1));
    assert_eq!(node.limit, Some(100), "capped like a read");
    assert!(get("q=x").unwrap().read.is_none());
    assert_eq!(
        code(get("q=x&ghost=eq.1").unwrap_err()),
        ErrorCode::UnknownColumn
    );
    assert_eq!(
        code(get("q=x&select=nope").unwrap_err()),
        ErrorCode::UnknownColumn
    );
    assert_eq!(
        code(get("q=x&select=id,posts(id)").unwrap_err()),
        ErrorCode::BadRequest,
        "no embedding on a function's rows"
    );
    // A function without result rows: an unknown name is an unknown argument, as before.
    let total = |q: &str| rpc_get(&cache, "public", "total", Accept::Json, q, LIMITS);
    assert_eq!(
        code(total("n=1&z=2").unwrap_err()),
        ErrorCode::UnknownFunction
    );
    assert_eq!(
        code(total("n=1&select=x").unwrap_err()),
        ErrorCode::BadRequest
    );
    assert!(total("n=1").unwrap().read.is_none());
}

#[test]
fn presence_of_related_rows_can_be_tested_inside_or_and_and() {
    let cache = catalog();
    let p = plan_read(
        &cache,
        "posts",
        "select=id,comments(),tags()&or=(comments.not.is.null,and(tags.is.null,title.eq.x))",
    )
    .unwrap();
    let [Cond::Or { items, .. }] = p.node.condition.as_slice() else {
        panic!("one or: {:?}", p.node.condition);
    };
    assert!(matches!(&items[0], Cond::Exists { key, present: true } if key == "comments"));
    let Cond::And { items: inner, .. } = &items[1] else {
        panic!("an and");
    };
    assert!(matches!(&inner[0], Cond::Exists { key, present: false } if key == "tags"));
    assert!(matches!(&inner[1], Cond::Pred { .. }));
    // Not embedded: still an unknown column.
    let e = plan_read(&cache, "posts", "select=id&or=(comments.is.null,id.eq.1)").unwrap_err();
    assert_eq!(code(e), ErrorCode::UnknownColumn);
}

#[test]
fn a_spread_may_be_to_one_or_to_many_but_not_nested() {
    let cache = catalog();
    let p = plan_read(&cache, "users", "select=id,...posts(titles:title)").unwrap();
    let posts = embed(&p.node, "posts");
    assert!(posts.spread && !posts.to_one);
    let p = plan_read(&cache, "posts", "select=id,...users(owner_name:name)").unwrap();
    assert!(embed(&p.node, "users").to_one);
    let e = plan_read(
        &cache,
        "users",
        "select=id,...posts(title,...comments(body))",
    )
    .unwrap_err();
    assert_eq!(code(e), ErrorCode::BadRequest);
}
