//! Many idle connections to `duplex echo`: all stay open and answer, and each
//! costs the server little memory.

mod common;

use std::io::Write;

use common::{Echo, frame, open, read_frame};

const CONNECTIONS: usize = 10_000;

/// Raises this process's open-file limit to its hard limit; children inherit it.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

#[test]
fn ten_thousand_idle_connections() {
    let limit = raise_open_file_limit();
    assert!(
        limit >= CONNECTIONS as u64 + 100,
        "the open-file limit ({limit}) is too low for {CONNECTIONS} connections"
    );
    let echo = Echo::start(&["--threads", "1"]);
    // Warm up: the first connection sets up what every later one shares.
    let mut first = open(echo.addr);
    first.write_all(&frame(0x81, b"warm")).unwrap();
    assert_eq!(read_frame(&mut first), (0x81, b"warm".to_vec()));
    let before = echo.rss_kib();

    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(open(echo.addr));
    }
    let after = echo.rss_kib();
    let per_connection = (after.saturating_sub(before) * 1024) as f64 / CONNECTIONS as f64;
    eprintln!(
        "{CONNECTIONS} idle connections: resident memory {before} KiB -> {after} KiB, \
         {per_connection:.0} bytes per connection"
    );

    // Every 500th connection still answers.
    for (i, ws) in connections.iter_mut().enumerate().step_by(500) {
        let text = format!("connection {i}");
        ws.write_all(&frame(0x81, text.as_bytes())).unwrap();
        assert_eq!(read_frame(ws), (0x81, text.into_bytes()));
    }
    assert!(
        per_connection < 8192.0,
        "{per_connection:.0} bytes per idle connection; the goal is under 8 KiB"
    );
}
