//! Accepting WebSocket connections on any byte stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use duplex_proto::handshake::{self, UpgradeRequest};
use duplex_proto::{HandshakeError, Role};
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::config::WebSocketConfig;
use crate::error::{Error, Result, Timeout};
use crate::head::read_head;
use crate::header::InvalidHeader;
use crate::origin::Origins;
use crate::websocket::{Handshake, WebSocket};

/// Accepts a WebSocket connection on `stream` with the default settings: reads
/// the upgrade request, answers 101, and returns the open connection.
///
/// # Errors
///
/// As [`Acceptor::accept`].
///
/// ```no_run
/// use futures_util::{SinkExt, StreamExt};
/// # async fn run() -> duplex::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let (tcp, _) = listener.accept().await?;
/// let mut ws = duplex::accept(tcp).await?;
/// while let Some(message) = ws.next().await {
///     let message = message?;
///     if message.is_text() || message.is_binary() {
///         ws.send(message).await?;
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Acceptor::new().accept(stream).await
}

type RequestCheck = dyn Fn(&Request<()>) -> Result<Acceptance, Rejection> + Send + Sync;

/// The server side of the opening handshake: the settings it accepts
/// connections with (subprotocols, origin policy, request check, limits), and
/// [`accept`](Self::accept), which applies them to each incoming stream, as
/// tokio-rustls's `TlsAcceptor` does for TLS. Cheap to clone, meant to be
/// built once and shared by every connection.
///
/// ```
/// use duplex::{Acceptance, Acceptor, Rejection};
/// let acceptor = Acceptor::new()
///     .protocols(["chat.v2", "chat.v1"])
///     .max_message_size(1 << 20)
///     .on_request(|request| {
///         if request.uri().path() != "/chat" {
///             return Err(Rejection::new(http::StatusCode::NOT_FOUND).body("no such endpoint"));
///         }
///         // `?`: an invalid header would answer 500.
///         Ok(Acceptance::new().header("x-server", "duplex")?)
///     });
/// # let _ = acceptor;
/// ```
#[derive(Clone)]
pub struct Acceptor {
    config: WebSocketConfig,
    protocols: Vec<String>,
    handshake_timeout: Duration,
    origins: Origins,
    check: Option<Arc<RequestCheck>>,
    keep_request: bool,
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor {
            config: WebSocketConfig::default(),
            protocols: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            origins: Origins::default(),
            check: None,
            keep_request: true,
        }
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("config", &self.config)
            .field("protocols", &self.protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("origins", &self.origins)
            .field("on_request", &self.check.is_some())
            .field("keep_request", &self.keep_request)
            .finish()
    }
}

impl Acceptor {
    /// Default settings: no subprotocols, no request check, a 10-second
    /// handshake timeout, [`WebSocketConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The subprotocols this server speaks. The first one the client offers
    /// (in the client's order of preference) is chosen, unless the request check
    /// chooses. Default: none, so no subprotocol is agreed.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// How long a client gets to send its request, and the server to answer.
    /// Default: 10 seconds, so a client that opens a socket and says nothing
    /// costs a socket for no longer than that.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    crate::config::config_setters!(replace);

    /// The connection settings, for the setters.
    pub(crate) fn config_mut(&mut self) -> &mut WebSocketConfig {
        &mut self.config
    }

    /// Which `Origin`s are accepted, checked before the request check; a
    /// refused origin gets 403. Default: [`Origins::any`], no check: a server
    /// that web pages talk to should set [`Origins::same_origin`] or
    /// [`Origins::allow`] against cross-site WebSocket hijacking.
    pub fn origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// A check run on every valid upgrade request before it is answered. It sees
    /// the path, query and headers (Origin, cookies, Authorization) and accepts,
    /// possibly choosing the subprotocol and adding response headers, or rejects
    /// with an HTTP status and body. For a check that must await something (a
    /// database, a token service), use [`read_request`](Self::read_request).
    pub fn on_request<F>(mut self, check: F) -> Self
    where
        F: Fn(&Request<()>) -> Result<Acceptance, Rejection> + Send + Sync + 'static,
    {
        self.check = Some(Arc::new(check));
        self
    }

    /// Whether each connection keeps the request it was opened with, for
    /// [`WebSocket::request`]. Default: on. A server that has read what it
    /// needs from the request by the time it accepts (a request check, or the
    /// HTTP handler of [`upgrade`](crate::upgrade::upgrade)) can turn it off to
    /// save the headers' memory on every connection; data attached with
    /// [`Acceptance::data`] is kept either way.
    pub fn keep_request(mut self, keep: bool) -> Self {
        self.keep_request = keep;
        self
    }

    /// The connection settings.
    pub fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Reads the upgrade request from `stream`, runs the request check, and
    /// answers: 101 and the open connection, or the check's rejection, or the
    /// HTTP error the request calls for (400, 405, 426 with
    /// `Sec-WebSocket-Version: 13`, 431...).
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] for a request that is not a valid upgrade (after the
    /// error response is sent); [`Error::Rejected`] when the check rejected it
    /// (after the rejection is sent); [`Error::Timeout`] if the handshake took
    /// longer than the handshake timeout; [`Error::Io`].
    pub async fn accept<S>(&self, stream: S) -> Result<WebSocket<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let pending = self.read_request(stream).await?;
        match self.check(pending.request()) {
            Ok(accept) => pending.accept(accept).await,
            Err(reject) => {
                let response = reject.clone().into_http();
                pending.reject(reject).await?;
                Err(Error::Rejected(Box::new(response)))
            }
        }
    }

    /// Reads and validates the upgrade request, leaving the decision to the
    /// caller: [`PendingUpgrade::accept`] or [`PendingUpgrade::reject`]. The
    /// origin policy and the request check of [`on_request`](Self::on_request)
    /// are not run; [`check`](Self::check) runs them.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), but never [`Error::Rejected`].
    pub async fn read_request<S>(&self, mut stream: S) -> Result<PendingUpgrade<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = Instant::now() + self.handshake_timeout;
        let limits = &self.config.limits;
        let read = read_head(&mut stream, limits, handshake::parse_request);
        let (request, leftover) = match timeout_at(deadline, read).await {
            Err(_) => return Err(Error::Timeout(Timeout::Handshake)),
            Ok(Err(Error::Handshake(err))) => {
                let _ = timeout_at(deadline, write_error(&mut stream, &err)).await;
                return Err(Error::Handshake(err));
            }
            Ok(other) => other?,
        };
        let upgrade = match handshake::validate_request(&request) {
            Ok(upgrade) => upgrade,
            Err(err) => {
                let _ = timeout_at(deadline, write_error(&mut stream, &err)).await;
                return Err(Error::Handshake(err));
            }
        };
        Ok(PendingUpgrade {
            stream,
            request,
            upgrade,
            leftover,
            builder: self.clone(),
            deadline,
        })
    }
}

impl Acceptor {
    /// Runs the origin policy, then the request check, on a valid upgrade
    /// request: what [`accept`](Self::accept) and the HTTP integrations do
    /// before answering.
    ///
    /// # Errors
    ///
    /// The [`Rejection`] to answer with: 403 for a refused origin, or the check's.
    pub fn check(&self, request: &Request<()>) -> Result<Acceptance, Rejection> {
        self.origins.check(request.headers(), request.uri())?;
        match &self.check {
            Some(check) => check(request),
            None => Ok(Acceptance::new()),
        }
    }

    /// The first of the `offered` subprotocols (the client's order of
    /// preference) that this server speaks.
    pub(crate) fn choose_protocol<'a>(&self, offered: &'a [String]) -> Option<&'a str> {
        offered
            .iter()
            .find(|offered| self.protocols.contains(offered))
            .map(String::as_str)
    }

    /// Settles what the connection runs with (subprotocol, compression) and the
    /// response that says so, for an accepted request.
    /// `request` is kept for the connection if [`keep_request`](Self::keep_request)
    /// says so.
    pub(crate) fn agree(
        &self,
        request: Request<()>,
        upgrade: &UpgradeRequest,
        accept: Acceptance,
    ) -> Result<(Response<()>, Agreed), HandshakeError> {
        let protocol = accept
            .protocol
            .or_else(|| self.choose_protocol(upgrade.protocols()).map(str::to_owned));
        #[cfg(feature = "deflate")]
        let deflate = self
            .config
            .deflate
            .as_ref()
            .and_then(|config| config.negotiate(upgrade.extensions()));
        #[cfg(feature = "deflate")]
        let answers: Vec<_> = deflate.iter().map(|(answer, _)| answer.clone()).collect();
        #[cfg(not(feature = "deflate"))]
        let answers = Vec::new();
        let mut response = upgrade.response(protocol.as_deref(), &answers)?;
        response.headers_mut().extend(accept.headers);
        let agreed = Agreed {
            protocol,
            handshake: Handshake {
                request: self.keep_request.then_some(request),
                response: None,
                data: accept.data,
            },
            #[cfg(feature = "deflate")]
            deflate: deflate.map(|(_, params)| params),
        };
        Ok((response, agreed))
    }

    /// The open connection over `io`, as agreed.
    pub(crate) fn open<S>(&self, io: S, read_buf: Bytes, agreed: Agreed) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ws = WebSocket::from_partially_read(
            io,
            Role::Server,
            read_buf,
            agreed.protocol,
            self.config.clone(),
        );
        #[cfg(feature = "deflate")]
        let ws = match agreed.deflate {
            Some(params) => ws.with_deflate(params),
            None => ws,
        };
        ws.with_handshake(agreed.handshake)
    }
}

/// What a server and a client agreed on.
pub(crate) struct Agreed {
    protocol: Option<String>,
    handshake: Handshake,
    #[cfg(feature = "deflate")]
    deflate: Option<crate::DeflateParams>,
}

async fn write_error<S: AsyncWrite + Unpin>(stream: &mut S, err: &HandshakeError) -> Result<()> {
    let mut wire = BytesMut::new();
    handshake::write_response(&err.response(), &mut wire);
    stream.write_all(&wire).await?;
    stream.shutdown().await?;
    Ok(())
}

/// A valid upgrade request, read and waiting for the caller's decision.
pub struct PendingUpgrade<S> {
    stream: S,
    request: Request<()>,
    upgrade: UpgradeRequest,
    leftover: BytesMut,
    builder: Acceptor,
    deadline: Instant,
}

impl<S> std::fmt::Debug for PendingUpgrade<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpgrade")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PendingUpgrade<S> {
    /// The request: method, path and query, headers.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn offered_protocols(&self) -> &[String] {
        self.upgrade.protocols()
    }

    /// Answers 101 and returns the open connection.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] if `accept` names a subprotocol the client did not
    /// offer (the client gets 500); [`Error::Timeout`], [`Error::Io`].
    pub async fn accept(mut self, accept: Acceptance) -> Result<WebSocket<S>> {
        let request = std::mem::take(&mut self.request);
        let (response, agreed) = match self.builder.agree(request, &self.upgrade, accept) {
            Ok(agreed) => agreed,
            Err(err) => {
                let _ = timeout_at(self.deadline, write_error(&mut self.stream, &err)).await;
                return Err(Error::Handshake(err));
            }
        };
        let mut wire = BytesMut::new();
        handshake::write_response(&response, &mut wire);
        match timeout_at(self.deadline, self.stream.write_all(&wire)).await {
            Err(_) => return Err(Error::Timeout(Timeout::Handshake)),
            Ok(result) => result?,
        }
        Ok(self
            .builder
            .open(self.stream, self.leftover.freeze(), agreed))
    }

    /// Answers with the rejection's status, headers and body, and closes the
    /// stream.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Io`] while writing.
    pub async fn reject(mut self, reject: Rejection) -> Result<()> {
        let mut wire = BytesMut::new();
        handshake::write_response(&reject.into_http(), &mut wire);
        let write = async {
            self.stream.write_all(&wire).await?;
            self.stream.shutdown().await
        };
        match timeout_at(self.deadline, write).await {
            Err(_) => Err(Error::Timeout(Timeout::Handshake)),
            Ok(result) => Ok(result?),
        }
    }
}

/// A request check's "yes": optionally the subprotocol, headers to add to
/// the 101 response (a cookie, a server name), and data for the connection's
/// handler.
#[derive(Debug, Clone, Default)]
pub struct Acceptance {
    protocol: Option<String>,
    headers: HeaderMap,
    data: http::Extensions,
}

impl Acceptance {
    /// Acceptance, with the subprotocol chosen from the server's list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses this subprotocol; it must be one the client offered.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Attaches `value` to the connection, for its handler to read with
    /// [`WebSocket::data`]: what the check learned from the request (the user
    /// a token names, the room a path names), so the handler need not parse
    /// the request again. One value per type; a second of the same type
    /// replaces the first.
    ///
    /// ```
    /// use duplex::{Acceptance, Acceptor, Rejection};
    ///
    /// #[derive(Clone)]
    /// struct Room(String);
    ///
    /// let acceptor = Acceptor::new().on_request(|request| {
    ///     match request.uri().path().strip_prefix("/rooms/") {
    ///         Some(room) => Ok(Acceptance::new().data(Room(room.to_owned()))),
    ///         None => Err(Rejection::new(http::StatusCode::NOT_FOUND)),
    ///     }
    /// });
    /// // Later, on the accepted connection: `ws.data::<Room>()`.
    /// # let _ = acceptor;
    /// ```
    pub fn data<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.data.insert(value);
        self
    }

    /// Adds a header to the 101 response.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`], naming the header, if the name or value is not
    /// valid HTTP; `?` turns it into a 500 [`Rejection`] in a request check.
    pub fn header<K, V>(mut self, name: K, value: V) -> Result<Self, InvalidHeader>
    where
        K: AsRef<str>,
        V: TryInto<HeaderValue>,
    {
        let (name, value) = crate::header::parse(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }
}

/// A server's "no" to an upgrade request: the HTTP status, headers and body
/// to answer with, and, for a request that is not a valid upgrade, the
/// handshake rule it broke.
///
/// A request check returns one to turn a request away; the origin policy
/// returns a 403 one; [`upgrade`](crate::upgrade::upgrade) and the axum
/// extractor return one for a request that is not a valid handshake. The
/// client it is sent to sees it as [`Error::Rejected`].
#[derive(Debug, Clone)]
pub struct Rejection {
    // Boxed: a check returns `Result<Acceptance, Rejection>`, which stays small.
    inner: Box<RejectionInner>,
}

#[derive(Debug, Clone)]
struct RejectionInner {
    response: Response<Bytes>,
    cause: Option<HandshakeError>,
    http2: bool,
}

impl Rejection {
    /// A rejection with this status and no body.
    pub fn new(status: StatusCode) -> Self {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = status;
        Rejection {
            inner: Box::new(RejectionInner {
                response,
                cause: None,
                http2: false,
            }),
        }
    }

    /// The answer to a request that broke the handshake with `err`: the
    /// status and headers `err` calls for, its text as the body.
    #[cfg(feature = "hyper")]
    pub(crate) fn handshake(err: HandshakeError) -> Self {
        Rejection {
            inner: Box::new(RejectionInner {
                response: err.response(),
                cause: Some(err),
                http2: false,
            }),
        }
    }

    /// Answers over HTTP/2 if `http2`: without the connection-specific
    /// headers HTTP/2 forbids (RFC 9113 section 8.2.2).
    #[cfg(feature = "hyper")]
    pub(crate) fn http2(mut self, http2: bool) -> Self {
        self.inner.http2 = http2;
        self
    }

    /// Sets the body (sent as `text/plain` unless a Content-Type header is set).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        *self.inner.response.body_mut() = body.into();
        self
    }

    /// Sets a header, replacing any of that name.
    #[cfg(feature = "hyper")]
    pub(crate) fn replace_header(
        mut self,
        name: http::header::HeaderName,
        value: HeaderValue,
    ) -> Self {
        self.inner.response.headers_mut().insert(name, value);
        self
    }

    /// Adds a header.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`], naming the header, if the name or value is not
    /// valid HTTP.
    pub fn header<K, V>(mut self, name: K, value: V) -> Result<Self, InvalidHeader>
    where
        K: AsRef<str>,
        V: TryInto<HeaderValue>,
    {
        let (name, value) = crate::header::parse(name, value)?;
        self.inner.response.headers_mut().append(name, value);
        Ok(self)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.inner.response.status()
    }

    /// The handshake rule the request broke, for a request that was not a
    /// valid upgrade; `None` for one the origin policy or a request check
    /// turned away.
    pub fn handshake_error(&self) -> Option<&HandshakeError> {
        self.inner.cause.as_ref()
    }

    /// The response to send, with a Content-Type for a body that has none,
    /// and `Connection: close` over HTTP/1.1.
    pub(crate) fn into_http(self) -> Response<Bytes> {
        let RejectionInner {
            mut response,
            http2,
            ..
        } = *self.inner;
        let has_body = !response.body().is_empty();
        let headers = response.headers_mut();
        if has_body && !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        if http2 {
            headers.remove(http::header::CONNECTION);
            headers.remove(http::header::UPGRADE);
        } else {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The response to send from a hyper service.
    #[cfg(feature = "hyper")]
    pub fn into_response(self) -> Response<crate::upgrade::Body> {
        self.into_http().map(crate::upgrade::Body::new)
    }
}

/// A header a request check could not add: the client gets a bare 500.
impl From<InvalidHeader> for Rejection {
    fn from(err: InvalidHeader) -> Self {
        tracing::warn!("a request check gave an invalid header: {err}");
        Rejection::new(StatusCode::INTERNAL_SERVER_ERROR).body("internal server error\n")
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused the WebSocket request with HTTP {}",
            self.status()
        )?;
        if self.inner.cause.is_none() {
            let body = String::from_utf8_lossy(self.inner.response.body());
            let body = body.trim();
            if !body.is_empty() {
                let shown: String = body.chars().take(200).collect();
                write!(f, ": {shown}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .cause
            .as_ref()
            .map(|err| err as &(dyn std::error::Error + 'static))
    }
}
