//! The subscribing side: Pusher protocol 7 clients over tokio-tungstenite.
//!
//! A subscriber opens the WebSocket, waits for `pusher:connection_established`,
//! sends `pusher:subscribe` for the channel and waits for
//! `pusher_internal:subscription_succeeded`. From then on it reads the
//! channel's events, answers every `pusher:ping` with `pusher:pong`, and
//! (measuring) takes each publication's send time out of its data to time
//! its delivery.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::api::has_port;

/// One subscriber's WebSocket.
pub type Socket = WebSocketStream<TcpStream>;

/// How long one subscriber gets to connect and subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing one socket may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// tungstenite's read buffer per connection. Its default, 128 KiB, is
/// zero-filled before every read and would be over a gigabyte at 10,000
/// subscribers; the messages here are small.
const READ_BUFFER: usize = 4096;

/// The answer to `pusher:ping`.
const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// Where the subscribers connect: the TCP address and the whole URL.
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// The `ws://` URL, path and query included.
    pub url: String,
}

impl Target {
    /// Reads a `ws://HOST[:PORT]/PATH?QUERY` URL (no TLS).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("--url {url:?} is not a ws:// URL (wss is not supported)"))?;
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("--url {url:?} has no host"));
        }
        let addr = if has_port(host) {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Target {
            addr,
            url: url.to_string(),
        })
    }
}

/// A Pusher message, as much of it as is read here.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// What one text message from the server is.
enum Incoming {
    /// `pusher:ping`: to be answered.
    Ping,
    /// The benchmark's event on the channel: the publication's send time,
    /// nanoseconds after the epoch.
    Delivery(u64),
    /// `pusher:error`, with its data.
    Error(String),
    /// Anything else, ignored.
    Other,
}

/// Reads one text message from the server.
fn classify(text: &str, channel: &str, event: &str) -> Result<Incoming, String> {
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|e| format!("not a Pusher message ({e}): {}", excerpt(text)))?;
    let data = envelope.data.map(RawValue::get).unwrap_or("");
    Ok(match envelope.event.as_ref() {
        "pusher:ping" => Incoming::Ping,
        "pusher:error" => Incoming::Error(excerpt(data)),
        name if name == event && envelope.channel.as_deref() == Some(channel) => {
            match sent_at(data) {
                Some(nanos) => Incoming::Delivery(nanos),
                None => {
                    return Err(format!(
                        "event {event:?} without a send time in its data: {}",
                        excerpt(data)
                    ));
                }
            }
        }
        _ => Incoming::Other,
    })
}

/// The send time in a publication's data (` at=NANOS `), read from the raw
/// JSON: the digits need no unescaping.
fn sent_at(data: &str) -> Option<u64> {
    let at = data.find(" at=")? + 4;
    let digits = data[at..].bytes().take_while(u8::is_ascii_digit).count();
    data[at..at + digits].parse().ok()
}

/// The start of a message, for an error.
fn excerpt(text: &str) -> String {
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

/// Connects and subscribes `count` subscribers to `channel`, `concurrency`
/// at a time; fails with the first that could not.
pub async fn connect_all(
    target: &Target,
    channel: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Socket>, String> {
    futures_util::stream::iter(0..count)
        .map(|index| async move {
            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect(target, channel)).await {
                Ok(Ok(ws)) => Ok(ws),
                Ok(Err(e)) => Err(format!("subscriber {} of {count}: {e}", index + 1)),
                Err(_) => Err(format!(
                    "subscriber {} of {count}: not subscribed within {} s",
                    index + 1,
                    SUBSCRIBE_TIMEOUT.as_secs()
                )),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// One subscriber: the connection, `pusher:connection_established`, the
/// subscription and its confirmation.
async fn connect(target: &Target, channel: &str) -> Result<Socket, String> {
    let tcp = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), tcp, Some(config))
            .await
            .map_err(|e| format!("WebSocket handshake with {} failed: {e}", target.url))?;
    wait_for(&mut ws, "pusher:connection_established", None).await?;
    let subscribe = serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel },
    });
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| format!("cannot send pusher:subscribe: {e}"))?;
    wait_for(
        &mut ws,
        "pusher_internal:subscription_succeeded",
        Some(channel),
    )
    .await?;
    Ok(ws)
}

/// Reads until `event` (on `channel`, if given) arrives, answering pings;
/// `pusher:error` or the end of the connection is an error.
async fn wait_for(ws: &mut Socket, event: &str, channel: Option<&str>) -> Result<(), String> {
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("waiting for {event}: {e}")),
            None => return Err(format!("the server closed the connection before {event}")),
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(format!(
                    "the server closed the connection before {event}: {}",
                    frame.map_or("no reason".into(), |f| format!("{} {}", f.code, f.reason))
                ));
            }
            _ => continue,
        };
        let envelope: Envelope = serde_json::from_str(text.as_str())
            .map_err(|e| format!("not a Pusher message ({e}): {}", excerpt(text.as_str())))?;
        let data = envelope.data.map(RawValue::get).unwrap_or("");
        match envelope.event.as_ref() {
            name if name == event
                && (channel.is_none() || envelope.channel.as_deref() == channel) =>
            {
                return Ok(());
            }
            "pusher:ping" => ws
                .send(Message::text(PONG))
                .await
                .map_err(|e| format!("cannot answer pusher:ping: {e}"))?,
            "pusher:error" => {
                return Err(format!(
                    "waiting for {event}, the server sent pusher:error: {}",
                    excerpt(data)
                ));
            }
            _ => {}
        }
    }
}

/// The measurement window: publications sent inside it are counted.
pub struct Window {
    /// When measuring starts.
    pub start: Instant,
    /// When it ends.
    pub end: Instant,
}

impl Window {
    /// Whether a publication sent `at` is counted.
    pub fn measuring(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// Error messages on stderr: the first few, then only a count.
pub struct Errors {
    count: std::cell::Cell<u64>,
}

impl Errors {
    /// How many are printed.
    const PRINTED: u64 = 10;

    /// An empty log.
    pub fn new() -> Errors {
        Errors {
            count: std::cell::Cell::new(0),
        }
    }

    /// Counts an error, and prints it if it is one of the first few.
    pub fn report(&self, message: &str) {
        let count = self.count.get() + 1;
        self.count.set(count);
        if count <= Self::PRINTED {
            eprintln!("pusher-load: {message}");
        } else if count == Self::PRINTED + 1 {
            eprintln!("pusher-load: more errors; only their number is reported");
        }
    }

    /// The errors counted.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// What a measuring subscriber is given.
pub struct Measure {
    /// The channel subscribed to.
    pub channel: Rc<str>,
    /// The benchmark's event name.
    pub event: Rc<str>,
    /// The origin of the send times in the data.
    pub epoch: Instant,
    /// The measurement window.
    pub window: Rc<Window>,
    /// How long after the window a subscriber waits for the last
    /// publication.
    pub grace: Duration,
    /// The latencies of all subscribers, in microseconds.
    pub latency: Rc<RefCell<Histogram<u64>>>,
    /// The run's error log.
    pub errors: Rc<Errors>,
}

/// Reads deliveries until a publication sent at or after the window's end
/// arrives, or the grace period after it is over. Returns the deliveries
/// counted (those published inside the window).
pub async fn measure(mut ws: Socket, m: Measure, index: usize) -> u64 {
    let mut delivered = 0;
    let deadline = tokio::time::sleep_until((m.window.end + m.grace).into());
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            () = &mut deadline => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                m.errors.report(&format!(
                    "subscriber {index}: the server closed the connection: {}",
                    frame.map_or("no reason".into(), |f| format!("{} {}", f.code, f.reason))
                ));
                return delivered;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                m.errors.report(&format!("subscriber {index}: {e}"));
                return delivered;
            }
            None => {
                m.errors
                    .report(&format!("subscriber {index}: the connection ended"));
                return delivered;
            }
        };
        match classify(text.as_str(), &m.channel, &m.event) {
            Ok(Incoming::Delivery(nanos)) => {
                let sent = m.epoch + Duration::from_nanos(nanos);
                if m.window.measuring(sent) {
                    let micros = (sent.elapsed().as_micros() as u64).clamp(1, 60_000_000);
                    m.latency.borrow_mut().saturating_record(micros);
                    delivered += 1;
                }
                if sent >= m.window.end {
                    break;
                }
            }
            Ok(Incoming::Ping) => {
                if let Err(e) = ws.send(Message::text(PONG)).await {
                    m.errors.report(&format!(
                        "subscriber {index}: cannot answer pusher:ping: {e}"
                    ));
                    return delivered;
                }
            }
            Ok(Incoming::Error(data)) => m
                .errors
                .report(&format!("subscriber {index}: pusher:error: {data}")),
            Ok(Incoming::Other) => {}
            Err(e) => m.errors.report(&format!("subscriber {index}: {e}")),
        }
    }
    close(ws).await;
    delivered
}

/// Holds a subscription idle, answering pings, until `stop` changes.
/// Returns whether the connection stayed up.
pub async fn hold(
    mut ws: Socket,
    channel: Rc<str>,
    mut stop: watch::Receiver<bool>,
    errors: Rc<Errors>,
    index: usize,
) -> bool {
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stop.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                errors.report(&format!(
                    "subscriber {index}: the server closed the connection while held"
                ));
                return false;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                errors.report(&format!("subscriber {index}: {e}"));
                return false;
            }
        };
        match classify(text.as_str(), &channel, "") {
            Ok(Incoming::Ping) => {
                if let Err(e) = ws.send(Message::text(PONG)).await {
                    errors.report(&format!(
                        "subscriber {index}: cannot answer pusher:ping: {e}"
                    ));
                    return false;
                }
            }
            Ok(Incoming::Error(data)) => {
                errors.report(&format!("subscriber {index}: pusher:error: {data}"));
            }
            Ok(_) => {}
            Err(e) => errors.report(&format!("subscriber {index}: {e}")),
        }
    }
    close(ws).await;
    true
}

/// Sends a close frame and waits (a little) for the server's.
async fn close(mut ws: Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deliveries() {
        let text = r#"{"event":"bench","channel":"bench","data":"seq=3 at=123456 xxxx"}"#;
        assert!(matches!(
            classify(text, "bench", "bench"),
            Ok(Incoming::Delivery(123456))
        ));
        let ping = r#"{"event":"pusher:ping","data":{}}"#;
        assert!(matches!(
            classify(ping, "bench", "bench"),
            Ok(Incoming::Ping)
        ));
        let other = r#"{"event":"bench","channel":"other","data":"seq=3 at=1 x"}"#;
        assert!(matches!(
            classify(other, "bench", "bench"),
            Ok(Incoming::Other)
        ));
        assert!(classify("not json", "bench", "bench").is_err());
    }

    #[test]
    fn targets() {
        let target = Target::parse("ws://127.0.0.1:6001/app/key?protocol=7").unwrap();
        assert_eq!(target.addr, "127.0.0.1:6001");
        assert_eq!(
            Target::parse("ws://localhost/x").unwrap().addr,
            "localhost:80"
        );
        assert!(Target::parse("wss://localhost/x").is_err());
        assert!(Target::parse("ws:///x").is_err());
    }
}
