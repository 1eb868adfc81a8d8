//! Many idle connections to `duplex echo`: all stay open and answer, and each
//! costs the server little memory.

mod common;
#[path = "../src/nofile.rs"]
mod nofile;

use std::io::Write;

use common::{Echo, frame, open, read_frame, tcp};

const CONNECTIONS: usize = 10_000;

/// Raises this process's open-file limit (children inherit it) for
/// [`CONNECTIONS`] and some to spare; fails the test if they cannot fit.
fn raise_open_file_limit() {
    let limit = nofile::raise_nofile(CONNECTIONS as u64 + 100, "these connections")
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(limit > CONNECTIONS as u64, "open-file limit {limit}");
}

#[test]
fn ten_thousand_idle_connections() {
    raise_open_file_limit();
    let echo = Echo::start(&["--threads", "1"]);
    // Warm up: the first connection sets up what every later one shares.
    let mut first = open(echo.addr);
    first.write_all(&frame(0x81, b"warm")).unwrap();
    assert_eq!(read_frame(&mut first), (0x81, b"warm".to_vec()));
    let before = echo.rss_kib();

    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(open(echo.addr));
    }
    let after = echo.rss_kib();
    let per_connection = (after.saturating_sub(before) * 1024) as f64 / CONNECTIONS as f64;
    eprintln!(
        "{CONNECTIONS} idle connections: resident memory {before} KiB -> {after} KiB, \
         {per_connection:.0} bytes per connection"
    );

    // Every 500th connection still answers.
    for (i, ws) in connections.iter_mut().enumerate().step_by(500) {
        let text = format!("connection {i}");
        ws.write_all(&frame(0x81, text.as_bytes())).unwrap();
        assert_eq!(read_frame(ws), (0x81, text.into_bytes()));
    }
    assert!(
        per_connection < 8192.0,
        "{per_connection:.0} bytes per idle connection; the goal is under 8 KiB"
    );
}

/// A hub configuration for many subscribers of one channel: no presence (a
/// join pushed to every other subscriber would be the test instead), the
/// ticker feed off, and limits with room for the load.
const HUB_CONFIG: &str = "\
[limits]
requests_per_second = 100000
burst = 100000

[namespaces.crowd]
presence = false
publish = true
max_subscribers = 20000

[feed]
enabled = false
";

/// Publications sent to every subscriber, and their size: traffic that
/// leaves the server's per-connection buffers used once.
const PUBLICATIONS: usize = 20;
const PUBLICATION_SIZE: usize = 1024;

/// The hub's per-subscriber memory goal is 6 KiB (docs/BENCHMARKS.md has the
/// benchmark); this test fails well above it.
const SUBSCRIBER_LIMIT: f64 = 8192.0;

/// Opens a WebSocket on the hub's /ws and subscribes it to `crowd:all`.
fn subscriber(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut stream = tcp(addr);
    let request = String::from_utf8_lossy(common::REQUEST).replacen("GET / ", "GET /ws ", 1);
    stream.write_all(request.as_bytes()).unwrap();
    let head = common::read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let subscribe = br#"{"id":1,"op":"subscribe","channel":"crowd:all"}"#;
    stream.write_all(&frame(0x81, subscribe)).unwrap();
    let (b0, reply) = read_frame(&mut stream);
    assert_eq!(b0, 0x81);
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.contains(r#""ok":true"#), "{reply}");
    stream
}

/// Reads frames until a pushed publication, and returns it.
fn next_publication(stream: &mut std::net::TcpStream) -> String {
    loop {
        let (b0, payload) = read_frame(stream);
        assert_eq!(b0, 0x81, "a text frame");
        let text = String::from_utf8(payload).unwrap();
        if text.contains(r#""push":"message""#) {
            return text;
        }
    }
}

#[test]
fn ten_thousand_hub_subscribers() {
    raise_open_file_limit();
    let dir = std::env::temp_dir().join(format!("duplex-subscribers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("duplex.toml");
    std::fs::write(&config, HUB_CONFIG).unwrap();
    let data = dir.join("data");
    let hub = Echo::serve(&[
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    // Warm up: the first subscriber creates the channel and what every
    // later connection shares.
    let mut publisher = subscriber(hub.addr);
    let before = hub.rss_kib();

    let mut subscribers = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        subscribers.push(subscriber(hub.addr));
    }
    let idle = hub.rss_kib();

    let data = "x".repeat(PUBLICATION_SIZE);
    for id in 0..PUBLICATIONS {
        let publish = format!(
            r#"{{"id":{},"op":"publish","channel":"crowd:all","data":"{data}"}}"#,
            id + 2
        );
        publisher
            .write_all(&frame(0x81, publish.as_bytes()))
            .unwrap();
        // One at a time: every subscriber's copy is written before the next.
        assert!(next_publication(&mut publisher).contains(&data));
    }
    for ws in &mut subscribers {
        for _ in 0..PUBLICATIONS {
            assert!(next_publication(ws).contains(&data));
        }
    }
    let after = hub.rss_kib();
    let per = |rss: u64| (rss.saturating_sub(before) * 1024) as f64 / CONNECTIONS as f64;
    let (idle_each, after_each) = (per(idle), per(after));
    eprintln!(
        "{CONNECTIONS} subscribers: resident memory {before} KiB -> {idle} KiB idle \
         ({idle_each:.0} bytes each) -> {after} KiB after {PUBLICATIONS} publications \
         of {PUBLICATION_SIZE} B ({after_each:.0} bytes each)"
    );
    drop(subscribers);
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        idle_each < SUBSCRIBER_LIMIT && after_each < SUBSCRIBER_LIMIT,
        "{idle_each:.0} bytes per idle subscriber, {after_each:.0} after traffic; \
         the limit is 8 KiB"
    );
}
