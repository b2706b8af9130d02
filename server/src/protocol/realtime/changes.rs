//! How a `changes` frame is written on the hot path: each item is serialized once per
//! transaction ([`EncodedItem`], shared by every subscriber with the same projection) and
//! each subscriber's frame is assembled from those bytes ([`changes_frame`]) instead of
//! serializing a [`ServerMessage::Changes`](super::ServerMessage::Changes) per delivery.
//! The bytes are the same JSON that `ServerMessage::Changes` serializes to (tested below).

use std::{fmt::Write, sync::Arc};

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::ChangeOp;

/// A subscription id as a JSON string literal, ready to splice into frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedId(Box<str>);

impl EncodedId {
    pub fn new(id: &str) -> EncodedId {
        // Serializing a string cannot fail.
        EncodedId(
            serde_json::to_string(id)
                .unwrap_or_else(|_| "\"\"".into())
                .into(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One [`ChangeItem`](super::ChangeItem) serialized, cheap to share between subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedItem(Arc<str>);

impl EncodedItem {
    /// The item for a row with primary key `pk` at version `v`. The row image is written
    /// for `insert` and `update` only, as the protocol says.
    pub fn new(
        op: ChangeOp,
        pk: &Map<String, Value>,
        v: i64,
        row: Option<RowImage<'_>>,
    ) -> EncodedItem {
        let row = match op {
            ChangeOp::Insert | ChangeOp::Update => row,
            ChangeOp::Delete | ChangeOp::Remove => None,
        };
        let item = ItemRef { op, pk, v, row };
        // Serializing JSON maps with string keys cannot fail.
        EncodedItem(serde_json::to_string(&item).unwrap_or_default().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A row image limited to a subscription's columns (`None`: all of them).
#[derive(Debug, Clone, Copy)]
pub struct RowImage<'a> {
    pub row: &'a Map<String, Value>,
    pub columns: Option<&'a [String]>,
}

impl Serialize for RowImage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.columns {
            None => self.row.serialize(s),
            Some(cols) => {
                let mut m = s.serialize_map(Some(cols.len()))?;
                for c in cols {
                    m.serialize_entry(c, self.row.get(c).unwrap_or(&Value::Null))?;
                }
                m.end()
            }
        }
    }
}

/// `ChangeItem`'s field names and order, over borrowed parts.
#[derive(serde::Serialize)]
struct ItemRef<'a> {
    op: ChangeOp,
    pk: &'a Map<String, Value>,
    v: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<RowImage<'a>>,
}

/// `{"type":"changes","id":…,"cursor":…,"changes":[…]}` from pre-serialized items.
pub fn changes_frame(
    id: &EncodedId,
    cursor: impl std::fmt::Display,
    items: &[EncodedItem],
) -> Bytes {
    Bytes::from(frame_text(id, cursor, items))
}

/// The fixed text of a `changes` frame around its id, cursor and items.
const FRAME_TEXT: usize = r#"{"type":"changes","id":,"cursor":"","changes":[]}"#.len();

/// Room for a cursor (`<xid>:<id>:<log>`: 20 + 20 + 16 digits and two colons, rounded up).
const CURSOR_ROOM: usize = 64;

/// The frame's length, or more: it is allocated once, never regrown.
fn frame_capacity(id: &EncodedId, items: &[EncodedItem]) -> usize {
    FRAME_TEXT + CURSOR_ROOM + id.0.len() + items.iter().map(|i| i.0.len() + 1).sum::<usize>()
}

fn frame_text(id: &EncodedId, cursor: impl std::fmt::Display, items: &[EncodedItem]) -> String {
    let mut s = String::with_capacity(frame_capacity(id, items));
    s.push_str(r#"{"type":"changes","id":"#);
    s.push_str(&id.0);
    s.push_str(r#","cursor":"#);
    write_json_string(&mut s, cursor);
    s.push_str(r#","changes":["#);
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        s.push_str(&item.0);
    }
    s.push_str("]}");
    s
}

/// `text` as a JSON string. Cursors never need escaping, so the text is written in place and
/// only re-encoded if it turns out to need it.
fn write_json_string(s: &mut String, text: impl std::fmt::Display) {
    let start = s.len();
    s.push('"');
    let _ = write!(s, "{text}");
    let plain = !s[start + 1..]
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || b < 0x20);
    if plain {
        s.push('"');
    } else {
        let raw = s.split_off(start + 1);
        s.truncate(start);
        s.push_str(&serde_json::to_string(&raw).unwrap_or_else(|_| "\"\"".into()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::realtime::{ChangeItem, ServerMessage};

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    /// An item as the fast writer encodes it, and as the wire type holds it.
    fn item(
        op: ChangeOp,
        pk: Value,
        v: i64,
        row: Option<Value>,
        columns: Option<&[String]>,
    ) -> (EncodedItem, ChangeItem) {
        let pk = obj(pk);
        let row = row.map(obj);
        let encoded = EncodedItem::new(
            op,
            &pk,
            v,
            row.as_ref().map(|row| RowImage { row, columns }),
        );
        let projected = row.filter(|_| matches!(op, ChangeOp::Insert | ChangeOp::Update));
        let projected = projected.map(|r| match columns {
            None => Value::Object(r),
            Some(cols) => Value::Object(
                cols.iter()
                    .map(|c| (c.clone(), r.get(c).cloned().unwrap_or(Value::Null)))
                    .collect(),
            ),
        });
        let wire = ChangeItem {
            op,
            pk: Value::Object(pk),
            v,
            row: projected,
        };
        (encoded, wire)
    }

    /// The fast frame parses into exactly the `ServerMessage::Changes` it stands for, and
    /// is the same JSON that message serializes to.
    fn assert_round_trip(id: &str, cursor: &str, items: Vec<(EncodedItem, ChangeItem)>) {
        let (encoded, wire): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let frame = changes_frame(&EncodedId::new(id), cursor, &encoded);
        let text = std::str::from_utf8(&frame).expect("frames are UTF-8");
        let expected = ServerMessage::Changes {
            id: id.into(),
            cursor: cursor.into(),
            changes: wire,
        };
        let parsed: ServerMessage = serde_json::from_str(text).expect("the frame parses");
        assert_eq!(parsed, expected, "{text}");
        let as_value: Value = serde_json::from_str(text).unwrap();
        let expected_value: Value = serde_json::from_str(&expected.to_json()).unwrap();
        assert_eq!(as_value, expected_value, "{text}");
    }

    #[test]
    fn frames_of_every_op_parse_into_the_changes_message() {
        let row = json!({ "id": 7, "title": "milk", "done": false, "_v": 12 });
        assert_round_trip(
            "todos",
            "100:7:0000000000004000",
            vec![
                item(
                    ChangeOp::Insert,
                    json!({ "id": 7 }),
                    12,
                    Some(row.clone()),
                    None,
                ),
                item(
                    ChangeOp::Update,
                    json!({ "id": 7 }),
                    13,
                    Some(row.clone()),
                    None,
                ),
                item(ChangeOp::Delete, json!({ "id": 8 }), 14, None, None),
                item(ChangeOp::Remove, json!({ "id": 9 }), 15, None, None),
                // A row image offered with a delete is not written.
                item(ChangeOp::Delete, json!({ "id": 7 }), 16, Some(row), None),
            ],
        );
    }

    #[test]
    fn a_frame_without_projection_is_byte_for_byte_the_serialized_message() {
        let row = json!({ "id": 1, "b": [1, 2], "a": { "z": null } });
        let (encoded, wire) = item(ChangeOp::Insert, json!({ "id": 1 }), 3, Some(row), None);
        let frame = changes_frame(&EncodedId::new("s"), "1:2", &[encoded]);
        let expected = ServerMessage::Changes {
            id: "s".into(),
            cursor: "1:2".into(),
            changes: vec![wire],
        };
        assert_eq!(std::str::from_utf8(&frame).unwrap(), expected.to_json());
    }

    #[test]
    fn strings_needing_escapes_survive_in_ids_keys_rows_and_cursors() {
        let nasty = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é ☃ 🦀 </script>";
        let row = json!({ "id": nasty, nasty: nasty, "title": "\u{2028}\u{2029}" });
        assert_round_trip(
            nasty,
            "1:2:\"odd\\cursor\n",
            vec![
                item(
                    ChangeOp::Insert,
                    json!({ "id": nasty }),
                    1,
                    Some(row.clone()),
                    None,
                ),
                item(ChangeOp::Remove, json!({ "id": nasty }), 2, Some(row), None),
            ],
        );
    }

    #[test]
    fn nested_json_and_projections_are_written_as_the_wire_type_holds_them() {
        let row = json!({
            "id": { "tenant": 1, "n": 2 },
            "doc": { "tags": ["a", { "deep": [[], {}, [null, true, 1.5e300, -0.0]] }], "n": -9_007_199_254_740_993i64 },
            "big": u64::MAX,
            "owner": "u1",
            "_v": 5,
        });
        let columns: Vec<String> = vec!["doc".into(), "id".into(), "missing".into()];
        let pk = json!({ "tenant": 1, "n": 2 });
        assert_round_trip(
            "nested",
            "9:9",
            vec![
                item(
                    ChangeOp::Update,
                    pk.clone(),
                    5,
                    Some(row.clone()),
                    Some(&columns),
                ),
                item(ChangeOp::Insert, pk.clone(), 5, Some(row.clone()), None),
                item(ChangeOp::Insert, pk, 5, Some(row), Some(&[])),
            ],
        );
    }

    #[test]
    fn large_rows_and_many_items_round_trip() {
        let big = "x".repeat(1 << 20);
        let items = (0..200)
            .map(|i| {
                let row = json!({ "id": i, "body": if i == 0 { big.clone() } else { format!("row {i}") } });
                item(ChangeOp::Insert, json!({ "id": i }), i, Some(row), None)
            })
            .collect();
        assert_round_trip("many", "1:1", items);
    }

    #[test]
    fn an_empty_batch_is_still_a_valid_changes_message() {
        // The server never sends one (a subscription that sees nothing gets no frame), but
        // the writer stays well-formed.
        assert_round_trip("empty", "1:1", vec![]);
    }

    #[test]
    fn the_frame_is_allocated_once_even_for_the_longest_cursor() {
        let row = json!({ "id": 1, "title": "t".repeat(300) });
        let (encoded, _) = item(ChangeOp::Insert, json!({ "id": 1 }), 1, Some(row), None);
        let id = EncodedId::new("a-long-ish-subscription-id");
        let longest = format!("{}:{}:{:016x}", u64::MAX, i64::MIN, u64::MAX);
        for n in [0, 1, 50] {
            let items = vec![encoded.clone(); n];
            let reserved = String::with_capacity(frame_capacity(&id, &items)).capacity();
            let text = frame_text(&id, &longest, &items);
            assert_eq!(text.capacity(), reserved, "the frame was regrown");
            let _: ServerMessage = serde_json::from_str(&text).unwrap();
        }
    }
}
