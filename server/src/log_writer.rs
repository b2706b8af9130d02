//! The non-blocking log writer: request handlers format their log lines and hand them to a
//! bounded queue; one thread writes them to stderr. A slow or blocked stderr (a full pipe,
//! a stalled log shipper) then never stalls requests. When the queue is full, lines are
//! dropped and counted, and the count is written as soon as there is room again.
//!
//! Written here rather than taken from `tracing-appender` to keep the dependency tree as it
//! is; it is the same design (bounded channel, lossy, a guard that flushes on exit).

use std::{
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
};

/// Lines queued before new ones are dropped (a few MB of log at most).
const QUEUE_LINES: usize = 16_384;

enum Msg {
    Line(Vec<u8>),
    Stop,
}

/// A `MakeWriter` for `tracing_subscriber::fmt` that queues each event's line.
#[derive(Clone)]
pub struct NonBlocking {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Flushes the queue and stops the writer thread when dropped: keep it alive in `main`.
pub struct Guard {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// A writer to `out` on its own thread, and the guard that flushes it.
pub fn spawn<W: Write + Send + 'static>(out: W) -> (NonBlocking, Guard) {
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let thread = std::thread::Builder::new()
        .name("rowcast-log".into())
        .spawn(move || write_loop(rx, out, counter))
        .ok();
    (
        NonBlocking {
            tx: tx.clone(),
            dropped,
        },
        Guard { tx, thread },
    )
}

fn write_loop<W: Write>(rx: Receiver<Msg>, out: W, dropped: Arc<AtomicU64>) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(msg) = rx.recv() {
        let mut stop = matches!(msg, Msg::Stop);
        if let Msg::Line(line) = msg {
            let _ = out.write_all(&line);
        }
        // Write whatever else is queued before flushing once.
        while let Ok(more) = rx.try_recv() {
            match more {
                Msg::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Msg::Stop => stop = true,
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "rowcast: {lost} log lines dropped (the log output was too slow)"
            );
        }
        let _ = out.flush();
        if stop {
            break;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.tx.send(Msg::Stop).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// One event's line, queued when the formatter is done with it.
pub struct Line<'a> {
    buf: Vec<u8>,
    to: &'a NonBlocking,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        match self.to.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.to.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlocking {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::with_capacity(256),
            to: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        use tracing_subscriber::fmt::MakeWriter;
        let out = Shared::default();
        let (writer, guard) = spawn(out.clone());
        for i in 0..1000 {
            let mut w = writer.make_writer();
            writeln!(w, "line {i}").unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
    }
}
