//! Reading and writing HTTP/1.1 heads: `httparse` to parse, bounded by the
//! configured limits, into the `http` crate's types.

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::HandshakeError;
use crate::config::Limits;

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet, and the request with the
/// length of its head otherwise; bytes after the head belong to what follows.
///
/// # Errors
///
/// [`HandshakeError::Malformed`] for bytes that are not an HTTP/1.x request head;
/// [`HandshakeError::HeadersTooLarge`] once the head is, or must be, longer than
/// `config.max_header_bytes` (checked on incomplete input too, so a client cannot
/// make the server buffer without bound); [`HandshakeError::TooManyHeaders`].
///
/// ```
/// use duplex_proto::{Limits, handshake::parse_request};
/// let bytes = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\nleftover";
/// let (request, len) = parse_request(bytes, &Limits::default()).unwrap().unwrap();
/// assert_eq!(request.uri().path(), "/chat");
/// assert_eq!(&bytes[len..], b"leftover");
/// assert!(parse_request(&bytes[..20], &Limits::default()).unwrap().is_none());
/// ```
pub fn parse_request(
    buf: &[u8],
    config: &Limits,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let mut fields = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut parsed = httparse::Request::new(&mut fields);
    let status = parsed.parse(buf).map_err(|e| parse_error(e, config))?;
    let Some(len) = complete_len(status, buf, config)? else {
        return Ok(None);
    };
    let malformed = |what: &str| HandshakeError::Malformed(what.to_owned());
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| malformed("invalid method"))?;
    let uri: Uri = parsed
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| malformed("invalid request target"))?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version(parsed.version);
    *request.headers_mut() = header_map(parsed.headers)?;
    Ok(Some((request, len)))
}

/// Parses a response head from the start of `buf`; see [`parse_request`].
///
/// A non-101 response may have a body after the head; reading it is the
/// caller's business (its `Content-Length` is in the headers).
///
/// # Errors
///
/// As [`parse_request`].
pub fn parse_response(
    buf: &[u8],
    config: &Limits,
) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
    let mut fields = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut parsed = httparse::Response::new(&mut fields);
    let status = parsed.parse(buf).map_err(|e| parse_error(e, config))?;
    let Some(len) = complete_len(status, buf, config)? else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or_default())
        .map_err(|_| HandshakeError::Malformed("invalid status code".to_owned()))?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version(parsed.version);
    *response.headers_mut() = header_map(parsed.headers)?;
    Ok(Some((response, len)))
}

fn parse_error(err: httparse::Error, config: &Limits) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders {
            max: config.max_headers,
        },
        other => HandshakeError::Malformed(other.to_string()),
    }
}

/// The head's length if it is complete, enforcing the size limit either way.
fn complete_len(
    status: httparse::Status<usize>,
    buf: &[u8],
    config: &Limits,
) -> Result<Option<usize>, HandshakeError> {
    let too_large = HandshakeError::HeadersTooLarge {
        max: config.max_header_bytes,
    };
    match status {
        httparse::Status::Complete(len) if len > config.max_header_bytes => Err(too_large),
        httparse::Status::Complete(len) => Ok(Some(len)),
        // Incomplete with the limit already reached: the head cannot fit.
        httparse::Status::Partial if buf.len() >= config.max_header_bytes => Err(too_large),
        httparse::Status::Partial => Ok(None),
    }
}

fn version(minor: Option<u8>) -> Version {
    match minor {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    }
}

fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HandshakeError::Malformed("invalid header name".to_owned()))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| HandshakeError::Malformed(format!("invalid value for {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Appends `request`'s head to `dst`: the request line with the URI's path and
/// query (`/` if it has none), then the header fields.
pub fn write_request<B>(request: &Request<B>, dst: &mut BytesMut) {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let target = if target.is_empty() { "/" } else { target };
    dst.put_slice(request.method().as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    write_fields(request.headers(), dst);
    dst.put_slice(b"\r\n");
}

/// A response body [`write_response`] can write: `()` for none, or bytes.
pub trait Body {
    /// The body's bytes.
    fn as_bytes(&self) -> &[u8];
}

impl Body for () {
    fn as_bytes(&self) -> &[u8] {
        &[]
    }
}

impl Body for bytes::Bytes {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

impl Body for Vec<u8> {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

impl Body for String {
    fn as_bytes(&self) -> &[u8] {
        str::as_bytes(self)
    }
}

impl Body for &'static str {
    fn as_bytes(&self) -> &[u8] {
        str::as_bytes(self)
    }
}

/// Appends `response` to `dst`: the status line, the header fields, a
/// `Content-Length` if the response may have a body and sets none, and the body.
pub fn write_response<B: Body>(response: &Response<B>, dst: &mut BytesMut) {
    let status = response.status();
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
    write_fields(response.headers(), dst);
    let body = response.body().as_bytes();
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless && !response.headers().contains_key(header::CONTENT_LENGTH) {
        dst.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    dst.put_slice(b"\r\n");
    if !bodiless {
        dst.put_slice(body);
    }
}

fn write_fields(headers: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in headers {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_size_is_bounded_while_incomplete() {
        let config = Limits::default().max_header_bytes(64);
        let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        head.resize(63, b'a');
        assert!(parse_request(&head, &config).unwrap().is_none());
        head.push(b'a');
        assert_eq!(
            parse_request(&head, &config).unwrap_err(),
            HandshakeError::HeadersTooLarge { max: 64 }
        );
    }

    #[test]
    fn too_many_fields() {
        let config = Limits::default().max_headers(2);
        let head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_request(head, &config).unwrap_err(),
            HandshakeError::TooManyHeaders { max: 2 }
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let tls_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];
        assert!(matches!(
            parse_request(&tls_hello, &Limits::default()),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn response_round_trip() {
        let response = Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("x-why", "origin")
            .body(b"no".to_vec())
            .unwrap();
        let mut out = BytesMut::new();
        write_response(&response, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 403 Forbidden\r\nx-why: origin\r\ncontent-length: 2\r\n\r\nno"
        );
        let (parsed, len) = parse_response(&out, &Limits::default()).unwrap().unwrap();
        assert_eq!(parsed.status(), StatusCode::FORBIDDEN);
        assert_eq!(parsed.headers()["x-why"], "origin");
        assert_eq!(&out[len..], b"no");
    }
}
