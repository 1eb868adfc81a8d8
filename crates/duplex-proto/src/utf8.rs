//! Incremental UTF-8 validation, and the text type that carries its result.
//!
//! A text message may arrive in many frames, and each frame in many reads; a code
//! point may be split across any of them. [`Utf8Validator`] takes the bytes as they
//! come and fails as soon as a byte cannot be part of valid UTF-8, so a peer that
//! sends a gigabyte of text with a bad byte at the start is stopped at the start
//! (RFC 6455 section 8.1: an endpoint MUST _Fail the WebSocket Connection_ when text
//! is not valid UTF-8).

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// The input is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Checks that `bytes` is UTF-8, using the SIMD fast path.
pub fn validate(bytes: &[u8]) -> Result<(), InvalidUtf8> {
    simdutf8::basic::from_utf8(bytes)
        .map(|_| ())
        .map_err(|_| InvalidUtf8)
}

/// Validates UTF-8 that arrives in pieces.
///
/// Feed each piece with [`feed`](Self::feed); it fails at the first piece holding a
/// byte that cannot continue valid UTF-8. A piece may end inside a code point: the
/// at most three bytes of it are kept until the next piece completes it.
/// [`finish`](Self::finish) says whether the whole input ended on a code point
/// boundary.
///
/// ```
/// use duplex_proto::utf8::Utf8Validator;
/// let euro = "€".as_bytes(); // e2 82 ac
/// let mut v = Utf8Validator::new();
/// v.feed(&euro[..1]).unwrap();
/// assert!(v.is_incomplete());
/// v.feed(&euro[1..]).unwrap();
/// v.finish().unwrap();
///
/// let mut v = Utf8Validator::new();
/// assert!(v.feed(&[0xe2, 0x28]).is_err()); // 0x28 cannot continue a sequence
/// ```
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of the input.
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Whether the input so far ends inside a code point.
    pub fn is_incomplete(&self) -> bool {
        self.pending_len > 0
    }

    /// Validates the next piece of input.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] as soon as the input so far cannot be the start of valid
    /// UTF-8. After an error the validator's state is unspecified; start over with a
    /// new one.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let want = sequence_len(self.pending[0]);
            let take = (want - have).min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            input = &input[take..];
            let len = have + take;
            match simdutf8::compat::from_utf8(&self.pending[..len]) {
                Ok(_) => self.pending_len = 0,
                // Still short of a whole code point: the piece was used up.
                Err(e) if e.error_len().is_none() => {
                    self.pending_len = len as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        if simdutf8::basic::from_utf8(input).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks that the input ended on a code point boundary, and resets the
    /// validator for new input.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] if the input ended inside a code point.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let incomplete = self.is_incomplete();
        self.pending_len = 0;
        if incomplete { Err(InvalidUtf8) } else { Ok(()) }
    }
}

/// The length of the sequence a lead byte starts. Only called with the first byte
/// of an incomplete sequence, which the validator has already accepted as a lead.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Text: bytes known to be valid UTF-8, cheap to clone (a reference count, no copy).
///
/// It is what a text message carries. Received text is validated once, as it
/// arrives; after that `as_str` costs nothing.
///
/// ```
/// use duplex_proto::Utf8Bytes;
/// let t = Utf8Bytes::from("héllo");
/// let u = t.clone(); // shares the same bytes
/// assert_eq!(u.as_str(), "héllo");
/// assert!(Utf8Bytes::try_from(bytes::Bytes::from_static(&[0xff])).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Text from a string literal, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes this crate has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// The text as a `&str`.
    #[inline]
    pub fn as_str(&self) -> &str {
        #[allow(unsafe_code)]
        // SAFETY: every constructor validates the bytes as UTF-8 (or takes them from
        // a `str`), and `Bytes` is immutable.
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Utf8Bytes::from(s.as_str())
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(t: Utf8Bytes) -> Self {
        t.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = InvalidUtf8;
    fn try_from(bytes: Bytes) -> Result<Self, InvalidUtf8> {
        validate(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = InvalidUtf8;
    fn try_from(bytes: Vec<u8>) -> Result<Self, InvalidUtf8> {
        Utf8Bytes::try_from(Bytes::from(bytes))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every pair of points and checks the verdict matches
    /// the standard library's.
    fn check_all_splits(input: &[u8]) {
        let expected = std::str::from_utf8(input).is_ok();
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&input[..i]).is_ok()
                    && v.feed(&input[i..j]).is_ok()
                    && v.feed(&input[j..]).is_ok()
                    && v.finish().is_ok();
                assert_eq!(ok, expected, "{input:x?} split at {i}, {j}");
            }
        }
    }

    #[test]
    fn valid_text_split_anywhere_is_accepted() {
        check_all_splits("κόσμε €𝄞 ascii".as_bytes());
        check_all_splits("\u{10ffff}\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}".as_bytes());
    }

    #[test]
    fn invalid_sequences_are_rejected_wherever_split() {
        for bad in [
            &[0xff][..],
            &[0xc0, 0x80],             // overlong
            &[0xe0, 0x80, 0x80],       // overlong
            &[0xed, 0xa0, 0x80],       // surrogate
            &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xf5],
            &[0xe2, 0x82], // truncated at the end
            &[
                0x61, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0,
                0x80, 0x65, 0x64,
            ],
        ] {
            check_all_splits(bad);
        }
    }

    #[test]
    fn fails_on_the_piece_holding_the_bad_byte() {
        // A valid lead byte, then a piece whose first byte cannot continue it: the
        // error comes with that piece, before any later piece arrives.
        let mut v = Utf8Validator::new();
        v.feed(b"abc\xf0\x9f").unwrap();
        assert_eq!(v.feed(b"\x28"), Err(InvalidUtf8));

        // A bad byte in the middle of a long piece fails that piece.
        let mut v = Utf8Validator::new();
        let mut piece = vec![b'a'; 10_000];
        piece[17] = 0xff;
        assert_eq!(v.feed(&piece), Err(InvalidUtf8));
    }

    #[test]
    fn one_byte_at_a_time() {
        let text = "日本語のテキスト🎉".as_bytes();
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn utf8_bytes_conversions() {
        let t = Utf8Bytes::from_static("abc");
        assert_eq!(t, "abc");
        assert_eq!(t.len(), 3);
        assert_eq!(Bytes::from(t.clone()), Bytes::from_static(b"abc"));
        assert_eq!(format!("{t:?}"), "\"abc\"");
        assert!(Utf8Bytes::try_from(vec![0xc3, 0x28]).is_err());
        assert_eq!(Utf8Bytes::try_from(vec![0xc3, 0xa9]).unwrap(), "é");
    }
}
