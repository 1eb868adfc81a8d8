//! Channel names: `namespace:name`.
//!
//! The namespace is 1 to 32 of `a-z 0-9 _ -`; the name is 1 to 128 bytes of
//! ASCII letters, digits and `_ - . : @ = + ~ #` (no spaces, no control
//! characters, no `*`, which token patterns use).

use std::fmt;

/// The longest channel name after the namespace, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 32;

/// A valid channel name, split at its first `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    full: String,
    colon: usize,
}

/// Why a channel name is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadChannel(pub String);

impl fmt::Display for BadChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `namespace` is a valid namespace name.
pub fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.:@=+~#".contains(&b)
}

impl ChannelName {
    /// Parses `namespace:name`.
    ///
    /// # Errors
    ///
    /// A [`BadChannel`] saying what is wrong.
    pub fn parse(full: &str) -> Result<ChannelName, BadChannel> {
        let Some(colon) = full.find(':') else {
            return Err(BadChannel(format!(
                "channel {:?} has no namespace: channels are namespace:name, e.g. chat:lobby",
                truncate(full)
            )));
        };
        let (namespace, name) = (&full[..colon], &full[colon + 1..]);
        if !valid_namespace(namespace) {
            return Err(BadChannel(format!(
                "namespace {:?} is not valid: 1 to {MAX_NAMESPACE_LEN} of a-z, 0-9, _ and -",
                truncate(namespace)
            )));
        }
        if name.is_empty() {
            return Err(BadChannel(format!("channel {full:?} has an empty name")));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(BadChannel(format!(
                "channel name is {} bytes, over the limit of {MAX_NAME_LEN}",
                name.len()
            )));
        }
        if !name.bytes().all(valid_name_byte) {
            return Err(BadChannel(format!(
                "channel name {:?} has a character outside A-Z a-z 0-9 _ - . : @ = + ~ #",
                truncate(name)
            )));
        }
        Ok(ChannelName {
            full: full.to_string(),
            colon,
        })
    }

    /// The namespace (before the first `:`).
    pub fn namespace(&self) -> &str {
        &self.full[..self.colon]
    }

    /// The name after the namespace.
    pub fn name(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The whole name, `namespace:name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Whether a token's `channels` pattern allows `channel`: an exact name, or
/// `namespace:*` for every channel of a namespace, or `*` for all.
pub fn pattern_allows(pattern: &str, channel: &ChannelName) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(":*") {
        Some(namespace) => namespace == channel.namespace(),
        None => pattern == channel.as_str(),
    }
}

/// At most 64 characters of `text`, for error messages.
fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        let c = ChannelName::parse("chat:lobby").unwrap();
        assert_eq!((c.namespace(), c.name()), ("chat", "lobby"));
        let c = ChannelName::parse("ticker:BRK.B").unwrap();
        assert_eq!(c.name(), "BRK.B");
        let c = ChannelName::parse("chat:a:b").unwrap();
        assert_eq!((c.namespace(), c.name()), ("chat", "a:b"));
        assert!(ChannelName::parse(&format!("chat:{}", "x".repeat(128))).is_ok());
    }

    #[test]
    fn invalid_names_say_why() {
        let err = |s: &str| ChannelName::parse(s).unwrap_err().0;
        assert!(err("lobby").contains("no namespace"));
        assert!(err("chat:").contains("empty name"));
        assert!(err(":lobby").contains("namespace"));
        assert!(err("Chat:lobby").contains("namespace"));
        assert!(err(&format!("chat:{}", "x".repeat(129))).contains("129 bytes"));
        assert!(err("chat:has space").contains("character"));
        assert!(err("chat:star*").contains("character"));
        assert!(err("chat:é").contains("character"));
        assert!(err("chat:\u{0}").contains("character"));
    }

    #[test]
    fn patterns() {
        let lobby = ChannelName::parse("chat:lobby").unwrap();
        assert!(pattern_allows("chat:lobby", &lobby));
        assert!(pattern_allows("chat:*", &lobby));
        assert!(pattern_allows("*", &lobby));
        assert!(!pattern_allows("chat:other", &lobby));
        assert!(!pattern_allows("ticker:*", &lobby));
        assert!(!pattern_allows("chat:lob", &lobby));
    }
}
