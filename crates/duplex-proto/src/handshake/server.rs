//! The server's side of the opening handshake: RFC 6455 section 4.2 over
//! HTTP/1.1, and RFC 8441 (extended CONNECT) over HTTP/2.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::headers::{format_extensions, has_token, parse_extensions, tokens};
use super::{Extension, HandshakeError, accept_key, header_value};

/// A request that is a valid WebSocket upgrade: what the client offered, and
/// (over HTTP/1.1) the key to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// `Sec-WebSocket-Key` over HTTP/1.1; `None` over HTTP/2, which has none.
    key: Option<HeaderValue>,
    protocols: Vec<String>,
    extensions: Vec<Extension>,
}

/// Checks that `request` is a WebSocket opening handshake (section 4.2.1), in
/// this order: GET; HTTP/1.1; exactly one Host; no body; `Upgrade` holding
/// `websocket` and `Connection` holding `Upgrade` (token lists, any case);
/// `Sec-WebSocket-Version: 13`; a `Sec-WebSocket-Key` that is base64 of 16
/// bytes; well-formed `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`.
///
/// Nothing here looks at the path, Origin or cookies: that is the
/// application's call, made before it sends the response.
///
/// # Errors
///
/// The first check that fails, as a [`HandshakeError`] whose
/// [`response`](HandshakeError::response) is the answer to send: 405, 505, 400,
/// 426 (with `Sec-WebSocket-Version: 13` when the version is wrong).
///
/// ```
/// use duplex_proto::handshake::validate_request;
/// let request = http::Request::get("/chat")
///     .header("Host", "server.example.com")
///     .header("Upgrade", "websocket")
///     .header("Connection", "Upgrade")
///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("Sec-WebSocket-Protocol", "chat, superchat")
///     .header("Sec-WebSocket-Version", "13")
///     .body(())
///     .unwrap();
/// let upgrade = validate_request(&request).unwrap();
/// let response = upgrade.response(Some("chat"), &[]).unwrap();
/// assert_eq!(response.status(), 101);
/// assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn validate_request<B>(request: &Request<B>) -> Result<UpgradeRequest, HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotAllowed(request.method().clone()));
    }
    if request.version() != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion(request.version()));
    }
    let headers = request.headers();
    if headers.get_all(header::HOST).iter().count() != 1 {
        return Err(HandshakeError::MissingHost);
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|len| len != "0");
    if has_body {
        return Err(HandshakeError::UnexpectedBody);
    }
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotUpgrade);
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    check_version(headers)?;
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if is_valid_key(key) => key.clone(),
        _ => return Err(HandshakeError::InvalidKey),
    };
    Ok(UpgradeRequest {
        key: Some(key),
        protocols: tokens(headers, &header::SEC_WEBSOCKET_PROTOCOL)?,
        extensions: parse_extensions(headers)?,
    })
}

/// Checks that `request` is a WebSocket opening handshake over HTTP/2 (RFC 8441
/// section 5): an extended CONNECT whose `:protocol` pseudo-header, which the
/// HTTP/2 layer hands over as `protocol`, is `websocket`, with a path,
/// `Sec-WebSocket-Version: 13`, and well-formed `Sec-WebSocket-Protocol` and
/// `Sec-WebSocket-Extensions`. There is no key and no accept value: the stream
/// is the connection.
///
/// # Errors
///
/// As [`validate_request`]: 405 for another method, 400 for another or no
/// `:protocol`, 426 for a version other than 13.
///
/// ```
/// use duplex_proto::handshake::validate_extended_connect;
/// let request = http::Request::connect("https://example.com/chat")
///     .version(http::Version::HTTP_2)
///     .header("sec-websocket-version", "13")
///     .body(())
///     .unwrap();
/// let upgrade = validate_extended_connect(&request, Some("websocket")).unwrap();
/// assert_eq!(upgrade.response(None, &[]).unwrap().status(), 200);
/// ```
pub fn validate_extended_connect<B>(
    request: &Request<B>,
    protocol: Option<&str>,
) -> Result<UpgradeRequest, HandshakeError> {
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotAllowed(request.method().clone()));
    }
    if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::InvalidHeader {
            name: header::UPGRADE,
            reason: "an HTTP/2 CONNECT for WebSocket needs :protocol = websocket",
        });
    }
    if request.uri().path().is_empty() {
        return Err(HandshakeError::Malformed("missing :path".to_owned()));
    }
    let headers = request.headers();
    check_version(headers)?;
    Ok(UpgradeRequest {
        key: None,
        protocols: tokens(headers, &header::SEC_WEBSOCKET_PROTOCOL)?,
        extensions: parse_extensions(headers)?,
    })
}

/// Exactly one `Sec-WebSocket-Version`, and it is 13 (RFC 6455 section 4.2.1).
fn check_version(headers: &http::HeaderMap) -> Result<(), HandshakeError> {
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v == "13" => Ok(()),
        (Some(v), _) => Err(HandshakeError::UnsupportedVersion(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
        (None, _) => Err(HandshakeError::UnsupportedVersion(String::new())),
    }
}

/// Section 4.1: the key is a base64-encoded 16-byte value (24 characters).
fn is_valid_key(key: &HeaderValue) -> bool {
    key.len() == 24
        && BASE64
            .decode(key.as_bytes())
            .is_ok_and(|nonce| nonce.len() == 16)
}

impl UpgradeRequest {
    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions the client offered, in order.
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The client's `Sec-WebSocket-Key`; `None` over HTTP/2.
    pub fn key(&self) -> Option<&HeaderValue> {
        self.key.as_ref()
    }

    /// Whether the request came as an HTTP/2 extended CONNECT.
    pub fn is_http2(&self) -> bool {
        self.key.is_none()
    }

    /// The response that accepts the connection: over HTTP/1.1, 101 Switching
    /// Protocols with the accept value; over HTTP/2, 200. It has
    /// `protocol` as the chosen subprotocol and `extensions` as the accepted
    /// extensions with their response parameters. The caller may add headers
    /// (cookies, for example) before sending it.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::ProtocolNotOffered`] if `protocol` is not one the client
    /// offered (section 4.2.2: the server must choose from the client's list);
    /// [`HandshakeError::ExtensionNotOffered`] likewise for an extension.
    pub fn response(
        &self,
        protocol: Option<&str>,
        extensions: &[Extension],
    ) -> Result<Response<()>, HandshakeError> {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        if let Some(key) = &self.key {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                header_value(&accept_key(key.as_bytes())),
            );
        }
        *response.status_mut() = match self.key {
            Some(_) => StatusCode::SWITCHING_PROTOCOLS,
            None => StatusCode::OK,
        };
        let headers = response.headers_mut();
        if let Some(protocol) = protocol {
            if !self.protocols.iter().any(|p| p == protocol) {
                return Err(HandshakeError::ProtocolNotOffered(protocol.to_owned()));
            }
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, header_value(protocol));
        }
        if let Some(ext) = extensions
            .iter()
            .find(|e| !self.extensions.iter().any(|o| o.name == e.name))
        {
            return Err(HandshakeError::ExtensionNotOffered(ext.name.clone()));
        }
        if !extensions.is_empty() {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                header_value(&format_extensions(extensions)),
            );
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> http::request::Builder {
        Request::get("/chat")
            .header("Host", "server.example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
    }

    fn without(name: &str) -> Request<()> {
        let mut request = valid().body(()).unwrap();
        request.headers_mut().remove(name);
        request
    }

    fn status_of(request: Request<()>) -> StatusCode {
        validate_request(&request).unwrap_err().status().unwrap()
    }

    #[test]
    fn accepts_the_rfc_example() {
        let upgrade = validate_request(&valid().body(()).unwrap()).unwrap();
        assert!(upgrade.protocols().is_empty());
        let response = upgrade.response(None, &[]).unwrap();
        assert_eq!(response.headers()["upgrade"], "websocket");
        assert_eq!(response.headers()["connection"], "Upgrade");
        assert!(!response.headers().contains_key("sec-websocket-protocol"));
    }

    #[test]
    fn accepts_tokens_in_any_case_and_in_lists() {
        let request = Request::get("/")
            .header("Host", "h")
            .header("Upgrade", "WebSocket")
            .header("Connection", "keep-alive, UPGRADE")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .body(())
            .unwrap();
        validate_request(&request).unwrap();
    }

    #[test]
    fn each_missing_piece_has_its_status() {
        assert_eq!(status_of(without("host")), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(without("upgrade")), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            status_of(without("connection")),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status_of(without("sec-websocket-version")),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status_of(without("sec-websocket-key")),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn wrong_method_version_and_body() {
        let post = valid().method("POST").body(()).unwrap();
        assert_eq!(status_of(post), StatusCode::METHOD_NOT_ALLOWED);
        let old = valid().version(Version::HTTP_10).body(()).unwrap();
        assert_eq!(status_of(old), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        let body = valid().header("Content-Length", "5").body(()).unwrap();
        assert_eq!(status_of(body), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn version_other_than_13_gets_426_naming_13() {
        let request = valid()
            .header("Sec-WebSocket-Version", "8")
            .body(())
            .unwrap();
        // Two version fields (13 and 8) are not "version 13".
        let err = validate_request(&request).unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UPGRADE_REQUIRED));
        assert_eq!(err.response().headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn keys_must_be_base64_of_16_bytes() {
        for key in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",       // unpadded
            "dGhlIHNhbXBsZSBub25jZSE=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25jZQ==AAAA", // too long
            "!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            let mut request = without("sec-websocket-key");
            request
                .headers_mut()
                .insert("sec-websocket-key", HeaderValue::from_str(key).unwrap());
            assert_eq!(
                validate_request(&request),
                Err(HandshakeError::InvalidKey),
                "{key:?}"
            );
        }
    }

    #[test]
    fn subprotocol_must_come_from_the_offer() {
        let request = valid()
            .header("Sec-WebSocket-Protocol", "chat, superchat")
            .header("Sec-WebSocket-Protocol", "v2.json")
            .body(())
            .unwrap();
        let upgrade = validate_request(&request).unwrap();
        assert_eq!(upgrade.protocols(), ["chat", "superchat", "v2.json"]);
        let ok = upgrade.response(Some("v2.json"), &[]).unwrap();
        assert_eq!(ok.headers()["sec-websocket-protocol"], "v2.json");
        assert_eq!(
            upgrade.response(Some("other"), &[]).unwrap_err(),
            HandshakeError::ProtocolNotOffered("other".into())
        );
    }

    #[test]
    fn malformed_protocol_list_is_400() {
        let request = valid()
            .header("Sec-WebSocket-Protocol", "chat, super chat")
            .body(())
            .unwrap();
        assert_eq!(status_of(request), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn extensions_answered_must_be_offered() {
        let request = valid()
            .header(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            )
            .body(())
            .unwrap();
        let upgrade = validate_request(&request).unwrap();
        assert_eq!(upgrade.extensions()[0].name, "permessage-deflate");
        let answer =
            [Extension::new("permessage-deflate").with_param("server_no_context_takeover", None)];
        let ok = upgrade.response(None, &answer).unwrap();
        assert_eq!(
            ok.headers()["sec-websocket-extensions"],
            "permessage-deflate; server_no_context_takeover"
        );
        assert_eq!(
            upgrade
                .response(None, &[Extension::new("x-other")])
                .unwrap_err(),
            HandshakeError::ExtensionNotOffered("x-other".into())
        );
    }

    fn h2_connect() -> http::request::Builder {
        Request::connect("https://example.com/chat?room=1")
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
    }

    #[test]
    fn rfc_8441_extended_connect_is_accepted_with_200() {
        let request = h2_connect()
            .header("sec-websocket-protocol", "chat")
            .header("sec-websocket-extensions", "permessage-deflate")
            .body(())
            .unwrap();
        let upgrade = validate_extended_connect(&request, Some("websocket")).unwrap();
        assert!(upgrade.is_http2());
        assert_eq!(upgrade.key(), None);
        let response = upgrade
            .response(Some("chat"), &[Extension::new("permessage-deflate")])
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key("sec-websocket-accept"));
        assert!(!response.headers().contains_key("upgrade"));
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        assert_eq!(
            response.headers()["sec-websocket-extensions"],
            "permessage-deflate"
        );
    }

    #[test]
    fn rfc_8441_requires_connect_the_protocol_and_version_13() {
        let get = h2_connect().method("GET").body(()).unwrap();
        assert_eq!(
            validate_extended_connect(&get, Some("websocket"))
                .unwrap_err()
                .status(),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        let plain = h2_connect().body(()).unwrap();
        for protocol in [None, Some("webtransport")] {
            assert_eq!(
                validate_extended_connect(&plain, protocol)
                    .unwrap_err()
                    .status(),
                Some(StatusCode::BAD_REQUEST)
            );
        }
        let mut old = plain.clone();
        old.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(
            validate_extended_connect(&old, Some("websocket"))
                .unwrap_err()
                .status(),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
    }
}
