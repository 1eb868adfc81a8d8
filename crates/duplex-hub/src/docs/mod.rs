//! Collaborative documents: Yjs documents, kept with `yrs`, served over the
//! y-websocket protocol at `/docs/NAME`, stored in the hub's SQLite, or in
//! Redis when several nodes share it (then every node that has a document
//! loaded hears the updates and awareness of the others).
//!
//! The npm `y-websocket` provider connects to `ws://HOST/docs` with the
//! document name as its room, exactly as to the y-websocket server: on
//! connect the server sends SyncStep1 and the awareness states it knows,
//! answers SyncStep1 with SyncStep2, applies and broadcasts updates, relays
//! awareness, and removes a connection's awareness states when it leaves.
//!
//! - [`config`]: `[docs]`; [`access`](mod@access): valid names and the
//!   `docs` claim; [`metrics`]: the counters;
//! - `registry`: the loaded documents ([`Docs`]); `peer`: a connection as
//!   its document sees it;
//! - [`sync`]: the wire codec (on `yrs`'s lib0 encoding);
//! - [`awareness`]: who is there, with the rules of y-protocols;
//! - [`store`]: the update log and snapshots in SQLite; `log`: SQLite or
//!   Redis (`crate::engine::redis::RedisDocs`);
//! - `doc`: one task per loaded document (validate, store, broadcast;
//!   unload after the last client);
//! - [`endpoint`]: the HTTP route and the WebSocket connections.
//!
//! Access follows the hub's rules: the same Origin policy as `/ws`, a token
//! in `?token=` (required if `auth.required`), and its `docs` claim, a map of
//! document names or `prefix*` patterns to `"read"` or `"write"`
//! ([`access`](fn@access)). Updates from a read-only connection are ignored, counted and
//! logged; the connection stays open and keeps receiving updates.

pub mod access;
pub mod awareness;
pub mod config;
mod doc;
pub mod endpoint;
#[cfg(test)]
mod lifecycle_tests;
mod log;
pub mod metrics;
mod peer;
mod registry;
pub mod store;
pub mod sync;

pub use access::{Access, MAX_NAME_LEN, access, valid_name};
pub use config::DocsConfig;
pub use doc::MAX_AWARENESS_CLIENTS;
pub use metrics::DocMetrics;
pub(crate) use peer::Peer;
pub use registry::{Docs, JoinError};
