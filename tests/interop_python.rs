//! Interop with Python `websockets` (tests/peers/python/peer.py), both ways:
//! their client against our server, our client against their server, over
//! ws:// and wss://, with permessage-deflate off (the tests without `deflate`
//! in their name: the peer runs with compression off) and on (the `deflate_`
//! tests). The peer is installed by scripts/setup-peers.sh; without it these
//! tests fail and say so.

use duplex::Error;
use duplex_interop::scenario::{self, deflate, start_their_server};
use duplex_interop::{Peer, within};

const PEER: Peer = Peer::Python;

#[tokio::test]
async fn their_client_against_our_server() {
    scenario::their_client_our_server(PEER, false).await;
}

#[tokio::test]
async fn their_client_against_our_server_over_tls() {
    scenario::their_client_our_server(PEER, true).await;
}

#[tokio::test]
async fn our_client_messages_echo_unchanged() {
    scenario::our_client_messages(PEER).await;
}

#[tokio::test]
async fn their_fragmented_messages_arrive_whole() {
    scenario::their_fragmented_messages_arrive_whole(PEER).await;
}

#[tokio::test]
async fn our_fragmented_messages_arrive_whole() {
    scenario::our_fragmented_messages_arrive_whole(PEER).await;
}

#[tokio::test]
async fn ping_and_pong_both_ways() {
    scenario::ping_pong_both_ways(PEER).await;
}

#[tokio::test]
async fn our_close_code_and_reason_reach_them() {
    scenario::our_close_reaches_them(PEER).await;
}

#[tokio::test]
async fn their_close_code_and_reason_reach_us() {
    scenario::their_close_reaches_us(PEER).await;
}

#[tokio::test]
async fn our_client_over_tls() {
    scenario::our_client_over_tls(PEER).await;
}

// ----- permessage-deflate on at both ends -----

#[tokio::test]
async fn deflate_our_client_messages_echo_unchanged() {
    deflate::our_client_messages(PEER).await;
}

#[tokio::test]
async fn deflate_our_client_reduced_offer() {
    deflate::our_client_reduced_offer(PEER).await;
}

#[tokio::test]
async fn deflate_our_client_follows_their_limits() {
    deflate::our_client_their_limits(PEER).await;
}

#[tokio::test]
async fn deflate_saves_bytes_on_the_wire() {
    deflate::our_client_saves_bytes(PEER).await;
}

#[tokio::test]
async fn deflate_their_client_against_our_server() {
    deflate::their_client_messages(PEER).await;
}

#[tokio::test]
async fn deflate_their_client_reduced_offer() {
    deflate::their_client_reduced_offer(PEER).await;
}

#[tokio::test]
async fn deflate_their_client_follows_our_limits() {
    deflate::their_client_our_limits(PEER).await;
}

/// websockets refuses a client that offers none of its subprotocols (or none
/// at all) with HTTP 400; we report that as a rejection with the status.
#[tokio::test]
async fn no_common_subprotocol_is_refused_by_them() {
    let server = start_their_server(PEER, None).await;
    let url = format!("ws://127.0.0.1:{}/no-protocol", server.port());
    let offers = [
        duplex::ClientBuilder::new(&url).protocol("x-unknown"),
        duplex::ClientBuilder::new(&url),
    ];
    for builder in offers {
        match within("connecting", builder.connect()).await {
            Err(err @ Error::Rejected(_)) => {
                assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST), "{err}");
            }
            Err(other) => panic!("wanted a 400 rejection, got: {other}"),
            Ok(ws) => panic!("they accepted, agreeing on {:?}", ws.protocol()),
        }
    }
}
