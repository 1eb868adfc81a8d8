//! The fan-out load: publishers, and receivers that measure the delay from
//! publication to delivery, over a broadcast endpoint or a duplex hub's
//! channel.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duplex::{CloseCode, Message};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::report::{Report, cpu_time, histogram, record};
use super::window::Window;
use super::{Args, GRACE, Pool, Socket, connect_to, next_data};

/// How fan-out messages travel: raw binary messages that a broadcast endpoint
/// sends to everyone, or publications on a channel of a duplex hub.
#[derive(Clone)]
enum Route {
    /// Every binary message a client sends reaches every client.
    Broadcast,
    /// `duplex serve`'s protocol: subscribe to the channel, publish to it,
    /// receive `{"push":"message",...}`.
    Hub(Rc<str>),
}

impl Route {
    /// Makes `ws` a receiver: nothing for a broadcast, a subscription on a hub
    /// (answered before the call returns).
    async fn join(&self, ws: &mut Socket) -> Result<(), Box<dyn std::error::Error>> {
        let Route::Hub(channel) = self else {
            return Ok(());
        };
        let request = serde_json::json!({"id": 0, "op": "subscribe", "channel": &**channel});
        ws.send(Message::text(request.to_string())).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), Route::subscribed(ws));
        reply
            .await
            .map_err(|_| "the hub did not answer the subscription within 10 s")?
    }

    /// Waits for the answer to the subscription request (id 0).
    async fn subscribed(ws: &mut Socket) -> Result<(), Box<dyn std::error::Error>> {
        loop {
            let reply = match next_data(ws).await {
                Some(message) => message?,
                None => return Err("the hub closed the connection while subscribing".into()),
            };
            let reply: serde_json::Value = serde_json::from_slice(&reply.into_data())?;
            if reply.get("id") == Some(&serde_json::Value::from(0)) {
                return match reply["ok"].as_bool() {
                    Some(true) => Ok(()),
                    _ => {
                        Err(format!("the hub refused the subscription: {}", reply["error"]).into())
                    }
                };
            }
        }
    }

    /// The message that publishes `seq`, stamped `nanos` after the epoch,
    /// padded to about `size` bytes.
    fn publication(&self, seq: u64, nanos: u64, size: usize) -> Message {
        match self {
            Route::Broadcast => {
                let mut data = vec![0u8; size.max(16)];
                data[..8].copy_from_slice(&seq.to_be_bytes());
                data[8..16].copy_from_slice(&nanos.to_be_bytes());
                Message::binary(data)
            }
            Route::Hub(channel) => {
                let data = serde_json::json!({
                    "bench_seq": seq,
                    "bench_t": nanos,
                    "pad": "x".repeat(size.saturating_sub(48)),
                });
                let request = serde_json::json!({
                    "id": seq + 1, "op": "publish", "channel": &**channel, "data": data,
                });
                Message::text(request.to_string())
            }
        }
    }

    /// The sequence number and time stamp of a delivered message, if it is a
    /// publication of this run (replies and other pushes are not).
    fn delivered(&self, message: &Message) -> Option<(u64, u64)> {
        let data = message.as_data();
        match self {
            Route::Broadcast => {
                let seq = u64::from_be_bytes(data.get(..8)?.try_into().ok()?);
                let nanos = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
                Some((seq, nanos))
            }
            // The hub forwards `data` as it was published; the two numbers are
            // found by key, without parsing the whole push.
            Route::Hub(_) => {
                let seq = number_after(data, b"\"bench_seq\":")?;
                let nanos = number_after(data, b"\"bench_t\":")?;
                Some((seq, nanos))
            }
        }
    }
}

/// The unsigned integer that follows the first `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Fan-out: messages carry their publication time; subscribers measure delivery.
pub(super) async fn fan_out(
    args: &Args,
    pool: &Pool,
    subscribers: usize,
) -> Result<Report, Box<dyn std::error::Error>> {
    let epoch = Instant::now();
    let route = match &args.hub {
        Some(channel) => Route::Hub(channel.as_str().into()),
        None => Route::Broadcast,
    };
    // The URL, then --also's: receivers go round-robin over them, and each
    // has a publisher.
    let urls: Vec<&str> = std::iter::once(args.url.as_str())
        .chain(args.also.iter().map(String::as_str))
        .collect();
    let mut receivers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        receivers.push(connect_to(args, pool, urls[i % urls.len()]).await?);
    }
    for ws in &mut receivers {
        route.join(ws).await?;
    }
    let mut publishers = Vec::with_capacity(urls.len());
    for url in &urls {
        let mut publisher = connect_to(args, pool, url).await?;
        // The publisher receives its own publications too: in the closed loop,
        // their return is its signal to publish the next one.
        route.join(&mut publisher).await?;
        publishers.push(publisher);
    }
    let deflate = publishers[0].deflate().is_some();
    if args.marks {
        eprintln!(
            "subscribed: {subscribers} subscribers over {} servers",
            urls.len()
        );
    }
    let window = Rc::new(Window::new(args));
    let published = Arc::new(AtomicU64::new(0));
    let cpu_before = Rc::new(std::cell::Cell::new(None));
    {
        let (window, cpu_before, marks) = (window.clone(), cpu_before.clone(), args.marks);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window.start).await;
            cpu_before.set(Some(cpu_time()));
            if marks {
                eprintln!("measuring");
                tokio::time::sleep_until(window.end).await;
                eprintln!("measured");
            }
        });
    }

    // One histogram for all the receivers: one each (136 KiB) would be over
    // a gigabyte to zero at 10,000 subscribers, seconds of the load
    // generator's time when the run starts.
    let latency = Rc::new(std::cell::RefCell::new(histogram()));
    let mut tasks = Vec::with_capacity(receivers.len());
    for mut ws in receivers {
        let (window, route, latency) = (window.clone(), route.clone(), latency.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let (mut messages, mut errors) = (0u64, 0u64);
            loop {
                let timeout = tokio::time::sleep_until(window.end + GRACE);
                let item = tokio::select! {
                    item = next_data(&mut ws) => item,
                    () = timeout => break,
                };
                let Some(Ok(message)) = item else {
                    errors += 1;
                    break;
                };
                let Some((_, nanos)) = route.delivered(&message) else {
                    continue;
                };
                let sent = epoch + Duration::from_nanos(nanos);
                if window.measuring(sent) {
                    record(&mut latency.borrow_mut(), sent.elapsed());
                    messages += 1;
                    window.counted.fetch_add(1, Ordering::Relaxed);
                }
                if sent >= window.end {
                    break;
                }
            }
            let _ = ws.close(CloseCode::NORMAL, "").await;
            (messages, errors)
        }));
    }

    // The publishers: on a schedule with --rate (the rate shared between
    // them, their turns interleaved), else one message in flight each.
    let count = publishers.len() as u64;
    let interval = args.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let first = Instant::now();
    let mut publishing = Vec::with_capacity(publishers.len());
    for (index, ws) in publishers.into_iter().enumerate() {
        let publisher = Publisher {
            route: route.clone(),
            size: args.size,
            epoch,
            window: window.clone(),
            published: published.clone(),
            index: index as u64,
            count,
        };
        let schedule = interval.map(|interval| {
            let start = first + interval * index as u32;
            (start, interval * count as u32)
        });
        publishing.push(tokio::task::spawn_local(publisher.run(ws, schedule)));
    }
    let mut publisher_errors = 0;
    for task in publishing {
        publisher_errors += task.await?;
    }
    let (mut messages, mut errors) = (0, publisher_errors);
    for task in tasks {
        let (delivered, failed) = task.await?;
        messages += delivered;
        errors += failed;
    }
    let cpu = cpu_time().saturating_sub(cpu_before.get().unwrap_or_default());
    let latency = latency.borrow().clone();
    Ok(Report {
        messages,
        published: published.load(Ordering::Relaxed),
        seconds: args.duration,
        latency,
        errors,
        client_cpu_percent: 100.0 * cpu.as_secs_f64() / args.duration,
        deflate,
        http2_connections: args.http2.then(|| pool.count()),
    })
}

/// One publisher of a fan-out run: publications `index`, `index + count`,
/// `index + 2 * count` ... of the run's `count` publishers.
struct Publisher {
    route: Route,
    size: usize,
    epoch: Instant,
    window: Rc<Window>,
    published: Arc<AtomicU64>,
    index: u64,
    count: u64,
}

impl Publisher {
    /// Publishes through `ws` until the window ends: on `schedule` (the
    /// first publication's time and the interval) if there is one, else the
    /// next publication when the broadcast brings the last one back. Its
    /// reader runs beside it either way, so that what comes back (the
    /// publications, the hub's replies) never piles up unread. Returns the
    /// errors.
    async fn run(self, ws: Socket, schedule: Option<(Instant, Duration)>) -> u64 {
        let (mut reader, mut writer) = ws.split();
        let (returned_tx, mut returned) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let reading = {
            let (route, end) = (self.route.clone(), self.window.end);
            tokio::task::spawn_local(async move {
                loop {
                    let timeout = tokio::time::sleep_until(end + GRACE);
                    let item = tokio::select! {
                        item = reader.next() => item,
                        () = timeout => break,
                    };
                    match item {
                        Some(Ok(message)) => {
                            if let Some((seq, _)) = route.delivered(&message) {
                                let _ = returned_tx.send(seq);
                            }
                        }
                        _ => break,
                    }
                }
            })
        };
        let mut errors = 0;
        let mut seq = self.index;
        let mut next = schedule.map(|(first, _)| first);
        loop {
            if let (Some(at), Some((_, interval))) = (next.as_mut(), schedule) {
                tokio::time::sleep_until(*at).await;
                *at += interval;
            }
            let now = Instant::now();
            let message =
                self.route
                    .publication(seq, (now - self.epoch).as_nanos() as u64, self.size);
            if writer.send(message).await.is_err() {
                errors += 1;
                break;
            }
            if self.window.measuring(now) {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            if now >= self.window.end {
                break;
            }
            if schedule.is_none() {
                // Wait for this publication to come back (earlier ones, and
                // the other publishers', may arrive first).
                loop {
                    match returned.recv().await {
                        Some(back) if back % self.count == self.index && back >= seq => break,
                        Some(_) => {}
                        None => {
                            errors += 1;
                            break;
                        }
                    }
                }
                if errors > 0 {
                    break;
                }
            }
            seq += self.count;
        }
        let _ = writer.close(CloseCode::NORMAL, "").await;
        let _ = reading.await;
        errors
    }
}
