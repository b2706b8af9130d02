//! Watching HTTP traffic: a request id on every request (the caller's `x-request-id` if it
//! is sane, else a new UUID; echoed in the response and recorded in the request's log span),
//! one log line per response, and the request metrics (by route template, never raw path,
//! so the number of series stays bounded).
//!
//! One tower layer does all of it, and keeps the hot path cheap: it wraps the route's future
//! in a named future instead of boxing it (as `axum::middleware::from_fn` would, with a
//! service clone per request), the in-flight gauge and each (route, method, status) series
//! are resolved once and cached (no label strings are built per request), request ids come
//! from the thread's RNG rather than a system call, and a span that the log filter disables
//! costs next to nothing.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue},
    response::Response,
    Router,
};
use tower::{Layer, Service};
use tracing::{instrument::Instrumented, Instrument, Span};

use crate::metrics::{self, Counter, Histogram, Metrics};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route label for requests no route matched (so scanners cannot mint new series).
const UNMATCHED: &str = "unmatched";

/// Wrap every route of `router` (added before this call) in request ids, logging and metrics.
pub fn layer<S>(router: Router<S>, metrics: Metrics) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(ObserveLayer(Observe::new(metrics)))
}

#[derive(Clone)]
struct ObserveLayer(Observe);

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> ObserveService<S> {
        ObserveService {
            inner,
            observe: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct ObserveService<S> {
    inner: S,
    observe: Observe,
}

impl<S> Service<Request> for ObserveService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> ObserveFuture<S::Future> {
        // The caller's id if it is fit for logs, else ours.
        let id = match req.headers().get(&REQUEST_ID) {
            Some(v) if usable_request_id(v) => v.clone(),
            _ => {
                let v = new_request_id();
                req.headers_mut().insert(REQUEST_ID, v.clone());
                v
            }
        };
        // `MatchedPath` is a shared string: cloning it does not copy the route.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        // The path only: query strings can carry tokens.
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or(""),
            method,
            route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
            path = req.uri().path(),
        );
        self.observe.0.in_flight.inc();
        let in_flight = InFlight(self.observe.0.in_flight.clone());
        let started = Instant::now();
        let inner = self.inner.call(req).instrument(span.clone());
        ObserveFuture {
            inner,
            pending: Some(Pending {
                observe: self.observe.clone(),
                id,
                route,
                method,
                span,
                started,
                in_flight,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's future, and what the response needs once it is ready.
    struct ObserveFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        pending: Option<Pending>,
    }
}

struct Pending {
    observe: Observe,
    id: HeaderValue,
    route: Option<MatchedPath>,
    method: &'static str,
    span: Span,
    started: Instant,
    /// Dropped with the future, also when the client goes away mid-request.
    in_flight: InFlight,
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match (result, this.pending.take()) {
            (Ok(mut response), Some(p)) => {
                p.finish(&mut response);
                Ok(response)
            }
            (other, _) => other,
        })
    }
}

impl Pending {
    fn finish(self, response: &mut Response) {
        let elapsed: Duration = self.started.elapsed();
        drop(self.in_flight);
        let status = response.status().as_u16();
        let route = self.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        self.observe
            .record(route, self.method, status, elapsed.as_secs_f64());
        self.span.in_scope(|| {
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            if status >= 500 {
                tracing::error!(status, latency_ms, "request failed");
            } else {
                tracing::info!(status, latency_ms, "finished processing request");
            }
        });
        if !response.headers().contains_key(&REQUEST_ID) {
            response.headers_mut().insert(REQUEST_ID, self.id);
        }
    }
}

/// The request metrics with their handles cached.
#[derive(Clone)]
struct Observe(Arc<Inner>);

struct Inner {
    metrics: Metrics,
    in_flight: metrics::Gauge,
    /// Route template → its (method, status) series. Routes are templates (bounded), and
    /// methods and statuses are few, so a short scan per route is enough.
    series: RwLock<HashMap<String, Vec<Series>>>,
}

struct Series {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl Observe {
    fn new(metrics: Metrics) -> Observe {
        Observe(Arc::new(Inner {
            in_flight: metrics.gauge_of(metrics::HTTP_IN_FLIGHT),
            metrics,
            series: RwLock::new(HashMap::new()),
        }))
    }

    fn record(&self, route: &str, method: &'static str, status: u16, elapsed: f64) {
        let hit = |map: &HashMap<String, Vec<Series>>| {
            map.get(route).and_then(|v| {
                v.iter()
                    .find(|s| s.method == method && s.status == status)
                    .map(|s| {
                        s.requests.inc();
                        s.duration.observe(elapsed);
                    })
            })
        };
        if let Ok(map) = self.0.series.read() {
            if hit(&map).is_some() {
                return;
            }
        }
        // First request of this kind: register the series (allocating its labels once).
        let status_text = status.to_string();
        let labels = [
            ("route", route),
            ("method", method),
            ("status", status_text.as_str()),
        ];
        let m = &self.0.metrics;
        let series = Series {
            method,
            status,
            requests: m.counter_with(
                metrics::HTTP_REQUESTS.name,
                metrics::HTTP_REQUESTS.help,
                &labels,
            ),
            duration: m.histogram_with(
                metrics::HTTP_DURATION.name,
                metrics::HTTP_DURATION.help,
                metrics::HTTP_LATENCY_BUCKETS,
                &labels,
            ),
        };
        series.requests.inc();
        series.duration.observe(elapsed);
        if let Ok(mut map) = self.0.series.write() {
            let list = map.entry(route.to_string()).or_default();
            if !list
                .iter()
                .any(|s| s.method == method && s.status == status)
            {
                list.push(series);
            }
        }
    }
}

/// A new request id: a random (v4) UUID from the thread's RNG.
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn usable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// The method as a label: clients can send any token as a method, so anything unusual is
/// `other` (one series, however many made-up methods arrive).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts a request as in flight until dropped, also when the client goes away mid-request
/// and the handler future is dropped.
struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_filter() {
        assert!(usable_request_id(&HeaderValue::from_static(
            "0b8e5a3c-7d1f-4e7a-9c1e-2f0a1b2c3d4e"
        )));
        assert!(usable_request_id(&HeaderValue::from_static("req.42:a_b")));
        assert!(!usable_request_id(&HeaderValue::from_static("")));
        assert!(!usable_request_id(&HeaderValue::from_static("a b")));
        assert!(!usable_request_id(&HeaderValue::from_static("a\"}{")));
        let long = "a".repeat(129);
        assert!(!usable_request_id(&HeaderValue::from_str(&long).unwrap()));
    }
}
