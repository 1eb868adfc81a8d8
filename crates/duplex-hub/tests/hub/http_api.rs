//! POST /api/publish, /metrics, /healthz, the pages.

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn the_publish_api_is_disabled_without_a_key() {
    let hub = TestHub::start(quiet()).await;
    let body = r#"{"channel":"chat:a","data":1}"#;
    let (status, _, text) = http(hub.addr, "POST", "/api/publish", &[], body).await;
    assert_eq!(status, 403);
    assert!(text.contains("disabled"), "{text}");
}

#[tokio::test]
async fn the_publish_api_with_a_key() {
    let mut config = quiet();
    config.server.api_key = Some("s3cret".into());
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    subscribe(&mut c, "ticker:AAPL").await;
    let addr = hub.addr;
    let body = r#"{"channel":"ticker:AAPL","data":{"price":1.5}}"#;
    let key = [("Authorization", "Bearer s3cret")];

    let (status, _, _) = http(addr, "POST", "/api/publish", &[], body).await;
    assert_eq!(status, 401, "no key");
    let (status, _, _) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer nope")],
        body,
    )
    .await;
    assert_eq!(status, 401, "wrong key");

    let (status, head, text) = http(addr, "POST", "/api/publish", &key, body).await;
    assert_eq!(status, 200, "{text}");
    assert!(head.to_ascii_lowercase().contains("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"offset": 1})
    );
    let push = c.push().await;
    assert_eq!(push["channel"], "ticker:AAPL");
    assert_eq!(push["data"], json!({"price": 1.5}));

    let (status, _, text) = http(addr, "POST", "/api/publish", &key, "{not json").await;
    assert_eq!(status, 400, "{text}");
    let (status, _, _) = http(
        addr,
        "POST",
        "/api/publish",
        &key,
        r#"{"channel":"chat:a"}"#,
    )
    .await;
    assert_eq!(status, 400, "no data");
    let (status, _, _) = http(
        addr,
        "POST",
        "/api/publish",
        &key,
        r#"{"channel":"bad","data":1}"#,
    )
    .await;
    assert_eq!(status, 400, "bad channel");
    let (status, _, text) = http(
        addr,
        "POST",
        "/api/publish",
        &key,
        r#"{"channel":"nope:a","data":1}"#,
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown_namespace"));
    let big = format!(r#"{{"channel":"chat:a","data":"{}"}}"#, "x".repeat(17_000));
    let (status, _, _) = http(addr, "POST", "/api/publish", &key, &big).await;
    assert_eq!(status, 413);
    let huge = format!(r#"{{"channel":"chat:a","data":"{}"}}"#, "x".repeat(100_000));
    let (status, _, _) = http(addr, "POST", "/api/publish", &key, &huge).await;
    assert_eq!(status, 413);
    let (status, _, _) = http(addr, "GET", "/api/publish", &key, "").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn metrics_and_healthz() {
    let hub = TestHub::start(quiet()).await;
    let (status, _, body) = http(hub.addr, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let mut a = hub.client().await;
    subscribe(&mut a, "chat:m").await;
    publish(&mut a, "chat:m", json!(1)).await;
    a.push().await;

    let (status, head, body) = http(hub.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"));
    for name in [
        "duplex_connections 1",
        "duplex_subscriptions 1",
        "duplex_publications_total 1",
        "duplex_dropped_connections_total 0",
        "# TYPE duplex_publish_latency_seconds histogram",
        "duplex_publish_latency_seconds_bucket{le=\"+Inf\"} 1",
        "duplex_publish_latency_seconds_count 1",
        "duplex_publish_latency_seconds_sum ",
    ] {
        assert!(body.contains(name), "{name} not in\n{body}");
    }
    assert!(hub.metric("duplex_messages_in_total").await >= 2.0);
    assert!(hub.metric("duplex_messages_out_total").await >= 3.0);
}

#[tokio::test]
async fn pages_are_served_from_the_binary() {
    let hub = TestHub::start(quiet()).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/chat", "text/html"),
        ("/ticker", "text/html"),
        ("/static/client.js", "text/javascript"),
        ("/static/chat.js", "text/javascript"),
        ("/static/ticker.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ] {
        let (status, head, body) = http(hub.addr, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.contains(&format!("content-type: {kind}; charset=utf-8")),
            "{path}: {head}"
        );
        assert!(!body.is_empty(), "{path}");
    }
    let (status, _, _) = http(hub.addr, "GET", "/static/../Cargo.toml", &[], "").await;
    assert_eq!(status, 404);
    let (status, _, _) = http(hub.addr, "GET", "/nope", &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn http2_on_the_same_port() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let hub = TestHub::start(quiet()).await;
    let tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    for (path, body) in [("/healthz", "ok"), ("/metrics", "duplex_connections 0")] {
        let request = http::Request::get(format!("http://{}{path}", hub.addr))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains(body), "{path}");
    }
}
