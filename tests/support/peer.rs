//! The peers: [`Peer`] locates one, [`PeerServer`] is their echo server
//! running, [`run_client`] runs their client through a scenario.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::{CLIENT_TIMEOUT, SETUP_HINT, TIMEOUT, workspace_root};

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
