//! The lean path of the echo loads: frames encoded once, written and read
//! straight on the TCP socket, so that the load generator stays cheaper than
//! any server it measures.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use duplex::Message;
use tokio::time::Instant;

use super::GRACE;
use super::report::record;
use super::window::{Outcome, Window};

/// The frames of the lean path, encoded once per connection: the message to
/// send, masked with one key that is reused for every frame (a real client
/// must draw a fresh key per frame, RFC 6455 section 5.3; the server cannot
/// tell, and it is the server that is measured), and the length of the echo.
pub(super) struct RawFrames {
    pub(super) message: Vec<u8>,
    pub(super) close: Vec<u8>,
    pub(super) echo_len: usize,
    pub(super) first_byte: u8,
}

impl RawFrames {
    pub(super) fn new(message: &Message, seed: u32) -> RawFrames {
        use duplex::proto::frame::{Frame, FrameHeader, OpCode};
        let key = seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(0x7f4a_7c15)
            .to_be_bytes();
        let opcode = if message.is_text() {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        let encode = |opcode, payload: Bytes| {
            let frame = Frame {
                header: FrameHeader {
                    mask: Some(key),
                    ..FrameHeader::new(opcode, payload.len() as u64)
                },
                payload,
            };
            let mut out = bytes::BytesMut::new();
            frame.encode(&mut out);
            out.to_vec()
        };
        let payload = message.clone().into_data();
        let echo_header = FrameHeader::new(opcode, payload.len() as u64).encoded_len();
        RawFrames {
            echo_len: echo_header + payload.len(),
            first_byte: 0x80 | opcode as u8,
            message: encode(opcode, payload),
            close: encode(OpCode::Close, Bytes::from_static(&[0x03, 0xe8])),
        }
    }

    /// Whether `echo` is our message, unmasked, from the server.
    pub(super) fn is_echo(&self, echo: &[u8]) -> bool {
        echo.first() == Some(&self.first_byte)
    }
}

/// The closed loop on the lean path.
pub(super) async fn raw_closed_loop(
    mut tcp: tokio::net::TcpStream,
    frames: RawFrames,
    window: &Window,
) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cheap_congestion_control(&tcp);
    let mut outcome = Outcome::new();
    let mut echo = vec![0u8; frames.echo_len];
    // One clock reading per message: the time an echo arrives is the time the
    // next message leaves.
    let mut sent = Instant::now();
    while sent < window.end {
        let exchanged = async {
            tcp.write_all(&frames.message).await?;
            tcp.read_exact(&mut echo).await
        };
        // A server that stops answering does not hold the load: past the
        // grace period, the connection counts as an error.
        let exchanged = tokio::time::timeout_at(window.end + GRACE, exchanged).await;
        if !matches!(exchanged, Ok(Ok(_))) || !frames.is_echo(&echo) {
            outcome.errors += 1;
            return outcome;
        }
        let now = Instant::now();
        if window.measuring(sent) {
            record(&mut outcome.latency, now - sent);
            outcome.messages += 1;
            window.counted.fetch_add(1, Ordering::Relaxed);
        }
        sent = now;
    }
    raw_close(tcp, &frames).await;
    outcome
}

/// Reno for the load generator's own sockets, where the system allows it: on
/// loopback, congestion control does nothing useful, and BBR (a common
/// default) costs the sender a few percent of its CPU per message. The
/// server's sockets keep the system's choice.
pub(super) fn cheap_congestion_control(tcp: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let name = b"reno";
    #[allow(unsafe_code)]
    // SAFETY: setsockopt reads `name.len()` bytes from `name`, which has them;
    // the descriptor is the stream's, open for the duration of the call.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        );
    }
}

/// The open loop on the lean path.
pub(super) async fn raw_open_loop(
    tcp: tokio::net::TcpStream,
    frames: RawFrames,
    interval: Duration,
    window: &Window,
) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cheap_congestion_control(&tcp);
    let (mut reader, mut writer) = tcp.into_split();
    let due: Rc<std::cell::RefCell<VecDeque<Instant>>> = Rc::default();
    let sending = {
        let (due, message, end) = (due.clone(), &frames.message, window.end);
        async move {
            let mut next = Instant::now();
            while next < end {
                tokio::time::sleep_until(next).await;
                due.borrow_mut().push_back(next);
                if writer.write_all(message).await.is_err() {
                    return (writer, false);
                }
                next += interval;
            }
            (writer, true)
        }
    };
    let receiving = async {
        let mut outcome = Outcome::new();
        let mut echo = vec![0u8; frames.echo_len];
        let deadline = window.end + GRACE;
        loop {
            let read = tokio::time::timeout_at(deadline, reader.read_exact(&mut echo)).await;
            let Ok(Ok(_)) = read else {
                if read.is_ok() {
                    outcome.errors += 1;
                }
                break;
            };
            if !frames.is_echo(&echo) {
                outcome.errors += 1;
                break;
            }
            if window.echoed(&due, &mut outcome) {
                break;
            }
        }
        outcome
    };
    let ((writer, sent_all), mut outcome) = tokio::join!(sending, receiving);
    if !sent_all {
        outcome.errors += 1;
    }
    if let Ok(tcp) = reader.reunite(writer) {
        raw_close(tcp, &frames).await;
    }
    outcome
}

/// Sends a close frame and waits briefly for the server to end the connection.
async fn raw_close(mut tcp: tokio::net::TcpStream, frames: &RawFrames) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.write_all(&frames.close).await.is_ok() {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.read_to_end(&mut rest)).await;
    }
}
