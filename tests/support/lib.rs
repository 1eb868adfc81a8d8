//! Shared helpers of duplex's interop tests against real peers: Python
//! `websockets` and Node `ws` (`tests/peers/`, installed by
//! `scripts/setup-peers.sh`).
//!
//! - [`Peer`] locates a peer and starts it: [`PeerServer`] (their echo server,
//!   whose stdout tells the port and what it saw) or [`run_client`] (their
//!   client running a scenario against a URL, judged by its exit status).
//! - [`EchoServer`] is our side as a server: duplex in process, echoing, with
//!   the same scripted commands as the peers' servers, recording what each
//!   connection received and how it closed.
//! - [`TestCert`] is a self-signed certificate for `localhost` and `127.0.0.1`,
//!   written to a temporary directory for the peers to read.
//! - [`Tap`] wraps a stream to count the bytes that cross it and keep the
//!   handshake's heads (what `Sec-WebSocket-Extensions` really said).
//! - [`scenario`] holds the exchanges, shared by the Python and Node test files.
//!
//! The scripted commands, understood by both sides' servers (text messages):
//! `cmd:close CODE REASON`, `cmd:fragments`, `cmd:fragments-binary`,
//! `cmd:ping`, `cmd:protocol`, `cmd:header NAME`, `cmd:extensions` (and, on
//! the peers' servers only, `cmd:fragments-ping`); see
//! `tests/peers/python/peer.py`.
//!
//! Compression: the peers run with permessage-deflate off unless given
//! `--deflate SPEC` (`on` for the library's defaults, or RFC 7692 parameters
//! such as `server_no_context_takeover,client_max_window_bits=10`); our server
//! accepts offers as `ServerBuilder` does by default, or as told by
//! [`EchoServer::start_with`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use duplex::tls::rustls::ServerConfig;
use duplex::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use duplex::{
    Accept, CloseCode, CloseInfo, CloseStatus, DeflateConfig, DeflateParams, Message,
    ServerBuilder, WebSocket,
};
use http::HeaderMap;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long one exchange (a connection, a message, a line from a peer) may
/// take before the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a peer client may take to run its whole scenario.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The size of the large messages: 16 MiB.
pub const BIG: usize = 16 << 20;

/// The largest message our server accepts: above [`BIG`], with room to spare.
pub const SERVER_MAX_MESSAGE: usize = 32 << 20;

/// How many similar JSON messages the compression tests exchange one by one.
pub const JSON_MESSAGES: usize = 500;

/// The size bound of the JSON-like text that ends the peers' `json` step:
/// 256 KiB, larger than any deflate window.
pub const JSON_TAIL: usize = 256 << 10;

/// The subprotocols both sides' servers speak, in their order of preference.
pub const SERVER_PROTOCOLS: [&str; 2] = ["chat.v1", "chat.v2"];

/// What the clients offer: one nobody speaks, then `chat.v2`; so `chat.v2` is
/// agreed, whichever side's preference rules.
pub const CLIENT_PROTOCOLS: [&str; 2] = ["x-unknown", "chat.v2"];

const SETUP_HINT: &str = "run scripts/setup-peers.sh to install the interop peers";

/// Awaits `future`, failing the test with `what` if it takes longer than
/// [`TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {TIMEOUT:?}: {what}"),
    }
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the interop crate lives in the workspace")
        .to_path_buf()
}

// ----- messages -----

/// The 16 MiB binary message: bytes `i % 251`, as the peers make it.
pub fn big_binary() -> Bytes {
    (0..BIG)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The 16 MiB text message (a little under, in whole repeats of a unit with 2-,
/// 3- and 4-byte characters), as the peers make it.
pub fn big_text() -> String {
    let unit = "duplex ☃ héllo 𝄞 ";
    unit.repeat(BIG / unit.len())
}

/// Message `i` of the compression tests' JSON exchanges, as the peers make it
/// (`json_message` in peer.py): similar to its neighbours, which is what
/// context takeover feeds on.
pub fn json_message(i: usize) -> String {
    format!(
        concat!(
            r#"{{"seq":{},"type":"update","user":"user-{}","#,
            r#""items":[{{"id":{},"qty":{}}},{{"id":{},"qty":{}}}],"#,
            r#""note":"duplex interop over permessage-deflate ☃"}}"#
        ),
        i,
        i % 7,
        i,
        i % 5,
        i + 1,
        (i + 1) % 5
    )
}

/// JSON-like lines of a fixed length, with a counter and a scrambled value, as
/// many whole lines as fit in `size` bytes, as the peers make it: it
/// compresses, but only partly (about 7 to 1 with zlib's defaults).
pub fn json_text(size: usize) -> String {
    let line = |n: usize| {
        format!(
            "{{\"seq\":{n:08},\"user\":\"user-{:03}\",\"event\":\"tick ☃\",\"value\":{:07}}}\n",
            n % 1000,
            n * 7919 % 1_000_003
        )
    };
    let count = size / line(0).len();
    let mut text = String::with_capacity(count * line(0).len());
    for n in 0..count {
        text.push_str(&line(n));
    }
    text
}

/// `size` bytes (a multiple of 16) of 16-byte records, as the peers make
/// them: a big-endian counter, a multiplicative hash of it (high entropy),
/// then 8 repeated bytes; it compresses about 2 to 1.
pub fn partly_random_binary(size: usize) -> Bytes {
    assert_eq!(size % 16, 0, "a whole number of records");
    let mut data = Vec::with_capacity(size);
    for n in 0..(size / 16) as u32 {
        data.extend_from_slice(&n.to_be_bytes());
        data.extend_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
        data.extend_from_slice(&[(n % 251) as u8; 8]);
    }
    data.into()
}

/// A short description of a message, for failure messages: kind, length and
/// the start of its payload.
pub fn describe(message: &Message) -> String {
    let (kind, data): (&str, &[u8]) = match message {
        Message::Text(text) => ("Text", text.as_bytes()),
        Message::Binary(data) => ("Binary", data),
        Message::Ping(data) => ("Ping", data),
        Message::Pong(data) => ("Pong", data),
        Message::Close(None) => return "Close(no code)".to_owned(),
        Message::Close(Some(frame)) => return format!("Close({frame})"),
    };
    let shown = String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
    let more = if data.len() > 40 { "..." } else { "" };
    format!("{kind}({} bytes: {shown:?}{more})", data.len())
}

/// Receives the next message, failing the test on a timeout, an error or the
/// end of the connection.
pub async fn next_message<S>(ws: &mut WebSocket<S>, what: &str) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match within(what, ws.recv()).await {
        Some(Ok(message)) => message,
        Some(Err(err)) => panic!("{what}: the connection failed: {err}"),
        None => panic!(
            "{what}: the connection ended (close info: {:?})",
            ws.close_info()
        ),
    }
}

/// Fails the test unless `got` is `want`, describing both briefly (large
/// messages are not printed whole).
#[track_caller]
pub fn assert_message(got: &Message, want: &Message, what: &str) {
    assert!(
        got == want,
        "{what}: got {}, wanted {}",
        describe(got),
        describe(want)
    );
}

// ----- peers -----

/// A real WebSocket implementation the tests talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Python `websockets` (tests/peers/python/peer.py, run by .venv/bin/python).
    Python,
    /// Node `ws` (tests/peers/node/peer.js, run by `node`).
    Node,
}

impl Peer {
    /// The peer's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Python => "Python websockets",
            Peer::Node => "Node ws",
        }
    }

    /// The short name the peer puts in its ping payloads: `py` or `node`.
    pub fn tag(self) -> &'static str {
        match self {
            Peer::Python => "py",
            Peer::Node => "node",
        }
    }

    /// The `X-Peer` header the peer's client sends.
    pub fn client_header(self) -> &'static str {
        match self {
            Peer::Python => "python-websockets",
            Peer::Node => "node-ws",
        }
    }

    /// The host name the peer's client uses for wss:// URLs: `localhost` for
    /// Python (a DNS name in the certificate), `127.0.0.1` for Node (an IP
    /// address in the certificate).
    pub fn tls_host(self) -> &'static str {
        match self {
            Peer::Python => "localhost",
            Peer::Node => "127.0.0.1",
        }
    }

    /// The command that runs the peer program, before its mode argument. Fails
    /// the test, saying to run scripts/setup-peers.sh, if the peer is not
    /// installed.
    fn command(self) -> Command {
        let root = workspace_root();
        let mut command = match self {
            Peer::Python => {
                let python = root.join(".venv/bin/python");
                assert!(
                    python.is_file(),
                    "the Python peer is not installed ({} is missing): {SETUP_HINT}",
                    python.display()
                );
                let mut command = Command::new(python);
                command.arg(root.join("tests/peers/python/peer.py"));
                command
                    .env("PYTHONDONTWRITEBYTECODE", "1")
                    .env("PYTHONUNBUFFERED", "1");
                command
            }
            Peer::Node => {
                let dir = root.join("tests/peers/node");
                let ws = dir.join("node_modules/ws/package.json");
                assert!(
                    ws.is_file(),
                    "the Node peer is not installed ({} is missing): {SETUP_HINT}",
                    ws.display()
                );
                let mut command = Command::new("node");
                command.arg(dir.join("peer.js")).current_dir(dir);
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    fn spawn(self, mut command: Command) -> Child {
        command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot start the {} peer ({err}): {SETUP_HINT}",
                self.name()
            )
        })
    }
}

/// Collects everything a child writes to stderr, for failure messages.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let collected = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let sink = collected.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    collected
}

/// A peer's echo server, running as a child process (killed when this is
/// dropped). Its stdout tells the port, then one line per event:
/// `pong <payload>`, `closed <code> <reason>`.
pub struct PeerServer {
    peer: Peer,
    child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl PeerServer {
    /// Starts the peer's server with these arguments (`--protocol P`,
    /// `--cert PEM --key PEM`) and waits for its `listening on PORT` line.
    pub async fn start(peer: Peer, args: &[&str]) -> PeerServer {
        let mut command = peer.command();
        command.arg("server").args(args);
        let mut child = peer.spawn(command);
        let stderr = collect_stderr(&mut child);
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = PeerServer {
            peer,
            child,
            port: 0,
            lines,
            seen: Vec::new(),
            stderr,
        };
        let line = server.expect_line("listening on ").await;
        server.port = line["listening on ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: bad port line {line:?}", peer.name()));
        server
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the next stdout line that starts with `prefix` (skipping
    /// others), failing the test if the server exits or is silent for
    /// [`TIMEOUT`].
    pub async fn expect_line(&mut self, prefix: &str) -> String {
        let peer = self.peer.name();
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            outcome => {
                let how = if outcome.is_err() {
                    format!("timed out after {TIMEOUT:?}")
                } else {
                    let status = self.child.wait().await;
                    format!("the server exited ({status:?})")
                };
                // Give the stderr reader a moment to catch up with a dying child.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
                panic!(
                    "{peer} server: no line starting with {prefix:?}: {how}.\n\
                     lines so far: {:?}\nstderr:\n{}\n(if the peer is not installed: {SETUP_HINT})",
                    self.seen,
                    self.stderr()
                );
            }
        }
    }
}

impl std::fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServer")
            .field("peer", &self.peer)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// How a peer client's run ended.
#[derive(Debug)]
pub struct ClientRun {
    /// The peer that ran.
    pub peer: Peer,
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (one `ok <step>` line per step passed).
    pub stdout: String,
    /// Everything it wrote to stderr (the failure, if any).
    pub stderr: String,
}

impl ClientRun {
    /// The `extensions <step> <value>` lines the client printed with
    /// `--deflate`: per step, the `Sec-WebSocket-Extensions` answer it got.
    pub fn extension_lines(&self) -> Vec<(String, String)> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix("extensions "))
            .map(|rest| {
                let (step, value) = rest.split_once(' ').unwrap_or((rest, ""));
                (step.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// Fails the test, showing the peer's output, unless it exited 0.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "the {} client failed ({}).\nstdout:\n{}\nstderr:\n{}",
            self.peer.name(),
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs the peer's client with these arguments (`URL [--ca PEM] [--scenario
/// full|tls]`) to its end, at most [`CLIENT_TIMEOUT`] (then it is killed and
/// the test fails).
pub async fn run_client(peer: Peer, args: &[&str]) -> ClientRun {
    let mut command = peer.command();
    command.arg("client").args(args);
    let child = peer.spawn(command);
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the {} client did not finish within {CLIENT_TIMEOUT:?}",
                peer.name()
            )
        })
        .unwrap_or_else(|err| panic!("waiting for the {} client: {err}", peer.name()));
    ClientRun {
        peer,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

// ----- certificates -----

/// A self-signed certificate for `localhost` and `127.0.0.1`, also written as
/// PEM files in a temporary directory (removed when this is dropped).
pub struct TestCert {
    dir: PathBuf,
    /// The certificate, DER: what our client trusts with `tls_root`.
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCert {
    /// Generates a new key and certificate and writes `cert.pem` and `key.pem`.
    pub fn generate() -> TestCert {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let dir = std::env::temp_dir().join(format!(
            "duplex-interop-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
            .expect("write key.pem");
        TestCert {
            dir,
            cert_der: certified.cert.der().clone(),
            key_der: certified.signing_key.serialize_der(),
        }
    }

    /// The certificate's PEM file (also the CA file the peers' clients trust).
    pub fn cert_path(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    /// The private key's PEM file.
    pub fn key_path(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// A rustls server configuration with this certificate, for our server.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        duplex::tls::server_config(vec![self.cert_der.clone()], key).expect("server config")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert").field("dir", &self.dir).finish()
    }
}

// ----- our server -----

/// What one connection to [`EchoServer`] received and how it ended.
#[derive(Clone, Default)]
pub struct ConnRecord {
    /// The request path (`/main`, `/server-closes`...), or a description of
    /// the failure if the connection never opened.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The subprotocol agreed.
    pub protocol: Option<String>,
    /// Every message received, commands and control frames included, in order.
    pub received: Vec<Message>,
    /// The peer's close frame, as `WebSocket::received_close` tells it.
    pub received_close: Option<CloseStatus>,
    /// How the connection ended, as `WebSocket::close_info` tells it.
    pub close_info: Option<CloseInfo>,
    /// Errors met on the way (the connection failing, a send failing).
    pub errors: Vec<String>,
    /// The permessage-deflate parameters agreed, as `WebSocket::deflate` tells
    /// them; `None` without compression.
    pub deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` header of the 101 response we sent, as
    /// it went out.
    pub extensions_answered: Option<String>,
    /// Bytes read from the connection (after TLS), handshake included.
    pub bytes_read: u64,
    /// Bytes written to the connection (before TLS), handshake included.
    pub bytes_written: u64,
}

impl ConnRecord {
    /// The text and binary messages received, commands (`cmd:...`) left out.
    pub fn data_messages(&self) -> Vec<&Message> {
        self.received
            .iter()
            .filter(|m| match m {
                Message::Text(text) => !text.starts_with("cmd:"),
                Message::Binary(_) => true,
                _ => false,
            })
            .collect()
    }

    /// The commands received, in order.
    pub fn commands(&self) -> Vec<&str> {
        self.received
            .iter()
            .filter_map(|m| m.as_text().filter(|t| t.starts_with("cmd:")))
            .collect()
    }

    /// The client's `Sec-WebSocket-Extensions` offer, as received.
    pub fn extensions_offered(&self) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all("sec-websocket-extensions")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

impl std::fmt::Debug for ConnRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let received: Vec<String> = self.received.iter().map(describe).collect();
        f.debug_struct("ConnRecord")
            .field("path", &self.path)
            .field("protocol", &self.protocol)
            .field("received", &received)
            .field("received_close", &self.received_close)
            .field("close_info", &self.close_info)
            .field("errors", &self.errors)
            .field("extensions_offered", &self.extensions_offered())
            .field("extensions_answered", &self.extensions_answered)
            .field("deflate", &self.deflate)
            .field("bytes_read", &self.bytes_read)
            .field("bytes_written", &self.bytes_written)
            .finish()
    }
}

/// Our server: duplex in process on 127.0.0.1 (ws:// or wss://), speaking
/// `chat.v1` and `chat.v2`, echoing text and binary messages and obeying the
/// scripted commands; it records each connection once it ends. Stops when
/// dropped. Every connection is read and written through a [`Tap`].
pub struct EchoServer {
    addr: SocketAddr,
    records: watch::Receiver<Vec<ConnRecord>>,
    accept_loop: JoinHandle<()>,
}

impl EchoServer {
    /// Starts the server with `ServerBuilder`'s defaults for compression
    /// (permessage-deflate offers accepted); with a TLS configuration, it
    /// serves wss://.
    pub async fn start(tls: Option<Arc<ServerConfig>>) -> EchoServer {
        EchoServer::start_with(tls, Some(DeflateConfig::default())).await
    }

    /// Starts the server accepting permessage-deflate offers within `deflate`,
    /// or declining them all with `None`.
    pub async fn start_with(
        tls: Option<Arc<ServerConfig>>,
        deflate: Option<DeflateConfig>,
    ) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let builder = ServerBuilder::new()
            .protocols(SERVER_PROTOCOLS)
            .max_message_size(SERVER_MAX_MESSAGE);
        let builder = match deflate {
            Some(config) => builder.deflate(config),
            None => builder.no_deflate(),
        };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (tx, records) = watch::channel(Vec::new());
        let accept_loop = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let builder = builder.clone();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let record = match acceptor {
                        None => serve(&builder, Tap::new(tcp)).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => serve(&builder, Tap::new(tls)).await,
                            Err(err) => ConnRecord {
                                path: format!("<TLS handshake failed: {err}>"),
                                ..ConnRecord::default()
                            },
                        },
                    };
                    tx.send_modify(|records| records.push(record));
                });
            }
        });
        EchoServer {
            addr,
            records,
            accept_loop,
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits for the connection to `path` to end and returns its record.
    pub async fn record(&self, path: &str) -> ConnRecord {
        let mut records = self.records.clone();
        let what = format!("our server: the connection to {path} to end");
        let found = within(
            &what,
            records.wait_for(|records| records.iter().any(|r| r.path == path)),
        )
        .await
        .expect("the server is running");
        found
            .iter()
            .find(|r| r.path == path)
            .cloned()
            .expect("found above")
    }

    /// The records of the connections that ended so far.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.records.borrow().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Serves one connection to its end and says what happened.
async fn serve<S>(builder: &ServerBuilder, stream: Tap<S>) -> ConnRecord
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let counts = stream.counts();
    let mut record = ConnRecord::default();
    let pending = match builder.read_request(stream).await {
        Ok(pending) => pending,
        Err(err) => {
            record.path = format!("<bad upgrade request: {err}>");
            return record;
        }
    };
    record.path = pending.request().uri().path().to_owned();
    record.headers = pending.request().headers().clone();
    let mut ws = match pending.accept(Accept::new()).await {
        Ok(ws) => ws,
        Err(err) => {
            record.errors.push(format!("accept: {err}"));
            return record;
        }
    };
    record.protocol = ws.protocol().map(str::to_owned);
    record.deflate = ws.deflate().copied();
    record.extensions_answered = counts.written_header("sec-websocket-extensions");

    while let Some(item) = ws.recv().await {
        let message = match item {
            Ok(message) => message,
            Err(err) => {
                record.errors.push(err.to_string());
                continue;
            }
        };
        record.received.push(message.clone());
        let outcome = match message {
            Message::Text(text) if text.starts_with("cmd:") => {
                command(&mut ws, &text["cmd:".len()..], &mut record).await
            }
            Message::Text(_) | Message::Binary(_) => ws.send(message).await,
            _ => Ok(()),
        };
        if let Err(err) = outcome {
            record.errors.push(err.to_string());
        }
    }
    record.received_close = ws.received_close().cloned();
    record.close_info = ws.close_info();
    record.bytes_read = counts.read();
    record.bytes_written = counts.written();
    record
}

/// Our server's side of the scripted commands.
async fn command<S>(
    ws: &mut WebSocket<S>,
    command: &str,
    record: &mut ConnRecord,
) -> duplex::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "close" => {
            let (code, reason) = arg.split_once(' ').unwrap_or((arg, ""));
            let code = code
                .parse()
                .map_err(|_| duplex::Error::Config(format!("cmd:close: bad code {code:?}")))?;
            ws.close(CloseCode(code), reason).await
        }
        "ping" => {
            ws.send(Message::ping("rs-ping")).await?;
            // Wait for the pong that answers it; anything else is recorded.
            loop {
                match ws.recv().await {
                    Some(Ok(Message::Pong(data))) if data == "rs-ping" => {
                        record.received.push(Message::Pong(data));
                        break;
                    }
                    Some(Ok(other)) => record.received.push(other),
                    Some(Err(err)) => return Err(err),
                    None => return Err(duplex::Error::Closed),
                }
            }
            ws.send(Message::text("pong:rs-ping")).await
        }
        "protocol" => {
            let reply = format!("protocol:{}", ws.protocol().unwrap_or(""));
            ws.send(Message::text(reply)).await
        }
        "header" => {
            let value = record
                .headers
                .get(arg)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            ws.send(Message::text(format!("header:{value}"))).await
        }
        "extensions" => {
            let answered = record.extensions_answered.as_deref().unwrap_or("");
            ws.send(Message::text(format!("extensions:{answered}")))
                .await
        }
        other => {
            let reply = format!("error:unknown command {other}");
            ws.send(Message::text(reply)).await
        }
    }
}

pub mod scenario;
mod tap;

pub use crate::tap::{Tap, TapCounts};

/// The tests both peers run, one `#[tokio::test]` per shared scenario, for the
/// peer given: `duplex_interop::interop_tests!(Peer::Node);`. Their names say
/// what each shows; the bodies are in [`scenario`] and [`scenario::deflate`].
#[macro_export]
macro_rules! interop_tests {
    ($peer:expr) => {
        #[tokio::test]
        async fn their_client_against_our_server() {
            $crate::scenario::their_client_our_server($peer, false).await;
        }

        #[tokio::test]
        async fn their_client_against_our_server_over_tls() {
            $crate::scenario::their_client_our_server($peer, true).await;
        }

        #[tokio::test]
        async fn our_client_messages_echo_unchanged() {
            $crate::scenario::our_client_messages($peer).await;
        }

        #[tokio::test]
        async fn their_fragmented_messages_arrive_whole() {
            $crate::scenario::their_fragmented_messages_arrive_whole($peer).await;
        }

        #[tokio::test]
        async fn our_fragmented_messages_arrive_whole() {
            $crate::scenario::our_fragmented_messages_arrive_whole($peer).await;
        }

        #[tokio::test]
        async fn ping_and_pong_both_ways() {
            $crate::scenario::ping_pong_both_ways($peer).await;
        }

        #[tokio::test]
        async fn our_close_code_and_reason_reach_them() {
            $crate::scenario::our_close_reaches_them($peer).await;
        }

        #[tokio::test]
        async fn their_close_code_and_reason_reach_us() {
            $crate::scenario::their_close_reaches_us($peer).await;
        }

        #[tokio::test]
        async fn our_client_over_tls() {
            $crate::scenario::our_client_over_tls($peer).await;
        }

        #[tokio::test]
        async fn deflate_our_client_messages_echo_unchanged() {
            $crate::scenario::deflate::our_client_messages($peer).await;
        }

        #[tokio::test]
        async fn deflate_our_client_reduced_offer() {
            $crate::scenario::deflate::our_client_reduced_offer($peer).await;
        }

        #[tokio::test]
        async fn deflate_our_client_follows_their_limits() {
            $crate::scenario::deflate::our_client_their_limits($peer).await;
        }

        #[tokio::test]
        async fn deflate_saves_bytes_on_the_wire() {
            $crate::scenario::deflate::our_client_saves_bytes($peer).await;
        }

        #[tokio::test]
        async fn deflate_their_client_against_our_server() {
            $crate::scenario::deflate::their_client_messages($peer).await;
        }

        #[tokio::test]
        async fn deflate_their_client_reduced_offer() {
            $crate::scenario::deflate::their_client_reduced_offer($peer).await;
        }

        #[tokio::test]
        async fn deflate_their_client_follows_our_limits() {
            $crate::scenario::deflate::their_client_our_limits($peer).await;
        }
    };
}
