//! One connection to a document, as the document's task sees it.

use duplex::CloseCode;

use crate::registry::Outbox;

/// One connection, as its document sees it.
pub(crate) struct Peer {
    pub(crate) id: u64,
    pub(crate) outbox: Outbox,
    pub(crate) writable: bool,
}

impl Peer {
    /// Asks the connection to close with `code` and `reason` (the first
    /// request wins).
    pub(crate) fn close(&self, code: CloseCode, reason: String) {
        self.outbox.close(code, reason);
    }
}
