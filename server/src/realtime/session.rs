//! One WebSocket connection's state machine, independent of the transport: `hello` first
//! (version and token), then subscribe/unsubscribe/auth/ping; token expiry; the bounded
//! outgoing queue the router and subscription tasks write into. The transport
//! (`http::realtime`) feeds it frames and writes out what it queues.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tokio::{
    sync::{mpsc, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    router::{ConnId, Outbound},
    subscription::{self, Handle, Outlet, Request},
    ConnectionSlot, Realtime,
};
use crate::{
    auth::Identity,
    protocol::{
        realtime::{
            parse_client_message, ClientMessage, CloseCode, ServerMessage, PROTOCOL_VERSION,
        },
        ApiError, ErrorCode,
    },
};

/// What the transport should do after handing the session a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Close(CloseCode),
}

pub struct Session {
    rt: Arc<Realtime>,
    conn: ConnId,
    outlet: Outlet,
    identity: Option<Arc<Identity>>,
    /// Seconds since the epoch when the token expires.
    expires_at: Option<u64>,
    /// The same moment on the runtime's clock (what the transport's timer waits for), fixed
    /// when the token arrives.
    expiry_deadline: Option<Instant>,
    /// Deliveries are stopped because the token expired; only `auth`/`ping`/`unsubscribe`.
    expired: bool,
    subs: HashMap<String, Handle>,
    slot: ConnectionSlot,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("conn", &self.conn).finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn expiry_of(identity: &Identity) -> Option<u64> {
    identity.claims.get("exp").and_then(|v| v.as_u64())
}

/// The identity without its time-bound claims: two tokens for the same identity compare
/// equal, so a refresh keeps the subscriptions.
fn stable_claims(identity: &Identity) -> serde_json::Value {
    let mut c = identity.claims.clone();
    if let Some(m) = c.as_object_mut() {
        for k in ["exp", "iat", "nbf", "jti"] {
            m.remove(k);
        }
    }
    c
}

impl Session {
    /// A session for a newly accepted connection; returns the queue the transport drains
    /// and the token that is cancelled when the queue overflowed.
    pub fn new(
        rt: Arc<Realtime>,
        slot: ConnectionSlot,
    ) -> (Session, mpsc::Receiver<Outbound>, CancellationToken) {
        let conn = rt.router.next_id();
        let queue = rt.settings.queue_len.max(2);
        let (tx, rx) = mpsc::channel(queue);
        let lagging = CancellationToken::new();
        rt.router.add_connection(conn, tx.clone(), lagging.clone());
        let outlet = Outlet {
            conn,
            tx,
            bulk: Arc::new(Semaphore::new(queue / 2)),
            lagging: lagging.clone(),
        };
        (
            Session {
                rt,
                conn,
                outlet,
                identity: None,
                expires_at: None,
                expiry_deadline: None,
                expired: false,
                subs: HashMap::new(),
                slot,
            },
            rx,
            lagging,
        )
    }

    /// Queue a reply. A full queue means the client is not reading: lagging.
    fn send(&self, msg: &ServerMessage) {
        if matches!(msg, ServerMessage::Error { .. }) {
            self.rt.stats.errors.fetch_add(1, Relaxed);
        }
        if self
            .outlet
            .tx
            .try_send(Outbound::live(Bytes::from(msg.to_json())))
            .is_err()
        {
            self.outlet.lagging.cancel();
        }
    }

    fn error(&self, id: Option<String>, error: ApiError) {
        self.send(&ServerMessage::Error { id, error });
    }

    /// How long until the token expires (`None`: never, or already handled).
    pub fn until_expiry(&self) -> Option<Duration> {
        if self.expired {
            return None;
        }
        Some(
            self.expiry_deadline?
                .saturating_duration_since(Instant::now()),
        )
    }

    /// Take the token's expiry (from a verified identity).
    fn set_expiry(&mut self, identity: &Identity) {
        self.expires_at = expiry_of(identity);
        self.expiry_deadline = self
            .expires_at
            .map(|at| Instant::now() + Duration::from_secs(at.saturating_sub(now_secs())));
    }

    /// Whether `hello` has been accepted.
    pub fn greeted(&self) -> bool {
        self.identity.is_some()
    }

    /// A binary frame: not part of the protocol.
    pub fn on_binary(&mut self) -> Control {
        self.error(
            None,
            ApiError::new(ErrorCode::BadRequest, "binary frames are not supported")
                .with_hint("send JSON text frames"),
        );
        Control::Continue
    }

    /// A frame over the message limit (but under the hard limit).
    pub fn on_oversized(&mut self) -> Control {
        self.error(
            None,
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "frames are limited to {} bytes",
                    self.rt.settings.max_message_bytes
                ),
            ),
        );
        Control::Continue
    }

    /// The token expired without a refresh: stop every subscription and say why.
    pub fn on_expired(&mut self) -> Control {
        self.expired = true;
        self.end_all();
        self.error(
            None,
            ApiError::new(
                ErrorCode::TokenExpired,
                "the access token expired; deliveries stopped",
            )
            .with_hint("send `auth` with a fresh token, then subscribe again with your cursors"),
        );
        Control::Continue
    }

    pub async fn on_text(&mut self, text: &str) -> Control {
        if text.len() > self.rt.settings.max_message_bytes {
            return self.on_oversized();
        }
        let msg = match parse_client_message(text) {
            Ok(m) => m,
            Err(f) => {
                self.error(f.id, f.error);
                return if self.greeted() {
                    Control::Continue
                } else {
                    Control::Close(CloseCode::HelloRequired)
                };
            }
        };
        match msg {
            ClientMessage::Hello { v, token } => self.on_hello(v, token).await,
            _ if !self.greeted() => {
                self.error(
                    None,
                    ApiError::new(ErrorCode::BadRequest, "the first message must be `hello`"),
                );
                Control::Close(CloseCode::HelloRequired)
            }
            ClientMessage::Auth { token } => self.on_auth(&token).await,
            ClientMessage::Ping { reference } => {
                self.send(&ServerMessage::Pong { reference });
                Control::Continue
            }
            ClientMessage::Unsubscribe { id } => {
                match self.subs.remove(&id) {
                    Some(h) => {
                        self.stop(&h);
                        self.send(&ServerMessage::Unsubscribed { id });
                    }
                    None => self.error(
                        Some(id),
                        ApiError::new(ErrorCode::NotFound, "no subscription with that id"),
                    ),
                }
                Control::Continue
            }
            ClientMessage::Subscribe {
                id,
                table,
                filter,
                columns,
                cursor,
            } => {
                self.on_subscribe(Request {
                    id,
                    table,
                    filter,
                    columns,
                    cursor,
                });
                Control::Continue
            }
        }
    }

    async fn on_hello(&mut self, v: u32, token: Option<String>) -> Control {
        if self.greeted() {
            self.error(
                None,
                ApiError::new(ErrorCode::BadRequest, "`hello` was already sent")
                    .with_hint("send `auth` to change the token"),
            );
            return Control::Continue;
        }
        if v != PROTOCOL_VERSION {
            self.error(
                None,
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
                ),
            );
            return Control::Close(CloseCode::UnsupportedVersion);
        }
        let identity = match token {
            None => Identity::anonymous(),
            Some(t) => match self.rt.tokens.verify(&t) {
                Ok(i) => i,
                Err(_) => {
                    self.error(
                        None,
                        ApiError::new(ErrorCode::Unauthorized, "invalid or expired token"),
                    );
                    return Control::Close(CloseCode::Unauthorized);
                }
            },
        };
        // An external provider's user gets their `rowcast.users` row on first sight, as on
        // REST, so app tables can reference it whichever way the user arrives.
        // If that fails (the database is down) the socket stays un-greeted: the client may
        // send `hello` again until the hello timeout.
        if let Err(e) = self.rt.auth.ensure_external_user(&identity).await {
            self.error(None, e.into());
            return Control::Continue;
        }
        self.set_expiry(&identity);
        self.send(&ServerMessage::Welcome {
            v: PROTOCOL_VERSION,
            role: identity.role.claim().to_string(),
            expires_at: self.expires_at,
            heartbeat_ms: self.rt.settings.heartbeat_interval.as_millis() as u64,
            max_message_bytes: self.rt.settings.max_message_bytes,
            max_subscriptions: self.rt.settings.max_subscriptions,
        });
        self.identity = Some(Arc::new(identity));
        self.slot.mark_greeted();
        Control::Continue
    }

    async fn on_auth(&mut self, token: &str) -> Control {
        let Ok(identity) = self.rt.tokens.verify(token) else {
            self.error(
                None,
                ApiError::new(ErrorCode::Unauthorized, "invalid or expired token")
                    .with_hint("the previous token stays in force until it expires"),
            );
            return Control::Continue;
        };
        if let Err(e) = self.rt.auth.ensure_external_user(&identity).await {
            self.error(
                None,
                ApiError::from(e).with_hint("the previous token stays in force until it expires"),
            );
            return Control::Continue;
        }
        let same = self.identity.as_ref().is_some_and(|old| {
            old.role == identity.role && stable_claims(old) == stable_claims(&identity)
        });
        if !same {
            // Visibility depends on the identity: every subscription starts over.
            let ids: Vec<String> = self.subs.keys().cloned().collect();
            for id in ids {
                if let Some(h) = self.subs.remove(&id) {
                    self.stop(&h);
                    self.rt.stats.resyncs.fetch_add(1, Relaxed);
                    self.send(&ServerMessage::ResyncRequired {
                        id,
                        reason: "identity changed".into(),
                    });
                }
            }
        }
        self.set_expiry(&identity);
        self.expired = false;
        self.send(&ServerMessage::Authenticated {
            role: identity.role.claim().to_string(),
            expires_at: self.expires_at,
        });
        self.identity = Some(Arc::new(identity));
        Control::Continue
    }

    fn on_subscribe(&mut self, req: Request) {
        let id = req.id.clone();
        if id.is_empty() || id.len() > 128 {
            self.error(
                Some(id.chars().take(128).collect()),
                ApiError::new(ErrorCode::InvalidField, "`id` must be 1 to 128 characters"),
            );
            return;
        }
        if self.expired {
            self.error(
                Some(id),
                ApiError::new(ErrorCode::TokenExpired, "the access token expired")
                    .with_hint("send `auth` with a fresh token first"),
            );
            return;
        }
        // Forget subscriptions that ended on their own (resync, error, lagging).
        let router = self.rt.router.clone();
        self.subs.retain(|_, h| {
            let key = h.key.load(Relaxed);
            !(h.ended.load(Relaxed) || (key != 0 && !router.contains(key)))
        });
        if self.subs.contains_key(&id) {
            self.error(
                Some(id),
                ApiError::new(ErrorCode::Conflict, "a subscription with this id is active")
                    .with_hint("unsubscribe first or use another id"),
            );
            return;
        }
        if self.subs.len() >= self.rt.settings.max_subscriptions {
            self.error(
                Some(id),
                ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "at most {} subscriptions per connection",
                        self.rt.settings.max_subscriptions
                    ),
                ),
            );
            return;
        }
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let handle = subscription::spawn(self.rt.clone(), self.outlet.clone(), identity, req);
        self.subs.insert(id, handle);
    }

    fn stop(&self, h: &Handle) {
        h.cancel.cancel();
        let key = h.key.load(Relaxed);
        if key != 0 {
            self.rt.router.unregister(key);
        }
    }

    fn end_all(&mut self) {
        for (_, h) in self.subs.drain() {
            h.cancel.cancel();
            let key = h.key.load(Relaxed);
            if key != 0 {
                self.rt.router.unregister(key);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end_all();
        self.rt.router.remove_connection(self.conn);
    }
}
