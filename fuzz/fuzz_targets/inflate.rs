//! permessage-deflate on arbitrary input, two ways.
//!
//! Input: `[flags, split, data...]`. `flags` bit 0: the receiving end is a client
//! (else a server); bit 1: no context takeover; bits 2-4: window bits
//! (9 + value % 7); bit 5: a 4 KiB message limit (else 1 MiB).
//!
//! 1. Hostile peer: `data` is fed as wire bytes to a `Connection` with deflate
//!    on, in one read and in reads cut by `split`. Both give the same results;
//!    at most one error, the last; no message over the limit; text is UTF-8.
//! 2. Round trip: `data` sent as a binary and as a text message (lossily made
//!    UTF-8) by a peer with the same parameters arrives unchanged, and the
//!    compressed frames are no larger than the data plus a small overhead.
#![no_main]

use duplex_proto::deflate::DeflateParams;
use duplex_proto::rng::SequenceMask;
use duplex_proto::{Limits, Connection, Message, ProtocolError, Role};
use libfuzzer_sys::fuzz_target;

fn connection(role: Role, params: DeflateParams, config: Limits) -> Connection {
    let mut conn = match role {
        Role::Server => Connection::server(config),
        Role::Client => Connection::client_with_mask_source(config, Box::new(SequenceMask::new(5))),
    };
    conn.set_deflate(params);
    conn
}

fn drain(conn: &mut Connection, out: &mut Vec<Result<Message, ProtocolError>>) {
    loop {
        match conn.next_message() {
            Ok(Some(m)) => out.push(Ok(m)),
            Ok(None) => return,
            Err(e) => out.push(Err(e)),
        }
    }
}

fn take_all(conn: &mut Connection) -> Vec<u8> {
    let mut wire = Vec::new();
    while let Some(chunk) = conn.take_output() {
        wire.extend_from_slice(&chunk);
    }
    wire
}

fuzz_target!(|input: &[u8]| {
    let [flags, split, data @ ..] = input else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let peer_role = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let bits = 9 + (flags >> 2 & 0b111) % 7;
    let params = DeflateParams {
        local_no_context_takeover: flags & 2 != 0,
        remote_no_context_takeover: flags & 2 != 0,
        local_max_window_bits: bits,
        remote_max_window_bits: bits,
        level: 6,
        threshold: 0,
    };
    let max = if flags & 0x20 != 0 { 4096 } else { 1 << 20 };
    let config = Limits::default().max_message_size(max);

    // 1. Hostile bytes, one read against split reads.
    let mut whole = Vec::new();
    let mut conn = connection(role, params, config.clone());
    conn.receive(data);
    drain(&mut conn, &mut whole);
    let mut pieces = Vec::new();
    let mut conn = connection(role, params, config.clone());
    let step = usize::from(*split).max(1);
    for chunk in data.chunks(step) {
        conn.receive(chunk);
        drain(&mut conn, &mut pieces);
    }
    assert_eq!(whole, pieces, "split reads changed the results");
    let errors = whole.iter().filter(|r| r.is_err()).count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(whole.last().unwrap().is_err());
    }
    for result in &whole {
        if let Ok(Message::Text(t)) = result {
            assert!(t.len() <= max);
        }
        if let Ok(Message::Binary(b)) = result {
            assert!(b.len() <= max);
        }
    }

    // 2. Our compressor and decompressor agree on any data.
    if data.len() > max {
        return;
    }
    let text = String::from_utf8_lossy(data).into_owned();
    if text.len() > max {
        return;
    }
    let messages = [Message::binary(data.to_vec()), Message::text(text)];
    let mut sender = connection(peer_role, params, config.clone());
    let mut receiver = connection(role, params, config);
    for m in &messages {
        sender.send(m.clone()).unwrap();
    }
    let wire = take_all(&mut sender);
    // Worst case DEFLATE expansion: 5 bytes per 16 KiB stored block, plus headers.
    let bound = messages
        .iter()
        .map(|m| m.len() + m.len() / 16384 * 5 + 64)
        .sum::<usize>();
    assert!(
        wire.len() <= bound,
        "{} compressed bytes for {bound}",
        wire.len()
    );
    receiver.receive(&wire);
    let mut got = Vec::new();
    drain(&mut receiver, &mut got);
    let expected: Vec<_> = messages.into_iter().map(Ok).collect();
    assert_eq!(got, expected);
});
