//! Limits, with defaults that are safe to expose to the internet.

/// Size limits for a connection and its opening handshake.
///
/// ```
/// use duplex_proto::Limits;
/// let config = Limits::default()
///     .max_message_size(1 << 20)
///     .max_frame_size(64 << 10);
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame payload accepted, in bytes. A larger frame fails the
    /// connection with 1009 as soon as its header arrives.
    ///
    /// Default: 16 MiB.
    pub max_frame_size: usize,
    /// The largest message accepted, in bytes, over all its frames. A larger one
    /// fails the connection with 1009 as soon as a frame header shows it will be
    /// exceeded, before the payload is buffered.
    ///
    /// Default: 64 MiB, enough for any message a browser is likely to send while
    /// bounding what one connection can make the process hold.
    pub max_message_size: usize,
    /// The most bytes of HTTP header the opening handshake may take. A larger
    /// request is refused with 431, a larger response fails the client.
    ///
    /// Default: 16 KiB, which leaves room for a page's cookies.
    pub max_header_bytes: usize,
    /// The most header fields the opening handshake may have.
    ///
    /// Default: 100.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_header_bytes: 16 << 10,
            max_headers: 100,
        }
    }
}

impl Limits {
    /// Sets [`max_frame_size`](Limits::max_frame_size).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`max_message_size`](Limits::max_message_size).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`max_header_bytes`](Limits::max_header_bytes).
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Sets [`max_headers`](Limits::max_headers).
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }
}
