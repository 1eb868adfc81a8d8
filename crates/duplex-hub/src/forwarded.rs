//! The client's address behind reverse proxies: `Forwarded` (RFC 7239) and
//! `X-Forwarded-For`, believed only when they come from a trusted proxy.
//!
//! The rules, for a connection from `peer`:
//!
//! - `peer` is not in `server.trusted_proxies`: the headers are ignored, and
//!   the client is `peer` (a client cannot choose its address by sending
//!   them).
//! - `peer` is trusted: the `Forwarded` header if there is one, else
//!   `X-Forwarded-For`, is read from the right (the hop nearest the hub)
//!   to the left. Each trusted proxy on the way is skipped; the first
//!   address that is not a trusted proxy is the client. If every address
//!   is a trusted proxy, the client is the leftmost.
//! - The walk stops at the first entry that is not an address (`for=unknown`,
//!   an obfuscated `for=_hidden`, garbage): nothing left of it can be
//!   believed, so the client is the last address found before it (the
//!   trusted proxy that could not name its own client). With no header, or
//!   an unreadable rightmost entry, that is `peer`.
//!
//! Since `Forwarded` wins over `X-Forwarded-For`, a trusted proxy must either
//! set `Forwarded` itself or remove the one a client sent (docs/DEPLOY.md
//! shows both for nginx and HAProxy).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Entries of one header read at most: a longer chain of proxies is not a
/// deployment, and the walk stops there (with the last address found).
const MAX_HOPS: usize = 64;

/// The addresses of the reverse proxies whose `Forwarded` and
/// `X-Forwarded-For` headers are believed (`server.trusted_proxies`): IP
/// addresses and CIDR ranges. Empty (the default) trusts no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses a list of entries such as `127.0.0.1`, `10.0.0.0/8` or `::1`.
    ///
    /// # Errors
    ///
    /// The first entry that is neither an IP address nor a CIDR range, named
    /// in the message.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let nets = entries
            .iter()
            .map(|entry| parse_net(entry.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts
    /// as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The entries, as ranges (a single address is a /32 or /128).
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

fn parse_net(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    Err(format!(
        "server.trusted_proxies: {entry:?} is not an IP address (127.0.0.1, ::1) \
         or a CIDR range (10.0.0.0/8, fd00::/8)"
    ))
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        TrustedProxies::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// Where a connection comes from: the TCP peer, and the client's address
/// (the peer itself, or the client a trusted proxy names). Per-client
/// limits and logs use [`ip`](Self::ip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    client: IpAddr,
    peer: SocketAddr,
}

impl ClientAddr {
    /// A client connected directly from `peer`.
    pub fn direct(peer: SocketAddr) -> ClientAddr {
        ClientAddr {
            client: peer.ip().to_canonical(),
            peer,
        }
    }

    /// The client of a request that came from `peer` with `headers`, by the
    /// rules of this module.
    pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientAddr {
        ClientAddr {
            client: client_ip(peer.ip(), headers, trusted),
            peer,
        }
    }

    /// The client's IP address.
    pub fn ip(&self) -> IpAddr {
        self.client
    }

    /// The TCP peer (the proxy's address when behind one).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The TCP peer's IP address when it is not the client's (a proxy).
    pub fn proxy(&self) -> Option<IpAddr> {
        let peer = self.peer.ip().to_canonical();
        (peer != self.client).then_some(peer)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proxy() {
            None => write!(f, "{}", self.client),
            Some(proxy) => write!(f, "{} (through {proxy})", self.client),
        }
    }
}

/// The client's address for a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded = headers.get_all(http::header::FORWARDED);
    let hops: Vec<Hop> = if forwarded.iter().next().is_some() {
        let mut hops = Vec::new();
        for value in forwarded.iter().rev() {
            match value.to_str() {
                Ok(text) => {
                    let before = hops.len();
                    hops.extend(split_unquoted(text, b',').rev().map(forwarded_for));
                    if hops.len() - before == 0 {
                        hops.push(Hop::Unknown);
                    }
                }
                Err(_) => hops.push(Hop::Unknown),
            }
            if hops.len() >= MAX_HOPS {
                break;
            }
        }
        hops
    } else {
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            match value.to_str() {
                Ok(text) => hops.extend(text.rsplit(',').map(|hop| parse_node(hop.trim()))),
                Err(_) => hops.push(Hop::Unknown),
            }
            if hops.len() >= MAX_HOPS {
                break;
            }
        }
        hops
    };
    let mut client = peer;
    for hop in hops.into_iter().take(MAX_HOPS) {
        match hop {
            Hop::Addr(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            Hop::Unknown => break,
        }
    }
    client
}

/// One entry of a forwarding header, from the client's side.
#[derive(Debug, PartialEq, Eq)]
enum Hop {
    /// An IP address (a port, if given, dropped).
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, a missing `for`, or garbage.
    Unknown,
}

/// The `for` node of one `Forwarded` element (`for=192.0.2.60;proto=https`).
fn forwarded_for(element: &str) -> Hop {
    let mut found = Hop::Unknown;
    for pair in split_unquoted(element, b';') {
        let Some((name, value)) = pair.split_once('=') else {
            // A pair without `=` is not RFC 7239: the element is unreadable.
            return Hop::Unknown;
        };
        if name.trim().eq_ignore_ascii_case("for") {
            let Some(value) = unquote(value.trim()) else {
                return Hop::Unknown;
            };
            found = parse_node(value);
        }
    }
    found
}

/// The value of a token or quoted-string (RFC 7230 section 3.2.6); `None`
/// for an unterminated quote.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        None => Some(value),
        // A node never contains `\` or `"`: an escaped one is garbage, and
        // the parse of the node says so.
        Some(rest) => rest.strip_suffix('"'),
    }
}

/// A node (RFC 7239 section 6): `192.0.2.43`, `192.0.2.43:47011`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`; a bare IPv6 address as
/// `X-Forwarded-For` writes it. `unknown` and obfuscated names are not
/// addresses.
fn parse_node(node: &str) -> Hop {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Hop::Addr(ip.to_canonical());
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Hop::Addr(addr.ip().to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let inside = match rest.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, port)) if valid_port(port) => inside,
            _ => return Hop::Unknown,
        };
        if let Ok(ip) = inside.parse::<std::net::Ipv6Addr>() {
            return Hop::Addr(IpAddr::V6(ip).to_canonical());
        }
        return Hop::Unknown;
    }
    if let Some((ip, port)) = node.rsplit_once(':')
        && valid_port(&format!(":{port}"))
        && let Ok(ip) = ip.parse::<std::net::Ipv4Addr>()
    {
        return Hop::Addr(IpAddr::V4(ip));
    }
    Hop::Unknown
}

/// `:PORT` with a number, or an obfuscated port (`:_abc`).
fn valid_port(port: &str) -> bool {
    let Some(port) = port.strip_prefix(':') else {
        return false;
    };
    port.parse::<u16>().is_ok()
        || (port.starts_with('_')
            && port.len() > 1
            && port[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

/// Splits on `sep` outside quoted strings (a `\` escapes inside them).
fn split_unquoted(text: &str, sep: u8) -> impl DoubleEndedIterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(text[start..i].trim());
            start = i + 1;
        }
    }
    parts.push(text[start..].trim());
    parts.into_iter().filter(|part| !part.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(peer: &str, pairs: &[(&str, &str)], proxies: &[&str]) -> IpAddr {
        client_ip(ip(peer), &headers(pairs), &trusted(proxies))
    }

    #[test]
    fn entries_are_addresses_and_ranges_and_a_bad_one_is_named() {
        let proxies = trusted(&[
            "127.0.0.1",
            "10.0.0.0/8",
            "::1",
            "fd00::/8",
            "192.168.1.7/16",
        ]);
        assert!(proxies.contains(ip("127.0.0.1")));
        assert!(!proxies.contains(ip("127.0.0.2")));
        assert!(proxies.contains(ip("10.200.3.4")));
        assert!(!proxies.contains(ip("11.0.0.1")));
        assert!(proxies.contains(ip("::1")));
        assert!(proxies.contains(ip("fd12::5")));
        assert!(proxies.contains(ip("192.168.200.1")), "host bits dropped");
        assert!(
            proxies.contains(ip("::ffff:10.1.1.1")),
            "an IPv4-mapped peer is its IPv4 address"
        );
        for bad in ["10.0.0.300", "10.0.0.0/33", "localhost", "", "10.0.0.0/"] {
            let err = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("trusted_proxies"), "{err}");
        }
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let forged = [
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ];
        assert_eq!(client("127.0.0.2", &forged, &[]), ip("127.0.0.2"));
        assert_eq!(
            client("127.0.0.2", &forged, &["127.0.0.3"]),
            ip("127.0.0.2")
        );
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(client("127.0.0.3", &[], &["127.0.0.3"]), ip("127.0.0.3"));
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right() {
        // The client forged 203.0.113.7; the proxy appended the real peer.
        let h = [("x-forwarded-for", "203.0.113.7, 198.51.100.2")];
        assert_eq!(client("127.0.0.3", &h, &["127.0.0.3"]), ip("198.51.100.2"));
        // Several header lines are one list, in order.
        let h = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2"),
        ];
        assert_eq!(client("127.0.0.3", &h, &["127.0.0.3"]), ip("198.51.100.2"));
    }

    #[test]
    fn trusted_proxies_in_the_chain_are_skipped() {
        // client -> 10.0.0.5 (edge proxy) -> 127.0.0.3 (local proxy) -> hub.
        let h = [("x-forwarded-for", "203.0.113.7, 198.51.100.2, 10.0.0.5")];
        assert_eq!(
            client("127.0.0.3", &h, &["127.0.0.3", "10.0.0.0/8"]),
            ip("198.51.100.2")
        );
        // The edge proxy not trusted: it is the client, whatever it says.
        assert_eq!(client("127.0.0.3", &h, &["127.0.0.3"]), ip("10.0.0.5"));
        // Every hop trusted: the leftmost is the client.
        let h = [("x-forwarded-for", "10.1.1.1, 10.0.0.5")];
        assert_eq!(
            client("127.0.0.3", &h, &["127.0.0.3", "10.0.0.0/8"]),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for() {
        let h = [
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=198.51.100.2;proto=https;by=127.0.0.3"),
        ];
        assert_eq!(client("127.0.0.3", &h, &["127.0.0.3"]), ip("198.51.100.2"));
        let h = [(
            "forwarded",
            "for=203.0.113.7, for=198.51.100.2;proto=https, for=10.0.0.5",
        )];
        assert_eq!(
            client("127.0.0.3", &h, &["127.0.0.3", "10.0.0.0/8"]),
            ip("198.51.100.2")
        );
        let h = [
            ("forwarded", "for=203.0.113.7"),
            ("Forwarded", "For=\"198.51.100.2:4711\""),
        ];
        assert_eq!(client("127.0.0.3", &h, &["127.0.0.3"]), ip("198.51.100.2"));
    }

    #[test]
    fn ipv6_and_ports() {
        let p = &["::1"];
        let f = |value| client("::1", &[("forwarded", value)], p);
        assert_eq!(
            f("for=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(f("for=\"[2001:db8:cafe::17]\""), ip("2001:db8:cafe::17"));
        assert_eq!(f("for=\"[2001:db8::1]:_port\""), ip("2001:db8::1"));
        assert_eq!(f("for=192.0.2.43:47011"), ip("192.0.2.43"));
        assert_eq!(f("for=\"192.0.2.43:47011\""), ip("192.0.2.43"));
        assert_eq!(f("for=\"[::ffff:192.0.2.9]\""), ip("192.0.2.9"));
        let x = |value| client("::1", &[("x-forwarded-for", value)], p);
        assert_eq!(x("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(x("[2001:db8::1]:80"), ip("2001:db8::1"));
        assert_eq!(x("192.0.2.43:47011"), ip("192.0.2.43"));
        // A trusted IPv4-mapped peer is the IPv4 proxy.
        assert_eq!(
            client(
                "::ffff:127.0.0.3",
                &[("x-forwarded-for", "192.0.2.43")],
                &["127.0.0.3"]
            ),
            ip("192.0.2.43")
        );
    }

    #[test]
    fn unknown_and_obfuscated_hops_end_the_walk() {
        let p = &["127.0.0.3", "10.0.0.0/8"];
        // The proxy could not name its client: it is the client, and what
        // is left of it is not believed.
        let f = |value| client("127.0.0.3", &[("forwarded", value)], p);
        assert_eq!(f("for=203.0.113.7, for=unknown"), ip("127.0.0.3"));
        assert_eq!(f("for=203.0.113.7, for=_hidden"), ip("127.0.0.3"));
        assert_eq!(
            f("for=203.0.113.7, for=_hidden, for=10.0.0.5"),
            ip("10.0.0.5")
        );
        // No `for` in the element: nobody named.
        assert_eq!(f("for=203.0.113.7, proto=https"), ip("127.0.0.3"));
    }

    #[test]
    fn garbage_is_never_an_address() {
        let p = &["127.0.0.3"];
        for value in [
            "",
            ",,,",
            "for=",
            "for=\"[2001:db8::1\"",
            "for=\"[2001:db8::1]x\"",
            "for=\"unterminated",
            "for=1.2.3.4.5",
            "nonsense",
            "for=2001:db8::1:99999",
            "for=\"1.2.3.4\\\"\"",
            "for=300.1.1.1",
        ] {
            assert_eq!(
                client("127.0.0.3", &[("forwarded", value)], p),
                ip("127.0.0.3"),
                "Forwarded: {value}"
            );
        }
        for value in ["", "garbage", "1.2.3.4.5", "[::1", "1.2.3.4:port", " , "] {
            assert_eq!(
                client("127.0.0.3", &[("x-forwarded-for", value)], p),
                ip("127.0.0.3"),
                "X-Forwarded-For: {value}"
            );
        }
        // Garbage left of the client does not matter.
        let h = [("x-forwarded-for", "garbage, 198.51.100.2")];
        assert_eq!(client("127.0.0.3", &h, p), ip("198.51.100.2"));
        // Bytes that are not text.
        let mut map = HeaderMap::new();
        map.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(
            client_ip(ip("127.0.0.3"), &map, &trusted(p)),
            ip("127.0.0.3")
        );
    }

    #[test]
    fn a_long_chain_is_read_only_so_far() {
        let p = &["127.0.0.3", "10.0.0.0/8"];
        let chain: Vec<String> = (0..1000)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let value = format!("203.0.113.7, {}", chain.join(", "));
        let found = client("127.0.0.3", &[("x-forwarded-for", &value)], p);
        assert!(p[1].parse::<IpNet>().unwrap().contains(&found), "{found}");
        assert_ne!(found, ip("203.0.113.7"));
    }

    #[test]
    fn client_addr_names_the_proxy_when_there_is_one() {
        let peer: SocketAddr = "127.0.0.3:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.2")]);
        let behind = ClientAddr::resolve(peer, &h, &trusted(&["127.0.0.3"]));
        assert_eq!(behind.ip(), ip("198.51.100.2"));
        assert_eq!(behind.proxy(), Some(ip("127.0.0.3")));
        assert_eq!(behind.to_string(), "198.51.100.2 (through 127.0.0.3)");
        let direct = ClientAddr::resolve(peer, &h, &TrustedProxies::default());
        assert_eq!(direct, ClientAddr::direct(peer));
        assert_eq!(direct.proxy(), None);
        assert_eq!(direct.peer(), peer);
    }
}
