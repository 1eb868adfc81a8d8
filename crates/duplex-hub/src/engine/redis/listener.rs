//! Each node's pub/sub connection to each Redis: subscriptions to the
//! channels and documents live here, delivery of what arrives, reconnection
//! with backoff, catching up after it, and the presence refresh.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::docs;
use super::{Inner, PREFIX, key, shard_of};
use crate::metrics::bump;
use crate::protocol::{ClientInfo, Publication};
use crate::registry::PresenceEvent;

/// How often a node pings its pub/sub connections.
const PING_EVERY: Duration = Duration::from_secs(3);
/// Reconnection delays: from the first to the longest, doubling.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A pub/sub message: a publication, or a presence event.
pub(super) enum Event {
    Publication(Publication),
    Presence(PresenceEvent, ClientInfo),
}

pub(super) fn parse_event(payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(' ')?;
    match kind {
        "p" => {
            let (offset, rest) = rest.split_once(' ')?;
            let (time, data) = rest.split_once(' ')?;
            Some(Event::Publication(Publication {
                offset: offset.parse().ok()?,
                time: time.parse().ok()?,
                data: Arc::from(data),
            }))
        }
        "j" | "l" => {
            let client: ClientInfo = serde_json::from_str(rest).ok()?;
            let event = if kind == "j" {
                PresenceEvent::Join
            } else {
                PresenceEvent::Leave
            };
            Some(Event::Presence(event, client))
        }
        _ => None,
    }
}

/// The pub/sub connection of shard `index`: connects, subscribes to the
/// live channels, catches them up, delivers; again after every loss, with
/// backoff.
pub(super) async fn listen(
    inner: Arc<Inner>,
    index: usize,
    connected: tokio::sync::oneshot::Sender<()>,
) {
    let mut connected = Some(connected);
    let mut delay = RECONNECT_MIN;
    let mut epoch: Option<String> = None;
    let mut sessions = 0u64;
    while !inner.stop.is_cancelled() {
        let shard = &inner.shards[index];
        let before = sessions;
        let ended = session(&inner, index, &mut epoch, &mut sessions, &mut connected).await;
        if sessions > before {
            delay = RECONNECT_MIN;
        }
        if let Err(err) = ended {
            tracing::warn!(redis = shard.name, %err, "Redis pub/sub connection lost");
        }
        shard.listening.store(false, Ordering::Relaxed);
        *shard.subscriptions.lock().await = None;
        if let Some(connected) = connected.take() {
            let _ = connected.send(());
        }
        if inner.stop.is_cancelled() {
            break;
        }
        // Full jitter: anywhere up to the delay, so nodes do not come back
        // all at once.
        let mut random = [0u8; 2];
        let _ = getrandom::fill(&mut random);
        let fraction = f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX);
        let wait = delay.mul_f64(0.5 + fraction / 2.0);
        tokio::select! {
            () = inner.stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One pub/sub connection's life, counted in `sessions` once it is up;
/// `Ok` if it ended because the engine stops.
async fn session(
    inner: &Inner,
    index: usize,
    epoch: &mut Option<String>,
    sessions: &mut u64,
    connected: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let shard = &inner.shards[index];
    let pubsub = tokio::time::timeout(inner.timeout, shard.client.get_async_pubsub())
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|err| err.to_string())?;
    let (mut sink, mut stream) = pubsub.split();
    let now = inner.epoch(index).await.map_err(|err| err.message)?;
    let lost_data = epoch.as_ref().is_some_and(|known| *known != now);
    if lost_data {
        tracing::error!(
            redis = shard.name,
            "Redis lost its data (a new epoch): channels start again from its offsets"
        );
    }
    *epoch = Some(now);
    {
        let mut subscriptions = shard.subscriptions.lock().await;
        let mut channels: Vec<String> = inner
            .registry
            .live_names()
            .into_iter()
            .filter(|c| shard_of(c, inner.shards.len()) == index)
            .map(|c| key("c", &c))
            .collect();
        channels.extend(inner.docs_of(index).iter().map(|doc| key("d", doc)));
        if !channels.is_empty() {
            inner
                .call(shard, sink.subscribe(&channels))
                .await
                .map_err(|err| err.message)?;
        }
        *subscriptions = Some(sink.clone());
    }
    shard.listening.store(true, Ordering::Relaxed);
    if let Some(connected) = connected.take() {
        let _ = connected.send(());
    }
    *sessions += 1;
    if *sessions > 1 {
        bump(&inner.metrics.engine_reconnects);
        tracing::info!(redis = shard.name, "Redis pub/sub connection back");
    }
    inner.resync(index, lost_data).await;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return Ok(()),
            message = stream.next() => {
                let Some(message) = message else {
                    return Err("the connection was closed".into());
                };
                if let Some(doc) = message
                    .get_channel_name()
                    .strip_prefix(&format!("{PREFIX}:d:{{"))
                    .and_then(|d| d.strip_suffix('}'))
                {
                    let event = docs::parse_doc_event(message.get_payload_bytes(), &inner.holder);
                    if let (Some(event), Some(events)) = (event, inner.doc_events.get()) {
                        let _ = events.send((doc.to_string(), event));
                    }
                    continue;
                }
                let Some(channel) = message
                    .get_channel_name()
                    .strip_prefix(&format!("{PREFIX}:c:{{"))
                    .and_then(|c| c.strip_suffix('}'))
                    .map(str::to_string)
                else {
                    continue;
                };
                match parse_event(message.get_payload_bytes()) {
                    Some(event) => inner.handle(&channel, event).await,
                    None => tracing::warn!(channel, "an unreadable message on Redis pub/sub"),
                }
            }
            _ = ping.tick() => {
                let mut sink = sink.clone();
                inner
                    .call(shard, sink.ping::<redis::Value>())
                    .await
                    .map_err(|err| err.message)?;
            }
        }
    }
}

/// Refreshes this node's presence entries every third of their ttl.
pub(super) async fn refresh_presence(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(inner.presence_ttl / 3);
    interval.reset();
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            _ = interval.tick() => {
                for index in 0..inner.shards.len() {
                    inner.refresh(index, false).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let Some(Event::Publication(p)) = parse_event(b"p 42 1764600000000 {\"a\": 1}") else {
            panic!("a publication");
        };
        assert_eq!(
            (p.offset, p.time, &*p.data),
            (42, 1_764_600_000_000, "{\"a\": 1}")
        );
        let join = br#"j {"client":"x-1","user":"ann","info":{}}"#;
        let Some(Event::Presence(PresenceEvent::Join, client)) = parse_event(join) else {
            panic!("a join");
        };
        assert_eq!(client.user, "ann");
        assert!(parse_event(b"p x 1 2").is_none());
        assert!(parse_event(b"q 1").is_none());
        assert!(parse_event(&[0xff, b' ']).is_none());
        assert!(parse_event(b"l {").is_none());
    }
}
