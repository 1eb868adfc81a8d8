//! `floor`: the least work one fan-out delivery can take on this kernel.
//!
//! One pre-encoded, unmasked server WebSocket frame (binary, FIN set, the
//! payload SIZE zero bytes, the length header as RFC 6455 gives it) is
//! written with one non-blocking `write(2)` to each of N connected loopback
//! TCP sockets, by one thread, every 1/RATE seconds on an absolute schedule.
//! No WebSocket library, no queue, no allocation per delivery: what is left
//! is the system call and the kernel's TCP path, which every server pays
//! too. Its CPU time over the measured window, divided by the frames
//! written in it, is a floor for a server's CPU per delivery.
//!
//! ```text
//! floor --connections N --size BYTES --rate R --duration SECS
//!       [--warmup SECS] [--writer-cpu CPU] [--reader-cpu CPU] [--json]
//! ```
//!
//! The readers are another process (`floor read`, spawned from this
//! executable), pinned to another CPU: a process here may hold only so many
//! open files, and their reading must not count as the writer's work. On
//! loopback, though, the kernel delivers a segment to the receiving socket
//! in the sender's system call, so the writer's system time includes the
//! receiving side's TCP work, as a server's does on loopback.
//!
//! A short write or a full socket buffer (EAGAIN) is counted; the rest of
//! that frame is written before the next frame to the same socket, so no
//! byte is dropped. At the end the writer closes its sockets, the reader
//! reports the bytes it read, and a difference from the bytes written is an
//! error.

mod reader;
mod sys;

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use reader::ReadArgs;

const USAGE: &str = "\
usage: floor --connections N --size BYTES --rate R --duration SECS
             [--warmup SECS] [--writer-cpu CPU] [--reader-cpu CPU] [--json]

Writes one pre-encoded WebSocket binary frame of BYTES payload bytes to each
of N loopback TCP connections, R times a second, with one write(2) per
connection, and reports the writer's CPU time per frame written.

  --connections N   connections (readers in a child process)
  --size BYTES      payload bytes per frame (e.g. 64, 1K; at most 64M)
  --rate R          frames per second to every connection
  --duration SECS   seconds measured
  --warmup SECS     seconds of writing before measuring (default 1)
  --writer-cpu CPU  the CPU the writer is pinned to (default 0)
  --reader-cpu CPU  the CPU the readers are pinned to (default 1)
  --json            print one JSON object instead of a table";

/// The largest payload accepted.
const MAX_SIZE: usize = 64 << 20;

/// How long the readers get to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the writer gets, after the window, to finish frames it could
/// not write whole, and the readers to report once the sockets are closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors kept for everything besides the connections.
const SPARE_FILES: u64 = 64;

/// What `floor` was told to measure.
struct Args {
    connections: usize,
    size: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
    writer_cpu: usize,
    reader_cpu: usize,
    json: bool,
}

/// A command line: a run, the hidden reader, or a request for help.
enum Invocation {
    Write(Args),
    Read(ReadArgs),
    Help,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Read(args)) => reader::run(&args).map_err(|e| format!("reader: {e}")),
        Ok(Invocation::Write(args)) => write(&args),
        Err(e) => Err(format!("{e}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the command line: `--name VALUE` or `--name=VALUE`, any order.
fn parse(args: &[String]) -> Result<Invocation, String> {
    let (reading, args) = match args.first().map(String::as_str) {
        Some("read") => (true, &args[1..]),
        _ => (false, args),
    };
    let (known, switches): (&[&str], &[&str]) = if reading {
        (&["connect", "connections", "cpu"], &[])
    } else {
        (
            &[
                "connections",
                "size",
                "rate",
                "duration",
                "warmup",
                "writer-cpu",
                "reader-cpu",
            ],
            &["json"],
        )
    };
    let Some(flags) = loadkit::Flags::parse(args, known, switches)? else {
        return Ok(Invocation::Help);
    };
    let value = |name: &str| flags.value(name);
    let required = |name: &str| flags.required(name);

    if reading {
        let connect = required("connect")?;
        return Ok(Invocation::Read(ReadArgs {
            connect: connect.parse().map_err(|_| {
                format!("--connect {connect:?} is not an address (e.g. 127.0.0.1:9001)")
            })?,
            connections: loadkit::count("connections", required("connections")?)?,
            cpu: cpu("cpu", required("cpu")?)?,
        }));
    }
    let size_text = required("size")?;
    let size = loadkit::parse_size(size_text).map_err(|e| format!("--size: {e}"))?;
    if size > MAX_SIZE {
        return Err(format!("--size {size_text} is over the limit of 64M"));
    }
    let args = Args {
        connections: loadkit::count("connections", required("connections")?)?,
        size,
        rate: loadkit::number("rate", required("rate")?, false)?,
        duration: loadkit::number("duration", required("duration")?, false)?,
        warmup: match value("warmup") {
            Some(text) => loadkit::number("warmup", text, true)?,
            None => 1.0,
        },
        writer_cpu: value("writer-cpu").map_or(Ok(0), |text| cpu("writer-cpu", text))?,
        reader_cpu: value("reader-cpu").map_or(Ok(1), |text| cpu("reader-cpu", text))?,
        json: flags.switch("json"),
    };
    // The schedule is kept in nanoseconds: keep it far from overflowing.
    if args.warmup + args.duration > 1e6 {
        return Err("--warmup and --duration together are over 1,000,000 seconds".into());
    }
    if args.rate > 1e6 {
        return Err("--rate is over 1,000,000 frames per second".into());
    }
    Ok(Invocation::Write(args))
}

/// A CPU number.
fn cpu(name: &str, text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map_err(|_| format!("--{name} {text:?} is not a CPU number (0, 1, ...)"))
}

/// An unmasked server-to-client binary frame, FIN set, with `size` zero
/// bytes of payload (RFC 6455, section 5.2).
fn frame(size: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(size + 10);
    frame.push(0x80 | 0x2);
    if size < 126 {
        frame.push(size as u8);
    } else if size <= 0xffff {
        frame.push(126);
        frame.extend_from_slice(&(size as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(size as u64).to_be_bytes());
    }
    frame.resize(frame.len() + size, 0);
    frame
}

/// The reader process; killed if still running when dropped, so that no
/// error path leaves it behind.
struct ReaderProcess(Child);

impl Drop for ReaderProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One writer's socket and the frames it still owes its reader.
struct Socket {
    stream: TcpStream,
    /// Frames due but not yet written whole (0 almost always).
    owed: u64,
    /// How much of the first owed frame is already written.
    offset: usize,
}

/// What the writer counted.
#[derive(Default)]
struct Tally {
    /// Frames written whole inside the window.
    deliveries: u64,
    /// Writes that took less than asked, or none (EAGAIN).
    short_writes: u64,
    /// Every byte written, window or not.
    bytes: u64,
}

/// The measured run: the writer side.
fn write(args: &Args) -> Result<(), String> {
    loadkit::raise_nofile(
        args.connections as u64 + SPARE_FILES,
        &format!("{} connections", args.connections),
    )?;
    loadkit::pin_to_cpu(args.writer_cpu)?;
    let frame = frame(args.size);

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the listener non-blocking: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let child = Command::new(&exe)
        .arg("read")
        .arg("--connect")
        .arg(addr.to_string())
        .arg("--connections")
        .arg(args.connections.to_string())
        .arg("--cpu")
        .arg(args.reader_cpu.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the reader ({}): {e}", exe.display()))?;
    let mut child = ReaderProcess(child);

    let mut sockets = accept_all(&listener, args.connections, &mut child.0)?;
    drop(listener);

    let mut tally = Tally::default();
    let rate = args.rate;
    let tick_time = |k: u64| Duration::from_nanos((k as f64 * 1e9 / rate).round() as u64);
    let window_start = Duration::from_nanos((args.warmup * 1e9).round() as u64);
    let window_end = window_start + Duration::from_nanos((args.duration * 1e9).round() as u64);

    let start = Instant::now();
    let mut in_window = false;
    let mut cpu_before = Duration::ZERO;
    let mut usage_before = (Duration::ZERO, Duration::ZERO);
    let mut ticks_in_window = 0u64;
    let mut max_lag = Duration::ZERO;
    let mut k = 0u64;
    loop {
        let due = tick_time(k);
        if !in_window && due >= window_start {
            sleep_until(start + window_start);
            cpu_before = loadkit::process_cpu();
            usage_before = sys::user_and_system();
            in_window = true;
        }
        if in_window && due >= window_end {
            sleep_until(start + window_end);
            break;
        }
        sleep_until(start + due);
        if in_window {
            max_lag = max_lag.max(start.elapsed().saturating_sub(due));
            ticks_in_window += 1;
        }
        for (index, socket) in sockets.iter_mut().enumerate() {
            socket.owed += 1;
            send(socket, &frame, &mut tally, in_window)
                .map_err(|e| format!("writing to connection {}: {e}", index + 1))?;
        }
        k += 1;
    }
    let cpu = loadkit::process_cpu().saturating_sub(cpu_before);
    let usage = sys::user_and_system();
    let user = usage.0.saturating_sub(usage_before.0);
    let system = usage.1.saturating_sub(usage_before.1);
    let deliveries = tally.deliveries;

    finish(&mut sockets, &frame, &mut tally)?;
    // Closing the sockets ends the reader's streams: it reports then.
    drop(sockets);
    let read = reader_bytes(&mut child)?;
    if read != tally.bytes {
        return Err(format!(
            "the reader got {read} bytes, but {} were written",
            tally.bytes
        ));
    }

    let cpu_seconds = cpu.as_secs_f64();
    let per_delivery = (deliveries > 0).then(|| 1e6 * cpu_seconds / deliveries as f64);
    if args.json {
        println!(
            "{{\"connections\":{},\"size\":{},\"rate\":{},\"duration\":{},\"warmup\":{},\
             \"deliveries\":{},\"ticks\":{},\"cpu_seconds\":{},\"user_seconds\":{},\
             \"system_seconds\":{},\"cpu_per_delivery_us\":{},\"short_writes\":{},\
             \"frame_bytes\":{},\"bytes_written\":{},\"bytes_read\":{},\"max_lag_us\":{}}}",
            args.connections,
            args.size,
            args.rate,
            args.duration,
            args.warmup,
            deliveries,
            ticks_in_window,
            cpu_seconds,
            user.as_secs_f64(),
            system.as_secs_f64(),
            per_delivery.map_or("null".to_string(), |x| x.to_string()),
            tally.short_writes,
            frame.len(),
            tally.bytes,
            read,
            max_lag.as_micros(),
        );
    } else {
        println!(
            "| connections | payload B | frame B | frames/s each | seconds | deliveries \
             | CPU s (user, system) | CPU per delivery µs | short writes | max lag µs |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.4} ({:.4}, {:.4}) | {} | {} | {} |",
            args.connections,
            args.size,
            frame.len(),
            args.rate,
            args.duration,
            deliveries,
            cpu_seconds,
            user.as_secs_f64(),
            system.as_secs_f64(),
            per_delivery.map_or("-".to_string(), |x| format!("{x:.3}")),
            tally.short_writes,
            max_lag.as_micros(),
        );
    }
    Ok(())
}

/// Accepts `connections` sockets from the reader, TCP_NODELAY and
/// non-blocking; fails if the reader exits first or takes too long.
fn accept_all(
    listener: &TcpListener,
    connections: usize,
    child: &mut Child,
) -> Result<Vec<Socket>, String> {
    let mut sockets = Vec::with_capacity(connections);
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while sockets.len() < connections {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nodelay(true)
                    .and_then(|()| stream.set_nonblocking(true))
                    .map_err(|e| format!("cannot set up an accepted connection: {e}"))?;
                sockets.push(Socket {
                    stream,
                    owed: 0,
                    offset: 0,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the reader exited ({status}) after {} of {connections} connections",
                        sockets.len()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "only {} of {connections} connections arrived in {} s",
                        sockets.len(),
                        CONNECT_TIMEOUT.as_secs()
                    ));
                }
                sys::poll_one(
                    listener.as_raw_fd(),
                    libc::POLLIN,
                    Duration::from_millis(100),
                )
                .map_err(|e| format!("poll: {e}"))?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "accepting connection {} of {connections}: {e}",
                    sockets.len() + 1
                ));
            }
        }
    }
    Ok(sockets)
}

/// Writes what `socket` owes: one `write(2)` per frame while they go whole,
/// stopping at a short write or a full buffer (counted) to go on later.
fn send(socket: &mut Socket, frame: &[u8], tally: &mut Tally, counting: bool) -> io::Result<()> {
    while socket.owed > 0 {
        match sys::write(socket.stream.as_raw_fd(), &frame[socket.offset..]) {
            Ok(n) => {
                tally.bytes += n as u64;
                socket.offset += n;
                if socket.offset < frame.len() {
                    tally.short_writes += 1;
                    return Ok(());
                }
                socket.offset = 0;
                socket.owed -= 1;
                if counting {
                    tally.deliveries += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tally.short_writes += 1;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// After the window: writes every frame still owed, waiting for room.
fn finish(sockets: &mut [Socket], frame: &[u8], tally: &mut Tally) -> Result<(), String> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for (index, socket) in sockets.iter_mut().enumerate() {
        while socket.owed > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "connection {} still owed {} frames {} s after the window",
                    index + 1,
                    socket.owed,
                    DRAIN_TIMEOUT.as_secs()
                ));
            }
            sys::poll_one(
                socket.stream.as_raw_fd(),
                libc::POLLOUT,
                Duration::from_millis(100),
            )
            .map_err(|e| format!("poll: {e}"))?;
            send(socket, frame, tally, false)
                .map_err(|e| format!("writing to connection {}: {e}", index + 1))?;
        }
    }
    Ok(())
}

/// Waits for the reader to print its byte count and exit.
fn reader_bytes(child: &mut ReaderProcess) -> Result<u64, String> {
    let Some(mut stdout) = child.0.stdout.take() else {
        return Err("the reader's output is not connected".into());
    };
    let output = read_until_end(&mut stdout, Instant::now() + DRAIN_TIMEOUT)?;
    let status = child
        .0
        .wait()
        .map_err(|e| format!("waiting for the reader: {e}"))?;
    if !status.success() {
        return Err(format!("the reader failed ({status})"));
    }
    output.trim().parse().map_err(|_| {
        format!(
            "the reader printed {:?}, not a byte count",
            output.chars().take(200).collect::<String>()
        )
    })
}

/// Everything on the reader's stdout up to its end, or an error at
/// `deadline`.
fn read_until_end(stdout: &mut ChildStdout, deadline: Instant) -> Result<String, String> {
    let mut output = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the reader did not report within {} s of the sockets closing",
                DRAIN_TIMEOUT.as_secs()
            ));
        }
        let ready = sys::poll_one(stdout.as_raw_fd(), libc::POLLIN, left)
            .map_err(|e| format!("poll: {e}"))?;
        if !ready {
            continue;
        }
        match stdout.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the reader's output: {e}")),
        }
    }
    String::from_utf8(output).map_err(|_| "the reader's output is not text".into())
}

/// Sleeps until `deadline` (returns at once if it has passed).
fn sleep_until(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        assert_eq!(frame(0), [0x82, 0]);
        assert_eq!(&frame(64)[..2], [0x82, 64]);
        assert_eq!(frame(64).len(), 66);
        assert_eq!(&frame(125)[..2], [0x82, 125]);
        assert_eq!(&frame(126)[..4], [0x82, 126, 0, 126]);
        assert_eq!(&frame(1024)[..4], [0x82, 126, 4, 0]);
        assert_eq!(frame(1024).len(), 1028);
        assert_eq!(&frame(65535)[..4], [0x82, 126, 0xff, 0xff]);
        assert_eq!(&frame(65536)[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(frame(65536).len(), 65546);
    }

    #[test]
    fn command_lines() {
        let args = |line: &str| {
            line.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let Ok(Invocation::Write(a)) = parse(&args(
            "--connections 10 --size 1K --rate=5 --duration 2 --json",
        )) else {
            panic!("not parsed");
        };
        assert_eq!(
            (a.connections, a.size, a.warmup, a.json),
            (10, 1024, 1.0, true)
        );
        assert!(parse(&args("--connections 0 --size 1 --rate 1 --duration 1")).is_err());
        assert!(parse(&args("--connections 1 --size 1 --rate 1")).is_err());
        assert!(parse(&args("--connections 1 --size 1 --rate nan --duration 1")).is_err());
        assert!(
            parse(&args(
                "--connections 1 --size 1 --rate 1 --duration 1 --bogus 2"
            ))
            .is_err()
        );
        assert!(parse(&args("read --connect 127.0.0.1:1 --connections 2 --cpu 1")).is_ok());
        assert!(parse(&args("read --connect nowhere --connections 2 --cpu 1")).is_err());
    }
}
