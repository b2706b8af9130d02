//! CORS over real HTTP: browser preflights and cross-origin requests to REST and auth, the
//! WebSocket upgrade's origin check, and the defaults (`*` in dev, nothing in serve).

use reqwest::Method;
use rowcast::config::CorsOrigins;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

use crate::rest_support::Rest;

const APP: &str = "http://localhost:5173";

async fn preflight(t: &Rest, path: &str, origin: &str, method: &str) -> reqwest::Response {
    t.app
        .http
        .request(Method::OPTIONS, t.app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,apikey,content-type,prefer,x-client-info",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cors_listed_origins_get_preflights_credentials_and_exposed_headers() {
    let t = Rest::start_with(|c| {
        c.rest.cors = CorsOrigins::List(vec![APP.into(), "https://app.example.com".into()])
    })
    .await;

    // The preflight a browser sends before a PATCH with a token and Prefer.
    let r = preflight(&t, "/rest/v1/posts?id=eq.1", APP, "PATCH").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    let methods = header(&r, "access-control-allow-methods")
        .unwrap()
        .to_string();
    assert!(
        methods.contains("PATCH") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = header(&r, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "prefer", "content-type", "apikey"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert!(header(&r, "vary").unwrap().contains("origin"));
    // Auth routes are covered by the same layer.
    let r = preflight(&t, "/auth/v1/token?grant_type=password", APP, "POST").await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));

    // Another origin gets no CORS headers, so the browser blocks it.
    let r = preflight(&t, "/rest/v1/posts", "https://evil.test", "GET").await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    // The cross-origin request itself: the origin is echoed, Content-Range is readable.
    let r = t
        .app
        .http
        .get(t.app.url("/rest/v1/posts?select=id&order=id"))
        .bearer_auth(&t.service)
        .header("origin", APP)
        .header("prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("content-range"), "{exposed}");
    assert_eq!(header(&r, "content-range"), Some("0-3/4"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(4));

    // The WebSocket upgrade: an allowed page may connect, another page may not; a client
    // without Origin (a native app) is not a browser and connects.
    let ws_url = t
        .app
        .url("/realtime/v1/websocket")
        .replace("http://", "ws://");
    let with_origin = |origin: &str| {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
        req
    };
    let (ok, _) = tokio_tungstenite::connect_async(with_origin(APP))
        .await
        .unwrap();
    drop(ok);
    match tokio_tungstenite::connect_async(with_origin("https://evil.test")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a WebSocket from another origin was not refused: {other:?}"),
    }
    let (native, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    drop(native);
    t.app.shutdown().await;
}

#[tokio::test]
async fn cors_any_origin_has_no_credentials_and_serve_default_has_no_cors() {
    let t = Rest::start_with(|c| c.rest.cors = CorsOrigins::Any).await;
    let r = preflight(&t, "/rest/v1/posts", "https://anywhere.test", "POST").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    // Browsers refuse `*` together with credentials, so none is sent.
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    t.app.shutdown().await;

    // `serve`'s default (what `Config::for_database` gives): no CORS headers at all.
    let t = Rest::start().await;
    assert_eq!(
        rowcast::config::Config::for_database("postgres://u@localhost/db")
            .rest
            .cors,
        CorsOrigins::None
    );
    let r = preflight(&t, "/rest/v1/posts", APP, "GET").await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = t
        .app
        .http
        .get(t.app.url("/rest/v1/canary"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    t.app.shutdown().await;
}
