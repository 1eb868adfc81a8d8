//! `duplex serve` on several nodes over Redis (docs/CLUSTER.md): real
//! `redis-server` processes on free ports, two or three `duplex serve`
//! processes with `--redis`, clients over real WebSockets. Each test holds
//! one guarantee of the Redis engine: delivery across nodes once and in
//! order, atomic offsets that survive restarts, history and recovery from
//! any node, gap filling after a lost pub/sub connection, presence across
//! nodes with expiry after SIGKILL, Redis down and back, shards.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::serve::spawn_serve_with;
use duplex::{ClientStream, Message, WebSocket};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);
const API_KEY: &str = "cluster-test-key";

/// A test's folder (Redis's files, the nodes' data, the configuration),
/// removed on drop: declared first, it goes after the processes using it.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("duplex-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The configuration every node of a test shares (Redis comes with
/// `--redis`, or in `extra`).
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("duplex.toml");
    let text = format!(
        r#"
[server]
api_key = "{API_KEY}"

[feed]
enabled = false

[limits]
requests_per_second = 5000
burst = 5000

[engine]
presence_ttl_secs = 3
timeout_ms = 1000
{extra}

[namespaces.chat]
history_size = 1000

[namespaces.small]
history_size = 5
presence = false
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `duplex serve` process, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(dir: &Path, name: &str, config: &Path, redis: Option<&str>) -> Node {
        Node::start_on("127.0.0.1:0", dir, name, config, redis)
    }

    fn start_on(listen: &str, dir: &Path, name: &str, config: &Path, redis: Option<&str>) -> Node {
        let data = dir.join(name);
        let mut extra = Vec::new();
        if let Some(url) = redis {
            extra.extend(["--redis", url]);
        }
        let (child, addr) =
            spawn_serve_with(listen, &data, Some(config), &extra).expect("duplex serve");
        Node { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// SIGKILL: the node dies without a word.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An HTTP/1.1 request to the node: the status and the body.
    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.addr, method, path, body)
    }

    /// A counter or gauge of `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.http("GET", "/metrics", "");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A hub client: requests with ids, replies matched to them, pushes kept in
/// order.
struct Client {
    ws: WebSocket<ClientStream>,
    next_id: u64,
    pushes: VecDeque<Value>,
}

impl Client {
    async fn connect(url: &str) -> Client {
        let ws = timeout(WAIT, duplex::connect(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    async fn next_json(&mut self) -> Value {
        loop {
            let message = timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the connection is open")
                .expect("a message");
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    /// Sends `{"op":op,...fields}` and returns its reply; pushes that come
    /// first are kept.
    async fn request(&mut self, op: &str, fields: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = fields;
        request["id"] = id.into();
        request["op"] = op.into();
        self.ws
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        loop {
            let value = self.next_json().await;
            if value.get("push").is_some() {
                self.pushes.push_back(value);
            } else if value["id"] == id {
                return value;
            }
        }
    }

    async fn ok(&mut self, op: &str, fields: Value) -> Value {
        let reply = self.request(op, fields).await;
        assert_eq!(reply["ok"], true, "{op}: {reply}");
        reply["result"].clone()
    }

    /// The next push of kind `kind`, skipping others.
    async fn push(&mut self, kind: &str) -> Value {
        loop {
            let push = match self.pushes.pop_front() {
                Some(push) => push,
                None => self.next_json().await,
            };
            if push["push"] == kind {
                return push;
            }
        }
    }

    /// The offsets of the next `n` message pushes of `channel`.
    async fn offsets(&mut self, channel: &str, n: usize) -> Vec<u64> {
        let mut offsets = Vec::with_capacity(n);
        while offsets.len() < n {
            let push = self.push("message").await;
            if push["channel"] == channel {
                offsets.push(push["offset"].as_u64().unwrap());
            }
        }
        offsets
    }
}

/// An HTTP/1.1 request with the API key: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The offsets of a result's `publications`.
fn offsets_of(result: &Value) -> Vec<u64> {
    result["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

fn publish_body(channel: &str, data: Value) -> String {
    json!({"channel": channel, "data": data}).to_string()
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_through_any_node_reach_every_subscriber_once_in_offset_order() {
    let dir = temp_dir("fanout");
    let redis = Redis::start(&dir.join("redis"), false);
    let config = write_config(&dir, "");
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|name| Node::start(&dir, name, &config, Some(&redis.url())))
        .collect();

    let mut subscribers = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            let mut client = node.client().await;
            let result = client.ok("subscribe", json!({"channel": "chat:all"})).await;
            assert_eq!(result["offset"], 0);
            subscribers.push(client);
        }
    }
    // A publisher on every node at once, and the HTTP API on the second.
    let per_client = 20;
    let mut publishers = Vec::new();
    for node in &nodes {
        let url = node.url();
        publishers.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await;
            let mut offsets = Vec::new();
            for i in 0..per_client {
                let result = client
                    .ok("publish", json!({"channel": "chat:all", "data": {"i": i}}))
                    .await;
                offsets.push(result["offset"].as_u64().unwrap());
            }
            offsets
        }));
    }
    let api = nodes[1].addr;
    let api_publisher = tokio::task::spawn_blocking(move || {
        (0..10)
            .map(|i| {
                let body = publish_body("chat:all", json!({"api": i}));
                let (status, body) = http(api, "POST", "/api/publish", &body);
                assert_eq!(status, 200, "{body}");
                serde_json::from_str::<Value>(&body).unwrap()["offset"]
                    .as_u64()
                    .unwrap()
            })
            .collect::<Vec<u64>>()
    });
    let mut acknowledged = Vec::new();
    for publisher in publishers {
        acknowledged.extend(publisher.await.unwrap());
    }
    acknowledged.extend(api_publisher.await.unwrap());
    acknowledged.sort_unstable();
    let total = (3 * per_client + 10) as u64;
    assert_eq!(
        acknowledged,
        (1..=total).collect::<Vec<_>>(),
        "offsets 1, 2, 3, ... with no gap and no duplicate"
    );
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let offsets = subscriber.offsets("chat:all", total as usize).await;
        assert_eq!(
            offsets,
            (1..=total).collect::<Vec<_>>(),
            "subscriber {i} (node {})",
            i / 2
        );
    }
    // Nothing more: no publication came twice.
    let mut first = subscribers.remove(0);
    first.ok("ping", json!({})).await;
    assert!(
        first.pushes.iter().all(|p| p["push"] != "message"),
        "{:?}",
        first.pushes
    );
    assert_eq!(nodes[0].metric("duplex_deliveries_total"), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_go_on_across_restarts_of_nodes_and_of_a_redis_with_aof() {
    let dir = temp_dir("restart");
    let mut redis = Redis::start(&dir.join("redis"), true);
    let config = write_config(&dir, "");
    let mut a = Node::start(&dir, "a", &config, Some(&redis.url()));
    let mut client = a.client().await;
    for i in 1..=3u64 {
        let result = client
            .ok("publish", json!({"channel": "chat:r", "data": i}))
            .await;
        assert_eq!(result["offset"], i);
    }
    drop(client);
    a.kill();
    let b = Node::start(&dir, "b", &config, Some(&redis.url()));
    let mut client = b.client().await;
    let result = client
        .ok("publish", json!({"channel": "chat:r", "data": 4}))
        .await;
    assert_eq!(result["offset"], 4, "a new node goes on");

    // Redis killed and started again on its append-only file.
    redis.restart();
    let published = tokio::time::Instant::now();
    let offset = loop {
        let reply = client
            .request("publish", json!({"channel": "chat:r", "data": 5}))
            .await;
        if reply["ok"] == true {
            break reply["result"]["offset"].as_u64().unwrap();
        }
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        assert!(published.elapsed() < WAIT, "Redis is back: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(offset, 5, "never reused after Redis restarted");
    let history = client
        .ok("history", json!({"channel": "chat:r", "limit": 10}))
        .await;
    let offsets = offsets_of(&history);
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    assert_eq!(history["offset"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_what_was_published_while_it_was_away() {
    let dir = temp_dir("recover");
    let redis = Redis::start(&dir.join("redis"), false);
    let config = write_config(&dir, "");
    let a = Node::start(&dir, "a", &config, Some(&redis.url()));
    let b = Node::start(&dir, "b", &config, Some(&redis.url()));
    let mut publisher = a.client().await;

    let mut away = a.client().await;
    away.ok("subscribe", json!({"channel": "chat:r"})).await;
    away.ok("subscribe", json!({"channel": "small:r"})).await;
    publisher
        .ok("publish", json!({"channel": "chat:r", "data": "seen"}))
        .await;
    assert_eq!(away.offsets("chat:r", 1).await, [1]);
    drop(away);

    for i in 0..5 {
        publisher
            .ok("publish", json!({"channel": "chat:r", "data": i}))
            .await;
    }
    for i in 0..8 {
        publisher
            .ok("publish", json!({"channel": "small:r", "data": i}))
            .await;
    }
    let mut back = b.client().await;
    let result = back
        .ok(
            "subscribe",
            json!({"channel": "chat:r", "since": {"offset": 1}}),
        )
        .await;
    let recovered = offsets_of(&result);
    assert_eq!(
        recovered,
        [2, 3, 4, 5, 6],
        "exactly what it missed, in order"
    );
    assert_eq!(result["offset"], 6);
    publisher
        .ok("publish", json!({"channel": "chat:r", "data": "live"}))
        .await;
    assert_eq!(back.offsets("chat:r", 1).await, [7], "then the live stream");

    // history_size = 5 in `small`: 8 missed are no longer all there.
    let reply = back
        .request(
            "subscribe",
            json!({"channel": "small:r", "since": {"offset": 0}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "recovery_impossible", "{reply}");
    let history = back
        .ok("history", json!({"channel": "small:r", "limit": 100}))
        .await;
    assert_eq!(history["publications"].as_array().unwrap().len(), 5);
    assert_eq!(history["publications"][0]["offset"], 4, "trimmed to 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_pubsub_connection_is_killed_still_delivers_every_offset() {
    let dir = temp_dir("gap");
    let redis = Redis::start(&dir.join("redis"), false);
    let config = write_config(&dir, "");
    let a = Node::start(&dir, "a", &config, Some(&redis.url()));
    let b = Node::start(&dir, "b", &config, Some(&redis.url()));
    let mut subscriber = b.client().await;
    subscriber
        .ok("subscribe", json!({"channel": "chat:g"}))
        .await;

    let total = 300u64;
    let url = a.url();
    let publishing = tokio::spawn(async move {
        let mut publisher = Client::connect(&url).await;
        for i in 0..total {
            publisher
                .ok("publish", json!({"channel": "chat:g", "data": i}))
                .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut killed = 0;
    let started = Instant::now();
    while !publishing.is_finished() && killed < 5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reply = redis
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .unwrap();
        assert!(reply.starts_with(':'), "{reply}");
        killed += 1;
    }
    publishing.await.unwrap();
    assert!(
        killed >= 2,
        "killed while publishing ({:?})",
        started.elapsed()
    );
    let offsets = subscriber.offsets("chat:g", total as usize).await;
    assert_eq!(
        offsets,
        (1..=total).collect::<Vec<_>>(),
        "every offset, once, in order"
    );
    subscriber.ok("ping", json!({})).await;
    assert!(subscriber.pushes.iter().all(|p| p["push"] != "message"));
    assert!(b.metric("duplex_engine_reconnects_total") >= 1);
    assert!(
        b.metric("duplex_engine_gaps_filled_total") >= 1,
        "what was published while b was cut came from history"
    );
    let (_, metrics) = b.http("GET", "/metrics", "");
    assert!(
        metrics.contains("duplex_engine_info{kind=\"redis\",node=\""),
        "{metrics}"
    );
    assert!(metrics.contains("duplex_engine_latency_seconds_count "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_killed_node_leaves_within_the_ttl() {
    let dir = temp_dir("presence");
    let redis = Redis::start(&dir.join("redis"), false);
    let config = write_config(&dir, "");
    let a = Node::start(&dir, "a", &config, Some(&redis.url()));
    let mut b = Node::start(&dir, "b", &config, Some(&redis.url()));

    let mut alice = a.client().await;
    alice
        .ok("connect", json!({"info": {"name": "alice"}}))
        .await;
    alice.ok("subscribe", json!({"channel": "chat:p"})).await;
    let mut bob = b.client().await;
    bob.ok("connect", json!({"info": {"name": "bob"}})).await;
    bob.ok("subscribe", json!({"channel": "chat:p"})).await;

    let join = alice.push("join").await;
    assert_eq!(join["client"]["info"]["name"], "bob", "join crosses nodes");
    for client in [&mut alice, &mut bob] {
        let presence = client.ok("presence", json!({"channel": "chat:p"})).await;
        let mut names: Vec<&str> = presence["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["info"]["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["alice", "bob"],
            "every node lists every node's clients"
        );
    }

    b.kill();
    let killed = Instant::now();
    let leave = alice.push("leave").await;
    assert_eq!(leave["client"]["info"]["name"], "bob");
    // presence_ttl_secs = 3, refreshed every second.
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "leave after {:?}",
        killed.elapsed()
    );
    let presence = alice.ok("presence", json!({"channel": "chat:p"})).await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 1);

    // A clean leave goes out at once.
    let mut carol = a.client().await;
    carol.ok("subscribe", json!({"channel": "chat:p"})).await;
    alice.push("join").await;
    carol.ok("unsubscribe", json!({"channel": "chat:p"})).await;
    alice.push("leave").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_publish_is_unavailable_and_nodes_recover_by_themselves() {
    let dir = temp_dir("down");
    let mut redis = Redis::start(&dir.join("redis"), true);
    let config = write_config(&dir, "");
    let a = Node::start(&dir, "a", &config, Some(&redis.url()));
    let b = Node::start(&dir, "b", &config, Some(&redis.url()));
    let mut subscriber = b.client().await;
    subscriber
        .ok("subscribe", json!({"channel": "chat:d"}))
        .await;
    let mut publisher = a.client().await;
    publisher
        .ok("publish", json!({"channel": "chat:d", "data": 1}))
        .await;
    assert_eq!(subscriber.offsets("chat:d", 1).await, [1]);
    assert_eq!(a.http("GET", "/healthz", "").0, 200);

    redis.kill();
    let asked = Instant::now();
    let reply = publisher
        .request("publish", json!({"channel": "chat:d", "data": 2}))
        .await;
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered within the timeout: {:?}",
        asked.elapsed()
    );
    let (status, body) = a.http("GET", "/healthz", "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Redis redis://127.0.0.1:"), "{body}");
    let (status, body) = a.http("POST", "/api/publish", &publish_body("chat:d", json!(2)));
    assert_eq!(status, 503, "{body}");
    // Connections stay open.
    subscriber.ok("ping", json!({})).await;
    assert!(a.metric("duplex_engine_unavailable_total") >= 1);

    redis.restart();
    eventually(WAIT, "node b healthy again", || {
        b.http("GET", "/healthz", "").0 == 200
    });
    eventually(WAIT, "node a healthy again", || {
        a.http("GET", "/healthz", "").0 == 200
    });
    let result = publisher
        .ok("publish", json!({"channel": "chat:d", "data": 3}))
        .await;
    assert_eq!(result["offset"], 2);
    assert_eq!(
        subscriber.offsets("chat:d", 1).await,
        [2],
        "subscriptions are restored"
    );

    // A publication made straight into Redis while b's pub/sub is cut
    // reaches b's subscriber once b is back.
    let before = b.metric("duplex_engine_reconnects_total");
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let result = publisher
        .ok("publish", json!({"channel": "chat:d", "data": 4}))
        .await;
    assert_eq!(result["offset"], 3);
    assert_eq!(subscriber.offsets("chat:d", 1).await, [3]);
    eventually(WAIT, "b reconnected", || {
        b.metric("duplex_engine_reconnects_total") > before
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_channels_over_two_redis_servers_by_name() {
    let dir = temp_dir("shards");
    let first = Redis::start(&dir.join("redis-1"), false);
    let second = Redis::start(&dir.join("redis-2"), false);
    let config = write_config(
        &dir,
        &format!(
            "kind = \"redis\"\nurls = [\"{}\", \"{}\"]",
            first.url(),
            second.url()
        ),
    );
    let a = Node::start(&dir, "a", &config, None);
    let b = Node::start(&dir, "b", &config, None);
    let mut subscriber = b.client().await;
    let channels: Vec<String> = (0..20).map(|i| format!("chat:shard-{i}")).collect();
    for channel in &channels {
        subscriber
            .ok("subscribe", json!({"channel": channel}))
            .await;
    }
    let mut publisher = a.client().await;
    for channel in &channels {
        let result = publisher
            .ok("publish", json!({"channel": channel, "data": "x"}))
            .await;
        assert_eq!(result["offset"], 1);
    }
    let mut seen = HashMap::new();
    for _ in &channels {
        let push = subscriber.push("message").await;
        *seen
            .entry(push["channel"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 20, "every channel delivered across nodes");
    let keys = |redis: &Redis| -> Vec<String> {
        let mut keys: Vec<String> = redis
            .cli(&["--raw", "KEYS", "duplex:o:*"])
            .lines()
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    };
    let (on_first, on_second) = (keys(&first), keys(&second));
    assert!(
        !on_first.is_empty() && !on_second.is_empty(),
        "{on_first:?} {on_second:?}"
    );
    assert_eq!(on_first.len() + on_second.len(), 20);
    assert!(
        on_first.iter().all(|k| !on_second.contains(k)),
        "each channel on one shard"
    );
}

#[test]
fn a_bad_or_unreachable_redis_url_exits_2_naming_it_without_the_password() {
    let dir = temp_dir("bad-url");
    let run = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_duplex"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .args(args)
            .env_remove("DUPLEX_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = env {
            command.env("DUPLEX_REDIS_URL", url);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let port = common::redis::free_port();
    let unreachable = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let (code, err) = run(&["--redis", &unreachable], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");

    let (code, err) = run(&[], Some("http://127.0.0.1:1"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("redis://"), "{err}");
}

/// The process prefix of a client id (`PREFIX-N`): which node it is on.
fn node_of(client: &Value) -> String {
    let id = client["client"].as_str().unwrap();
    id.split('-').next().unwrap().to_string()
}

/// Kills its child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_haproxy_serve_every_client_and_survive_a_killed_node() {
    let dir = temp_dir("haproxy");
    let redis = Redis::start(&dir.join("redis"), false);
    let config = write_config(&dir, "");
    let ports: Vec<u16> = (0..4).map(|_| common::redis::free_port()).collect();
    let mut nodes: Vec<Node> = (1..4)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", ports[i]);
            Node::start_on(&listen, &dir, &format!("n{i}"), &config, Some(&redis.url()))
        })
        .collect();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cluster/haproxy.cfg");
    let haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&example)
        .env("LB", format!("127.0.0.1:{}", ports[0]))
        .env("NODE1", format!("127.0.0.1:{}", ports[1]))
        .env("NODE2", format!("127.0.0.1:{}", ports[2]))
        .env("NODE3", format!("127.0.0.1:{}", ports[3]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("haproxy (scripts/setup-redis.sh installs it)");
    let _haproxy = Killed(haproxy);
    let lb: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    eventually(WAIT, "HAProxy serves /healthz", || {
        std::net::TcpStream::connect(lb).is_ok() && http(lb, "GET", "/healthz", "").0 == 200
    });
    // Which node is which process.
    let mut prefixes = Vec::new();
    for node in &nodes {
        let mut direct = node.client().await;
        prefixes.push(node_of(&direct.ok("connect", json!({})).await));
    }
    let url = format!("ws://{lb}/ws");
    let mut clients = Vec::new();
    let mut on = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&url).await;
        on.push(node_of(&client.ok("connect", json!({})).await));
        client.ok("subscribe", json!({"channel": "chat:lb"})).await;
        clients.push(client);
    }
    let mut spread = on.clone();
    spread.sort();
    spread.dedup();
    assert_eq!(spread.len(), 3, "round robin over the three nodes: {on:?}");
    for i in 1..=3u64 {
        let result = clients[i as usize - 1]
            .ok("publish", json!({"channel": "chat:lb", "data": i}))
            .await;
        assert_eq!(result["offset"], i);
    }
    for client in &mut clients {
        assert_eq!(client.offsets("chat:lb", 3).await, [1, 2, 3]);
    }

    // The node of the first client dies; the client comes back through
    // HAProxy, on another node, and recovers what it missed.
    let victim = prefixes.iter().position(|p| *p == on[0]).unwrap();
    nodes[victim].kill();
    let lost = timeout(WAIT, clients[0].ws.next())
        .await
        .expect("the connection ends");
    assert!(!matches!(lost, Some(Ok(Message::Text(_)))), "{lost:?}");
    for i in 4..=5u64 {
        let result = clients[1]
            .ok("publish", json!({"channel": "chat:lb", "data": i}))
            .await;
        assert_eq!(result["offset"], i);
    }
    let mut back = Client::connect(&url).await;
    let moved = node_of(&back.ok("connect", json!({})).await);
    assert_ne!(moved, on[0], "not the dead node");
    let result = back
        .ok(
            "subscribe",
            json!({"channel": "chat:lb", "since": {"offset": 3}}),
        )
        .await;
    let recovered = offsets_of(&result);
    assert_eq!(recovered, [4, 5], "what it missed, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_makes_subscribers_recover_instead_of_missing_publications() {
    let dir = temp_dir("lost-data");
    let mut redis = Redis::start(&dir.join("redis"), false);
    let config = write_config(&dir, "");
    let a = Node::start(&dir, "a", &config, Some(&redis.url()));
    let mut subscriber = a.client().await;
    subscriber
        .ok("subscribe", json!({"channel": "chat:l"}))
        .await;
    let mut publisher = a.client().await;
    for i in 1..=2 {
        publisher
            .ok("publish", json!({"channel": "chat:l", "data": i}))
            .await;
    }
    assert_eq!(subscriber.offsets("chat:l", 2).await, [1, 2]);

    // No append-only file: Redis comes back empty, offsets start again at
    // 1, which the node would take for duplicates of what it delivered.
    redis.restart();
    let closed = loop {
        match timeout(WAIT, subscriber.ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = closed.expect("a close code");
    assert_eq!(frame.code, duplex::CloseCode::SERVICE_RESTART, "{frame:?}");
    assert!(frame.reason.contains("reconnect and recover"), "{frame:?}");

    let mut back = a.client().await;
    let reply = back
        .request(
            "subscribe",
            json!({"channel": "chat:l", "since": {"offset": 2}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "recovery_impossible", "{reply}");
    back.ok("subscribe", json!({"channel": "chat:l"})).await;
    let result = publisher
        .ok("publish", json!({"channel": "chat:l", "data": 3}))
        .await;
    assert_eq!(result["offset"], 1, "Redis's offsets, from the start");
    assert_eq!(
        back.offsets("chat:l", 1).await,
        [1],
        "delivered, not dropped"
    );
}
