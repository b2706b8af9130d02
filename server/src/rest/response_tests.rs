//! Unit tests of `rest::response` (no Postgres): statuses, `Content-Range`, `Location` and
//! single-object bodies from plain results.

use std::sync::Arc;

use super::*;
use crate::rest::{
    plan::{DeletePlan, InsertPlan, Node},
    schema::{Ident, Table},
};

fn table() -> Arc<Table> {
    Arc::new(Table {
        schema: Ident::from_catalog("public".into()),
        name: Ident::from_catalog("todos".into()),
        columns: Vec::new(),
        primary_key: vec![Ident::from_catalog("id".into())],
        insertable: true,
    })
}

fn node(offset: u64) -> Node {
    Node {
        table: table(),
        fields: Vec::new(),
        condition: Vec::new(),
        order: Vec::new(),
        limit: Some(10),
        offset,
    }
}

fn read_plan(offset: u64, single: bool) -> ReadPlan {
    ReadPlan {
        node: node(offset),
        count: None,
        single,
        max_rows: 100,
    }
}

fn header<'a>(r: &'a RestResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn read(body: &str, rows: i64, total: Option<i64>) -> ReadResult {
    ReadResult {
        body: body.into(),
        rows,
        total,
    }
}

#[test]
fn a_read_says_its_range_and_206_when_only_part_of_the_count_came_back() {
    let r = for_read(
        &read_plan(0, false),
        read(r#"[{"id":1},{"id":2}]"#, 2, None),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-range"), Some("0-1/*"));
    assert_eq!(header(&r, "content-type"), Some(JSON));
    assert_eq!(r.body.as_deref(), Some(r#"[{"id":1},{"id":2}]"#));

    let r = for_read(&read_plan(3, false), read(r#"[{"id":4}]"#, 1, Some(9))).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(header(&r, "content-range"), Some("3-3/9"));

    let r = for_read(&read_plan(0, false), read("[]", 0, Some(0))).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-range"), Some("*/0"));
}

#[test]
fn an_offset_past_the_counted_end_is_416_with_the_total() {
    let e = for_read(&read_plan(10, false), read("[]", 0, Some(4))).unwrap_err();
    assert!(matches!(e, RestError::RangeNotSatisfiable(_, 4)), "{e:?}");
    // At the end exactly is an empty page, not an error.
    assert!(for_read(&read_plan(4, false), read("[]", 0, Some(4))).is_ok());
}

#[test]
fn a_single_object_is_unwrapped_or_refused() {
    let r = for_read(&read_plan(0, true), read(r#"[{"id":1}]"#, 1, None)).unwrap();
    assert_eq!(r.body.as_deref(), Some(r#"{"id":1}"#));
    assert_eq!(header(&r, "content-type"), Some(OBJECT));
    for rows in [0, 2] {
        let e = for_read(&read_plan(0, true), read("[]", rows, None)).unwrap_err();
        assert!(
            matches!(e, RestError::NotAcceptable(_)),
            "{rows} rows: {e:?}"
        );
    }
}

fn insert(returning: Returning, put: bool, single: bool) -> WritePlan {
    WritePlan::Insert(InsertPlan {
        table: table(),
        columns: Vec::new(),
        rows: "[]".into(),
        row_count: 1,
        conflict: None,
        returning,
        single,
        groups: Vec::new(),
        put,
    })
}

fn written(body: &str, rows: i64) -> WriteResult {
    WriteResult {
        body: body.into(),
        rows,
    }
}

#[test]
fn writes_answer_201_200_or_204_by_method_and_return_preference() {
    let base = "/rest/v1/todos";
    let rows = Returning::Rows(node(0));
    let r = for_write(
        &insert(rows.clone(), false, false),
        base,
        written(r#"[{"id":1}]"#, 1),
    )
    .unwrap();
    assert_eq!(
        (r.status, header(&r, "content-range")),
        (201, Some("0-0/*"))
    );
    assert_eq!(r.body.as_deref(), Some(r#"[{"id":1}]"#));
    let r = for_write(
        &insert(rows, true, false),
        base,
        written(r#"[{"id":1}]"#, 1),
    )
    .unwrap();
    assert_eq!(r.status, 200, "a PUT may have replaced the row");
    let r = for_write(
        &insert(Returning::Minimal, false, false),
        base,
        written("[]", 3),
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_deref()), (201, None));
    assert_eq!(header(&r, "content-range"), Some("0-2/*"));
    let delete = WritePlan::Delete(DeletePlan {
        table: table(),
        condition: Vec::new(),
        returning: Returning::Minimal,
        single: false,
    });
    let r = for_write(&delete, base, written("[]", 0)).unwrap();
    assert_eq!((r.status, header(&r, "content-range")), (204, Some("*/*")));
}

#[test]
fn headers_only_gives_the_location_of_the_first_row_as_a_filter() {
    let keys = Returning::Keys(vec![Ident::from_catalog("id".into())]);
    let r = for_write(
        &insert(keys, false, false),
        "/rest/v1/todos",
        written(r#"[{"id":7,"slug":"a b"},{"id":8}]"#, 2),
    )
    .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(
        header(&r, "location"),
        Some("/rest/v1/todos?id=eq.7&slug=eq.a+b")
    );
    assert_eq!(r.body, None);
}

#[test]
fn a_single_object_write_that_touched_other_than_one_row_is_refused() {
    let plan = insert(Returning::Rows(node(0)), false, true);
    let e = for_write(&plan, "/x", written("[]", 2)).unwrap_err();
    assert!(matches!(e, RestError::NotAcceptable(_)));
    let r = for_write(&plan, "/x", written(r#"[{"id":1}]"#, 1)).unwrap();
    assert_eq!(r.body.as_deref(), Some(r#"{"id":1}"#));
}

#[test]
fn rpc_results_are_204_for_void_and_objects_only_when_asked() {
    let r = for_rpc(false, None, 0).unwrap();
    assert_eq!((r.status, r.body), (204, None));
    let r = for_rpc(false, Some("[1,2]".into()), 2).unwrap();
    assert_eq!((r.status, r.body.as_deref()), (200, Some("[1,2]")));
    assert_eq!(header(&r, "content-type"), Some(JSON));
    let r = for_rpc(true, Some(r#"[{"a":1}]"#.into()), 1).unwrap();
    assert_eq!(r.body.as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(header(&r, "content-type"), Some(OBJECT));
    let r = for_rpc(true, Some("42".into()), 1).unwrap();
    assert_eq!(
        r.body.as_deref(),
        Some("42"),
        "a scalar result stays as it is"
    );
    assert!(for_rpc(true, Some("[1,2]".into()), 2).is_err());
}
