//! [`EchoServer`]: our side as a server, duplex in process, echoing and
//! obeying the scripted commands, recording each connection in a
//! [`ConnRecord`].

use std::net::SocketAddr;
use std::sync::Arc;

use duplex::tls::rustls::ServerConfig;
use duplex::{
    Acceptance, Acceptor, CloseCode, CloseInfo, CloseStatus, DeflateConfig, DeflateParams, Message,
    WebSocket,
};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{SERVER_MAX_MESSAGE, SERVER_PROTOCOLS, Tap, describe, within};

/// What one connection to [`EchoServer`] received and how it ended.
#[derive(Clone, Default)]
pub struct ConnRecord {
    /// The request path (`/main`, `/server-closes`...), or a description of
    /// the failure if the connection never opened.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The subprotocol agreed.
    pub protocol: Option<String>,
    /// Every message received, commands and control frames included, in order.
    pub received: Vec<Message>,
    /// The peer's close frame, as `WebSocket::received_close` tells it.
    pub received_close: Option<CloseStatus>,
    /// How the connection ended, as `WebSocket::close_info` tells it.
    pub close_info: Option<CloseInfo>,
    /// Errors met on the way (the connection failing, a send failing).
    pub errors: Vec<String>,
    /// The permessage-deflate parameters agreed, as `WebSocket::deflate` tells
    /// them; `None` without compression.
    pub deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` header of the 101 response we sent, as
    /// it went out.
    pub extensions_answered: Option<String>,
    /// Bytes read from the connection (after TLS), handshake included.
    pub bytes_read: u64,
    /// Bytes written to the connection (before TLS), handshake included.
    pub bytes_written: u64,
}

impl ConnRecord {
    /// The text and binary messages received, commands (`cmd:...`) left out.
    pub fn data_messages(&self) -> Vec<&Message> {
        self.received
            .iter()
            .filter(|m| match m {
                Message::Text(text) => !text.starts_with("cmd:"),
                Message::Binary(_) => true,
                _ => false,
            })
            .collect()
    }

    /// The commands received, in order.
    pub fn commands(&self) -> Vec<&str> {
        self.received
            .iter()
            .filter_map(|m| m.as_text().filter(|t| t.starts_with("cmd:")))
            .collect()
    }

    /// The client's `Sec-WebSocket-Extensions` offer, as received.
    pub fn extensions_offered(&self) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all("sec-websocket-extensions")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

impl std::fmt::Debug for ConnRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let received: Vec<String> = self.received.iter().map(describe).collect();
        f.debug_struct("ConnRecord")
            .field("path", &self.path)
            .field("protocol", &self.protocol)
            .field("received", &received)
            .field("received_close", &self.received_close)
            .field("close_info", &self.close_info)
            .field("errors", &self.errors)
            .field("extensions_offered", &self.extensions_offered())
            .field("extensions_answered", &self.extensions_answered)
            .field("deflate", &self.deflate)
            .field("bytes_read", &self.bytes_read)
            .field("bytes_written", &self.bytes_written)
            .finish()
    }
}

/// Our server: duplex in process on 127.0.0.1 (ws:// or wss://), speaking
/// `chat.v1` and `chat.v2`, echoing text and binary messages and obeying the
/// scripted commands; it records each connection once it ends. Stops when
/// dropped. Every connection is read and written through a [`Tap`].
pub struct EchoServer {
    addr: SocketAddr,
    records: watch::Receiver<Vec<ConnRecord>>,
    accept_loop: JoinHandle<()>,
}

impl EchoServer {
    /// Starts the server with `Acceptor`'s defaults for compression
    /// (permessage-deflate offers accepted); with a TLS configuration, it
    /// serves wss://.
    pub async fn start(tls: Option<Arc<ServerConfig>>) -> EchoServer {
        EchoServer::start_with(tls, Some(DeflateConfig::default())).await
    }

    /// Starts the server accepting permessage-deflate offers within `deflate`,
    /// or declining them all with `None`.
    pub async fn start_with(
        tls: Option<Arc<ServerConfig>>,
        deflate: Option<DeflateConfig>,
    ) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let builder = Acceptor::new()
            .protocols(SERVER_PROTOCOLS)
            .max_message_size(SERVER_MAX_MESSAGE);
        let builder = match deflate {
            Some(config) => builder.deflate(config),
            None => builder.no_deflate(),
        };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (tx, records) = watch::channel(Vec::new());
        let accept_loop = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let builder = builder.clone();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let record = match acceptor {
                        None => serve(&builder, Tap::new(tcp)).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => serve(&builder, Tap::new(tls)).await,
                            Err(err) => ConnRecord {
                                path: format!("<TLS handshake failed: {err}>"),
                                ..ConnRecord::default()
                            },
                        },
                    };
                    tx.send_modify(|records| records.push(record));
                });
            }
        });
        EchoServer {
            addr,
            records,
            accept_loop,
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits for the connection to `path` to end and returns its record.
    pub async fn record(&self, path: &str) -> ConnRecord {
        let mut records = self.records.clone();
        let what = format!("our server: the connection to {path} to end");
        let found = within(
            &what,
            records.wait_for(|records| records.iter().any(|r| r.path == path)),
        )
        .await
        .expect("the server is running");
        found
            .iter()
            .find(|r| r.path == path)
            .cloned()
            .expect("found above")
    }

    /// The records of the connections that ended so far.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.records.borrow().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Serves one connection to its end and says what happened.
async fn serve<S>(builder: &Acceptor, stream: Tap<S>) -> ConnRecord
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let counts = stream.counts();
    let mut record = ConnRecord::default();
    let pending = match builder.read_request(stream).await {
        Ok(pending) => pending,
        Err(err) => {
            record.path = format!("<bad upgrade request: {err}>");
            return record;
        }
    };
    record.path = pending.request().uri().path().to_owned();
    record.headers = pending.request().headers().clone();
    let mut ws = match pending.accept(Acceptance::new()).await {
        Ok(ws) => ws,
        Err(err) => {
            record.errors.push(format!("accept: {err}"));
            return record;
        }
    };
    record.protocol = ws.protocol().map(str::to_owned);
    record.deflate = ws.deflate().copied();
    record.extensions_answered = counts.written_header("sec-websocket-extensions");

    while let Some(item) = ws.recv().await {
        let message = match item {
            Ok(message) => message,
            Err(err) => {
                record.errors.push(err.to_string());
                continue;
            }
        };
        record.received.push(message.clone());
        let outcome = match message {
            Message::Text(text) if text.starts_with("cmd:") => {
                command(&mut ws, &text["cmd:".len()..], &mut record).await
            }
            Message::Text(_) | Message::Binary(_) => ws.send(message).await,
            _ => Ok(()),
        };
        if let Err(err) = outcome {
            record.errors.push(err.to_string());
        }
    }
    record.received_close = ws.received_close().cloned();
    record.close_info = ws.close_info();
    record.bytes_read = counts.read();
    record.bytes_written = counts.written();
    record
}

/// Our server's side of the scripted commands.
async fn command<S>(
    ws: &mut WebSocket<S>,
    command: &str,
    record: &mut ConnRecord,
) -> duplex::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "close" => {
            let (code, reason) = arg.split_once(' ').unwrap_or((arg, ""));
            let code = code
                .parse()
                .map_err(|_| duplex::Error::Config(format!("cmd:close: bad code {code:?}")))?;
            ws.close(CloseCode(code), reason).await
        }
        "ping" => {
            ws.send(Message::ping("rs-ping")).await?;
            // Wait for the pong that answers it; anything else is recorded.
            loop {
                match ws.recv().await {
                    Some(Ok(Message::Pong(data))) if data == "rs-ping" => {
                        record.received.push(Message::Pong(data));
                        break;
                    }
                    Some(Ok(other)) => record.received.push(other),
                    Some(Err(err)) => return Err(err),
                    // The stream ended: closed, cleanly or not, before the pong.
                    None => {
                        let was_clean = ws.close_info().is_some_and(|info| info.was_clean);
                        return Err(duplex::Error::Closed { was_clean });
                    }
                }
            }
            ws.send(Message::text("pong:rs-ping")).await
        }
        "protocol" => {
            let reply = format!("protocol:{}", ws.protocol().unwrap_or(""));
            ws.send(Message::text(reply)).await
        }
        "header" => {
            let value = record
                .headers
                .get(arg)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            ws.send(Message::text(format!("header:{value}"))).await
        }
        "extensions" => {
            let answered = record.extensions_answered.as_deref().unwrap_or("");
            ws.send(Message::text(format!("extensions:{answered}")))
                .await
        }
        other => {
            let reply = format!("error:unknown command {other}");
            ws.send(Message::text(reply)).await
        }
    }
}
