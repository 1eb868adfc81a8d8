//! Our client over HTTP/2 (RFC 8441) through a server that is not ours:
//! Debian's HAProxy, which takes WebSockets as HTTP/2 streams from clients
//! (an h2 frontend announces SETTINGS_ENABLE_CONNECT_PROTOCOL unless
//! `h2-workaround-bogus-websocket-clients` is set) and forwards each as an
//! HTTP/1.1 upgrade to Python `websockets` (tests/peers/python/peer.py)
//! behind it. Over TLS (ALPN h2) and h2c (`proto h2`), several WebSockets
//! share one TCP connection and echo text and binary, with permessage-deflate.
//!
//! Needs `haproxy` (scripts/setup-proxies.sh) and the Python peer
//! (scripts/setup-peers.sh); without them the test fails and says so.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duplex::{ClientBuilder, CloseCode, Http2Connection, Message};
use duplex_interop::{Peer, PeerServer, TestCert, next_message, within};

/// HAProxy running with a configuration of its own, killed (and its folder
/// removed) when dropped.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// The TLS frontend (`alpn h2,http/1.1`) and the h2c one (`proto h2`).
    tls_port: u16,
    h2c_port: u16,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Haproxy {
    /// HAProxy in front of the WebSocket server on `backend_port`.
    fn start(cert: &TestCert, backend_port: u16) -> Haproxy {
        let dir = std::env::temp_dir().join(format!("duplex-haproxy-h2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // HAProxy reads the certificate and its key from one PEM file.
        let pem = dir.join("site.pem");
        let both = std::fs::read_to_string(cert.cert_path()).unwrap()
            + &std::fs::read_to_string(cert.key_path()).unwrap();
        std::fs::write(&pem, both).unwrap();
        let (tls_port, h2c_port) = (free_port(), free_port());
        let config = format!(
            "global\n\
             \x20   maxconn 200\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 30s\n\
             \x20   timeout server 30s\n\
             \x20   timeout tunnel 30s\n\
             frontend tls\n\
             \x20   bind 127.0.0.1:{tls_port} ssl crt {pem} alpn h2,http/1.1\n\
             \x20   default_backend websockets\n\
             frontend h2c\n\
             \x20   bind 127.0.0.1:{h2c_port} proto h2\n\
             \x20   default_backend websockets\n\
             backend websockets\n\
             \x20   server python 127.0.0.1:{backend_port}\n",
            pem = pem.display()
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("haproxy is not installed: run scripts/setup-proxies.sh");
        assert!(
            check.status.success(),
            "haproxy -c refused the configuration:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy {
            child,
            dir,
            tls_port,
            h2c_port,
        };
        let started = Instant::now();
        for port in [tls_port, h2c_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "haproxy does not listen on {port} after 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        haproxy
    }
}

/// Opens `count` WebSockets on one HTTP/2 connection to `url` and has each
/// echo text and binary (one binary past the HTTP/2 windows) at the same
/// time, then close cleanly.
async fn many_on_one_connection(url: &str, cert: &TestCert, count: usize) {
    let builder = |path: &str| {
        ClientBuilder::new(format!("{url}{path}"))
            .tls_root(cert.cert_der.clone())
            .connect_timeout(Duration::from_secs(5))
            .handshake_timeout(Duration::from_secs(5))
    };
    let connection = within("HTTP/2 connection", Http2Connection::connect(&builder("/")))
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"));
    let mut tasks = Vec::new();
    for i in 0..count {
        let ws = within(
            "extended CONNECT",
            connection.websocket(builder(&format!("/ws{i}"))),
        )
        .await
        .unwrap_or_else(|err| panic!("{url} stream {i}: {err}"));
        tasks.push(tokio::spawn(async move {
            let mut ws = ws;
            assert!(ws.get_ref().is_http2());
            assert!(ws.deflate().is_some(), "permessage-deflate through HAProxy");
            let text = Message::text(format!("héllo over h2, stream {i} ").repeat(50));
            let small = Message::binary(vec![i as u8; 10 + i]);
            let big = Message::binary(
                (0..(1 << 20) + i)
                    .map(|b| (b % 251) as u8)
                    .collect::<Vec<u8>>(),
            );
            for message in [text, small, big] {
                ws.send(message.clone()).await.unwrap();
                let echoed = next_message(&mut ws, "the echo").await;
                assert_eq!(echoed, message, "stream {i}");
            }
            ws.close(CloseCode::NORMAL, "done").await.unwrap();
            let info = ws.close_info().expect("closed");
            assert!(info.was_clean, "stream {i}: {info:?}");
            assert_eq!(info.code, CloseCode::NORMAL);
        }));
    }
    for task in tasks {
        within("echoes", task).await.unwrap();
    }
    assert!(connection.peer_addr().port() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_share_one_http2_connection_through_haproxy_to_python_websockets() {
    let mut python = PeerServer::start(Peer::Python, &["--deflate", "on"]).await;
    let cert = TestCert::generate();
    let haproxy = Haproxy::start(&cert, python.port());

    let tls = format!("wss://localhost:{}", haproxy.tls_port);
    many_on_one_connection(&tls, &cert, 5).await;
    let h2c = format!("ws://127.0.0.1:{}", haproxy.h2c_port);
    many_on_one_connection(&h2c, &cert, 5).await;

    // Python saw each of the ten close cleanly, through HAProxy.
    for _ in 0..10 {
        let line = python.expect_line("closed ").await;
        assert!(line.starts_with("closed 1000 done"), "{line}");
    }

    // ClientBuilder::http2 picks HTTP/2 here too.
    let mut ws = ClientBuilder::new(format!("{tls}/one"))
        .tls_root(cert.cert_der.clone())
        .http2(true)
        .connect()
        .await
        .unwrap();
    assert!(ws.get_ref().is_http2());
    ws.send(Message::text("one more")).await.unwrap();
    assert_eq!(
        next_message(&mut ws, "the echo").await,
        Message::text("one more")
    );
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    drop(haproxy);
}
