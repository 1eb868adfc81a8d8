//! The hub over real sockets and a real SQLite database: the protocol,
//! presence, history and recovery, persistence, slow consumers, security and
//! limits, the HTTP routes.

mod common;
mod history;
mod http_api;
mod ip_limits;
mod protocol;
mod security;
mod slow;
mod tokens;
