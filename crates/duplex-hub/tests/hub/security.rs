//! Origins, tokens, rate and size limits.

use duplex::{ClientBuilder, CloseCode};
use duplex_hub::auth::{Claims, sign};
use serde_json::json;

use crate::common::*;

const SECRET: &str = "test secret";

fn token(sub: &str, exp: Option<u64>, channels: Option<Vec<&str>>) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp,
        channels: channels.map(|c| c.into_iter().map(String::from).collect()),
        ..Claims::default()
    };
    sign(&claims, SECRET.as_bytes())
}

fn later() -> Option<u64> {
    Some(duplex_hub::clock::Clock::system().now_secs() + 3600)
}

async fn refused_status(url: &str, origin: Option<&str>) -> Option<u16> {
    let mut builder = ClientBuilder::new(url);
    if let Some(origin) = origin {
        builder = builder.header("Origin", origin).unwrap();
    }
    match tokio::time::timeout(WAIT, builder.connect()).await.unwrap() {
        Ok(_) => None,
        Err(err) => Some(err.status().expect("an HTTP refusal").as_u16()),
    }
}

#[tokio::test]
async fn foreign_origins_get_403_before_the_upgrade() {
    let mut hub = TestHub::start(quiet()).await;
    let url = hub.url();
    assert_eq!(
        refused_status(&url, Some("http://evil.example")).await,
        Some(403)
    );
    let own = format!("http://{}", hub.addr);
    assert_eq!(refused_status(&url, Some(&own)).await, None, "same origin");
    assert_eq!(
        refused_status(&url, None).await,
        None,
        "no Origin: not a browser"
    );
    assert!(hub.metric("duplex_connections_refused_total").await >= 1.0);
    hub.stop().await;

    let mut config = quiet();
    config.server.allowed_origins = vec!["https://app.example.com".into()];
    let hub = TestHub::start(config).await;
    let url = hub.url();
    assert_eq!(
        refused_status(&url, Some("https://app.example.com")).await,
        None
    );
    assert_eq!(
        refused_status(&url, Some("https://evil.example")).await,
        Some(403)
    );
}

#[tokio::test]
async fn tokens_in_the_url() {
    let mut config = quiet();
    config.auth.hs256_secret = Some(SECRET.into());
    let hub = TestHub::start(config).await;
    let url = hub.url();
    assert_eq!(
        refused_status(&format!("{url}?token=garbage"), None).await,
        Some(401)
    );
    let wrong = sign(
        &Claims {
            sub: "x".into(),
            ..Claims::default()
        },
        b"other secret",
    );
    assert_eq!(
        refused_status(&format!("{url}?token={wrong}"), None).await,
        Some(401)
    );
    let expired = token("alice", Some(1_000_000), None);
    assert_eq!(
        refused_status(&format!("{url}?token={expired}"), None).await,
        Some(401)
    );

    let good = token("alice", later(), None);
    let mut c = Client::connect(&format!("{url}?token={good}")).await;
    let hello = c.ok(json!({"op":"connect","info":{"name":"Alice"}})).await;
    assert_eq!(hello["user"], "alice");
    subscribe(&mut c, "chat:a").await;
    let presence = c.ok(json!({"op":"presence","channel":"chat:a"})).await;
    assert_eq!(presence["clients"][0]["user"], "alice");
}

#[tokio::test]
async fn required_tokens_and_channel_claims() {
    let mut config = quiet();
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.required = true;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    assert_eq!(
        c.ok(json!({"op":"ping"})).await,
        json!({}),
        "ping needs no token"
    );
    let msg = c
        .fails(json!({"op":"subscribe","channel":"chat:a"}), "unauthorized")
        .await;
    assert!(msg.contains("token"), "{msg}");
    c.fails(
        json!({"op":"publish","channel":"chat:a","data":1}),
        "unauthorized",
    )
    .await;

    let mut c = hub.client().await;
    let msg = c
        .fails(json!({"op":"connect","token":"a.b.c"}), "unauthorized")
        .await;
    assert!(msg.contains("malformed"), "{msg}");
    let limited = token("bob", later(), Some(vec!["chat:allowed", "ticker:*"]));
    let hello = c.ok(json!({"op":"connect","token":limited})).await;
    assert_eq!(hello["user"], "bob");
    subscribe(&mut c, "chat:allowed").await;
    subscribe(&mut c, "ticker:AAPL").await;
    let msg = c
        .fails(
            json!({"op":"subscribe","channel":"chat:other"}),
            "forbidden",
        )
        .await;
    assert!(msg.contains("chat:other"), "{msg}");
    c.fails(
        json!({"op":"publish","channel":"chat:other","data":1}),
        "forbidden",
    )
    .await;
    c.fails(json!({"op":"history","channel":"chat:other"}), "forbidden")
        .await;
    assert_eq!(publish(&mut c, "chat:allowed", json!("ok")).await, 1);
}

#[tokio::test]
async fn the_request_rate_is_limited_and_abuse_closes() {
    let mut config = quiet();
    config.limits.requests_per_second = 1;
    config.limits.burst = 3;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    for _ in 0..3 {
        c.ok(json!({"op":"ping"})).await;
    }
    let msg = c.fails(json!({"op":"ping"}), "too_many_requests").await;
    assert!(
        msg.contains("1 requests per second") && msg.contains("burst 3"),
        "{msg}"
    );
    assert!(hub.metric("duplex_rate_limited_total").await >= 1.0);

    // Going on regardless: closed with 1008.
    for id in 0..20 {
        c.send_text(&format!(r#"{{"id":{id},"op":"ping"}}"#)).await;
    }
    let info = c.closed().await;
    assert_eq!(info.code, CloseCode::POLICY_VIOLATION);
    assert!(
        info.reason.as_str().contains("too many requests"),
        "{}",
        info.reason.as_str()
    );
}

#[tokio::test]
async fn messages_over_the_size_limit_close_with_1009() {
    let mut config = quiet();
    config.limits.max_message_size = 2048;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    let big = format!(
        r#"{{"id":1,"op":"publish","channel":"chat:a","data":"{}"}}"#,
        "x".repeat(4000)
    );
    c.send_text(&big).await;
    let info = c.closed().await;
    assert_eq!(info.code, CloseCode::MESSAGE_TOO_BIG);
}
