//! JSON Web Tokens (RFC 7519): who a connection is, and which channels it may
//! use.
//!
//! Signatures are checked by the `jsonwebtoken` crate; this module chooses the
//! key and the algorithms a token may use, and says why a token is refused.
//!
//! Keys come from `[auth]`: an HMAC secret (`hs256_secret`: tokens signed with
//! HS256, HS384 or HS512), PEM public keys (`public_keys`: RSA keys take RS256,
//! RS384, RS512, PS256, PS384 and PS512; a P-256 key ES256; a P-384 key ES384;
//! an Ed25519 key EdDSA), and an identity provider's JWKS (`jwks_url`), whose
//! keys take what their `alg` says, or what their type allows. A token is
//! accepted when a key that allows its `alg` verifies it: `none` is never
//! accepted, and an HMAC secret is only ever the configured one, so a public
//! key cannot be passed off as an HMAC secret (the HS/RS confusion).
//!
//! Claims checked: `exp` and `nbf` when present, against the hub's
//! [`Clock`] with `leeway_secs` of clock skew; `iss` and `aud` when the configuration names them (and then the
//! token must carry them). Claims used: `sub` (the user id), `exp`, and
//! `channels`: a list of channel names or `namespace:*` patterns the
//! connection may subscribe and publish to (absent: all).
//!
//! The JWKS is fetched when a token first needs it, and again when a token
//! names a `kid` the cached set lacks (the provider rotated its keys), at most
//! once per `jwks_refetch_secs`: a flood of tokens with made-up `kid`s costs
//! the provider one request per interval. A failed fetch keeps the keys the
//! hub had: tokens they fit are still accepted, and a token none fits is
//! refused as `keys_unavailable` until a fetch works again; PEM keys and the
//! HMAC secret do not depend on the provider.
//!
//! A refusal is counted by its [`Refusal`] and logged (at debug level) with
//! its reason and message; the token itself is never logged.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::channel::{ChannelName, pattern_allows};
use crate::clock::Clock;
use crate::config::AuthConfig;
use crate::fetch::HttpClient;
use crate::metrics::{Metrics, bump};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8192;

/// The most characters of a token's `kid` a refusal message shows.
const MAX_KID_SHOWN: usize = 64;

/// The longest JWKS document read, in bytes.
const MAX_JWKS_LEN: usize = 1 << 20;

/// How long a JWKS request may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The documents allowed (`docs`): document names or `prefix*` patterns
    /// mapped to `"read"` or `"write"`; `None` for all, to write. See
    /// [`docs::access`](fn@crate::docs::access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<serde_json::Value>,
    /// The one channel of a subscription token (`channel`), which
    /// `subscribe` to a channel of a private namespace needs; `None` in a
    /// connection token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
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

/// Which check refused a token: the label of
/// `duplex_token_refusals_total{reason=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The hub has no key at all.
    Disabled,
    /// Over [`MAX_TOKEN_LEN`].
    TooLong,
    /// Not a JWT: parts, base64, JSON.
    Malformed,
    /// An `alg` that is not accepted (`none`, or one no configured key allows).
    Algorithm,
    /// No configured key for the token's `alg` and `kid`.
    UnknownKey,
    /// The signature does not verify with any key that allows the `alg`.
    Signature,
    /// `exp` is past (with the leeway).
    Expired,
    /// `nbf` is to come (with the leeway).
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    Issuer,
    /// `aud` missing or without the configured audience.
    Audience,
    /// The JWKS could not be fetched, and no cached key fits.
    KeysUnavailable,
}

impl Refusal {
    /// Every refusal, in the order `/metrics` lists them.
    pub const ALL: [Refusal; 11] = [
        Refusal::Disabled,
        Refusal::TooLong,
        Refusal::Malformed,
        Refusal::Algorithm,
        Refusal::UnknownKey,
        Refusal::Signature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::Issuer,
        Refusal::Audience,
        Refusal::KeysUnavailable,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::TooLong => "too_long",
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Signature => "signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Issuer => "issuer",
            Refusal::Audience => "audience",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }

    /// This refusal's place in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// Why a token was refused: which check, and a message that is safe to show
/// the client (it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// The check that failed.
    pub refusal: Refusal,
    /// What to tell the client.
    pub message: String,
}

impl TokenError {
    fn new(refusal: Refusal, message: impl Into<String>) -> Self {
        TokenError {
            refusal,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TokenError {}

/// A public key and the algorithms it takes.
struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// The JWKS `kid`, for keys from a JWKS.
    kid: Option<String>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("algorithms", &self.algorithms)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The object identifiers of the two curves ES256 and ES384 use, as they
/// appear in a public key's DER (RFC 5480).
const P256_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// A PEM public key: its type says which algorithms it takes.
fn pem_key(pem: &[u8]) -> Result<Key, String> {
    let key = |key, algorithms: &[Algorithm]| Key {
        key,
        algorithms: algorithms.to_vec(),
        kid: None,
    };
    if let Ok(rsa) = DecodingKey::from_rsa_pem(pem) {
        return Ok(key(rsa, &RSA_ALGORITHMS));
    }
    if let Ok(ec) = DecodingKey::from_ec_pem(pem) {
        let der = pem_der(pem)?;
        let algorithm = if contains(&der, P256_OID) {
            Algorithm::ES256
        } else if contains(&der, P384_OID) {
            Algorithm::ES384
        } else {
            return Err("an EC key on a curve other than P-256 and P-384".to_owned());
        };
        return Ok(key(ec, &[algorithm]));
    }
    if let Ok(ed) = DecodingKey::from_ed_pem(pem) {
        return Ok(key(ed, &[Algorithm::EdDSA]));
    }
    Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".to_owned())
}

/// The DER inside a PEM document.
fn pem_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| "not a PEM file".to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A JWKS key the hub can use: an asymmetric key with a known algorithm.
fn jwk_key(jwk: &Jwk) -> Option<Key> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Symmetric keys in a published set, and the rest: not ours to use.
        _ => return None,
    };
    // A key that names its algorithm takes that one only.
    let algorithms = match jwk.common.key_algorithm {
        Some(named) => {
            let named: Algorithm = named.to_string().parse().ok()?;
            by_type.contains(&named).then(|| vec![named])?
        }
        None => by_type,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        key,
        algorithms,
        kid: jwk.common.key_id.clone(),
    })
}

/// The keys of a JWKS document; keys the hub cannot use are left out.
fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set =
        serde_json::from_slice(body).map_err(|err| format!("not a JWKS document: {err}"))?;
    let keys: Vec<Key> = set
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| jwk_key(&jwk))
        .collect();
    Ok(keys)
}

/// The last JWKS fetch: when, and whether it worked.
#[derive(Debug, Clone, Copy)]
struct LastFetch {
    at: Instant,
    ok: bool,
}

/// An identity provider's key set, fetched on demand.
struct Jwks {
    url: String,
    client: HttpClient,
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the set was last fetched, and whether that worked; held while
    /// fetching, so concurrent tokens wait for one fetch instead of making
    /// their own.
    fetched: tokio::sync::Mutex<Option<LastFetch>>,
    refetch_after: Duration,
    metrics: Arc<Metrics>,
}

impl Jwks {
    fn current(&self) -> Arc<Vec<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The cached keys if some fit, else the keys after a fetch (if one is
    /// allowed now). When the provider cannot be reached (this fetch or the
    /// last one failed) and no cached key fits, the refusal is
    /// [`Refusal::KeysUnavailable`]: the token may be good, the hub cannot
    /// tell.
    async fn keys_for(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<Arc<Vec<Key>>, TokenError> {
        let fits = |keys: &[Key]| keys.iter().any(|key| key_fits(key, algorithm, kid));
        let keys = self.current();
        if fits(&keys) {
            return Ok(keys);
        }
        let mut fetched = self.fetched.lock().await;
        // Another token may have fetched while this one waited.
        let keys = self.current();
        if fits(&keys) {
            return Ok(keys);
        }
        if let Some(last) = *fetched
            && last.at.elapsed() < self.refetch_after
        {
            return if last.ok {
                Ok(keys)
            } else {
                Err(keys_unavailable())
            };
        }
        *fetched = Some(LastFetch {
            at: Instant::now(),
            ok: false,
        });
        bump(&self.metrics.jwks_fetches);
        let result = self
            .client
            .get(&self.url, JWKS_TIMEOUT, MAX_JWKS_LEN)
            .await
            .and_then(|body| parse_jwks(&body));
        match result {
            Ok(fresh) => {
                *fetched = Some(LastFetch {
                    at: Instant::now(),
                    ok: true,
                });
                tracing::info!(url = %self.url, keys = fresh.len(), "fetched the JWKS");
                let fresh = Arc::new(fresh);
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
                Ok(fresh)
            }
            Err(why) => {
                bump(&self.metrics.jwks_fetch_failures);
                tracing::warn!(url = %self.url, %why, "fetching the JWKS failed");
                // No cached key fits (or there would have been no fetch).
                Err(keys_unavailable())
            }
        }
    }
}

fn keys_unavailable() -> TokenError {
    TokenError::new(
        Refusal::KeysUnavailable,
        "the identity provider's keys (JWKS) cannot be fetched, and no cached key fits the token",
    )
}

/// Whether `key` may verify a token with `algorithm` and `kid`: the
/// algorithm must be one the key takes, and a token that names a `kid` is
/// verified by the JWKS key with that `kid` only.
fn key_fits(key: &Key, algorithm: Algorithm, kid: Option<&str>) -> bool {
    key.algorithms.contains(&algorithm)
        && match (kid, &key.kid) {
            (Some(wanted), Some(has)) => wanted == has,
            _ => true,
        }
}

/// The configured keys and claim checks.
pub struct Verifier {
    metrics: Arc<Metrics>,
    hmac: Option<DecodingKey>,
    keys: Vec<Key>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    clock: Clock,
}

/// A token's claims as decoded: what [`Claims`] keeps, and `nbf`, which is
/// only checked.
#[derive(Deserialize)]
struct Decoded {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    nbf: Option<u64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("keys", &self.keys)
            .field("jwks", &self.jwks.as_ref().map(|jwks| &jwks.url))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Verifier {
    /// The keys `[auth]` names (PEM files as their paths say: relative ones
    /// from the working directory; [`Config::from_file`](crate::Config::from_file)
    /// makes them relative to the file).
    ///
    /// # Errors
    ///
    /// A message naming the key that cannot be used: a file that cannot be
    /// read, a PEM that is not a public key of a supported type, an empty
    /// secret.
    /// Refusals and JWKS fetches are counted in `metrics`.
    pub fn from_config(auth: &AuthConfig, metrics: Arc<Metrics>) -> Result<Verifier, String> {
        let hmac = match &auth.hs256_secret {
            Some(secret) => Some(
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|_| "auth.hs256_secret must not be empty".to_owned())?,
            ),
            None => None,
        };
        let mut keys = Vec::new();
        for path in &auth.public_keys {
            let pem = std::fs::read(path).map_err(|err| {
                format!("auth.public_keys: cannot read {}: {err}", path.display())
            })?;
            keys.push(
                pem_key(&pem)
                    .map_err(|why| format!("auth.public_keys: {}: {why}", path.display()))?,
            );
        }
        let jwks = auth.jwks_url.as_ref().map(|url| Jwks {
            url: url.clone(),
            client: HttpClient::new(),
            keys: RwLock::new(Arc::new(Vec::new())),
            fetched: tokio::sync::Mutex::new(None),
            refetch_after: Duration::from_secs(auth.jwks_refetch_secs),
            metrics: metrics.clone(),
        });
        Ok(Verifier {
            metrics,
            hmac,
            keys,
            jwks,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway: auth.leeway_secs,
            clock: Clock::system(),
        })
    }

    /// Checks `exp` and `nbf` against `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Verifier {
        self.clock = clock;
        self
    }

    /// Whether any key is configured: without one, every token is refused.
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some() || !self.keys.is_empty() || self.jwks.is_some()
    }

    /// Verifies `token`: a key that allows its `alg` verifies its signature,
    /// and its claims pass the checks. A refusal is counted by its reason.
    ///
    /// # Errors
    ///
    /// A [`TokenError`] saying which check failed.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let verified = self.check(token).await;
        if let Err(err) = &verified {
            self.metrics.token_refused(err.refusal);
            // The reason and the message, never the token.
            tracing::debug!(reason = %err.refusal.label(), message = %err.message, "token refused");
        }
        verified
    }

    async fn check(&self, token: &str) -> Result<Claims, TokenError> {
        if !self.has_keys() {
            return Err(TokenError::new(
                Refusal::Disabled,
                "this hub does not accept tokens (no key is configured in [auth])",
            ));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::new(
                Refusal::TooLong,
                format!("token too long: over {MAX_TOKEN_LEN} bytes"),
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // A header that names an algorithm jsonwebtoken does not know
            // (`none`, above all) is refused as such, not as garbage.
            match raw_alg(token) {
                Some(alg) if alg.parse::<Algorithm>().is_err() => TokenError::new(
                    Refusal::Algorithm,
                    format!("token algorithm {alg:?} is not accepted"),
                ),
                _ => TokenError::new(Refusal::Malformed, "malformed token: not a signed JWT"),
            }
        })?;
        let algorithm = header.alg;
        let kid = header.kid.as_deref();
        let jwks_keys;
        let mut candidates: Vec<&DecodingKey> = Vec::new();
        if HMAC_ALGORITHMS.contains(&algorithm) {
            candidates.extend(self.hmac.as_ref());
        } else {
            candidates.extend(
                self.keys
                    .iter()
                    .filter(|key| key.algorithms.contains(&algorithm))
                    .map(|key| &key.key),
            );
            if let Some(jwks) = &self.jwks {
                match jwks.keys_for(algorithm, kid).await {
                    Ok(keys) => {
                        jwks_keys = keys;
                        candidates.extend(
                            jwks_keys
                                .iter()
                                .filter(|key| key_fits(key, algorithm, kid))
                                .map(|key| &key.key),
                        );
                    }
                    // With the provider down, the PEM keys still verify
                    // what they can.
                    Err(err) if candidates.is_empty() => return Err(err),
                    Err(_) => {}
                }
            }
        }
        if candidates.is_empty() {
            let message = match kid {
                Some(kid) if self.jwks.is_some() && !HMAC_ALGORITHMS.contains(&algorithm) => {
                    // The kid is the client's: shown short, as the alg is.
                    let mut shown: String = kid.chars().take(MAX_KID_SHOWN).collect();
                    if shown.len() < kid.len() {
                        shown.push_str("...");
                    }
                    format!("no key with kid {shown:?} takes {algorithm:?} tokens")
                }
                _ => format!("no configured key takes {algorithm:?} tokens"),
            };
            return Err(TokenError::new(Refusal::UnknownKey, message));
        }
        let validation = self.validation(algorithm);
        let mut refused = None;
        for key in candidates {
            match jsonwebtoken::decode::<Decoded>(token, key, &validation) {
                Ok(data) => return self.check_times(data.claims),
                Err(err) => {
                    let error = self.refusal(&err);
                    // Past the signature, a refusal is the token's whatever
                    // key is tried next.
                    if error.refusal != Refusal::Signature {
                        return Err(error);
                    }
                    refused = Some(error);
                }
            }
        }
        Err(refused
            .unwrap_or_else(|| TokenError::new(Refusal::Signature, "invalid token signature")))
    }

    /// `exp` and `nbf` against the hub's clock, with the leeway (as
    /// RFC 7519 4.1.4 and 4.1.5 define them: expired once `exp` is past, not
    /// valid before `nbf`).
    fn check_times(&self, decoded: Decoded) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let now = self.clock.now_secs();
        if decoded
            .claims
            .exp
            .is_some_and(|exp| exp.saturating_add(self.leeway) < now)
        {
            return Err(self.refusal(&ErrorKind::ExpiredSignature.into()));
        }
        if decoded
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(self.refusal(&ErrorKind::ImmatureSignature.into()));
        }
        Ok(decoded.claims)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        // Times are checked against the hub's clock, in `check_times`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required = HashSet::new();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        validation
    }

    fn refusal(&self, err: &jsonwebtoken::errors::Error) -> TokenError {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::ExpiredSignature => TokenError::new(
                Refusal::Expired,
                format!(
                    "token expired: exp is more than the leeway ({} s) past",
                    self.leeway
                ),
            ),
            ErrorKind::ImmatureSignature => TokenError::new(
                Refusal::NotYetValid,
                format!(
                    "token not valid yet: nbf is more than the leeway ({} s) ahead",
                    self.leeway
                ),
            ),
            ErrorKind::InvalidIssuer => TokenError::new(
                Refusal::Issuer,
                format!(
                    "token issuer (iss) is not {:?}",
                    self.issuer.as_deref().unwrap_or("")
                ),
            ),
            ErrorKind::InvalidAudience => TokenError::new(
                Refusal::Audience,
                format!(
                    "token audience (aud) does not include {:?}",
                    self.audience.as_deref().unwrap_or("")
                ),
            ),
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                TokenError::new(Refusal::Issuer, "token has no iss claim")
            }
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                TokenError::new(Refusal::Audience, "token has no aud claim")
            }
            ErrorKind::InvalidAlgorithm => TokenError::new(
                Refusal::Algorithm,
                "token algorithm not allowed for this key",
            ),
            ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidToken
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::MissingRequiredClaim(_) => {
                TokenError::new(Refusal::Malformed, "malformed token claims")
            }
            _ => TokenError::new(Refusal::Signature, "invalid token signature"),
        }
    }
}

/// The `alg` of a token's header as written, for the refusal message.
fn raw_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let json = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let alg: String = value.get("alg")?.as_str()?.chars().take(16).collect();
    Some(alg)
}

/// Signs `claims` as an HS256 token: for tests, tools and back ends that
/// hand out tokens.
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let Ok(key) = jsonwebtoken::EncodingKey::from_secret(secret) else {
        return String::new();
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const SECRET: &str = "test-secret";

    fn now_secs() -> u64 {
        Clock::system().now_secs()
    }

    fn verifier(secret: Option<&str>) -> Verifier {
        let auth = AuthConfig {
            hs256_secret: secret.map(str::to_owned),
            ..AuthConfig::default()
        };
        Verifier::from_config(&auth, Arc::default()).unwrap()
    }

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            exp: Some(now_secs() + 3600),
            channels: Some(vec!["chat:*".into(), "ticker:AAPL".into()]),
            docs: None,
            channel: None,
        }
    }

    #[tokio::test]
    async fn round_trip() {
        let token = sign(&claims("alice"), SECRET.as_bytes());
        let got = verifier(Some(SECRET)).verify(&token).await.unwrap();
        assert_eq!(got, claims("alice"));
        assert!(got.allows(&ChannelName::parse("chat:lobby").unwrap()));
        assert!(got.allows(&ChannelName::parse("ticker:AAPL").unwrap()));
        assert!(!got.allows(&ChannelName::parse("ticker:MSFT").unwrap()));
    }

    #[tokio::test]
    async fn known_token_from_another_implementation() {
        // jwt.io's HS256 example, secret "your-256-bit-secret".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let got = verifier(Some("your-256-bit-secret"))
            .verify(token)
            .await
            .unwrap();
        assert_eq!(got.sub, "1234567890");
        assert_eq!(got.channels, None);
        let err = verifier(Some("another secret"))
            .verify(token)
            .await
            .unwrap_err();
        assert_eq!(err.refusal, Refusal::Signature);
    }

    #[tokio::test]
    async fn refusals_say_which_check_failed() {
        let hub = verifier(Some(SECRET));
        let token = sign(&claims("alice"), SECRET.as_bytes());
        let refusal = |token: String| {
            let hub = &hub;
            async move { hub.verify(&token).await.unwrap_err().refusal }
        };
        assert_eq!(
            refusal(sign(&claims("a"), b"wrong")).await,
            Refusal::Signature
        );
        let expired = Claims {
            exp: Some(now_secs() - 100),
            ..claims("alice")
        };
        assert_eq!(
            refusal(sign(&expired, SECRET.as_bytes())).await,
            Refusal::Expired
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert_eq!(refusal(parts.join(".")).await, Refusal::Signature);
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#)
        );
        let err = hub.verify(&none).await.unwrap_err();
        assert_eq!(err.refusal, Refusal::Algorithm);
        assert!(err.message.contains("\"none\""), "{err}");
        // An asymmetric algorithm with only a secret configured.
        let rs = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#)
        );
        assert_eq!(refusal(rs).await, Refusal::UnknownKey);
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30."] {
            assert_eq!(refusal(bad.to_owned()).await, Refusal::Malformed, "{bad:?}");
        }
        assert_eq!(
            refusal("a".repeat(MAX_TOKEN_LEN + 1)).await,
            Refusal::TooLong
        );
        assert_eq!(
            verifier(None).verify(&token).await.unwrap_err().refusal,
            Refusal::Disabled
        );
    }

    proptest::proptest! {
        /// Whatever a client sends as a token, verification answers and
        /// never panics.
        #[test]
        fn verify_never_panics(token in "\\PC{0,300}") {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let hub = verifier(Some(SECRET));
            let _ = runtime.block_on(hub.verify(&token));
        }
    }

    #[test]
    fn every_refusal_has_its_own_label_and_index() {
        let labels: HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for (i, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(refusal.index(), i);
        }
    }

    /// A key pair of `kind`: the public key as a PEM file in `dir`, and the
    /// private key to sign with.
    fn pem_pair(
        dir: &std::path::Path,
        kind: &'static rcgen::SignatureAlgorithm,
        name: &str,
    ) -> (std::path::PathBuf, jsonwebtoken::EncodingKey) {
        let pair = rcgen::KeyPair::generate_for(kind).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, pair.public_key_pem()).unwrap();
        let private = pair.serialize_pem();
        let key = if name.starts_with("ed") {
            jsonwebtoken::EncodingKey::from_ed_pem(private.as_bytes())
        } else {
            jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes())
        };
        (path, key.unwrap())
    }

    fn signed(
        algorithm: Algorithm,
        claims: &serde_json::Value,
        key: &jsonwebtoken::EncodingKey,
    ) -> String {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, key).unwrap()
    }

    #[tokio::test]
    async fn a_pem_key_takes_the_algorithm_of_its_type_only() {
        let dir = tempfile::tempdir().unwrap();
        let (p256, p256_key) = pem_pair(dir.path(), &rcgen::PKCS_ECDSA_P256_SHA256, "p256.pem");
        let (p384, p384_key) = pem_pair(dir.path(), &rcgen::PKCS_ECDSA_P384_SHA384, "p384.pem");
        let (ed, ed_key) = pem_pair(dir.path(), &rcgen::PKCS_ED25519, "ed25519.pem");
        let payload = serde_json::json!({"sub": "alice", "exp": now_secs() + 60});
        for (path, key, algorithm, other) in [
            (
                &p256,
                &p256_key,
                Algorithm::ES256,
                (&p384_key, Algorithm::ES384),
            ),
            (
                &p384,
                &p384_key,
                Algorithm::ES384,
                (&ed_key, Algorithm::EdDSA),
            ),
            (
                &ed,
                &ed_key,
                Algorithm::EdDSA,
                (&p256_key, Algorithm::ES256),
            ),
        ] {
            let auth = AuthConfig {
                public_keys: vec![path.clone()],
                ..AuthConfig::default()
            };
            let hub = Verifier::from_config(&auth, Arc::default()).unwrap();
            let got = hub.verify(&signed(algorithm, &payload, key)).await.unwrap();
            assert_eq!(got.sub, "alice");
            let err = hub
                .verify(&signed(other.1, &payload, other.0))
                .await
                .unwrap_err();
            assert_eq!(err.refusal, Refusal::UnknownKey, "{algorithm:?}: {err}");
            assert_eq!(
                err.message,
                format!("no configured key takes {:?} tokens", other.1)
            );
            // The public key's PEM as an HMAC secret: no HMAC key is
            // configured, so no key takes HS256.
            let pem = std::fs::read(path).unwrap();
            let confused = sign(&claims("mallory"), &pem);
            let err = hub.verify(&confused).await.unwrap_err();
            assert_eq!(err.refusal, Refusal::UnknownKey, "{err}");
        }
    }

    #[tokio::test]
    async fn exp_and_nbf_with_the_leeway() {
        let auth = |leeway_secs| AuthConfig {
            hs256_secret: Some(SECRET.to_owned()),
            leeway_secs,
            ..AuthConfig::default()
        };
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let now = now_secs();
        let hub = Verifier::from_config(&auth(30), Arc::default()).unwrap();
        let strict = Verifier::from_config(&auth(0), Arc::default()).unwrap();
        let token = |claims| signed(Algorithm::HS256, &claims, &key);
        let a_bit_late = token(serde_json::json!({"sub": "a", "exp": now - 10}));
        let a_bit_early = token(serde_json::json!({"sub": "a", "nbf": now + 10}));
        assert!(hub.verify(&a_bit_late).await.is_ok());
        assert!(hub.verify(&a_bit_early).await.is_ok());
        let err = strict.verify(&a_bit_late).await.unwrap_err();
        assert_eq!(
            (err.refusal, err.message.as_str()),
            (
                Refusal::Expired,
                "token expired: exp is more than the leeway (0 s) past"
            )
        );
        let err = strict.verify(&a_bit_early).await.unwrap_err();
        assert_eq!(err.refusal, Refusal::NotYetValid, "{err}");
        let too_late = token(serde_json::json!({"sub": "a", "exp": now - 40}));
        assert_eq!(
            hub.verify(&too_late).await.unwrap_err().refusal,
            Refusal::Expired
        );
    }

    #[tokio::test]
    async fn exp_and_nbf_follow_the_hubs_clock() {
        let auth = AuthConfig {
            hs256_secret: Some(SECRET.to_owned()),
            leeway_secs: 5,
            ..AuthConfig::default()
        };
        let manual = ManualClock::new(1_000_000_000_000);
        let verifier = Verifier::from_config(&auth, Arc::default())
            .unwrap()
            .with_clock(manual.clock());
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let token = |claims| signed(Algorithm::HS256, &claims, &key);
        // Both long past on the system's clock, in the future on the hub's.
        let expiring = token(serde_json::json!({"sub": "a", "exp": 1_000_000_060u64}));
        let later = token(serde_json::json!({"sub": "a", "nbf": 1_000_000_060u64}));
        assert_eq!(verifier.verify(&expiring).await.unwrap().sub, "a");
        assert_eq!(
            verifier.verify(&later).await.unwrap_err().refusal,
            Refusal::NotYetValid
        );
        // At exp + leeway still valid; a second later expired.
        manual.advance(Duration::from_secs(65));
        assert!(verifier.verify(&expiring).await.is_ok());
        assert!(verifier.verify(&later).await.is_ok());
        manual.advance(Duration::from_secs(1));
        assert_eq!(
            verifier.verify(&expiring).await.unwrap_err().refusal,
            Refusal::Expired
        );
    }

    #[tokio::test]
    async fn pem_keys_verify_while_the_jwks_cannot_be_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let (p256, p256_key) = pem_pair(dir.path(), &rcgen::PKCS_ECDSA_P256_SHA256, "p256.pem");
        let (_, ed_key) = pem_pair(dir.path(), &rcgen::PKCS_ED25519, "ed25519.pem");
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
        drop(closed);
        let auth = AuthConfig {
            public_keys: vec![p256],
            jwks_url: Some(url),
            ..AuthConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let hub = Verifier::from_config(&auth, metrics.clone()).unwrap();
        let claims = serde_json::json!({"sub": "alice", "exp": now_secs() + 60});
        let got = hub
            .verify(&signed(Algorithm::ES256, &claims, &p256_key))
            .await
            .unwrap();
        assert_eq!(got.sub, "alice");
        // No PEM key takes EdDSA, and the JWKS is out of reach: twice, with
        // one fetch in the interval.
        for _ in 0..2 {
            let err = hub
                .verify(&signed(Algorithm::EdDSA, &claims, &ed_key))
                .await
                .unwrap_err();
            assert_eq!(err.refusal, Refusal::KeysUnavailable, "{err}");
        }
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(metrics.jwks_fetches.load(Relaxed), 1);
        assert_eq!(metrics.jwks_fetch_failures.load(Relaxed), 1);
        assert_eq!(
            metrics.token_refusals[Refusal::KeysUnavailable.index()].load(Relaxed),
            2
        );
    }

    /// An HTTP server on a free loopback port that answers every request
    /// with `body`; its URL.
    async fn serve_jwks(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_long_kid_is_shown_short() {
        let auth = AuthConfig {
            jwks_url: Some(serve_jwks(r#"{"keys":[]}"#).await),
            ..AuthConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let hub = Verifier::from_config(&auth, metrics.clone()).unwrap();
        let header = serde_json::json!({"alg": "RS256", "kid": "k".repeat(4000)});
        let token = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#)
        );
        let err = hub.verify(&token).await.unwrap_err();
        assert_eq!(err.refusal, Refusal::UnknownKey, "{err}");
        assert_eq!(
            err.message,
            format!(
                "no key with kid \"{}...\" takes RS256 tokens",
                "k".repeat(MAX_KID_SHOWN)
            )
        );
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(metrics.jwks_fetches.load(Relaxed), 1);
        assert_eq!(metrics.jwks_fetch_failures.load(Relaxed), 0);
    }

    #[test]
    fn a_jwks_keeps_the_keys_it_can_use() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"sym"},
            {"kty":"RSA","kid":"enc","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        let kinds: Vec<(Option<&str>, &[Algorithm])> = keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.algorithms.as_slice()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Some("ec"), &[Algorithm::ES256][..]),
                (Some("ed"), &[Algorithm::EdDSA][..]),
            ]
        );
        assert!(parse_jwks(b"not json").is_err());
    }
}
