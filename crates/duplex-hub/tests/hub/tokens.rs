//! Tokens that expire while a connection is open (the `refresh` push, the
//! `refresh` op, the close with 4001), and private namespaces (`subscribe`
//! with a subscription token).

use std::time::{Duration, Instant};

use duplex::CloseCode;
use duplex_hub::Config;
use duplex_hub::auth::{Claims, sign};
use duplex_hub::clock::Clock;
use duplex_hub::config::NamespaceConfig;
use serde_json::{Value, json};

use crate::common::*;

const SECRET: &str = "refresh secret";

/// A connection token for `sub`, expiring `secs` from now (never without).
fn token(sub: &str, secs: Option<u64>, channels: Option<&[&str]>) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp: secs.map(|s| now_secs() + s),
        channels: channels.map(|c| c.iter().map(|s| s.to_string()).collect()),
        ..Claims::default()
    };
    sign(&claims, SECRET.as_bytes())
}

/// A subscription token for `channel` and `sub`, with this `exp`.
fn channel_token(sub: &str, channel: &str, exp: Option<u64>) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp,
        channel: Some(channel.into()),
        ..Claims::default()
    };
    sign(&claims, SECRET.as_bytes())
}

/// A hub with the secret, the `refresh` push 2 s before `exp` and 1 s of
/// leeway; `chat` as always and `dm`, private.
fn config() -> Config {
    let mut config = quiet();
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.refresh_before_secs = 2;
    config.auth.leeway_secs = 1;
    config.namespaces.insert(
        "dm".into(),
        NamespaceConfig {
            private: true,
            ..NamespaceConfig::default()
        },
    );
    config
}

/// Milliseconds since the epoch (the hubs of these tests run on the
/// system's clock).
fn now_ms() -> u64 {
    Clock::system().now_ms()
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    Clock::system().now_secs()
}

/// The `exp` of a token made by [`token`], read back from its payload.
fn exp_of(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&json).unwrap();
    claims["exp"].as_u64().unwrap()
}

#[tokio::test]
async fn the_refresh_push_comes_before_exp_and_a_refresh_keeps_the_connection_open() {
    let hub = TestHub::start(config()).await;
    let first = token("ann", Some(4), None);
    let exp = exp_of(&first);
    let mut c = Client::connect(&format!("{}?token={first}", hub.url())).await;
    let hello = c.ok(json!({"op":"connect"})).await;
    assert_eq!(hello["user"], "ann");
    subscribe(&mut c, "chat:a").await;

    let push = c.push().await;
    let at = now_ms();
    assert_eq!(push["push"], "refresh", "{push}");
    assert!(at < exp * 1000, "the push came at {at}, after exp {exp}");
    let expires_in = push["expires_in"].as_u64().expect("expires_in");
    assert!(
        (1..=4).contains(&expires_in),
        "expires_in {expires_in} (refresh_before_secs = 2)"
    );

    let second = token("ann", Some(30), None);
    let result = c.ok(json!({"op":"refresh","token":second})).await;
    let left = result["expires_in"].as_u64().expect("expires_in");
    assert!((28..=30).contains(&left), "{result}");

    // Past the first token's exp and leeway: still open, still subscribed,
    // still the same client.
    let past = (exp + 2) * 1000;
    tokio::time::sleep(Duration::from_millis(past.saturating_sub(now_ms()))).await;
    let mut other = hub.client().await;
    publish(&mut other, "chat:a", json!("after the old exp")).await;
    let message = c.push().await;
    assert_eq!(message["push"], "message", "{message}");
    assert_eq!(message["data"], "after the old exp");
    let presence = c.ok(json!({"op":"presence","channel":"chat:a"})).await;
    assert_eq!(presence["clients"][0]["client"], hello["client"]);
    assert_eq!(presence["clients"][0]["user"], "ann");
    assert_eq!(hub.metric("duplex_token_refreshes_total").await, 1.0);
    assert_eq!(hub.metric("duplex_tokens_expired_total").await, 0.0);
}

#[tokio::test]
async fn without_a_refresh_the_connection_is_closed_with_4001_after_exp_and_leeway() {
    let hub = TestHub::start(config()).await;
    let mut c = hub.client().await;
    let short = token("bob", Some(2), None);
    let exp = exp_of(&short);
    c.ok(json!({"op":"connect","token":short})).await;
    subscribe(&mut c, "chat:a").await;
    let push = c.push().await;
    assert_eq!(push["push"], "refresh", "{push}");
    let info = c.closed().await;
    let at = now_ms();
    assert_eq!(info.code, CloseCode(4001));
    assert!(
        info.reason.as_str().contains("token expired"),
        "{}",
        info.reason.as_str()
    );
    // exp plus the leeway of 1 s, with the close frame's trip.
    assert!(
        at >= (exp + 1) * 1000,
        "closed at {at}, before exp {exp} + leeway"
    );
    assert!(
        at < (exp + 4) * 1000,
        "closed at {at}, long after exp {exp}"
    );
    assert_eq!(hub.metric("duplex_tokens_expired_total").await, 1.0);
}

#[tokio::test]
async fn a_connection_that_keeps_sending_is_closed_at_exp_all_the_same() {
    let hub = TestHub::start(config()).await;
    let short = token("bob", Some(2), None);
    let exp = exp_of(&short);
    let mut c = Client::connect(&format!("{}?token={short}", hub.url())).await;
    let mut id = 0;
    let info = loop {
        id += 1;
        c.send_text(&format!(r#"{{"id":{id},"op":"ping"}}"#)).await;
        if c.next().await.is_none() {
            break c.ws.close_info().expect("closed");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(now_ms() < (exp + 5) * 1000, "still open long after exp");
    };
    assert_eq!(info.code, CloseCode(4001));
    assert!(id > 10, "the client kept sending: {id} pings");
}

#[tokio::test]
async fn a_refresh_cannot_change_the_user_or_use_a_bad_token() {
    let hub = TestHub::start(config()).await;
    let mut c = hub.client().await;
    c.ok(json!({"op":"connect","token":token("ann", Some(60), None)}))
        .await;
    let msg = c
        .fails(
            json!({"op":"refresh","token":token("eve", Some(60), None)}),
            "forbidden",
        )
        .await;
    assert!(msg.contains("\"eve\"") && msg.contains("\"ann\""), "{msg}");
    let msg = c
        .fails(json!({"op":"refresh","token":"a.b.c"}), "unauthorized")
        .await;
    assert!(msg.contains("malformed"), "{msg}");
    let expired = sign(
        &Claims {
            sub: "ann".into(),
            exp: Some(now_secs() - 100),
            ..Claims::default()
        },
        SECRET.as_bytes(),
    );
    c.fails(json!({"op":"refresh","token":expired}), "unauthorized")
        .await;
    let msg = c
        .fails(
            json!({"op":"refresh","token":channel_token("ann", "dm:x", None)}),
            "unauthorized",
        )
        .await;
    assert!(msg.contains("subscription token"), "{msg}");
    c.fails(json!({"op":"refresh"}), "bad_request").await;
    // The connection is still ann's.
    c.ok(json!({"op":"refresh","token":token("ann", None, None)}))
        .await;
    subscribe(&mut c, "chat:a").await;
    let presence = c.ok(json!({"op":"presence","channel":"chat:a"})).await;
    assert_eq!(presence["clients"][0]["user"], "ann");

    // No token to refresh.
    let mut anonymous = hub.client().await;
    let msg = anonymous
        .fails(
            json!({"op":"refresh","token":token("ann", Some(60), None)}),
            "bad_request",
        )
        .await;
    assert!(msg.contains("no token"), "{msg}");
}

#[tokio::test]
async fn a_token_without_exp_gets_no_push_and_stays_open() {
    let mut config = config();
    config.auth.refresh_before_secs = 3600;
    let hub = TestHub::start(config).await;
    let mut c = Client::connect(&format!("{}?token={}", hub.url(), token("ann", None, None))).await;
    subscribe(&mut c, "chat:a").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut other = hub.client().await;
    publish(&mut other, "chat:a", json!(1)).await;
    // The first push after 2.5 s is the publication: no refresh came.
    let push = c.push().await;
    assert_eq!(push["push"], "message", "{push}");
    c.ok(json!({"op":"ping"})).await;
}

#[tokio::test]
async fn channels_the_refreshed_token_no_longer_allows_are_dropped_with_a_push() {
    let hub = TestHub::start(config()).await;
    let mut c = hub.client().await;
    c.ok(json!({"op":"connect","token":token("ann", Some(60), Some(&["chat:*"]))}))
        .await;
    subscribe(&mut c, "chat:a").await;
    subscribe(&mut c, "chat:b").await;
    let narrower = token("ann", Some(60), Some(&["chat:a"]));
    let id_reply = c.ok(json!({"op":"refresh","token":narrower})).await;
    assert!(id_reply["expires_in"].as_u64().is_some(), "{id_reply}");
    let push = c.push().await;
    assert_eq!(push["push"], "unsubscribe", "{push}");
    assert_eq!(push["channel"], "chat:b");
    assert!(
        push["reason"].as_str().unwrap().contains("does not allow"),
        "{push}"
    );
    c.fails(
        json!({"op":"unsubscribe","channel":"chat:b"}),
        "not_subscribed",
    )
    .await;
    c.fails(json!({"op":"subscribe","channel":"chat:b"}), "forbidden")
        .await;
    let mut other = hub.client().await;
    publish(&mut other, "chat:b", json!("b")).await;
    publish(&mut other, "chat:a", json!("a")).await;
    let push = c.push().await;
    assert_eq!(
        (push["channel"].clone(), push["data"].clone()),
        (json!("chat:a"), json!("a")),
        "chat:b's publication did not come: {push}"
    );
}

#[tokio::test]
async fn a_private_channel_needs_a_subscription_token_for_it() {
    let hub = TestHub::start(config()).await;
    let mut ann = hub.client().await;
    ann.ok(json!({"op":"connect","token":token("ann", Some(600), Some(&["*"]))}))
        .await;
    let later = Some(now_secs() + 600);

    // No token; a connection token that allows everything does not help.
    let msg = ann
        .fails(
            json!({"op":"subscribe","channel":"dm:ann-bob"}),
            "unauthorized",
        )
        .await;
    assert!(msg.contains("private"), "{msg}");
    let msg = ann
        .fails(
            json!({"op":"subscribe","channel":"dm:ann-bob","token":token("ann", Some(600), Some(&["dm:*"]))}),
            "forbidden",
        )
        .await;
    assert!(msg.contains("channel claim"), "{msg}");
    // A token for another channel, for another user, expired, forged.
    let msg = ann
        .fails(
            json!({"op":"subscribe","channel":"dm:ann-bob","token":channel_token("ann", "dm:ann-eve", later)}),
            "forbidden",
        )
        .await;
    assert!(msg.contains("dm:ann-eve"), "{msg}");
    let msg = ann
        .fails(
            json!({"op":"subscribe","channel":"dm:ann-bob","token":channel_token("bob", "dm:ann-bob", later)}),
            "forbidden",
        )
        .await;
    assert!(msg.contains("\"bob\""), "{msg}");
    let msg = ann
        .fails(
            json!({"op":"subscribe","channel":"dm:ann-bob","token":channel_token("ann", "dm:ann-bob", Some(now_secs() - 60))}),
            "unauthorized",
        )
        .await;
    assert!(msg.contains("expired"), "{msg}");
    let forged = sign(
        &Claims {
            sub: "ann".into(),
            channel: Some("dm:ann-bob".into()),
            ..Claims::default()
        },
        b"another secret",
    );
    ann.fails(
        json!({"op":"subscribe","channel":"dm:ann-bob","token":forged}),
        "unauthorized",
    )
    .await;
    // Not subscribed: history, presence and publish are refused too.
    for request in [
        json!({"op":"history","channel":"dm:ann-bob"}),
        json!({"op":"presence","channel":"dm:ann-bob"}),
        json!({"op":"publish","channel":"dm:ann-bob","data":1}),
    ] {
        let msg = ann.fails(request, "forbidden").await;
        assert!(msg.contains("private"), "{msg}");
    }
    // A token where none belongs.
    let msg = ann
        .fails(
            json!({"op":"subscribe","channel":"chat:a","token":channel_token("ann", "chat:a", later)}),
            "bad_request",
        )
        .await;
    assert!(msg.contains("not private"), "{msg}");

    // The right token.
    ann.ok(json!({"op":"subscribe","channel":"dm:ann-bob","token":channel_token("ann", "dm:ann-bob", later)}))
        .await;
    let mut bob = hub.client().await;
    bob.ok(json!({"op":"connect","token":token("bob", None, None)}))
        .await;
    bob.ok(json!({"op":"subscribe","channel":"dm:ann-bob","token":channel_token("bob", "dm:ann-bob", None)}))
        .await;
    ann.push().await; // bob's join
    assert_eq!(publish(&mut bob, "dm:ann-bob", json!("hi ann")).await, 1);
    let push = ann.push().await;
    assert_eq!(push["push"], "message", "{push}");
    assert_eq!(push["data"], "hi ann");
    let history = ann.ok(json!({"op":"history","channel":"dm:ann-bob"})).await;
    assert_eq!(offsets(&history["publications"]), [1]);
    let presence = ann
        .ok(json!({"op":"presence","channel":"dm:ann-bob"}))
        .await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 2);

    // An anonymous connection takes a token of any user.
    let mut anonymous = hub.client().await;
    anonymous
        .ok(json!({"op":"subscribe","channel":"dm:ann-bob","token":channel_token("ann", "dm:ann-bob", later)}))
        .await;
}

#[tokio::test]
async fn a_subscription_token_is_not_a_connection_token() {
    let hub = TestHub::start(config()).await;
    let grant = channel_token("ann", "dm:x", None);
    let connected = tokio::time::timeout(
        WAIT,
        duplex::connect(&format!("{}?token={grant}", hub.url())),
    )
    .await
    .unwrap();
    let Err(refused) = connected else {
        panic!("a subscription token in the URL was accepted");
    };
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(401));
    let mut c = hub.client().await;
    let msg = c
        .fails(json!({"op":"connect","token":grant}), "unauthorized")
        .await;
    assert!(msg.contains("subscription token"), "{msg}");
}

#[tokio::test]
async fn an_expired_subscription_token_ends_the_subscription_and_a_fresh_one_recovers() {
    let hub = TestHub::start(config()).await;
    let mut ann = hub.client().await;
    ann.ok(json!({"op":"connect","token":token("ann", None, None)}))
        .await;
    let mut writer = hub.client().await;
    writer
        .ok(json!({"op":"subscribe","channel":"dm:room","token":channel_token("", "dm:room", None)}))
        .await;
    let exp = now_secs() + 2;
    let started = Instant::now();
    ann.ok(json!({"op":"subscribe","channel":"dm:room","token":channel_token("ann", "dm:room", Some(exp))}))
        .await;
    assert_eq!(publish(&mut writer, "dm:room", json!(1)).await, 1);
    let push = ann.push().await;
    assert_eq!(
        (push["push"].clone(), push["offset"].clone()),
        (json!("message"), json!(1))
    );

    // exp plus the leeway: dropped with a push.
    let push = ann.push().await;
    assert_eq!(push["push"], "unsubscribe", "{push}");
    assert_eq!(push["channel"], "dm:room");
    assert_eq!(push["reason"], "the subscription token expired");
    assert!(now_ms() >= (exp + 1) * 1000, "dropped before exp + leeway");
    assert!(started.elapsed() < Duration::from_secs(6));
    ann.fails(json!({"op":"history","channel":"dm:room"}), "forbidden")
        .await;
    publish(&mut writer, "dm:room", json!(2)).await;
    publish(&mut writer, "dm:room", json!(3)).await;

    // A new connection (a reconnect) with a fresh token recovers what was
    // missed.
    let mut again = hub.client().await;
    again
        .ok(json!({"op":"connect","token":token("ann", None, None)}))
        .await;
    let result = again
        .ok(
            json!({"op":"subscribe","channel":"dm:room","since":{"offset":1},
                   "token":channel_token("ann", "dm:room", Some(now_secs() + 600))}),
        )
        .await;
    assert_eq!(result["offset"], 3);
    assert_eq!(offsets(&result["publications"]), [2, 3]);
    // And the first connection may subscribe again the same way.
    let result = ann
        .ok(
            json!({"op":"subscribe","channel":"dm:room","since":{"offset":1},
                   "token":channel_token("ann", "dm:room", None)}),
        )
        .await;
    assert_eq!(offsets(&result["publications"]), [2, 3]);
}
