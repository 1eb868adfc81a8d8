//! The opening handshake's parsers and validators on arbitrary bytes.
//!
//! The same bytes are read as a request (server side) and as a response (client
//! side), with `Limits::default()`. Invariants:
//! 1. A parsed head's length is within the input and `max_header_bytes`.
//! 2. Server: a request that validates gets a 101 answer (with the first
//!    offered subprotocol, which must be accepted) whose accept value is
//!    `accept_key(key)`; a request that fails gets `err.response()`. Either answer
//!    is written with `write_response` and parses back with `parse_response` to
//!    the same status, the head ending where the body starts. A 101 answer
//!    validates with a `ClientHandshake` whose accept value matches.
//! 3. Client: `parse_response` then `ClientHandshake::validate` never panic; a
//!    negotiated subprotocol or extension was offered (none are, so none may be).
#![no_main]

use bytes::BytesMut;
use duplex_proto::Limits;
use duplex_proto::handshake::{
    self, ClientRequest, HandshakeError, accept_key, parse_response, write_response,
};
use duplex_proto::rng::SequenceMask;
use http::{Response, StatusCode};
use libfuzzer_sys::fuzz_target;

/// Writes `response`, parses it back, and checks status and head length.
fn round_trip<B: handshake::Body>(response: &Response<B>) -> Response<()> {
    let mut wire = BytesMut::new();
    write_response(response, &mut wire);
    let (parsed, len) = match parse_response(&wire, &Limits::default()) {
        Ok(Some(parsed)) => parsed,
        other => panic!(
            "our own response does not parse back: {other:?}\n{:?}",
            String::from_utf8_lossy(&wire)
        ),
    };
    assert_eq!(parsed.status(), response.status());
    let body = response.body().as_bytes();
    if response.status().is_informational() {
        assert_eq!(len, wire.len());
    } else {
        assert_eq!(&wire[len..], body);
    }
    for (name, value) in response.headers() {
        assert!(
            parsed.headers().get_all(name).iter().any(|v| v == value),
            "header {name} lost in the round trip"
        );
    }
    parsed
}

fn server(data: &[u8], config: &Limits) {
    let (request, len) = match handshake::parse_request(data, config) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() < config.max_header_bytes);
            return;
        }
        Err(err) => {
            let response = err.response();
            assert_eq!(
                response.status(),
                err.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            );
            round_trip(&response);
            return;
        }
    };
    assert!(len <= data.len() && len <= config.max_header_bytes);

    match handshake::validate_request(&request) {
        Ok(upgrade) => {
            let protocol = upgrade.protocols().first().map(String::as_str);
            let response = upgrade
                .response(protocol, &[])
                .expect("answering with an offered protocol");
            let key = upgrade.key().expect("an HTTP/1.1 upgrade has a key");
            let accept = accept_key(key.as_bytes());
            assert_eq!(response.headers()["sec-websocket-accept"], accept.as_str());
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            let parsed = round_trip(&response);
            if let Some(protocol) = protocol {
                assert_eq!(parsed.headers()["sec-websocket-protocol"], protocol);
            }
            // Every extension offered may be answered.
            let _ = upgrade
                .response(None, upgrade.extensions())
                .expect("answering with the offered extensions");
        }
        Err(err) => {
            let response = err.response();
            assert!(!response.status().is_success());
            round_trip(&response);
        }
    }
}

fn client(data: &[u8], config: &Limits) {
    let (_, client_handshake) = ClientRequest::new("ws://h/".parse().unwrap())
        .build(&mut SequenceMask::new(1))
        .expect("client request builds");
    let (response, len) = match parse_response(data, config) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    assert!(len <= data.len() && len <= config.max_header_bytes);
    match client_handshake.validate(&response) {
        Ok(negotiated) => {
            // The client offered nothing, so nothing may be negotiated.
            assert_eq!(negotiated.protocol, None);
            assert!(negotiated.extensions.is_empty());
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        }
        Err(err) => {
            let _ = err.to_string();
            assert!(!matches!(err, HandshakeError::Malformed(_)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = Limits::default();
    server(data, &config);
    client(data, &config);
});
