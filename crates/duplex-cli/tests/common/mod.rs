//! Starting `duplex echo` and speaking raw WebSocket bytes to it.
#![allow(dead_code)]

pub mod redis;
pub mod serve;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The variables that choose a proxy, cleared for every `duplex` run of
/// [`duplex`] so that the tests see only the ones they set.
pub const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Runs `duplex ARGS` to the end with `stdin` as its input and `env` as its
/// only proxy variables.
pub fn duplex(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duplex"));
    for name in PROXY_VARS {
        command.env_remove(name);
    }
    let mut child = command
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A `duplex echo` process, killed on drop.
pub struct Echo {
    /// The process.
    pub child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Echo {
    /// Starts `duplex echo --listen 127.0.0.1:0` with `args`, and waits for the
    /// address it prints.
    pub fn start(args: &[&str]) -> Echo {
        Echo::spawn("echo", "127.0.0.1:0", args)
    }

    /// Starts `duplex echo` on `addr` (a restart on the port an earlier one
    /// had).
    pub fn start_at(addr: SocketAddr, args: &[&str]) -> Echo {
        Echo::spawn("echo", &addr.to_string(), args)
    }

    /// Starts `duplex serve --listen 127.0.0.1:0` with `args` the same way
    /// (it prints `listening on http://ADDR` first).
    pub fn serve(args: &[&str]) -> Echo {
        Echo::spawn("serve", "127.0.0.1:0", args)
    }

    fn spawn(command: &str, listen: &str, args: &[&str]) -> Echo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
            .args([command, "--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("start duplex {command}: {err}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Echo { child, addr }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process's resident memory, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection with a read timeout, so a stuck server fails the test.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid opening handshake request (the key of RFC 6455 section 1.3).
pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads an HTTP response head (up to the blank line).
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!("reading the response head: {e}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Connects and completes the opening handshake.
pub fn open(addr: SocketAddr) -> TcpStream {
    let mut stream = tcp(addr);
    stream.write_all(REQUEST).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream
}

/// A client frame: masked, with the given first byte (FIN, RSV, opcode).
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x0f, 0xf0, 0x3c, 0xc3];
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Reads one server frame: (first byte, payload).
pub fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).expect("a frame header");
    assert_eq!(header[1] & 0x80, 0, "server frames are not masked");
    let len = match header[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (header[0], payload)
}

/// Expects a close frame with `code`, then the end of the TCP connection.
pub fn expect_close(stream: &mut TcpStream, code: u16) {
    let (b0, payload) = read_frame(stream);
    assert_eq!(b0, 0x88, "expected a close frame, got {b0:#x} {payload:?}");
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        code,
        "reason: {:?}",
        String::from_utf8_lossy(&payload[2..])
    );
    expect_eof(stream);
}

/// Expects the server to close the TCP connection.
pub fn expect_eof(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected the connection to end: {e}"),
    }
}
