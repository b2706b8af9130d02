//! A real TCP proxy in front of the test Postgres that a test can take down and bring back,
//! to show how the server behaves when the database disappears and returns.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections turned away while down: evidence that a client is (re)trying.
    refused: Arc<AtomicU64>,
    /// Bumped on every take-down so that open connections are cut.
    generation: watch::Sender<u64>,
}

impl Proxy {
    /// Forward connections on a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr, up: bool) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up_flag = Arc::new(AtomicBool::new(up));
        let (generation, _) = watch::channel(0u64);
        let flag = up_flag.clone();
        let refused = Arc::new(AtomicU64::new(0));
        let refused_count = refused.clone();
        let gen_tx = generation.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    refused_count.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let mut cut = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up: up_flag,
            refused,
            generation,
        }
    }

    /// How many connections were turned away while the proxy was down.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let cfg: tokio_postgres::Config = url.parse().expect("valid url");
        let db = cfg.get_dbname().unwrap_or("postgres");
        let user = cfg.get_user().unwrap_or("postgres");
        let password = cfg
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!("postgres://{user}{password}@{}/{db}", self.addr)
    }
}

/// The socket address of the Postgres behind `url`.
pub fn target_of(url: &str) -> SocketAddr {
    let cfg: tokio_postgres::Config = url.parse().expect("valid url");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}").parse().expect("socket address")
}
