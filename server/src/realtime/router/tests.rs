//! Unit tests of the router over a fake [`RowSource`] (no Postgres): delivery of a
//! transaction to the subscriptions its changes concern on the fast path, closing the one
//! connection whose queue overflowed, and rows moving in and out of a subscription when a
//! membership its policy reads changes.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConnId, GoLive, Outbound, Router, SubKey};
use crate::{
    auth::Identity,
    capture::LogId,
    protocol::realtime::{changes::EncodedId, ChangeItem, ChangeOp, ServerMessage},
    realtime::{
        catalog::{TableCatalog, VERSION_COLUMN},
        feed::{Change, ChangeBatch, Cursor, Op, TableName},
        filter::compile_filter,
        rows::{RowSource, RowsAt},
        RealtimeStats, SubPlan,
    },
    store::{
        realtime::{ColumnFacts, PolicyFacts, RowsAtError, TableFacts, VisibilityCheck},
        StoreError,
    },
};

const U1: &str = "00000000-0000-0000-0000-0000000000a1";
const U2: &str = "00000000-0000-0000-0000-0000000000a2";
const U3: &str = "00000000-0000-0000-0000-0000000000a3";
const OWNER_RULE: &str = "(owner = rowcast.uid())";
const MEMBER_OF_LIST: &str = "(EXISTS ( SELECT 1 FROM public.members m WHERE ((m.list_id = todos.list_id) AND (m.user_id = rowcast.uid()))))";

fn log() -> LogId {
    LogId::new(1, 1)
}

/// Tables as of now (the fake ignores the position: each test sets the rows a read at that
/// point would see), and every read made.
#[derive(Default)]
struct FakeRows {
    tables: Mutex<HashMap<String, Vec<Map<String, Value>>>>,
    reads: Mutex<Vec<(String, Option<Vec<String>>)>>,
}

impl FakeRows {
    fn set(&self, table: &str, rows: Vec<Value>) {
        let rows = rows.into_iter().map(object).collect();
        self.lock_tables().insert(table.to_string(), rows);
    }

    fn lock_tables(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Map<String, Value>>>> {
        self.tables.lock().unwrap()
    }

    fn reads(&self) -> Vec<(String, Option<Vec<String>>)> {
        self.reads.lock().unwrap().clone()
    }
}

/// A JSON value as the text the router compares link values by.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl RowSource for FakeRows {
    fn rows_at<'a>(
        &'a self,
        q: RowsAt<'a>,
    ) -> BoxFuture<'a, Result<Vec<Map<String, Value>>, RowsAtError>> {
        let mut values = q.only.map(|o| o.values.to_vec());
        if let Some(v) = values.as_mut() {
            v.sort();
        }
        self.reads
            .lock()
            .unwrap()
            .push((q.name.to_string(), values));
        let rows: Vec<Map<String, Value>> = self
            .lock_tables()
            .get(q.name)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                q.only
                    .is_none_or(|o| r.get(o.column).is_some_and(|v| o.values.contains(&text(v))))
            })
            .collect();
        Box::pin(async move { Ok(rows) })
    }

    fn visible_rows<'a>(
        &'a self,
        _table: (&'a str, &'a str),
        _checks: &'a [VisibilityCheck],
    ) -> BoxFuture<'a, Result<Vec<Vec<Vec<bool>>>, StoreError>> {
        // Every policy in these tests is on the fast path.
        Box::pin(async { Err(StoreError::Config("no SQL checks in these tests".into())) })
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn column(name: &str, typname: &str) -> ColumnFacts {
    ColumnFacts {
        name: name.into(),
        sql_type: typname.into(),
        typname: typname.into(),
        deterministic: true,
        selectable: [true; 3],
    }
}

fn table(name: &str, columns: Vec<ColumnFacts>, policy: &str) -> TableFacts {
    TableFacts {
        schema: "public".into(),
        name: name.into(),
        plain: true,
        rls: true,
        synced: true,
        bypass: [false, false, true],
        columns,
        primary_key: vec!["id".into()],
        policies: vec![PolicyFacts {
            name: "rule".into(),
            permissive: true,
            sql: policy.into(),
            applies: [true; 3],
        }],
    }
}

fn todos(policy: &str) -> TableFacts {
    table(
        "todos",
        vec![
            column("id", "int8"),
            column("list_id", "int8"),
            column("owner", "uuid"),
            column("done", "bool"),
            column(VERSION_COLUMN, "int8"),
        ],
        policy,
    )
}

fn members() -> TableFacts {
    table(
        "members",
        vec![
            column("id", "int8"),
            column("list_id", "int8"),
            column("user_id", "uuid"),
        ],
        "(user_id = rowcast.uid())",
    )
}

/// A subscription of `user` to `todos`, with its visibility rule bound and its filter
/// compiled as `subscribe` does.
fn plan(id: &str, catalog: &Arc<TableCatalog>, user: &str, filter: Option<Value>) -> Arc<SubPlan> {
    let identity = Arc::new(Identity::user(user, json!({})));
    let visibility = catalog
        .access(identity.role)
        .visibility(&identity)
        .expect("the role reads todos");
    assert!(
        matches!(visibility, crate::policy::compile::Visibility::Fast(_)),
        "the rule takes the fast path"
    );
    Arc::new(SubPlan {
        id: id.into(),
        encoded_id: EncodedId::new(id),
        table: TableName {
            schema: "public".into(),
            name: "todos".into(),
        },
        catalog: catalog.clone(),
        filter: compile_filter(filter.as_ref(), catalog).expect("a valid filter"),
        visibility,
        identity,
        columns: None,
        log: log(),
    })
}

/// A connection as the session holds it: its queue and its "lagging" signal.
struct Client {
    conn: ConnId,
    rx: mpsc::Receiver<Outbound>,
    lagging: CancellationToken,
}

fn connect(router: &Router, queue: usize) -> Client {
    let conn = router.next_id();
    let (tx, rx) = mpsc::channel(queue);
    let lagging = CancellationToken::new();
    router.add_connection(conn, tx, lagging.clone());
    Client { conn, rx, lagging }
}

/// Register `plan` and switch it to live at the router's position (nothing to catch up).
fn subscribe(router: &Router, client: &Client, plan: &Arc<SubPlan>) -> SubKey {
    let (key, position) = router
        .register(client.conn, plan.clone())
        .expect("the connection is registered");
    let marker = Bytes::from(
        ServerMessage::Live {
            id: plan.id.clone(),
            cursor: log().wire(position).to_string(),
        }
        .to_json(),
    );
    assert_eq!(router.go_live(key, position, marker), GoLive::Done);
    key
}

/// What the client has been sent so far.
fn received(client: &mut Client) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    while let Ok(o) = client.rx.try_recv() {
        let text = std::str::from_utf8(&o.frame).expect("frames are UTF-8");
        out.push(serde_json::from_str(text).expect("frames parse as server messages"));
    }
    out
}

/// Drop the `live` marker each subscription starts with.
fn skip_live(client: &mut Client) {
    for m in received(client) {
        assert!(matches!(m, ServerMessage::Live { .. }), "{m:?}");
    }
}

fn router(rows: Arc<FakeRows>) -> (Router, Arc<RealtimeStats>) {
    let stats = Arc::new(RealtimeStats::default());
    let router = Router::new(rows, stats.clone(), 8);
    router.set_position(Cursor::new(1, 0));
    router.set_ready();
    (router, stats)
}

fn change(table: &str, op: Op, old: Option<Value>, new: Option<Value>, version: i64) -> Change {
    let image = new.as_ref().or(old.as_ref()).expect("an image");
    Change {
        table: TableName {
            schema: "public".into(),
            name: table.into(),
        },
        op,
        pk: object(json!({ "id": image["id"] })),
        version,
        new_row: new,
        old_row: old,
        cursor: Cursor::START,
    }
}

/// One transaction with id `xid`, its changes at consecutive positions.
fn batch(xid: u64, changes: Vec<Change>) -> ChangeBatch {
    let changes = changes
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.cursor = Cursor::new(xid, i as i64 + 1);
            c
        })
        .collect();
    ChangeBatch {
        xid,
        started_at: chrono::Utc::now(),
        changes,
    }
}

fn todo(id: i64, list: i64, owner: &str, done: bool, v: i64) -> Value {
    json!({ "id": id, "list_id": list, "owner": owner, "done": done, "_v": v })
}

fn item(op: ChangeOp, id: i64, v: i64, row: Option<Value>) -> ChangeItem {
    ChangeItem {
        op,
        pk: json!({ "id": id }),
        v,
        row,
    }
}

fn changes(id: &str, b: &ChangeBatch, items: Vec<ChangeItem>) -> ServerMessage {
    ServerMessage::Changes {
        id: id.into(),
        cursor: log().wire(b.cursor()).to_string(),
        changes: items,
    }
}

#[tokio::test]
async fn a_transaction_reaches_each_subscription_as_its_filter_and_owner_rule_see_it() {
    let rows = Arc::new(FakeRows::default());
    let (router, stats) = router(rows.clone());
    let catalog = Arc::new(TableCatalog::build(todos(OWNER_RULE), vec![]));
    let mut c1 = connect(&router, 16);
    let mut c2 = connect(&router, 16);
    let open = plan(
        "open",
        &catalog,
        U1,
        Some(json!({ "column": "done", "op": "eq", "value": false })),
    );
    let finished = plan(
        "finished",
        &catalog,
        U1,
        Some(json!({ "column": "done", "op": "eq", "value": true })),
    );
    let all = plan("all", &catalog, U2, None);
    subscribe(&router, &c1, &open);
    subscribe(&router, &c1, &finished);
    subscribe(&router, &c2, &all);
    skip_live(&mut c1);
    skip_live(&mut c2);

    let new1 = todo(1, 1, U1, false, 10);
    let new2 = todo(2, 1, U2, false, 11);
    let (old3, new3) = (todo(3, 1, U1, false, 5), todo(3, 1, U1, true, 12));
    let old4 = todo(4, 1, U2, true, 6);
    let b = batch(
        10,
        vec![
            change("todos", Op::Insert, None, Some(new1.clone()), 10),
            change("todos", Op::Insert, None, Some(new2.clone()), 11),
            change("todos", Op::Update, Some(old3), Some(new3.clone()), 12),
            change("todos", Op::Delete, Some(old4), None, 13),
            // Nobody subscribed sees another user's rows.
            change(
                "todos",
                Op::Insert,
                None,
                Some(todo(5, 1, U3, false, 14)),
                14,
            ),
        ],
    );
    router.dispatch(&b).await;

    let mut got = received(&mut c1);
    got.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        got,
        [
            changes(
                "finished",
                &b,
                vec![item(ChangeOp::Insert, 3, 12, Some(new3))]
            ),
            changes(
                "open",
                &b,
                vec![
                    item(ChangeOp::Insert, 1, 10, Some(new1)),
                    item(ChangeOp::Remove, 3, 12, None),
                ]
            ),
        ]
    );
    assert_eq!(
        received(&mut c2),
        [changes(
            "all",
            &b,
            vec![
                item(ChangeOp::Insert, 2, 11, Some(new2)),
                item(ChangeOp::Delete, 4, 13, None),
            ]
        )]
    );
    assert_eq!(stats.frames_sent.load(Relaxed), 3);
    assert_eq!(stats.changes_delivered.load(Relaxed), 5);
    assert_eq!(stats.sql_checks.load(Relaxed), 0);
    assert!(rows.reads().is_empty(), "the fast path reads nothing");

    // The owner index: a transaction touching only another user's rows concerns no
    // subscription, so none is even evaluated.
    let evaluated = stats.fast_evaluations.load(Relaxed);
    let other = batch(
        11,
        vec![change(
            "todos",
            Op::Insert,
            None,
            Some(todo(6, 1, U3, false, 15)),
            15,
        )],
    );
    router.dispatch(&other).await;
    assert_eq!(stats.fast_evaluations.load(Relaxed), evaluated);
    assert!(received(&mut c1).is_empty());
    assert!(received(&mut c2).is_empty());
}

#[tokio::test]
async fn a_connection_whose_queue_overflows_is_closed_as_lagging_while_others_still_receive() {
    let (router, stats) = router(Arc::new(FakeRows::default()));
    let catalog = Arc::new(TableCatalog::build(todos(OWNER_RULE), vec![]));
    // Room for the `live` marker only, which the slow client never reads.
    let mut slow = connect(&router, 1);
    let mut fast = connect(&router, 16);
    let slow_key = subscribe(&router, &slow, &plan("s", &catalog, U1, None));
    let fast_key = subscribe(&router, &fast, &plan("f", &catalog, U1, None));
    skip_live(&mut fast);

    for xid in [10, 11] {
        let row = todo(xid as i64, 1, U1, false, xid as i64);
        let b = batch(
            xid,
            vec![change(
                "todos",
                Op::Insert,
                None,
                Some(row.clone()),
                xid as i64,
            )],
        );
        router.dispatch(&b).await;
        assert_eq!(
            received(&mut fast),
            [changes(
                "f",
                &b,
                vec![item(ChangeOp::Insert, xid as i64, xid as i64, Some(row))]
            )],
            "transaction {xid}"
        );
    }
    assert!(
        slow.lagging.is_cancelled(),
        "the slow connection is told to close as lagging"
    );
    assert!(!fast.lagging.is_cancelled());
    assert!(!router.contains(slow_key), "its subscriptions are gone");
    assert!(router.contains(fast_key));
    assert_eq!(stats.lagging_closes.load(Relaxed), 1);
    // It holds what it had; nothing was dropped silently in between: it resumes from there.
    assert!(matches!(
        received(&mut slow)[..],
        [ServerMessage::Live { .. }]
    ));
}

#[tokio::test]
async fn rows_move_in_and_out_when_a_membership_changes() {
    let rows = Arc::new(FakeRows::default());
    rows.set(
        "members",
        vec![json!({ "id": 1, "list_id": 1, "user_id": U1 })],
    );
    let (router, stats) = router(rows.clone());
    let catalog = Arc::new(TableCatalog::build(todos(MEMBER_OF_LIST), vec![members()]));
    assert_eq!(catalog.refs.len(), 1, "members is mirrored");
    router.track(&catalog.refs).await.expect("the index loads");
    assert_eq!(rows.reads(), [("members".to_string(), None)]);
    assert_eq!(stats.relation_rows.load(Relaxed), 1);

    let mut u1 = connect(&router, 16);
    let mut u2 = connect(&router, 16);
    subscribe(&router, &u1, &plan("mine", &catalog, U1, None));
    subscribe(&router, &u2, &plan("theirs", &catalog, U2, None));
    skip_live(&mut u1);
    skip_live(&mut u2);

    // The rows of list 2 as of the join (the move read), one with a version older than the
    // membership change.
    let in_list2 = todo(20, 2, U3, false, 4);
    rows.set("todos", vec![todo(10, 1, U3, false, 3), in_list2.clone()]);
    let joined = batch(
        10,
        vec![change(
            "members",
            Op::Insert,
            None,
            Some(json!({ "id": 2, "list_id": 2, "user_id": U1 })),
            7,
        )],
    );
    router.dispatch(&joined).await;
    assert_eq!(
        received(&mut u1),
        // Versioned at least as the membership change, so it is not taken for an older state.
        [changes(
            "mine",
            &joined,
            vec![item(ChangeOp::Insert, 20, 7, Some(in_list2))]
        )]
    );
    assert!(
        received(&mut u2).is_empty(),
        "another user's membership moves nothing for u2"
    );
    assert_eq!(
        rows.reads().last(),
        Some(&("todos".to_string(), Some(vec!["2".to_string()])))
    );

    // Now a member of list 2: its changes reach u1 through the index.
    let edited = todo(20, 2, U3, true, 8);
    let edit = batch(
        11,
        vec![change(
            "todos",
            Op::Update,
            Some(todo(20, 2, U3, false, 4)),
            Some(edited.clone()),
            8,
        )],
    );
    router.dispatch(&edit).await;
    assert_eq!(
        received(&mut u1),
        [changes(
            "mine",
            &edit,
            vec![item(ChangeOp::Update, 20, 8, Some(edited))]
        )]
    );

    // Leaving list 1 removes its rows (they still exist: `remove`, not `delete`).
    let left = batch(
        12,
        vec![change(
            "members",
            Op::Delete,
            Some(json!({ "id": 1, "list_id": 1, "user_id": U1 })),
            None,
            9,
        )],
    );
    router.dispatch(&left).await;
    assert_eq!(
        received(&mut u1),
        [changes(
            "mine",
            &left,
            vec![item(ChangeOp::Remove, 10, 9, None)]
        )]
    );
    assert_eq!(stats.relation_rows.load(Relaxed), 1);

    // And list 1's changes no longer reach u1.
    let later = batch(
        13,
        vec![change(
            "todos",
            Op::Insert,
            None,
            Some(todo(11, 1, U3, false, 10)),
            10,
        )],
    );
    router.dispatch(&later).await;
    assert!(received(&mut u1).is_empty());
    assert!(received(&mut u2).is_empty());
}
