//! The WebSocket protocol (RFC 6455) as a state machine: bytes in, messages and
//! bytes out.
//!
//! This crate is the core of duplex. It does **no I/O, no async, no clock
//! reading** (the caller passes the time in, for keepalive and the close
//! timeout), and touches the OS only to seed the default mask generator
//! (feature `os-rng`). Everything the protocol says about bytes is here, enforced to the
//! letter: frame decoding with every header rule, masking, fragment reassembly,
//! incremental UTF-8 validation, close codes and the closing handshake, and the
//! opening handshake on the `http` crate's types. The async library (`duplex`)
//! moves bytes between this and a socket.
//!
//! - [`Connection`]: one connection after the handshake; see its docs for the
//!   order of calls.
//! - [`handshake`]: the opening handshake, client and server.
//! - [`frame`], [`mask`], [`utf8`], [`close`]: the pieces, usable on their own.
//!
//! Every violation by the peer fails the connection with the close code RFC 6455
//! gives it (see [`ProtocolError::close_code`]): 1002 for protocol errors, 1007
//! for text that is not UTF-8, 1009 for frames or messages over the
//! configured [`Limits`].
//!
//! # Example
//!
//! A client and a server, wired back to back in memory:
//!
//! ```
//! use duplex_proto::handshake::{self, ClientRequest};
//! use duplex_proto::{CloseCode, Limits, Connection, Message, ReadyState};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Limits::default();
//!
//! // Client: build and send the opening request.
//! let (request, client_handshake) =
//!     ClientRequest::new("ws://example.com/chat".parse()?).build(&mut duplex_proto::rng::ThreadRngMask)?;
//! let mut wire = bytes::BytesMut::new();
//! handshake::write_request(&request, &mut wire);
//!
//! // Server: parse, validate, answer 101.
//! let (request, len) = handshake::parse_request(&wire, &config)?.expect("complete head");
//! assert_eq!(len, wire.len());
//! let upgrade = handshake::validate_request(&request)?;
//! let response = upgrade.response(None, &[])?;
//! let mut wire = bytes::BytesMut::new();
//! handshake::write_response(&response, &mut wire);
//!
//! // Client: check the answer.
//! let (response, _) = handshake::parse_response(&wire, &config)?.expect("complete head");
//! client_handshake.validate(&response)?;
//!
//! // Both ends are open: exchange a message and close.
//! let mut client = Connection::client(config.clone());
//! let mut server = Connection::server(config);
//! client.send(Message::text("Hello"))?;
//! client.close(CloseCode::NORMAL, "bye")?;
//! while let Some(bytes) = client.take_output() {
//!     server.receive(&bytes);
//! }
//! assert_eq!(server.next_message()?, Some(Message::text("Hello")));
//! assert_eq!(server.next_message()?, Some(Message::close(CloseCode::NORMAL, "bye")));
//!
//! // The server echoed the close; it closes the transport first.
//! while let Some(bytes) = server.take_output() {
//!     client.receive(&bytes);
//! }
//! assert!(server.should_close_transport());
//! server.transport_closed();
//! client.next_message()?;
//! client.receive_eof();
//! assert_eq!(client.next_message()?, None);
//! assert_eq!(client.ready_state(), ReadyState::Closed);
//! assert!(client.close_info().unwrap().was_clean);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod close;
mod config;
mod connection;
#[cfg(feature = "deflate")]
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
mod output;
mod prepared;
pub mod rng;
pub mod utf8;

pub use crate::close::{CloseCode, CloseFrame, CloseStatus};
pub use crate::config::Limits;
pub use crate::connection::{
    BufferPool, CloseInfo, Connection, Expired, Fragment, Keepalive, NoPool, READ_ROOM, ReadyState,
};
pub use crate::error::{ProtocolError, SendError};
pub use crate::frame::Role;
pub use crate::handshake::HandshakeError;
#[cfg(feature = "json")]
pub use crate::message::JsonMessage;
pub use crate::message::Message;
pub use crate::prepared::PreparedMessage;
pub use crate::utf8::Utf8Bytes;
