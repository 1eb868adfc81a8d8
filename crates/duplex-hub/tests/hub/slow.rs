//! A slow consumer is closed with 1008 while a fast one gets everything.

use duplex::{ClientBuilder, CloseCode};
use serde_json::json;
use tokio::net::TcpSocket;

use crate::common::*;

#[tokio::test]
async fn a_slow_consumer_is_closed_and_the_fast_one_gets_everything() {
    let mut config = quiet();
    config.limits.send_queue = 16;
    config.limits.requests_per_second = 100_000;
    config.limits.burst = 100_000;
    let flood = duplex_hub::config::NamespaceConfig {
        history_size: 10,
        presence: false,
        ..Default::default()
    };
    config.namespaces.insert("flood".into(), flood);
    let hub = TestHub::start(config).await;

    // The slow client reads nothing, through a small receive buffer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(hub.addr).await.unwrap();
    let ws = ClientBuilder::new(hub.url())
        .connect_on(duplex::ClientStream::from(duplex::MaybeTlsStream::Plain(
            tcp,
        )))
        .await
        .unwrap();
    let mut slow = Client::from(ws);
    subscribe(&mut slow, "flood:x").await;

    let mut fast = hub.client().await;
    subscribe(&mut fast, "flood:x").await;
    let mut publisher = hub.client().await;
    let chunk = "x".repeat(15_000);
    let count = 600;
    let reading = tokio::spawn(async move {
        for n in 1..=count {
            let push = fast.push().await;
            assert_eq!(
                push["offset"], n,
                "the fast client gets every message, in order"
            );
        }
        fast
    });
    for _ in 0..count {
        publish(&mut publisher, "flood:x", json!(chunk)).await;
    }
    let fast = tokio::time::timeout(WAIT * 3, reading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hub.metric("duplex_dropped_connections_total").await, 1.0);

    let info = slow.closed().await;
    assert_eq!(info.code, CloseCode::POLICY_VIOLATION);
    assert_eq!(
        info.reason.as_str(),
        "slow consumer: send queue full (16 messages)"
    );
    drop(fast);
}
