//! Which Redis of several holds a channel (or document): a jump consistent
//! hash of the FNV-1a hash of its name, stable across nodes and restarts.

/// FNV-1a, 64 bits: a stable hash of a channel name.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash (Lamping and Veach): a bucket in `0..buckets` for
/// `key`, that moves for the fewest keys when a bucket is added.
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The shard of `channel` among `shards`.
pub fn shard_of(channel: &str, shards: usize) -> usize {
    jump_hash(fnv1a(channel), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_spread_over_shards_stably() {
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[shard_of(&format!("chat:room-{i}"), 3)] += 1;
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
        assert_eq!(shard_of("chat:lobby", 1), 0);
        // The same name, the same shard, in every process.
        assert_eq!(shard_of("chat:lobby", 2), shard_of("chat:lobby", 2));
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        // Adding a shard moves about a third of the channels, to it.
        let moved = (0..3000)
            .filter(|i| {
                let name = format!("chat:room-{i}");
                let (before, after) = (shard_of(&name, 2), shard_of(&name, 3));
                assert!(before == after || after == 2);
                before != after
            })
            .count();
        assert!((800..1200).contains(&moved), "{moved}");
    }
}
