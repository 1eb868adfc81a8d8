//! Reading an HTTP head (and, on the client, an error response's body) from an
//! async stream, within the configured bounds.

use bytes::BytesMut;
use duplex_proto::{HandshakeError, Limits};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// The most body bytes kept from a refused upgrade's response.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;

/// A head parser from duplex-proto's handshake module.
type ParseHead<T> = fn(&[u8], &Limits) -> Result<Option<(T, usize)>, HandshakeError>;

/// Reads until `parse` finds a whole head; returns it and the bytes read past
/// it. The parser enforces `limits.max_header_bytes` on incomplete input, so a
/// peer cannot make this buffer without bound.
pub(crate) async fn read_head<S, T>(
    io: &mut S,
    limits: &Limits,
    parse: ParseHead<T>,
) -> Result<(T, BytesMut)>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        if let Some((head, len)) = parse(&buf, limits)? {
            let rest = buf.split_off(len);
            return Ok((head, rest));
        }
        buf.reserve(2048);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Error::Handshake(HandshakeError::Malformed(
                "the connection closed before the HTTP head was complete".to_owned(),
            )));
        }
    }
}

/// Reads the body of a refused upgrade: `Content-Length` bytes if given, else
/// to the end of the stream; at most [`MAX_ERROR_BODY`] either way.
pub(crate) async fn read_error_body<S>(
    io: &mut S,
    headers: &http::HeaderMap,
    mut body: BytesMut,
) -> BytesMut
where
    S: AsyncRead + Unpin,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let want = declared.unwrap_or(usize::MAX).min(MAX_ERROR_BODY);
    while body.len() < want {
        body.reserve((want - body.len()).min(8192));
        match io.read_buf(&mut body).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    body.truncate(want);
    body
}
