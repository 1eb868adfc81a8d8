//! `floor read`: the other end of the writer's sockets, in a process of its
//! own (a process here may hold only so many descriptors, and the readers'
//! work must not count as the writer's).
//!
//! It pins itself to its CPU, connects its sockets one after the other, and
//! drains them with epoll (level-triggered, one `read(2)` per ready socket per
//! wakeup, into one small buffer), counting bytes. When every socket has
//! reached its end it prints the byte count on stdout and exits.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys;

/// What `floor read` was told.
pub struct ReadArgs {
    /// The writer's listening address.
    pub connect: SocketAddr,
    /// How many sockets to connect.
    pub connections: usize,
    /// The CPU to pin the reader to.
    pub cpu: usize,
}

/// Bytes read per `read(2)`.
const BUFFER: usize = 16 * 1024;

/// Epoll events handled per `epoll_wait`.
const EVENTS: usize = 1024;

/// Connects, drains every socket to its end, and prints the bytes read.
pub fn run(args: &ReadArgs) -> Result<(), String> {
    loadkit::raise_nofile(args.connections as u64 + 64, "the reader's connections")?;
    loadkit::pin_to_cpu(args.cpu)?;

    let mut sockets = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let stream = TcpStream::connect(args.connect)
            .map_err(|e| format!("connection {} to {}: {e}", i + 1, args.connect))?;
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("connection {}: cannot make it non-blocking: {e}", i + 1))?;
        sockets.push(Some(stream));
    }

    // SAFETY: epoll_create1 has no memory arguments.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
    }
    // SAFETY: `epoll` is a descriptor just opened and owned by nothing else.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    for (index, socket) in sockets.iter().enumerate() {
        let Some(stream) = socket else { continue };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: index as u64,
        };
        // SAFETY: both descriptors are open; `event` is valid.
        let added = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                stream.as_raw_fd(),
                &mut event,
            )
        };
        if added != 0 {
            return Err(format!("epoll_ctl: {}", io::Error::last_os_error()));
        }
    }

    let mut buffer = vec![0u8; BUFFER];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut open = sockets.len();
    let mut bytes: u64 = 0;
    while open > 0 {
        // SAFETY: `events` has room for EVENTS entries.
        let ready = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                -1,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {error}"));
        }
        for event in &events[..ready as usize] {
            let index = event.u64 as usize;
            let Some(stream) = sockets.get(index).and_then(Option::as_ref) else {
                continue;
            };
            match sys::read(stream.as_raw_fd(), &mut buffer) {
                Ok(0) => {
                    // The writer closed it after its last frame; closing
                    // the socket takes it out of the epoll set.
                    sockets[index] = None;
                    open -= 1;
                }
                Ok(n) => bytes += n as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("reading connection {}: {e}", index + 1)),
            }
        }
    }

    let mut stdout = io::stdout();
    writeln!(stdout, "{bytes}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot report the byte count: {e}"))
}
