//! Reading history: `history` requests and recovery (`subscribe` with
//! `since`), from the engine.
//!
//! Recoveries that need the same publications at the same time share one
//! read (a single flight per range, counted in `/metrics`): after a restart
//! or a network cut, thousands of clients come back at once with the same
//! `since`, and the store answers once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use crate::config::NamespaceConfig;
use crate::hub::{Hub, retention};
use crate::metrics::{Metrics, bump};
use crate::protocol::{ErrorCode, HubError, MAX_HISTORY_LIMIT, Publication};

/// The publications of a channel in an offset range: `(channel, after,
/// upto)`.
type RangeKey = (String, u64, u64);
type RangeRead = Arc<OnceCell<Result<Arc<[Publication]>, HubError>>>;

/// Range reads under way, shared by every recovery that asks for the same
/// range meanwhile (a single flight per range).
#[derive(Debug, Default)]
pub(crate) struct Reads {
    inflight: Mutex<HashMap<RangeKey, RangeRead>>,
}

impl Reads {
    /// The publications of `channel` in `(after, upto]`, whatever their age
    /// (each caller applies its own retention), as `read` reads them: read
    /// by the first caller, and by the next waiting one if the first goes
    /// away; every caller that comes while the read is under way gets its
    /// result.
    async fn range<F, Fut>(
        &self,
        (channel, after, upto): (&str, u64, u64),
        metrics: &Metrics,
        read: F,
    ) -> Result<Arc<[Publication]>, HubError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Publication>, HubError>>,
    {
        let key = (channel.to_string(), after, upto);
        let flight = self.lock().entry(key.clone()).or_default().clone();
        let ran = AtomicBool::new(false);
        let result = flight
            .get_or_init(|| async {
                ran.store(true, Ordering::Relaxed);
                bump(&metrics.history_reads);
                read().await.map(Arc::from)
            })
            .await
            .clone();
        if !ran.load(Ordering::Relaxed) {
            bump(&metrics.history_reads_merged);
        }
        let mut inflight = self.lock();
        if inflight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            // Done: later recoveries read afresh.
            inflight.remove(&key);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RangeKey, RangeRead>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The publications of `channel` after `since`, up to `current` (the
/// channel's offset, read under its lock): exactly `current - since` of them,
/// in order, or `recovery_impossible` if history no longer holds them all.
///
/// # Errors
///
/// `recovery_impossible`, or `internal` or `unavailable` if the engine
/// failed.
pub async fn recover(
    hub: &Hub,
    channel: &str,
    namespace: &NamespaceConfig,
    since: u64,
    current: u64,
) -> Result<Vec<Publication>, HubError> {
    if since > current {
        return Err(HubError::new(
            ErrorCode::RecoveryImpossible,
            format!(
                "since.offset {since} is ahead of the channel's offset {current}: \
                 history was reset; subscribe without since and fetch history"
            ),
        ));
    }
    let missed = current - since;
    if missed == 0 {
        return Ok(Vec::new());
    }
    let impossible = || {
        HubError::new(
            ErrorCode::RecoveryImpossible,
            format!(
                "history of {channel} no longer holds every publication after offset {since} \
                 (it keeps {} for {} s); subscribe without since and fetch history",
                namespace.history_size, namespace.history_ttl_secs
            ),
        )
    };
    if missed > namespace.history_size as u64 {
        return Err(impossible());
    }
    let min_time = retention(namespace).min_time(hub.clock().now_ms());
    let read = hub
        .reads()
        .range((channel, since, current), hub.metrics(), || {
            hub.engine().range(channel, since, current, 0)
        })
        .await?;
    let publications: Vec<Publication> = read
        .iter()
        .filter(|p| p.time >= min_time)
        .cloned()
        .collect();
    let complete = publications.len() as u64 == missed
        && publications
            .iter()
            .zip(since + 1..)
            .all(|(p, offset)| p.offset == offset);
    if complete {
        Ok(publications)
    } else {
        Err(impossible())
    }
}

/// The `limit` newest publications of `channel` before `before`, ascending,
/// and the channel's offset.
///
/// # Errors
///
/// `bad_request` for a limit over [`MAX_HISTORY_LIMIT`]; `internal` or
/// `unavailable` if the engine failed.
pub async fn history(
    hub: &Hub,
    channel: &str,
    namespace: &NamespaceConfig,
    limit: u64,
    before: Option<u64>,
) -> Result<(u64, Vec<Publication>), HubError> {
    if limit > MAX_HISTORY_LIMIT as u64 {
        return Err(HubError::new(
            ErrorCode::BadRequest,
            format!("history limit {limit} is over the maximum of {MAX_HISTORY_LIMIT}"),
        ));
    }
    let current = match hub.registry().offset(channel) {
        Some(current) => current,
        None => hub.engine().last_offset(channel).await?,
    };
    if limit == 0 {
        return Ok((current, Vec::new()));
    }
    let min_time = retention(namespace).min_time(hub.clock().now_ms());
    let publications = hub
        .engine()
        .newest(
            channel,
            before.unwrap_or(u64::MAX),
            current,
            min_time,
            limit as usize,
        )
        .await?;
    Ok((current, publications))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures_util::future::join_all;

    use super::*;

    fn publications(after: u64, upto: u64) -> Vec<Publication> {
        (after + 1..=upto)
            .map(|offset| Publication {
                offset,
                time: offset,
                data: Arc::from("{}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn identical_recoveries_under_way_share_one_read() {
        let reads = Reads::default();
        let metrics = Metrics::default();
        let store_reads = AtomicUsize::new(0);
        let read = || async {
            store_reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(publications(5, 15))
        };
        let results =
            join_all((0..100).map(|_| reads.range(("chat:x", 5, 15), &metrics, read))).await;
        assert_eq!(store_reads.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.history_reads.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.history_reads_merged.load(Ordering::Relaxed), 99);
        for result in results {
            assert_eq!(result.unwrap()[..], publications(5, 15)[..]);
        }
        // Over: the next recovery reads afresh, and other ranges never share.
        reads
            .range(("chat:x", 5, 15), &metrics, read)
            .await
            .unwrap();
        reads
            .range(("chat:x", 6, 15), &metrics, read)
            .await
            .unwrap();
        assert_eq!(store_reads.load(Ordering::Relaxed), 3);
        assert!(reads.lock().is_empty());
    }

    #[tokio::test]
    async fn a_read_whose_caller_went_away_is_taken_over_by_a_waiting_one() {
        let reads = Reads::default();
        let metrics = Metrics::default();
        let mut first = Box::pin(reads.range(("chat:x", 0, 3), &metrics, || async {
            std::future::pending::<()>().await;
            unreachable!()
        }));
        let second = reads.range(("chat:x", 0, 3), &metrics, || async {
            Ok(publications(0, 3))
        });
        tokio::pin!(second);
        // Both start; the first is the reader and never finishes.
        assert!(futures_util::poll!(&mut first).is_pending());
        assert!(futures_util::poll!(&mut second).is_pending());
        // The first client goes away: the second reads itself.
        drop(first);
        assert_eq!(second.await.unwrap().len(), 3);
        assert_eq!(metrics.history_reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn errors_reach_every_caller_and_are_not_kept() {
        let reads = Reads::default();
        let metrics = Metrics::default();
        let failing = || async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(HubError::new(ErrorCode::Unavailable, "the store is down"))
        };
        let results =
            join_all((0..3).map(|_| reads.range(("chat:x", 1, 2), &metrics, failing))).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap_err().code == ErrorCode::Unavailable)
        );
        let ok = reads
            .range(("chat:x", 1, 2), &metrics, || async {
                Ok(publications(1, 2))
            })
            .await;
        assert_eq!(ok.unwrap().len(), 1);
    }
}
