//! Documents in the hub's SQLite database: an update log and snapshots,
//! written by one thread.
//!
//! Two tables in `hub.sqlite3` (created here, beside the hub's own):
//! `doc_updates (doc, seq, data)`, every accepted update in the order it was
//! applied, and `doc_snapshots (doc, seq, time, data)`, the whole document
//! as one update once the log up to `seq` was folded into it. A document is
//! its snapshot followed by the updates with a higher `seq`.
//!
//! Every write goes through the writer thread, in order: appends waiting
//! together are committed in one transaction (group commit), a compaction
//! writes the snapshot and deletes the updates it contains in one
//! transaction, and a load reads after every write queued before it. So a
//! document unloaded and loaded again sees everything that was written.

use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::storage::{DB_FILE, join_writer, open_connection};

/// Operations waiting for the writer, at most; callers wait beyond.
const QUEUE: usize = 1024;
/// Operations taken from the queue at once, at most.
const MAX_BATCH: usize = 256;

/// A storage failure, with SQLite's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document storage failed: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError(err.to_string())
    }
}

/// A document as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The snapshot, if the document was ever compacted.
    pub snapshot: Option<Vec<u8>>,
    /// The updates after the snapshot, in order.
    pub updates: Vec<Vec<u8>>,
    /// The `seq` of the last update (or of the snapshot): the next update
    /// gets `last_seq + 1`.
    pub last_seq: u64,
}

impl Stored {
    /// Bytes stored: the snapshot and every update.
    pub fn size(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Vec::len)
            + self.updates.iter().map(Vec::len).sum::<usize>()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Load {
        doc: String,
        reply: Reply<Stored>,
    },
    Append {
        doc: String,
        first_seq: u64,
        updates: Vec<Bytes>,
        reply: Reply<()>,
    },
    Compact {
        doc: String,
        seq: u64,
        snapshot: Vec<u8>,
        reply: Reply<()>,
    },
    Stop,
}

/// The documents' storage: a queue to the writer thread.
pub struct DocStore {
    queue: mpsc::Sender<Op>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocStore").finish_non_exhaustive()
    }
}

fn stopped() -> StoreError {
    StoreError("the document store is shut down".into())
}

impl DocStore {
    /// Opens `hub.sqlite3` in `data_dir` (which must exist), creates the
    /// document tables if needed and starts the writer thread (which dates
    /// snapshots by `clock`).
    ///
    /// # Errors
    ///
    /// The database could not be opened or the tables created.
    pub fn open(data_dir: &Path, clock: Clock) -> Result<DocStore, StoreError> {
        let conn = open_connection(&data_dir.join(DB_FILE))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS doc_updates (
                 doc TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 data BLOB NOT NULL,
                 PRIMARY KEY (doc, seq)
             );
             CREATE TABLE IF NOT EXISTS doc_snapshots (
                 doc TEXT PRIMARY KEY,
                 seq INTEGER NOT NULL,
                 time INTEGER NOT NULL,
                 data BLOB NOT NULL
             );",
        )?;
        let (queue, ops) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("duplex-docs-writer".into())
            .spawn(move || write_loop(conn, ops, clock))
            .map_err(|err| StoreError(err.to_string()))?;
        Ok(DocStore {
            queue,
            writer: Mutex::new(Some(thread)),
        })
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, done) = oneshot::channel();
        self.queue.send(op(reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Reads a document (empty if it was never written).
    ///
    /// # Errors
    ///
    /// The read failed, or the store is shut down.
    pub async fn load(&self, doc: &str) -> Result<Stored, StoreError> {
        let doc = doc.to_string();
        self.call(|reply| Op::Load { doc, reply }).await
    }

    /// Appends updates numbered `first_seq`, `first_seq + 1`, ..., and
    /// returns once they are committed.
    ///
    /// # Errors
    ///
    /// The write failed (nothing of it is stored), or the store is shut
    /// down.
    pub async fn append(
        &self,
        doc: &str,
        first_seq: u64,
        updates: Vec<Bytes>,
    ) -> Result<(), StoreError> {
        let doc = doc.to_string();
        self.call(|reply| Op::Append {
            doc,
            first_seq,
            updates,
            reply,
        })
        .await
    }

    /// Replaces the document's snapshot with `snapshot`, which holds every
    /// update up to `seq`, and deletes those updates.
    ///
    /// # Errors
    ///
    /// The write failed (the previous snapshot and log stay), or the store
    /// is shut down.
    pub async fn compact(&self, doc: &str, seq: u64, snapshot: Vec<u8>) -> Result<(), StoreError> {
        let doc = doc.to_string();
        self.call(|reply| Op::Compact {
            doc,
            seq,
            snapshot,
            reply,
        })
        .await
    }

    /// Stops the writer after what is queued, and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.queue.send(Op::Stop).await;
        join_writer(&self.writer).await;
    }
}

struct AppendJob {
    doc: String,
    first_seq: u64,
    updates: Vec<Bytes>,
    reply: Reply<()>,
}

fn write_loop(mut conn: Connection, mut ops: mpsc::Receiver<Op>, clock: Clock) {
    let mut appends: Vec<AppendJob> = Vec::new();
    loop {
        let Some(first) = ops.blocking_recv() else {
            return;
        };
        let mut next = Some(first);
        let mut taken = 0;
        let mut stop = false;
        while let Some(op) = next.take() {
            taken += 1;
            match op {
                Op::Append {
                    doc,
                    first_seq,
                    updates,
                    reply,
                } => appends.push(AppendJob {
                    doc,
                    first_seq,
                    updates,
                    reply,
                }),
                other => {
                    // Order: what was appended before is committed first.
                    commit_appends(&mut conn, &mut appends);
                    match other {
                        Op::Load { doc, reply } => {
                            let _ = reply.send(load(&conn, &doc));
                        }
                        Op::Compact {
                            doc,
                            seq,
                            snapshot,
                            reply,
                        } => {
                            let _ = reply.send(compact(
                                &mut conn,
                                &doc,
                                seq,
                                &snapshot,
                                clock.now_ms(),
                            ));
                        }
                        Op::Stop => stop = true,
                        Op::Append { .. } => {}
                    }
                }
            }
            if taken < MAX_BATCH && !stop {
                next = ops.try_recv().ok();
            }
        }
        commit_appends(&mut conn, &mut appends);
        if stop {
            return;
        }
    }
}

fn commit_appends(conn: &mut Connection, appends: &mut Vec<AppendJob>) {
    if appends.is_empty() {
        return;
    }
    let result = (|| -> Result<(), StoreError> {
        let tx = conn.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO doc_updates (doc, seq, data) VALUES (?1, ?2, ?3)")?;
            for job in appends.iter() {
                for (i, update) in job.updates.iter().enumerate() {
                    insert.execute(params![job.doc, job.first_seq + i as u64, &update[..]])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    })();
    if let Err(err) = &result {
        tracing::error!(%err, "storing document updates failed");
    }
    for job in appends.drain(..) {
        let _ = job.reply.send(result.clone());
    }
}

fn load(conn: &Connection, doc: &str) -> Result<Stored, StoreError> {
    let snapshot: Option<(u64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, data FROM doc_snapshots WHERE doc = ?1")?
        .query_row([doc], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let after = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    let mut statement = conn.prepare_cached(
        "SELECT seq, data FROM doc_updates WHERE doc = ?1 AND seq > ?2 ORDER BY seq ASC",
    )?;
    let rows = statement.query_map(params![doc, after], |row| {
        Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut stored = Stored {
        last_seq: after,
        snapshot: snapshot.map(|(_, data)| data),
        updates: Vec::new(),
    };
    for row in rows {
        let (seq, data) = row?;
        stored.last_seq = seq;
        stored.updates.push(data);
    }
    Ok(stored)
}

fn compact(
    conn: &mut Connection,
    doc: &str,
    seq: u64,
    snapshot: &[u8],
    time: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO doc_snapshots (doc, seq, time, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (doc) DO UPDATE SET seq = excluded.seq, time = excluded.time,
             data = excluded.data",
        params![doc, seq, time, snapshot],
    )?;
    tx.execute(
        "DELETE FROM doc_updates WHERE doc = ?1 AND seq <= ?2",
        params![doc, seq],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_snapshot_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(dir.path(), Clock::system()).unwrap();
        assert_eq!(store.load("a").await.unwrap(), Stored::default());
        store
            .append(
                "a",
                1,
                vec![Bytes::from_static(b"u1"), Bytes::from_static(b"u2")],
            )
            .await
            .unwrap();
        store
            .append("b", 1, vec![Bytes::from_static(b"x")])
            .await
            .unwrap();
        store
            .append("a", 3, vec![Bytes::from_static(b"u3")])
            .await
            .unwrap();
        let a = store.load("a").await.unwrap();
        assert_eq!(a.updates, [b"u1".to_vec(), b"u2".to_vec(), b"u3".to_vec()]);
        assert_eq!(a.last_seq, 3);
        assert_eq!(a.size(), 6);

        store.compact("a", 2, b"S12".to_vec()).await.unwrap();
        let a = store.load("a").await.unwrap();
        assert_eq!(a.snapshot.as_deref(), Some(&b"S12"[..]));
        assert_eq!(a.updates, [b"u3".to_vec()], "the snapshot replaces 1 and 2");
        assert_eq!(a.last_seq, 3);

        // A seq used twice is refused and changes nothing.
        let err = store
            .append("a", 3, vec![Bytes::from_static(b"dup")])
            .await
            .unwrap_err();
        assert!(err.0.contains("UNIQUE"), "{err}");
        store.shutdown().await;
        drop(store);

        let store = DocStore::open(dir.path(), Clock::system()).unwrap();
        let a = store.load("a").await.unwrap();
        assert_eq!(a.snapshot.as_deref(), Some(&b"S12"[..]));
        assert_eq!(a.updates, [b"u3".to_vec()]);
        assert_eq!(store.load("b").await.unwrap().updates, [b"x".to_vec()]);
        store.shutdown().await;
        assert!(store.load("a").await.is_err(), "shut down");
    }
}
