//! The y-websocket wire protocol (y-protocols), on top of the lib0 codec of
//! `yrs`.
//!
//! Every WebSocket message is binary and carries exactly one message:
//! a varUint type, then
//!
//! - `0` sync: a varUint sub-type and a varByteArray: `0` SyncStep1 (a state
//!   vector), `1` SyncStep2 (an update), `2` Update (an update);
//! - `1` awareness: a varByteArray holding a varUint count, then for each
//!   client a varUint client id, a varUint clock and a varString of JSON
//!   (`null` for a client that left);
//! - `3` query awareness: nothing more;
//! - `2` auth, and any other type: not used by the server ([`Incoming::Other`]).
//!
//! [`decode`] never panics: whatever the bytes, it returns a message or an
//! error saying what is wrong. Updates are checked later, by
//! [`yrs::Update::decode_v1`], before anything is stored.

use yrs::StateVector;
use yrs::encoding::read::Cursor;
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;

/// One message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// SyncStep1: the client's state vector; the server answers with
    /// SyncStep2, what the client is missing.
    SyncStep1(StateVector),
    /// SyncStep2 or Update: an update (v1 encoding) to apply, not yet
    /// validated.
    Update(Vec<u8>),
    /// An awareness update.
    Awareness(AwarenessUpdate),
    /// Query awareness: the client asks for every awareness state.
    QueryAwareness,
    /// A message type the server does not act on (auth, or an unknown type).
    Other(u8),
}

/// Why a message could not be read; the text is safe to send as a close
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

/// Decodes one client message.
///
/// # Errors
///
/// A [`WireError`] when the bytes are not one well-formed y-websocket
/// message: empty, truncated, an unknown sync sub-type, a bad state vector
/// or awareness update, or bytes left over after the message.
pub fn decode(bytes: &[u8]) -> Result<Incoming, WireError> {
    if bytes.is_empty() {
        return Err(WireError("empty y-websocket message"));
    }
    let mut decoder = DecoderV1::new(Cursor::new(bytes));
    // The decoder returns errors on bad input; the guard is for a panic in
    // `yrs` on input nobody thought of, which must not end the connection's
    // task.
    let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Message::decode(&mut decoder)
    }))
    .map_err(|_| WireError("malformed y-websocket message"))?
    .map_err(|_| WireError("malformed y-websocket message"))?;
    let incoming = match message {
        Message::Sync(SyncMessage::SyncStep1(sv)) => Incoming::SyncStep1(sv),
        Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
            Incoming::Update(update)
        }
        Message::Awareness(update) => Incoming::Awareness(update),
        Message::AwarenessQuery => Incoming::QueryAwareness,
        Message::Auth(_) => Incoming::Other(yrs::sync::protocol::MSG_AUTH),
        Message::Custom(tag, _) => Incoming::Other(tag),
    };
    // The y-websocket provider sends one message per WebSocket message.
    if decoder_rest(&mut decoder) {
        return Err(WireError("bytes left over after the y-websocket message"));
    }
    Ok(incoming)
}

/// Whether the decoder has bytes left.
fn decoder_rest(decoder: &mut DecoderV1<'_>) -> bool {
    use yrs::encoding::read::Read;
    decoder.read_u8().is_ok()
}

/// SyncStep1 with the server's state vector.
pub fn sync_step1(sv: &StateVector) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep1(sv.clone())).encode_v1()
}

/// SyncStep2 with an update (what the peer is missing).
pub fn sync_step2(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep2(update)).encode_v1()
}

/// An Update message.
pub fn update(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update)).encode_v1()
}

/// An awareness message.
pub fn awareness(update: AwarenessUpdate) -> Vec<u8> {
    Message::Awareness(update).encode_v1()
}

/// A query awareness message: asks for every awareness state.
pub fn query_awareness() -> Vec<u8> {
    Message::AwarenessQuery.encode_v1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use yrs::sync::awareness::AwarenessUpdateEntry;
    use yrs::{Doc, ReadTxn, Text, Transact};

    fn some_update() -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("codemirror");
        text.push(&mut doc.transact_mut(), "hello");
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    fn round_trips() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        text.push(&mut doc.transact_mut(), "x");
        let sv = doc.transact().state_vector();
        assert_eq!(decode(&sync_step1(&sv)), Ok(Incoming::SyncStep1(sv)));
        let u = some_update();
        assert_eq!(
            decode(&sync_step2(u.clone())),
            Ok(Incoming::Update(u.clone()))
        );
        assert_eq!(decode(&update(u.clone())), Ok(Incoming::Update(u)));
        let mut clients = HashMap::new();
        clients.insert(
            yrs::block::ClientID::new(42),
            AwarenessUpdateEntry {
                clock: 3,
                json: r#"{"user":{"name":"ann"}}"#.into(),
            },
        );
        let aw = AwarenessUpdate { clients };
        assert_eq!(decode(&awareness(aw.clone())), Ok(Incoming::Awareness(aw)));
        assert_eq!(decode(&[3]), Ok(Incoming::QueryAwareness));
        assert_eq!(query_awareness(), [3]);
    }

    #[test]
    fn bytes_from_the_javascript_provider() {
        // What y-protocols writes for SyncStep1 of an empty document:
        // type 0, sub-type 0, a varByteArray of length 1 holding 0 clients.
        assert_eq!(
            decode(&[0, 0, 1, 0]),
            Ok(Incoming::SyncStep1(StateVector::default()))
        );
        // An empty update (SyncStep2 of a peer that has nothing to add).
        assert_eq!(decode(&[0, 1, 2, 0, 0]), Ok(Incoming::Update(vec![0, 0])));
        // Awareness of client 7, clock 1, state null.
        let bytes = [1, 8, 1, 7, 1, 4, b'n', b'u', b'l', b'l'];
        let Ok(Incoming::Awareness(aw)) = decode(&bytes) else {
            panic!("not awareness");
        };
        assert_eq!(&*aw.clients[&yrs::block::ClientID::new(7)].json, "null");
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &[][..],
            &[0],
            &[0, 0],
            &[0, 9, 0],
            &[0, 2, 5, 1, 2],
            &[0, 0, 3, 0xff, 0xff, 0xff],
            &[1, 4, 1, 7, 1],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            &[3, 0],
            &[0, 1, 2, 0, 0, 7],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode(&[2, 1]), Ok(Incoming::Other(2)));
    }

    #[test]
    fn no_panic_on_any_short_input() {
        // Every message of up to 3 bytes, and random longer ones.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = decode(&[a, b]);
                let _ = decode(&[a, b, a ^ b]);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            if let Ok(Incoming::Update(u)) = decode(&bytes) {
                let _ = yrs::Update::decode_v1(&u);
            }
        }
    }
}
