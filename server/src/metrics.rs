//! Metrics: counters, gauges and histograms registered by name and rendered in the
//! Prometheus text format for `GET /metrics`.
//!
//! There is no global registry: one [`Metrics`] is made by `app::start` and handed to
//! whoever feeds it (through `HttpState` for handlers). A metric appears in the output only
//! once some module has registered it, so nothing is shown that nobody measures.
//!
//! Registering is idempotent: asking twice for the same name (and labels) returns a handle
//! to the same series, so a module can register in each session it starts. Handles are
//! cheap `Arc`'d atomics; updating one never takes a lock.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

/// Latency buckets (seconds) for HTTP requests.
pub const HTTP_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets (seconds) for how long a change takes from commit to a client's socket.
pub const DELIVERY_LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A metric's name and help text. Every metric the server knows is listed in [`CATALOG`]
/// (and documented in docs/operations.md), whether or not something feeds it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

const fn spec(name: &'static str, kind: Kind, help: &'static str) -> Spec {
    Spec { name, help, kind }
}

pub const BUILD_INFO: Spec = spec(
    "rowcast_build_info",
    Kind::Gauge,
    "Always 1; the version label says which build is running.",
);
pub const HTTP_REQUESTS: Spec = spec(
    "rowcast_http_requests_total",
    Kind::Counter,
    "HTTP requests answered, by route template, method and status.",
);
pub const HTTP_DURATION: Spec = spec(
    "rowcast_http_request_duration_seconds",
    Kind::Histogram,
    "Time to answer an HTTP request (until the response head), by route template, method and status.",
);
pub const HTTP_IN_FLIGHT: Spec = spec(
    "rowcast_http_requests_in_flight",
    Kind::Gauge,
    "HTTP requests being handled now.",
);
pub const POOL_MAX: Spec = spec(
    "rowcast_db_pool_max_connections",
    Kind::Gauge,
    "Largest number of pooled database connections (ROWCAST_POOL_SIZE).",
);
pub const POOL_SIZE: Spec = spec(
    "rowcast_db_pool_connections",
    Kind::Gauge,
    "Pooled database connections currently open.",
);
pub const POOL_IDLE: Spec = spec(
    "rowcast_db_pool_idle_connections",
    Kind::Gauge,
    "Open pooled connections not in use.",
);
pub const POOL_WAITING: Spec = spec(
    "rowcast_db_pool_waiting",
    Kind::Gauge,
    "Tasks waiting for a pooled connection.",
);
pub const WS_CONNECTIONS: Spec = spec(
    "rowcast_ws_connections",
    Kind::Gauge,
    "Open WebSocket connections.",
);
pub const SUBSCRIPTIONS: Spec = spec(
    "rowcast_subscriptions",
    Kind::Gauge,
    "Active realtime subscriptions across all sockets.",
);
pub const CHANGES_READ: Spec = spec(
    "rowcast_changes_read_total",
    Kind::Counter,
    "Changes read from the change log.",
);
pub const CHANGES_DELIVERED: Spec = spec(
    "rowcast_changes_delivered_total",
    Kind::Counter,
    "Change messages sent to clients (one per change per subscribed socket).",
);
pub const DELIVERY_LAG: Spec = spec(
    "rowcast_delivery_lag_seconds",
    Kind::Histogram,
    "Time from a change's commit to its being sent to a client.",
);
pub const CHANGE_LOG_ROWS: Spec = spec(
    "rowcast_change_log_rows",
    Kind::Gauge,
    "Rows in the change log (approximate).",
);
pub const CHANGE_LOG_FLOOR: Spec = spec(
    "rowcast_change_log_retention_floor",
    Kind::Gauge,
    "Id of the newest pruned change (the retention floor); cursors at or before it must resync.",
);

pub const CAPTURE_OLDEST_UNDELIVERED: Spec = spec(
    "rowcast_capture_oldest_undelivered_seconds",
    Kind::Gauge,
    "Age of the oldest committed change the reader cannot deliver yet because an older transaction is still open (0 when none).",
);
pub const CAPTURE_BLOCKING_PID: Spec = spec(
    "rowcast_capture_blocking_pid",
    Kind::Gauge,
    "Backend pid holding the change log's watermark back, or 0.",
);
// Realtime authorization: where visibility decisions are made (fast path in the server vs
// the SQL fallback), and the membership index relational policies read.
pub const REALTIME_FAST_EVALUATIONS: Spec = spec(
    "rowcast_realtime_fast_path_evaluations_total",
    Kind::Counter,
    "Visibility decisions (change x subscription, and rows re-checked after a membership change) made in the server.",
);
pub const REALTIME_FALLBACK_EVALUATIONS: Spec = spec(
    "rowcast_realtime_fallback_evaluations_total",
    Kind::Counter,
    "Visibility decisions (change x subscription) left to the batched SQL fallback.",
);
pub const REALTIME_MEMBERSHIP_ROWS: Spec = spec(
    "rowcast_realtime_membership_index_rows",
    Kind::Gauge,
    "Rows held in memory for relational policies (tables their sub-selects read).",
);

pub const CAPTURE_BROKEN_TABLES: Spec = spec(
    "rowcast_capture_broken_tables",
    Kind::Gauge,
    "Synced tables change capture is not working on (triggers disabled or missing, key or _v dropped).",
);

/// Every metric the server defines. docs/operations.md lists each (a test checks).
pub const CATALOG: &[Spec] = &[
    BUILD_INFO,
    HTTP_REQUESTS,
    HTTP_DURATION,
    HTTP_IN_FLIGHT,
    POOL_MAX,
    POOL_SIZE,
    POOL_IDLE,
    POOL_WAITING,
    WS_CONNECTIONS,
    SUBSCRIPTIONS,
    CHANGES_READ,
    CHANGES_DELIVERED,
    DELIVERY_LAG,
    CHANGE_LOG_ROWS,
    CHANGE_LOG_FLOOR,
    CAPTURE_OLDEST_UNDELIVERED,
    CAPTURE_BLOCKING_PID,
    CAPTURE_BROKEN_TABLES,
    REALTIME_FAST_EVALUATIONS,
    REALTIME_FALLBACK_EVALUATIONS,
    REALTIME_MEMBERSHIP_ROWS,
];

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn dec(&self) {
        self.add(-1);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into fixed buckets, plus their count and sum.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCore>);

#[derive(Debug)]
struct HistogramCore {
    bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts; the last is the +Inf bucket.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// f64 bits, updated with compare-and-swap.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram(Arc::new(HistogramCore {
            bounds: bounds.to_vec(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, v: f64) {
        let core = &self.0;
        let i = core
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(core.bounds.len());
        core.buckets[i].fetch_add(1, Ordering::Relaxed);
        core.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = core.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match core
                .sum
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

type Sampler = Arc<dyn Fn() -> f64 + Send + Sync>;

#[derive(Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    /// Read at render time; the kind says whether it is shown as a counter or a gauge.
    Sampled(Kind, Sampler),
    Histogram(Histogram),
}

impl Series {
    fn kind(&self) -> Kind {
        match self {
            Series::Counter(_) => Kind::Counter,
            Series::Gauge(_) => Kind::Gauge,
            Series::Sampled(kind, _) => *kind,
            Series::Histogram(_) => Kind::Histogram,
        }
    }
}

/// Label pairs, sorted by name so that the same set always finds the same series.
type Labels = Vec<(&'static str, String)>;

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Labels, Series>,
}

/// The server's metrics. Cheap to clone; clones share the same registry.
#[derive(Clone, Default)]
pub struct Metrics {
    families: Arc<RwLock<BTreeMap<&'static str, Family>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.families.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Metrics").field("families", &n).finish()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        self.counter_with(name, help, &[])
    }

    pub fn counter_with(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        match self.series(name, help, Kind::Counter, labels, || {
            Series::Counter(Counter::default())
        }) {
            Series::Counter(c) => c,
            _ => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.gauge_with(name, help, &[])
    }

    pub fn gauge_with(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        match self.series(name, help, Kind::Gauge, labels, || {
            Series::Gauge(Gauge::default())
        }) {
            Series::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// A gauge whose value is read by calling `sample` at each scrape (e.g. pool status).
    /// Registering the same name again replaces the sampler.
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        sample: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.sampled(name, help, Kind::Gauge, Arc::new(sample));
    }

    /// A counter read by calling `sample` at each scrape, for a module that already keeps
    /// its own monotonic atomics (e.g. capture's statistics). `sample` must never decrease.
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        sample: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.sampled(name, help, Kind::Counter, Arc::new(sample));
    }

    fn sampled(&self, name: &'static str, help: &'static str, kind: Kind, sampler: Sampler) {
        debug_assert!(valid_name(name), "invalid metric name {name:?}");
        let Ok(mut families) = self.families.write() else {
            return;
        };
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            mismatch(name);
            return;
        }
        family
            .series
            .insert(Vec::new(), Series::Sampled(kind, sampler));
    }

    pub fn histogram(&self, name: &'static str, help: &'static str, buckets: &[f64]) -> Histogram {
        self.histogram_with(name, help, buckets, &[])
    }

    pub fn histogram_with(
        &self,
        name: &'static str,
        help: &'static str,
        buckets: &[f64],
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        match self.series(name, help, Kind::Histogram, labels, || {
            Series::Histogram(Histogram::new(buckets))
        }) {
            Series::Histogram(h) => h,
            _ => Histogram::new(buckets),
        }
    }

    /// Register `spec` as a counter (convenience for the catalog entries).
    pub fn counter_of(&self, spec: Spec) -> Counter {
        self.counter(spec.name, spec.help)
    }

    pub fn gauge_of(&self, spec: Spec) -> Gauge {
        self.gauge(spec.name, spec.help)
    }

    /// Open WebSocket connections: `inc` on upgrade, `dec` when the session ends.
    pub fn ws_connections(&self) -> Gauge {
        self.gauge_of(WS_CONNECTIONS)
    }

    /// Active subscriptions across all sockets.
    pub fn subscriptions(&self) -> Gauge {
        self.gauge_of(SUBSCRIPTIONS)
    }

    /// Changes read from the change log (`add(batch.len())` per read).
    pub fn changes_read(&self) -> Counter {
        self.counter_of(CHANGES_READ)
    }

    /// Change messages sent to clients.
    pub fn changes_delivered(&self) -> Counter {
        self.counter_of(CHANGES_DELIVERED)
    }

    /// Commit-to-send time of delivered changes.
    pub fn delivery_lag(&self) -> Histogram {
        self.histogram(DELIVERY_LAG.name, DELIVERY_LAG.help, DELIVERY_LAG_BUCKETS)
    }

    /// Approximate number of rows in the change log.
    pub fn change_log_rows(&self) -> Gauge {
        self.gauge_of(CHANGE_LOG_ROWS)
    }

    /// Oldest change id still kept in the change log.
    pub fn change_log_retention_floor(&self) -> Gauge {
        self.gauge_of(CHANGE_LOG_FLOOR)
    }

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        make: impl FnOnce() -> Series,
    ) -> Series {
        debug_assert!(valid_name(name), "invalid metric name {name:?}");
        let mut key: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        key.sort_by(|a, b| a.0.cmp(b.0));
        if let Ok(families) = self.families.read() {
            if let Some(s) = families.get(name).and_then(|f| f.series.get(&key)) {
                if s.kind() == kind {
                    return s.clone();
                }
            }
        }
        let Ok(mut families) = self.families.write() else {
            return make();
        };
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            mismatch(name);
            // A detached series: updates are harmless and never rendered.
            return make();
        }
        family.series.entry(key).or_insert_with(make).clone()
    }

    /// Everything registered, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        // Samplers run outside the lock: they may take other locks (the pool's).
        let snapshot: Vec<(&'static str, Family)> = match self.families.read() {
            Ok(families) => families
                .iter()
                .map(|(name, f)| {
                    let copy = Family {
                        help: f.help,
                        kind: f.kind,
                        series: f.series.clone(),
                    };
                    (*name, copy)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut out = String::new();
        for (name, family) in snapshot {
            let Family { help, kind, series } = family;
            if series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            for (labels, s) in series {
                match s {
                    Series::Counter(c) => sample(&mut out, name, "", &labels, None, c.get() as f64),
                    Series::Gauge(g) => sample(&mut out, name, "", &labels, None, g.get() as f64),
                    Series::Sampled(_, f) => sample(&mut out, name, "", &labels, None, f()),
                    Series::Histogram(h) => {
                        let core = &h.0;
                        let mut cumulative = 0u64;
                        for (i, bucket) in core.buckets.iter().enumerate() {
                            cumulative += bucket.load(Ordering::Relaxed);
                            let le = core
                                .bounds
                                .get(i)
                                .map(|b| format_value(*b))
                                .unwrap_or_else(|| "+Inf".to_string());
                            sample(
                                &mut out,
                                name,
                                "_bucket",
                                &labels,
                                Some(&le),
                                cumulative as f64,
                            );
                        }
                        let sum = f64::from_bits(core.sum.load(Ordering::Relaxed));
                        sample(&mut out, name, "_sum", &labels, None, sum);
                        let count = core.count.load(Ordering::Relaxed);
                        sample(&mut out, name, "_count", &labels, None, count as f64);
                    }
                }
            }
        }
        out
    }
}

fn mismatch(name: &str) {
    tracing::error!(
        metric = name,
        "metric registered twice with different types"
    );
    debug_assert!(false, "metric {name} registered twice with different types");
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &Labels, le: Option<&str>, v: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, val) in labels {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(val));
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(v));
    out.push('\n');
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_metrics_are_rendered() {
        let m = Metrics::new();
        assert_eq!(m.render(), "");
        m.ws_connections().inc();
        m.ws_connections().inc();
        m.ws_connections().dec();
        let text = m.render();
        assert!(
            text.contains("# TYPE rowcast_ws_connections gauge\n"),
            "{text}"
        );
        assert!(text.contains("\nrowcast_ws_connections 1\n"), "{text}");
        assert!(!text.contains("rowcast_subscriptions"), "{text}");
    }

    #[test]
    fn labelled_counters_and_histograms() {
        let m = Metrics::new();
        let c = m.counter_with("t_total", "help", &[("b", "2"), ("a", "x\"y")]);
        c.add(3);
        // Same labels in another order: same series.
        m.counter_with("t_total", "help", &[("a", "x\"y"), ("b", "2")])
            .inc();
        let h = m.histogram("t_seconds", "lat", &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let text = m.render();
        assert!(text.contains("t_total{a=\"x\\\"y\",b=\"2\"} 4\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum 7.55\n"), "{text}");
        assert!(text.contains("t_seconds_count 3\n"), "{text}");
    }

    #[test]
    fn sampled_gauges_are_read_at_render() {
        let m = Metrics::new();
        let source = Arc::new(AtomicI64::new(5));
        let s = source.clone();
        m.gauge_fn("t_pool", "pool", move || s.load(Ordering::Relaxed) as f64);
        assert!(m.render().contains("t_pool 5\n"));
        source.store(9, Ordering::Relaxed);
        assert!(m.render().contains("t_pool 9\n"));

        let total = Arc::new(AtomicU64::new(3));
        let t = total.clone();
        m.counter_fn("t_read_total", "read", move || {
            t.load(Ordering::Relaxed) as f64
        });
        let text = m.render();
        assert!(
            text.contains("# TYPE t_read_total counter\nt_read_total 3\n"),
            "{text}"
        );
    }

    #[test]
    fn catalog_names_are_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in CATALOG {
            assert!(valid_name(s.name), "{}", s.name);
            assert!(seen.insert(s.name), "duplicate {}", s.name);
            assert!(s.name.starts_with("rowcast_"), "{}", s.name);
        }
    }
}
