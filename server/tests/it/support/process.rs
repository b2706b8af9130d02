//! The real `rowcast serve` binary as a child process, for tests of what only a process
//! shows: signals, drain, exit codes, logs. Several can run against one database (the
//! several-instances tests). Killed when dropped, so a failing test leaves nothing behind.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_rowcast");

pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// `rowcast serve` on `db_url`, on a free loopback port, JSON logs, the test token secret.
    pub fn start(db_url: &str, shutdown_timeout: &str) -> ServerProcess {
        ServerProcess::start_with(db_url, &[("ROWCAST_SHUTDOWN_TIMEOUT", shutdown_timeout)])
    }

    /// As [`ServerProcess::start`], with more environment (later entries win).
    pub fn start_with(db_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("DATABASE_URL", db_url)
            .env("ROWCAST_JWT_SECRET", rowcast::config::TEST_JWT_SECRET)
            .env("ROWCAST_LISTEN", "127.0.0.1:0")
            .env("ROWCAST_LOG_FORMAT", "json");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rowcast serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(a) = v["fields"]["local_addr"].as_str() {
                        if let Ok(addr) = a.parse::<SocketAddr>() {
                            let _ = addr_tx.send(addr);
                        }
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no `listening` log line; log: {:?}",
                    log.lock().expect("log lock")
                );
            }
        };
        ServerProcess { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ask for a graceful drain, as an orchestrator does.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kill without warning (SIGKILL): a crash or an OOM kill.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
    }

    /// Wait for exit; `None` if still running after `timeout`. Blocking: call it from
    /// `spawn_blocking` in async tests.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every stderr line so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
