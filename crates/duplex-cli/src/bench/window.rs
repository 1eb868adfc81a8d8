//! The measurement window of a run, its progress bar, and one connection's
//! tally.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use super::Args;
use super::report::{histogram, record};

/// The measurement window, a progress bar over it, and the count it shows.
pub(super) struct Window {
    pub(super) start: Instant,
    pub(super) end: Instant,
    pub(super) counted: Rc<AtomicU64>,
    pub(super) progress: ProgressBar,
}

/// The progress bar of a run: one step per second of warm-up and measurement.
pub(super) fn progress_bar(args: &Args) -> ProgressBar {
    let progress = ProgressBar::new((args.warmup + args.duration).ceil() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress
}

impl Window {
    pub(super) fn new(args: &Args) -> Window {
        let began = Instant::now();
        let start = began + Duration::from_secs_f64(args.warmup);
        let end = start + Duration::from_secs_f64(args.duration);
        let progress = progress_bar(args);
        let window = Window {
            start,
            end,
            counted: Rc::new(AtomicU64::new(0)),
            progress,
        };
        window.tick_progress(began);
        window
    }

    pub(super) fn tick_progress(&self, began: Instant) {
        let (progress, counted, start, end) = (
            self.progress.clone(),
            self.counted.clone(),
            self.start,
            self.end,
        );
        tokio::task::spawn_local(async move {
            let mut last = (Instant::now(), 0);
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let count = counted.load(Ordering::Relaxed);
                let rate = (count - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, count);
                progress.set_position((now - began).as_secs());
                if now < start {
                    progress.set_message("warming up");
                } else {
                    progress.set_message(format!("{rate:.0} messages/s"));
                }
            }
            progress.finish_and_clear();
        });
    }

    pub(super) fn measuring(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }

    /// An echo came back, for the oldest message of `due` (the open loop's
    /// send times): its latency is counted if it was sent in the window.
    /// True once the window is over and nothing is awaited: the connection
    /// is done.
    pub(super) fn echoed(&self, due: &RefCell<VecDeque<Instant>>, outcome: &mut Outcome) -> bool {
        let Some(sent) = due.borrow_mut().pop_front() else {
            return false;
        };
        if self.measuring(sent) {
            record(&mut outcome.latency, sent.elapsed());
            outcome.messages += 1;
            self.counted.fetch_add(1, Ordering::Relaxed);
        }
        Instant::now() >= self.end && due.borrow().is_empty()
    }
}

/// One connection's tally.
pub(super) struct Outcome {
    pub(super) messages: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) errors: u64,
}

impl Outcome {
    pub(super) fn new() -> Outcome {
        Outcome {
            messages: 0,
            latency: histogram(),
            errors: 0,
        }
    }
}
