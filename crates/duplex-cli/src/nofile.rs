//! The open-file limit: servers and load generators hold a descriptor per
//! connection, and the usual soft limit of 1,024 would cap them far below
//! what the machine can serve.
//!
//! One file for every user: the `duplex` binary (`src/main.rs`), its
//! connection tests (`tests/connections.rs`) and the bench tools
//! (`bench/loadkit`) include it as a module.

use std::io;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children
/// inherit it), and returns the soft limit it leaves. Fails, saying that
/// `what` needs `needed` descriptors, if they cannot fit under the hard
/// limit, and when the limit cannot be read or raised.
///
/// An unlimited hard limit cannot be the soft one for descriptors (the
/// kernel caps it at `fs.nr_open`): then the soft limit is raised to
/// `needed` if it is lower.
pub fn raise_nofile(needed: u64, what: &str) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    #[allow(unsafe_code)]
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if read != 0 {
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
    let wanted = if hard == libc::RLIM_INFINITY {
        needed.max(limit.rlim_cur)
    } else {
        hard
    };
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: `limit` is a valid rlimit for setrlimit to read.
        #[allow(unsafe_code)]
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if set != 0 {
            return Err(format!(
                "cannot raise the open-file limit to {wanted} for {what}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(limit.rlim_cur)
}
