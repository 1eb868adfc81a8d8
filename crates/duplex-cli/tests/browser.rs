//! A real browser against `duplex echo`: Debian's headless Chromium, driven by
//! playwright-core (`tests/browser/deflate.mjs`), opens a `WebSocket`, has
//! text and binary messages echoed (one a 1 MiB JSON text) and closes with
//! 4000. With permessage-deflate negotiated, and with `--no-deflate`.
//!
//! Needs /usr/bin/chromium (Debian's `chromium`), node, and playwright-core in
//! tests/browser/node_modules/: `scripts/setup-browser.sh` installs them.
//! Without them these tests fail and say so; they never skip.

mod common;
use duplex_harness::browser as harness;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::Echo;
use serde_json::Value;

/// One browser at a time: the machine has two cores.
static BROWSER: Mutex<()> = Mutex::new(());

/// Bytes a [`Proxy`] carried, each way.
#[derive(Debug, Default)]
struct Counts {
    to_server: AtomicU64,
    to_client: AtomicU64,
}

/// A TCP proxy in front of the echo server that counts the bytes on the wire,
/// to see that permessage-deflate really compresses, both ways.
struct Proxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl Proxy {
    fn start(server: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        // Runs until the test process ends.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let server = TcpStream::connect(server).expect("connect to duplex echo");
                let counts = shared.clone();
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), {
                    let counts = counts.clone();
                    move |n| counts.to_server.fetch_add(n, Ordering::SeqCst)
                });
                pump(server, client, move |n| {
                    counts.to_client.fetch_add(n, Ordering::SeqCst)
                });
            }
        });
        Proxy { addr, counts }
    }
}

/// Copies `from` to `to` in a thread, counting; at the end of `from`, ends the
/// writing side of `to`, so closes pass through in order.
fn pump(mut from: TcpStream, mut to: TcpStream, count: impl Fn(u64) -> u64 + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    count(n as u64);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// What one run of the script reported, and the bytes on the wire.
struct Run {
    report: Value,
    to_server: u64,
    to_client: u64,
}

/// Runs the browser script against `echo` (through a counting proxy).
fn run_browser(echo: &Echo) -> Run {
    let script = harness::script("deflate.mjs");
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = Proxy::start(echo.addr);
    let url = format!("ws://{}/", proxy.addr);
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&url)
        .current_dir(harness::browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdout = harness::read_all(child.stdout.take().unwrap());
    let stderr = harness::read_all(child.stderr.take().unwrap());
    let Some(status) = harness::wait_limited(&mut child, started, harness::RUN_LIMIT, || {}) else {
        panic!(
            "the browser script ran over {:?}; stderr:\n{}",
            harness::RUN_LIMIT,
            stderr.join().unwrap()
        );
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("the script printed no JSON line ({e}); status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    eprintln!(
        "browser run ({:.1} s): {status}: {}",
        started.elapsed().as_secs_f64(),
        summary(&report)
    );
    assert!(
        status.success() && report["ok"] == true,
        "the browser test failed ({status}): {}\nfull report: {report}\nstderr:\n{stderr}",
        report["reason"]
    );
    Run {
        report,
        to_server: proxy.counts.to_server.load(Ordering::SeqCst),
        to_client: proxy.counts.to_client.load(Ordering::SeqCst),
    }
}

/// The report without the long parts, for messages.
fn summary(report: &Value) -> Value {
    let mut short = report.clone();
    if let Some(map) = short.as_object_mut() {
        map.remove("echoes");
        map.remove("handshake");
    }
    short
}

/// Every message's echo matched, and the close handshake was clean.
fn assert_echoes_and_close(run: &Run) {
    let report = &run.report;
    let echoes = report["echoes"].as_array().expect("echoes");
    let wrong: Vec<&Value> = echoes.iter().filter(|e| e["ok"] != true).collect();
    assert!(wrong.is_empty(), "echoes that did not match: {wrong:?}");
    assert_eq!(echoes.len(), 27, "{}", summary(report));
    assert_eq!(report["allEchoesMatched"], true, "{}", summary(report));
    assert!(
        echoes
            .iter()
            .any(|e| e["name"] == "text 1 MiB JSON" && e["bytes"].as_u64() >= Some(1 << 20)),
        "the 1 MiB JSON text was sent and echoed: {echoes:?}"
    );
    let close = &report["close"];
    assert_eq!(close["code"], 4000, "{close}");
    // The close event carries the server's close frame, which echoes the code
    // and reason the page sent (docs/CONFORMANCE.md, "Closing").
    assert_eq!(close["reason"], "done", "{close}");
    assert_eq!(close["wasClean"], true, "{close}");
    assert_eq!(
        report["errors"],
        Value::Array(vec![]),
        "Chromium reported errors"
    );
}

#[test]
fn chromium_negotiates_permessage_deflate_and_every_echo_matches() {
    let echo = Echo::start(&[]);
    let run = run_browser(&echo);
    let report = &run.report;
    let extensions = report["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.contains("permessage-deflate"),
        "ws.extensions is {extensions:?}; handshake: {}",
        report["handshake"]
    );
    assert_eq!(
        report["handshake"]["request"]["Sec-WebSocket-Extensions"],
        "permessage-deflate; client_max_window_bits",
        "Chromium's offer"
    );
    assert_eq!(
        report["handshake"]["response"]["sec-websocket-extensions"], "permessage-deflate",
        "duplex's answer"
    );
    assert_echoes_and_close(&run);
    // Compressed on the wire, both ways: the messages are mostly repetitive.
    let payload = report["payloadBytes"].as_u64().expect("payloadBytes");
    eprintln!(
        "payload {payload} bytes each way; on the wire: browser to duplex {}, duplex to browser {}",
        run.to_server, run.to_client
    );
    assert!(
        run.to_server < payload / 2,
        "the browser's messages were not compressed: {} bytes on the wire for {payload}",
        run.to_server
    );
    assert!(
        run.to_client < payload / 2,
        "duplex's echoes were not compressed: {} bytes on the wire for {payload}",
        run.to_client
    );
}

#[test]
fn chromium_without_deflate_gets_no_extension_and_every_echo_matches() {
    let echo = Echo::start(&["--no-deflate"]);
    let run = run_browser(&echo);
    let report = &run.report;
    assert_eq!(report["extensions"], "", "{}", report["handshake"]);
    assert_eq!(
        report["handshake"]["response"].get("sec-websocket-extensions"),
        None,
        "{}",
        report["handshake"]
    );
    assert_echoes_and_close(&run);
    let payload = report["payloadBytes"].as_u64().expect("payloadBytes");
    assert!(
        run.to_server > payload && run.to_client > payload,
        "without deflate every payload byte is on the wire: browser to duplex {}, \
         duplex to browser {}, payload {payload}",
        run.to_server,
        run.to_client
    );
}
