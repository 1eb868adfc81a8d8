//! A real browser across two `duplex serve` nodes that share Redis: Debian's
//! headless Chromium, driven by playwright-core (tests/browser/cluster.mjs),
//! uses the chat page as people would, alice's page from node A and bob's
//! from node B, each with the list of both nodes (`?nodes=`, which the page's
//! client, crates/duplex-hub/web/client.js, goes through on reconnection). Node A is killed
//! with SIGKILL while bob is sending: alice's page moves to node B by itself
//! and shows every message once and in order, what was sent while she was
//! away recovered from the offsets and history the nodes share.
//!
//! Each test starts its own `redis-server` (Debian's, installed by
//! scripts/setup-redis.sh) and its own nodes on free loopback ports, and
//! kills them at the end.
//!
//! Needs /usr/bin/chromium (Debian's `chromium`), node, and playwright-core in
//! tests/browser/node_modules/: `scripts/setup-browser.sh` installs them.
//! Without them these tests fail and say so; they never skip.
//!
//! With `DUPLEX_SCREENSHOT_DIR=/some/dir` the script also saves a screenshot
//! of alice's page there (cluster-failover.png).

use duplex_harness::browser as harness;

mod common;

use common::redis::{Redis, free_port};
use common::serve::spawn_serve_with;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;

use serde_json::Value;

/// One browser at a time: the machine has two cores.
static BROWSER: Mutex<()> = Mutex::new(());

/// A fresh folder for one test's Redis, nodes and config, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    /// `duplex-cluster-browser-NAME-PID` in the system's temporary folder,
    /// emptied if it was there.
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "duplex-cluster-browser-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The configuration both nodes share: no simulated feed, and each node
/// accepts the pages of both origins (the hub answers a foreign `Origin` with
/// 403, and alice's page, from node A, ends up on node B).
fn write_config(dir: &Path, ports: [u16; 2]) -> PathBuf {
    let path = dir.join("duplex.toml");
    let [a, b] = ports;
    let text = format!(
        r#"
[server]
allowed_origins = ["http://127.0.0.1:{a}", "http://127.0.0.1:{b}"]

[feed]
enabled = false
"#
    );
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// A `duplex serve` node with `--redis`, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// Starts `duplex serve --listen 127.0.0.1:PORT --data DIR/NAME --config
    /// CONFIG --redis URL`.
    fn start(dir: &Path, name: &str, port: u16, config: &Path, redis: &str) -> Node {
        let listen = format!("127.0.0.1:{port}");
        let (child, addr) =
            spawn_serve_with(&listen, &dir.join(name), Some(config), &["--redis", redis])
                .unwrap_or_else(|message| panic!("node {name}: {message}"));
        assert_eq!(addr.port(), port, "node {name} listens elsewhere");
        Node { child, addr }
    }

    /// The pages' origin, `http://ADDR/`.
    fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The hub's WebSocket URL, as the pages' `?nodes=` list has it.
    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL: the node dies without a word, no close frames.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `node tests/browser/<script> <args...>` (one browser at a time),
/// bounded by [`harness::RUN_LIMIT`], giving each line of its standard output
/// to `on_line` as it comes, and returns the JSON report it printed last,
/// after checking that it exited 0 and said `"ok": true`. With
/// `DUPLEX_SCREENSHOT_DIR` set, asks for a screenshot named `screenshot`
/// there. (serve_browser.rs's run_script, for scripts given more than one
/// origin.)
fn run_script(script: &str, args: &[&str], screenshot: &str, on_line: harness::OnLine) -> Value {
    let path = harness::script(script);
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new("node");
    command.arg(&path).args(args);
    if let Some(dir) = std::env::var_os("DUPLEX_SCREENSHOT_DIR") {
        command
            .arg("--screenshot")
            .arg(PathBuf::from(dir).join(screenshot));
    }
    let what = format!("{script} {args:?}");
    harness::run_report(command, &what, on_line)
}

/// The `(user, text)` of each message a page showed, top to bottom, after
/// checking that their offsets are exactly 1, 2, 3 ... (the room is new: no
/// message missing, none twice) and that no text became markup.
fn shown(report: &Value, page: &str) -> Vec<(String, String)> {
    let messages = report["messages"][page]
        .as_array()
        .unwrap_or_else(|| panic!("no messages for {page}: {report}"));
    let offsets: Vec<u64> = messages
        .iter()
        .map(|m| m["offset"].as_u64().expect("an offset"))
        .collect();
    let expected: Vec<u64> = (1..=messages.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "{page}'s page does not show every offset once, in order"
    );
    for m in messages {
        assert_eq!(m["markup"], 0, "{page} shows data as markup: {m}");
    }
    messages
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap_or_default().to_string(),
                m["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The `(state, url)` of each `state` event of `page`'s client.
fn states(report: &Value, page: &str) -> Vec<(String, String)> {
    report["states"][page]
        .as_array()
        .unwrap_or_else(|| panic!("no states for {page}: {report}"))
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap_or_default().to_string(),
                s["url"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_page_on_a_killed_node_moves_to_the_other_and_sees_every_message_once_in_order() {
    let dir = TempDir::new("failover");
    let redis = Redis::start(&dir.0.join("redis"), false);
    let pa = free_port();
    let pb = std::iter::repeat_with(free_port)
        .find(|&p| p != pa)
        .unwrap();
    let config = write_config(&dir.0, [pa, pb]);
    let mut a = Node::start(&dir.0, "a", pa, &config, &redis.url());
    let b = Node::start(&dir.0, "b", pb, &config, &redis.url());
    let (ws_a, ws_b) = (a.ws_url(), b.ws_url());

    let mut killed = 0;
    let report = run_script(
        "cluster.mjs",
        &[&a.base(), &b.base()],
        "cluster-failover.png",
        &mut |line| {
            let asked: Value = serde_json::from_str(line).ok()?;
            if asked["ready"] != "kill node A" {
                return None;
            }
            killed += 1;
            a.kill();
            assert!(
                TcpStream::connect(a.addr).is_err(),
                "node A still accepts connections after SIGKILL"
            );
            Some("killed\n".into())
        },
    );
    assert_eq!(killed, 1, "the script asked once for node A to be killed");
    assert_eq!(report["nodes"]["a"], ws_a.as_str());
    assert_eq!(report["nodes"]["b"], ws_b.as_str());

    // Each page started on the first node of its list.
    assert_eq!(report["urls"]["before"]["alice"], ws_a.as_str());
    assert_eq!(report["urls"]["before"]["bob"], ws_b.as_str());

    // Every message sent, by both, shown once each and in the order sent (one
    // sender at a time: the order of the offsets) on both pages.
    let sent: Vec<(String, String)> = report["sent"]
        .as_array()
        .expect("sent")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut texts: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len(), sent.len(), "each text sent once: {sent:?}");
    for text in ["a-1", "b-1", "a-2", "b-2", "a-3", "a-4"] {
        assert!(
            sent.iter().any(|(_, t)| t == text),
            "{text} was not sent: {sent:?}"
        );
    }
    let bob_shows = shown(&report, "bob");
    assert_eq!(bob_shows, sent, "bob's page");
    assert_eq!(
        shown(&report, "alice"),
        bob_shows,
        "alice's page against bob's"
    );

    // alice's client: lost node A, went to node B (the next in her list) at
    // the first attempt, and stayed there; bob's never changed.
    assert_eq!(
        states(&report, "alice"),
        [
            ("closed".to_string(), ws_b.clone()),
            ("connecting".to_string(), ws_b.clone()),
            ("open".to_string(), ws_b.clone()),
        ],
        "alice's states after the first exchange: {}",
        report["states"]["alice"]
    );
    assert_eq!(
        states(&report, "bob"),
        [],
        "bob's states: {}",
        report["states"]["bob"]
    );
    assert_eq!(report["urls"]["after"]["alice"], ws_b.as_str());
    assert_eq!(report["urls"]["after"]["bob"], ws_b.as_str());

    // Some of bob's messages were sent while alice was away, and reached her
    // only through recovery, each once; the rest came live, each once.
    let away: Vec<&Value> = report["bobSends"]
        .as_array()
        .expect("bobSends")
        .iter()
        .filter(|s| s["alice"] != "open")
        .collect();
    assert!(
        !away.is_empty(),
        "no message of bob's was sent while alice was away: {}",
        report["bobSends"]
    );
    let log = report["log"]["alice"].as_array().expect("alice's log");
    let delivered: Vec<(u64, bool)> = log
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["offset"].as_u64().expect("an offset"),
                e["recovered"] == true,
            )
        })
        .collect();
    let first = delivered
        .first()
        .expect("messages after the first exchange")
        .0;
    let offsets: Vec<u64> = delivered.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (first..first + offsets.len() as u64).collect::<Vec<_>>(),
        "alice's client delivered each offset once, in order"
    );
    assert_eq!(
        first + offsets.len() as u64 - 1,
        sent.len() as u64,
        "up to the last message sent"
    );
    let recovered = delivered.iter().filter(|(_, r)| *r).count();
    // A message bob saw just before node A died may have reached alice live
    // although her state read "closed" a moment later; every other message
    // sent while she was away came through recovery.
    let before_close: Vec<&Value> = log
        .iter()
        .take_while(|e| !(e["type"] == "state" && e["state"] == "closed"))
        .filter(|e| e["type"] == "message")
        .map(|e| &e["text"])
        .collect();
    let recovered_texts: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "message" && e["recovered"] == true)
        .map(|e| &e["text"])
        .collect();
    let missed: Vec<&Value> = away
        .iter()
        .map(|s| &s["text"])
        .filter(|text| !before_close.contains(text))
        .collect();
    assert!(!missed.is_empty(), "nothing was missed: {log:?}");
    assert!(
        missed.iter().all(|text| recovered_texts.contains(text)),
        "missed {missed:?}, recovered {recovered_texts:?}"
    );
    let resumed: Vec<&Value> = log.iter().filter(|e| e["type"] == "subscribed").collect();
    assert_eq!(resumed.len(), 1, "one resubscription: {resumed:?}");
    assert_eq!(resumed[0]["resumed"], true, "{resumed:?}");
    assert_eq!(resumed[0]["recovered"], recovered, "{resumed:?}");
    assert!(
        !log.iter().any(|e| e["type"] == "recovery_impossible"),
        "{log:?}"
    );

    // The clients' counters: no duplicate was even received.
    let stats = &report["stats"];
    assert_eq!(stats["alice"]["duplicates"], 0, "{stats}");
    assert_eq!(stats["alice"]["connections"], 2, "{stats}");
    assert_eq!(stats["alice"]["recovered"], recovered, "{stats}");
    assert_eq!(stats["bob"]["duplicates"], 0, "{stats}");
    assert_eq!(stats["bob"]["connections"], 1, "{stats}");
    // Both delivered every message: alice's first connection and her second.
    assert_eq!(stats["alice"]["delivered"], sent.len(), "{stats}");
    assert_eq!(stats["bob"]["delivered"], sent.len(), "{stats}");

    // Presence across the nodes, after the failover too.
    for page in ["alice", "bob"] {
        let people: Vec<&str> = report["people"][page]
            .as_array()
            .unwrap_or_else(|| panic!("people of {page}: {report}"))
            .iter()
            .map(|n| n.as_str().unwrap_or_default())
            .collect();
        assert_eq!(people, ["alice", "bob"], "{page}'s list of people");
    }
    assert_eq!(report["status"], "Connected");
    assert_eq!(
        report["errors"],
        Value::Array(vec![]),
        "Chromium reported errors"
    );
}
