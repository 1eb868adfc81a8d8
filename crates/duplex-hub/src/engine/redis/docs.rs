//! Collaborative documents in Redis: one update log per document, shared by
//! every node, and the updates and awareness passed from node to node.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `duplex:ds:{DOC}` | string | the last update's sequence number (`INCRBY`) |
//! | `duplex:dl:{DOC}` | stream | the log: entry id `0-SEQ`, field `u` (the Yjs update) |
//! | `duplex:dn:{DOC}` | hash | the snapshot: `seq` and `data` (every update up to `seq` in one) |
//! | `duplex:d:{DOC}` | pub/sub channel | `u SEQ UPDATE` and `a NODE AWARENESS` (an update, or a query the others answer) |
//!
//! Appending is one Lua script: numbers the updates, adds them to the log
//! and publishes each, so an update is in Redis before any node sends it on.
//! A compaction writes a snapshot holding every update up to its `seq` and
//! trims the log below it (`XTRIM MINID`), unless a newer snapshot is there
//! already: what a document takes in Redis is one snapshot and the tail of
//! updates after it.

use std::sync::Arc;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::Script;
use tokio::sync::mpsc;

use super::{Inner, key};
use crate::docs::store::{StoreError, Stored};

/// What a node hears about a document it has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocEvent {
    /// An update stored by some node, with its sequence number.
    Update {
        /// Its place in the log.
        seq: u64,
        /// The Yjs update.
        update: Vec<u8>,
    },
    /// A y-websocket awareness message from another node.
    Awareness(Vec<u8>),
    /// The pub/sub connection was lost and is back: read the log for what
    /// may have been missed.
    CatchUp,
}

pub(super) fn append_script() -> Script {
    Script::new(
        r"
-- KEYS: seq, log, channel. ARGV: the updates.
local n = #ARGV
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
for i = 1, n do
  local seq = string.format('%d', first + i - 1)
  redis.call('XADD', KEYS[2], '0-' .. seq, 'u', ARGV[i])
  redis.call('PUBLISH', KEYS[3], 'u ' .. seq .. ' ' .. ARGV[i])
end
return first
",
    )
}

pub(super) fn compact_script() -> Script {
    Script::new(
        r"
-- KEYS: snapshot, log. ARGV: seq, data.
local current = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local seq = tonumber(ARGV[1])
if seq > current then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'data', ARGV[2])
  redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. string.format('%d', seq + 1))
end
return 1
",
    )
}

/// Parses a message of a document's pub/sub channel; `None` for this
/// node's own awareness (or nonsense).
pub(super) fn parse_doc_event(payload: &[u8], holder: &str) -> Option<DocEvent> {
    let (kind, rest) = split_word(payload)?;
    let (word, body) = split_word(rest)?;
    match kind {
        b"u" => Some(DocEvent::Update {
            seq: std::str::from_utf8(word).ok()?.parse().ok()?,
            update: body.to_vec(),
        }),
        b"a" => (word != holder.as_bytes()).then(|| DocEvent::Awareness(body.to_vec())),
        _ => None,
    }
}

fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

fn failed(err: crate::protocol::HubError) -> StoreError {
    StoreError(err.message)
}

/// The documents' side of the Redis engine.
#[derive(Clone)]
pub struct RedisDocs {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisDocs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDocs").finish_non_exhaustive()
    }
}

impl RedisDocs {
    /// Where this node hears of updates and awareness of its documents;
    /// `None` after the first call.
    pub fn events(&self) -> Option<mpsc::UnboundedReceiver<(String, DocEvent)>> {
        let (sender, events) = mpsc::unbounded_channel();
        self.inner.doc_events.set(sender).ok()?;
        Some(events)
    }

    /// Starts hearing about document `doc` (call before loading it).
    ///
    /// # Errors
    ///
    /// Redis is not reachable.
    pub async fn open(&self, doc: &str) -> Result<(), StoreError> {
        let shard = self.inner.shard(doc);
        let mut subscriptions = shard.subscriptions.lock().await;
        let first = {
            let mut refs = self.inner.lock_doc_refs();
            let count = refs.entry(doc.to_string()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if !first {
            return Ok(());
        }
        let subscribed = match subscriptions.as_mut() {
            Some(sink) => self
                .inner
                .call(shard, sink.subscribe(key("d", doc)))
                .await
                .map_err(failed),
            None => Err(StoreError(format!(
                "Redis {}: not connected (reconnecting)",
                shard.name
            ))),
        };
        if subscribed.is_err() {
            self.inner.lock_doc_refs().remove(doc);
        }
        subscribed
    }

    /// Stops hearing about document `doc` (it was unloaded).
    pub async fn close(&self, doc: &str) {
        let shard = self.inner.shard(doc);
        let mut subscriptions = shard.subscriptions.lock().await;
        let last = {
            let mut refs = self.inner.lock_doc_refs();
            match refs.get_mut(doc) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    refs.remove(doc);
                    true
                }
                None => false,
            }
        };
        if last && let Some(sink) = subscriptions.as_mut() {
            let _ = self
                .inner
                .call(shard, sink.unsubscribe(key("d", doc)))
                .await;
        }
    }

    /// Reads a document: its snapshot and the updates after it.
    ///
    /// # Errors
    ///
    /// Redis is not reachable.
    pub async fn load(&self, doc: &str) -> Result<Stored, StoreError> {
        let shard = self.inner.shard(doc);
        let mut commands = shard.commands.clone();
        let (seq, data): (Option<u64>, Option<Vec<u8>>) = self
            .inner
            .call(
                shard,
                redis::cmd("HMGET")
                    .arg(key("dn", doc))
                    .arg("seq")
                    .arg("data")
                    .query_async(&mut commands),
            )
            .await
            .map_err(failed)?;
        let after = seq.unwrap_or(0);
        let mut stored = Stored {
            snapshot: data,
            updates: Vec::new(),
            last_seq: after,
        };
        for (seq, update) in self.range(doc, after, None).await? {
            stored.last_seq = seq;
            stored.updates.push(update);
        }
        Ok(stored)
    }

    /// The updates with `after < seq < before` (all after `after` without
    /// `before`), in order.
    ///
    /// # Errors
    ///
    /// Redis is not reachable.
    pub async fn range(
        &self,
        doc: &str,
        after: u64,
        before: Option<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if before.is_some_and(|before| before <= after + 1) {
            return Ok(Vec::new());
        }
        let shard = self.inner.shard(doc);
        let mut commands = shard.commands.clone();
        let end = before.map_or_else(|| "+".to_string(), |b| format!("0-{}", b - 1));
        let entries: Vec<(String, Vec<Vec<u8>>)> = self
            .inner
            .call(
                shard,
                commands.xrange(key("dl", doc), format!("0-{}", after + 1), end),
            )
            .await
            .map_err(failed)?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let seq = super::parse_offset(&id)?;
                let update = fields
                    .chunks_exact(2)
                    .find(|pair| pair[0] == b"u")
                    .map(|pair| pair[1].clone())?;
                Some((seq, update))
            })
            .collect())
    }

    /// Appends updates to the log; returns the sequence number of the
    /// first (the others follow it).
    ///
    /// # Errors
    ///
    /// Redis is not reachable (nothing is stored then, or all of it).
    pub async fn append(&self, doc: &str, updates: &[Bytes]) -> Result<u64, StoreError> {
        let shard = self.inner.shard(doc);
        let mut invocation = self.inner.scripts.doc_append.prepare_invoke();
        invocation
            .key(key("ds", doc))
            .key(key("dl", doc))
            .key(key("d", doc));
        for update in updates {
            invocation.arg(&update[..]);
        }
        let mut commands = shard.commands.clone();
        self.inner
            .call(shard, invocation.invoke_async(&mut commands))
            .await
            .map_err(failed)
    }

    /// Writes `snapshot` as the document up to `seq` and trims the log
    /// below it, unless a newer snapshot is there.
    ///
    /// # Errors
    ///
    /// Redis is not reachable.
    pub async fn compact(&self, doc: &str, seq: u64, snapshot: Vec<u8>) -> Result<(), StoreError> {
        let shard = self.inner.shard(doc);
        let mut invocation = self.inner.scripts.doc_compact.prepare_invoke();
        invocation
            .key(key("dn", doc))
            .key(key("dl", doc))
            .arg(seq)
            .arg(snapshot);
        let mut commands = shard.commands.clone();
        self.inner
            .call(shard, invocation.invoke_async::<i64>(&mut commands))
            .await
            .map(|_| ())
            .map_err(failed)
    }

    /// Passes an awareness message on to the other nodes (best effort:
    /// awareness is not stored).
    pub fn publish_awareness(&self, doc: &str, message: Vec<u8>) {
        let inner = self.inner.clone();
        let doc = doc.to_string();
        tokio::spawn(async move {
            let shard = inner.shard(&doc);
            let mut payload = format!("a {} ", inner.holder).into_bytes();
            payload.extend_from_slice(&message);
            let mut commands = shard.commands.clone();
            let sent: Result<i64, _> = inner
                .call(shard, commands.publish(key("d", &doc), payload))
                .await;
            if let Err(err) = sent {
                tracing::debug!(%err, doc, "passing awareness on failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_events_parse() {
        assert_eq!(
            parse_doc_event(b"u 7 \x01\x00 \xff", "me/1"),
            Some(DocEvent::Update {
                seq: 7,
                update: b"\x01\x00 \xff".to_vec()
            })
        );
        assert_eq!(
            parse_doc_event(b"a other/2 \x01\x02", "me/1"),
            Some(DocEvent::Awareness(b"\x01\x02".to_vec()))
        );
        assert_eq!(parse_doc_event(b"a me/1 \x01", "me/1"), None, "our own");
        assert_eq!(parse_doc_event(b"u x \x01", "me/1"), None);
        assert_eq!(parse_doc_event(b"u", "me/1"), None);
    }
}
