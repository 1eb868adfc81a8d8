//! Abuse limits per client address, checked before any upgrade: WebSocket
//! connections open at once (`limits.max_connections_per_ip`) and
//! handshakes a second (`limits.handshakes_per_second_per_ip`, in bursts of
//! `limits.handshake_burst_per_ip`).
//!
//! The address is the client's as [`ClientAddr`](crate::forwarded::ClientAddr)
//! resolves it (through trusted proxies only). IPv4 addresses count one by
//! one; IPv6 addresses count by their /64 network, the block one host or one
//! subscriber usually holds whole (counting each /128 would let one machine
//! take as many slots as it has addresses); an IPv4-mapped IPv6 address
//! counts as its IPv4 address.
//!
//! One table holds the counts and buckets, behind one lock taken once per
//! admission and once when a connection ends. An entry goes as soon as it
//! holds no connection and its bucket is full again (when the connection
//! ends, or at a sweep); the table holds at most [`MAX_TRACKED_IPS`] entries,
//! and a new address over that is refused until entries go. A connection's
//! slot is a [`ConnectionSlot`] its task holds: dropping it (the connection
//! ended, the upgrade failed, a later check refused it) gives the slot back.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;
use crate::limits::TokenBucket;

/// The most client addresses (IPv4 addresses and IPv6 /64 networks) tracked
/// at once: about 100 bytes each, so 10 MB at most.
pub const MAX_TRACKED_IPS: usize = 100_000;
/// The `Retry-After` of a refusal for the connection count: a connection
/// may end any time, so a guess.
pub const CONNECTIONS_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often entries that hold nothing are swept out even below the cap.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The settings of an [`IpLimits`] table; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimitSettings {
    /// WebSocket connections one address may hold open.
    pub max_connections: u32,
    /// Handshakes a second one address may make on average.
    pub handshakes_per_second: u32,
    /// Handshakes one address may make at once.
    pub handshake_burst: u32,
    /// The most addresses tracked at once.
    pub max_tracked: usize,
}

impl IpLimitSettings {
    /// The settings of `[limits]` (a burst of 0 is one second's rate).
    pub fn from_config(limits: &LimitsConfig) -> Self {
        let burst = if limits.handshake_burst_per_ip == 0 {
            limits.handshakes_per_second_per_ip
        } else {
            limits.handshake_burst_per_ip
        };
        IpLimitSettings {
            max_connections: limits.max_connections_per_ip,
            handshakes_per_second: limits.handshakes_per_second_per_ip,
            handshake_burst: burst,
            max_tracked: MAX_TRACKED_IPS,
        }
    }

    /// Whether any limit is on.
    pub fn enabled(&self) -> bool {
        self.max_connections > 0 || self.handshakes_per_second > 0
    }
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    /// Over the handshake rate: the next one is possible after `retry_after`.
    Rate {
        /// `limits.handshakes_per_second_per_ip`.
        limit: u32,
        /// Until the bucket has a token again.
        retry_after: Duration,
    },
    /// Over the connections open at once.
    Connections {
        /// `limits.max_connections_per_ip`.
        limit: u32,
    },
    /// The table is full of other addresses.
    Tracked {
        /// [`IpLimitSettings::max_tracked`].
        limit: usize,
    },
}

impl IpRefusal {
    /// Every refusal's label, in the order of [`IpRefusal::index`].
    pub const LABELS: [&'static str; 3] = ["rate", "connections", "tracked"];

    /// The label of `duplex_refused_handshakes_total{reason=...}`.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// The position of the label in [`IpRefusal::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            IpRefusal::Rate { .. } => 0,
            IpRefusal::Connections { .. } => 1,
            IpRefusal::Tracked { .. } => 2,
        }
    }

    /// The `Retry-After` value, in whole seconds rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            IpRefusal::Rate { retry_after, .. } => whole_seconds(*retry_after),
            IpRefusal::Connections { .. } => whole_seconds(CONNECTIONS_RETRY_AFTER),
            IpRefusal::Tracked { .. } => 1,
        }
    }
}

impl fmt::Display for IpRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpRefusal::Rate { limit, .. } => write!(
                f,
                "too many handshakes from this address: over {limit} per second \
                 (limits.handshakes_per_second_per_ip = {limit})"
            ),
            IpRefusal::Connections { limit } => write!(
                f,
                "too many connections from this address: {limit} open \
                 (limits.max_connections_per_ip = {limit})"
            ),
            IpRefusal::Tracked { limit } => write!(
                f,
                "too many client addresses at once: {limit} tracked, try again later"
            ),
        }
    }
}

/// A duration in whole seconds, rounded up, at least 1.
pub fn whole_seconds(duration: Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

/// The key an address counts under: itself for IPv4 (and IPv4-mapped IPv6),
/// its /64 network for IPv6.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[derive(Debug)]
struct Entry {
    connections: u32,
    bucket: Option<TokenBucket>,
}

impl Entry {
    fn idle(&self, now: Instant) -> bool {
        self.connections == 0 && self.bucket.as_ref().is_none_or(|b| b.is_full(now))
    }
}

#[derive(Debug)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    last_sweep: Instant,
}

impl Table {
    fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, entry| !entry.idle(now));
        self.last_sweep = now;
    }
}

/// The counts and handshake buckets of every client address.
#[derive(Debug)]
pub struct IpLimits {
    settings: IpLimitSettings,
    table: Mutex<Table>,
    tracked: AtomicU64,
    refused: [AtomicU64; IpRefusal::LABELS.len()],
}

/// One connection's slot in its address's count: dropping it gives the slot
/// back.
#[must_use = "the slot is given back when it is dropped"]
pub struct ConnectionSlot {
    limits: Arc<IpLimits>,
    key: IpAddr,
}

impl fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.release(self.key, Instant::now());
    }
}

impl IpLimits {
    /// An empty table.
    pub fn new(settings: IpLimitSettings, now: Instant) -> Arc<Self> {
        Arc::new(IpLimits {
            settings,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                last_sweep: now,
            }),
            tracked: AtomicU64::new(0),
            refused: Default::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &IpLimitSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing under the lock panics; a poisoned table is still whole.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one handshake from `ip` at `now`: takes a token of its bucket,
    /// then a connection slot (`None` while the connection count is off).
    ///
    /// # Errors
    ///
    /// The limit the handshake is over; the refusal is counted.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<ConnectionSlot>, IpRefusal> {
        let s = self.settings;
        if !s.enabled() {
            return Ok(None);
        }
        let key = ip_key(ip);
        let result = {
            let mut table = self.lock();
            if now.saturating_duration_since(table.last_sweep) >= SWEEP_EVERY {
                table.sweep(now);
            }
            if !table.entries.contains_key(&key) && table.entries.len() >= s.max_tracked {
                table.sweep(now);
            }
            let result = if !table.entries.contains_key(&key)
                && table.entries.len() >= s.max_tracked
            {
                Err(IpRefusal::Tracked {
                    limit: s.max_tracked,
                })
            } else {
                let entry = table.entries.entry(key).or_insert_with(|| Entry {
                    connections: 0,
                    bucket: (s.handshakes_per_second > 0)
                        .then(|| TokenBucket::new(s.handshakes_per_second, s.handshake_burst, now)),
                });
                let over_rate = entry.bucket.as_mut().and_then(|bucket| {
                    (!bucket.take(now)).then(|| IpRefusal::Rate {
                        limit: s.handshakes_per_second,
                        retry_after: bucket.retry_after(),
                    })
                });
                match over_rate {
                    Some(refusal) => Err(refusal),
                    None if s.max_connections == 0 => Ok(false),
                    None if entry.connections >= s.max_connections => Err(IpRefusal::Connections {
                        limit: s.max_connections,
                    }),
                    None => {
                        entry.connections += 1;
                        Ok(true)
                    }
                }
            };
            self.tracked
                .store(table.entries.len() as u64, Ordering::Relaxed);
            result
        };
        match result {
            Ok(true) => Ok(Some(ConnectionSlot {
                limits: self.clone(),
                key,
            })),
            Ok(false) => Ok(None),
            Err(refusal) => {
                self.refused[refusal.index()].fetch_add(1, Ordering::Relaxed);
                Err(refusal)
            }
        }
    }

    fn release(&self, key: IpAddr, now: Instant) {
        let mut table = self.lock();
        if let Some(entry) = table.entries.get_mut(&key) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.idle(now) {
                table.entries.remove(&key);
            }
        }
        self.tracked
            .store(table.entries.len() as u64, Ordering::Relaxed);
    }

    /// Removes, at `now`, every entry that holds no connection and whose
    /// bucket is full again (admissions also do, every few seconds and when
    /// the table is full).
    pub fn sweep(&self, now: Instant) {
        let mut table = self.lock();
        table.sweep(now);
        self.tracked
            .store(table.entries.len() as u64, Ordering::Relaxed);
    }

    /// The connections open from `ip` (its /64 for IPv6).
    pub fn connections(&self, ip: IpAddr) -> u32 {
        self.lock()
            .entries
            .get(&ip_key(ip))
            .map_or(0, |entry| entry.connections)
    }

    /// The addresses tracked now.
    pub fn tracked(&self) -> u64 {
        self.tracked.load(Ordering::Relaxed)
    }

    /// The handshakes refused so far for `label` (see [`IpRefusal::LABELS`]).
    pub fn refused(&self, label: &str) -> u64 {
        IpRefusal::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Appends the table's Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP duplex_refused_handshakes_total WebSocket handshakes refused for a \
             limit per client address, by limit.\n\
             # TYPE duplex_refused_handshakes_total counter"
        );
        for (label, count) in IpRefusal::LABELS.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "duplex_refused_handshakes_total{{reason=\"{label}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP duplex_tracked_client_ips Client addresses (IPv6: /64 networks) \
             tracked for the limits per address.\n\
             # TYPE duplex_tracked_client_ips gauge\n\
             duplex_tracked_client_ips {}",
            self.tracked()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn settings(max_connections: u32, rate: u32, burst: u32) -> IpLimitSettings {
        IpLimitSettings {
            max_connections,
            handshakes_per_second: rate,
            handshake_burst: burst,
            max_tracked: 4,
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn off_tracks_nothing() {
        let now = Instant::now();
        let limits = IpLimits::new(settings(0, 0, 0), now);
        for _ in 0..1000 {
            assert!(limits.admit(v4(1), now).unwrap().is_none());
        }
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn connections_count_and_release_on_drop() {
        let now = Instant::now();
        let limits = IpLimits::new(settings(3, 0, 0), now);
        let mut slots: Vec<_> = (0..3)
            .map(|_| limits.admit(v4(1), now).unwrap().unwrap())
            .collect();
        assert_eq!(limits.connections(v4(1)), 3);
        assert_eq!(
            limits.admit(v4(1), now).unwrap_err(),
            IpRefusal::Connections { limit: 3 }
        );
        // Another address has its own count.
        let other = limits.admit(v4(2), now).unwrap().unwrap();
        assert_eq!(limits.tracked(), 2);
        drop(slots.pop());
        assert_eq!(limits.connections(v4(1)), 2);
        let again = limits.admit(v4(1), now).unwrap().unwrap();
        assert_eq!(limits.connections(v4(1)), 3);
        drop(again);
        drop(other);
        // The entry of v4(2) holds nothing any more: gone at once.
        assert_eq!(limits.connections(v4(2)), 0);
        assert_eq!(limits.tracked(), 1);
        assert_eq!(limits.refused("connections"), 1);
    }

    #[test]
    fn rate_burst_and_retry_after() {
        let start = Instant::now();
        let limits = IpLimits::new(settings(0, 2, 4), start);
        for _ in 0..4 {
            assert!(limits.admit(v4(1), start).is_ok());
        }
        let refusal = limits.admit(v4(1), start).unwrap_err();
        let IpRefusal::Rate { limit, retry_after } = refusal else {
            panic!("{refusal:?}");
        };
        assert_eq!(limit, 2);
        // 2 a second: the next token in half a second, said as 1 s.
        assert!(
            (retry_after.as_secs_f64() - 0.5).abs() < 1e-6,
            "{retry_after:?}"
        );
        assert_eq!(refusal.retry_after_secs(), 1);
        assert!(
            limits
                .admit(v4(1), start + Duration::from_millis(400))
                .is_err()
        );
        assert!(
            limits
                .admit(v4(1), start + Duration::from_millis(510))
                .is_ok()
        );
        // Another address has its own bucket.
        assert!(limits.admit(v4(2), start).is_ok());
        assert_eq!(limits.refused("rate"), 2);
        assert!(
            refusal
                .to_string()
                .contains("handshakes_per_second_per_ip = 2")
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2999)), 3);
        let connections = IpRefusal::Connections { limit: 1 };
        assert_eq!(connections.retry_after_secs(), 5);
    }

    #[test]
    fn a_refused_rate_takes_no_slot() {
        let now = Instant::now();
        let limits = IpLimits::new(settings(10, 1, 1), now);
        let slot = limits.admit(v4(1), now).unwrap();
        assert!(slot.is_some());
        assert!(limits.admit(v4(1), now).is_err());
        assert_eq!(limits.connections(v4(1)), 1);
    }

    #[test]
    fn cleanup_when_the_bucket_is_full_again() {
        let start = Instant::now();
        let limits = IpLimits::new(settings(0, 1, 2), start);
        assert!(limits.admit(v4(1), start).is_ok());
        assert_eq!(limits.tracked(), 1);
        // Half refilled: kept.
        limits.sweep(start + Duration::from_millis(500));
        assert_eq!(limits.tracked(), 1);
        // Full again: removed.
        limits.sweep(start + Duration::from_secs(1));
        assert_eq!(limits.tracked(), 0);
        // Admissions sweep too, every few seconds.
        assert!(limits.admit(v4(1), start).is_ok());
        assert!(
            limits
                .admit(v4(2), start + Duration::from_secs(1) + SWEEP_EVERY)
                .is_ok()
        );
        assert_eq!(limits.tracked(), 1);
    }

    #[test]
    fn the_cap_on_entries() {
        let start = Instant::now();
        let limits = IpLimits::new(settings(0, 1, 1), start);
        for i in 0..4 {
            assert!(limits.admit(v4(i), start).is_ok());
        }
        let refusal = limits.admit(v4(9), start).unwrap_err();
        assert_eq!(refusal, IpRefusal::Tracked { limit: 4 });
        // A known address still gets its own answer.
        assert!(matches!(
            limits.admit(v4(0), start),
            Err(IpRefusal::Rate { .. })
        ));
        // Once the entries hold nothing, a new address gets in.
        assert!(limits.admit(v4(9), start + Duration::from_secs(1)).is_ok());
        assert_eq!(limits.tracked(), 1);
        assert_eq!(limits.refused("tracked"), 1);
    }

    #[test]
    fn held_connections_are_not_swept() {
        let start = Instant::now();
        let limits = IpLimits::new(settings(2, 1, 1), start);
        let slot = limits.admit(v4(1), start).unwrap();
        limits.sweep(start + Duration::from_secs(60));
        assert_eq!(limits.connections(v4(1)), 1);
        drop(slot);
        limits.sweep(start + Duration::from_secs(61));
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_by_64() {
        let now = Instant::now();
        let limits = IpLimits::new(settings(2, 0, 0), now);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _one = limits.admit(a, now).unwrap();
        let _two = limits.admit(b, now).unwrap();
        assert!(limits.admit(a, now).is_err(), "the same /64");
        assert!(limits.admit(c, now).unwrap().is_some(), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(mapped), v4(1));
    }

    #[test]
    fn a_storm_from_many_threads_keeps_exact_counts() {
        let now = Instant::now();
        let limits = IpLimits::new(
            IpLimitSettings {
                max_connections: 10_000,
                handshakes_per_second: 1_000_000,
                handshake_burst: 1_000_000,
                max_tracked: MAX_TRACKED_IPS,
            },
            now,
        );
        let started = Instant::now();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let limits = limits.clone();
                std::thread::spawn(move || {
                    // 2,500 handshakes each: half from one address, half from
                    // as many addresses.
                    (0..2_500u16)
                        .map(|i| {
                            let ip = if i % 2 == 0 {
                                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
                            } else {
                                let [hi, lo] = i.to_be_bytes();
                                IpAddr::V4(Ipv4Addr::new(10, t + 1, hi, lo))
                            };
                            limits.admit(ip, now).unwrap().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let slots: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        eprintln!("10,000 admissions on 4 threads: {:?}", started.elapsed());
        assert_eq!(limits.connections(v4(1)), 5_000);
        assert_eq!(limits.tracked(), 5_001);
        drop(slots);
        assert_eq!(limits.connections(v4(1)), 0);
        limits.sweep(now + Duration::from_secs(1));
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn metrics_text() {
        let now = Instant::now();
        let limits = IpLimits::new(settings(1, 0, 0), now);
        let _slot = limits.admit(v4(1), now).unwrap();
        assert!(limits.admit(v4(1), now).is_err());
        let mut out = String::new();
        limits.render(&mut out);
        assert!(out.contains("duplex_refused_handshakes_total{reason=\"connections\"} 1\n"));
        assert!(out.contains("duplex_refused_handshakes_total{reason=\"rate\"} 0\n"));
        assert!(out.contains("duplex_tracked_client_ips 1\n"));
    }
}
