//! The realtime WebSocket transport (`GET /realtime/v1/websocket`): admission against the
//! connection limits (the server's and the client address's shares), the `hello` deadline, small tungstenite buffers, and one task per connection that reads
//! frames into the session, writes its queue out, pings, and closes with the protocol's
//! close codes (lagging, heartbeat timeout, shutdown). The protocol itself is in
//! `realtime::session`.

use std::{sync::Arc, time::Duration};

use std::net::SocketAddr;

use axum::{
    extract::{
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        ConnectInfo, State,
    },
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

use super::{HttpError, HttpState};
use crate::{
    protocol::{realtime::CloseCode, ApiError, ErrorCode},
    realtime::{
        router::Outbound,
        session::{Control, Session},
        ConnectionSlot, Realtime, Refused,
    },
};

/// Frames are written one at a time and flushed, so the write buffer never holds more than
/// the frame being written; this cap only guards against a runaway, while still allowing
/// rows of any size Postgres can store (jsonb tops out well below it).
const MAX_WRITE_BUFFER: usize = 1 << 30;

pub async fn websocket(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let rt = state.realtime.clone();
    let address = super::client_address(&state, &headers, peer);
    let slot = match rt.admit(address) {
        Ok(slot) => slot,
        Err(refused) => {
            let message = match refused {
                Refused::ServerFull => "this server has reached its connection limit",
                Refused::AddressFull => "your address has reached its connection limit",
                Refused::TooManyUnauthenticated => {
                    "your address has too many connections that have not sent `hello`"
                }
            };
            return HttpError(
                ApiError::new(ErrorCode::LimitExceeded, message)
                    .with_hint("retry later or connect to another instance")
                    .with_retry_after(1),
            )
            .into_response();
        }
    };
    // Frames a little over the limit get an error frame and the socket stays open; beyond
    // twice the limit tungstenite refuses to buffer them and the socket closes with 1009.
    let hard = rt.settings.max_message_bytes.saturating_mul(2);
    // The read buffer is allocated (and zero-filled) per socket for its whole life: client
    // frames are small (hello, subscribe, ping), and a longer one is read in several reads
    // into a buffer sized for it, so 2 KiB keeps idle sockets cheap (8 KiB measured 20.3
    // KiB per idle subscribed connection, 2 KiB 14.6 KiB; docs/benchmarks.md).
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| {
            let tasks = rt.tasks.clone();
            tasks.track_future(serve(socket, rt, slot))
        })
}

/// What the connection loop needs of a WebSocket: axum's, or the unit tests' in-memory one.
trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin
{
}

/// Bytes read from a socket at a time (see `websocket`).
const READ_BUFFER: usize = 2 * 1024;

/// One connection: run the session until something ends it, then close with the code that
/// says why.
async fn serve(mut socket: WebSocket, rt: Arc<Realtime>, slot: ConnectionSlot) {
    let (mut session, mut queue, lagging) = Session::new(rt.clone(), slot);
    let close = run_session(&mut socket, &rt, &mut session, &mut queue, &lagging).await;
    tracing::debug!(close = ?close.map(CloseCode::code), "realtime connection ends");
    if let Some(code) = close {
        close_with(&mut socket, &mut queue, code).await;
    }
    drop(session);
}

/// What a turn of the connection loop decided.
enum Turn {
    Continue,
    /// End the connection, with this close code (`None`: the peer is gone, no close frame).
    End(Option<CloseCode>),
}

impl From<Control> for Turn {
    fn from(c: Control) -> Turn {
        match c {
            Control::Continue => Turn::Continue,
            Control::Close(code) => Turn::End(Some(code)),
        }
    }
}

/// Read frames into the session and write its queue out until shutdown, a lagging queue,
/// the peer, a deadline or the session ends the connection; returns the close code.
async fn run_session(
    socket: &mut impl Socket,
    rt: &Realtime,
    session: &mut Session,
    queue: &mut mpsc::Receiver<Outbound>,
    lagging: &CancellationToken,
) -> Option<CloseCode> {
    let settings = &rt.settings;
    let mut ticker = tokio::time::interval_at(
        Instant::now() + settings.heartbeat_interval,
        settings.heartbeat_interval,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let opened = Instant::now();
    let mut last_seen = Instant::now();

    // Created once and polled by reference: re-creating them on every turn of the loop
    // registers and deregisters waiters for each frame.
    let stopping = rt.shutdown.cancelled();
    let overflowing = lagging.cancelled();
    // A socket that never says `hello` holds a slot of its address's small share of
    // unauthenticated sockets; it gets only this long.
    let hello_deadline = tokio::time::sleep(settings.hello_timeout);
    tokio::pin!(stopping, overflowing, hello_deadline);
    loop {
        let expiry = session.until_expiry();
        let expired = async {
            match expiry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let turn = tokio::select! {
            biased;
            _ = &mut stopping => Turn::End(Some(CloseCode::Restarting)),
            _ = &mut overflowing => Turn::End(Some(CloseCode::Lagging)),
            out = queue.recv() => match out {
                None => Turn::End(None),
                // The peer is gone or stopped reading long enough to fill TCP buffers.
                Some(out) => if write_queued(socket, out, queue, settings.heartbeat_timeout).await {
                    Turn::Continue
                } else {
                    Turn::End(None)
                },
            },
            msg = socket.next() => {
                last_seen = Instant::now();
                read_frame(session, msg, settings.max_message_bytes).await
            }
            // After `socket.next()` in this biased order: a `hello` that has arrived is
            // handled even if this task is scheduled late (a loaded machine).
            _ = &mut hello_deadline, if !session.greeted() => Turn::End(Some(CloseCode::HelloRequired)),
            _ = ticker.tick() => heartbeat(socket, rt, session, last_seen, opened).await,
            _ = expired => session.on_expired().into(),
        };
        if let Turn::End(close) = turn {
            return close;
        }
    }
}

/// Write `first` and what is already queued behind it in one go (bounded), then flush
/// once. `false` if the peer did not take it within `send_timeout`.
async fn write_queued(
    socket: &mut impl Socket,
    first: Outbound,
    queue: &mut mpsc::Receiver<Outbound>,
    send_timeout: Duration,
) -> bool {
    let mut out = first;
    let mut written = 0;
    loop {
        let Ok(text) = Utf8Bytes::try_from(out.frame) else {
            tracing::error!("a realtime frame was not UTF-8; dropping the connection");
            return false;
        };
        let fed = tokio::time::timeout(send_timeout, socket.feed(Message::Text(text))).await;
        drop(out.permit);
        if !matches!(fed, Ok(Ok(()))) {
            return false;
        }
        written += 1;
        let next = if written < 64 {
            queue.try_recv().ok()
        } else {
            None
        };
        match next {
            Some(next) => out = next,
            None => {
                return matches!(
                    tokio::time::timeout(send_timeout, socket.flush()).await,
                    Ok(Ok(()))
                )
            }
        }
    }
}

/// Hand a frame from the peer to the session.
async fn read_frame(
    session: &mut Session,
    msg: Option<Result<Message, axum::Error>>,
    max_message_bytes: usize,
) -> Turn {
    match msg {
        Some(Ok(Message::Text(t))) => session.on_text(t.as_str()).await.into(),
        Some(Ok(Message::Binary(b))) => {
            if b.len() > max_message_bytes {
                session.on_oversized().into()
            } else {
                session.on_binary().into()
            }
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Turn::Continue,
        Some(Ok(Message::Close(_))) | None => Turn::End(None),
        Some(Err(e)) => {
            // tungstenite refuses frames over max_message_size with a capacity error
            // ("Space limit exceeded").
            let too_big = e.to_string().contains("Space limit exceeded");
            Turn::End(too_big.then_some(CloseCode::TooBig))
        }
    }
}

/// A heartbeat tick: close a peer silent for the heartbeat timeout (or one that never said
/// `hello` in that time), else ping it.
async fn heartbeat(
    socket: &mut impl Socket,
    rt: &Realtime,
    session: &Session,
    last_seen: Instant,
    opened: Instant,
) -> Turn {
    let settings = &rt.settings;
    if last_seen.elapsed() > settings.heartbeat_timeout {
        rt.stats
            .heartbeat_closes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Turn::End(Some(CloseCode::HeartbeatTimeout));
    }
    if !session.greeted() && opened.elapsed() > settings.heartbeat_timeout {
        return Turn::End(Some(CloseCode::HelloRequired));
    }
    let ping = socket.send(Message::Ping(bytes::Bytes::new()));
    if !matches!(
        tokio::time::timeout(settings.heartbeat_timeout, ping).await,
        Ok(Ok(()))
    ) {
        return Turn::End(None);
    }
    Turn::Continue
}

/// Close with `code`: flush what is already queued for a polite close (replies, resync
/// notices; never the backlog of a lagging connection), send the close frame, and wait
/// briefly for the peer's reply.
async fn close_with(
    socket: &mut impl Socket,
    queue: &mut mpsc::Receiver<Outbound>,
    code: CloseCode,
) {
    if code != CloseCode::Lagging {
        let flush = async {
            while let Ok(out) = queue.try_recv() {
                let Ok(text) = Utf8Bytes::try_from(out.frame) else {
                    break;
                };
                if socket.send(Message::Text(text)).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), flush).await;
    }
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from(code.reason()),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
    // Read what the peer still sends until its close reply: closing a TCP socket with
    // unread data resets it, and the peer would never see the code.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(m) = socket.next().await {
            if matches!(m, Ok(Message::Close(_))) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    //! The connection loop over an in-memory socket, on paused time: heartbeats and token
    //! expiry without a network, a database or real waiting.

    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use futures::{
        channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender},
        stream::BoxStream,
    };
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::{
        auth::{
            mail::Mailer,
            service::{Auth, AuthRuntime},
            token::TokenKeys,
            Identity,
        },
        protocol::realtime::ServerMessage,
        realtime::{
            feed::{ChangeBatch, Cursor},
            ChangeSource, RealtimeSettings, SourceError,
        },
        store::{PoolSettings, Store},
    };

    /// Nothing here reads the change log (no subscription is started).
    struct NoChanges;

    impl ChangeSource for NoChanges {
        fn changes_between(
            &self,
            _after: Cursor,
            _until: Cursor,
        ) -> BoxStream<'static, Result<ChangeBatch, SourceError>> {
            futures::stream::empty().boxed()
        }
    }

    /// The server's end of a WebSocket: what the peer sent, and where the server's frames go.
    struct MemorySocket {
        incoming: UnboundedReceiver<Message>,
        outgoing: UnboundedSender<Message>,
    }

    impl Stream for MemorySocket {
        type Item = Result<Message, axum::Error>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Pin::new(&mut self.incoming)
                .poll_next(cx)
                .map(|m| m.map(Ok))
        }
    }

    impl Sink<Message> for MemorySocket {
        type Error = axum::Error;

        fn poll_ready(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Pin::new(&mut self.outgoing)
                .poll_ready(cx)
                .map_err(axum::Error::new)
        }

        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            Pin::new(&mut self.outgoing)
                .start_send(item)
                .map_err(axum::Error::new)
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Pin::new(&mut self.outgoing)
                .poll_flush(cx)
                .map_err(axum::Error::new)
        }

        fn poll_close(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Pin::new(&mut self.outgoing)
                .poll_close(cx)
                .map_err(axum::Error::new)
        }
    }

    /// A realtime service whose store is never reached (the pool connects on first use).
    fn realtime(settings: RealtimeSettings) -> (Arc<Realtime>, Arc<TokenKeys>) {
        let url = "postgres://rowcast@127.0.0.1:1/never-connected";
        let config = crate::config::Config::for_database(url);
        let store = Store::new(
            url,
            PoolSettings {
                pool_size: 2,
                statement_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                ca_file: None,
            },
        )
        .expect("a pool without connections");
        let tokens = Arc::new(TokenKeys::hs256(
            b"a unit test secret, long enough and irregular: 7f3a9c",
            &config.auth.issuer,
            &config.auth.audience,
        ));
        let auth = Auth::new(
            store.clone(),
            tokens.clone(),
            &config.auth,
            AuthRuntime {
                mailer: Mailer::disabled(),
                external_url: "http://127.0.0.1".into(),
            },
        )
        .expect("auth");
        let rt = Realtime::new(
            settings,
            store,
            Arc::new(NoChanges),
            tokens.clone(),
            Arc::new(auth),
            // No schema reloads here: the generation never moves.
            tokio::sync::watch::channel(0).1,
            TaskTracker::new(),
            CancellationToken::new(),
        );
        (Arc::new(rt), tokens)
    }

    /// The peer's end: send frames, read what the server wrote.
    struct Peer {
        send: UnboundedSender<Message>,
        recv: UnboundedReceiver<Message>,
    }

    impl Peer {
        fn text(&self, json: &str) {
            self.send
                .unbounded_send(Message::Text(Utf8Bytes::from(json)))
                .expect("the server reads");
        }

        /// The next protocol message the server sent, skipping WebSocket pings.
        async fn message(&mut self) -> Option<ServerMessage> {
            while let Some(m) = self.recv.next().await {
                if let Message::Text(t) = m {
                    return Some(serde_json::from_str(t.as_str()).expect("server messages parse"));
                }
            }
            None
        }
    }

    /// Run one connection's loop on a spawned task; returns the peer and the loop's result.
    fn connect(rt: &Arc<Realtime>) -> (Peer, tokio::task::JoinHandle<Option<CloseCode>>) {
        let (to_server, incoming) = unbounded();
        let (outgoing, from_server) = unbounded();
        let mut socket = MemorySocket { incoming, outgoing };
        let slot = rt
            .admit(std::net::IpAddr::from([127, 0, 0, 1]))
            .expect("admitted");
        let rt = rt.clone();
        let task = tokio::spawn(async move {
            let (mut session, mut queue, lagging) = Session::new(rt.clone(), slot);
            run_session(&mut socket, &rt, &mut session, &mut queue, &lagging).await
        });
        (
            Peer {
                send: to_server,
                recv: from_server,
            },
            task,
        )
    }

    fn settings(interval: u64, timeout: u64) -> RealtimeSettings {
        RealtimeSettings {
            heartbeat_interval: Duration::from_secs(interval),
            heartbeat_timeout: Duration::from_secs(timeout),
            hello_timeout: Duration::from_secs(5),
            ..RealtimeSettings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_pinged_then_closed_after_the_heartbeat_timeout() {
        let (rt, _) = realtime(settings(1, 3));
        let start = Instant::now();
        let (mut peer, task) = connect(&rt);
        peer.text(r#"{"type":"hello","v":1}"#);
        assert!(matches!(
            peer.message().await,
            Some(ServerMessage::Welcome { .. })
        ));
        let close = task.await.expect("the loop ends");
        assert_eq!(close, Some(CloseCode::HeartbeatTimeout));
        // Ticks at 1, 2, 3 s ping (3 s of silence is not yet over the timeout); at 4 s the
        // silence is.
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        let mut pings = 0;
        while let Ok(m) = peer.recv.try_recv() {
            assert!(matches!(m, Message::Ping(_)), "{m:?}");
            pings += 1;
        }
        assert_eq!(pings, 3);
        assert_eq!(
            rt.stats
                .heartbeat_closes
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_answering_stays_open() {
        let (rt, _) = realtime(settings(1, 3));
        let start = Instant::now();
        let (mut peer, task) = connect(&rt);
        peer.text(r#"{"type":"hello","v":1}"#);
        assert!(matches!(
            peer.message().await,
            Some(ServerMessage::Welcome { .. })
        ));
        // Pongs every 2 s for 10 s, then silence.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            peer.send
                .unbounded_send(Message::Pong(bytes::Bytes::new()))
                .expect("open");
        }
        assert!(!task.is_finished(), "closed while the peer was answering");
        assert_eq!(
            task.await.expect("the loop ends"),
            Some(CloseCode::HeartbeatTimeout)
        );
        assert_eq!(start.elapsed(), Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_stops_deliveries_until_auth_brings_a_fresh_one() {
        // Heartbeats far apart: only the token's expiry happens in this test.
        let (rt, tokens) = realtime(settings(600, 1800));
        let user = Identity::user(
            "00000000-0000-0000-0000-0000000000a1",
            serde_json::json!({}),
        );
        let token = tokens.sign(&user, Duration::from_secs(10)).expect("signed");
        let start = Instant::now();
        let (mut peer, task) = connect(&rt);
        peer.text(&format!(r#"{{"type":"hello","v":1,"token":"{token}"}}"#));
        let Some(ServerMessage::Welcome { expires_at, .. }) = peer.message().await else {
            panic!("no welcome");
        };
        assert!(expires_at.is_some());

        let expired = peer.message().await;
        let Some(ServerMessage::Error { id: None, error }) = expired else {
            panic!("expected the expiry error, got {expired:?}");
        };
        assert_eq!(error.code, crate::protocol::ErrorCode::TokenExpired);
        // Whole seconds: the token's `exp` is 10 s after it was signed.
        let at = start.elapsed();
        assert!(
            at >= Duration::from_secs(9) && at <= Duration::from_secs(10),
            "{at:?}"
        );

        // Expired: no new subscription until `auth`.
        peer.text(r#"{"type":"subscribe","id":"a","table":"todos"}"#);
        let refused = peer.message().await;
        assert!(
            matches!(&refused, Some(ServerMessage::Error { id: Some(id), error }) if id == "a" && error.code == crate::protocol::ErrorCode::TokenExpired),
            "{refused:?}"
        );

        // A fresh token re-arms the expiry.
        let fresh = tokens.sign(&user, Duration::from_secs(30)).expect("signed");
        peer.text(&format!(r#"{{"type":"auth","token":"{fresh}"}}"#));
        assert!(matches!(
            peer.message().await,
            Some(ServerMessage::Authenticated { .. })
        ));
        let renewed = Instant::now();
        let again = peer.message().await;
        assert!(
            matches!(&again, Some(ServerMessage::Error { id: None, error }) if error.code == crate::protocol::ErrorCode::TokenExpired),
            "{again:?}"
        );
        let at = renewed.elapsed();
        assert!(
            at >= Duration::from_secs(29) && at <= Duration::from_secs(30),
            "{at:?}"
        );

        drop(peer);
        assert_eq!(
            task.await.expect("the loop ends"),
            None,
            "the peer went away"
        );
    }
}
