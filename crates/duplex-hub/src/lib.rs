//! duplex-hub: the real-time hub of duplex, as a library; `duplex serve` runs it.
//!
//! Clients open a WebSocket at `/ws` and speak a small JSON protocol
//! (docs/PROTOCOL.md): subscribe to channels `namespace:name`, publish to
//! them, see who else is there (presence), read history, and after a
//! reconnect recover exactly what they missed (`since`). Publications are
//! stored before they are acknowledged or broadcast, so history and offsets
//! survive a restart: in SQLite on one node, or in Redis shared by several
//! nodes ([`engine`]). The same port serves the pages (`/`, `/chat`,
//! `/ticker`), a publish API for back ends (`POST /api/publish`), Prometheus
//! metrics (`/metrics`) and `/healthz`; a simulated ticker feed publishes to
//! `ticker:*`.
//!
//! JSON Web Tokens ([`auth`]) say who a connection is and which channels it
//! may use; a connection whose token has `exp` is asked to `refresh` it
//! before then (else it is closed with 4001), and a private namespace
//! (`private = true`) needs a subscription token for each channel.
//!
//! - [`Config`]: the TOML configuration (namespaces, limits, auth, origins,
//!   feed), with the defaults of [`Config::default`].
//! - [`Server`]: opens the hub on a data folder and serves a listener until a
//!   shutdown future completes.
//! - [`Hub`]: the core (channels, storage, metrics), for embedding.
//! - [`hooks`]: backend hooks (`[proxy]`), HTTP endpoints of the
//!   application that allow or deny connects, subscribes and publishes.
//! - [`forwarded`]: the client's address behind reverse proxies, believed
//!   only from `server.trusted_proxies`.
//! - [`abuse`]: the connections and handshakes a second each client address
//!   may have, checked before the upgrade.
//!
//! # Example
//!
//! A hub on a free port, a client subscribing and publishing:
//!
//! ```
//! use duplex::{CloseCode, JsonMessage, Message};
//! use duplex_hub::{Config, Server};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = tempfile::tempdir()?;
//! let mut config = Config::default();
//! config.feed.enabled = false;
//! let server = Server::open(config, data.path()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.serve(listener, async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut ws = duplex::connect(format!("ws://{addr}/ws")).await?;
//! ws.send(Message::text(r#"{"id":1,"op":"subscribe","channel":"chat:lobby"}"#)).await?;
//! let reply: serde_json::Value = ws.next().await.unwrap()?.json()?;
//! assert_eq!(reply["result"]["offset"], 0);
//!
//! ws.send(Message::text(r#"{"id":2,"op":"publish","channel":"chat:lobby","data":{"text":"hi"}}"#)).await?;
//! let push: serde_json::Value = ws.next().await.unwrap()?.json()?;
//! assert_eq!(push["push"], "message");
//! assert_eq!(push["data"]["text"], "hi");
//! let ack: serde_json::Value = ws.next().await.unwrap()?.json()?;
//! assert_eq!(ack["result"]["offset"], 1);
//!
//! ws.close(CloseCode::NORMAL, "done").await?;
//!
//! let _ = stop.send(());
//! serving.await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod abuse;
pub mod admission;
pub mod auth;
pub mod channel;
pub mod clock;
pub mod config;
mod conn;
pub mod docs;
pub mod engine;
pub mod feed;
pub mod fetch;
pub mod forwarded;
pub mod history;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod pages;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod service;
pub mod storage;

pub use crate::config::{Config, ConfigError};
pub use crate::hub::Hub;
pub use crate::protocol::{ErrorCode, HubError};
pub use crate::server::Server;

/// An error and its causes, as one line: each error's `Display`, then each
/// [`source`](std::error::Error::source)'s, joined with `: `. duplex's errors
/// say only their own layer's part ("cannot connect to 127.0.0.1:1"), their
/// causes say the rest ("Connection refused"); logs and the command line print
/// this. A cause whose text the line already holds is not repeated, for
/// errors of other crates that put their source's text in their own.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}
