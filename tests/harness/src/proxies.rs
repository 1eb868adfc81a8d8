//! Debian's tinyproxy (HTTP CONNECT with Basic auth) and microsocks (SOCKS5
//! with a user and password), each started on a free loopback port with its
//! own configuration in a temporary folder, and killed on drop, for duplex's
//! proxy tests and the `duplex connect` tests.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user name both proxies accept.
pub const USER: &str = "duplex";
/// The password both proxies accept (tinyproxy's configuration takes
/// letters, digits and `-._` only).
pub const PASSWORD: &str = "s3cret.pass";
/// [`PASSWORD`], percent-encoded in part, as a proxy URL may have it.
pub const PASSWORD_ENCODED: &str = "s3cret%2Ep%61ss";

/// A proxy process, killed on drop, with its log kept for failure messages.
pub struct ProxyProcess {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// tinyproxy asking for Basic auth ([`USER`], [`PASSWORD`]), allowing
    /// CONNECT to `connect_ports` only.
    pub fn tinyproxy(connect_ports: &[u16]) -> ProxyProcess {
        let binary = require("/usr/bin/tinyproxy");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\nAllow 127.0.0.1\n\
             BasicAuth {USER} {PASSWORD}\nDisableViaHeader Yes\n"
        );
        for p in connect_ports {
            writeln!(conf, "ConnectPort {p}").unwrap();
        }
        let path = dir.path().join("tinyproxy.conf");
        std::fs::write(&path, conf).unwrap();
        let mut command = Command::new(binary);
        command.arg("-d").arg("-c").arg(&path);
        ProxyProcess::start(command, port, dir)
    }

    /// microsocks on loopback, asking for [`USER`] and [`PASSWORD`].
    pub fn microsocks() -> ProxyProcess {
        let binary = require("/usr/bin/microsocks");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(binary);
        command.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            USER,
            "-P",
            PASSWORD,
        ]);
        ProxyProcess::start(command, port, dir)
    }

    fn start(mut command: Command, port: u16, dir: tempfile::TempDir) -> ProxyProcess {
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
        let mut proxy = ProxyProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("{command:?} exited with {status}: {}", proxy.log());
            }
            if TcpStream::connect(proxy.addr).is_ok() {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "{command:?} did not listen on {} within 10 s: {}",
                proxy.addr,
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `scheme://user:password@addr`, with the password percent-encoded.
    pub fn url_with_auth(&self, scheme: &str) -> String {
        format!("{scheme}://{USER}:{PASSWORD_ENCODED}@{}", self.addr)
    }

    /// `scheme://addr`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary's path; a missing one fails the test, naming the script that
/// installs it.
fn require(binary: &str) -> &str {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: run scripts/setup-proxies.sh (it installs Debian's tinyproxy and microsocks)"
    );
    binary
}

/// A loopback port nothing listens on (just now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
