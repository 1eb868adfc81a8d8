//! Interop with Node `ws` (tests/peers/node/peer.js), both ways:
//! their client against our server, our client against their server, over
//! ws:// and wss://, with permessage-deflate off (the tests without `deflate`
//! in their name: the peer runs with compression off) and on (the `deflate_`
//! tests). The peer is installed by scripts/setup-peers.sh; without it these
//! tests fail and say so.

use duplex::{CloseCode, Message};
use duplex_interop::scenario::{self, start_their_server};
use duplex_interop::{Peer, assert_message, within};

const PEER: Peer = Peer::Node;

duplex_interop::interop_tests!(PEER);

/// none; we see no subprotocol, and so do they.
#[tokio::test]
async fn no_common_subprotocol_agrees_on_none() {
    let server = start_their_server(PEER, None).await;
    let url = format!("ws://127.0.0.1:{}/no-protocol", server.port());
    let builder = duplex::ClientBuilder::new(&url).protocol("x-unknown");
    let mut ws = scenario::connect(builder, "connecting").await;
    assert_eq!(ws.protocol(), None);
    let reply = scenario::ask(&mut ws, "cmd:protocol").await;
    assert_message(
        &reply,
        &Message::text("protocol:"),
        "their view of the subprotocol",
    );
    within("closing", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    assert!(ws.close_info().expect("closed").was_clean);
}
