//! The closed-loop echo load on io_uring: every connection's send and receive
//! go through one ring, so a batch of round trips costs one system call
//! instead of two per message plus epoll. On loopback the TCP stack costs
//! client and server alike; this is what keeps the client's share below the
//! server's, so that the server is what is measured.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use io_uring::{IoUring, opcode, types};

use super::GRACE;
use super::raw::RawFrames;
use super::report::{cpu_time, histogram, record};

/// One connection's state on the ring.
struct Conn {
    tcp: TcpStream,
    frames: RawFrames,
    echo: Vec<u8>,
    /// Bytes of the echo received so far.
    got: usize,
    /// Bytes of the message sent so far.
    sent_bytes: usize,
    sent_at: Instant,
    done: bool,
}

/// What the closed loop measured.
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) messages: u64,
    pub(super) errors: u64,
    /// The process's CPU time over the measurement window.
    pub(super) cpu: Duration,
}

/// Whether this kernel lets the process use io_uring.
pub(super) fn available() -> bool {
    IoUring::new(8).is_ok()
}

const SEND: u64 = 0;
const RECV: u64 = 1;
/// The user data of the deadline: no connection's tag.
const DEADLINE: u64 = u64::MAX;

fn tag(conn: usize, op: u64) -> u64 {
    ((conn as u64) << 1) | op
}

/// Runs the closed loop on `streams` until `end`, counting round trips that
/// start within `[start, end)`; the progress bar shows the rate as it goes.
pub(super) fn closed_loop(
    streams: Vec<(TcpStream, RawFrames)>,
    start: Instant,
    end: Instant,
    progress: &ProgressBar,
) -> io::Result<Tally> {
    let entries = (streams.len() * 2 + 1).next_power_of_two().max(8) as u32;
    let now = Instant::now();
    // Declared before the ring, so dropped after it, like the buffers below:
    // the kernel reads it until the deadline fires or the ring is gone.
    let deadline = {
        let wait = end.saturating_duration_since(now) + GRACE;
        types::Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos())
    };
    // Declared before the ring, so dropped after it: no buffer is freed while
    // the kernel may still use it.
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .map(|(tcp, frames)| {
            tcp.set_nonblocking(false)?;
            Ok(Conn {
                tcp,
                echo: vec![0u8; frames.echo_len],
                frames,
                got: 0,
                sent_bytes: 0,
                sent_at: now,
                done: false,
            })
        })
        .collect::<io::Result<_>>()?;
    // Completions are processed only when this thread asks for them, by this
    // thread: no interrupting task work, no cross-thread wakeups.
    let mut ring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))?;
    let mut tally = Tally {
        latency: histogram(),
        messages: 0,
        errors: 0,
        cpu: Duration::ZERO,
    };
    // A server that stops answering must not hold the load generator: at the
    // deadline, every connection still waiting is shut down.
    push(
        &mut ring,
        &opcode::Timeout::new(&deadline).build().user_data(DEADLINE),
    )?;
    let mut in_flight = 0usize;
    for i in 0..conns.len() {
        push_send(&mut ring, &conns, i)?;
        push_recv(&mut ring, &mut conns, i)?;
        in_flight += 2;
    }
    let mut live = conns.len();
    let mut last_tick = (Instant::now(), 0u64);
    let (mut cpu_started, mut cpu_ended) = (None, None);
    let mut completions = Vec::with_capacity(entries as usize);
    while live > 0 || in_flight > 0 {
        ring.submit_and_wait(1)?;
        completions.clear();
        completions.extend(ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        for &(user_data, result) in &completions {
            if user_data == DEADLINE {
                for conn in conns.iter_mut().filter(|conn| !conn.done) {
                    tally.errors += 1;
                    conn.done = true;
                    let _ = conn.tcp.shutdown(std::net::Shutdown::Both);
                    live -= 1;
                }
                continue;
            }
            in_flight -= 1;
            let i = (user_data >> 1) as usize;
            let op = user_data & 1;
            if conns[i].done {
                continue;
            }
            if result <= 0 {
                // An error, or the server closed the connection. Shutting the
                // socket down ends the other operation in flight on it.
                tally.errors += 1;
                conns[i].done = true;
                let _ = conns[i].tcp.shutdown(std::net::Shutdown::Both);
                live -= 1;
                continue;
            }
            let n = result as usize;
            if op == SEND {
                let conn = &mut conns[i];
                conn.sent_bytes += n;
                if conn.sent_bytes < conn.frames.message.len() {
                    push_send(&mut ring, &conns, i)?;
                    in_flight += 1;
                }
                continue;
            }
            let conn = &mut conns[i];
            conn.got += n;
            if conn.got < conn.echo.len() {
                push_recv(&mut ring, &mut conns, i)?;
                in_flight += 1;
                continue;
            }
            if !conn.frames.is_echo(&conn.echo) {
                tally.errors += 1;
                conn.done = true;
                let _ = conn.tcp.shutdown(std::net::Shutdown::Both);
                live -= 1;
                continue;
            }
            // One clock reading per message: the time an echo arrives is the
            // time the next message leaves.
            let now = Instant::now();
            if conn.sent_at >= start && conn.sent_at < end {
                record(&mut tally.latency, now - conn.sent_at);
                tally.messages += 1;
            }
            if now >= end {
                conn.done = true;
                live -= 1;
                continue;
            }
            conn.sent_at = now;
            conn.got = 0;
            conn.sent_bytes = 0;
            push_send(&mut ring, &conns, i)?;
            push_recv(&mut ring, &mut conns, i)?;
            in_flight += 2;
        }
        let now = Instant::now();
        if cpu_started.is_none() && now >= start {
            cpu_started = Some(cpu_time());
        }
        if cpu_ended.is_none() && now >= end {
            cpu_ended = Some(cpu_time());
        }
        if now - last_tick.0 >= Duration::from_millis(250) {
            let rate = (tally.messages - last_tick.1) as f64 / (now - last_tick.0).as_secs_f64();
            last_tick = (now, tally.messages);
            progress.set_position(now.saturating_duration_since(start).as_secs());
            progress.set_message(if now < start {
                "warming up".to_owned()
            } else {
                format!("{rate:.0} messages/s")
            });
        }
    }
    let ended = cpu_ended.unwrap_or_else(cpu_time);
    tally.cpu = ended.saturating_sub(cpu_started.unwrap_or(ended));
    drop(ring);
    // Leave politely: a close frame each; the server then ends the connection.
    for conn in &mut conns {
        use std::io::{Read, Write};
        if conn.tcp.write_all(&conn.frames.close).is_ok() {
            let _ = conn.tcp.set_read_timeout(Some(Duration::from_millis(200)));
            let mut rest = Vec::new();
            let _ = conn.tcp.read_to_end(&mut rest);
        }
    }
    Ok(tally)
}

fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: every entry points to the deadline or into a buffer owned by
    // `conns`, both declared before the ring and so alive after it; `conns` lives,
    // unmoved, until the ring has completed every operation (the loop only
    // ends once no connection has one in flight, bar those marked done, whose
    // buffers stay allocated until `conns` is dropped after the ring's last use).
    let pushed = unsafe { ring.submission().push(entry) };
    if pushed.is_err() {
        ring.submit()?;
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe { ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    Ok(())
}

fn push_send(ring: &mut IoUring, conns: &[Conn], i: usize) -> io::Result<()> {
    let conn = &conns[i];
    let rest = &conn.frames.message[conn.sent_bytes..];
    let entry = opcode::Send::new(
        types::Fd(conn.tcp.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data(tag(i, SEND));
    push(ring, &entry)
}

fn push_recv(ring: &mut IoUring, conns: &mut [Conn], i: usize) -> io::Result<()> {
    let conn = &mut conns[i];
    let rest = &mut conn.echo[conn.got..];
    let entry = opcode::Recv::new(
        types::Fd(conn.tcp.as_raw_fd()),
        rest.as_mut_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data(tag(i, RECV));
    push(ring, &entry)
}
