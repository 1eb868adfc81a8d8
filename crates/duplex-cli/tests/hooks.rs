//! Backend hooks (`[proxy]`) against a real HTTP backend: tests/backend/backend.py
//! (Python's standard library), with a login that sets a session cookie. A
//! Rust client opens the hub's WebSocket with that cookie: the backend names
//! the user, denies what it denies, rewrites publications; a backend that is
//! down, slow, broken or busy denies with `unavailable`, without hanging the
//! connection.
//!
//! In Chromium (tests/browser/hooks.mjs): a person logs in at the backend,
//! opens the hub's /chat page and chats as the backend's user, without a
//! token.
//!
//! Needs `python3` on PATH (or the repository's .venv), and for the browser
//! test Chromium, node and playwright-core (`scripts/setup-browser.sh`);
//! without them the tests fail and say so.

use duplex_harness::browser as harness;

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use duplex::{ClientBuilder, ClientStream, Message, WebSocket};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

use common::serve::spawn_serve;

const WAIT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let on_path = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return "python3".into();
    }
    let venv = repo().join(".venv/bin/python3");
    assert!(
        venv.exists(),
        "the hook tests need python3 on PATH or in {}",
        venv.display()
    );
    venv
}

/// tests/backend/backend.py on a free port; killed on drop.
pub struct Backend {
    child: Child,
    addr: SocketAddr,
}

impl Backend {
    /// Starts it and waits for its first line.
    pub fn start() -> Backend {
        let mut child = Command::new(python())
            .arg(repo().join("tests/backend/backend.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/backend/backend.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the backend's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line of the backend: {line:?}"));
        Backend { child, addr }
    }

    /// The URL of `path` on the backend.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` on the backend: the status line, headers and body.
    pub fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect to the backend");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .expect("the backend's answer");
        text
    }

    /// Logs `user` in: the `sid=...` cookie the backend set.
    pub fn login(&self, user: &str) -> String {
        let answer = self.get(&format!("/login?user={user}"));
        let cookie = answer
            .lines()
            .find_map(|l| l.strip_prefix("Set-Cookie: "))
            .unwrap_or_else(|| panic!("no Set-Cookie in {answer:?}"));
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        cookie.split(';').next().unwrap().to_string()
    }

    /// The hook requests the backend received.
    pub fn log(&self) -> Vec<Value> {
        let answer = self.get("/log");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("bad /log {body:?}: {e}"))
    }

    /// Kills it (the backend goes down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `duplex serve` with `config`, in a fresh folder; killed on drop.
pub struct Serve {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Serve {
    /// Starts it with `config` (TOML) on 127.0.0.1:0.
    pub fn start(config: &str) -> Serve {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "duplex-hooks-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("duplex.toml");
        std::fs::write(&file, config).unwrap();
        let (child, addr) = spawn_serve("127.0.0.1:0", &dir, Some(&file)).unwrap();
        Serve { child, addr, dir }
    }

    fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Ws = WebSocket<ClientStream>;

async fn open(serve: &Serve, cookie: Option<&str>) -> Ws {
    let mut builder = ClientBuilder::new(format!("ws://{}/ws", serve.addr))
        .header("User-Agent", "duplex-hooks-test")
        .unwrap();
    if let Some(cookie) = cookie {
        builder = builder.header("Cookie", cookie).unwrap();
    }
    timeout(WAIT, builder.connect()).await.unwrap().unwrap()
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection open")
            .expect("a message");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Sends `request` and returns the reply with its id (skipping pushes).
async fn call(ws: &mut Ws, request: Value) -> Value {
    let id = request["id"].clone();
    ws.send(Message::text(request.to_string())).await.unwrap();
    loop {
        let reply = next_json(ws).await;
        if reply["id"] == id {
            return reply;
        }
    }
}

fn error_of(reply: &Value) -> (&str, &str) {
    assert_eq!(reply["ok"], false, "{reply}");
    (
        reply["error"]["code"].as_str().unwrap(),
        reply["error"]["message"].as_str().unwrap(),
    )
}

fn hooks_config(backend: &Backend, prefix: &str, extra: &str) -> String {
    format!(
        "[feed]\nenabled = false\n\
         [proxy]\n\
         connect = \"{}\"\nsubscribe = \"{}\"\npublish = \"{}\"\n{extra}",
        backend.url(&format!("{prefix}/duplex/connect")),
        backend.url(&format!("{prefix}/duplex/subscribe")),
        backend.url(&format!("{prefix}/duplex/publish")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_names_the_user_denies_and_rewrites() {
    let backend = Backend::start();
    let config = format!(
        "{}\n[auth]\nhs256_secret = \"a secret that signs no token here\"\nrequired = true\n",
        hooks_config(&backend, "", "timeout_ms = 2000\n")
    );
    let serve = Serve::start(&config);
    let alice_sid = backend.login("alice");
    let bob_sid = backend.login("bob");

    // A session cookie: the backend's user, and auth.required is met.
    let mut alice = open(&serve, Some(&format!("theme=dark; {alice_sid}"))).await;
    let reply = call(&mut alice, json!({"id":1,"op":"connect"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["user"], "alice");
    let reply = call(
        &mut alice,
        json!({"id":2,"op":"subscribe","channel":"chat:room"}),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    // The backend's channels (chat:*) are the connection's.
    let reply = call(
        &mut alice,
        json!({"id":3,"op":"history","channel":"ticker:AAPL"}),
    )
    .await;
    assert_eq!(
        error_of(&reply),
        (
            "forbidden",
            "the token or the connect hook does not allow channel ticker:AAPL"
        )
    );
    // Presence shows the backend's info.
    let reply = call(
        &mut alice,
        json!({"id":4,"op":"presence","channel":"chat:room"}),
    )
    .await;
    assert_eq!(reply["result"]["clients"][0]["user"], "alice", "{reply}");
    assert_eq!(
        reply["result"]["clients"][0]["info"]["name"], "alice",
        "{reply}"
    );

    // No cookie: the backend's error reaches the client, and the client is
    // not authenticated.
    let mut stranger = open(&serve, None).await;
    let reply = call(&mut stranger, json!({"id":1,"op":"connect"})).await;
    assert_eq!(
        error_of(&reply),
        ("unauthorized", "no session: log in at /login")
    );
    let reply = call(
        &mut stranger,
        json!({"id":2,"op":"subscribe","channel":"chat:room"}),
    )
    .await;
    assert_eq!(error_of(&reply).0, "unauthorized");

    // Subscribe: bob may not read chat:secret; alice may.
    let mut bob = open(&serve, Some(&bob_sid)).await;
    let reply = call(&mut bob, json!({"id":1,"op":"connect"})).await;
    assert_eq!(reply["result"]["user"], "bob", "{reply}");
    let reply = call(
        &mut bob,
        json!({"id":2,"op":"subscribe","channel":"chat:secret"}),
    )
    .await;
    assert_eq!(
        error_of(&reply),
        ("forbidden", "bob may not read chat:secret")
    );
    let reply = call(
        &mut alice,
        json!({"id":5,"op":"subscribe","channel":"chat:secret"}),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");

    // Publish: what alice receives is the backend's data.
    let reply = call(
        &mut bob,
        json!({"id":3,"op":"publish","channel":"chat:room","data":{"text":"hi"}}),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let push = loop {
        let push = next_json(&mut alice).await;
        if push["push"] == "message" {
            break push;
        }
    };
    assert_eq!(push["data"], json!({"text":"hi","checked":true}), "{push}");
    // A denial with a code of the backend's own: forbidden, the code named.
    let reply = call(
        &mut bob,
        json!({"id":4,"op":"publish","channel":"chat:room","data":{"text":"buy spam"}}),
    )
    .await;
    assert_eq!(
        error_of(&reply),
        ("forbidden", "no spam here (backend code 4001)")
    );

    // What the backend was told.
    let log = backend.log();
    let connect = log
        .iter()
        .map(|entry| &entry["request"])
        .find(|r| r["op"] == "connect" && r["headers"]["cookie"].is_string())
        .expect("a connect with a cookie");
    assert_eq!(
        connect["headers"]["cookie"],
        format!("theme=dark; {alice_sid}")
    );
    assert_eq!(connect["headers"]["user-agent"], "duplex-hooks-test");
    assert!(connect["client"].is_string(), "{connect}");
    let remote: SocketAddr = connect["remote_addr"].as_str().unwrap().parse().unwrap();
    assert!(remote.ip().is_loopback() && remote.port() != 0, "{connect}");
    let publish = log
        .iter()
        .map(|entry| &entry["request"])
        .find(|r| r["op"] == "publish")
        .expect("a publish");
    assert_eq!(publish["user"], "bob");
    assert_eq!(publish["channel"], "chat:room");
    assert_eq!(publish["data"], json!({"text":"hi"}));
    assert!(publish.get("headers").is_none(), "{publish}");

    let metrics = serve.metrics();
    for line in [
        "duplex_hook_requests_total{op=\"connect\",outcome=\"allowed\"} 2\n",
        "duplex_hook_requests_total{op=\"connect\",outcome=\"denied\"} 1\n",
        "duplex_hook_requests_total{op=\"subscribe\",outcome=\"denied\"} 1\n",
        "duplex_hook_requests_total{op=\"publish\",outcome=\"allowed\"} 1\n",
        "duplex_hook_requests_total{op=\"publish\",outcome=\"denied\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_broken_backend_denies_with_unavailable() {
    let backend = Backend::start();
    // connect: past the timeout; subscribe: 500; publish: nobody listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = format!(
        "[feed]\nenabled = false\n[proxy]\ntimeout_ms = 500\n\
         connect = \"{}\"\nsubscribe = \"{}\"\npublish = \"http://127.0.0.1:{dead_port}/duplex/publish\"\n",
        backend.url("/slow/duplex/connect"),
        backend.url("/fail/duplex/subscribe"),
    );
    let serve = Serve::start(&config);
    let sid = backend.login("alice");
    let mut ws = open(&serve, Some(&sid)).await;

    let started = Instant::now();
    let reply = call(&mut ws, json!({"id":1,"op":"connect"})).await;
    let took = started.elapsed();
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(message.contains("connect hook"), "{message}");
    assert!(message.contains("no answer within 500 ms"), "{message}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "{took:?}"
    );

    let reply = call(&mut ws, json!({"id":2,"op":"subscribe","channel":"chat:a"})).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(
        message.contains("subscribe hook") && message.contains("500"),
        "{message}"
    );

    let started = Instant::now();
    let reply = call(
        &mut ws,
        json!({"id":3,"op":"publish","channel":"chat:a","data":{"text":"x"}}),
    )
    .await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(message.contains("publish hook"), "{message}");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );

    // The connection still works.
    let reply = call(&mut ws, json!({"id":4,"op":"ping"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let metrics = serve.metrics();
    for op in ["connect", "subscribe", "publish"] {
        let line = format!("duplex_hook_requests_total{{op=\"{op}\",outcome=\"failed\"}} 1\n");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
    assert!(
        metrics.contains("duplex_hook_latency_seconds_count 3\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_the_exchange_denies_with_unavailable() {
    let backend = Backend::start();
    let config = format!(
        "[feed]\nenabled = false\n[proxy]\nconnect = \"{}\"\nsubscribe = \"{}\"\n",
        backend.url("/garbage/duplex/connect"),
        backend.url("/empty/duplex/subscribe"),
    );
    let serve = Serve::start(&config);
    let mut ws = open(&serve, None).await;
    let reply = call(&mut ws, json!({"id":1,"op":"connect"})).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(
        message.contains("connect hook") && message.contains("no JSON object"),
        "{message}"
    );
    let reply = call(&mut ws, json!({"id":2,"op":"subscribe","channel":"chat:a"})).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(
        message.contains("subscribe hook") && message.contains("neither"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_and_a_killed_backend_denies_at_once() {
    let mut backend = Backend::start();
    // The backend holds each connect 1.5 s; one request in flight at most.
    let config = format!(
        "[feed]\nenabled = false\n[proxy]\ntimeout_ms = 3000\nmax_in_flight = 1\nconnect = \"{}\"\n",
        backend.url("/hold/duplex/connect"),
    );
    let serve = Serve::start(&config);
    let sid = backend.login("carol");
    let mut first = open(&serve, Some(&sid)).await;
    let mut second = open(&serve, Some(&sid)).await;
    first
        .send(Message::text(json!({"id":1,"op":"connect"}).to_string()))
        .await
        .unwrap();
    // Let the first request reach the backend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = call(&mut second, json!({"id":1,"op":"connect"})).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(message.contains("proxy.max_in_flight"), "{message}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let reply = next_json(&mut first).await;
    assert_eq!(reply["result"]["user"], "carol", "{reply}");

    // The backend killed: denied quickly, with the hook named.
    backend.kill();
    let mut third = open(&serve, Some(&sid)).await;
    let started = Instant::now();
    let reply = call(&mut third, json!({"id":1,"op":"connect"})).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(message.contains("the connect hook failed"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_skips_the_connect_hook() {
    let backend = Backend::start();
    let secret = "a secret for the hook tests";
    let config = format!(
        "{}\n[auth]\nhs256_secret = \"{secret}\"\n",
        hooks_config(&backend, "", "")
    );
    let serve = Serve::start(&config);
    let claims = duplex_hub::auth::Claims {
        sub: "dave".into(),
        exp: Some(duplex_hub::clock::Clock::system().now_secs() + 600),
        ..Default::default()
    };
    let token = duplex_hub::auth::sign(&claims, secret.as_bytes());
    let mut ws = open(&serve, None).await;
    let reply = call(&mut ws, json!({"id":1,"op":"connect","token":token})).await;
    assert_eq!(reply["result"]["user"], "dave", "{reply}");
    assert!(
        !backend
            .log()
            .iter()
            .any(|e| e["request"]["op"] == "connect"),
        "the connect hook was asked"
    );
    // The subscribe hook still is, with the token's user.
    let reply = call(&mut ws, json!({"id":2,"op":"subscribe","channel":"chat:x"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let log = backend.log();
    assert_eq!(log.last().unwrap()["request"]["user"], "dave", "{log:?}");
}

#[test]
fn a_browser_logged_in_at_the_backend_chats_without_a_token() {
    let backend = Backend::start();
    let serve = Serve::start(&hooks_config(&backend, "", ""));
    let mut command = Command::new("node");
    command
        .arg(harness::script("hooks.mjs"))
        .arg(format!("http://{}/", serve.addr))
        .arg(backend.url("/"));
    if let Some(dir) = std::env::var_os("DUPLEX_SCREENSHOT_DIR") {
        command
            .arg("--screenshot")
            .arg(PathBuf::from(dir).join("hooks.png"));
    }
    let report = harness::run_report(command, "hooks.mjs", &mut |_| None);
    assert_eq!(report["login"], "logged in as alice", "{report}");
    assert_eq!(report["cookieHttpOnly"], true, "{report}");
    // The nickname typed was "guest": the backend's user and name win.
    assert_eq!(report["user"], "alice", "{report}");
    assert_eq!(report["people"], json!(["alice"]), "{report}");
    let texts: Vec<&str> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello through the hooks"], "{report}");
    let received = report["received"].as_array().unwrap();
    assert!(
        received
            .iter()
            .any(|d| d["text"] == "hello through the hooks" && d["checked"] == true),
        "{report}"
    );
    // The browser's cookie reached the backend through the hub.
    let connect = backend
        .log()
        .into_iter()
        .find(|e| e["request"]["op"] == "connect")
        .expect("a connect hook request");
    let cookie = connect["request"]["headers"]["cookie"]
        .as_str()
        .unwrap_or("");
    assert!(cookie.starts_with("sid="), "{connect}");
    assert!(
        connect["request"]["headers"]["user-agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Chrome")),
        "{connect}"
    );
}
