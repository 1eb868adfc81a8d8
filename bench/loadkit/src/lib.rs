//! What the bench tools (`floor`, `pusher-load`, `crowd`) share: the
//! open-file limit, CPU pinning and CPU time through libc, and the command
//! line's sizes and counts.

use std::io;
use std::time::Duration;

// The open-file limit: the one implementation the `duplex` binary uses too.
#[path = "../../../crates/duplex-cli/src/nofile.rs"]
mod nofile;
pub use nofile::raise_nofile;

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

/// A positive count.
pub fn count(name: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("--{name} {text:?} is not a positive whole number")),
    }
}

/// A finite number above zero (or, with `zero`, at least zero).
pub fn number(name: &str, text: &str, zero: bool) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && (x > 0.0 || (zero && x == 0.0)) => Ok(x),
        _ if zero => Err(format!("--{name} {text:?} is not a number of at least 0")),
        _ => Err(format!("--{name} {text:?} is not a number above 0")),
    }
}

/// A byte count, with an optional K, M or G (powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 64, 1K, 16K)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown size unit {other:?}; use K, M or G")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A command line of `--name VALUE`, `--name=VALUE` and bare switches, in
/// any order, each at most once.
#[derive(Debug)]
pub struct Flags(Vec<(String, Option<String>)>);

impl Flags {
    /// Reads `args`, where `known` names the options that take a value and
    /// `switches` those that take none; `None` for `-h` or `--help`.
    pub fn parse(
        args: &[String],
        known: &[&str],
        switches: &[&str],
    ) -> Result<Option<Flags>, String> {
        let mut flags: Vec<(String, Option<String>)> = Vec::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None if switches.contains(&name) => (name.to_string(), None),
                None if !known.contains(&name) => return Err(format!("unknown option --{name}")),
                None => match rest.next() {
                    Some(value) => (name.to_string(), Some(value.clone())),
                    None => return Err(format!("--{name} needs a value")),
                },
            };
            if !known.contains(&name.as_str()) && !switches.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            if switches.contains(&name.as_str()) && value.is_some() {
                return Err(format!("--{name} takes no value"));
            }
            if flags.iter().any(|(seen, _)| *seen == name) {
                return Err(format!("--{name} given twice"));
            }
            flags.push((name, value));
        }
        Ok(Some(Flags(flags)))
    }

    /// The value of `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(seen, _)| seen == name)
            .and_then(|(_, value)| value.as_deref())
    }

    /// The value of `--name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.value(name)
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// Whether the switch `--name` is given.
    pub fn switch(&self, name: &str) -> bool {
        self.0.iter().any(|(seen, _)| seen == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("16kib"), Ok(16 << 10));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("K").is_err());
        assert_eq!(count("n", "3"), Ok(3));
        assert!(count("n", "0").is_err());
        assert!(count("n", "-1").is_err());
    }

    #[test]
    fn flags() {
        let args = |line: &str| {
            line.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let parse = |line: &str| Flags::parse(&args(line), &["size", "rate"], &["json"]);
        let flags = parse("--size 1K --rate=5 --json").unwrap().unwrap();
        assert_eq!(flags.value("size"), Some("1K"));
        assert_eq!(flags.required("rate"), Ok("5"));
        assert!(flags.switch("json"));
        assert!(flags.required("warmup").is_err());
        assert!(parse("--help").unwrap().is_none());
        assert!(parse("--size").is_err());
        assert!(parse("--size 1 --size 2").is_err());
        assert!(parse("--json=yes").is_err());
        assert!(parse("--bogus 2").is_err());
        assert!(parse("size").is_err());
    }
}
