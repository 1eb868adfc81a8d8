//! The opening handshake end to end, as bytes: both roles, and the bytes that
//! follow the head in the same read.

use bytes::BytesMut;
use duplex_proto::handshake::{
    self, ClientRequest, Extension, HandshakeError, parse_request, parse_response, validate_request,
};
use duplex_proto::rng::SequenceMask;
use duplex_proto::{Connection, Limits, Message};
use http::StatusCode;

/// The client handshake of RFC 6455 section 1.2, with the answer section 1.3
/// computes.
#[test]
fn rfc_section_1_2_example() {
    let bytes = b"GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let (request, len) = parse_request(bytes, &Limits::default()).unwrap().unwrap();
    assert_eq!(len, bytes.len());
    assert_eq!(request.headers()["origin"], "http://example.com");
    let upgrade = validate_request(&request).unwrap();
    let response = upgrade.response(Some("chat"), &[]).unwrap();
    let mut wire = BytesMut::new();
    handshake::write_response(&response, &mut wire);
    assert_eq!(
        std::str::from_utf8(&wire).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\n\
         upgrade: websocket\r\n\
         connection: Upgrade\r\n\
         sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         sec-websocket-protocol: chat\r\n\r\n"
    );
}

#[test]
fn frames_in_the_same_read_as_the_head_reach_the_connection() {
    let (request, client_hs) =
        ClientRequest::new("ws://localhost:8080/ws?token=abc".parse().unwrap())
            .protocol("v1")
            .extension(Extension::new("x-test").with_param("a", Some("1")))
            .build(&mut SequenceMask::new(9))
            .unwrap();

    // The client writes its head and, eagerly, a first message.
    let mut client =
        Connection::client_with_mask_source(Limits::default(), Box::new(SequenceMask::new(1)));
    client.send(Message::text("early")).unwrap();
    let mut wire = BytesMut::new();
    handshake::write_request(&request, &mut wire);
    while let Some(chunk) = client.take_output() {
        wire.extend_from_slice(&chunk);
    }

    // Server side, fed one byte at a time until the head is whole.
    let config = Limits::default();
    let mut seen = 0;
    let (request, head_len) = loop {
        seen += 1;
        if let Some(parsed) = parse_request(&wire[..seen], &config).unwrap() {
            break parsed;
        }
    };
    assert_eq!(request.uri(), "/ws?token=abc");
    let upgrade = validate_request(&request).unwrap();
    assert_eq!(upgrade.protocols(), ["v1"]);
    assert_eq!(upgrade.extensions()[0].name, "x-test");
    let response = upgrade.response(Some("v1"), &[]).unwrap();

    let mut server = Connection::server(config.clone());
    server.receive(&wire[head_len..]);
    assert_eq!(server.next_message().unwrap(), Some(Message::text("early")));

    // The client reads the response (and the server's first frame with it).
    server.send(Message::text("welcome")).unwrap();
    let mut back = BytesMut::new();
    handshake::write_response(&response, &mut back);
    while let Some(chunk) = server.take_output() {
        back.extend_from_slice(&chunk);
    }
    let (response, len) = parse_response(&back, &config).unwrap().unwrap();
    let negotiated = client_hs.validate(&response).unwrap();
    assert_eq!(negotiated.protocol.as_deref(), Some("v1"));
    client.receive(&back[len..]);
    assert_eq!(
        client.next_message().unwrap(),
        Some(Message::text("welcome"))
    );
}

#[test]
fn error_response_bytes_for_a_plain_http_request() {
    let request = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
    let (request, _) = parse_request(request, &Limits::default()).unwrap().unwrap();
    let err = validate_request(&request).unwrap_err();
    assert_eq!(err, HandshakeError::NotUpgrade);
    let mut wire = BytesMut::new();
    handshake::write_response(&err.response(), &mut wire);
    let (response, len) = parse_response(&wire, &Limits::default()).unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["sec-websocket-version"], "13");
    let body = std::str::from_utf8(&wire[len..]).unwrap();
    assert!(body.contains("Upgrade: websocket"), "{body}");
    assert_eq!(
        response.headers()["content-length"],
        body.len().to_string().as_str()
    );
}
