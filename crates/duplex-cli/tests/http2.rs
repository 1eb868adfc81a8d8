//! `duplex connect --http2` and `duplex bench --http2` against
//! `duplex echo --http2`: WebSockets as streams of HTTP/2 connections (RFC
//! 8441), h2c and h2 over TLS, and the fallback to HTTP/1.1.

mod common;

use common::Echo;
use serde_json::Value;

fn duplex(args: &[&str], stdin: &str) -> std::process::Output {
    common::duplex(args, stdin, &[])
}

#[test]
fn connect_http2_echoes_lines_over_h2c_and_h2() {
    let echo = Echo::start(&["--http2"]);
    let url = format!("ws://{}/", echo.addr);
    let out = duplex(&["connect", "--http2", &url], "over h2c\nsecond line\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(HTTP/2, permessage-deflate)"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "over h2c\nsecond line\n"
    );
    assert!(stderr.contains("closed: 1000"), "{stderr}");

    let dir = tempfile_dir("duplex-cli-h2");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls = Echo::start(&[
        "--http2",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let url = format!("wss://localhost:{}/", tls.addr.port());
    let ca = cert_path.to_str().unwrap();
    let out = duplex(&["connect", "--http2", "--ca", ca, &url], "over h2\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(HTTP/2, permessage-deflate)"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over h2\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connect_http2_falls_back_to_http1_on_a_plain_echo_server() {
    // `duplex echo` without --http2 speaks HTTP/1.1 only.
    let echo = Echo::start(&[]);
    let url = format!("ws://{}/", echo.addr);
    let out = duplex(&["connect", "--http2", &url], "still echoed\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(HTTP/1.1"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still echoed\n");
}

#[test]
fn bench_http2_runs_many_websockets_over_fewer_connections() {
    let echo = Echo::start(&["--http2", "--threads", "1"]);
    let url = format!("ws://{}/", echo.addr);
    let common = [
        "bench",
        url.as_str(),
        "--http2",
        "--http2-connections",
        "2",
        "--connections",
        "6",
        "--size",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ];
    let mut json = common.to_vec();
    json.push("--json");
    let out = duplex(&json, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["connections"], 6, "{report}");
    assert_eq!(report["http2_connections"], 2, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["messages"].as_u64().unwrap() > 50, "{report}");

    // The table, as a user reads it.
    let out = duplex(&common, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(": 6 connections, 100-byte binary messages"),
        "{stdout}"
    );
    assert!(
        stdout.contains("HTTP/2: the WebSockets shared 2 TCP connections"),
        "{stdout}"
    );
    assert!(stdout.contains("| messages/s | MB/s |"), "{stdout}");

    // A server that does not take WebSockets over HTTP/2: the bench says so.
    let plain = Echo::start(&[]);
    let url = format!("ws://{}/", plain.addr);
    let out = duplex(&["bench", &url, "--http2", "--duration", "0.5"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP/2"), "{stderr}");
}

/// A fresh directory under the system's temporary one.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
