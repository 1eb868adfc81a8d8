//! A real browser against the `static_and_ws` example over TLS: Debian's
//! headless Chromium, driven by playwright-core (`tests/browser/http2.mjs`),
//! loads the chat page over HTTP/2, chats through it, and opens WebSockets that
//! travel as streams of that HTTP/2 connection (RFC 8441 extended CONNECT),
//! with permessage-deflate, as Chromium reports; then the server shuts down
//! and the page shows its 1001.
//!
//! Needs /usr/bin/chromium (Debian's `chromium`), node, and playwright-core in
//! tests/browser/node_modules/: `scripts/setup-browser.sh` installs them.
//! Without them this test fails and says so; it never skips.
#![cfg(all(feature = "hyper", feature = "tls", feature = "deflate"))]

// The example's server itself, not a copy. The example's `main.rs` uses all of
// it; this test does not.
#[allow(dead_code)]
#[path = "../examples/static_and_ws/app.rs"]
mod app;

use duplex_harness::browser as harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the script against `url` with `--await-shutdown`, calling
/// `shut_down` when it says it is ready for that; returns its JSON report.
fn run_browser(script: &Path, url: &str, shut_down: impl FnOnce() + Send + 'static) -> Value {
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(script)
        .arg(url)
        .arg("--await-shutdown")
        .current_dir(harness::browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdout = {
        let pipe = BufReader::new(child.stdout.take().unwrap());
        let mut shut_down = Some(shut_down);
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in pipe.lines() {
                let Ok(line) = line else { break };
                if line == "ready for shutdown"
                    && let Some(shut_down) = shut_down.take()
                {
                    shut_down();
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    };
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
        "browser run ({:.1} s, {status}): page {}, sockets {}, closes {}",
        started.elapsed().as_secs_f64(),
        report["page"],
        report["sockets"],
        report["closes"],
    );
    assert!(
        status.success() && report["ok"] == true,
        "the browser test failed ({status}): {}\nfull report: {report}\nstderr:\n{stderr}",
        report["reason"]
    );
    report
}

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in a
/// directory of its own, for the example's `--tls-cert`/`--tls-key` path.
fn write_certificate() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("duplex-browser-http2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_the_page_over_http2_and_opens_websockets_as_http2_streams() {
    let script = harness::script("http2.mjs");
    let (cert, key) = write_certificate();
    // As main.rs does for --tls-cert and --tls-key.
    let tls = duplex::tls::server_config_from_pem(&cert, &key).unwrap();
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
    let mut config = app::Config::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/static_and_ws/public"),
    );
    config.tls = Some(app::with_http2_alpn(tls));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let app = app::App::new(config);
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.clone().serve(listener, stop.clone().cancelled_owned()));

    // When the script is done with its checks, the server shuts down while
    // the chat page's socket is still open.
    let shutdown_started = Arc::new(Mutex::new(None));
    let shut_down = {
        let stop = stop.clone();
        let shutdown_started = shutdown_started.clone();
        move || {
            *shutdown_started.lock().unwrap() = Some(Instant::now());
            stop.cancel();
        }
    };
    let report = tokio::task::spawn_blocking(move || run_browser(&script, &url, shut_down))
        .await
        .unwrap();

    // Chromium's view: the page came over h2 (the navigation's
    // nextHopProtocol, and DevTools' response.protocol)...
    let page = &report["page"];
    assert_eq!(page["status"], 200, "{page}");
    assert_eq!(page["nextHopProtocol"], "h2", "{page}");
    assert_eq!(page["cdpProtocol"], "h2", "{page}");
    // ...the chat page connected and its message came back...
    assert_eq!(report["chat"]["echoed"], true, "{}", report["chat"]);
    let chat_status = report["chat"]["status"].as_str().unwrap_or_default();
    assert_eq!(chat_status, "connected (page over h2, compressed)");
    // ...its two other sockets agreed on permessage-deflate, every broadcast
    // arrived in order on both, and they closed cleanly.
    let sockets = report["sockets"].as_array().expect("sockets");
    assert_eq!(sockets.len(), 2, "{report}");
    for socket in sockets {
        let extensions = socket["extensions"].as_str().unwrap_or_default();
        assert!(
            extensions.contains("permessage-deflate"),
            "ws.extensions is {extensions:?}"
        );
    }
    assert_eq!(report["messagesMatched"], true);
    // Every handshake DevTools saw was answered 200, not 101: an extended
    // CONNECT on the HTTP/2 connection, not an HTTP/1.1 upgrade.
    let handshakes = report["handshakes"].as_array().expect("handshakes");
    assert_eq!(handshakes.len(), 3, "{handshakes:?}");
    for handshake in handshakes {
        assert_eq!(handshake["status"], 200, "{handshake}");
        assert_eq!(
            handshake["response"]["sec-websocket-extensions"], "permessage-deflate",
            "{handshake}"
        );
    }
    assert_eq!(report["errors"], Value::Array(vec![]), "Chromium's errors");

    // Shutting down closed the chat page's socket, an HTTP/2 stream, with
    // 1001 and the reason, which the page showed; and the server finished
    // without waiting for its 5 s close timeout: Chromium answered the close,
    // and the HTTP/2 connection (GOAWAY) drained.
    assert_eq!(
        report["shutdown"]["status"], "closed: 1001 the server is shutting down",
        "{}",
        report["shutdown"]
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server did not shut down")
        .unwrap();
    assert_eq!(app.clients(), 0, "every socket left the broadcast");
    let took = shutdown_started
        .lock()
        .unwrap()
        .expect("shutdown")
        .elapsed();
    eprintln!("the server shut down in {took:?}");
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}
