//! The sending side: prepared messages written straight to the transport,
//! and the count of frames still queued.

use bytes::Bytes;
use duplex_proto::{Connection, Limits, Message, PreparedMessage, SendError};

fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = conn.take_output() {
        all.extend_from_slice(&chunk);
    }
    all
}

#[test]
fn a_prepared_frame_goes_to_the_transport_whole_when_nothing_waits() {
    let prepared = PreparedMessage::text("hello");
    let mut conn = Connection::server(Limits::default());
    let mut seen = Vec::new();
    let taken = conn
        .send_prepared_direct(&prepared, |frame| {
            seen.extend_from_slice(frame);
            frame.len()
        })
        .unwrap();
    assert_eq!(seen, prepared.frame()[..]);
    assert_eq!(taken, seen.len());
    assert!(!conn.has_output());
    assert_eq!(conn.queued_frames(), 0);
}

#[test]
fn the_rest_of_a_partly_taken_frame_is_queued_in_order() {
    let prepared = PreparedMessage::binary(Bytes::from(vec![7u8; 300]));
    let mut conn = Connection::server(Limits::default());
    let taken = conn.send_prepared_direct(&prepared, |_| 100).unwrap();
    assert_eq!(taken, 100);
    assert_eq!(conn.buffered_amount(), prepared.frame().len() - 100);
    assert_eq!(conn.queued_frames(), 1);
    // Output waits now: the next frame is queued behind it, not offered.
    let next = PreparedMessage::text("next");
    let offered = conn
        .send_prepared_direct(&next, |_| panic!("offered ahead of waiting output"))
        .unwrap();
    assert_eq!(offered, 0);
    assert_eq!(conn.queued_frames(), 2);
    let mut expected = prepared.frame()[100..].to_vec();
    expected.extend_from_slice(next.frame());
    assert_eq!(drain(&mut conn), expected);
    assert_eq!(conn.queued_frames(), 0);
}

#[test]
fn nothing_taken_queues_the_whole_frame() {
    let prepared = PreparedMessage::text("wait");
    let mut conn = Connection::server(Limits::default());
    assert_eq!(conn.send_prepared_direct(&prepared, |_| 0).unwrap(), 0);
    assert_eq!(drain(&mut conn), prepared.frame()[..]);
}

#[test]
fn a_client_masks_its_own_copy_and_never_offers_the_shared_frame() {
    let prepared = PreparedMessage::text("from a client");
    let mut conn = Connection::client(Limits::default());
    conn.send_prepared_direct(&prepared, |_| panic!("a client offered an unmasked frame"))
        .unwrap();
    assert_eq!(conn.queued_frames(), 1);
    assert_ne!(drain(&mut conn), prepared.frame()[..]);
}

#[test]
fn after_a_close_nothing_is_offered() {
    let mut conn = Connection::server(Limits::default());
    conn.send(Message::Close(None)).unwrap();
    drain(&mut conn);
    let result = conn.send_prepared_direct(&PreparedMessage::text("late"), |_| {
        panic!("offered after the close frame")
    });
    assert_eq!(result, Err(SendError::Closed));
}

#[test]
fn queued_frames_counts_frames_until_their_last_byte_is_taken() {
    let mut conn = Connection::server(Limits::default());
    conn.send(Message::text("one")).unwrap(); // 2 + 3 bytes
    conn.send(Message::text("two")).unwrap();
    conn.send(Message::Ping(Bytes::new())).unwrap(); // 2 bytes
    assert_eq!(conn.queued_frames(), 3);
    conn.advance_output(4);
    assert_eq!(conn.queued_frames(), 3, "the first frame has a byte left");
    conn.advance_output(1);
    assert_eq!(conn.queued_frames(), 2);
    conn.advance_output(5);
    assert_eq!(conn.queued_frames(), 1);
    conn.advance_output(2);
    assert_eq!(conn.queued_frames(), 0);
    assert!(!conn.has_output());
}
