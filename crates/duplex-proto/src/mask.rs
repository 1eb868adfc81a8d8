//! Masking and unmasking of frame payloads (RFC 6455 section 5.3).
//!
//! Masking is an XOR of the payload with a repeating 4-byte key. It is the one
//! operation every client frame pays for on both ends, so the long-payload path
//! works on 64-byte blocks of 64-bit words, which the compiler turns into SIMD
//! loads and stores (AVX-512 or AVX2 where the CPU has it, found at run time);
//! only the last few bytes are handled one at a time.

/// XORs `buf` in place with the 4-byte `key`, starting at key byte 0.
///
/// Applying the same key twice gives back the original bytes.
///
/// ```
/// use duplex_proto::mask::apply_mask;
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_at(buf, key, 0);
}

/// XORs `buf` in place with `key`, as if `buf` started `offset` bytes into a
/// payload masked from its first byte.
///
/// This is what lets a payload that arrives in several reads be unmasked piece by
/// piece: each piece is unmasked with the offset of its first byte.
///
/// ```
/// use duplex_proto::mask::{apply_mask, apply_mask_at};
/// let key = [1, 2, 3, 4];
/// let mut whole = *b"split anywhere";
/// let mut pieces = whole;
/// apply_mask(&mut whole, key);
/// let (a, b) = pieces.split_at_mut(5);
/// apply_mask_at(a, key, 0);
/// apply_mask_at(b, key, 5);
/// assert_eq!(whole, pieces);
/// ```
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= SIMD_MIN {
        if std::is_x86_feature_detected!("avx512f") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX-512F, as checked on the line above.
            unsafe {
                xor_avx512(buf, key);
            }
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2, as checked on the line above.
            unsafe {
                xor_avx2(buf, key);
            }
            return;
        }
    }
    xor_key(buf, key);
}

/// Payloads shorter than this are not worth the wider paths' set-up.
#[cfg(target_arch = "x86_64")]
const SIMD_MIN: usize = 128;

/// XORs `buf` with `key` from key byte 0, 64 bytes per AVX-512 operation.
///
/// # Safety
///
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn xor_avx512(buf: &mut [u8], key: [u8; 4]) {
    use std::arch::x86_64::{
        _mm512_loadu_si512, _mm512_set1_epi32, _mm512_storeu_si512, _mm512_xor_si512,
    };

    let mask = _mm512_set1_epi32(i32::from_ne_bytes(key));
    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        let at = block.as_mut_ptr().cast();
        // SAFETY: `block` is 64 bytes, the width of one unaligned load and
        // store, and nothing else refers to it meanwhile.
        unsafe { _mm512_storeu_si512(at, _mm512_xor_si512(_mm512_loadu_si512(at), mask)) };
    }
    // 64 is a multiple of 4: the key is still in phase for the rest.
    xor_key(blocks.into_remainder(), key);
}

/// [`xor_key`] compiled for AVX2: the same loop, vectorised 32 bytes at a time.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn xor_avx2(buf: &mut [u8], key: [u8; 4]) {
    xor_key(buf, key);
}

/// XORs `buf` with `key` from key byte 0.
#[inline(always)]
fn xor_key(buf: &mut [u8], key: [u8; 4]) {
    let word32 = u32::from_ne_bytes(key);
    let word = u64::from(word32) | (u64::from(word32) << 32);

    // 64-byte blocks: the compiler vectorises this loop (SSE2 on every x86_64,
    // AVX2 in `xor_avx2`, wider where the target allows). Block and word sizes
    // are multiples of 4, so the key stays in phase from one word to the next.
    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        xor_words(block, word);
    }
    let mut words = blocks.into_remainder().chunks_exact_mut(8);
    for w in &mut words {
        xor_word(w, word);
    }
    // The last 0 to 7 bytes: a 4-byte word if there is one, then single bytes
    // (the key is back in phase after 4 bytes).
    let mut last = words.into_remainder();
    if last.len() >= 4 {
        let (four, rest) = last.split_at_mut(4);
        xor_word32(four, word32);
        last = rest;
    }
    for (byte, k) in last.iter_mut().zip(key) {
        *byte ^= k;
    }
}

#[inline(always)]
fn xor_words(block: &mut [u8], word: u64) {
    for w in block.chunks_exact_mut(8) {
        xor_word(w, word);
    }
}

#[inline(always)]
fn xor_word(w: &mut [u8], word: u64) {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(w);
    w.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
}

#[inline(always)]
fn xor_word32(w: &mut [u8], word: u32) {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(w);
    w.copy_from_slice(&(u32::from_ne_bytes(bytes) ^ word).to_ne_bytes());
}

/// The key as seen from `offset` bytes into the payload: its bytes turned
/// left by `offset % 4`, as one 32-bit rotation.
#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let bits = 8 * (offset % 4) as u32;
    let word = u32::from_le_bytes(key).rotate_right(bits);
    word.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn the_portable_path_matches_the_definition_where_the_cpu_would_take_avx2() {
        // `apply_mask_at` takes AVX2 for long payloads wherever the CPU has
        // it, so the portable loop is checked here on its own.
        let key = [0x01, 0x80, 0x7f, 0xff];
        for len in [128, 129, 191, 4096, 16_411] {
            let original: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let mut fast = original.clone();
            let mut slow = original;
            xor_key(&mut fast, key);
            naive(&mut slow, key, 0);
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn every_path_the_cpu_has_matches_the_definition() {
        let key = [0x9c, 0x00, 0x41, 0xee];
        for len in [128, 129, 191, 4096, 16_411] {
            let original: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut expected = original.clone();
            naive(&mut expected, key, 0);
            if std::is_x86_feature_detected!("avx2") {
                let mut data = original.clone();
                // SAFETY: the CPU has AVX2.
                unsafe { xor_avx2(&mut data, key) };
                assert_eq!(data, expected, "AVX2, len {len}");
            }
            if std::is_x86_feature_detected!("avx512f") {
                let mut data = original.clone();
                // SAFETY: the CPU has AVX-512F.
                unsafe { xor_avx512(&mut data, key) };
                assert_eq!(data, expected, "AVX-512, len {len}");
            }
        }
    }

    #[test]
    fn matches_the_byte_at_a_time_definition() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in [
            0, 1, 3, 4, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200, 1000, 16_411,
        ] {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask_at(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn unaligned_slices_are_masked_correctly() {
        let key = [1, 2, 4, 8];
        let mut storage = vec![0u8; 300];
        for start in 0..9 {
            let slice = &mut storage[start..start + 250];
            slice.fill(0);
            apply_mask(slice, key);
            for (i, b) in slice.iter().enumerate() {
                assert_eq!(*b, key[i % 4]);
            }
        }
    }

    #[test]
    fn masking_twice_is_the_identity() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let original: Vec<u8> = (0..4099u32).map(|i| (i % 251) as u8).collect();
        let mut data = original.clone();
        apply_mask(&mut data, key);
        assert_ne!(data, original);
        apply_mask(&mut data, key);
        assert_eq!(data, original);
    }
}
