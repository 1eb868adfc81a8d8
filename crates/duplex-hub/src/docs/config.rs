//! `[docs]`: the documents' configuration and its checks.

use serde::Deserialize;

/// `[docs]`: collaborative documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocsConfig {
    /// Whether `/docs/NAME` is served. Default: true.
    pub enabled: bool,
    /// The most bytes a document may take in storage (its snapshot and the
    /// updates after it); an update beyond closes its connection with 1009.
    /// Default: 8 MiB.
    pub max_document_size: usize,
    /// The largest message a client may send to `/docs`, in bytes (one
    /// update, or the SyncStep2 of a client coming back with offline edits);
    /// more closes the connection with 1009. Default: 1 MiB.
    pub max_message_size: usize,
    /// Messages (updates and awareness) a connection may send per second on
    /// average; beyond the burst the connection is closed with 1008 (the
    /// provider reconnects and resynchronizes, losing nothing). Default: 100.
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst. Default: 500.
    pub burst: u32,
    /// Milliseconds a document stays loaded after its last client leaves.
    /// Default: 30000.
    pub unload_after_ms: u64,
    /// Updates stored before they are folded into a snapshot. Default: 500.
    pub compact_every: u64,
}

impl Default for DocsConfig {
    fn default() -> Self {
        DocsConfig {
            enabled: true,
            max_document_size: 8 << 20,
            max_message_size: 1 << 20,
            messages_per_second: 100,
            burst: 500,
            unload_after_ms: 30_000,
            compact_every: 500,
        }
    }
}

impl DocsConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    ///
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_size < 1024 {
            return Err("docs.max_message_size must be at least 1024 bytes".into());
        }
        if self.max_document_size < self.max_message_size {
            return Err("docs.max_document_size must be at least docs.max_message_size".into());
        }
        if self.messages_per_second == 0 || self.burst == 0 {
            return Err("docs.messages_per_second and docs.burst must be at least 1".into());
        }
        if self.compact_every == 0 {
            return Err("docs.compact_every must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        assert!(DocsConfig::default().validate().is_ok());
        let bad = DocsConfig {
            compact_every: 0,
            ..DocsConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
