//! Watching HTTP traffic: a request id on every request (the caller's `x-request-id` if it
//! is sane, else a new UUID; echoed in the response and recorded in the request's log span),
//! one log line per response, and the request metrics (by route template, never raw path,
//! so the number of series stays bounded).

use std::time::Instant;

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
    Router,
};
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
    LatencyUnit,
};

use crate::metrics::{self, Metrics};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route label for requests no route matched (so scanners cannot mint new series).
const UNMATCHED: &str = "unmatched";

/// Wrap every route of `router` (added before this call) in request ids, logging and metrics.
pub fn layer<S>(router: Router<S>, metrics: Metrics) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let stack = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(drop_unusable_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or(UNMATCHED);
                    let request_id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // The path only: query strings can carry tokens.
                    tracing::info_span!(
                        "request",
                        request_id,
                        method = %req.method(),
                        route,
                        path = req.uri().path(),
                    )
                })
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                ),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn_with_state(metrics, record));
    router.layer(stack)
}

/// An incoming id we would not want in logs (too long, odd characters) is replaced by ours.
async fn drop_unusable_request_id(mut req: Request, next: Next) -> Response {
    let usable = req
        .headers()
        .get(&REQUEST_ID)
        .map(usable_request_id)
        .unwrap_or(true);
    if !usable {
        req.headers_mut().remove(&REQUEST_ID);
    }
    next.run(req).await
}

fn usable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

async fn record(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| UNMATCHED.to_string());
    let method = method_label(req.method());
    let in_flight = InFlight::enter(metrics.gauge_of(metrics::HTTP_IN_FLIGHT));
    let started = Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    drop(in_flight);
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route.as_str()),
        ("method", method),
        ("status", status.as_str()),
    ];
    metrics
        .counter_with(
            metrics::HTTP_REQUESTS.name,
            metrics::HTTP_REQUESTS.help,
            &labels,
        )
        .inc();
    metrics
        .histogram_with(
            metrics::HTTP_DURATION.name,
            metrics::HTTP_DURATION.help,
            metrics::HTTP_LATENCY_BUCKETS,
            &labels,
        )
        .observe_duration(elapsed);
    response
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

impl InFlight {
    fn enter(gauge: metrics::Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge)
    }
}

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
