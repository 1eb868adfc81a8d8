//! HS256 JSON Web Tokens (RFC 7519): who a connection is, and which channels
//! it may use.
//!
//! A token is `base64url(header).base64url(claims).base64url(signature)`; the
//! header's `alg` must be `HS256`, the signature an HMAC-SHA256 of the first two
//! parts with the configured secret (compared in constant time), `exp` (seconds
//! since the epoch), when present, in the future. Claims used: `sub` (the user
//! id), `exp`, and `channels`: a list of channel names or `namespace:*`
//! patterns the connection may subscribe and publish to (absent: all).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::channel::{ChannelName, pattern_allows};

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (`sub`); empty if the token has none.
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the epoch (`exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The channels allowed: names or `namespace:*` patterns; `None` for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

impl Claims {
    /// Whether these claims allow `channel`.
    pub fn allows(&self, channel: &ChannelName) -> bool {
        match &self.channels {
            None => true,
            Some(patterns) => patterns.iter().any(|p| pattern_allows(p, channel)),
        }
    }
}

/// Why a token was refused; the text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub &'static str);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TokenError {}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies an HS256 token with `secret`, `now` being seconds since the epoch.
///
/// # Errors
///
/// A [`TokenError`] saying why: malformed, not HS256, bad signature, expired.
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError(
            "malformed token: a JWT has three dot-separated parts",
        ));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
    let header_json = decode(header).map_err(|_| TokenError("malformed token header"))?;
    let header: Header =
        serde_json::from_slice(&header_json).map_err(|_| TokenError("malformed token header"))?;
    if header.alg != "HS256" {
        return Err(TokenError("token algorithm must be HS256"));
    }
    let signature = decode(signature).map_err(|_| TokenError("malformed token signature"))?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError("bad secret"))?;
    mac.update(&token.as_bytes()[..header_len(token)]);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| TokenError("invalid token signature"))?;
    let claims_json = decode(claims).map_err(|_| TokenError("malformed token claims"))?;
    let claims: Claims =
        serde_json::from_slice(&claims_json).map_err(|_| TokenError("malformed token claims"))?;
    if claims.exp.is_some_and(|exp| exp <= now) {
        return Err(TokenError("token expired"));
    }
    Ok(claims)
}

/// The length of `header.claims`: everything before the last `.`.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// Signs `claims` as an HS256 token: for tests, tools and back ends that
/// hand out tokens.
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
    // HMAC takes keys of any length.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return signing_input,
    };
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            exp: Some(2_000_000_000),
            channels: Some(vec!["chat:*".into(), "ticker:AAPL".into()]),
        }
    }

    #[test]
    fn round_trip() {
        let token = sign(&claims("alice"), SECRET);
        let got = verify(&token, SECRET, 1_800_000_000).unwrap();
        assert_eq!(got, claims("alice"));
        assert!(got.allows(&ChannelName::parse("chat:lobby").unwrap()));
        assert!(got.allows(&ChannelName::parse("ticker:AAPL").unwrap()));
        assert!(!got.allows(&ChannelName::parse("ticker:MSFT").unwrap()));
    }

    #[test]
    fn known_token_from_another_implementation() {
        // jwt.io's HS256 example, secret "your-256-bit-secret".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let got = verify(token, b"your-256-bit-secret", 0).unwrap();
        assert_eq!(got.sub, "1234567890");
        assert_eq!(got.channels, None);
        assert!(verify(token, b"another secret", 0).is_err());
    }

    #[test]
    fn refusals() {
        let token = sign(&claims("alice"), SECRET);
        assert_eq!(
            verify(&token, b"wrong", 0).unwrap_err().0,
            "invalid token signature"
        );
        assert_eq!(
            verify(&token, SECRET, 2_000_000_000).unwrap_err().0,
            "token expired"
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert!(verify(&parts.join("."), SECRET, 0).is_err());
        // alg none, and other algorithms.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#)
        );
        assert_eq!(
            verify(&none, SECRET, 0).unwrap_err().0,
            "token algorithm must be HS256"
        );
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.",
            &"a".repeat(5000),
        ] {
            assert!(verify(bad, SECRET, 0).is_err(), "{bad}");
        }
    }
}
