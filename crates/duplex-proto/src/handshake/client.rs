//! The client's side of the opening handshake (RFC 6455 sections 4.1 and 4.2.2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};

use super::headers::{format_extensions, has_token, is_token, parse_extensions, tokens};
use super::{Extension, HandshakeError, accept_key, header_value};
use crate::rng::MaskSource;

/// Headers the handshake sets itself; an extra header may not replace them.
const RESERVED: [HeaderName; 7] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// Builds a client's opening handshake request.
///
/// ```
/// use duplex_proto::handshake::ClientRequest;
/// use duplex_proto::rng::SequenceMask;
///
/// let (request, handshake) = ClientRequest::new("ws://example.com/chat?room=1".parse().unwrap())
///     .protocol("chat")
///     .header(http::header::ORIGIN, "https://example.com".parse().unwrap())
///     .build(&mut SequenceMask::new(1))
///     .unwrap();
/// assert_eq!(request.uri().path_and_query().unwrap(), "/chat?room=1");
/// assert_eq!(request.headers()["host"], "example.com");
/// assert_eq!(request.headers()["sec-websocket-protocol"], "chat");
/// # let _ = handshake;
/// ```
#[derive(Debug, Clone)]
pub struct ClientRequest {
    uri: Uri,
    protocols: Vec<String>,
    extensions: Vec<Extension>,
    headers: HeaderMap,
}

impl ClientRequest {
    /// A request for `uri`, a `ws://` or `wss://` URI.
    pub fn new(uri: Uri) -> Self {
        ClientRequest {
            uri,
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Offers a subprotocol; offers go out in the order given, most preferred
    /// first.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offers an extension.
    pub fn extension(mut self, extension: Extension) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Adds a header field (Origin, Authorization, Cookie, User-Agent...). A Host
    /// given here replaces the one derived from the URI.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The extra header fields, to edit in place.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The request to send, and the state that checks the response. The key is
    /// 16 bytes drawn from `rng` (section 4.1: a randomly selected nonce).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidUri`] for a URI that is not `ws://` or `wss://`
    /// with a host, or that has a fragment; [`HandshakeError::InvalidProtocolName`]
    /// for a subprotocol that is not a token or is offered twice;
    /// [`HandshakeError::ReservedHeader`] for an extra header the handshake sets
    /// itself.
    pub fn build(
        self,
        rng: &mut dyn MaskSource,
    ) -> Result<(Request<()>, ClientHandshake), HandshakeError> {
        match self.uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") || s.eq_ignore_ascii_case("wss") => {}
            _ => return Err(HandshakeError::InvalidUri("the scheme must be ws or wss")),
        }
        let authority = self
            .uri
            .authority()
            .ok_or(HandshakeError::InvalidUri("it has no host"))?;
        if authority.host().is_empty() {
            return Err(HandshakeError::InvalidUri("it has no host"));
        }
        // A URI with userinfo: the host part is what follows the last '@'.
        let (userinfo, host) = match authority.as_str().rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority.as_str()),
        };
        for (i, protocol) in self.protocols.iter().enumerate() {
            if !is_token(protocol) || self.protocols[..i].contains(protocol) {
                return Err(HandshakeError::InvalidProtocolName(protocol.clone()));
            }
        }
        if let Some(name) = RESERVED.iter().find(|n| self.headers.contains_key(*n)) {
            return Err(HandshakeError::ReservedHeader(name.clone()));
        }

        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let key = BASE64.encode(nonce);

        let path = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let target: Uri = path
            .parse()
            .map_err(|_| HandshakeError::InvalidUri("invalid path"))?;
        let mut request = Request::new(());
        *request.uri_mut() = target;
        let headers = request.headers_mut();
        if !self.headers.contains_key(header::HOST) {
            headers.insert(header::HOST, header_value(host));
        }
        if let Some(userinfo) = userinfo
            && !self.headers.contains_key(header::AUTHORIZATION)
        {
            let credentials = format!("Basic {}", BASE64.encode(userinfo));
            headers.insert(header::AUTHORIZATION, header_value(&credentials));
        }
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::SEC_WEBSOCKET_KEY, header_value(&key));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        if !self.protocols.is_empty() {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                header_value(&self.protocols.join(", ")),
            );
        }
        if !self.extensions.is_empty() {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                header_value(&format_extensions(&self.extensions)),
            );
        }
        headers.extend(self.headers);

        let handshake = ClientHandshake {
            accept: accept_key(key.as_bytes()),
            protocols: self.protocols,
            extensions: self.extensions,
        };
        Ok((request, handshake))
    }

    /// The request for opening the WebSocket on an HTTP/2 stream instead (RFC
    /// 8441 section 4): an extended CONNECT to `https://` (for `wss://`) or
    /// `http://` (for `ws://`) with the host as its authority, the path and
    /// query, `Sec-WebSocket-Version: 13` and the offers; no key, `Upgrade`,
    /// `Connection` or `Host` (HTTP/2 has `:authority` and no connection-level
    /// headers). The HTTP/2 layer sends `:protocol: websocket` beside it.
    /// Check the response with [`ClientHandshake::validate_http2`].
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// ```
    /// use duplex_proto::handshake::ClientRequest;
    /// use duplex_proto::rng::SequenceMask;
    ///
    /// let (request, _) = ClientRequest::new("wss://example.com/chat".parse().unwrap())
    ///     .build_http2(&mut SequenceMask::new(1))
    ///     .unwrap();
    /// assert_eq!(request.method(), http::Method::CONNECT);
    /// assert_eq!(request.uri(), "https://example.com/chat");
    /// assert!(request.headers().get("sec-websocket-key").is_none());
    /// ```
    pub fn build_http2(
        self,
        rng: &mut dyn MaskSource,
    ) -> Result<(Request<()>, ClientHandshake), HandshakeError> {
        let secure = self
            .uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("wss"));
        let (request, handshake) = self.build(rng)?;
        let (mut parts, ()) = request.into_parts();
        let host = parts
            .headers
            .remove(header::HOST)
            .ok_or(HandshakeError::InvalidUri("it has no host"))?;
        let host = host
            .to_str()
            .map_err(|_| HandshakeError::InvalidUri("the host is not ASCII"))?;
        for name in [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_KEY,
        ] {
            parts.headers.remove(name);
        }
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let scheme = if secure { "https" } else { "http" };
        parts.uri = format!("{scheme}://{host}{path}")
            .parse()
            .map_err(|_| HandshakeError::InvalidUri("invalid host or path"))?;
        parts.method = http::Method::CONNECT;
        parts.version = http::Version::HTTP_2;
        Ok((Request::from_parts(parts, ()), handshake))
    }
}

/// What the client remembers of its request, to check the server's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    accept: String,
    protocols: Vec<String>,
    extensions: Vec<Extension>,
}

/// What the opening handshake settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with its parameters, in order.
    pub extensions: Vec<Extension>,
}

impl ClientHandshake {
    /// The `Sec-WebSocket-Accept` value a genuine server will answer with.
    pub fn expected_accept(&self) -> &str {
        &self.accept
    }

    /// Checks the server's response (section 4.2.2, as the client reads it):
    /// 101; `Upgrade: websocket`; `Connection: Upgrade`; the accept value for our
    /// key; at most one subprotocol, one we offered; only extensions we offered.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Status`] for any status but 101 (the caller has the
    /// response, to report its headers and body), or the check that failed.
    pub fn validate<B>(&self, response: &Response<B>) -> Result<Negotiated, HandshakeError> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::Status(response.status()));
        }
        let headers = response.headers();
        if !has_token(headers, &header::UPGRADE, "websocket") {
            return Err(HandshakeError::ResponseNotUpgrade);
        }
        if !has_token(headers, &header::CONNECTION, "upgrade") {
            return Err(HandshakeError::ResponseMissingConnectionUpgrade);
        }
        let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(accept), None) if accept.as_bytes() == self.accept.as_bytes() => {}
            _ => return Err(HandshakeError::InvalidAccept),
        }
        self.negotiated(headers)
    }

    /// Checks the server's response to a request from
    /// [`ClientRequest::build_http2`] (RFC 8441 section 5): 200; at most one
    /// subprotocol, one we offered; only extensions we offered. There is no
    /// accept value to check over HTTP/2.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Status`] for any status but 200, or the check that
    /// failed.
    pub fn validate_http2<B>(&self, response: &Response<B>) -> Result<Negotiated, HandshakeError> {
        if response.status() != StatusCode::OK {
            return Err(HandshakeError::Status(response.status()));
        }
        self.negotiated(response.headers())
    }

    /// The subprotocol and extensions of a response, checked against the
    /// offers.
    fn negotiated(&self, headers: &HeaderMap) -> Result<Negotiated, HandshakeError> {
        let chosen = tokens(headers, &header::SEC_WEBSOCKET_PROTOCOL)?;
        let protocol = match chosen.as_slice() {
            [] => None,
            [one] if self.protocols.contains(one) => Some(one.clone()),
            [one] => return Err(HandshakeError::UnrequestedProtocol(one.clone())),
            several => return Err(HandshakeError::UnrequestedProtocol(several.join(", "))),
        };
        let extensions = parse_extensions(headers)?;
        if let Some(ext) = extensions
            .iter()
            .find(|e| !self.extensions.iter().any(|o| o.name == e.name))
        {
            return Err(HandshakeError::UnrequestedExtension(ext.name.clone()));
        }
        Ok(Negotiated {
            protocol,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::validate_request;
    use crate::rng::SequenceMask;

    fn build(uri: &str) -> Result<(Request<()>, ClientHandshake), HandshakeError> {
        ClientRequest::new(uri.parse().unwrap()).build(&mut SequenceMask::new(3))
    }

    fn response_to(request: &Request<()>) -> Response<()> {
        validate_request(request)
            .unwrap()
            .response(None, &[])
            .unwrap()
    }

    #[test]
    fn request_is_one_our_server_accepts() {
        let (request, handshake) = build("ws://localhost:9001").unwrap();
        assert_eq!(request.uri(), "/");
        assert_eq!(request.headers()["host"], "localhost:9001");
        let response = response_to(&request);
        assert_eq!(
            handshake.validate(&response).unwrap(),
            Negotiated::default()
        );
    }

    #[test]
    fn key_is_16_random_bytes_in_base64() {
        let (a, _) = build("ws://h/").unwrap();
        let (b, _) = ClientRequest::new("ws://h/".parse().unwrap())
            .build(&mut SequenceMask::new(4))
            .unwrap();
        let key = |r: &Request<()>| {
            r.headers()["sec-websocket-key"]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(BASE64.decode(key(&a)).unwrap().len(), 16);
        assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn uri_checks() {
        assert!(matches!(
            build("http://h/"),
            Err(HandshakeError::InvalidUri(_))
        ));
        assert!(matches!(
            build("/relative"),
            Err(HandshakeError::InvalidUri(_))
        ));
        let (request, _) = build("wss://user:pw@[::1]:8443/p?q=1").unwrap();
        assert_eq!(request.headers()["host"], "[::1]:8443");
        assert_eq!(request.headers()["authorization"], "Basic dXNlcjpwdw==");
        assert_eq!(request.uri(), "/p?q=1");
    }

    #[test]
    fn reserved_headers_and_bad_protocols_are_refused() {
        let err = ClientRequest::new("ws://h/".parse().unwrap())
            .header(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("x"))
            .build(&mut SequenceMask::new(1))
            .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::ReservedHeader(header::SEC_WEBSOCKET_KEY)
        );
        let err = ClientRequest::new("ws://h/".parse().unwrap())
            .protocol("has space")
            .build(&mut SequenceMask::new(1))
            .unwrap_err();
        assert_eq!(err, HandshakeError::InvalidProtocolName("has space".into()));
    }

    #[test]
    fn http2_request_is_one_our_server_accepts() {
        use crate::handshake::validate_extended_connect;
        let (request, handshake) = ClientRequest::new("ws://u:p@h:81/c?x=1".parse().unwrap())
            .protocol("chat")
            .build_http2(&mut SequenceMask::new(3))
            .unwrap();
        assert_eq!(request.method(), http::Method::CONNECT);
        assert_eq!(request.uri(), "http://h:81/c?x=1");
        for name in ["host", "upgrade", "connection", "sec-websocket-key"] {
            assert!(request.headers().get(name).is_none(), "{name}");
        }
        assert_eq!(request.headers()["authorization"], "Basic dTpw");
        let upgrade = validate_extended_connect(&request, Some("websocket")).unwrap();
        let response = upgrade.response(Some("chat"), &[]).unwrap();
        let negotiated = handshake.validate_http2(&response).unwrap();
        assert_eq!(negotiated.protocol.as_deref(), Some("chat"));
        let mut refused = response;
        *refused.status_mut() = StatusCode::FORBIDDEN;
        assert_eq!(
            handshake.validate_http2(&refused),
            Err(HandshakeError::Status(StatusCode::FORBIDDEN))
        );
    }

    #[test]
    fn wrong_accept_is_refused() {
        let (request, handshake) = build("ws://h/").unwrap();
        let mut response = response_to(&request);
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert_eq!(
            handshake.validate(&response),
            Err(HandshakeError::InvalidAccept)
        );
    }

    #[test]
    fn non_101_is_reported_with_its_status() {
        let (_, handshake) = build("ws://h/").unwrap();
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::FORBIDDEN;
        assert_eq!(
            handshake.validate(&response),
            Err(HandshakeError::Status(StatusCode::FORBIDDEN))
        );
    }

    #[test]
    fn unrequested_protocol_and_extension_are_refused() {
        let (request, handshake) = ClientRequest::new("ws://h/".parse().unwrap())
            .protocol("a")
            .build(&mut SequenceMask::new(1))
            .unwrap();
        let good = response_to(&request);

        let mut chosen = good.clone();
        chosen.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("a"),
        );
        assert_eq!(
            handshake.validate(&chosen).unwrap().protocol.as_deref(),
            Some("a")
        );

        let mut other = good.clone();
        other.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("b"),
        );
        assert_eq!(
            handshake.validate(&other),
            Err(HandshakeError::UnrequestedProtocol("b".into()))
        );

        let mut ext = good;
        ext.headers_mut().insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate"),
        );
        assert_eq!(
            handshake.validate(&ext),
            Err(HandshakeError::UnrequestedExtension(
                "permessage-deflate".into()
            ))
        );
    }
}
