//! `duplex connect` against `duplex echo` and against a scripted server, as a
//! user runs them.

mod common;
use duplex_harness::proxies;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Echo;
use duplex::{CloseCode, Message};
use futures_util::StreamExt;

fn duplex_connect(args: &[&str], stdin: &str) -> std::process::Output {
    duplex_connect_env(args, stdin, &[])
}

/// `duplex connect` with `env` as its only proxy variables.
fn duplex_connect_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<&str> = std::iter::once("connect")
        .chain(args.iter().copied())
        .collect();
    common::duplex(&args, stdin, env)
}

#[test]
fn connect_sends_stdin_lines_and_prints_the_echoes() {
    let echo = Echo::start(&[]);
    let url = format!("ws://{}/", echo.addr);
    let out = duplex_connect(&[&url, "-H", "Origin: http://localhost"], "hello\nwörld\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nwörld\n");
    assert!(stderr.contains("closed: 1000 (normal closure)"), "{stderr}");
}

#[test]
fn connect_reconnect_keeps_stdin_flowing_across_a_server_restart() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;

    let echo = Echo::start(&[]);
    let addr = echo.addr;
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args([
            "connect",
            "--reconnect",
            "--no-proxy",
            &format!("ws://{addr}/"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = |stream: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().unwrap()));
    let stderr = lines(Box::new(child.stderr.take().unwrap()));
    let wait = std::time::Duration::from_secs(20);
    let expect_err = |wanted: &str| loop {
        let line = stderr.recv_timeout(wait).expect("a state line on stderr");
        if line.contains(wanted) {
            return line;
        }
    };

    expect_err("connected to");
    writeln!(stdin, "before").unwrap();
    assert_eq!(stdout.recv_timeout(wait).unwrap(), "before");

    // The server goes away; the client says so and retries.
    drop(echo);
    expect_err("closed: 1006");
    let retry = expect_err("reconnecting in");
    assert!(retry.contains(" s (attempt "), "{retry}");
    // A line typed while the server is down waits in the queue.
    writeln!(stdin, "while down").unwrap();
    let refused = expect_err("reconnecting in");
    assert!(
        refused.contains("refused"),
        "the failed attempt says why: {refused}"
    );

    let _echo = Echo::start_at(addr, &[]);
    let connected = expect_err("connected to");
    assert!(connected.contains("attempt"), "{connected}");
    assert_eq!(stdout.recv_timeout(wait).unwrap(), "while down");
    writeln!(stdin, "after").unwrap();
    assert_eq!(stdout.recv_timeout(wait).unwrap(), "after");

    // The end of stdin closes it for good, cleanly.
    drop(stdin);
    expect_err("closed: 1000");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn connect_reports_a_refused_connection() {
    let echo = Echo::start(&[]);
    let url = format!("http://{}/", echo.addr);
    let out = duplex_connect(&[&url], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws:// or wss://"));
}

#[test]
fn connect_names_the_address_it_could_not_reach_and_why() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = duplex_connect(&[&format!("ws://{addr}/")], "");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // This layer's words, then the cause, each once.
    let line = format!("duplex: cannot connect to {addr}: ");
    assert!(stderr.contains(&line), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
}

#[test]
fn help_opens_with_what_the_command_does_and_lists_serve_first() {
    let out = common::duplex(&["--help"], "", &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.starts_with("The duplex command: serve the real-time WebSocket hub"),
        "{help}"
    );
    let position = |name: &str| {
        help.find(&format!("\n  {name} "))
            .unwrap_or_else(|| panic!("{name} is not listed: {help}"))
    };
    let order: Vec<usize> = ["serve", "connect", "echo", "bench"]
        .iter()
        .map(|name| position(name))
        .collect();
    assert!(order.is_sorted(), "serve, connect, echo, bench: {help}");
}

/// A server that sends a few messages, waits for each echo, then closes with
/// 4001; returns what it got back.
async fn scripted_server(listener: tokio::net::TcpListener) -> Vec<Message> {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = duplex::Acceptor::new()
        .protocols(["conformance"])
        .accept(tcp)
        .await
        .unwrap();
    let sent = [
        Message::text("one"),
        Message::binary(vec![1u8, 2, 3]),
        Message::text("x".repeat(100_000)),
    ];
    let mut echoed = Vec::new();
    for message in sent {
        ws.send(message).await.unwrap();
        echoed.push(ws.next().await.unwrap().unwrap());
    }
    ws.close(CloseCode(4001), "script done").await.unwrap();
    echoed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_echo_mode_returns_every_message_and_exits_cleanly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(scripted_server(listener));
    let out = tokio::task::spawn_blocking(move || {
        duplex_connect(&[&url, "--echo", "-s", "conformance"], "")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("subprotocol conformance"), "{stderr}");
    assert!(stderr.contains("closed: 4001"), "{stderr}");
    assert!(stderr.contains("script done"), "{stderr}");
    let echoed = server.await.unwrap();
    assert_eq!(
        echoed,
        [
            Message::text("one"),
            Message::binary(vec![1u8, 2, 3]),
            Message::text("x".repeat(100_000)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_exits_non_zero_when_the_close_is_not_clean() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = duplex::accept(tcp).await.unwrap();
        drop(ws); // gone without a close frame
    });
    let out = tokio::task::spawn_blocking(move || duplex_connect(&[&url, "--echo"], ""))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1006"));
}

#[test]
fn echo_over_tls_with_connect_trusting_the_certificate() {
    let dir = std::env::temp_dir().join(format!("duplex-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let echo = Echo::start(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let url = format!("wss://localhost:{}/", echo.addr.port());

    let untrusted = duplex_connect(&[&url], "hello\n");
    assert_eq!(untrusted.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("TLS"));

    let trusted = duplex_connect(&[&url, "--ca", cert_path.to_str().unwrap()], "over tls\n");
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "over tls\n");

    let insecure = duplex_connect(&[&url, "--insecure"], "insecure\n");
    assert!(insecure.status.success());
    assert_eq!(String::from_utf8_lossy(&insecure.stdout), "insecure\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy: --features external"
)]
fn connect_through_tinyproxy_by_flag_or_environment_and_directly_with_no_proxy() {
    let echo = Echo::start(&[]);
    let tinyproxy = proxies::ProxyProcess::tinyproxy(&[echo.addr.port()]);
    let proxy = tinyproxy.url_with_auth("http");
    let url = format!("ws://{}/", echo.addr);
    let tunnels = || {
        tinyproxy
            .log()
            .matches(&format!("CONNECT {} ", echo.addr))
            .count()
    };
    let echoed = |out: std::process::Output, line: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{line}\n"));
    };

    echoed(
        duplex_connect(&["--proxy", &proxy, &url], "by flag\n"),
        "by flag",
    );
    assert_eq!(tunnels(), 1);
    echoed(
        duplex_connect_env(&[&url], "by http_proxy\n", &[("http_proxy", &proxy)]),
        "by http_proxy",
    );
    assert_eq!(tunnels(), 2);
    echoed(
        duplex_connect_env(&[&url], "by all_proxy\n", &[("ALL_PROXY", &proxy)]),
        "by all_proxy",
    );
    assert_eq!(tunnels(), 3);

    // As curl: the upper-case HTTP_PROXY is not read; NO_PROXY and
    // --no-proxy go direct.
    echoed(
        duplex_connect_env(&[&url], "HTTP_PROXY\n", &[("HTTP_PROXY", &proxy)]),
        "HTTP_PROXY",
    );
    let bypass = [("http_proxy", proxy.as_str()), ("NO_PROXY", "127.0.0.0/8")];
    echoed(
        duplex_connect_env(&[&url], "NO_PROXY\n", &bypass),
        "NO_PROXY",
    );
    echoed(
        duplex_connect_env(
            &[&url, "--no-proxy"],
            "--no-proxy\n",
            &[("http_proxy", &proxy)],
        ),
        "--no-proxy",
    );
    assert_eq!(tunnels(), 3);

    // Failures name the proxy and say what happened.
    let wrong = format!("http://{}:wrong@{}", proxies::USER, tinyproxy.addr);
    let out = duplex_connect(&["--proxy", &wrong, &url], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "proxy http://{}: authentication required",
            tinyproxy.addr
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "{stderr}");
    let nobody = format!("http://127.0.0.1:{}", proxies::free_port());
    let out = duplex_connect_env(&[&url], "", &[("http_proxy", &nobody)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "duplex: proxy {nobody}: cannot connect to the proxy: Connection refused"
        )),
        "{stderr}"
    );
    let out = duplex_connect(&["--proxy", "https://proxy.example", &url], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));
}
