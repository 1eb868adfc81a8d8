//! Where masking keys and handshake nonces come from.
//!
//! RFC 6455 section 5.3 requires each masking key to be unpredictable to anyone
//! who can see earlier ones (the point of masking is that a hostile page cannot
//! choose the bytes a proxy sees), so a client needs a cryptographically secure
//! generator. The core takes it as an injected [`MaskSource`]; tests pass a
//! deterministic one.
//!
//! [`ThreadRngMask`] (feature `os-rng`, on by default) is the default: a ChaCha12
//! stream generator per thread, seeded once from the operating system. Drawing a
//! key costs a few nanoseconds and no system call; the crate's only touch of the OS
//! is that one seed per thread.

/// A source of masking keys and handshake nonces.
pub trait MaskSource: Send {
    /// The next 4-byte masking key.
    fn next_mask(&mut self) -> [u8; 4];

    /// Fills `dst` with unpredictable bytes (the handshake's `Sec-WebSocket-Key`).
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(4) {
            let key = self.next_mask();
            chunk.copy_from_slice(&key[..chunk.len()]);
        }
    }
}

impl<M: MaskSource + ?Sized> MaskSource for Box<M> {
    fn next_mask(&mut self) -> [u8; 4] {
        (**self).next_mask()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        (**self).fill_bytes(dst)
    }
}

/// A deterministic source for tests: keys from a simple counter-based sequence
/// starting at a seed. Never use it on a real connection: its keys are predictable.
#[derive(Debug, Clone)]
pub struct SequenceMask {
    state: u64,
}

impl SequenceMask {
    /// A sequence that starts from `seed`; the same seed gives the same keys.
    pub fn new(seed: u64) -> Self {
        SequenceMask { state: seed }
    }
}

impl MaskSource for SequenceMask {
    fn next_mask(&mut self) -> [u8; 4] {
        // splitmix64: every key differs from the last, the sequence is repeatable.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let z = z ^ (z >> 31);
        (z as u32).to_ne_bytes()
    }
}

/// The same key every time: for reproducing a wire example byte for byte
/// (RFC 6455 section 5.7). Never use it on a real connection.
#[derive(Debug, Clone, Copy)]
pub struct FixedMask(pub [u8; 4]);

impl MaskSource for FixedMask {
    fn next_mask(&mut self) -> [u8; 4] {
        self.0
    }
}

#[cfg(feature = "os-rng")]
pub use self::thread_rng::ThreadRngMask;

#[cfg(feature = "os-rng")]
mod thread_rng {
    use std::cell::RefCell;

    use rand_chacha::ChaCha12Rng;
    use rand_core::{Rng, SeedableRng};

    use super::MaskSource;

    thread_local! {
        static RNG: RefCell<ChaCha12Rng> = RefCell::new(seeded());
    }

    fn seeded() -> ChaCha12Rng {
        let mut seed = [0u8; 32];
        // Without an OS random source no client can mask safely; there is no
        // sensible way to go on.
        getrandom::fill(&mut seed).expect("the operating system's random source failed");
        ChaCha12Rng::from_seed(seed)
    }

    /// The default mask source: a per-thread ChaCha12 generator seeded once from
    /// the OS. Zero-sized; every instance draws from its thread's generator.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ThreadRngMask;

    impl MaskSource for ThreadRngMask {
        fn next_mask(&mut self) -> [u8; 4] {
            RNG.with(|rng| rng.borrow_mut().next_u32().to_ne_bytes())
        }

        fn fill_bytes(&mut self, dst: &mut [u8]) {
            RNG.with(|rng| rng.borrow_mut().fill_bytes(dst))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_is_repeatable_and_varies() {
        let a: Vec<_> = {
            let mut m = SequenceMask::new(7);
            (0..4).map(|_| m.next_mask()).collect()
        };
        let b: Vec<_> = {
            let mut m = SequenceMask::new(7);
            (0..4).map(|_| m.next_mask()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    #[cfg(feature = "os-rng")]
    #[test]
    fn thread_rng_keys_differ() {
        let mut m = ThreadRngMask;
        let keys: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| m.next_mask()).collect();
        // 1000 draws of 32 random bits: a repeat is a one-in-ten-thousand event.
        assert!(keys.len() >= 999);
        let mut nonce = [0u8; 16];
        m.fill_bytes(&mut nonce);
        assert_ne!(nonce, [0u8; 16]);
    }
}
