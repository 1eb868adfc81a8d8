//! Client proxies: HTTP CONNECT and SOCKS5, chosen explicitly or from the
//! environment as curl reads it.
//!
//! The tunnel is a plain TCP stream to the target once set up, so `wss://`
//! runs TLS inside it end to end: the server name sent and the certificate
//! checked are the target's, never the proxy's.

mod error;
mod no_proxy;
mod tunnel;

use std::fmt;
use std::str::FromStr;

pub use self::error::{ProxyError, ProxyErrorKind};
use self::no_proxy::NoProxy;
use crate::error::{Error, Result};

/// The protocol spoken to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// HTTP CONNECT (RFC 9110 section 9.3.6).
    Http,
    /// SOCKS5 (RFC 1928), the target's name resolved here first.
    Socks5,
    /// SOCKS5 with the target's name sent to the proxy to resolve.
    Socks5h,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
        }
    }
}

/// A proxy to connect through: `http://[user:pass@]host[:port]` (HTTP
/// CONNECT, with Basic authentication when a user is given),
/// `socks5://[user:pass@]host[:port]` (SOCKS5; the target's name is
/// resolved locally) or `socks5h://...` (the proxy resolves the name).
///
/// A URL without a scheme is an HTTP proxy, as curl takes it. The port is
/// 1080 by default for SOCKS and 80 for HTTP (curl uses 1080 for both; 80 is
/// the HTTP port, which is what a proxy URL without one usually means). The
/// user and password are percent-decoded (`p%40ss` is `p@ss`). `https://`
/// proxies (TLS to the proxy itself) are not supported.
///
/// Neither `Display` nor `Debug` shows the password: `Display` gives the
/// URL without credentials, `Debug` shows the user only.
///
/// ```
/// let proxy: duplex::Proxy = "socks5h://alice:s%3Acret@127.0.0.1:1080".parse()?;
/// assert_eq!(proxy.to_string(), "socks5h://127.0.0.1:1080");
/// assert!(!format!("{proxy:?}").contains("s:cret"));
/// # Ok::<(), duplex::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    scheme: Scheme,
    /// The host without brackets (an IPv6 literal is bare).
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

impl Proxy {
    /// Parses a proxy URL (see the type's documentation for the forms).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a scheme other than `http`, `socks5` and
    /// `socks5h`, a missing host, a bad port, a path, or bad percent-encoding
    /// in the credentials; SOCKS5 user names and passwords must be 1 to 255
    /// bytes (RFC 1929).
    pub fn new(url: &str) -> Result<Proxy> {
        let bad = |why: &str| Error::Config(format!("proxy {:?}: {why}", redact(url)));
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), url),
        };
        let scheme = match scheme.as_str() {
            "http" => Scheme::Http,
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            "https" => {
                return Err(bad(
                    "https:// proxies (TLS to the proxy) are not supported; use http://, socks5:// or socks5h://",
                ));
            }
            _ => return Err(bad("the scheme must be http://, socks5:// or socks5h://")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user)
                    .ok_or_else(|| bad("the user name is not valid percent-encoded UTF-8"))?;
                let password = percent_decode(password)
                    .ok_or_else(|| bad("the password is not valid percent-encoded UTF-8"))?;
                Some(Credentials { user, password })
            }
        };
        if scheme != Scheme::Http
            && let Some(c) = &credentials
            && (!(1..=255).contains(&c.user.len()) || !(1..=255).contains(&c.password.len()))
        {
            return Err(bad(
                "a SOCKS5 user name and password must each be 1 to 255 bytes",
            ));
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("the port is not valid"))?;
        if host.is_empty() {
            return Err(bad("the URL has no host"));
        }
        let port = port.unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Socks5 | Scheme::Socks5h => 1080,
        });
        if port == 0 {
            return Err(bad("the port is not valid"));
        }
        Ok(Proxy {
            scheme,
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// The proxy the process's environment chooses for `url` (a `ws://` or
    /// `wss://` URL), if any, as curl chooses it: see
    /// [`from_vars`](Self::from_vars).
    ///
    /// # Errors
    ///
    /// As [`from_vars`](Self::from_vars).
    pub fn from_env(url: &str) -> Result<Option<Proxy>> {
        Proxy::from_vars(url, |name| std::env::var(name).ok())
    }

    /// The proxy that the variables `lookup` gives choose for `url` (a
    /// `ws://` or `wss://` URL), if any, as curl chooses it:
    ///
    /// - `wss://`: `https_proxy`, else `HTTPS_PROXY`;
    /// - `ws://`: `http_proxy` only: as curl does, the upper-case
    ///   `HTTP_PROXY` is ignored, since a CGI-style server sets it from a
    ///   request's `Proxy:` header;
    /// - then, for either, `all_proxy`, else `ALL_PROXY`;
    /// - `no_proxy`, else `NO_PROXY`, lists the hosts to reach directly,
    ///   separated by commas or spaces: `*` alone means every host; a name
    ///   matches itself and its subdomains (`example.com` and
    ///   `.example.com` both match `example.com` and `a.example.com`); an
    ///   IP address or a CIDR range (`10.0.0.0/8`, `::1/128`) matches hosts
    ///   written as IP addresses; an entry's `:port`, if it has one, must
    ///   be the target's port too.
    ///
    /// An empty variable counts as unset.
    ///
    /// ```
    /// let vars = [("https_proxy", "http://proxy.internal:3128"), ("no_proxy", ".local")];
    /// let lookup = |name: &str| {
    ///     vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    /// };
    /// let proxy = duplex::Proxy::from_vars("wss://example.com/", lookup)?;
    /// assert_eq!(proxy.unwrap().to_string(), "http://proxy.internal:3128");
    /// assert!(duplex::Proxy::from_vars("wss://printer.local/", lookup)?.is_none());
    /// assert!(duplex::Proxy::from_vars("ws://example.com/", lookup)?.is_none());
    /// # Ok::<(), duplex::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Url`] if `url` is not a `ws://` or `wss://` URL with a host;
    /// [`Error::Config`] if the chosen variable is not a proxy URL.
    pub fn from_vars(url: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::Url(format!("{url:?}: {e}")))?;
        let target = crate::client::ClientBuilder::target(&uri)?;
        Proxy::select(target.tls, &target.host, target.port, &lookup)
    }

    /// The environment's choice for a target, given as its parts.
    pub(crate) fn select(
        secure: bool,
        host: &str,
        port: u16,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Proxy>> {
        let set = |name: &'static str| {
            lookup(name)
                .filter(|value| !value.trim().is_empty())
                .map(|value| (name, value))
        };
        let chosen = if secure {
            set("https_proxy").or_else(|| set("HTTPS_PROXY"))
        } else {
            set("http_proxy")
        };
        let Some((name, value)) = chosen.or_else(|| set("all_proxy").or_else(|| set("ALL_PROXY")))
        else {
            return Ok(None);
        };
        let no_proxy = set("no_proxy").or_else(|| set("NO_PROXY"));
        if let Some((_, list)) = no_proxy
            && NoProxy::parse(&list).matches(host, port)
        {
            return Ok(None);
        }
        match Proxy::new(value.trim()) {
            Ok(proxy) => Ok(Some(proxy)),
            Err(Error::Config(why)) => Err(Error::Config(format!("{name}: {why}"))),
            Err(other) => Err(other),
        }
    }

    /// `host:port` as it goes on the wire, with brackets for IPv6.
    fn authority(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    fn error(&self, kind: ProxyErrorKind) -> Error {
        Error::Proxy(ProxyError {
            proxy: self.to_string(),
            kind,
        })
    }
}

impl FromStr for Proxy {
    type Err = Error;

    fn from_str(url: &str) -> Result<Proxy> {
        Proxy::new(url)
    }
}

/// The URL without credentials: `scheme://host:port`.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme.as_str(),
            Proxy::authority(&self.host, self.port)
        )
    }
}

/// The URL with the user but not the password.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let authority = Proxy::authority(&self.host, self.port);
        match &self.credentials {
            Some(c) => write!(
                f,
                "Proxy({}://{}:***@{authority})",
                self.scheme.as_str(),
                c.user
            ),
            None => write!(f, "Proxy({}://{authority})", self.scheme.as_str()),
        }
    }
}

/// A URL with any `user:password@` taken out, for error messages.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The last '@' anywhere: a password with an unencoded '/' or '#' in it
    // is still cut out (and a path with an '@', cut short).
    let rest = match rest.rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest.to_owned(),
    }
}

/// Splits `host[:port]` or `[v6][:port]`; `None` if the port is not a number.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes_with_default_ports() {
        let p = Proxy::new("http://proxy.example:3128").unwrap();
        assert_eq!(
            (p.scheme, p.host.as_str(), p.port),
            (Scheme::Http, "proxy.example", 3128)
        );
        assert_eq!(Proxy::new("http://proxy.example").unwrap().port, 80);
        assert_eq!(Proxy::new("http://proxy.example/").unwrap().port, 80);
        let p = Proxy::new("socks5://10.0.0.1").unwrap();
        assert_eq!((p.scheme, p.port), (Scheme::Socks5, 1080));
        let p = Proxy::new("SOCKS5H://[::1]:9050").unwrap();
        assert_eq!(
            (p.scheme, p.host.as_str(), p.port),
            (Scheme::Socks5h, "::1", 9050)
        );
        assert_eq!(p.to_string(), "socks5h://[::1]:9050");
        // No scheme: HTTP, as curl takes it.
        let p: Proxy = "127.0.0.1:3128".parse().unwrap();
        assert_eq!((p.scheme, p.port), (Scheme::Http, 3128));
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_shown() {
        let p = Proxy::new("http://al%69ce:p%40ss%3Aword@proxy:8080").unwrap();
        let c = p.credentials.as_ref().unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("alice", "p@ss:word")
        );
        assert_eq!(p.to_string(), "http://proxy:8080");
        assert_eq!(format!("{p:?}"), "Proxy(http://alice:***@proxy:8080)");
        // An '@' in the password, unencoded: the last '@' ends the userinfo.
        let p = Proxy::new("socks5://u:a@b@proxy").unwrap();
        assert_eq!(p.credentials.unwrap().password, "a@b");
        let p = Proxy::new("http://user@proxy").unwrap();
        assert_eq!(p.credentials.unwrap().password, "");
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_their_password() {
        for (url, why) in [
            ("https://u:secret@proxy:443", "not supported"),
            ("socks4://proxy", "scheme"),
            ("http://u:secret@proxy:99999", "port"),
            ("http://u:secret@proxy:0", "port"),
            ("http://u:secret@proxy:3128/path", "no path"),
            ("http://u:secret@:3128", "no host"),
            ("http://u:sec%zzret@proxy", "percent"),
            ("http://u:%ff@proxy", "percent"),
            ("socks5://u@proxy", "1 to 255"),
            ("[::1", "port"),
            ("http://u:se/cret@proxy", "no path"),
        ] {
            let err = Proxy::new(url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{url}: {text}");
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains("secret"), "{url}: {text}");
        }
        let long = "x".repeat(256);
        assert!(Proxy::new(&format!("socks5://{long}:p@proxy")).is_err());
        assert!(Proxy::new(&format!("http://{long}:p@proxy")).is_ok());
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn chosen(url: &str, pairs: &[(&str, &str)]) -> Option<String> {
        Proxy::from_vars(url, vars(pairs))
            .unwrap()
            .map(|p| p.to_string())
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        // wss: https_proxy before HTTPS_PROXY, either before all_proxy.
        let all = [
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
            ("http_proxy", "http://plain:3"),
            ("all_proxy", "socks5h://all:4"),
            ("ALL_PROXY", "socks5h://ALL:5"),
        ];
        assert_eq!(chosen("wss://x/", &all).unwrap(), "http://lower:1");
        assert_eq!(chosen("wss://x/", &all[1..]).unwrap(), "http://upper:2");
        assert_eq!(chosen("wss://x/", &all[2..]).unwrap(), "socks5h://all:4");
        assert_eq!(chosen("wss://x/", &all[4..]).unwrap(), "socks5h://ALL:5");
        // ws: http_proxy, then all_proxy; the upper-case HTTP_PROXY never.
        assert_eq!(chosen("ws://x/", &all).unwrap(), "http://plain:3");
        assert_eq!(chosen("ws://x/", &all[3..]).unwrap(), "socks5h://all:4");
        assert_eq!(chosen("ws://x/", &[("HTTP_PROXY", "http://p:1")]), None);
        assert_eq!(chosen("ws://x/", &[("https_proxy", "http://p:1")]), None);
        // Empty counts as unset.
        assert_eq!(
            chosen(
                "wss://x/",
                &[("https_proxy", ""), ("HTTPS_PROXY", "http://u:2")]
            )
            .unwrap(),
            "http://u:2"
        );
        assert_eq!(chosen("wss://x/", &[]), None);
    }

    #[test]
    fn no_proxy_from_the_environment_bypasses_the_proxy() {
        let set = [
            ("http_proxy", "http://p:1"),
            ("no_proxy", "a.example"),
            ("NO_PROXY", "b.example"),
        ];
        assert_eq!(chosen("ws://a.example/", &set), None);
        // no_proxy is read before NO_PROXY, not beside it.
        assert!(chosen("ws://b.example/", &set).is_some());
        assert_eq!(chosen("ws://b.example/", &[set[0], set[2]]), None);
        // The target's port, default or given, is what a `:port` entry sees.
        let set = [("https_proxy", "http://p:1"), ("no_proxy", "c.example:443")];
        assert_eq!(chosen("wss://c.example/", &set), None);
        assert!(chosen("wss://c.example:8443/", &set).is_some());
        let set = [("http_proxy", "http://p:1"), ("no_proxy", "::1")];
        assert_eq!(chosen("ws://[::1]:9000/", &set), None);
    }

    #[test]
    fn a_bad_proxy_variable_is_an_error_naming_it_unless_bypassed() {
        let set = [
            ("https_proxy", "ftp://u:secret@p:1"),
            ("no_proxy", "skip.example"),
        ];
        let err = Proxy::from_vars("wss://x/", vars(&set)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("https_proxy") && !text.contains("secret"),
            "{text}"
        );
        assert!(
            Proxy::from_vars("wss://skip.example/", vars(&set))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            Proxy::from_vars("http://x/", vars(&set)),
            Err(Error::Url(_))
        ));
    }
}
