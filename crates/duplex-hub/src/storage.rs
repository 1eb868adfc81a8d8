//! History in SQLite: one writer thread, group commit, and reads off the
//! async threads.
//!
//! The database is `hub.sqlite3` in the data folder, in WAL mode. Every
//! publication goes through the writer thread: it takes every publication
//! waiting (up to [`MAX_BATCH`]), gives each the next offset of its channel,
//! inserts them and trims each channel to its namespace's `history_size`, all
//! in one transaction, commits, and only then hands each publication, in
//! offset order, to the broadcast callback and acknowledges it. So whatever a
//! client sees pushed or acknowledged is on disk, and pushes of one channel go
//! out in offset order.
//!
//! Offsets are kept per channel in `channels.last_offset`, in the same
//! transaction: trimming every publication of a channel does not make its
//! offsets start again. Age trimming (`history_ttl_secs`) runs every
//! [`TRIM_INTERVAL`]; reads also skip expired rows, so expiry is exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::protocol::{ErrorCode, HubError, Publication};

/// Publications committed in one transaction, at most.
pub const MAX_BATCH: usize = 256;
/// Channels whose last offset the writer keeps in memory, at most.
const MAX_CACHED_OFFSETS: usize = 65_536;
/// How often expired publications are deleted.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);
/// Publications waiting for the writer, at most; publishers wait beyond.
const QUEUE: usize = 4096;
/// The database's file name in the data folder.
pub const DB_FILE: &str = "hub.sqlite3";

/// A committed publication, handed on in commit order (so in offset order
/// per channel) by the writer thread; the publisher waits for
/// [`acknowledge`](Self::acknowledge).
#[derive(Debug)]
pub struct Committed {
    /// The channel.
    pub channel: String,
    /// The publication with its offset.
    pub publication: Publication,
    reply: oneshot::Sender<Result<Publication, HubError>>,
}

impl Committed {
    /// Answers the publisher.
    pub fn acknowledge(self) {
        let _ = self.reply.send(Ok(self.publication));
    }
}

/// Where the writer thread hands every committed publication.
pub type OnCommit = mpsc::UnboundedSender<Committed>;

/// How long a namespace keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept per channel.
    pub size: usize,
    /// Seconds they are kept; 0 for no age limit.
    pub ttl_secs: u64,
}

impl Retention {
    /// The oldest `time` (ms since the epoch) still in history at `now_ms`.
    pub fn min_time(&self, now_ms: u64) -> u64 {
        if self.ttl_secs == 0 {
            0
        } else {
            now_ms.saturating_sub(self.ttl_secs.saturating_mul(1000))
        }
    }
}

struct Job {
    channel: String,
    data: Arc<str>,
    retention: Retention,
    reply: oneshot::Sender<Result<Publication, HubError>>,
}

enum Op {
    Publish(Job),
    /// Delete publications older than each namespace's ttl.
    Trim(Vec<(String, Retention)>),
    Stop,
}

/// The hub's storage: the writer thread's queue and a connection for reads.
pub struct Store {
    path: PathBuf,
    queue: mpsc::Sender<Op>,
    reader: Mutex<Connection>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn internal(err: impl std::fmt::Display) -> HubError {
    tracing::error!(%err, "storage failed");
    HubError::new(ErrorCode::Internal, format!("storage failed: {err}"))
}

/// A connection to the database at `path`, set up as every connection to it
/// is: a 5 s busy timeout, WAL, synchronous=NORMAL.
pub(crate) fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers do not block the writer. synchronous=NORMAL: a commit
    // survives the process dying; a power cut may lose the last commits.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Waits, off the async threads, for a writer thread told to stop; at once
/// if it was already joined.
pub(crate) async fn join_writer(writer: &Mutex<Option<JoinHandle<()>>>) {
    let thread = writer.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(thread) = thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` (created too),
    /// and starts the writer thread, which hands every committed publication
    /// to `on_commit`, stamped with the time of `clock`.
    ///
    /// # Errors
    ///
    /// The folder or the database could not be created or opened.
    pub fn open(data_dir: &Path, on_commit: OnCommit, clock: Clock) -> Result<Store, HubError> {
        std::fs::create_dir_all(data_dir).map_err(|err| {
            HubError::new(
                ErrorCode::Internal,
                format!(
                    "cannot create the data folder {}: {err}",
                    data_dir.display()
                ),
            )
        })?;
        let path = data_dir.join(DB_FILE);
        let writer = open_connection(&path).map_err(internal)?;
        writer
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS channels (
                     name TEXT PRIMARY KEY,
                     last_offset INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS publications (
                     channel TEXT NOT NULL,
                     offset INTEGER NOT NULL,
                     time INTEGER NOT NULL,
                     data TEXT NOT NULL,
                     PRIMARY KEY (channel, offset)
                 ) WITHOUT ROWID;",
            )
            .map_err(internal)?;
        let reader = open_connection(&path).map_err(internal)?;
        let (queue, ops) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("duplex-hub-writer".into())
            .spawn(move || write_loop(writer, ops, on_commit, clock))
            .map_err(internal)?;
        Ok(Store {
            path,
            queue,
            reader: Mutex::new(reader),
            writer: Mutex::new(Some(thread)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a publication of `data` (JSON text) to `channel` and waits for
    /// it to be committed and acknowledged; returns it with its offset.
    ///
    /// # Errors
    ///
    /// `internal` if storage failed or the store is shut down.
    pub async fn publish(
        &self,
        channel: &str,
        data: Arc<str>,
        retention: Retention,
    ) -> Result<Publication, HubError> {
        let (reply, done) = oneshot::channel();
        let job = Job {
            channel: channel.to_string(),
            data,
            retention,
            reply,
        };
        let stopped = || HubError::new(ErrorCode::Internal, "the hub is shutting down");
        self.queue
            .send(Op::Publish(job))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Asks the writer to delete expired publications of these namespaces.
    pub fn trim(&self, namespaces: Vec<(String, Retention)>) {
        let _ = self.queue.try_send(Op::Trim(namespaces));
    }

    /// A channel's last offset, as stored; 0 for a channel never
    /// published to. Blocking.
    ///
    /// # Errors
    ///
    /// `internal` if the read failed.
    pub fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        let conn = self.lock_reader();
        let mut statement = conn
            .prepare_cached("SELECT last_offset FROM channels WHERE name = ?1")
            .map_err(internal)?;
        let offset = statement
            .query_row([channel], |row| row.get::<_, u64>(0))
            .optional()
            .map_err(internal)?;
        Ok(offset.unwrap_or(0))
    }

    /// The publications of `channel` with `after < offset <= upto`, ascending,
    /// not older than `min_time`. Blocking: call from a blocking thread.
    ///
    /// # Errors
    ///
    /// `internal` if the read failed.
    pub fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        min_time: u64,
    ) -> Result<Vec<Publication>, HubError> {
        let conn = self.lock_reader();
        let mut statement = conn
            .prepare_cached(
                "SELECT offset, time, data FROM publications
                 WHERE channel = ?1 AND offset > ?2 AND offset <= ?3 AND time >= ?4
                 ORDER BY offset ASC",
            )
            .map_err(internal)?;
        let rows = statement
            .query_map(params![channel, after, upto, min_time], row_to_publication)
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    /// The `limit` newest publications of `channel` with `offset < before`
    /// and `offset <= upto`, not older than `min_time`, ascending. Blocking.
    ///
    /// # Errors
    ///
    /// `internal` if the read failed.
    pub fn newest(
        &self,
        channel: &str,
        before: u64,
        upto: u64,
        min_time: u64,
        limit: usize,
    ) -> Result<Vec<Publication>, HubError> {
        let conn = self.lock_reader();
        let mut statement = conn
            .prepare_cached(
                "SELECT offset, time, data FROM publications
                 WHERE channel = ?1 AND offset < ?2 AND offset <= ?3 AND time >= ?4
                 ORDER BY offset DESC LIMIT ?5",
            )
            .map_err(internal)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(
                params![channel, before.min(i64::MAX as u64), upto, min_time, limit],
                row_to_publication,
            )
            .map_err(internal)?;
        let mut publications = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(internal)?;
        publications.reverse();
        Ok(publications)
    }

    /// Stops the writer after what is queued, and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.queue.send(Op::Stop).await;
        join_writer(&self.writer).await;
    }

    fn lock_reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn row_to_publication(row: &rusqlite::Row<'_>) -> rusqlite::Result<Publication> {
    Ok(Publication {
        offset: row.get(0)?,
        time: row.get(1)?,
        data: Arc::from(row.get::<_, String>(2)?),
    })
}

/// The writer thread: batches of publications, one transaction each.
fn write_loop(
    mut conn: Connection,
    mut ops: mpsc::Receiver<Op>,
    on_commit: OnCommit,
    clock: Clock,
) {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stop = false;
    while !stop {
        let Some(first) = ops.blocking_recv() else {
            break;
        };
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Publish(job) => batch.push(job),
                Op::Trim(namespaces) => trim_expired(&conn, &namespaces, clock.now_ms()),
                Op::Stop => stop = true,
            }
            if batch.len() < MAX_BATCH && !stop {
                next = ops.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let count = batch.len();
        match commit(&mut conn, &mut last, &batch, clock.now_ms()) {
            Ok(publications) => {
                for (job, publication) in batch.drain(..).zip(publications) {
                    let committed = Committed {
                        channel: job.channel,
                        publication,
                        reply: job.reply,
                    };
                    if let Err(unsent) = on_commit.send(committed) {
                        // No one delivers any more (shutting down): answer.
                        unsent.0.acknowledge();
                    }
                }
            }
            Err(err) => {
                // The cache may be ahead of what was rolled back.
                last.clear();
                let err = internal(err);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
        tracing::trace!(count, elapsed = ?started.elapsed(), "committed publications");
    }
}

fn commit(
    conn: &mut Connection,
    last: &mut HashMap<String, u64>,
    batch: &[Job],
    time: u64,
) -> rusqlite::Result<Vec<Publication>> {
    let tx = conn.transaction()?;
    let mut offsets: HashMap<&str, u64> = HashMap::new();
    let mut publications = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO publications (channel, offset, time, data) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut trim =
            tx.prepare_cached("DELETE FROM publications WHERE channel = ?1 AND offset <= ?2")?;
        let mut read = tx.prepare_cached("SELECT last_offset FROM channels WHERE name = ?1")?;
        for job in batch {
            let previous = match offsets.get(job.channel.as_str()) {
                Some(&offset) => offset,
                None => match last.get(&job.channel) {
                    Some(&offset) => offset,
                    None => read
                        .query_row([&job.channel], |row| row.get::<_, u64>(0))
                        .optional()?
                        .unwrap_or(0),
                },
            };
            let offset = previous + 1;
            offsets.insert(&job.channel, offset);
            insert.execute(params![job.channel, offset, time, &*job.data])?;
            let keep = job.retention.size as u64;
            if offset > keep {
                trim.execute(params![job.channel, offset - keep])?;
            }
            publications.push(Publication {
                offset,
                time,
                data: job.data.clone(),
            });
        }
        let mut save = tx.prepare_cached(
            "INSERT INTO channels (name, last_offset) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_offset = excluded.last_offset",
        )?;
        for (channel, offset) in &offsets {
            save.execute(params![channel, offset])?;
        }
    }
    tx.commit()?;
    if last.len() > MAX_CACHED_OFFSETS {
        // A cache: what is not in it is read from the database.
        last.clear();
    }
    for (channel, offset) in offsets {
        last.insert(channel.to_string(), offset);
    }
    Ok(publications)
}

fn trim_expired(conn: &Connection, namespaces: &[(String, Retention)], now: u64) {
    for (namespace, retention) in namespaces {
        if retention.ttl_secs == 0 {
            continue;
        }
        // Channels of `ns` are the names from "ns:" up to "ns;" (';' follows
        // ':' in ASCII).
        let result = conn.execute(
            "DELETE FROM publications WHERE channel >= ?1 AND channel < ?2 AND time < ?3",
            params![
                format!("{namespace}:"),
                format!("{namespace};"),
                retention.min_time(now)
            ],
        );
        if let Err(err) = result {
            tracing::warn!(%err, namespace, "trimming expired history failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(size: usize) -> Retention {
        Retention { size, ttl_secs: 0 }
    }

    #[tokio::test]
    async fn offsets_history_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let (on_commit, mut committed) = mpsc::unbounded_channel::<Committed>();
        let seen = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(c) = committed.recv().await {
                seen.push((c.channel.clone(), c.publication.offset));
                c.acknowledge();
            }
            seen
        });
        let store = Store::open(dir.path(), on_commit, Clock::system()).unwrap();
        for i in 0..5 {
            let p = store
                .publish("chat:a", Arc::from(format!("{i}")), keep(3))
                .await
                .unwrap();
            assert_eq!(p.offset, i + 1);
        }
        let p = store
            .publish("chat:b", Arc::from("0"), keep(3))
            .await
            .unwrap();
        assert_eq!(p.offset, 1, "offsets are per channel");
        assert_eq!(p.offset, 1);
        let kept = store.range("chat:a", 0, 5, 0).unwrap();
        let offsets: Vec<u64> = kept.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [3, 4, 5], "trimmed to history_size");
        let newest = store.newest("chat:a", 5, 5, 0, 1).unwrap();
        assert_eq!(newest[0].offset, 4);
        assert_eq!(&*newest[0].data, "3");
        store.shutdown().await;
        drop(store);
        let seen = seen.await.unwrap();
        assert_eq!(seen.len(), 6, "every commit is handed on");
        assert_eq!(seen[5], ("chat:b".to_string(), 1));

        let (on_commit, mut committed) = mpsc::unbounded_channel::<Committed>();
        tokio::spawn(async move {
            while let Some(c) = committed.recv().await {
                c.acknowledge();
            }
        });
        let store = Store::open(dir.path(), on_commit, Clock::system()).unwrap();
        assert_eq!(store.last_offset("chat:a").unwrap(), 5);
        assert_eq!(store.last_offset("chat:none").unwrap(), 0);
        let p = store
            .publish("chat:a", Arc::from("5"), keep(3))
            .await
            .unwrap();
        assert_eq!(p.offset, 6, "offsets continue after a restart");
    }
}
