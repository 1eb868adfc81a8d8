//! The closing handshake (RFC 6455 sections 5.5.1, 7.1), ready states, and what
//! is reported at the end.

mod util;

use bytes::Bytes;
use duplex_proto::frame::{OpCode, Role};
use duplex_proto::{
    CloseCode, CloseFrame, CloseStatus, Connection, Fragment, Message, ReadyState, SendError,
};
use util::{close_payload, conn, drain, feed, msg_to, sent_frames};

/// Moves all queued output from `from` into `to`.
fn pump(from: &mut Connection, to: &mut Connection) {
    while let Some(chunk) = from.take_output() {
        to.receive(&chunk);
    }
}

#[test]
fn received_close_is_echoed_with_its_code_and_nothing_follows() {
    for role in [Role::Server, Role::Client] {
        let mut c = conn(role);
        let mut wire = msg_to(role, OpCode::Close, &close_payload(4001, "bye now"));
        wire.extend(msg_to(role, OpCode::Text, b"after close"));
        assert_eq!(
            feed(&mut c, &wire),
            [Ok(Message::close(CloseCode(4001), "bye now"))],
            "data after a close frame is ignored"
        );
        let frames = sent_frames(&mut c);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.opcode, OpCode::Close);
        assert_eq!(&frames[0].payload[..], &close_payload(4001, "bye now")[..]);
        assert_eq!(c.ready_state(), ReadyState::Closing);
        assert!(c.is_close_handshake_done());
        assert_eq!(c.send(Message::text("late")), Err(SendError::Closed));
        assert_eq!(c.send(Message::ping(Bytes::new())), Err(SendError::Closed));
        // Server closes the TCP connection first (section 7.1.1); a client waits.
        assert_eq!(c.should_close_transport(), role == Role::Server);
    }
}

#[test]
fn close_without_code_is_echoed_empty_and_reported_as_1005() {
    let mut server = conn(Role::Server);
    assert_eq!(
        feed(&mut server, &msg_to(Role::Server, OpCode::Close, b"")),
        [Ok(Message::Close(None))]
    );
    let frames = sent_frames(&mut server);
    assert!(frames[0].payload.is_empty());
    server.transport_closed();
    let info = server.close_info().unwrap();
    assert_eq!(info.code, CloseCode::NO_STATUS);
    assert!(info.was_clean);
}

#[test]
fn client_initiated_close_handshake_is_clean() {
    let mut client = conn(Role::Client);
    let mut server = conn(Role::Server);
    assert_eq!(client.ready_state(), ReadyState::Open);

    client.close(CloseCode::NORMAL, "done").unwrap();
    assert_eq!(client.ready_state(), ReadyState::Closing);
    pump(&mut client, &mut server);
    assert_eq!(
        drain(&mut server),
        [Ok(Message::close(CloseCode::NORMAL, "done"))]
    );
    assert!(server.should_close_transport());

    pump(&mut server, &mut client);
    assert_eq!(
        drain(&mut client),
        [Ok(Message::close(CloseCode::NORMAL, "done"))]
    );
    assert!(client.is_close_handshake_done());
    assert!(
        !client.should_close_transport(),
        "the client waits for the server's TCP close"
    );

    server.transport_closed();
    client.receive_eof();
    assert!(drain(&mut client).is_empty());
    for c in [&client, &server] {
        assert_eq!(c.ready_state(), ReadyState::Closed);
        assert!(c.close_info().unwrap().was_clean);
    }
    assert_eq!(server.close_info().unwrap().reason, "done");
    assert_eq!(client.close_info().unwrap().code, CloseCode::NORMAL);
}

#[test]
fn server_initiated_close_handshake_is_clean() {
    let mut client = conn(Role::Client);
    let mut server = conn(Role::Server);
    server.close(CloseCode::GOING_AWAY, "restarting").unwrap();
    assert!(
        !server.should_close_transport(),
        "waits for the client's close"
    );
    pump(&mut server, &mut client);
    assert_eq!(
        drain(&mut client),
        [Ok(Message::close(CloseCode::GOING_AWAY, "restarting"))]
    );
    pump(&mut client, &mut server);
    assert_eq!(
        drain(&mut server),
        [Ok(Message::close(CloseCode::GOING_AWAY, "restarting"))]
    );
    assert!(server.should_close_transport());
    server.transport_closed();
    client.receive_eof();
    drain(&mut client);
    assert!(client.close_info().unwrap().was_clean);
    assert_eq!(client.close_info().unwrap().reason, "restarting");
}

#[test]
fn messages_in_flight_during_closing_are_still_delivered() {
    let mut client = conn(Role::Client);
    let mut server = conn(Role::Server);
    server.send(Message::text("last words")).unwrap();
    client.close(CloseCode::NORMAL, "").unwrap();
    pump(&mut server, &mut client);
    pump(&mut client, &mut server);
    assert_eq!(drain(&mut client), [Ok(Message::text("last words"))]);
    assert_eq!(
        drain(&mut server)[0],
        Ok(Message::close(CloseCode::NORMAL, ""))
    );
}

#[test]
fn ping_after_our_close_is_reported_but_not_answered() {
    let mut server = conn(Role::Server);
    server.close(CloseCode::NORMAL, "").unwrap();
    sent_frames(&mut server);
    assert_eq!(
        feed(&mut server, &msg_to(Role::Server, OpCode::Ping, b"?")),
        [Ok(Message::ping(&b"?"[..]))]
    );
    assert!(
        sent_frames(&mut server).is_empty(),
        "nothing is sent after our close"
    );
}

#[test]
fn eof_without_close_is_abnormal_1006() {
    let mut client = conn(Role::Client);
    // Half a frame, then the transport ends.
    let wire = msg_to(Role::Client, OpCode::Text, b"interrupted");
    client.receive(&wire[..5]);
    assert!(drain(&mut client).is_empty());
    client.receive_eof();
    assert!(drain(&mut client).is_empty());
    assert_eq!(client.ready_state(), ReadyState::Closed);
    let info = client.close_info().unwrap();
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(!info.was_clean);
}

#[test]
fn buffered_messages_are_delivered_before_eof_closes() {
    let mut server = conn(Role::Server);
    server.receive(&msg_to(Role::Server, OpCode::Text, b"one"));
    server.receive(&msg_to(Role::Server, OpCode::Text, b"two"));
    server.receive_eof();
    assert_eq!(server.ready_state(), ReadyState::Open);
    assert_eq!(
        drain(&mut server),
        [Ok(Message::text("one")), Ok(Message::text("two"))]
    );
    assert_eq!(server.ready_state(), ReadyState::Closed);
}

#[test]
fn failure_is_not_clean_and_reports_1006_locally() {
    let mut server = conn(Role::Server);
    let results = feed(&mut server, &msg_to(Role::Server, OpCode::Text, b"\xff"));
    assert!(results[0].is_err());
    assert!(server.should_close_transport());
    server.transport_closed();
    let info = server.close_info().unwrap();
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(!info.was_clean);
}

#[test]
fn codes_that_may_not_be_sent_are_refused() {
    let mut c = conn(Role::Client);
    for code in [1004u16, 1005, 1006, 1015, 2000, 999, 5000] {
        assert_eq!(
            c.close(CloseCode(code), ""),
            Err(SendError::InvalidCloseCode(code))
        );
    }
    let long = "x".repeat(124);
    assert_eq!(
        c.close(CloseCode::NORMAL, &long),
        Err(SendError::CloseReasonTooLong(124))
    );
    assert!(
        sent_frames(&mut c).is_empty(),
        "refused closes queue nothing"
    );
    assert_eq!(c.ready_state(), ReadyState::Open);
    c.close(CloseCode(4999), &"x".repeat(123)).unwrap();
    assert_eq!(c.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
}

#[test]
fn close_without_code_can_be_sent() {
    let mut c = conn(Role::Server);
    c.send(Message::Close(None)).unwrap();
    let frames = sent_frames(&mut c);
    assert_eq!(frames[0].header.opcode, OpCode::Close);
    assert!(frames[0].payload.is_empty());
    assert_eq!(c.sent_close(), Some(&CloseStatus::Empty));
}

#[test]
fn control_payload_limit_on_send() {
    let mut c = conn(Role::Server);
    assert_eq!(
        c.send(Message::ping(vec![0u8; 126])),
        Err(SendError::ControlPayloadTooLong(126))
    );
    c.send(Message::pong(vec![0u8; 125])).unwrap();
}

#[test]
fn fragment_sequence_is_enforced_on_send() {
    let mut c = conn(Role::Client);
    assert_eq!(
        c.send_fragment(Fragment::Continuation, Bytes::new(), true),
        Err(SendError::NoMessageInProgress)
    );
    c.send_fragment(Fragment::Text, &b"\xe2\x82"[..], false)
        .unwrap();
    assert_eq!(
        c.send(Message::text("x")),
        Err(SendError::MessageInProgress)
    );
    assert_eq!(
        c.send_fragment(Fragment::Binary, Bytes::new(), true),
        Err(SendError::MessageInProgress)
    );
    // Control frames may go between fragments.
    c.send(Message::ping(Bytes::new())).unwrap();
    // Text that would not be UTF-8 is refused and leaves the message open.
    assert_eq!(
        c.send_fragment(Fragment::Continuation, &b"("[..], true),
        Err(SendError::InvalidUtf8)
    );
    c.send_fragment(Fragment::Continuation, &b"\xac!"[..], true)
        .unwrap();
    let frames = sent_frames(&mut c);
    let kinds: Vec<_> = frames
        .iter()
        .map(|f| (f.header.opcode, f.header.fin))
        .collect();
    assert_eq!(
        kinds,
        [
            (OpCode::Text, false),
            (OpCode::Ping, true),
            (OpCode::Continuation, true)
        ]
    );
    let mut server = conn(Role::Server);
    let mut wire = bytes::BytesMut::new();
    for f in frames {
        f.encode(&mut wire);
    }
    let results = feed(&mut server, &wire);
    assert_eq!(results.last(), Some(&Ok(Message::text("€!"))));
}

#[test]
fn close_frame_reason_round_trips() {
    let frame = CloseFrame::new(CloseCode::POLICY_VIOLATION, "origin not allowed");
    let mut c = conn(Role::Server);
    c.send(Message::Close(Some(frame.clone()))).unwrap();
    let sent = sent_frames(&mut c);
    assert_eq!(CloseFrame::parse(&sent[0].payload).unwrap(), Some(frame));
}

#[test]
fn after_transport_closed_nothing_can_be_sent() {
    let mut c = conn(Role::Server);
    c.transport_closed();
    assert_eq!(c.send(Message::text("x")), Err(SendError::Closed));
    assert_eq!(c.ready_state(), ReadyState::Closed);
    assert!(!c.should_close_transport());
}

#[test]
fn prepared_messages_decode_like_any_other_and_obey_the_close_rules() {
    use duplex_proto::PreparedMessage;
    let big = PreparedMessage::binary(vec![7u8; 70_000]);
    let text = PreparedMessage::text("tick");
    let mut server = conn(Role::Server);
    server.send_prepared(&text).unwrap();
    server.send_prepared(&big).unwrap();
    let frames = sent_frames(&mut server);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].payload, Bytes::from_static(b"tick"));
    assert_eq!(frames[1].payload.len(), 70_000);

    // A client masks: it encodes the message afresh.
    let mut client = conn(Role::Client);
    client.send_prepared(&text).unwrap();
    let frames = sent_frames(&mut client);
    assert!(frames[0].header.mask.is_some());

    server.close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(server.send_prepared(&text), Err(SendError::Closed));
    let mut fragmenting = conn(Role::Server);
    fragmenting
        .send_fragment(Fragment::Text, Bytes::from_static(b"a"), false)
        .unwrap();
    assert_eq!(
        fragmenting.send_prepared(&text),
        Err(SendError::MessageInProgress)
    );
}
