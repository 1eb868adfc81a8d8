//! `duplex serve` behind Debian's nginx and HAProxy, TLS at the proxy, with
//! the configurations of docs/deploy/ (ports, certificate paths and
//! timeouts filled in): the chat and its page work across each proxy; the
//! hub's pings keep an idle WebSocket open past the proxy's idle timeout,
//! which does cut it with pings off; and the client's address reaches the
//! hub's log through `Forwarded` / `X-Forwarded-For` only from a trusted
//! proxy (IPv4, and IPv6 from `::1`); and HAProxy carries a WebSocket over
//! HTTP/2 to the hub.
//!
//! Everything runs on loopback, with distinct addresses (Linux routes all
//! of 127.0.0.0/8): clients connect from 127.0.0.2, the proxies connect to
//! the hub from 127.0.0.3.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex::tls::rustls;
use duplex::{ClientBuilder, ClientStream, Message, Role, WebSocket, WebSocketConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use common::redis::free_port;

/// How long any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);
/// The proxies' idle timeout in these tests (the files say 60 s).
const IDLE: Duration = Duration::from_secs(3);
/// Where clients connect from.
const CLIENT_IP: &str = "127.0.0.2";
/// Where the proxies connect to the hub from.
const PROXY_IP: &str = "127.0.0.3";
/// The address a client claims in its forged headers.
const FORGED: &str = "203.0.113.7";

/// A folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("duplex-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A proxy process stopped on drop: SIGTERM first, so that nginx's master
/// stops its workers (killed outright, it would leave them running), then
/// SIGKILL if it is still there after five seconds.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `duplex serve` on a free port, its log (standard error) kept.
struct Hub {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _child: Killed,
}

impl Hub {
    /// Starts a hub with `[server]` `trusted_proxies` and
    /// `ping_interval_secs` as given, the feed off.
    fn start(dir: &Path, trusted: &[&str], ping_interval_secs: u64) -> Hub {
        let config = dir.join("duplex.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ntrusted_proxies = {}\nping_interval_secs = {ping_interval_secs}\n\
                 ping_timeout_secs = 2\n[feed]\nenabled = false\n",
                json!(trusted)
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "duplex_hub=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start duplex serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("duplex serve: {line}");
                lines.lock().unwrap().push(strip_ansi(&line));
            }
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let child = Killed(child);
        let addr = common::serve::listen_addr(&first)
            .unwrap_or_else(|| panic!("duplex serve's first line: {first:?}"));
        Hub {
            addr,
            log,
            _child: child,
        }
    }

    /// The fields of the hub's `connection open` event for client `id`
    /// (waiting for it to be logged).
    async fn opened(&self, id: &str) -> Vec<(String, String)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|line| {
                let fields = fields(line.split_once("connection open")?.1);
                fields
                    .iter()
                    .any(|(k, v)| k == "client" && v == id)
                    .then_some(fields)
            });
            if let Some(fields) = found {
                return fields;
            }
            assert!(
                Instant::now() < deadline,
                "the hub logged no `connection open` for client {id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `key=value` pairs of a log line.
fn fields(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The line without terminal colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A certificate for `localhost`: the files the proxies read, and the DER
/// clients trust.
struct Cert {
    chain: PathBuf,
    key: PathBuf,
    /// Chain and key in one file, as HAProxy wants them.
    combined: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl Cert {
    fn new(dir: &Path) -> Cert {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (chain, key, combined) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("combined.pem"),
        );
        let key_pem = cert.signing_key.serialize_pem();
        std::fs::write(&chain, cert.cert.pem()).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        std::fs::write(&combined, format!("{}{key_pem}", cert.cert.pem())).unwrap();
        Cert {
            chain,
            key,
            combined,
            der: cert.cert.der().clone(),
        }
    }

    /// A client configuration trusting this certificate only, speaking
    /// HTTP/1.1.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(duplex::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// The file of docs/deploy/ this proxy runs.
    fn file(self) -> PathBuf {
        let name = match self {
            Kind::Nginx => "nginx.conf",
            Kind::Haproxy => "haproxy.cfg",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/deploy")
            .join(name)
    }

    /// The binary: on PATH, or in /usr/sbin (where Debian puts both, and
    /// which a user's PATH may lack).
    fn binary(self) -> PathBuf {
        let name = self.name();
        let on_path = std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
            .unwrap_or_default();
        on_path
            .or_else(|| {
                let sbin = Path::new("/usr/sbin").join(name);
                sbin.is_file().then_some(sbin)
            })
            .unwrap_or_else(|| {
                panic!("{name} is not installed (neither on PATH nor in /usr/sbin): run scripts/setup-proxies.sh")
            })
    }
}

/// `text` with `from` replaced by `to`; a `from` the file no longer has
/// fails the test, so the file and the test cannot drift apart.
fn fill(text: String, file: &Path, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{} no longer has {from:?}: update crates/duplex-cli/tests/deploy.rs with it",
        file.display()
    );
    text.replace(from, to)
}

/// A proxy in front of `hub`, listening with TLS on 127.0.0.1 and
/// connecting to the hub from [`PROXY_IP`], with idle timeouts of [`IDLE`].
struct Proxy {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    _child: Stopped,
}

impl Proxy {
    /// Starts the proxy; with `ipv6`, it also listens on `[::1]`.
    fn start(kind: Kind, dir: &Path, hub: SocketAddr, cert: &Cert, ipv6: bool) -> Proxy {
        let file = kind.file();
        let mut text = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
        let port = free_port();
        let idle = format!("{}s", IDLE.as_secs());
        let dir = dir.join(kind.name());
        std::fs::create_dir_all(&dir).unwrap();
        let mut command;
        match kind {
            Kind::Nginx => {
                for (from, to) in [
                    ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                    (
                        "listen [::]:443 ssl;",
                        if ipv6 {
                            format!("listen [::1]:{port} ssl;")
                        } else {
                            String::new()
                        },
                    ),
                    ("server 127.0.0.1:8080;", format!("server {hub};")),
                    (
                        "ssl_certificate /etc/ssl/duplex/fullchain.pem;",
                        format!("ssl_certificate {};", cert.chain.display()),
                    ),
                    (
                        "ssl_certificate_key /etc/ssl/duplex/privkey.pem;",
                        format!("ssl_certificate_key {};", cert.key.display()),
                    ),
                    (
                        "proxy_read_timeout 60s;",
                        format!("proxy_read_timeout {idle};"),
                    ),
                    (
                        "proxy_send_timeout 60s;",
                        format!("proxy_send_timeout {idle};"),
                    ),
                    (
                        "proxy_pass http://duplex;",
                        format!("proxy_pass http://duplex;\n        proxy_bind {PROXY_IP};"),
                    ),
                ] {
                    text = fill(text, &file, from, &to);
                }
                let site = dir.join("duplex.conf");
                std::fs::write(&site, text).unwrap();
                // What Debian's /etc/nginx/nginx.conf gives around conf.d/,
                // with every path in the test's folder.
                let d = dir.display();
                let main = format!(
                    "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                     error_log {d}/error.log info;\nevents {{ worker_connections 512; }}\n\
                     http {{\n    access_log {d}/access.log;\n\
                     client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n\
                     fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
                     scgi_temp_path {d}/scgi;\n    include {};\n}}\n",
                    site.display()
                );
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, main).unwrap();
                command = Command::new(kind.binary());
                command
                    .arg("-p")
                    .arg(&dir)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .arg("-c")
                    .arg(&conf);
            }
            Kind::Haproxy => {
                for (from, to) in [
                    (
                        "bind :443 ssl crt /etc/haproxy/certs/duplex.pem",
                        format!(
                            "bind 127.0.0.1:{port}{} ssl crt {}",
                            if ipv6 {
                                format!(",[::1]:{port}")
                            } else {
                                String::new()
                            },
                            cert.combined.display()
                        ),
                    ),
                    (
                        "server hub1 127.0.0.1:8080",
                        format!("server hub1 {hub} source {PROXY_IP}"),
                    ),
                    ("timeout client 60s", format!("timeout client {idle}")),
                    ("timeout server 60s", format!("timeout server {idle}")),
                    ("timeout tunnel 60s", format!("timeout tunnel {idle}")),
                ] {
                    text = fill(text, &file, from, &to);
                }
                let conf = dir.join("haproxy.cfg");
                std::fs::write(&conf, text).unwrap();
                command = Command::new(kind.binary());
                command.arg("-db").arg("-f").arg(&conf);
            }
        }
        let mut child = Stopped(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|err| panic!("starting {}: {err}", kind.name())),
        );
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!(
                    "{} exited with {status} before listening on port {port}{}",
                    kind.name(),
                    error_log(&dir)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on port {port}{}",
                kind.name(),
                error_log(&dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Proxy {
            kind,
            port,
            dir,
            _child: child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.port)
    }

    /// What went wrong, from nginx's error log (HAProxy writes to the
    /// test's standard error).
    fn log(&self) -> String {
        error_log(&self.dir)
    }
}

fn error_log(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("error.log")) {
        Ok(text) => format!("; its error log:\n{text}"),
        Err(_) => String::new(),
    }
}

/// A hub client: requests with ids, pushes kept until asked for.
struct Client<S> {
    ws: WebSocket<S>,
    next_id: u64,
    pushes: VecDeque<Value>,
    what: String,
}

impl<S> Client<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(ws: WebSocket<S>, what: impl Into<String>) -> Self {
        Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            what: what.into(),
        }
    }

    async fn next_json(&mut self) -> Value {
        loop {
            let message = timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: nothing received in {WAIT:?}", self.what))
                .unwrap_or_else(|| panic!("{}: the connection ended", self.what))
                .unwrap_or_else(|err| panic!("{}: {err}", self.what));
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    /// Sends `{"op": op, ...params}` and returns the `result` of its reply.
    async fn ok(&mut self, op: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = params;
        request["id"] = json!(id);
        request["op"] = json!(op);
        self.ws
            .send(Message::text(request.to_string()))
            .await
            .unwrap_or_else(|err| panic!("{}: sending {op}: {err}", self.what));
        loop {
            let value = self.next_json().await;
            if value["id"] == json!(id) {
                assert_eq!(value["ok"], true, "{}: {op}: {value}", self.what);
                return value["result"].clone();
            }
            self.pushes.push_back(value);
        }
    }

    /// The next `message` push.
    async fn message(&mut self) -> Value {
        loop {
            let push = match self.pushes.pop_front() {
                Some(push) => push,
                None => self.next_json().await,
            };
            if push["push"] == "message" {
                return push;
            }
        }
    }

    /// Reads for `idle`, answering the hub's pings (the library answers
    /// them as it reads); fails on anything but pings. Returns how many
    /// came.
    async fn stay_idle(&mut self, idle: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + idle;
        let mut pings = 0;
        while let Ok(got) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match got {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("{}: expected only pings, got {other:?}", self.what),
            }
        }
        pings
    }
}

/// A client of the hub's chat through `proxy`.
async fn chat_client(proxy: &Proxy, cert: &Cert, what: &str) -> Client<ClientStream> {
    let ws = ClientBuilder::new(proxy.url("/ws"))
        .tls_root(cert.der.clone())
        .connect()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "{what}: connecting through {} to {}: {err}{}",
                proxy.kind.name(),
                proxy.url("/ws"),
                proxy.log()
            )
        });
    Client::new(ws, format!("{what} (through {})", proxy.kind.name()))
}

/// A TCP connection from [`CLIENT_IP`].
async fn tcp_from_client_ip(to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(CLIENT_IP.parse().unwrap(), 0))
        .unwrap_or_else(|err| panic!("binding {CLIENT_IP}: {err}"));
    let tcp = timeout(WAIT, socket.connect(to))
        .await
        .unwrap_or_else(|_| panic!("connecting to {to} from {CLIENT_IP}: timed out"))
        .unwrap_or_else(|err| panic!("connecting to {to} from {CLIENT_IP}: {err}"));
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// TLS to the proxy over a connection from [`CLIENT_IP`].
async fn tls_from_client_ip(proxy: &Proxy, cert: &Cert) -> TlsStream<TcpStream> {
    let tcp = tcp_from_client_ip(SocketAddr::from(([127, 0, 0, 1], proxy.port))).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(cert.client_config())
        .connect(name, tcp)
        .await
        .unwrap_or_else(|err| panic!("TLS with {}: {err}", proxy.kind.name()))
}

/// Opens `url` over `stream` with forged `X-Forwarded-For` and `Forwarded`
/// headers naming [`FORGED`], says `connect`, and returns the client id
/// the hub gave.
async fn forged_connect<S>(url: &str, stream: S, what: &str) -> (String, Client<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = ClientBuilder::new(url)
        .header("X-Forwarded-For", FORGED)
        .unwrap()
        .header("Forwarded", format!("for={FORGED}"))
        .unwrap()
        .connect_on(stream)
        .await
        .unwrap_or_else(|err| panic!("{what}: opening {url}: {err}"));
    let mut client = Client::new(ws, what);
    let result = client.ok("connect", json!({})).await;
    let id = result["client"].as_str().expect("a client id").to_string();
    (id, client)
}

/// The client's address and the proxy's as the hub logged them for `id`.
async fn logged(hub: &Hub, id: &str) -> (IpAddr, Option<IpAddr>) {
    let fields = hub.opened(id).await;
    let client = field(&fields, "client_addr")
        .unwrap_or_else(|| panic!("no client_addr in {fields:?}"))
        .parse()
        .unwrap();
    let proxy = field(&fields, "proxy_addr").map(|p| p.parse().unwrap());
    (client, proxy)
}

/// `GET path` over TLS through the proxy: the status line and the body.
async fn https_get(proxy: &Proxy, cert: &Cert, path: &str) -> (String, String) {
    let mut tls = tls_from_client_ip(proxy, cert).await;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        proxy.port
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, tls.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("GET {path} through {}: timed out", proxy.kind.name()))
        .unwrap_or_else(|err| panic!("GET {path} through {}: {err}", proxy.kind.name()));
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

async fn chat_and_pages(kind: Kind) {
    let dir = TempDir::new(&format!("{}-chat", kind.name()));
    let cert = Cert::new(&dir.0);
    let hub = Hub::start(&dir.0, &[PROXY_IP], 30);
    let proxy = Proxy::start(kind, &dir.0, hub.addr, &cert, false);

    let mut alice = chat_client(&proxy, &cert, "alice").await;
    alice
        .ok("subscribe", json!({"channel": "chat:deploy"}))
        .await;
    // The page's own origin, as a browser on /chat sends it: the hub's
    // same-origin check sees the Host the proxy passed on.
    let ws = ClientBuilder::new(proxy.url("/ws"))
        .tls_root(cert.der.clone())
        .header("Origin", format!("https://localhost:{}", proxy.port))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|err| panic!("bob with the page's Origin through {}: {err}", kind.name()));
    let mut bob = Client::new(ws, "bob");
    let published = bob
        .ok(
            "publish",
            json!({"channel": "chat:deploy", "data": {"text": "across the proxy"}}),
        )
        .await;
    assert_eq!(published["offset"], 1);
    let push = alice.message().await;
    assert_eq!(push["channel"], "chat:deploy", "{push}");
    assert_eq!(push["data"]["text"], "across the proxy", "{push}");

    let (status, body) = https_get(&proxy, &cert, "/chat").await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "GET /chat through {}: {status}",
        kind.name()
    );
    assert!(
        body.contains("<html") || body.contains("<!doctype html"),
        "{body:.200}"
    );
}

async fn keepalive(kind: Kind) {
    // Pings every second: a WebSocket quiet for three idle timeouts is
    // still open, and still delivers.
    let dir = TempDir::new(&format!("{}-keepalive", kind.name()));
    let cert = Cert::new(&dir.0);
    let hub = Hub::start(&dir.0, &[PROXY_IP], 1);
    let proxy = Proxy::start(kind, &dir.0, hub.addr, &cert, false);
    let mut idle = chat_client(&proxy, &cert, "the idle client").await;
    idle.ok("subscribe", json!({"channel": "chat:quiet"})).await;
    let pings = idle.stay_idle(IDLE * 3).await;
    assert!(pings >= 3, "{pings} pings in {:?}", IDLE * 3);
    let mut other = chat_client(&proxy, &cert, "the publisher").await;
    other
        .ok(
            "publish",
            json!({"channel": "chat:quiet", "data": "still there?"}),
        )
        .await;
    assert_eq!(idle.message().await["data"], "still there?");
    drop((idle, other, proxy, hub));

    // Pings off: the proxy cuts the same quiet WebSocket after its idle
    // timeout, not before.
    let dir = TempDir::new(&format!("{}-no-pings", kind.name()));
    let hub = Hub::start(&dir.0, &[PROXY_IP], 0);
    let proxy = Proxy::start(kind, &dir.0, hub.addr, &cert, false);
    let mut idle = chat_client(&proxy, &cert, "the idle client without pings").await;
    idle.ok("subscribe", json!({"channel": "chat:quiet"})).await;
    let start = Instant::now();
    // The end of the connection: no message, an error, or a close frame.
    let end = timeout(IDLE * 3, idle.ws.next()).await;
    if let Ok(Some(Ok(message))) = &end {
        assert!(
            matches!(message, Message::Close(_)),
            "the hub sent {message:?} with pings off"
        );
    }
    let elapsed = start.elapsed();
    assert!(
        end.is_ok(),
        "{} kept a WebSocket without pings open for {elapsed:?}, over its idle timeout of {IDLE:?}",
        kind.name()
    );
    assert!(
        elapsed >= IDLE - Duration::from_millis(500),
        "{} cut the WebSocket after {elapsed:?}, before its idle timeout of {IDLE:?}",
        kind.name()
    );
}

async fn client_address(kind: Kind) {
    let dir = TempDir::new(&format!("{}-addr", kind.name()));
    let cert = Cert::new(&dir.0);
    let client_ip: IpAddr = CLIENT_IP.parse().unwrap();
    let proxy_ip: IpAddr = PROXY_IP.parse().unwrap();

    // The proxy is trusted: the hub takes the address the proxy appended
    // (the client's), not the one the client forged, nor the proxy's own.
    let hub = Hub::start(&dir.0, &[PROXY_IP], 30);
    let proxy = Proxy::start(kind, &dir.0, hub.addr, &cert, false);
    let tls = tls_from_client_ip(&proxy, &cert).await;
    let what = format!("a forging client through a trusted {}", kind.name());
    let (id, _client) = forged_connect(&proxy.url("/ws"), tls, &what).await;
    assert_eq!(
        logged(&hub, &id).await,
        (client_ip, Some(proxy_ip)),
        "{what}"
    );
    drop((_client, proxy, hub));

    // The same proxy, not trusted: its headers are ignored, and the client
    // is the proxy.
    let dir = TempDir::new(&format!("{}-addr-untrusted", kind.name()));
    let hub = Hub::start(&dir.0, &[], 30);
    let proxy = Proxy::start(kind, &dir.0, hub.addr, &cert, false);
    let tls = tls_from_client_ip(&proxy, &cert).await;
    let what = format!("a forging client through an untrusted {}", kind.name());
    let (id, _client) = forged_connect(&proxy.url("/ws"), tls, &what).await;
    assert_eq!(logged(&hub, &id).await, (proxy_ip, None), "{what}");
}

/// A client on IPv6 loopback: nginx writes it into `Forwarded` quoted and
/// in brackets, HAProxy into `X-Forwarded-For` bare; the hub reads both.
async fn ipv6_client_address(kind: Kind) {
    assert!(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "this machine has no IPv6 loopback (::1), which this test needs"
    );
    let dir = TempDir::new(&format!("{}-ipv6", kind.name()));
    let cert = Cert::new(&dir.0);
    let hub = Hub::start(&dir.0, &[PROXY_IP], 30);
    let proxy = Proxy::start(kind, &dir.0, hub.addr, &cert, true);
    let to = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, proxy.port));
    let tcp = timeout(WAIT, TcpStream::connect(to))
        .await
        .expect("connecting to [::1] in time")
        .unwrap_or_else(|err| panic!("connecting to {to}: {err}"));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(cert.client_config())
        .connect(name, tcp)
        .await
        .unwrap_or_else(|err| panic!("TLS with {} over IPv6: {err}", kind.name()));
    let what = format!("a client on ::1 through {}", kind.name());
    let (id, _client) = forged_connect(&proxy.url("/ws"), tls, &what).await;
    assert_eq!(
        logged(&hub, &id).await,
        ("::1".parse().unwrap(), Some(PROXY_IP.parse().unwrap())),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_an_ipv6_client_address() {
    ipv6_client_address(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_passes_an_ipv6_client_address() {
    ipv6_client_address(Kind::Haproxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_carries_the_chat_and_its_page() {
    chat_and_pages(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_carries_the_chat_and_its_page() {
    chat_and_pages(Kind::Haproxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_a_pinged_websocket_open_and_cuts_one_without_pings() {
    keepalive(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_keeps_a_pinged_websocket_open_and_cuts_one_without_pings() {
    keepalive(Kind::Haproxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_gives_the_hub_the_client_address_only_when_trusted() {
    client_address(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_gives_the_hub_the_client_address_only_when_trusted() {
    client_address(Kind::Haproxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_client_cannot_forge_its_address() {
    let dir = TempDir::new("direct");
    // 127.0.0.3 is trusted, but the client connects from 127.0.0.2.
    let hub = Hub::start(&dir.0, &[PROXY_IP], 30);
    let tcp = tcp_from_client_ip(hub.addr).await;
    let url = format!("ws://{}/ws", hub.addr);
    let (id, _client) = forged_connect(&url, tcp, "a forging direct client").await;
    assert_eq!(
        logged(&hub, &id).await,
        (CLIENT_IP.parse().unwrap(), None),
        "the headers of an untrusted peer are ignored"
    );
}

/// A WebSocket's bytes over one HTTP/2 stream (RFC 8441): reads take the
/// stream's DATA, writes send DATA.
struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    unread: Bytes,
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.unread.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(err)) => return Poll::Ready(Err(std::io::Error::other(err))),
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.unread = data;
                }
            }
        }
        let n = self.unread.len().min(out.remaining());
        let taken = self.unread.split_to(n);
        out.put_slice(&taken);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(data.len());
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                None => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the HTTP/2 stream is closed",
                    )));
                }
                Some(Err(err)) => return Poll::Ready(Err(std::io::Error::other(err))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(data.len());
                    self.send
                        .send_data(Bytes::copy_from_slice(&data[..n]), false)
                        .map_err(std::io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// Opens the hub's WebSocket through HAProxy as an HTTP/2 stream (extended
/// CONNECT, RFC 8441), over TLS from [`CLIENT_IP`] with ALPN `h2`, with the
/// forged headers.
async fn websocket_over_h2(proxy: &Proxy, cert: &Cert) -> WebSocket<H2Stream> {
    let tcp = tcp_from_client_ip(SocketAddr::from(([127, 0, 0, 1], proxy.port))).await;
    let mut config = Arc::unwrap_or_clone(cert.client_config());
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|err| panic!("TLS with {}: {err}", proxy.kind.name()));
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "{} did not choose HTTP/2 by ALPN",
        proxy.kind.name()
    );
    let (requests, connection) = h2::client::handshake(tls)
        .await
        .unwrap_or_else(|err| panic!("HTTP/2 with {}: {err}", proxy.kind.name()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut requests = timeout(WAIT, requests.ready())
        .await
        .expect("HTTP/2 ready in time")
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !requests.is_extended_connect_protocol_enabled() {
        assert!(
            Instant::now() < deadline,
            "{} does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL",
            proxy.kind.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://localhost:{}/ws", proxy.port))
        .header("sec-websocket-version", "13")
        .header("x-forwarded-for", FORGED)
        .header("forwarded", format!("for={FORGED}"))
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = requests
        .send_request(request, false)
        .unwrap_or_else(|err| panic!("extended CONNECT to {}: {err}", proxy.kind.name()));
    let response = timeout(WAIT, response)
        .await
        .expect("the answer to extended CONNECT in time")
        .unwrap_or_else(|err| panic!("extended CONNECT to {}: {err}", proxy.kind.name()));
    assert_eq!(
        response.status(),
        http::StatusCode::OK,
        "extended CONNECT through {}: {response:?}",
        proxy.kind.name()
    );
    let stream = H2Stream {
        send,
        recv: response.into_body(),
        unread: Bytes::new(),
    };
    WebSocket::from_raw_socket(stream, Role::Client, WebSocketConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_carries_websockets_over_http2_to_the_hub() {
    let dir = TempDir::new("haproxy-h2");
    let cert = Cert::new(&dir.0);
    let hub = Hub::start(&dir.0, &[PROXY_IP], 30);
    let proxy = Proxy::start(Kind::Haproxy, &dir.0, hub.addr, &cert, false);
    let ws = websocket_over_h2(&proxy, &cert).await;
    let mut over_h2 = Client::new(ws, "a client over HTTP/2 (through haproxy)");
    let id = over_h2.ok("connect", json!({})).await["client"]
        .as_str()
        .unwrap()
        .to_string();
    over_h2.ok("subscribe", json!({"channel": "chat:h2"})).await;
    let mut publisher = chat_client(&proxy, &cert, "the publisher over HTTP/1.1").await;
    publisher
        .ok(
            "publish",
            json!({"channel": "chat:h2", "data": "to a stream"}),
        )
        .await;
    assert_eq!(over_h2.message().await["data"], "to a stream");
    assert_eq!(
        logged(&hub, &id).await,
        (CLIENT_IP.parse().unwrap(), Some(PROXY_IP.parse().unwrap())),
        "the address of a client over HTTP/2"
    );
}
