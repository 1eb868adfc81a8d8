//! Interop with Python `websockets` (tests/peers/python/peer.py), both ways:
//! their client against our server, our client against their server, over
//! ws:// and wss://, with permessage-deflate off (the tests without `deflate`
//! in their name: the peer runs with compression off) and on (the `deflate_`
//! tests). The peer is installed by scripts/setup-peers.sh; without it these
//! tests fail and say so.

use duplex::Error;
use duplex_interop::scenario::start_their_server;
use duplex_interop::{Peer, within};

const PEER: Peer = Peer::Python;

duplex_interop::interop_tests!(PEER);

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
