//! The two system calls `pusher-load` makes through libc: the open-file
//! limit and the process's CPU time.

use std::io;
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
             (the hard RLIMIT_NOFILE); use fewer subscribers or raise the hard limit"
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

/// CPU time used by this process so far, user and system together
/// (CLOCK_PROCESS_CPUTIME_ID); zero if the clock cannot be read.
pub fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
