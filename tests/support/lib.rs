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
//! accepts offers as `Acceptor` does by default, or as told by
//! [`EchoServer::start_with`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

mod cert;
mod echo_server;
mod messages;
mod peer;
pub mod scenario;
mod tap;

pub use crate::cert::TestCert;
pub use crate::echo_server::{ConnRecord, EchoServer};
pub use crate::messages::{
    assert_message, big_binary, big_text, describe, json_message, json_text, next_message,
    partly_random_binary,
};
pub use crate::peer::{ClientRun, Peer, PeerServer, run_client};
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
