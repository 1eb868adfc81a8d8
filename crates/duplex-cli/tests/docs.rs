//! Collaborative documents of `duplex serve` with the ecosystem's own
//! clients: the npm `yjs` and `y-websocket` packages (tests/docs/sync.mjs,
//! with `ws` as the provider's WebSocket) and the /editor page in Debian's
//! headless Chromium (tests/docs/editor.mjs). Each test starts the real
//! binary on 127.0.0.1:0 with a fresh data folder, and reads the JSON report
//! the script prints last.
//!
//! Needs node and tests/docs/node_modules (`scripts/setup-docs.sh`), and for
//! the editor test /usr/bin/chromium and tests/browser/node_modules
//! (`scripts/setup-browser.sh`). Without them these tests fail and say so.

mod common;
use duplex_harness::browser as harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one script may run.
const RUN_LIMIT: Duration = Duration::from_secs(90);
/// One browser at a time: the machine has two cores.
static BROWSER: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `duplex serve` with a data folder of its own, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
    config: Option<PathBuf>,
}

/// A new empty folder under the system's temporary folder.
fn fresh_folder() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("duplex-docs-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Serve {
    /// Starts `duplex serve` with `config` (TOML) if not empty.
    fn start(config: &str) -> Serve {
        Serve::start_with(config, &[])
    }

    /// [`Serve::start`] with more arguments (`--redis URL`).
    fn start_with(config: &str, extra: &[&str]) -> Serve {
        let data = fresh_folder();
        let config = (!config.is_empty()).then(|| {
            let path = data.join("duplex.toml");
            std::fs::write(&path, config).unwrap();
            path
        });
        let (child, addr) =
            common::serve::spawn_serve_with("127.0.0.1:0", &data, config.as_deref(), extra)
                .unwrap_or_else(|e| panic!("{e}"));
        Serve {
            child,
            addr,
            data,
            config,
        }
    }

    fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops the server with `signal`: TERM (a clean shutdown) or KILL (a
    /// crash).
    fn stop(&mut self, signal: &str) {
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -s {signal} failed");
        let status = self.child.wait().unwrap();
        if signal == "TERM" {
            assert!(status.success(), "duplex serve after SIGTERM: {status}");
        }
    }

    /// After [`Serve::stop`]: the same data folder and address, a new process.
    fn start_again(&mut self) {
        let (child, addr) = spawn(&self.addr.to_string(), &self.data, self.config.as_deref());
        assert_eq!(addr, self.addr);
        self.child = child;
    }

    /// `GET path` over HTTP/1.1: the body.
    fn get(&self, path: &str) -> String {
        let mut tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of a metric in `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let body = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in {body}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn spawn(listen: &str, data: &Path, config: Option<&Path>) -> (Child, SocketAddr) {
    common::serve::spawn_serve(listen, data, config).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `node tests/docs/SCRIPT ARGS...` and returns its last line as JSON,
/// after checking it exited 0 with `"ok": true`.
fn node(script: &str, args: &[&str]) -> Value {
    let dir = repo().join("tests/docs");
    assert!(
        dir.join("node_modules/y-websocket").is_dir(),
        "tests/docs/node_modules is missing: run scripts/setup-docs.sh"
    );
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node (is it installed?)");
    let out = harness::read_all(child.stdout.take().unwrap());
    let err = harness::read_all(child.stderr.take().unwrap());
    let Some(status) = harness::wait_limited(&mut child, started, RUN_LIMIT, || {}) else {
        panic!("{script} {args:?} ran over {RUN_LIMIT:?}");
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    eprintln!(
        "{script} {args:?}: {status} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let report: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{out}\nstderr:\n{err}"));
    assert!(
        status.success() && report["ok"] == true,
        "{script} {args:?} failed ({status}): {report}\nstderr:\n{err}"
    );
    report
}

fn sync(scenario: &str, serve: &Serve, doc: &str, extra: &[&str]) -> Value {
    let base = serve.base();
    let mut args = vec![scenario, base.as_str(), doc];
    args.extend_from_slice(extra);
    node("sync.mjs", &args)
}

#[test]
fn two_providers_edit_concurrently_and_converge_and_a_late_joiner_gets_everything() {
    let serve = Serve::start("");
    let r = sync("converge", &serve, "notes", &[]);
    let a = r["a"].as_str().unwrap();
    assert_eq!(
        a.chars().count(),
        400,
        "100 inserts of 2 characters each, by each"
    );
    assert_eq!(a.matches('a').count(), 100);
    assert_eq!(a.matches('b').count(), 100);
    assert_eq!(r["b"], r["a"], "the two editors converged");
    assert_eq!(r["c"], r["a"], "the late joiner has the full text");
    assert_eq!(r["sv_c"], r["sv_a"], "and the same state vector");
    assert_eq!(
        r["awareness_a"],
        serde_json::json!(["ann", "cid"]),
        "bob's state left with him"
    );
    assert_eq!(r["awareness_c"], serde_json::json!(["ann", "cid"]));
    assert!(serve.metric("duplex_docs_updates_total") >= 200);
}

#[test]
fn editors_on_different_nodes_converge_and_a_late_joiner_on_a_third_gets_everything() {
    let redis = common::redis::Redis::start(&fresh_folder(), false);
    let url = redis.url();
    let config = "[feed]\nenabled = false\n[docs]\ncompact_every = 50\n";
    let nodes: Vec<Serve> = (0..3)
        .map(|_| Serve::start_with(config, &["--redis", &url]))
        .collect();
    let bases: Vec<String> = nodes.iter().map(Serve::base).collect();
    let r = node("sync.mjs", &["converge", &bases.join(","), "shared"]);
    let a = r["a"].as_str().unwrap();
    assert_eq!(a.chars().count(), 400, "every insert of both editors");
    assert_eq!(r["b"], r["a"], "ann on node 1 and bob on node 2 converged");
    assert_eq!(
        r["c"], r["a"],
        "the late joiner on node 3 has the full text"
    );
    assert_eq!(r["sv_c"], r["sv_a"], "and the same state vector");
    assert_eq!(
        r["awareness_a"],
        serde_json::json!(["ann", "cid"]),
        "awareness crossed nodes, and bob's state left with him"
    );
    assert_eq!(r["awareness_c"], serde_json::json!(["ann", "cid"]));
    // Every update is in Redis's log or folded into its snapshot, and the
    // log stays short: one snapshot and a tail (compact_every = 50).
    let cli = |args: &[&str]| redis.cli(args).trim().to_string();
    let stored: u64 = cli(&["GET", "duplex:ds:{shared}"]).parse().unwrap();
    assert!(stored >= 200, "{stored} updates stored");
    let tail: u64 = cli(&["XLEN", "duplex:dl:{shared}"]).parse().unwrap();
    let snapshot: u64 = cli(&["HGET", "duplex:dn:{shared}", "seq"]).parse().unwrap();
    assert!(snapshot >= 100, "compacted up to {snapshot}");
    assert!(
        tail <= stored - snapshot,
        "the log below the snapshot is trimmed: {tail}"
    );
    assert!(tail < 150, "{tail} updates left in the log");
    // A node that loads the document afresh reads it all from Redis.
    let late = Serve::start_with(config, &["--redis", &url]);
    let fresh = sync("read", &late, "shared", &[]);
    assert_eq!(fresh["text"], r["a"], "{fresh}");
}

#[test]
fn a_document_survives_restarts_byte_for_byte() {
    let mut serve = Serve::start("");
    let w = sync(
        "write",
        &serve,
        "keep",
        &["written before a clean restart. "],
    );
    let before = sync("read", &serve, "keep", &[]);
    assert_eq!(before["text"], w["text"]);
    assert_eq!(before["sv"], w["sv"]);

    serve.stop("TERM");
    serve.start_again();
    let after = sync("read", &serve, "keep", &[]);
    assert_eq!(after["text"], before["text"]);
    assert_eq!(after["sv"], before["sv"], "same state vector");
    assert_eq!(
        after["state"], before["state"],
        "same encoded state, byte for byte"
    );

    // A crash: what a client saw acknowledged by a second client is stored.
    let w2 = sync("write", &serve, "keep", &["and before a crash."]);
    serve.stop("KILL");
    serve.start_again();
    let crashed = sync("read", &serve, "keep", &[]);
    assert_eq!(
        crashed["text"],
        "written before a clean restart. and before a crash."
    );
    assert_eq!(crashed["sv"], w2["sv"]);
}

#[test]
fn edits_made_offline_arrive_when_the_provider_comes_back() {
    let serve = Serve::start("");
    let r = sync("offline", &serve, "trip", &[]);
    let text = r["a"].as_str().unwrap();
    assert!(text.contains("offline edit by ann"), "{text}");
    assert!(text.contains("online edit by bob"), "{text}");
    assert!(text.contains("shared."), "{text}");
    assert_eq!(r["b"], r["a"]);
    assert_eq!(r["c"], r["a"], "the server holds both");
}

#[test]
fn a_document_unloaded_after_its_last_client_loads_again_with_everything() {
    let serve = Serve::start("[docs]\nunload_after_ms = 50\n");
    sync("write", &serve, "idle", &["before the unload"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while serve.metric("duplex_docs_loaded") > 0 {
        assert!(Instant::now() < deadline, "the document was never unloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let loads = serve.metric("duplex_docs_loads_total");
    let r = sync("read", &serve, "idle", &[]);
    assert_eq!(r["text"], "before the unload");
    assert_eq!(
        serve.metric("duplex_docs_loads_total"),
        loads + 1,
        "loaded again"
    );
}

#[test]
fn read_only_tokens_receive_edits_but_cannot_make_them() {
    let serve = Serve::start("[auth]\nhs256_secret = \"docs-test-secret\"\n");
    let r = sync("readonly", &serve, "memo", &["docs-test-secret"]);
    assert_eq!(
        r["server"], "from the writer!",
        "the reader's edit was not stored"
    );
    assert_eq!(r["writer"], "from the writer!");
    assert_eq!(
        r["reader_connected"], true,
        "read-only connections stay open"
    );
    assert_eq!(r["no_access"], 403);
    assert_eq!(r["bad_signature"], 401);
    assert!(serve.metric("duplex_docs_refused_total") >= 1);
}

#[test]
fn a_required_token_and_a_foreign_origin_are_refused_before_the_upgrade() {
    let serve = Serve::start("[auth]\nhs256_secret = \"s\"\nrequired = true\n");
    let upgrade = |extra: &str| {
        let mut tcp = TcpStream::connect(serve.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            tcp,
            "GET /docs/memo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
            serve.addr
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(tcp).read_line(&mut line).unwrap();
        line
    };
    assert!(upgrade("").starts_with("HTTP/1.1 401"), "no token");
    assert!(
        upgrade("Origin: http://elsewhere.example\r\n").starts_with("HTTP/1.1 403"),
        "foreign origin"
    );
    let bad_name = serve.get("/docs/..%2Fx");
    assert!(bad_name.starts_with("HTTP/1.1 400"), "{bad_name}");
}

#[test]
fn malformed_updates_close_the_connection_with_1007_and_the_document_is_intact() {
    let serve = Serve::start("");
    let r = sync("malformed", &serve, "safe", &[]);
    assert_eq!(r["bad_update"]["code"], 1007);
    assert_eq!(r["bad_update"]["reason"], "malformed Yjs update");
    assert_eq!(r["bad_message"]["code"], 1007);
    assert_eq!(r["text_message"]["code"], 1003);
    assert_eq!(r["text"], "intact");
}

/// Runs tests/docs/editor.mjs (one browser at a time) with a screenshot in
/// `DUPLEX_SCREENSHOT_DIR` if set.
fn editor(serve: &Serve, doc: &str, scenario: &str, secret: Option<&str>) -> Value {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run scripts/setup-browser.sh"
    );
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let base = serve.base();
    let mut args = vec![base.as_str(), doc, "--scenario", scenario];
    if let Some(secret) = secret {
        args.extend(["--secret", secret]);
    }
    let shot = std::env::var("DUPLEX_SCREENSHOT_DIR").ok().map(|d| {
        PathBuf::from(d)
            .join(format!("editor-{scenario}.png"))
            .display()
            .to_string()
    });
    if let Some(shot) = &shot {
        args.extend(["--screenshot", shot.as_str()]);
    }
    let r = node("editor.mjs", &args);
    assert_eq!(
        r["errors"],
        serde_json::json!([]),
        "the pages reported errors"
    );
    r
}

#[test]
fn two_editor_pages_see_each_others_text_and_cursors() {
    let serve = Serve::start("");
    let r = editor(&serve, "pair", "pair", None);
    for (me, other) in [("ann", "Bob"), ("bob", "Ann")] {
        let page = &r[me];
        let text = page["text"].as_str().unwrap();
        assert!(
            text.contains("Hello from Ann.") && text.contains("Bob was here."),
            "{text}"
        );
        assert_eq!(page["shown"], page["text"], "the editor shows the document");
        assert_eq!(
            page["cursors"],
            serde_json::json!([other]),
            "{me} sees {other}'s cursor"
        );
        let people: Vec<&str> = page["people"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(people.len(), 2, "{people:?}");
        assert!(people.iter().any(|p| p.starts_with(other)), "{people:?}");
        assert_eq!(page["status"], "Connected");
    }
    assert_eq!(r["ann"]["text"], r["bob"]["text"]);
}

#[test]
fn an_editor_page_that_lost_its_connection_says_so_and_sends_its_edits_when_back() {
    let serve = Serve::start("");
    let r = editor(&serve, "trip", "offline", None);
    assert_eq!(
        r["status_offline"],
        "Offline: edits are kept and sent on reconnect"
    );
    assert_eq!(r["status_back"], "Connected");
    assert_eq!(r["ann_saw_bob_while_offline"], false);
    let text = r["ann"].as_str().unwrap();
    assert!(
        text.contains("Bob offline.") && text.contains("Ann online."),
        "{text}"
    );
    assert_eq!(r["bob"], r["ann"]);
}

#[test]
fn an_editor_page_with_a_read_only_token_shows_edits_and_makes_none() {
    let serve = Serve::start("[auth]\nhs256_secret = \"editor-secret\"\n");
    let r = editor(&serve, "memo", "readonly", Some("editor-secret"));
    assert_eq!(r["badge"], true, "the page says Read-only");
    assert_eq!(r["ann"], "Only Ann writes. Again.");
    assert_eq!(r["rita"], r["ann"]);
}

#[test]
fn connections_over_the_message_rate_or_size_are_closed() {
    let serve =
        Serve::start("[docs]\nmessages_per_second = 5\nburst = 10\nmax_message_size = 65536\n");
    let r = sync("limits", &serve, "busy", &[]);
    assert_eq!(r["flood"]["code"], 1008);
    let reason = r["flood"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("too many messages: over 5 per second"),
        "{reason}"
    );
    assert_eq!(r["too_big"]["code"], 1009);
    assert_eq!(r["awareness"]["code"], 1009);
    assert_eq!(
        r["awareness"]["reason"],
        "awareness states over 16384 bytes"
    );
}
