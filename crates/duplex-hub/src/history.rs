//! Reading history: `history` requests and recovery (`subscribe` with
//! `since`), from the engine.

use crate::config::NamespaceConfig;
use crate::hub::{Hub, retention};
use crate::protocol::{ErrorCode, HubError, MAX_HISTORY_LIMIT, Publication};

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
    let min_time = retention(namespace).min_time(Hub::now_ms());
    let publications = hub
        .engine()
        .range(channel, since, current, min_time)
        .await?;
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
    let min_time = retention(namespace).min_time(Hub::now_ms());
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
