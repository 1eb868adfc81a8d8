//! The echo loads, closed loop and open loop, through duplex's WebSocket or,
//! uncompressed over plain TCP, on the lean path of [`super::raw`].

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use duplex::{CloseCode, Message};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::raw::{RawFrames, raw_closed_loop, raw_open_loop};
use super::report::{Report, cpu_time, histogram, record};
use super::window::{Outcome, Window};
use super::{Args, GRACE, Pool, Socket, connect_all, is_plain_tcp, next_data};
#[cfg(target_os = "linux")]
use super::{raw::cheap_congestion_control, window::progress_bar};

/// The message every connection sends: zeros, or JSON-like text for
/// compression to work on.
pub(super) fn payload(size: usize, text: bool, deflate: bool) -> Message {
    if text || deflate {
        let mut json = String::with_capacity(size + 64);
        let mut i = 0;
        while json.len() < size {
            json.push_str(&format!(
                "{{\"symbol\":\"AC{}\",\"price\":{}.{:02},\"volume\":{}}}",
                i % 50,
                100 + i % 37,
                i % 100,
                i * 13 % 1000
            ));
            i += 1;
        }
        json.truncate(size);
        Message::text(json)
    } else {
        Message::binary(Bytes::from(vec![0u8; size]))
    }
}

/// Echo, closed or open loop.
pub(super) async fn echo(args: &Args, pool: &Pool) -> Result<Report, Box<dyn std::error::Error>> {
    let sockets = connect_all(args, pool, args.connections).await?;
    let deflate = sockets.first().is_some_and(|ws| ws.deflate().is_some());
    #[cfg(target_os = "linux")]
    {
        let plain = sockets.iter().all(is_plain_tcp);
        if args.rate.is_none() && !deflate && plain && super::uring::available() {
            return echo_on_uring(args, sockets);
        }
    }
    let message = payload(args.size, args.text, args.deflate);
    let window = Rc::new(Window::new(args));
    let cpu_before = Rc::new(std::cell::Cell::new(None));
    let mut tasks = Vec::with_capacity(sockets.len());
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    for (i, ws) in sockets.into_iter().enumerate() {
        let (message, window) = (message.clone(), window.clone());
        tasks.push(tokio::task::spawn_local(async move {
            // Uncompressed over plain TCP, the echo of a frame is a frame of
            // known length: the lean path, which keeps the load generator
            // cheaper than any server it measures.
            let lean = !deflate && is_plain_tcp(&ws);
            if !lean {
                return match interval {
                    None => closed_loop(ws, message, &window).await,
                    Some(interval) => open_loop(ws, message, interval, &window).await,
                };
            }
            let Ok(duplex::MaybeTlsStream::Plain(raw)) = ws.into_inner().into_tcp() else {
                let mut outcome = Outcome::new();
                outcome.errors += 1;
                return outcome;
            };
            let frame = RawFrames::new(&message, i as u32);
            match interval {
                None => raw_closed_loop(raw, frame, &window).await,
                Some(interval) => raw_open_loop(raw, frame, interval, &window).await,
            }
        }));
    }
    // Start the CPU clock when measuring starts.
    {
        let (window, cpu_before) = (window.clone(), cpu_before.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window.start).await;
            cpu_before.set(Some(cpu_time()));
        });
    }
    let mut latency = histogram();
    let (mut messages, mut errors) = (0, 0);
    for task in tasks {
        let outcome = task.await?;
        latency.add(&outcome.latency)?;
        messages += outcome.messages;
        errors += outcome.errors;
    }
    let cpu = cpu_time().saturating_sub(cpu_before.get().unwrap_or_default());
    Ok(Report {
        messages,
        published: 0,
        seconds: args.duration,
        latency,
        errors,
        client_cpu_percent: 100.0 * cpu.as_secs_f64() / args.duration,
        deflate,
        http2_connections: args.http2.then(|| pool.count()),
    })
}

/// The closed-loop echo of the lean path, on io_uring.
#[cfg(target_os = "linux")]
fn echo_on_uring(args: &Args, sockets: Vec<Socket>) -> Result<Report, Box<dyn std::error::Error>> {
    let message = payload(args.size, args.text, false);
    let mut streams = Vec::with_capacity(sockets.len());
    for (i, ws) in sockets.into_iter().enumerate() {
        let Ok(duplex::MaybeTlsStream::Plain(tcp)) = ws.into_inner().into_tcp() else {
            return Err("a connection is not plain TCP".into());
        };
        cheap_congestion_control(&tcp);
        streams.push((tcp.into_std()?, RawFrames::new(&message, i as u32)));
    }
    let began = std::time::Instant::now();
    let start = began + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let progress = progress_bar(args);
    let tally = super::uring::closed_loop(streams, start, end, &progress)?;
    progress.finish_and_clear();
    Ok(Report {
        messages: tally.messages,
        published: 0,
        seconds: args.duration,
        latency: tally.latency,
        errors: tally.errors,
        client_cpu_percent: 100.0 * tally.cpu.as_secs_f64() / args.duration,
        deflate: false,
        http2_connections: None,
    })
}

/// One connection sends, waits for the echo, and sends again.
async fn closed_loop(mut ws: Socket, message: Message, window: &Window) -> Outcome {
    let mut outcome = Outcome::new();
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        if ws.send(message.clone()).await.is_err() {
            outcome.errors += 1;
            return outcome;
        }
        match tokio::time::timeout_at(window.end + GRACE, next_data(&mut ws)).await {
            Ok(Some(Ok(_))) => {}
            _ => {
                outcome.errors += 1;
                return outcome;
            }
        }
        if window.measuring(sent) {
            record(&mut outcome.latency, sent.elapsed());
            outcome.messages += 1;
            window.counted.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ws.close(CloseCode::NORMAL, "").await;
    outcome
}

/// One connection sends every `interval`, whatever comes back.
async fn open_loop(ws: Socket, message: Message, interval: Duration, window: &Window) -> Outcome {
    let (mut reader, mut writer) = ws.split();
    let due: Rc<std::cell::RefCell<VecDeque<Instant>>> = Rc::default();
    let sending = {
        let due = due.clone();
        let end = window.end;
        async move {
            let mut next = Instant::now();
            while next < end {
                tokio::time::sleep_until(next).await;
                due.borrow_mut().push_back(next);
                if writer.send(message.clone()).await.is_err() {
                    return (writer, false);
                }
                next += interval;
            }
            (writer, true)
        }
    };
    let receiving = async {
        let mut outcome = Outcome::new();
        loop {
            let timeout = tokio::time::sleep_until(window.end + GRACE);
            let item = tokio::select! {
                item = reader.next() => item,
                () = timeout => break,
            };
            match item {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    if window.echoed(&due, &mut outcome) {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    outcome.errors += 1;
                    break;
                }
            }
        }
        outcome
    };
    let ((mut writer, sent_all), mut outcome) = tokio::join!(sending, receiving);
    if !sent_all {
        outcome.errors += 1;
    }
    let _ = writer.close(CloseCode::NORMAL, "").await;
    outcome
}
