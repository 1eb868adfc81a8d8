//! duplex: WebSocket client and server for tokio.
//!
//! Strict RFC 6455 (every rule enforced by [`duplex_proto`], the sans-IO core),
//! `ws://` and `wss://` (rustls), and an API in the shape of the browser's:
//! connect to a URL with optional subprotocols; receive messages; send text,
//! JSON and binary; close with a code and a reason; read the ready state and, at
//! the end, the close code, reason and whether the close was clean.
//!
//! - [`connect`] and [`ClientBuilder`]: the client, directly or through an
//!   HTTP CONNECT or SOCKS5 [`Proxy`] (by default the one the environment
//!   names, as curl reads `https_proxy`, `http_proxy`, `all_proxy` and
//!   `no_proxy`); [`reconnect`]: a client that reconnects by itself, with
//!   backoff, a send queue and keepalive.
//! - [`accept`] and [`Acceptor`]: the server, on any byte stream.
//! - [`WebSocket`]: a `Stream` of [`Message`]s and a `Sink` of them, with
//!   `send`, `recv`, `close`, `split`, keepalive and bounded write buffering.
//! - `upgrade` (feature `hyper`) and `axum` (feature `axum`, the
//!   `WebSocketUpgrade` extractor): WebSocket on the port of a hyper 1 server
//!   or an axum app, over HTTP/1.1 and HTTP/2.
//! - [`Http2Connection`] and [`ClientBuilder::http2`] (feature `http2`): the
//!   client over HTTP/2 (RFC 8441), many WebSockets on one connection.
//!
//! # Example
//!
//! An echo server and a client talking to it:
//!
//! ```
//! use duplex::{CloseCode, Message};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> duplex::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut ws = duplex::accept(tcp).await?;
//!     while let Some(message) = ws.next().await {
//!         let message = message?;
//!         if message.is_text() || message.is_binary() {
//!             ws.send(message).await?;
//!         }
//!     }
//!     Ok::<_, duplex::Error>(())
//! });
//!
//! let mut ws = duplex::connect(format!("ws://{addr}/")).await?;
//! ws.send(Message::text("Hello Server!")).await?;
//! assert_eq!(ws.next().await.unwrap()?, Message::text("Hello Server!"));
//! ws.close(CloseCode::NORMAL, "done").await?;
//! let info = ws.close_info().unwrap();
//! assert!(info.was_clean);
//! server.await.unwrap()?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod config;
#[cfg(feature = "hyper")]
mod direct;
mod error;
mod head;
mod header;
#[cfg(feature = "http2")]
mod http2;
mod origin;
mod proxy;
pub mod reconnect;
mod server;
mod spare;
mod split;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;
mod websocket;

#[cfg(feature = "json")]
pub use duplex_proto::JsonMessage;
#[cfg(feature = "deflate")]
pub use duplex_proto::deflate::{DeflateConfig, DeflateParams};
pub use duplex_proto::{
    CloseCode, CloseFrame, CloseInfo, CloseStatus, Fragment, HandshakeError, Keepalive, Limits,
    Message, PreparedMessage, ProtocolError, ReadyState, Role, SendError, Utf8Bytes,
};

pub use crate::client::{ClientBuilder, connect};
pub use crate::config::WebSocketConfig;
pub use crate::error::{Error, Result, Timeout};
pub use crate::header::InvalidHeader;
#[cfg(feature = "http2")]
pub use crate::http2::Http2Connection;
pub use crate::origin::Origins;
pub use crate::proxy::{Proxy, ProxyError, ProxyErrorKind};
pub use crate::server::{Acceptance, Acceptor, PendingUpgrade, Rejection, accept};
pub use crate::split::{ReadHalf, Sender, TrySendError, WriteHalf};
pub use crate::stream::{ClientStream, MaybeTlsStream};
pub use crate::websocket::WebSocket;

/// The protocol core, for those who need its lower layers.
pub use duplex_proto as proto;
