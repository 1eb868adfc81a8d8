//! Origin checks, against cross-site WebSocket hijacking.
//!
//! A browser sends the page's origin with every WebSocket handshake and, unlike
//! for `fetch`, does not ask the server's permission (there is no CORS for
//! WebSocket): any page on any site can open a socket to your server with the
//! user's cookies. Checking `Origin` is how a server refuses that.

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, StatusCode, Uri};

use crate::server::Rejection;

/// Which `Origin` header values a server accepts; a refused origin gets 403
/// before any upgrade.
///
/// Browsers always send `Origin`; other clients (a CLI, a back end) usually do
/// not, and requests without one are let through unless
/// [`require_origin`](Self::require_origin) says otherwise.
///
/// ```
/// use duplex::Origins;
/// let same = Origins::same_origin();
/// let listed = Origins::allow(["https://example.com", "http://localhost:8080"]);
/// # let _ = (same, listed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    rule: Rule,
    require: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Any,
    SameOrigin,
    List(Vec<String>),
}

impl Default for Origins {
    /// Any origin: no check. Fine for servers no browser talks to; a server for
    /// web pages should use [`same_origin`](Origins::same_origin) or
    /// [`allow`](Origins::allow).
    fn default() -> Self {
        Origins::any()
    }
}

impl Origins {
    /// Every origin is accepted: no check.
    pub fn any() -> Self {
        Origins {
            rule: Rule::Any,
            require: false,
        }
    }

    /// Only pages served from this server's own host and port: the origin's
    /// host (and port, the scheme's default if none) must match the request's
    /// `Host` (or, over HTTP/2, its authority).
    pub fn same_origin() -> Self {
        Origins {
            rule: Rule::SameOrigin,
            require: false,
        }
    }

    /// Only these origins (scheme, host and port, as a browser sends them:
    /// `https://example.com`, `http://localhost:8080`), compared without regard
    /// to case and to a default port.
    pub fn allow<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = origins
            .into_iter()
            .filter_map(|o| normalize(o.as_ref()))
            .collect();
        Origins {
            rule: Rule::List(list),
            require: false,
        }
    }

    /// Whether a request without `Origin` is refused too. Default: false, as
    /// non-browser clients do not send one and are not what the check is for.
    pub fn require_origin(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// Checks a request's headers, its URI giving the authority for HTTP/2.
    ///
    /// # Errors
    ///
    /// A 403 [`Rejection`] saying the origin is not allowed.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Rejection> {
        if self.rule == Rule::Any && !self.require {
            return Ok(());
        }
        let mut values = headers.get_all(ORIGIN).iter();
        let origin = match (values.next(), values.next()) {
            (None, _) if !self.require => return Ok(()),
            (Some(value), None) => value.to_str().ok().and_then(normalize),
            _ => None,
        };
        let allowed = match (&self.rule, &origin) {
            (_, None) => false,
            (Rule::Any, Some(_)) => true,
            (Rule::List(list), Some(origin)) => list.iter().any(|o| o == origin),
            (Rule::SameOrigin, Some(origin)) => {
                let host = headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| uri.authority().map(|a| a.as_str()));
                match (host, origin.split_once("://")) {
                    (Some(host), Some((scheme, origin_host))) => {
                        strip_default_port(&host.to_ascii_lowercase(), scheme) == origin_host
                    }
                    _ => false,
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Rejection::new(StatusCode::FORBIDDEN).body("origin not allowed\n"))
        }
    }
}

/// `scheme://host[:port]` in lower case, without a default port or a trailing
/// slash; `None` for anything else (`null`, a path).
fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, host) = origin.split_once("://")?;
    if host.is_empty() || host.contains('/') || !matches!(scheme, "http" | "https") {
        return None;
    }
    Some(format!("{scheme}://{}", strip_default_port(host, scheme)))
}

fn strip_default_port<'a>(host: &'a str, scheme: &str) -> &'a str {
    let default = match scheme {
        "https" | "wss" => ":443",
        _ => ":80",
    };
    host.strip_suffix(default).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            map.insert(ORIGIN, origin.parse().unwrap());
        }
        map
    }

    fn ok(policy: &Origins, origin: Option<&str>, host: &str) -> bool {
        policy
            .check(&headers(origin, host), &Uri::from_static("/"))
            .is_ok()
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let p = Origins::same_origin();
        assert!(ok(&p, Some("http://localhost:8080"), "localhost:8080"));
        assert!(ok(&p, Some("https://Example.com"), "example.com"));
        assert!(ok(&p, Some("https://example.com:443"), "example.com"));
        assert!(ok(&p, Some("http://example.com"), "example.com:80"));
        assert!(!ok(&p, Some("https://evil.example"), "example.com"));
        assert!(!ok(&p, Some("http://localhost:8081"), "localhost:8080"));
        assert!(!ok(&p, Some("null"), "example.com"));
        assert!(ok(&p, None, "example.com"), "no Origin: not a browser");
        assert!(!ok(&p.clone().require_origin(true), None, "example.com"));
    }

    #[test]
    fn same_origin_over_http2_uses_the_authority() {
        let p = Origins::same_origin();
        let mut map = HeaderMap::new();
        map.insert(ORIGIN, "https://127.0.0.1:8443".parse().unwrap());
        let uri = Uri::from_static("https://127.0.0.1:8443/ws");
        assert!(p.check(&map, &uri).is_ok());
        let other = Uri::from_static("https://127.0.0.1:9443/ws");
        assert!(p.check(&map, &other).is_err());
    }

    #[test]
    fn allow_list() {
        let p = Origins::allow(["https://app.example.com/", "http://localhost:3000"]);
        assert!(ok(&p, Some("https://app.example.com"), "api.example.com"));
        assert!(ok(
            &p,
            Some("https://APP.example.com:443"),
            "api.example.com"
        ));
        assert!(ok(&p, Some("http://localhost:3000"), "x"));
        assert!(!ok(&p, Some("http://localhost:3001"), "x"));
        assert!(!ok(&p, Some("https://evil.example"), "x"));
        let refused = p
            .check(
                &headers(Some("https://evil.example"), "x"),
                &Uri::from_static("/"),
            )
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn any_lets_everything_through() {
        assert!(ok(&Origins::any(), Some("https://evil.example"), "x"));
        assert!(ok(&Origins::any(), None, "x"));
    }
}
