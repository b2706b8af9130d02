//! The realtime WebSocket protocol: every message a client sends and the server sends, the
//! close codes, and the protocol version. `docs/protocol.md` ("Realtime") mirrors this file;
//! a test checks that every message type and close code is documented there. How the hot
//! path writes `changes` frames without building a `ServerMessage` is [`changes`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, ErrorCode};

pub mod changes;

/// The protocol version spoken by this server; clients send it in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message from the client. Every message is one JSON text frame with a `type` tag.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a socket: the protocol version and an optional access token
    /// (without one the socket is anonymous).
    Hello {
        v: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A fresh access token for the live socket; subscriptions continue.
    Auth { token: String },
    /// Start a subscription. `id` is chosen by the client and unique on the socket.
    Subscribe {
        id: String,
        /// `schema.table`, or `table` for the `public` schema.
        table: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
        /// Resume after this cursor instead of taking a snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// End a subscription.
    Unsubscribe { id: String },
    /// Application-level heartbeat (for clients that cannot send WebSocket pings).
    Ping {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

impl ClientMessage {
    /// Every `type` tag a client may send (used to check `docs/protocol.md`).
    pub const TYPES: &'static [&'static str] =
        &["hello", "auth", "subscribe", "unsubscribe", "ping"];
}

/// One change inside a `changes` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeItem {
    pub op: ChangeOp,
    /// The primary key as an object of column → value.
    pub pk: Value,
    /// The row's version; apply a change only if `v` is greater than the version you hold.
    pub v: i64,
    /// The row (projected to the subscription's columns) for `insert` and `update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Value>,
}

/// What happened to a row, as seen by one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeOp {
    /// The row entered the subscription (created, or now matches / is now visible).
    Insert,
    /// The row changed and still matches.
    Update,
    /// The row was deleted.
    Delete,
    /// The row still exists but left the subscription (no longer matches or visible).
    Remove,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// Answer to `hello`.
    Welcome {
        v: u32,
        role: String,
        /// Seconds since the epoch when the token expires (absent when anonymous).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
        heartbeat_ms: u64,
        max_message_bytes: usize,
        max_subscriptions: usize,
    },
    /// Answer to `auth`: the new token is in force.
    Authenticated {
        role: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// A chunk of the initial snapshot of subscription `id` (rows with their versions).
    Snapshot { id: String, rows: Vec<ChangeItem> },
    /// The snapshot is complete; changes after `cursor` follow.
    SnapshotEnd { id: String, cursor: String },
    /// Changes of one transaction that match subscription `id`; `cursor` is the position
    /// after the transaction.
    Changes {
        id: String,
        cursor: String,
        changes: Vec<ChangeItem>,
    },
    /// Catch-up is complete; from here on changes arrive as they happen.
    Live { id: String, cursor: String },
    /// The subscription ended and must be started again without a cursor.
    ResyncRequired { id: String, reason: String },
    /// Answer to `unsubscribe`.
    Unsubscribed { id: String },
    /// Answer to an application-level `ping`.
    Pong {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// A request failed (`id` names the subscription when there is one) or the server
    /// stopped something (e.g. the token expired).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(flatten)]
        error: ApiError,
    },
}

impl ServerMessage {
    /// Every `type` tag the server sends (used to check `docs/protocol.md`).
    pub const TYPES: &'static [&'static str] = &[
        "welcome",
        "authenticated",
        "snapshot",
        "snapshot-end",
        "changes",
        "live",
        "resync-required",
        "unsubscribed",
        "pong",
        "error",
    ];

    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            error: ApiError::new(code, message),
        }
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.to_string()
        })
    }
}

/// WebSocket close codes the server uses, each with what the client should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the client asked to close.
    Normal,
    /// 1009: a frame exceeded twice the message limit; reconnect and send smaller frames.
    TooBig,
    /// 1012: the server is shutting down; reconnect (to any instance) and resume from your
    /// cursors.
    Restarting,
    /// 4000: no frame (or pong) arrived within the heartbeat timeout.
    HeartbeatTimeout,
    /// 4001: the `hello` token was invalid or expired; get a fresh token and reconnect.
    Unauthorized,
    /// 4002: `hello` asked for a protocol version this server does not speak.
    UnsupportedVersion,
    /// 4003: the first message was not `hello`, or it did not arrive within the hello
    /// timeout (`ROWCAST_WS_HELLO_TIMEOUT`).
    HelloRequired,
    /// 4008: the client did not read fast enough and its outgoing queue filled; reconnect
    /// and resume every subscription from its cursor.
    Lagging,
}

impl CloseCode {
    pub const ALL: &'static [CloseCode] = &[
        CloseCode::Normal,
        CloseCode::TooBig,
        CloseCode::Restarting,
        CloseCode::HeartbeatTimeout,
        CloseCode::Unauthorized,
        CloseCode::UnsupportedVersion,
        CloseCode::HelloRequired,
        CloseCode::Lagging,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::TooBig => 1009,
            CloseCode::Restarting => 1012,
            CloseCode::HeartbeatTimeout => 4000,
            CloseCode::Unauthorized => 4001,
            CloseCode::UnsupportedVersion => 4002,
            CloseCode::HelloRequired => 4003,
            CloseCode::Lagging => 4008,
        }
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::TooBig => "message too big",
            CloseCode::Restarting => "server restarting; resume from your cursors",
            CloseCode::HeartbeatTimeout => "heartbeat timeout",
            CloseCode::Unauthorized => "invalid or expired token",
            CloseCode::UnsupportedVersion => "unsupported protocol version",
            CloseCode::HelloRequired => "hello required",
            CloseCode::Lagging => "lagging; resume from your cursors",
        }
    }
}

/// Why a client frame could not be understood, mapped to an error frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseFailure {
    /// The subscription id or `ref` of the request, when it could be read.
    pub id: Option<String>,
    pub error: ApiError,
}

/// Parse one client text frame. Never panics; every failure is an error for that request.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseFailure> {
    let value: Value = serde_json::from_str(text).map_err(|_| ParseFailure {
        id: None,
        error: ApiError::new(ErrorCode::InvalidJson, "the frame is not valid JSON"),
    })?;
    let id = value
        .get("id")
        .or_else(|| value.get("ref"))
        .and_then(Value::as_str)
        .map(|s| s.chars().take(200).collect::<String>());
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(ParseFailure {
            id,
            error: ApiError::new(ErrorCode::BadRequest, "the message has no string `type`"),
        });
    };
    if !ClientMessage::TYPES.contains(&kind) {
        return Err(ParseFailure {
            id,
            error: ApiError::new(ErrorCode::BadRequest, "unknown message type")
                .with_hint(format!("one of: {}", ClientMessage::TYPES.join(", "))),
        });
    }
    serde_json::from_value::<ClientMessage>(value).map_err(|e| ParseFailure {
        id,
        error: ApiError::new(
            ErrorCode::InvalidField,
            "a field is missing or has the wrong type",
        )
        .with_details(field_details(&e.to_string())),
    })
}

/// What of serde's message may go back to the client. Its "invalid type/value" messages
/// quote the value sent (a token, say), so only the expectation is kept; "missing field"
/// and "unknown field" name a field and pass through, as for HTTP bodies.
fn field_details(text: &str) -> String {
    if text.starts_with("missing field") || text.starts_with("unknown field") {
        return text.to_string();
    }
    match text.rsplit_once(", expected ") {
        Some((_, expected)) => format!("expected {expected}"),
        None => "a field has the wrong type".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_tags_match_the_type_lists() {
        let samples = [
            ClientMessage::Hello { v: 1, token: None },
            ClientMessage::Auth { token: "t".into() },
            ClientMessage::Subscribe {
                id: "a".into(),
                table: "t".into(),
                filter: None,
                columns: None,
                cursor: None,
            },
            ClientMessage::Unsubscribe { id: "a".into() },
            ClientMessage::Ping { reference: None },
        ];
        let tags: Vec<String> = samples
            .iter()
            .map(|m| {
                serde_json::to_value(m).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(tags, ClientMessage::TYPES);

        let item = ChangeItem {
            op: ChangeOp::Insert,
            pk: Value::Null,
            v: 1,
            row: None,
        };
        let samples = [
            ServerMessage::Welcome {
                v: 1,
                role: "anon".into(),
                expires_at: None,
                heartbeat_ms: 1,
                max_message_bytes: 1,
                max_subscriptions: 1,
            },
            ServerMessage::Authenticated {
                role: "anon".into(),
                expires_at: None,
            },
            ServerMessage::Snapshot {
                id: "a".into(),
                rows: vec![item.clone()],
            },
            ServerMessage::SnapshotEnd {
                id: "a".into(),
                cursor: "c".into(),
            },
            ServerMessage::Changes {
                id: "a".into(),
                cursor: "c".into(),
                changes: vec![item],
            },
            ServerMessage::Live {
                id: "a".into(),
                cursor: "c".into(),
            },
            ServerMessage::ResyncRequired {
                id: "a".into(),
                reason: "r".into(),
            },
            ServerMessage::Unsubscribed { id: "a".into() },
            ServerMessage::Pong { reference: None },
            ServerMessage::error(None, ErrorCode::BadRequest, "x"),
        ];
        let tags: Vec<String> = samples
            .iter()
            .map(|m| {
                serde_json::to_value(m).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(tags, ServerMessage::TYPES);
        // Round trip through the JSON form.
        for m in samples {
            let back: ServerMessage = serde_json::from_str(&m.to_json()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn protocol_doc_lists_every_message_and_close_code() {
        let doc = include_str!("../../../docs/protocol.md");
        for t in ClientMessage::TYPES.iter().chain(ServerMessage::TYPES) {
            assert!(
                doc.contains(&format!("`{t}`")),
                "docs/protocol.md does not document message type `{t}`"
            );
        }
        for c in CloseCode::ALL {
            assert!(
                doc.contains(&format!("`{}`", c.code())),
                "docs/protocol.md does not document close code {}",
                c.code()
            );
        }
        assert!(doc.contains(&format!("\"v\": {PROTOCOL_VERSION}")));
    }

    #[test]
    fn bad_frames_get_stable_codes() {
        let code = |t: &str| parse_client_message(t).unwrap_err().error.code;
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("[]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"nope","id":"x"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"subscribe","id":"x"}"#),
            ErrorCode::InvalidField
        );
        let f = parse_client_message(r#"{"type":"subscribe","id":"x","table":5}"#).unwrap_err();
        assert_eq!(f.id.as_deref(), Some("x"));
    }

    #[test]
    fn invalid_field_details_never_echo_the_value_sent() {
        let frames = [
            r#"{"type":"hello","v":"sekrit-value-1"}"#,
            r#"{"type":"auth","token":12345678987}"#,
            r#"{"type":"hello","v":1,"token":["sekrit-value-1"]}"#,
            r#"{"type":"subscribe","id":"x","table":"t","columns":"sekrit-value-1"}"#,
            r#"{"type":"ping","ref":{"sekrit-value-1":1}}"#,
            r#"{"type":"hello","v":-12345678987}"#,
        ];
        for frame in frames {
            let f = parse_client_message(frame).unwrap_err();
            assert_eq!(f.error.code, ErrorCode::InvalidField, "{frame}");
            let body = serde_json::to_string(&f.error).unwrap();
            assert!(!body.contains("sekrit"), "{frame} → {body}");
            assert!(!body.contains("12345678987"), "{frame} → {body}");
            assert!(body.contains("expected"), "{frame} → {body}");
        }
        // Naming a field is fine (and useful).
        let f = parse_client_message(r#"{"type":"subscribe","id":"x"}"#).unwrap_err();
        assert!(serde_json::to_string(&f.error)
            .unwrap()
            .contains("missing field `table`"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn parser_never_panics_on_random_text(s in ".{0,300}") {
            let _ = parse_client_message(&s);
        }

        #[test]
        fn parser_never_panics_on_json_shaped_frames(
            t in proptest::sample::select(vec!["hello", "auth", "subscribe", "unsubscribe", "ping", "x", ""]),
            id in proptest::option::of("[a-z0-9]{0,8}"),
            extra in proptest::collection::vec(("[a-z]{1,8}", proptest::prelude::any::<i64>()), 0..4),
        ) {
            let mut v = serde_json::json!({ "type": t });
            if let Some(id) = id { v["id"] = Value::String(id); }
            for (k, n) in extra { v[k] = Value::from(n); }
            let _ = parse_client_message(&v.to_string());
        }
    }
}
