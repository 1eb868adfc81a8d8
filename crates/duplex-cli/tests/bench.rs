//! `duplex bench` against `duplex echo` and a broadcast server: each mode runs,
//! counts what it should, and reports it as JSON.

mod common;

use std::process::Command;

use common::Echo;
use duplex::{Message, PreparedMessage};
use futures_util::StreamExt;
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .arg("bench")
        .args(args)
        .args(["--json", "--warmup", "0.2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "duplex bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn assert_sane(report: &Value, size: u64) {
    assert_eq!(report["errors"], 0, "{report}");
    let messages = report["messages"].as_u64().unwrap();
    assert!(messages > 50, "{report}");
    let rate = report["messages_per_sec"].as_f64().unwrap();
    let seconds = report["duration_s"].as_f64().unwrap();
    assert!((rate * seconds - messages as f64).abs() < 1.0, "{report}");
    let mb = report["mb_per_sec"].as_f64().unwrap();
    assert!((mb - rate * size as f64 / 1e6).abs() < 1e-6, "{report}");
    let latency = &report["latency_us"];
    let p50 = latency["p50"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    let max = latency["max"].as_f64().unwrap();
    assert!(p50 >= 1.0 && p50 <= p99 && p99 <= max, "{report}");
}

#[test]
fn closed_loop_echo() {
    let echo = Echo::start(&["--threads", "1"]);
    let url = format!("ws://{}/", echo.addr);
    let report = bench(&[
        &url,
        "--connections",
        "4",
        "--size",
        "100",
        "--duration",
        "1",
    ]);
    assert_sane(&report, 100);
    assert_eq!(report["mode"], "echo, closed loop");
    assert_eq!(report["deflate"], false);
}

#[test]
fn open_loop_echo_keeps_to_the_rate() {
    let echo = Echo::start(&["--threads", "1"]);
    let url = format!("ws://{}/", echo.addr);
    let report = bench(&[
        &url,
        "--connections",
        "5",
        "--size",
        "1K",
        "--duration",
        "1",
        "--rate",
        "500",
    ]);
    assert_sane(&report, 1024);
    assert_eq!(report["mode"], "echo, open loop");
    let rate = report["messages_per_sec"].as_f64().unwrap();
    assert!((400.0..=600.0).contains(&rate), "{report}");
}

#[test]
fn echo_with_compression() {
    let echo = Echo::start(&["--threads", "1"]);
    let url = format!("ws://{}/", echo.addr);
    let report = bench(&[
        &url,
        "--connections",
        "3",
        "--size",
        "4K",
        "--duration",
        "1",
        "--deflate",
    ]);
    assert_sane(&report, 4096);
    assert_eq!(report["deflate"], true);
}

/// A broadcast server: every message any client sends goes to every client,
/// prepared once.
async fn broadcast_server(listener: tokio::net::TcpListener) {
    let (tx, _) = tokio::sync::broadcast::channel::<PreparedMessage>(4096);
    broadcast_node(listener, tx).await;
}

/// One node of a broadcast service: what a client of any node sharing `tx`
/// sends goes to every client of every one of them.
async fn broadcast_node(
    listener: tokio::net::TcpListener,
    tx: tokio::sync::broadcast::Sender<PreparedMessage>,
) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let tx = tx.clone();
        let mut rx = tx.subscribe();
        tokio::spawn(async move {
            let Ok(ws) = duplex::accept(tcp).await else {
                return;
            };
            let (mut reader, mut writer) = ws.split();
            tokio::spawn(async move {
                while let Ok(prepared) = rx.recv().await {
                    if writer.send_prepared(&prepared).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(message)) = reader.next().await {
                if let Message::Binary(data) = message {
                    let _ = tx.send(PreparedMessage::binary(data));
                }
            }
        });
    }
}

#[test]
fn fan_out_counts_every_delivery() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    runtime.spawn(broadcast_server(listener));
    let report = bench(&[
        &url,
        "--subscribers",
        "8",
        "--size",
        "64",
        "--duration",
        "1",
    ]);
    assert_sane(&report, 64);
    assert_eq!(report["mode"], "fan-out");
    let published = report["published"].as_u64().unwrap();
    let delivered = report["messages"].as_u64().unwrap();
    // Every subscriber gets every message published in the window (give or
    // take the ones in flight at its edges).
    assert!(
        delivered + 16 >= published * 8 && delivered <= published * 8 + 16,
        "{report}"
    );
}

/// `--also`: the subscribers spread over two nodes of one broadcast, a
/// publisher on each, in the closed loop (each publisher waits for its own
/// publication) and at a fixed rate shared by the two.
#[test]
fn fan_out_over_two_nodes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tx, _) = tokio::sync::broadcast::channel::<PreparedMessage>(4096);
    let mut urls = Vec::new();
    for _ in 0..2 {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        urls.push(format!("ws://{}/", listener.local_addr().unwrap()));
        runtime.spawn(broadcast_node(listener, tx.clone()));
    }
    let common = [
        urls[0].as_str(),
        "--also",
        &urls[1],
        "--subscribers",
        "8",
        "--size",
        "64",
        "--duration",
        "1",
    ];
    for rate in [None, Some("200")] {
        let mut args = common.to_vec();
        if let Some(rate) = rate {
            args.extend(["--rate", rate]);
        }
        let report = bench(&args);
        assert_sane(&report, 64);
        assert_eq!(report["publishers"], 2, "{report}");
        assert_eq!(report["connections"], 10, "{report}");
        assert_eq!(report["also"][0], urls[1].as_str(), "{report}");
        let published = report["published"].as_u64().unwrap();
        let delivered = report["messages"].as_u64().unwrap();
        if rate.is_some() {
            assert!((150..=250).contains(&published), "{report}");
        }
        assert!(
            delivered + 32 >= published * 8 && delivered <= published * 8 + 32,
            "{report}"
        );
    }
}

/// Fan-out through the hub protocol against `duplex serve`, configured as
/// `bench/fanout.sh` runs it: every subscriber of the channel gets every
/// publication.
#[test]
fn fan_out_through_a_hub_channel() {
    let data = std::env::temp_dir().join(format!("duplex-bench-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/hub-fanout.toml");
    let hub = Echo::serve(&["--data", data.to_str().unwrap(), "--config", config]);
    let url = format!("ws://{}/ws", hub.addr);
    let report = bench(&[
        &url,
        "--subscribers",
        "20",
        "--hub",
        "fanout:bench",
        "--size",
        "64",
        "--duration",
        "1",
        "--rate",
        "200",
    ]);
    drop(hub);
    let _ = std::fs::remove_dir_all(&data);
    assert_sane(&report, 64);
    let published = report["published"].as_u64().unwrap();
    let delivered = report["messages"].as_u64().unwrap();
    assert!(published >= 150, "{report}");
    assert!(
        delivered + 40 >= published * 20 && delivered <= published * 20 + 40,
        "{report}"
    );
}

/// A server that completes the handshake and then never answers: `duplex
/// bench` must still end soon after its measurement, counting errors, instead
/// of waiting for echoes that never come.
#[test]
fn a_silent_server_does_not_hold_the_load_generator() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    runtime.spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(ws) = duplex::accept(tcp).await {
                held.push(ws);
            }
        }
    });
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["bench", &url, "--connections", "3", "--size", "20"])
        .args(["--duration", "0.5", "--warmup", "0.1", "--json"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(15),
        "took {elapsed:?}"
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 3, "{report}");
    assert_eq!(report["messages"], 0, "{report}");
}
