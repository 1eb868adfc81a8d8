//! The few system calls `floor` makes through libc besides the shared
//! ones (loadkit): CPU time by kind, and the raw `write(2)`, `read(2)` and
//! `poll(2)`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// User and system CPU time used by this process so far (getrusage).
pub fn user_and_system() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is valid for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, 1000 * t.tv_usec as u32);
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// One `write(2)` of `buf` to `fd`: the bytes written, or the error
/// (`WouldBlock` when a non-blocking socket's buffer is full).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let written = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(written as usize)
    }
}

/// One `read(2)` from `fd` into `buf`: the bytes read (0 at the end of the
/// stream), or the error.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let read = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if read < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(read as usize)
    }
}

/// Waits up to `timeout` for `fd` to have `events` (POLLIN, POLLOUT...);
/// true if it has.
pub fn poll_one(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut entry = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `entry` is one valid pollfd.
    let ready = unsafe { libc::poll(&mut entry, 1, millis) };
    match ready {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            }
        }
    }
}
