//! Helpers shared by the HTTP integration tests (`hyper.rs`, `axum.rs`): a
//! time limit, a raw HTTP/1.1 request, and an HTTP/2 client that opens a
//! WebSocket with an extended CONNECT (RFC 8441), as a browser does.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use duplex::proto::handshake::parse_extensions;
use duplex::upgrade::Upgraded;
use duplex::{DeflateConfig, Role, WebSocket, WebSocketConfig};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` under a time limit, so a hang fails the test instead of CI.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

/// A response read off the wire: status, head (lower-cased), body.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `GET path` over HTTP/1.1 with `extra` header lines (each ending in
/// CRLF) and `Connection: close`, and reads the whole response.
pub async fn http1_get(addr: SocketAddr, path: &str, extra: &str) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut wire = Vec::new();
    tcp.read_to_end(&mut wire).await.unwrap();
    let text = String::from_utf8(wire).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    RawResponse {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// An HTTP/2 connection with prior knowledge (h2c), as a browser holds one.
pub struct H2 {
    pub sender: SendRequest<Empty<Bytes>>,
    pub port: u16,
    conn: Arc<Mutex<Pin<Box<Connection>>>>,
}

type Connection =
    hyper::client::conn::http2::Connection<TokioIo<TcpStream>, Empty<Bytes>, TokioExecutor>;

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        // Drive the connection from a task, keeping a hand on it to ask
        // whether the server's SETTINGS enable extended CONNECT
        // (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441).
        let conn = Arc::new(Mutex::new(Box::pin(conn)));
        let driven = conn.clone();
        tokio::spawn(std::future::poll_fn(move |cx| {
            driven.lock().unwrap().as_mut().poll(cx).map(|_| ())
        }));
        H2 {
            sender,
            port: addr.port(),
            conn,
        }
    }

    /// Whether the server said it accepts extended CONNECT.
    pub fn connect_protocol_enabled(&self) -> bool {
        self.conn
            .lock()
            .unwrap()
            .is_extended_connect_protocol_enabled()
    }

    /// Sends an extended CONNECT for a WebSocket to `path`, offering
    /// compression, with `headers` added.
    pub async fn websocket_request(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Result<Response<Incoming>> {
        let offer = DeflateConfig::default().offer().to_string();
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-extensions", offer)
            .extension(hyper::ext::Protocol::from_static("websocket"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).unwrap();
        self.sender.ready().await?;
        self.sender.send_request(request).await
    }

    /// Opens a WebSocket to `path` with `headers` added (a subprotocol
    /// offer, an origin): expects 200 and returns the client's end, running
    /// with what the response agreed, and the response's head.
    pub async fn open_websocket(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (WebSocket<Upgraded>, Response<()>) {
        let mut response = self
            .websocket_request(path, headers)
            .await
            .expect("the server answers the extended CONNECT");
        assert_eq!(response.status(), StatusCode::OK);
        let on_upgrade = hyper::upgrade::on(&mut response);
        let head = response.map(|_| ());
        let agreed_protocol = head
            .headers()
            .get("sec-websocket-protocol")
            .map(|p| p.to_str().unwrap().to_owned());
        let extensions = parse_extensions(head.headers()).unwrap();
        let deflate = DeflateConfig::default()
            .accept_response(&extensions)
            .unwrap();
        let upgraded = on_upgrade.await.expect("hyper hands over the stream");
        let ws = client_websocket(TokioIo::new(upgraded), agreed_protocol, deflate);
        (ws, head)
    }
}

/// Reads a whole response body as text.
pub async fn body_text(response: Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The client's end of a WebSocket on an upgraded HTTP/2 stream.
pub fn client_websocket(
    io: Upgraded,
    protocol: Option<String>,
    deflate: Option<duplex::DeflateParams>,
) -> WebSocket<Upgraded> {
    let ws = WebSocket::from_partially_read(
        io,
        Role::Client,
        Bytes::new(),
        protocol,
        WebSocketConfig::default(),
    );
    match deflate {
        Some(params) => ws.with_deflate(params),
        None => ws,
    }
}
