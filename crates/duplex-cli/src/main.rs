//! `duplex`: the command-line tool of the duplex WebSocket system.
//!
//! - `duplex serve`: the real-time hub (channels, presence, history, pages).
//! - `duplex connect`: a client in the manner of wscat.
//! - `duplex echo`: an echo server, strict and fast, for conformance suites and
//!   benchmarks.
//! - `duplex bench`: load and latency figures for an echo or broadcast server.

mod bench;
mod connect;
mod echo;
mod nofile;
mod serve;

use std::process::ExitCode;

/// jemalloc, not the system's allocator: it keeps each size of allocation in
/// slabs of its own and gives unused pages back after a while (10 s), so the
/// buffers of a storm of handshakes, freed once the connections are
/// upgraded, leave nothing behind. glibc's malloc keeps them pinned between
/// the connections' long-lived state: 10,000 clients connecting at once left
/// `duplex serve` holding 18.3 KiB each with it, 4.8 KiB with jemalloc (4.5
/// KiB either way when they connect 20 at a time; docs/BENCHMARKS.md).
/// jemalloc does not build for MSVC, which keeps the system's allocator, as
/// does a build without the `jemalloc` feature.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};

/// The duplex command: serve the real-time WebSocket hub, and connect to,
/// echo and benchmark WebSocket servers.
#[derive(Debug, Parser)]
#[command(name = "duplex", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the real-time hub: channels, presence, history, the chat and
    /// ticker pages, the publish API and metrics, on one port.
    Serve(serve::Args),
    /// Connect to a WebSocket server: stdin lines go out as text messages,
    /// received messages are printed.
    Connect(connect::Args),
    /// Run an echo server: every text and binary message comes back
    /// unchanged (for conformance suites and benchmarks).
    Echo(echo::Args),
    /// Load a WebSocket echo (or broadcast) server and report messages/s and
    /// latency percentiles.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Best effort: where the limit cannot be raised, it stays as it is, and
    // the commands that need many connections say so when they run out.
    let _ = nofile::raise_nofile(0, "duplex");
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Echo(args) => echo::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("duplex: {}", duplex_hub::error_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// The listen backlog asked for: connections the kernel completes and holds
/// until the server accepts them. When every client of a server comes at
/// once (a restart, a network that came back), tokio's default of 1,024
/// overflows, and each connection the kernel drops waits a second or more
/// for the client's retry. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

/// A listening socket on `addr`, with address reuse (as tokio's `bind`) and
/// a backlog of [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Parses a byte size: a number with an optional K, M or G suffix (binary).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 65536, 64K, 16M)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown size unit {other:?}; use K, M or G")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn the_open_file_limit_is_raised_or_the_shortfall_named() {
        let soft = nofile::raise_nofile(0, "nothing").unwrap();
        // Raised to the hard limit (or kept, under an unlimited one): asking
        // again changes nothing.
        assert_eq!(nofile::raise_nofile(soft, "as many").unwrap(), soft);
        let err = nofile::raise_nofile(u64::MAX - 1, "a million clients").unwrap_err();
        assert!(
            err.contains("a million clients need") || err.contains("cannot raise"),
            "{err}"
        );
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
