//! A hub on a free loopback port with a real SQLite database in a temporary
//! folder, clients over real WebSockets, and HTTP requests over real TCP.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use duplex::{ClientStream, CloseInfo, Message, WebSocket};
use duplex_hub::clock::Clock;
use duplex_hub::{Config, Server};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long any one await of a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config without the feed (tests publish themselves).
pub fn quiet() -> Config {
    let mut config = Config::default();
    config.feed.enabled = false;
    config
}

pub struct TestHub {
    pub addr: SocketAddr,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestHub {
    pub async fn start(config: Config) -> TestHub {
        let temp = tempfile::tempdir().unwrap();
        let mut hub = TestHub::start_in(config, temp.path()).await;
        hub._temp = Some(temp);
        hub
    }

    /// A hub whose time of day is `clock` (a test's `ManualClock`).
    pub async fn start_with_clock(config: Config, clock: Clock) -> TestHub {
        let temp = tempfile::tempdir().unwrap();
        let mut hub = TestHub::open(config, temp.path(), clock).await;
        hub._temp = Some(temp);
        hub
    }

    pub async fn start_in(config: Config, dir: &Path) -> TestHub {
        TestHub::open(config, dir, Clock::system()).await
    }

    async fn open(config: Config, dir: &Path, clock: Clock) -> TestHub {
        let server = Server::open_with_clock(config, dir, clock).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        TestHub {
            addr,
            _temp: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the hub down and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(WAIT, task)
                .await
                .expect("the hub shuts down")
                .unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// The value of a metric in `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = http(self.addr, "GET", "/metrics", &[], "").await;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric {name} in {body}"))
            .parse()
            .unwrap()
    }
}

pub struct Client {
    pub ws: WebSocket<ClientStream>,
    next_id: u64,
    pushes: VecDeque<Value>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let ws = timeout(WAIT, duplex::connect(url))
            .await
            .expect("connect in time")
            .expect("connected");
        Client::from(ws)
    }

    pub fn from(ws: WebSocket<ClientStream>) -> Client {
        Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        timeout(WAIT, self.ws.send(Message::text(text.to_string())))
            .await
            .expect("send in time")
            .expect("sent");
    }

    /// The next message, as JSON; `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let message = timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")?;
            match message {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap());
                }
                Ok(_) => continue,
                Err(err) => {
                    eprintln!("client: {err}");
                    return None;
                }
            }
        }
    }

    /// Sends `request` with the next id and returns its reply, keeping the
    /// pushes that come before it.
    pub async fn request(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_text(&request.to_string()).await;
        self.reply(id).await
    }

    /// The reply with this id, keeping the pushes that come before it.
    pub async fn reply(&mut self, id: u64) -> Value {
        loop {
            let message = self.next().await.expect("a reply before the close");
            if message.get("push").is_some() {
                self.pushes.push_back(message);
            } else {
                assert_eq!(message["id"], json!(id), "replies come in order: {message}");
                return message;
            }
        }
    }

    /// `request`, asserting it succeeded; its result.
    pub async fn ok(&mut self, request: Value) -> Value {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{request} -> {reply}");
        reply["result"].clone()
    }

    /// `request`, asserting it failed with `code`; the error message.
    pub async fn fails(&mut self, request: Value, code: &str) -> String {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["ok"], json!(false), "{request} -> {reply}");
        assert_eq!(reply["error"]["code"], json!(code), "{request} -> {reply}");
        reply["error"]["message"].as_str().unwrap().to_string()
    }

    /// The next push.
    pub async fn push(&mut self) -> Value {
        if let Some(push) = self.pushes.pop_front() {
            return push;
        }
        let message = self.next().await.expect("a push before the close");
        assert!(message.get("push").is_some(), "expected a push: {message}");
        message
    }

    /// Reads until the server closes; its close code and reason.
    pub async fn closed(&mut self) -> CloseInfo {
        while self.next().await.is_some() {}
        self.ws.close_info().expect("closed")
    }
}

pub async fn subscribe(client: &mut Client, channel: &str) -> Value {
    client
        .ok(json!({"op": "subscribe", "channel": channel}))
        .await
}

pub async fn publish(client: &mut Client, channel: &str, data: Value) -> u64 {
    let result = client
        .ok(json!({"op": "publish", "channel": channel, "data": data}))
        .await;
    result["offset"].as_u64().unwrap()
}

pub fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

/// One HTTP/1.1 request over a new connection: status, head, body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let response = timeout(WAIT, exchange)
        .await
        .expect("an HTTP response in time");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}
