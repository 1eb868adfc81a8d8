//! Load on one collaborative document: N editors (y-websocket clients with
//! their own `yrs` documents) connected to `/docs/bench` of a hub, each
//! typing at a fixed rate; the hub validates, stores and broadcasts every
//! update to the N - 1 others.
//!
//! ```text
//! cargo run --release -p duplex-hub --example docs_bench -- [EDITORS] [UPDATES_PER_S_EACH] [SECONDS] [ws://HOST:PORT]
//! ```
//!
//! Defaults: 100 editors, 10 updates a second each, 10 seconds measured
//! after 2 seconds of warm-up, against a hub started in this process on
//! 127.0.0.1 with a temporary data folder (give a URL to load a running
//! `duplex serve` instead; its `/metrics` gives the updates applied, and
//! its `limits.send_queue` should be large enough for the load). Prints the
//! updates applied (stored and
//! broadcast) per second, the messages delivered to editors per second, the
//! delivery latency seen by one editor (p50, p99, max), and one JSON line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex::Message;
use futures_util::StreamExt;
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    measuring: AtomicBool,
    /// When each (client, clock) was sent.
    sent_at: Mutex<HashMap<(u64, u32), Instant>>,
    latencies_us: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let editors: usize = arg(&args, 0, 100);
    let rate: f64 = arg(&args, 1, 10.0);
    let seconds: u64 = arg(&args, 2, 10);
    let external: Option<String> = args.get(3).cloned();

    let data = tempfile::tempdir()?;
    let mut hub = None;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let base = match &external {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let mut config = duplex_hub::Config::default();
            config.feed.enabled = false;
            config.limits.send_queue = 8192;
            let server = duplex_hub::Server::open(config, data.path()).await?;
            hub = Some(server.hub().clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(server.serve(listener, async {
                let _ = stopped.await;
            }));
            format!("ws://{addr}")
        }
    };
    let url = format!("{base}/docs/bench");
    let totals = Arc::new(Totals::default());
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..editors {
        let (url, totals) = (url.clone(), totals.clone());
        let ws = duplex::connect(&url).await?;
        tasks.push(tokio::spawn(async move {
            if let Err(err) = editor(i, ws, rate, totals.clone()).await {
                eprintln!("editor {i}: {err}");
                totals.failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eprintln!(
        "{editors} editors connected in {:.2} s; warming up 2 s, then measuring {seconds} s at {rate} updates/s each",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics_addr = external
        .as_deref()
        .and_then(|url| url.strip_prefix("ws://"))
        .map(|host| host.trim_end_matches('/').to_string());
    let applied = |hub: &Option<Arc<duplex_hub::Hub>>| match (hub, &metrics_addr) {
        (Some(h), _) => Some(h.docs().metrics().updates.load(Ordering::Relaxed)),
        (None, Some(addr)) => updates_metric(addr),
        (None, None) => None,
    };
    let (sent0, received0, applied0) = (
        totals.sent.load(Ordering::Relaxed),
        totals.received.load(Ordering::Relaxed),
        applied(&hub),
    );
    totals.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    totals.measuring.store(false, Ordering::Relaxed);
    let sent = (totals.sent.load(Ordering::Relaxed) - sent0) as f64 / elapsed;
    let received = (totals.received.load(Ordering::Relaxed) - received0) as f64 / elapsed;
    let applied = applied(&hub)
        .zip(applied0)
        .map(|(a, b)| (a - b) as f64 / elapsed);
    let mut lat = totals.latencies_us.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let failed = totals.failed.load(Ordering::Relaxed);
    println!("editors:                 {editors} on one document");
    println!("updates sent:            {sent:.0}/s");
    if let Some(applied) = applied {
        println!("updates applied:         {applied:.0}/s (validated, stored, broadcast)");
    }
    println!(
        "updates delivered:       {received:.0}/s (to all editors; ideal {:.0}/s)",
        sent * (editors as f64 - 1.0)
    );
    println!(
        "latency (editor 0):      p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        lat.len()
    );
    println!("editors failed:          {failed}");
    println!(
        "{}",
        serde_json::json!({
            "editors": editors, "rate_each": rate, "seconds": seconds,
            "sent_per_s": sent.round(), "applied_per_s": applied.map(f64::round),
            "delivered_per_s": received.round(),
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            "failed": failed,
        })
    );
    let _ = stop.send(());
    for task in tasks {
        task.abort();
    }
    if let Some(hub) = hub {
        hub.shutdown().await;
    }
    Ok(())
}

/// `duplex_docs_updates_total` from `GET /metrics` of a running hub.
fn updates_metric(addr: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("duplex_docs_updates_total "))
        .and_then(|v| v.trim().parse().ok())
}

async fn editor<S>(
    index: usize,
    ws: duplex::WebSocket<S>,
    rate: f64,
    totals: Arc<Totals>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut read, mut write) = ws.split();
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    let client = doc.client_id().get();
    // The handshake: the server's SyncStep1, ours, its SyncStep2.
    write
        .send(Message::binary(
            YMessage::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1(),
        ))
        .await?;
    let reader_totals = totals.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = read.next().await {
            let Message::Binary(bytes) = message else {
                continue;
            };
            if bytes.first() != Some(&0) || bytes.get(1) != Some(&2) {
                continue;
            }
            if reader_totals.measuring.load(Ordering::Relaxed) {
                reader_totals.received.fetch_add(1, Ordering::Relaxed);
            }
            if index == 0 {
                let now = Instant::now();
                if let Ok(YMessage::Sync(SyncMessage::Update(u))) = YMessage::decode_v1(&bytes)
                    && let Ok(update) = Update::decode_v1(&u)
                {
                    let sent_at = reader_totals.sent_at.lock().unwrap();
                    for (c, clock) in update.state_vector_lower().iter() {
                        if let Some(t) = sent_at.get(&(c.get(), *clock))
                            && reader_totals.measuring.load(Ordering::Relaxed)
                        {
                            let us = now.duration_since(*t).as_micros() as u64;
                            reader_totals.latencies_us.lock().unwrap().push(us);
                        }
                    }
                }
            }
        }
    });
    // Start at a random phase so the editors do not type in lockstep.
    let period = Duration::from_secs_f64(1.0 / rate);
    let phase = period.mul_f64((index as f64 * 0.618_034) % 1.0);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u32;
    loop {
        ticks.tick().await;
        let before = doc.transact().state_vector();
        {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, if n % 10 == 9 { " " } else { "x" });
        }
        let update = doc.transact().encode_diff_v1(&before);
        let clock = doc.transact().state_vector().get(&doc.client_id()) - 1;
        totals
            .sent_at
            .lock()
            .unwrap()
            .insert((client, clock), Instant::now());
        write
            .send(Message::binary(
                YMessage::Sync(SyncMessage::Update(update)).encode_v1(),
            ))
            .await?;
        if totals.measuring.load(Ordering::Relaxed) {
            totals.sent.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
        if reader.is_finished() {
            return Err("the server closed the connection".into());
        }
    }
}
