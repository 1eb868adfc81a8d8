//! The few system calls `floor` makes through libc: file limits, CPU
//! affinity, CPU time, and the raw `write(2)`, `read(2)` and `poll(2)`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, and fails if
/// `needed` descriptors still do not fit.
pub fn raise_nofile(needed: u64, what: &str) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            io::Error::last_os_error()
        ));
    }
    let hard = limit.rlim_max;
    if hard != libc::RLIM_INFINITY && hard < needed {
        return Err(format!(
            "{what} need {needed} open files, but this process may hold at most {hard} \
             (the hard RLIMIT_NOFILE); use fewer connections or raise the hard limit"
        ));
    }
    // An infinite hard limit cannot be the soft one for descriptors (the
    // kernel caps it at fs.nr_open): ask for what is needed instead.
    let wanted = if hard == libc::RLIM_INFINITY {
        needed.max(limit.rlim_cur)
    } else {
        hard
    };
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: `limit` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(format!(
                "cannot raise the open-file limit to {wanted} for {what}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Pins the calling process (its one thread) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // CPU_SET indexes a fixed-size mask: check the number first.
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(format!("CPU {cpu} is out of range (at most {})", max - 1));
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET stays within
    // it (checked above); sched_setaffinity reads exactly size_of the set.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        return Err(format!(
            "cannot pin to CPU {cpu}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// CPU time used by this process so far, user and system together
/// (CLOCK_PROCESS_CPUTIME_ID, nanosecond resolution).
pub fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

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
