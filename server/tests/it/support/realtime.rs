//! A realtime client for tests: a tokio-tungstenite socket speaking the protocol of
//! docs/protocol.md, holding one view per subscription applied by per-row version (the
//! protocol's apply rule), as an SDK does. Works against the in-process server
//! (`TestApp`) and the `rowcast serve` child processes (`ServerProcess`) alike.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use rowcast::{
    auth::{token::TokenKeys, Identity},
    config::TEST_JWT_SECRET,
};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use super::{process::ServerProcess, TestApp};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Something serving the realtime endpoint.
pub trait Endpoint {
    /// `ws://host:port/realtime/v1/websocket`.
    fn websocket_url(&self) -> String;
}

impl Endpoint for TestApp {
    fn websocket_url(&self) -> String {
        format!("{}/realtime/v1/websocket", self.base.replace("http", "ws"))
    }
}

impl Endpoint for std::net::SocketAddr {
    fn websocket_url(&self) -> String {
        format!("ws://{self}/realtime/v1/websocket")
    }
}

impl Endpoint for ServerProcess {
    fn websocket_url(&self) -> String {
        format!("ws://{}/realtime/v1/websocket", self.addr)
    }
}

/// The keys of `Config::for_database` and of `ServerProcess` (the test secret).
pub fn keys() -> TokenKeys {
    TokenKeys::hs256(TEST_JWT_SECRET.as_bytes(), "rowcast", "rowcast")
}

pub fn token_for(uid: &str, ttl: Duration) -> String {
    keys().sign(&Identity::user(uid, json!({})), ttl).unwrap()
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What a client holds for one subscription, applied by version.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// key → (version, row or None for a tombstone)
    pub rows: HashMap<String, (i64, Option<Value>)>,
    pub cursor: Option<String>,
    pub live: bool,
    pub resync: Option<String>,
    pub error: Option<Value>,
    /// Items whose version was not above what was held (ignored, as the rule says).
    pub stale: usize,
}

impl View {
    pub fn apply_item(&mut self, item: &Value) {
        let key = item["pk"].to_string();
        let v = item["v"].as_i64().unwrap();
        let row = match item["op"].as_str().unwrap() {
            "insert" | "update" => Some(item["row"].clone()),
            "delete" | "remove" => None,
            other => panic!("unknown op {other}"),
        };
        match self.rows.get(&key) {
            Some((held, _)) if *held >= v => self.stale += 1,
            _ => {
                self.rows.insert(key, (v, row));
            }
        }
    }

    /// The visible rows: key → row.
    pub fn visible(&self) -> HashMap<String, Value> {
        self.rows
            .iter()
            .filter_map(|(k, (_, r))| r.clone().map(|r| (k.clone(), r)))
            .collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.rows.keys().cloned().collect()
    }
}

pub struct Client {
    pub ws: Ws,
    pub views: HashMap<String, View>,
    /// Every message received, in order.
    pub log: Vec<Value>,
    /// The close code the server sent (1005 for a close frame without one).
    pub closed: Option<u16>,
}

impl Client {
    /// A raw socket, before `hello`.
    pub async fn open(server: &impl Endpoint) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(server.websocket_url())
            .await
            .unwrap();
        ws
    }

    /// Connect and say `hello` (anonymous without a token); panics unless welcomed.
    pub async fn connect(server: &impl Endpoint, token: Option<&str>) -> Client {
        match Client::try_connect(server, token).await {
            Ok(c) => c,
            Err(e) => panic!("realtime connect failed: {e}"),
        }
    }

    /// As [`Client::connect`], but a refused connection or a missing welcome is an error
    /// (for tests where the instance may be gone).
    pub async fn try_connect(
        server: &impl Endpoint,
        token: Option<&str>,
    ) -> Result<Client, String> {
        let connect = tokio_tungstenite::connect_async(server.websocket_url());
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = Client {
            ws,
            views: HashMap::new(),
            log: Vec::new(),
            closed: None,
        };
        let mut hello = json!({"type": "hello", "v": 1});
        if let Some(t) = token {
            hello["token"] = json!(t);
        }
        if !c.try_send(hello).await {
            return Err("hello not sent".into());
        }
        match tokio::time::timeout(
            Duration::from_secs(10),
            c.next_within(Duration::from_secs(20)),
        )
        .await
        {
            Ok(Some(w)) if w["type"] == "welcome" => Ok(c),
            Ok(Some(w)) => Err(format!("expected welcome, got {w}")),
            Ok(None) => Err(format!("closed before welcome ({:?})", c.closed)),
            Err(_) => Err("no welcome".into()),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Send; `false` if the socket is gone.
    pub async fn try_send(&mut self, v: Value) -> bool {
        self.ws.send(Message::text(v.to_string())).await.is_ok()
    }

    fn subscribe_message(
        &mut self,
        id: &str,
        table: &str,
        filter: Option<Value>,
        cursor: Option<String>,
    ) -> Value {
        let mut m = json!({"type": "subscribe", "id": id, "table": table});
        if let Some(f) = filter {
            m["filter"] = f;
        }
        if let Some(c) = cursor {
            m["cursor"] = json!(c);
        }
        let view = self.views.entry(id.to_string()).or_default();
        view.live = false;
        view.resync = None;
        view.error = None;
        m
    }

    pub async fn subscribe(
        &mut self,
        id: &str,
        table: &str,
        filter: Option<Value>,
        cursor: Option<String>,
    ) {
        let m = self.subscribe_message(id, table, filter, cursor);
        self.send(m).await;
    }

    /// As [`Client::subscribe`]; `false` if the socket is gone.
    pub async fn try_subscribe(
        &mut self,
        id: &str,
        table: &str,
        filter: Option<Value>,
        cursor: Option<String>,
    ) -> bool {
        let m = self.subscribe_message(id, table, filter, cursor);
        self.try_send(m).await
    }

    /// The next message (applied to the views), or `None` if the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(20)).await
    }

    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            let msg = match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => panic!("no message within {timeout:?}; log: {:?}", self.log.last()),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    self.apply(&v);
                    self.log.push(v.clone());
                    return Some(v);
                }
                Message::Close(f) => {
                    self.closed = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                    return None;
                }
                _ => continue,
            }
        }
    }

    fn apply(&mut self, m: &Value) {
        let id = m["id"].as_str().unwrap_or_default().to_string();
        let Some(view) = self.views.get_mut(&id) else {
            return;
        };
        match m["type"].as_str().unwrap() {
            "snapshot" => m["rows"]
                .as_array()
                .unwrap()
                .iter()
                .for_each(|i| view.apply_item(i)),
            "snapshot-end" => view.cursor = Some(m["cursor"].as_str().unwrap().into()),
            "changes" => {
                m["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .for_each(|i| view.apply_item(i));
                view.cursor = Some(m["cursor"].as_str().unwrap().into());
            }
            "live" => {
                view.cursor = Some(m["cursor"].as_str().unwrap().into());
                view.live = true;
            }
            "resync-required" => view.resync = Some(m["reason"].as_str().unwrap().into()),
            "error" => view.error = Some(m.clone()),
            _ => {}
        }
    }

    /// Read until `done` holds for the views (or panic after `timeout`).
    pub async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&HashMap<String, View>) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.views) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; views: {:?}",
                self.views
            );
            match tokio::time::timeout(left, self.next_within(left)).await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("socket closed ({:?}) while waiting for {what}", self.closed),
                Err(_) => panic!("timed out waiting for {what}; views: {:?}", self.views),
            }
        }
    }

    pub async fn until_live(&mut self, id: &str) {
        let id = id.to_string();
        self.until("live", Duration::from_secs(20), |v| {
            v.get(&id)
                .is_some_and(|x| x.live || x.error.is_some() || x.resync.is_some())
        })
        .await;
        let v = &self.views[&id];
        assert!(v.error.is_none() && v.resync.is_none(), "{v:?}");
    }

    /// Read whatever arrives within `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(_)) = tokio::time::timeout(quiet, self.next_within(quiet * 4)).await {}
    }
}
