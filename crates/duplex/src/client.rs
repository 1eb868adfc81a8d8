//! Connecting to a WebSocket server: `ws://` and `wss://`.

use std::time::Duration;

use bytes::BytesMut;
use duplex_proto::handshake::{self, ClientRequest};
use duplex_proto::rng::ThreadRngMask;
use duplex_proto::{HandshakeError, Role};
use http::header::{HeaderMap, HeaderValue};
use http::{Response, Uri};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::WebSocketConfig;
use crate::error::{Error, Result, Timeout};
use crate::head::{read_error_body, read_head};
use crate::header::InvalidHeader;
use crate::proxy::Proxy;
use crate::stream::{ClientStream, MaybeTlsStream};
use crate::websocket::{Handshake, WebSocket};

/// Connects to `url` (`ws://` or `wss://`) with the default settings.
///
/// # Errors
///
/// As [`ClientBuilder::connect`].
///
/// ```no_run
/// use duplex::{CloseCode, Message};
/// use futures_util::StreamExt;
/// # async fn run() -> duplex::Result<()> {
/// let mut ws = duplex::connect("wss://echo.example.com/socket").await?;
/// ws.send(Message::text("Hello Server!")).await?;
/// while let Some(message) = ws.next().await {
///     println!("{:?}", message?);
/// }
/// ws.close(CloseCode::NORMAL, "done").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: impl AsRef<str>) -> Result<WebSocket<ClientStream>> {
    ClientBuilder::new(url).connect().await
}

/// Settings for one connection: the URL, subprotocols, headers, timeouts,
/// limits and TLS.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use std::time::Duration;
/// let ws = duplex::ClientBuilder::new("wss://example.com/chat?room=lobby")
///     .protocol("chat.v2")
///     .header("Origin", "https://example.com")?
///     .header("Authorization", "Bearer abc123")?
///     .connect_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// println!("agreed on {:?}", ws.protocol());
/// # Ok(()) }
/// ```
///
/// # Proxies
///
/// By default the client goes through the proxy the environment names, as
/// curl and reqwest do: `https_proxy` (or `HTTPS_PROXY`) for `wss://`,
/// `http_proxy` for `ws://` (not the upper-case `HTTP_PROXY`, which curl
/// ignores for safety), then `all_proxy` (or `ALL_PROXY`) for both, except
/// for the hosts `no_proxy` (or `NO_PROXY`) lists; [`Proxy::from_vars`]
/// gives the details. [`proxy`](Self::proxy) sets one instead (the
/// environment and `no_proxy` are then not read), and
/// [`no_proxy`](Self::no_proxy) connects directly whatever the environment
/// says.
///
/// HTTP proxies are asked for a tunnel with `CONNECT` (with Basic
/// authentication when the proxy URL has a user); SOCKS5 proxies with or
/// without a user and password, `socks5h://` letting the proxy resolve the
/// server's name. For `wss://`, TLS runs inside the tunnel: the server name
/// sent and the certificate checked are the server's, not the proxy's.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use duplex::{ClientBuilder, Proxy};
/// let proxy = Proxy::new("socks5h://alice:secret@127.0.0.1:1080")?;
/// let ws = ClientBuilder::new("wss://example.com/socket")
///     .proxy(proxy)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    protocols: Vec<String>,
    headers: HeaderMap,
    config: WebSocketConfig,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    proxy: ProxyChoice,
    #[cfg(feature = "tls")]
    tls: crate::tls::TlsOptions,
    #[cfg(feature = "http2")]
    http2: bool,
}

/// Where the proxy setting comes from.
#[derive(Debug, Clone)]
enum ProxyChoice {
    /// The process's environment, read at connect time.
    Environment,
    /// Always direct.
    Off,
    /// This one, always.
    Given(Proxy),
}

/// Where a URL says to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The host, without the brackets of an IPv6 literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `wss://`.
    pub(crate) tls: bool,
}

impl ClientBuilder {
    /// Settings for connecting to `url`, a `ws://` or `wss://` URL whose path
    /// and query are sent in the request.
    pub fn new(url: impl AsRef<str>) -> Self {
        ClientBuilder {
            url: url.as_ref().to_owned(),
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            config: WebSocketConfig::default(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            proxy: ProxyChoice::Environment,
            #[cfg(feature = "tls")]
            tls: crate::tls::TlsOptions::default(),
            #[cfg(feature = "http2")]
            http2: false,
        }
    }

    /// Offers a subprotocol; offers go in the order given, most preferred first.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offers several subprotocols, most preferred first.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols.extend(protocols.into_iter().map(Into::into));
        self
    }

    /// Adds a request header: Origin, Authorization, Cookie, User-Agent...
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`], naming the header, if the name or value is not
    /// valid HTTP (`?` turns it into [`Error::Config`]).
    pub fn header<K, V>(mut self, name: K, value: V) -> Result<Self, InvalidHeader>
    where
        K: AsRef<str>,
        V: TryInto<HeaderValue>,
    {
        let (name, value) = crate::header::parse(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Connects through this proxy, whatever the environment says (and
    /// whatever `no_proxy` lists). See [Proxies](Self#proxies).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxyChoice::Given(proxy);
        self
    }

    /// Connects directly, without the proxy the environment may name.
    /// Default: the environment's proxy, if any (see [Proxies](Self#proxies)).
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyChoice::Off;
        self
    }

    /// How long the TCP connection, the proxy's tunnel if any, and the TLS
    /// handshake may take, all together. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the opening handshake may take once connected. Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    crate::config::config_setters!(replace);

    /// The connection settings, for the setters.
    fn config_mut(&mut self) -> &mut WebSocketConfig {
        &mut self.config
    }

    /// The keepalive set so far, for [`Reconnect`](crate::reconnect::Reconnect)'s default.
    pub(crate) fn keepalive_setting(&self) -> Option<crate::Keepalive> {
        self.config.keepalive
    }

    /// Opens the WebSocket on a stream of an HTTP/2 connection (RFC 8441)
    /// when the server offers it, else over HTTP/1.1 as usual. For `wss://`
    /// the TLS handshake offers `h2` and `http/1.1` (ALPN); for `ws://` the
    /// client speaks HTTP/2 from the first byte (prior knowledge, h2c). Over
    /// HTTP/2 the server must also announce `SETTINGS_ENABLE_CONNECT_PROTOCOL`
    /// in its first SETTINGS frame; when it chose `http/1.1`, does not speak
    /// HTTP/2 (h2c) or does not announce the setting, [`connect`](Self::connect)
    /// falls back to HTTP/1.1, on a new connection where the first one cannot
    /// be reused. `ws.get_ref().is_http2()` says which it got.
    ///
    /// Each `connect` opens its own HTTP/2 connection; to share one between
    /// several WebSockets, use [`Http2Connection`](crate::Http2Connection).
    /// A configuration given with `tls_config` keeps everything but its ALPN
    /// list, which becomes `h2`, `http/1.1`.
    ///
    /// Default: off, because a server that does not speak HTTP/2 costs a
    /// second connection for `ws://` URLs.
    #[cfg(feature = "http2")]
    pub fn http2(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }

    /// Trusts this root certificate for `wss://`, besides the system's and the
    /// webpki roots (a private CA, a self-signed test server).
    #[cfg(feature = "tls")]
    pub fn tls_root(mut self, root: rustls::pki_types::CertificateDer<'static>) -> Self {
        self.tls.extra_roots.push(root);
        self
    }

    /// Presents this client certificate chain and key to servers that ask.
    #[cfg(feature = "tls")]
    pub fn tls_client_auth(
        mut self,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Self {
        self.tls.client_auth = Some((chain, key));
        self
    }

    /// Uses this rustls configuration as it is, instead of building one.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Accepts any server certificate. For testing against self-signed servers
    /// only: it gives up the protection TLS exists for.
    #[cfg(feature = "tls")]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.insecure = accept;
        self
    }

    /// Connects: TCP, directly or through a proxy (and TLS for `wss://`)
    /// within the connect timeout, then the opening handshake within the
    /// handshake timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Url`] for a URL that is not `ws://` or `wss://` with a host;
    /// [`Error::Resolve`] if the host name does not resolve;
    /// [`Error::Connect`] if the TCP connection fails (naming the address);
    /// [`Error::Proxy`] if the proxy cannot be reached or does not open the
    /// tunnel; [`Error::Config`] if a proxy variable of the environment is not
    /// a proxy URL; [`Error::Tls`] if the TLS handshake fails (naming the
    /// server name: a certificate that does not verify, say);
    /// [`Error::Rejected`] if the server answers
    /// with an HTTP status other than 101 (with its headers and body);
    /// [`Error::Handshake`] if the 101 response is not a valid one;
    /// [`Error::Timeout`] naming the phase ([`Timeout::Tcp`], [`Timeout::Tls`],
    /// [`Timeout::Proxy`], [`Timeout::Handshake`]). With [`http2`](Self::http2) on, also
    /// [`Error::Http2`] if a server that chose HTTP/2 in ALPN breaks it, or
    /// the stream fails, and [`Error::Rejected`] for a status other than 200.
    pub async fn connect(self) -> Result<WebSocket<ClientStream>> {
        let uri = self.uri()?;
        let target = Self::target(&uri)?;
        #[cfg(feature = "http2")]
        if self.http2 {
            return crate::http2::connect(self, uri, target).await;
        }
        let deadline = self.connect_deadline();
        let stream = self.transport(&target, false, deadline).await?;
        self.handshake(uri, ClientStream::from(stream)).await
    }

    /// The host, port and whether to use TLS, from a `ws://` or `wss://` URL.
    pub(crate) fn target(uri: &Uri) -> Result<Target> {
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") => true,
            _ => return Err(Error::Url("the scheme must be ws:// or wss://".to_owned())),
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::Url("the URL has no host".to_owned()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { host, port, tls })
    }

    /// The TCP connection (and TLS handshake for `wss://`, offering `h2` in
    /// ALPN if `http2`), by `deadline`.
    pub(crate) async fn transport(
        &self,
        target: &Target,
        http2: bool,
        deadline: Instant,
    ) -> Result<MaybeTlsStream<TcpStream>> {
        let (host, port, tls) = (target.host.clone(), target.port, target.tls);
        let tcp = self.open_tcp(tls, &host, port, deadline).await?;
        let stream = if tls {
            self.tls_connect(tcp, host, http2, deadline).await?
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        Ok(stream)
    }

    /// A TCP stream to the server, directly or through the proxy.
    async fn open_tcp(
        &self,
        tls: bool,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<TcpStream> {
        let from_env;
        let proxy = match &self.proxy {
            ProxyChoice::Off => None,
            ProxyChoice::Given(proxy) => Some(proxy),
            ProxyChoice::Environment => {
                from_env = Proxy::select(tls, host, port, &|name| std::env::var(name).ok())?;
                from_env.as_ref()
            }
        };
        if let Some(proxy) = proxy {
            tracing::debug!(%proxy, host, port, "connecting through a proxy");
            return proxy.tunnel(host, port, deadline).await;
        }
        let tcp = match timeout_at(deadline, connect_tcp(host, port)).await {
            Err(_) => return Err(Error::Timeout(Timeout::Tcp)),
            Ok(tcp) => tcp?,
        };
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    #[cfg(feature = "tls")]
    async fn tls_connect(
        &self,
        tcp: TcpStream,
        host: String,
        http2: bool,
        deadline: Instant,
    ) -> Result<MaybeTlsStream<TcpStream>> {
        let config = self.tls.client_config(http2)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Error::Url(format!("{host:?} is not a valid TLS server name: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match timeout_at(deadline, connector.connect(name, tcp)).await {
            Err(_) => Err(Error::Timeout(Timeout::Tls)),
            Ok(Err(err)) => Err(Error::tls_handshake(&host, err)),
            Ok(Ok(stream)) => Ok(MaybeTlsStream::Tls(Box::new(stream))),
        }
    }

    #[cfg(not(feature = "tls"))]
    async fn tls_connect(
        &self,
        _tcp: TcpStream,
        _host: String,
        _http2: bool,
        _deadline: Instant,
    ) -> Result<MaybeTlsStream<TcpStream>> {
        Err(Error::Url("wss:// needs duplex's `tls` feature".to_owned()))
    }

    /// Runs the opening handshake over a stream that is already connected (a
    /// TLS stream set up by hand, a proxy tunnel, an in-memory pipe). The URL
    /// gives the path, query and Host; its scheme must still be `ws` or `wss`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), without the connection errors.
    pub async fn connect_on<S>(self, stream: S) -> Result<WebSocket<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let uri = self.uri()?;
        self.handshake(uri, stream).await
    }

    pub(crate) fn uri(&self) -> Result<Uri> {
        if self.url.contains('#') {
            return Err(Error::Url("a WebSocket URL has no fragment".to_owned()));
        }
        self.url
            .parse()
            .map_err(|e| Error::Url(format!("{:?}: {e}", self.url)))
    }

    /// The opening handshake's request for `uri`, with the subprotocols,
    /// headers and compression offer (taken out of the builder).
    pub(crate) fn request(&mut self, uri: Uri) -> ClientRequest {
        let mut request = ClientRequest::new(uri);
        for protocol in std::mem::take(&mut self.protocols) {
            request = request.protocol(protocol);
        }
        *request.headers_mut() = std::mem::take(&mut self.headers);
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &self.config.deflate {
            request = request.extension(deflate.offer());
        }
        request
    }

    /// The builder's handshake timeout.
    pub(crate) fn handshake_deadline(&self) -> Instant {
        Instant::now() + self.handshake_timeout
    }

    /// The builder's connect timeout.
    pub(crate) fn connect_deadline(&self) -> Instant {
        Instant::now() + self.connect_timeout
    }

    /// The WebSocket settings.
    #[cfg(feature = "http2")]
    pub(crate) fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Opens the WebSocket on `stream` once the server agreed to `negotiated`
    /// in `response`, which the WebSocket keeps.
    pub(crate) fn open<S>(
        self,
        stream: S,
        rest: bytes::Bytes,
        negotiated: handshake::Negotiated,
        response: Response<()>,
    ) -> Result<WebSocket<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        #[cfg(feature = "deflate")]
        let deflate = match &self.config.deflate {
            Some(config) => config.accept_response(&negotiated.extensions)?,
            None => None,
        };
        let ws = WebSocket::from_partially_read(
            stream,
            Role::Client,
            rest,
            negotiated.protocol,
            self.config,
        )
        .with_handshake(Handshake {
            response: Some(response),
            ..Handshake::default()
        });
        #[cfg(feature = "deflate")]
        let ws = match deflate {
            Some(params) => ws.with_deflate(params),
            None => ws,
        };
        Ok(ws)
    }

    pub(crate) async fn handshake<S>(mut self, uri: Uri, mut stream: S) -> Result<WebSocket<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let request = self.request(uri);
        let (request, expected) = request.build(&mut ThreadRngMask).map_err(build_error)?;
        let mut wire = BytesMut::new();
        handshake::write_request(&request, &mut wire);

        let limits = self.config.limits.clone();
        let deadline = self.handshake_deadline();
        let exchange = async {
            stream.write_all(&wire).await?;
            let (response, rest) =
                read_head(&mut stream, &limits, handshake::parse_response).await?;
            match expected.validate(&response) {
                Ok(negotiated) => Ok((negotiated, rest, response)),
                Err(HandshakeError::Status(_)) => {
                    let body = read_error_body(&mut stream, response.headers(), rest).await;
                    let (parts, ()) = response.into_parts();
                    Err(Error::Rejected(Box::new(Response::from_parts(
                        parts,
                        body.freeze(),
                    ))))
                }
                Err(err) => Err(Error::Handshake(err)),
            }
        };
        let (negotiated, rest, response) = match timeout_at(deadline, exchange).await {
            Err(_) => return Err(Error::Timeout(Timeout::Handshake)),
            Ok(result) => result?,
        };
        self.open(stream, rest.freeze(), negotiated, response)
    }
}

/// The addresses `host:port` resolves to, at least one; otherwise
/// [`Error::Resolve`] naming the host. Used for the server, and for the
/// target of a `socks5://` proxy, which resolves names on this side.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>> {
    let failed = |source| Error::Resolve {
        host: host.to_owned(),
        source,
    };
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(failed)?
        .collect();
    if addrs.is_empty() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name has no addresses",
        )));
    }
    Ok(addrs)
}

/// A TCP connection to `host:port`: the name resolved, then each address
/// tried in turn. The error names the host that did not resolve, or the
/// last address that did not connect.
async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream> {
    let mut last = None;
    for addr in resolve(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(source) => {
                last = Some(Error::Connect {
                    host: host.to_owned(),
                    addr,
                    source,
                })
            }
        }
    }
    // `resolve` gave at least one address, so `last` holds its failure.
    Err(last.unwrap_or_else(|| Error::Url(format!("{host} has no address to connect to"))))
}

/// A request the handshake cannot build, as the error to report.
pub(crate) fn build_error(err: HandshakeError) -> Error {
    match err {
        HandshakeError::InvalidUri(why) => Error::Url(why.to_owned()),
        other => Error::Handshake(other),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// An address where nothing listens.
    fn closed_port() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address_and_the_cause() {
        let addr = closed_port();
        let err = ClientBuilder::new(format!("ws://{addr}/"))
            .no_proxy()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Connect { addr: a, .. } if *a == addr),
            "{err}"
        );
        assert_eq!(err.to_string(), format!("cannot connect to {addr}"));
        let cause = err.source().expect("the I/O error").to_string();
        assert!(cause.to_lowercase().contains("refused"), "{cause}");
        assert!(!err.to_string().contains(&cause), "the cause is said once");
    }

    #[tokio::test]
    async fn a_host_name_says_which_address_it_resolved_to() {
        let port = closed_port().port();
        let err = ClientBuilder::new(format!("ws://localhost:{port}/"))
            .no_proxy()
            .connect()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot connect to localhost at "),
            "{text}"
        );
        assert!(text.ends_with(&format!(":{port}")), "{text}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_named() {
        let err = ClientBuilder::new("ws://nowhere.invalid/")
            .no_proxy()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Resolve { host, .. } if host == "nowhere.invalid"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "cannot resolve the host name nowhere.invalid"
        );
        assert!(err.source().is_some());
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn a_failed_tls_handshake_names_the_server_and_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            // Not TLS: a plain HTTP answer to the ClientHello.
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        });
        let err = ClientBuilder::new(format!("wss://localhost:{port}/"))
            .no_proxy()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Tls { server_name: Some(name), .. } if name == "localhost"),
            "{err}"
        );
        assert_eq!(err.to_string(), "the TLS handshake with localhost failed");
        let why = err.source().expect("why").to_string();
        assert!(!why.is_empty());
    }

    #[cfg(feature = "tls")]
    #[tokio::test(start_paused = true)]
    async fn a_timeout_names_its_phase() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Accepts, and says nothing.
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let err = ClientBuilder::new(format!("wss://{addr}/"))
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(Timeout::Tls)), "{err}");
        assert_eq!(err.to_string(), "the TLS handshake timed out");

        let err = ClientBuilder::new(format!("ws://{addr}/"))
            .no_proxy()
            .handshake_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(Timeout::Handshake)), "{err}");
        assert_eq!(err.to_string(), "the opening handshake timed out");
    }
}
