//! `duplex serve`'s JWT verification against tokens made by another
//! implementation: PyJWT with `cryptography` (tests/peers/python/tokens.py,
//! run by the workspace's .venv from scripts/setup-peers.sh).
//!
//! - Every algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256,
//!   ES384, EdDSA) is accepted, in `connect` and in `/ws?token=`; so are
//!   tokens a few seconds past `exp` or before `nbf`, inside the leeway.
//! - Every attack (alg none, an RSA public key used as an HS256 secret,
//!   expired, not yet valid, wrong or missing aud and iss, a tampered
//!   payload, an unknown signer) is refused with a message naming the check
//!   that failed, counted under its reason in
//!   `duplex_token_refusals_total`.
//! - A JWKS served by a real HTTP server (Python's `http.server`): key
//!   rotation, the refetch on an unknown `kid` at most once per
//!   `jwks_refetch_secs` (a flood of unknown kids), and an outage (cached
//!   keys keep working, the rest is refused as `keys_unavailable`).
//! - The server's log, at debug level, never contains a token.
//! - A `public_keys` file that is not a public key stops `duplex serve` with
//!   the file named.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use duplex::{ClientBuilder, Message};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
const ISSUER: &str = "https://id.duplex.test";
const AUDIENCE: &str = "duplex-hub";
const LEEWAY: u64 = 30;
/// The log levels the server runs with: everything of ours, debug included.
const RUST_LOG: &str = "duplex=debug,duplex_hub=debug,duplex_cli=debug";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "PyJWT is not installed ({} is missing): run scripts/setup-peers.sh",
        python.display()
    );
    python
}

fn tokens_script() -> PathBuf {
    workspace().join("tests/peers/python/tokens.py")
}

/// A child process, killed at the end of the test.
struct Guard {
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys and tokens from PyJWT, written into `dir`.
fn make_tokens(dir: &Path) -> Value {
    let out = Command::new(python())
        .arg(tokens_script())
        .arg("make")
        .arg(dir)
        .args(["--issuer", ISSUER, "--audience", AUDIENCE])
        .args(["--leeway", &LEEWAY.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run tokens.py");
    assert!(
        out.status.success(),
        "tokens.py make failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tokens.py prints JSON")
}

/// `duplex serve` with a config file, its log (standard error) kept.
struct Hub {
    _guard: Guard,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Hub {
    fn start(dir: &Path, auth: &str) -> Hub {
        let config = dir.join("duplex.toml");
        std::fs::write(&config, format!("[auth]\n{auth}")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.join("data"))
            .env("RUST_LOG", RUST_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start duplex serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("duplex serve: {line}");
                let mut log = kept.lock().unwrap();
                log.push_str(&without_colours(&line));
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (first, line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = first.send(l);
            }
            for l in lines.map_while(Result::ok) {
                eprintln!("duplex serve: {l}");
            }
        });
        let guard = Guard { child };
        let first = line
            .recv_timeout(common::serve::START_LIMIT)
            .unwrap_or_else(|e| panic!("duplex serve printed no first line ({e})"));
        let addr = common::serve::listen_addr(&first)
            .unwrap_or_else(|| panic!("unexpected first line of duplex serve: {first:?}"));
        Hub {
            _guard: guard,
            addr,
            log,
        }
    }

    /// `{"op":"connect","token":...}` on a new WebSocket: the reply.
    async fn connect_op(&self, token: &str) -> Value {
        let mut ws = ClientBuilder::new(format!("ws://{}/ws", self.addr))
            .connect()
            .await
            .unwrap();
        let request = json!({"id": 1, "op": "connect", "token": token});
        ws.send(Message::text(request.to_string())).await.unwrap();
        reply(&mut ws).await
    }

    /// `/ws?token=...` upgraded, then `connect` without a token: its user.
    async fn user_by_url(&self, token: &str) -> String {
        let url = format!("ws://{}/ws?token={token}", self.addr);
        let mut ws = ClientBuilder::new(&url).connect().await.unwrap();
        ws.send(Message::text(r#"{"id":1,"op":"connect"}"#))
            .await
            .unwrap();
        let reply = reply(&mut ws).await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["result"]["user"].as_str().unwrap().to_owned()
    }

    /// `/docs/NAME?token=...` upgraded: the document WebSocket opens.
    async fn document_opens(&self, token: &str) {
        let url = format!("ws://{}/docs/auth-test?token={token}", self.addr);
        let ws = ClientBuilder::new(&url).connect().await;
        assert!(ws.is_ok(), "{:?}", ws.err());
    }

    /// `PATH?token=...` refused: the status and the body.
    fn refused_by_url(&self, path: &str, token: &str) -> (u16, String) {
        let request = format!(
            "GET {path}?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        http(self.addr, &request)
    }

    /// The value of a sample in `/metrics`, such as
    /// `duplex_token_refusals_total{reason="expired"}`.
    fn metric(&self, sample: &str) -> u64 {
        let (status, body) = http(
            self.addr,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn refusals(&self, reason: &str) -> u64 {
        self.metric(&format!(
            "duplex_token_refusals_total{{reason=\"{reason}\"}}"
        ))
    }

    /// The log so far, after a moment for the last lines to come.
    fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        self.log.lock().unwrap().clone()
    }
}

/// `line` without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The reply to request 1.
async fn reply<S>(ws: &mut duplex::WebSocket<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = timeout(WAIT, ws.next())
            .await
            .expect("a reply in time")
            .expect("the connection open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == 1 {
                return value;
            }
        }
    }
}

/// One HTTP/1.1 exchange: the status and the body (by Content-Length).
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(tcp);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).unwrap();
        }
        None => {
            reader.read_to_end(&mut body).unwrap();
        }
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// Every token in `tokens` (nested objects and lists).
fn all_tokens(tokens: &Value, out: &mut Vec<String>) {
    match tokens {
        Value::String(s) if s.matches('.').count() == 2 => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| all_tokens(v, out)),
        Value::Object(map) => map.values().for_each(|v| all_tokens(v, out)),
        _ => {}
    }
}

/// No token, nor its payload or signature, is in `log`.
fn assert_no_token_in(log: &str, tokens: &[String]) {
    for token in tokens {
        let mut parts = token.split('.');
        let (_header, payload, signature) = (parts.next(), parts.next(), parts.next());
        for secret in [Some(token.as_str()), payload, signature]
            .into_iter()
            .flatten()
        {
            if secret.len() >= 16 {
                assert!(
                    !log.contains(secret),
                    "the log shows (part of) a token: {secret}"
                );
            }
        }
    }
}

/// A refusal: in `connect` (`unauthorized`, the message), in `/ws?token=`
/// and in `/docs/NAME?token=` (401, the same message), each counted once
/// under `reason`.
async fn assert_refused(hub: &Hub, name: &str, token: &str, reason: &str, says: &str) {
    let before = hub.refusals(reason);
    let reply = hub.connect_op(token).await;
    assert_eq!(reply["ok"], false, "{name}: {reply}");
    assert_eq!(reply["error"]["code"], "unauthorized", "{name}: {reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(says),
        "{name}: the message {message:?} should name {says:?}"
    );
    for path in ["/ws", "/docs/auth-test"] {
        let (status, body) = hub.refused_by_url(path, token);
        assert_eq!(status, 401, "{name} on {path}: {body}");
        assert_eq!(
            body.trim_end(),
            message,
            "{name} on {path}: the same message"
        );
    }
    assert_eq!(
        hub.refusals(reason) - before,
        3,
        "{name}: counted as {reason} three times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_pyjwt_every_algorithm_and_the_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = make_tokens(dir.path());
    let secret = str_of(&tokens, "secret");
    // The PEM paths are relative to the config file.
    let keys: Vec<String> = tokens["public_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("{k}"))
        .collect();
    let hub = Hub::start(
        dir.path(),
        &format!(
            "hs256_secret = \"{secret}\"\npublic_keys = [{}]\nissuer = \"{ISSUER}\"\n\
             audience = \"{AUDIENCE}\"\nleeway_secs = {LEEWAY}\n",
            keys.join(", ")
        ),
    );

    let accepted = tokens["accepted"].as_object().unwrap();
    for alg in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ] {
        assert!(accepted.contains_key(alg), "a token for {alg}");
    }
    for (name, token) in accepted {
        let token = token.as_str().unwrap();
        let reply = hub.connect_op(token).await;
        assert_eq!(reply["ok"], true, "{name}: {reply}");
        assert_eq!(reply["result"]["user"], format!("user-{name}"), "{name}");
        hub.document_opens(token).await;
        assert_eq!(
            hub.user_by_url(token).await,
            format!("user-{name}"),
            "{name}"
        );
    }
    let refused_before: u64 = ["signature", "expired", "algorithm"]
        .iter()
        .map(|r| hub.refusals(r))
        .sum();
    assert_eq!(refused_before, 0, "no refusal for the good tokens");

    let refused = &tokens["refused"];
    let attacks = [
        ("alg_none", "algorithm", "\"none\" is not accepted"),
        ("alg_none_by_hand", "algorithm", "\"None\" is not accepted"),
        (
            "hs256_with_rsa_public_key",
            "signature",
            "invalid token signature",
        ),
        (
            "expired",
            "expired",
            "exp is more than the leeway (30 s) past",
        ),
        (
            "not_yet_valid",
            "not_yet_valid",
            "nbf is more than the leeway (30 s) ahead",
        ),
        (
            "wrong_audience",
            "audience",
            "audience (aud) does not include \"duplex-hub\"",
        ),
        ("no_audience", "audience", "no aud claim"),
        (
            "wrong_issuer",
            "issuer",
            "issuer (iss) is not \"https://id.duplex.test\"",
        ),
        ("no_issuer", "issuer", "no iss claim"),
        ("tampered_payload", "signature", "invalid token signature"),
        ("unknown_signer", "signature", "invalid token signature"),
    ];
    assert_eq!(
        attacks.len(),
        refused.as_object().unwrap().len(),
        "every attack of tokens.py is tried"
    );
    for (name, reason, says) in attacks {
        assert_refused(&hub, name, str_of(refused, name), reason, says).await;
    }

    let log = hub.log();
    assert!(
        log.contains("token refused"),
        "the log tells of the refusals:\n{log}"
    );
    for (_, reason, _) in attacks {
        assert!(
            log.contains(&format!("reason={reason} ")),
            "the log names the reason {reason}:\n{log}"
        );
    }
    let mut every = Vec::new();
    all_tokens(&tokens, &mut every);
    assert!(every.len() > 60);
    assert_no_token_in(&log, &every);
}

/// Python's `http.server` serving a folder; the requests it answered.
struct JwksServer {
    guard: Option<Guard>,
    url: String,
    requests: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(root: &Path) -> JwksServer {
        let mut child = Command::new(python())
            .arg(tokens_script())
            .arg("serve")
            .arg(root)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tokens.py serve");
        let stdout = child.stdout.take().unwrap();
        let guard = Guard { child };
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let (first, line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = first.send(l);
            }
            for l in lines.map_while(Result::ok) {
                eprintln!("jwks server: {l}");
                if l.starts_with("GET /jwks.json ") {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let first = line
            .recv_timeout(WAIT)
            .expect("the JWKS server says its port");
        let port: u16 = first
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("JWKS server: {first:?}"));
        JwksServer {
            guard: Some(guard),
            url: format!("http://127.0.0.1:{port}/jwks.json"),
            requests,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        self.guard.take();
    }
}

/// Puts a JWKS in place at once (write, then rename).
fn publish(from: &Path, to: &Path) {
    let next = to.with_extension("next");
    std::fs::copy(from, &next).unwrap();
    std::fs::rename(&next, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_rotated_refetched_at_most_once_per_interval_and_an_outage() {
    const REFETCH_SECS: u64 = 3;
    let interval = Duration::from_secs(REFETCH_SECS);
    let past_interval = interval + Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let tokens = make_tokens(dir.path());
    let jwks = &tokens["jwks"];
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let served = www.join("jwks.json");
    publish(&dir.path().join("jwks1.json"), &served);
    let mut server = JwksServer::start(&www);
    let hub = Hub::start(
        dir.path(),
        &format!(
            "jwks_url = \"{}\"\njwks_refetch_secs = {REFETCH_SECS}\nissuer = \"{ISSUER}\"\n\
             audience = \"{AUDIENCE}\"\nleeway_secs = {LEEWAY}\n",
            server.url
        ),
    );
    let fetches = || hub.metric("duplex_jwks_fetches_total");
    assert_eq!(fetches(), 0, "fetched when a token first needs it");

    // Set 1: kid1, fetched once for the first token.
    let started = Instant::now();
    let reply = hub.connect_op(str_of(jwks, "kid1")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["user"], "user-kid1");
    assert_eq!(hub.user_by_url(str_of(jwks, "kid1")).await, "user-kid1");
    assert_eq!((fetches(), server.requests()), (1, 1));
    // The JWKS key is never an HMAC secret, and the kid picks the key.
    assert_refused(
        &hub,
        "HS256 signed with kid1's public key",
        str_of(jwks, "hs256_with_kid1_public_key"),
        "unknown_key",
        "no configured key takes HS256 tokens",
    )
    .await;
    assert_refused(
        &hub,
        "kid2's key named kid1",
        str_of(jwks, "kid2_key_as_kid1"),
        "unknown_key",
        "no key with kid \"kid1\" takes ES256 tokens",
    )
    .await;

    // Rotation: set 2 has kid2, kid1 is retired. Within the interval, kid2
    // is not fetched for.
    publish(&dir.path().join("jwks2.json"), &served);
    let kid2 = str_of(jwks, "kid2");
    let reply = hub.connect_op(kid2).await;
    assert!(
        started.elapsed() < interval,
        "the machine is too slow for this test's interval"
    );
    assert_eq!(reply["error"]["code"], "unauthorized", "{reply}");
    assert_eq!(
        reply["error"]["message"], "no key with kid \"kid2\" takes ES256 tokens",
        "{reply}"
    );
    assert_eq!(fetches(), 1, "no refetch within jwks_refetch_secs");
    // Past it, the unknown kid2 makes the hub fetch the set again.
    tokio::time::sleep(past_interval.saturating_sub(started.elapsed())).await;
    let reply = hub.connect_op(kid2).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["user"], "user-kid2");
    assert_eq!((fetches(), server.requests()), (2, 2));
    let reply = hub.connect_op(str_of(jwks, "kid1")).await;
    assert_eq!(
        reply["error"]["message"], "no key with kid \"kid1\" takes RS256 tokens",
        "kid1 is retired: {reply}"
    );

    // A flood of 50 made-up kids, at once: one fetch per interval at most.
    tokio::time::sleep(past_interval).await;
    let unknown_before = hub.refusals("unknown_key");
    let flood_started = Instant::now();
    let flood: Vec<_> = jwks["unknown_kids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| {
            let token = token.as_str().unwrap().to_owned();
            let addr = hub.addr;
            tokio::task::spawn_blocking(move || {
                let request = format!(
                    "GET /ws?token={token} HTTP/1.1\r\nHost: localhost\r\n\
                     Upgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n"
                );
                http(addr, &request)
            })
        })
        .collect();
    assert_eq!(flood.len(), 50);
    for answer in flood {
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.starts_with("no key with kid "), "{body}");
    }
    let flood_secs = flood_started.elapsed().as_secs();
    let most = 1 + flood_secs / REFETCH_SECS;
    let made = fetches() - 2;
    assert!(
        (1..=most).contains(&made),
        "50 unknown kids in {flood_secs} s made {made} fetches; at most {most}"
    );
    assert_eq!(server.requests() as u64, 2 + made);
    assert_eq!(hub.refusals("unknown_key") - unknown_before, 50);

    // The provider is down: the cached kid2 still works without a fetch; a
    // kid no cached key has is refused as keys_unavailable.
    server.stop();
    tokio::time::sleep(past_interval).await;
    let fetched = fetches();
    let reply = hub.connect_op(kid2).await;
    assert_eq!(reply["ok"], true, "a cached key: {reply}");
    assert_eq!(fetches(), fetched, "a cached key needs no fetch");
    let failures = hub.metric("duplex_jwks_fetch_failures_total");
    let unknown = &jwks["unknown_kids"][0];
    assert_refused(
        &hub,
        "an unknown kid with the provider down",
        unknown.as_str().unwrap(),
        "keys_unavailable",
        "cannot be fetched",
    )
    .await;
    assert_eq!(fetches(), fetched + 1, "one attempt in the interval");
    assert_eq!(hub.metric("duplex_jwks_fetch_failures_total"), failures + 1);

    let log = hub.log();
    assert!(log.contains("fetching the JWKS failed"), "{log}");
    let mut every = Vec::new();
    all_tokens(&tokens, &mut every);
    assert_no_token_in(&log, &every);
}

#[test]
fn a_public_key_file_that_is_not_one_stops_serve_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = make_tokens(dir.path());
    // A JWKS document is no PEM key; a missing file neither.
    for (file, says) in [
        ("jwks1.json", "not a PEM public key"),
        ("missing.pem", "cannot read"),
    ] {
        let config = dir.path().join("duplex.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nhs256_secret = {:?}\npublic_keys = [\"rsa.pem\", \"{file}\"]\n",
                str_of(&tokens, "secret")
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_duplex"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("auth.public_keys") && stderr.contains(file) && stderr.contains(says),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "it never listened");
    }
}
