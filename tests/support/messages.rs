//! The messages the tests exchange, made as the peers make them, and the
//! helpers that wait for one and compare it.

use bytes::Bytes;
use duplex::{Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{BIG, within};

/// The 16 MiB binary message: bytes `i % 251`, as the peers make it.
pub fn big_binary() -> Bytes {
    (0..BIG)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The 16 MiB text message (a little under, in whole repeats of a unit with 2-,
/// 3- and 4-byte characters), as the peers make it.
pub fn big_text() -> String {
    let unit = "duplex ☃ héllo 𝄞 ";
    unit.repeat(BIG / unit.len())
}

/// Message `i` of the compression tests' JSON exchanges, as the peers make it
/// (`json_message` in peer.py): similar to its neighbours, which is what
/// context takeover feeds on.
pub fn json_message(i: usize) -> String {
    format!(
        concat!(
            r#"{{"seq":{},"type":"update","user":"user-{}","#,
            r#""items":[{{"id":{},"qty":{}}},{{"id":{},"qty":{}}}],"#,
            r#""note":"duplex interop over permessage-deflate ☃"}}"#
        ),
        i,
        i % 7,
        i,
        i % 5,
        i + 1,
        (i + 1) % 5
    )
}

/// JSON-like lines of a fixed length, with a counter and a scrambled value, as
/// many whole lines as fit in `size` bytes, as the peers make it: it
/// compresses, but only partly (about 7 to 1 with zlib's defaults).
pub fn json_text(size: usize) -> String {
    let line = |n: usize| {
        format!(
            "{{\"seq\":{n:08},\"user\":\"user-{:03}\",\"event\":\"tick ☃\",\"value\":{:07}}}\n",
            n % 1000,
            n * 7919 % 1_000_003
        )
    };
    let count = size / line(0).len();
    let mut text = String::with_capacity(count * line(0).len());
    for n in 0..count {
        text.push_str(&line(n));
    }
    text
}

/// `size` bytes (a multiple of 16) of 16-byte records, as the peers make
/// them: a big-endian counter, a multiplicative hash of it (high entropy),
/// then 8 repeated bytes; it compresses about 2 to 1.
pub fn partly_random_binary(size: usize) -> Bytes {
    assert_eq!(size % 16, 0, "a whole number of records");
    let mut data = Vec::with_capacity(size);
    for n in 0..(size / 16) as u32 {
        data.extend_from_slice(&n.to_be_bytes());
        data.extend_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
        data.extend_from_slice(&[(n % 251) as u8; 8]);
    }
    data.into()
}

/// A short description of a message, for failure messages: kind, length and
/// the start of its payload.
pub fn describe(message: &Message) -> String {
    let (kind, data): (&str, &[u8]) = match message {
        Message::Text(text) => ("Text", text.as_bytes()),
        Message::Binary(data) => ("Binary", data),
        Message::Ping(data) => ("Ping", data),
        Message::Pong(data) => ("Pong", data),
        Message::Close(None) => return "Close(no code)".to_owned(),
        Message::Close(Some(frame)) => return format!("Close({frame})"),
    };
    let shown = String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
    let more = if data.len() > 40 { "..." } else { "" };
    format!("{kind}({} bytes: {shown:?}{more})", data.len())
}

/// Receives the next message, failing the test on a timeout, an error or the
/// end of the connection.
pub async fn next_message<S>(ws: &mut WebSocket<S>, what: &str) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match within(what, ws.recv()).await {
        Some(Ok(message)) => message,
        Some(Err(err)) => panic!("{what}: the connection failed: {err}"),
        None => panic!(
            "{what}: the connection ended (close info: {:?})",
            ws.close_info()
        ),
    }
}

/// Fails the test unless `got` is `want`, describing both briefly (large
/// messages are not printed whole).
#[track_caller]
pub fn assert_message(got: &Message, want: &Message, what: &str) {
    assert!(
        got == want,
        "{what}: got {}, wanted {}",
        describe(got),
        describe(want)
    );
}
