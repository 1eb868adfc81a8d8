//! Replies, ids, pushes, every error code path, presence.

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn replies_carry_ids_and_pushes_reach_subscribers() {
    let hub = TestHub::start(quiet()).await;
    let mut alice = hub.client().await;
    let mut bob = hub.client().await;

    alice.send_text(r#"{"id":41,"op":"ping"}"#).await;
    assert_eq!(
        alice.next().await.unwrap(),
        json!({"id":41,"ok":true,"result":{}})
    );

    let hello = alice
        .ok(json!({"op":"connect","info":{"name":"alice"}}))
        .await;
    assert!(!hello["client"].as_str().unwrap().is_empty());
    assert_eq!(hello["user"], "");

    assert_eq!(
        subscribe(&mut alice, "chat:lobby").await,
        json!({"offset": 0})
    );
    assert_eq!(
        publish(&mut bob, "chat:lobby", json!({"text":"hi"})).await,
        1
    );
    let push = alice.push().await;
    assert_eq!(push["push"], "message");
    assert_eq!(push["channel"], "chat:lobby");
    assert_eq!(push["offset"], 1);
    assert_eq!(push["data"], json!({"text":"hi"}));
    assert!(push["time"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(push.get("id").is_none(), "pushes carry no id");

    assert_eq!(publish(&mut bob, "chat:lobby", json!("two")).await, 2);
    assert_eq!(alice.push().await["offset"], 2);
    assert_eq!(
        subscribe(&mut bob, "chat:lobby").await,
        json!({"offset": 2})
    );

    alice
        .ok(json!({"op":"unsubscribe","channel":"chat:lobby"}))
        .await;
    assert_eq!(bob.push().await["push"], "leave", "bob saw alice leave");
    assert_eq!(publish(&mut bob, "chat:lobby", json!(3)).await, 3);
    assert_eq!(bob.push().await["offset"], 3);
    // Alice unsubscribed: her next message is the reply to a ping, no push.
    alice.send_text(r#"{"id":99,"op":"ping"}"#).await;
    assert_eq!(alice.next().await.unwrap()["id"], 99);
}

#[tokio::test]
async fn every_bad_request_gets_an_error_reply() {
    let hub = TestHub::start(quiet()).await;
    let mut c = hub.client().await;

    for junk in [
        "not json",
        "[1,2]",
        r#"{"op":"ping"}"#,
        r#"{"id":"x","op":"ping"}"#,
    ] {
        c.send_text(junk).await;
        let reply = c.next().await.unwrap();
        assert_eq!(reply["id"], Value::Null, "{junk}");
        assert_eq!(reply["ok"], false);
        assert_eq!(reply["error"]["code"], "bad_request", "{junk}");
    }
    c.ws.send(duplex::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(c.next().await.unwrap()["error"]["code"], "bad_request");

    let msg = c.fails(json!({"op":"dance"}), "unknown_op").await;
    assert!(msg.contains("dance") && msg.contains("subscribe"), "{msg}");
    c.fails(json!({}), "bad_request").await;
    c.fails(json!({"op":"subscribe"}), "bad_request").await;
    c.fails(json!({"op":"subscribe","channel":5}), "bad_request")
        .await;
    c.fails(json!({"op":"publish","channel":"chat:a"}), "bad_request")
        .await;
    c.fails(
        json!({"op":"history","channel":"chat:a","limit":-1}),
        "bad_request",
    )
    .await;
    let msg = c
        .fails(
            json!({"op":"history","channel":"chat:a","limit":5000}),
            "bad_request",
        )
        .await;
    assert!(msg.contains("1000"), "{msg}");

    let msg = c
        .fails(
            json!({"op":"subscribe","channel":"nope:a"}),
            "unknown_namespace",
        )
        .await;
    assert!(msg.contains("chat") && msg.contains("ticker"), "{msg}");
    c.fails(
        json!({"op":"publish","channel":"nope:a","data":1}),
        "unknown_namespace",
    )
    .await;
    for bad in [
        "lobby",
        "chat:",
        "chat:has space",
        "chat:a*",
        &format!("chat:{}", "x".repeat(129)),
    ] {
        c.fails(json!({"op":"subscribe","channel":bad}), "bad_channel")
            .await;
    }
    let msg = c
        .fails(
            json!({"op":"publish","channel":"ticker:AAPL","data":{"price":1}}),
            "forbidden",
        )
        .await;
    assert!(msg.contains("ticker"), "{msg}");
    c.fails(
        json!({"op":"presence","channel":"ticker:AAPL"}),
        "forbidden",
    )
    .await;
    c.fails(
        json!({"op":"unsubscribe","channel":"chat:a"}),
        "not_subscribed",
    )
    .await;
    subscribe(&mut c, "chat:a").await;
    c.fails(
        json!({"op":"subscribe","channel":"chat:a"}),
        "already_subscribed",
    )
    .await;
    let msg = c.fails(json!({"op":"connect"}), "bad_request").await;
    assert!(msg.contains("first"), "{msg}");
    let big = "x".repeat(20_000);
    let msg = c
        .fails(
            json!({"op":"publish","channel":"chat:a","data":big}),
            "message_too_big",
        )
        .await;
    assert!(msg.contains("16384"), "{msg}");

    // After all that, the connection still works.
    assert_eq!(c.ok(json!({"op":"ping"})).await, json!({}));
    assert!(hub.metric("duplex_errors_total").await >= 20.0);
}

#[tokio::test]
async fn connect_info_over_a_kib_is_refused() {
    let hub = TestHub::start(quiet()).await;
    let mut c = hub.client().await;
    let msg = c
        .fails(
            json!({"op":"connect","info":{"name":"x".repeat(2000)}}),
            "message_too_big",
        )
        .await;
    assert!(msg.contains("1024"), "{msg}");
}

#[tokio::test]
async fn presence_lists_clients_and_pushes_joins_and_leaves() {
    let hub = TestHub::start(quiet()).await;
    let mut alice = hub.client().await;
    let hello = alice
        .ok(json!({"op":"connect","info":{"name":"alice"}}))
        .await;
    let alice_id = hello["client"].clone();
    subscribe(&mut alice, "chat:room").await;

    let mut bob = hub.client().await;
    let hello = bob.ok(json!({"op":"connect","info":{"name":"bob"}})).await;
    let bob_id = hello["client"].clone();
    subscribe(&mut bob, "chat:room").await;

    let join = alice.push().await;
    assert_eq!(join["push"], "join");
    assert_eq!(join["channel"], "chat:room");
    assert_eq!(join["client"]["client"], bob_id);
    assert_eq!(join["client"]["info"], json!({"name":"bob"}));

    let presence = bob.ok(json!({"op":"presence","channel":"chat:room"})).await;
    let clients = presence["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let names: Vec<&Value> = clients.iter().map(|c| &c["info"]["name"]).collect();
    assert!(names.contains(&&json!("alice")) && names.contains(&&json!("bob")));

    bob.ok(json!({"op":"unsubscribe","channel":"chat:room"}))
        .await;
    let leave = alice.push().await;
    assert_eq!(leave["push"], "leave");
    assert_eq!(leave["client"]["client"], bob_id);
    let presence = alice
        .ok(json!({"op":"presence","channel":"chat:room"}))
        .await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 1);
    assert_eq!(presence["clients"][0]["client"], alice_id);

    // A connection that goes away leaves too.
    subscribe(&mut bob, "chat:room").await;
    assert_eq!(alice.push().await["push"], "join");
    bob.ws
        .close(duplex::CloseCode::NORMAL, "bye")
        .await
        .unwrap();
    drop(bob);
    let leave = alice.push().await;
    assert_eq!(leave["push"], "leave");
    assert_eq!(leave["client"]["client"], bob_id);
}

#[tokio::test]
async fn channel_and_subscriber_limits() {
    let mut config = quiet();
    config.limits.max_channels = 2;
    config.namespaces.get_mut("chat").unwrap().max_subscribers = 1;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    subscribe(&mut c, "chat:a").await;
    subscribe(&mut c, "chat:b").await;
    let msg = c
        .fails(
            json!({"op":"subscribe","channel":"chat:c"}),
            "too_many_channels",
        )
        .await;
    assert!(msg.contains('2'), "{msg}");
    let mut other = hub.client().await;
    let msg = other
        .fails(json!({"op":"subscribe","channel":"chat:a"}), "channel_full")
        .await;
    assert!(msg.contains('1'), "{msg}");
    c.ok(json!({"op":"unsubscribe","channel":"chat:a"})).await;
    subscribe(&mut other, "chat:a").await;
}

#[tokio::test]
async fn the_feed_publishes_simulated_prices_into_history() {
    let mut config = Config::default();
    config.feed.interval_ms = 20;
    config.feed.symbols = vec!["AAPL".into(), "MSFT".into()];
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    subscribe(&mut c, "ticker:AAPL").await;
    let first = c.push().await;
    let second = c.push().await;
    assert_eq!(first["channel"], "ticker:AAPL");
    assert_eq!(first["data"]["symbol"], "AAPL");
    assert_eq!(first["data"]["simulated"], true);
    assert!(first["data"]["price"].as_f64().unwrap() > 0.0);
    assert_eq!(
        second["offset"].as_u64(),
        first["offset"].as_u64().map(|o| o + 1)
    );
    let change =
        second["data"]["price"].as_f64().unwrap() - first["data"]["price"].as_f64().unwrap();
    assert!((second["data"]["change"].as_f64().unwrap() - change).abs() < 0.011);
    let history = c
        .ok(json!({"op":"history","channel":"ticker:AAPL","limit":1,"before":second["offset"]}))
        .await;
    assert_eq!(history["publications"][0]["data"], first["data"]);
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let mut hub = TestHub::start(quiet()).await;
    let mut c = hub.client().await;
    subscribe(&mut c, "chat:a").await;
    let stopping = tokio::spawn(async move {
        hub.stop().await;
    });
    let info = c.closed().await;
    assert_eq!(info.code, duplex::CloseCode::GOING_AWAY);
    assert!(info.reason.as_str().contains("shutting down"));
    stopping.await.unwrap();
}

use duplex_hub::Config;

#[tokio::test]
async fn a_namespace_with_join_leave_off_lists_presence_and_pushes_no_joins() {
    let mut config = quiet();
    config.namespaces.get_mut("chat").unwrap().join_leave = false;
    let hub = TestHub::start(config).await;
    let mut alice = hub.client().await;
    subscribe(&mut alice, "chat:room").await;
    let mut bob = hub.client().await;
    subscribe(&mut bob, "chat:room").await;

    // Listed, both of them.
    let presence = alice
        .ok(json!({"op":"presence","channel":"chat:room"}))
        .await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 2);
    // Bob leaves, then publishes: the publication is the first push Alice
    // gets, with no join or leave before it.
    bob.ok(json!({"op":"unsubscribe","channel":"chat:room"}))
        .await;
    publish(&mut bob, "chat:room", json!("after")).await;
    let push = alice.push().await;
    assert_eq!(push["push"], "message", "{push}");
    assert_eq!(push["data"], "after");
    let presence = alice
        .ok(json!({"op":"presence","channel":"chat:room"}))
        .await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 1);
}
