//! History, recovery after a reconnect, trimming, persistence across a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use duplex_hub::clock::ManualClock;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn history_with_limit_and_before() {
    let hub = TestHub::start(quiet()).await;
    let mut c = hub.client().await;
    for i in 1..=10 {
        assert_eq!(publish(&mut c, "chat:h", json!({"n": i})).await, i);
    }
    let all = c.ok(json!({"op":"history","channel":"chat:h"})).await;
    assert_eq!(all["offset"], 10);
    assert_eq!(offsets(&all["publications"]), (1..=10).collect::<Vec<_>>());
    assert_eq!(all["publications"][0]["data"], json!({"n": 1}));

    let newest = c
        .ok(json!({"op":"history","channel":"chat:h","limit":3}))
        .await;
    assert_eq!(offsets(&newest["publications"]), [8, 9, 10]);
    let page = c
        .ok(json!({"op":"history","channel":"chat:h","limit":2,"before":5}))
        .await;
    assert_eq!(offsets(&page["publications"]), [3, 4]);
    assert_eq!(page["offset"], 10);
    let empty = c.ok(json!({"op":"history","channel":"chat:none"})).await;
    assert_eq!(empty, json!({"offset": 0, "publications": []}));
}

#[tokio::test]
async fn recovery_after_a_reconnect_gives_exactly_what_was_missed() {
    let hub = TestHub::start(quiet()).await;
    let mut reader = hub.client().await;
    let mut writer = hub.client().await;
    subscribe(&mut reader, "chat:r").await;
    for i in 1..=3 {
        publish(&mut writer, "chat:r", json!(i)).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = reader.push().await["offset"].as_u64().unwrap();
    }
    assert_eq!(last, 3);
    drop(reader);

    for i in 4..=8 {
        publish(&mut writer, "chat:r", json!(i)).await;
    }
    let mut reader = hub.client().await;
    let recovered = reader
        .ok(json!({"op":"subscribe","channel":"chat:r","since":{"offset":last}}))
        .await;
    assert_eq!(recovered["offset"], 8);
    assert_eq!(offsets(&recovered["publications"]), [4, 5, 6, 7, 8]);
    assert_eq!(recovered["publications"][0]["data"], 4);
    publish(&mut writer, "chat:r", json!(9)).await;
    assert_eq!(
        reader.push().await["offset"],
        9,
        "live pushes go on from there"
    );

    // Up to date: nothing to recover.
    let mut again = hub.client().await;
    let result = again
        .ok(json!({"op":"subscribe","channel":"chat:r","since":{"offset":9}}))
        .await;
    assert_eq!(result, json!({"offset": 9, "publications": []}));
}

#[tokio::test]
async fn recovery_while_publishing_has_no_gap_and_no_duplicate() {
    let mut config = quiet();
    config.limits.requests_per_second = 100_000;
    config.limits.burst = 100_000;
    let hub = TestHub::start(config).await;
    let mut seed = hub.client().await;
    for i in 0..5 {
        publish(&mut seed, "chat:race", json!(i)).await;
    }
    // Publishers publish without pause while clients subscribe with since.
    let url = hub.url();
    let publisher = tokio::spawn(async move {
        let mut p = Client::connect(&url).await;
        for i in 0..150 {
            publish(&mut p, "chat:race", json!(i)).await;
        }
    });
    let mut checked = 0;
    while !publisher.is_finished() || checked == 0 {
        let mut c = hub.client().await;
        let result = c
            .ok(json!({"op":"subscribe","channel":"chat:race","since":{"offset":2}}))
            .await;
        let current = result["offset"].as_u64().unwrap();
        let mut seen: Vec<u64> = offsets(&result["publications"]);
        assert_eq!(
            seen,
            (3..=current).collect::<Vec<_>>(),
            "recovered up to the reply's offset"
        );
        // Everything after arrives as pushes, starting right after.
        let mut b = hub.client().await;
        let end = publish(&mut b, "chat:race", json!("mark")).await;
        while *seen.last().unwrap_or(&2) < end {
            seen.push(c.push().await["offset"].as_u64().unwrap());
        }
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "no duplicate");
        assert_eq!(seen, (3..=end).collect::<Vec<_>>(), "no gap");
        checked += 1;
    }
    publisher.await.unwrap();
    assert!(checked >= 1);
}

#[tokio::test]
async fn recovery_is_impossible_once_history_is_trimmed() {
    let mut config = quiet();
    config.namespaces.get_mut("chat").unwrap().history_size = 3;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    for i in 1..=10 {
        publish(&mut c, "chat:t", json!(i)).await;
    }
    let history = c.ok(json!({"op":"history","channel":"chat:t"})).await;
    assert_eq!(
        offsets(&history["publications"]),
        [8, 9, 10],
        "trimmed to history_size"
    );
    let msg = c
        .fails(
            json!({"op":"subscribe","channel":"chat:t","since":{"offset":2}}),
            "recovery_impossible",
        )
        .await;
    assert!(msg.contains("history"), "{msg}");
    c.fails(
        json!({"op":"subscribe","channel":"chat:t","since":{"offset":11}}),
        "recovery_impossible",
    )
    .await;
    // Not subscribed after the failure: the client subscribes again, as told.
    let recovered = c
        .ok(json!({"op":"subscribe","channel":"chat:t","since":{"offset":7}}))
        .await;
    assert_eq!(offsets(&recovered["publications"]), [8, 9, 10]);
}

#[tokio::test]
async fn expired_history_is_not_recovered() {
    let mut config = quiet();
    config.namespaces.get_mut("chat").unwrap().history_ttl_secs = 1;
    let clock = ManualClock::starting_now();
    let hub = TestHub::start_with_clock(config, clock.clock()).await;
    let mut c = hub.client().await;
    publish(&mut c, "chat:ttl", json!(1)).await;
    publish(&mut c, "chat:ttl", json!(2)).await;
    // Within the ttl, both are there.
    clock.advance(Duration::from_millis(1000));
    let history = c.ok(json!({"op":"history","channel":"chat:ttl"})).await;
    assert_eq!(offsets(&history["publications"]), [1, 2]);
    let recovered = c
        .ok(json!({"op":"subscribe","channel":"chat:ttl","since":{"offset":0}}))
        .await;
    assert_eq!(offsets(&recovered["publications"]), [1, 2]);
    c.ok(json!({"op":"unsubscribe","channel":"chat:ttl"})).await;
    // A millisecond past it, they are gone.
    clock.advance(Duration::from_millis(1));
    let history = c.ok(json!({"op":"history","channel":"chat:ttl"})).await;
    assert_eq!(history["offset"], 2);
    assert_eq!(history["publications"], json!([]));
    c.fails(
        json!({"op":"subscribe","channel":"chat:ttl","since":{"offset":0}}),
        "recovery_impossible",
    )
    .await;
    assert_eq!(
        publish(&mut c, "chat:ttl", json!(3)).await,
        3,
        "offsets go on"
    );
}

#[tokio::test]
async fn history_and_offsets_survive_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let mut hub = TestHub::start_in(quiet(), temp.path()).await;
    let mut c = hub.client().await;
    for i in 1..=3 {
        publish(&mut c, "chat:p", json!({"n": i})).await;
    }
    drop(c);
    hub.stop().await;
    assert!(temp.path().join("hub.sqlite3").exists());

    let hub = TestHub::start_in(quiet(), temp.path()).await;
    let mut c = hub.client().await;
    let history = c.ok(json!({"op":"history","channel":"chat:p"})).await;
    assert_eq!(history["offset"], 3);
    assert_eq!(offsets(&history["publications"]), [1, 2, 3]);
    assert_eq!(history["publications"][2]["data"], json!({"n": 3}));
    let result = c
        .ok(json!({"op":"subscribe","channel":"chat:p","since":{"offset":1}}))
        .await;
    assert_eq!(offsets(&result["publications"]), [2, 3]);
    assert_eq!(
        publish(&mut c, "chat:p", json!({"n": 4})).await,
        4,
        "offsets continue"
    );
    assert_eq!(c.push().await["offset"], 4);
}
