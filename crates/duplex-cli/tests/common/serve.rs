//! Starting `duplex serve` as a process, for the tests that drive it from
//! outside (browsers, document peers).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long `duplex serve` gets to print its first line.
pub const START_LIMIT: Duration = Duration::from_secs(20);

/// Starts `duplex serve --listen <listen> --data <data> [--config <config>]`
/// and waits (at most [`START_LIMIT`]) for its first line, `listening on
/// ...ADDR...`. The rest of its standard output is copied to the test's
/// standard error.
pub fn spawn_serve(
    listen: &str,
    data: &Path,
    config: Option<&Path>,
) -> Result<(Child, SocketAddr), String> {
    spawn_serve_with(listen, data, config, &[])
}

/// [`spawn_serve`] with more arguments (`--redis URL` ...).
pub fn spawn_serve_with(
    listen: &str,
    data: &Path,
    config: Option<&Path>,
    extra: &[&str],
) -> Result<(Child, SocketAddr), String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duplex"));
    command
        .arg("serve")
        .args(["--listen", listen])
        .arg("--data")
        .arg(data)
        .args(extra);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start duplex serve");
    let stdout = child.stdout.take().unwrap();
    let (first, line) = mpsc::channel();
    // Reads the standard output to its end, so the server never blocks on a
    // full pipe.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = first.send(l);
        }
        for l in lines.map_while(Result::ok) {
            eprintln!("duplex serve: {l}");
        }
    });
    let fail = |mut child: Child, message: String| {
        let _ = child.kill();
        let status = child.wait();
        Err(format!("{message}; duplex serve ended with {status:?}"))
    };
    match line.recv_timeout(START_LIMIT) {
        Ok(first) => match listen_addr(&first) {
            Some(addr) => Ok((child, addr)),
            None => fail(
                child,
                format!("unexpected first line of duplex serve: {first:?}"),
            ),
        },
        Err(e) => fail(child, format!("duplex serve printed no first line ({e})")),
    }
}

/// The address in `listening on ADDR`, `listening on http://ADDR` or
/// `listening on http://ADDR/ ...`.
pub fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    let word = rest.split_whitespace().next()?;
    let host = word.rsplit("://").next()?;
    host.trim_end_matches('/').parse().ok()
}
