//! `GET /metrics` and request ids, against the real server.

use crate::support::TestApp;

fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_show_the_pool() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    assert_eq!(app.get("/no/such/route/123").await.status(), 404);
    // Made-up methods share one label value too.
    for m in ["BREW", "WHEN"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = app
            .http
            .request(method, app.url("/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }

    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();

    let health = r#"rowcast_http_requests_total{method="GET",route="/health",status="200"}"#;
    assert_eq!(value_of(&text, health), Some(3.0), "{text}");
    // Unmatched paths share one label value, whatever the path was.
    let unmatched = r#"rowcast_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(value_of(&text, unmatched), Some(1.0), "{text}");
    assert!(
        !text.contains("/no/such"),
        "a raw path became a label:\n{text}"
    );
    let count =
        r#"rowcast_http_request_duration_seconds_count{method="GET",route="/health",status="200"}"#;
    assert_eq!(value_of(&text, count), Some(3.0), "{text}");
    let inf = r#"rowcast_http_request_duration_seconds_bucket{method="GET",route="/health",status="200",le="+Inf"}"#;
    assert_eq!(value_of(&text, inf), Some(3.0), "{text}");
    assert!(text.contains("# TYPE rowcast_http_request_duration_seconds histogram"));

    // The pool, as deadpool reports it. The spawn waited for /ready, which used a connection.
    assert_eq!(
        value_of(&text, "rowcast_db_pool_max_connections"),
        Some(8.0),
        "{text}"
    );
    assert!(
        value_of(&text, "rowcast_db_pool_connections").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        value_of(&text, "rowcast_db_pool_idle_connections").is_some(),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "rowcast_db_pool_waiting"),
        Some(0.0),
        "{text}"
    );
    let version = format!(
        r#"rowcast_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value_of(&text, &version), Some(1.0), "{text}");

    // Realtime feeds its gauges and counters (no sockets here, so zero).
    assert_eq!(
        value_of(&text, "rowcast_ws_connections"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "rowcast_subscriptions"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "rowcast_changes_delivered_total"),
        Some(0.0),
        "{text}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;

    // Generated when the caller sends none: a UUID.
    let r = app.get("/health").await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let again = app.get("/health").await;
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id);

    // The caller's own id is kept, on errors too.
    let r = app
        .http
        .get(app.url("/nowhere"))
        .header("x-request-id", "client-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "client-abc.123");

    // An id unfit for logs is replaced.
    let r = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    app.shutdown().await;
}
