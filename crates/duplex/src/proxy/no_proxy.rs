//! `NO_PROXY`: the hosts to reach without the environment's proxy.

use std::net::IpAddr;

use ipnet::IpNet;

use super::split_host_port;

/// A `NO_PROXY` list, as curl reads it.
#[derive(Debug, Default)]
pub(super) struct NoProxy {
    everything: bool,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    what: Pattern,
    port: Option<u16>,
}

#[derive(Debug)]
enum Pattern {
    /// A name, lower-case, without leading or trailing dots.
    Domain(String),
    /// An address or a range of them.
    Net(IpNet),
}

impl NoProxy {
    /// Parses a comma- or space-separated list; entries that are neither a
    /// name nor an address or range are ignored, as curl ignores them.
    pub(super) fn parse(list: &str) -> NoProxy {
        if list.trim() == "*" {
            return NoProxy {
                everything: true,
                entries: Vec::new(),
            };
        }
        let entries = list
            .split([',', ' ', '\t'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .filter_map(Entry::parse)
            .collect();
        NoProxy {
            everything: false,
            entries,
        }
    }

    /// Whether `host` (bare, without brackets) on `port` is reached directly.
    pub(super) fn matches(&self, host: &str, port: u16) -> bool {
        if self.everything {
            return true;
        }
        let ip = host.parse::<IpAddr>().ok();
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|entry| {
            if entry.port.is_some_and(|p| p != port) {
                return false;
            }
            match (&entry.what, ip) {
                (Pattern::Net(net), Some(ip)) => net.contains(&ip),
                (Pattern::Domain(domain), None) => {
                    name == *domain
                        || name
                            .strip_suffix(domain.as_str())
                            .is_some_and(|head| head.ends_with('.'))
                }
                _ => false,
            }
        })
    }
}

impl Entry {
    fn parse(entry: &str) -> Option<Entry> {
        if let Some(what) = Entry::net(entry) {
            return Some(Entry { what, port: None });
        }
        let (what, port) = split_host_port(entry)?;
        if let Some(what) = Entry::net(what) {
            return Some(Entry { what, port });
        }
        let domain = what.strip_prefix("*.").unwrap_or(what);
        let domain = domain.trim_start_matches('.').trim_end_matches('.');
        if domain.is_empty() || domain.contains(['/', '[', ']', ':', '*']) {
            return None;
        }
        Some(Entry {
            what: Pattern::Domain(domain.to_ascii_lowercase()),
            port,
        })
    }

    /// An IP address (as a one-address range) or a CIDR range.
    fn net(text: &str) -> Option<Pattern> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Pattern::Net(IpNet::from(ip)));
        }
        text.parse::<IpNet>().ok().map(Pattern::Net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_proxy(list: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(list).matches(host, port)
    }

    #[test]
    fn no_proxy_star_alone_means_every_host() {
        assert!(no_proxy("*", "example.com", 80));
        assert!(no_proxy(" * ", "10.1.2.3", 80));
        assert!(no_proxy("*", "::1", 80));
        // Not a wildcard inside a list, nor in a name, as with curl.
        assert!(!no_proxy("example.org,*", "example.com", 80));
    }

    #[test]
    fn no_proxy_names_match_themselves_and_subdomains() {
        for list in [
            "example.com",
            ".example.com",
            "*.example.com",
            "EXAMPLE.com.",
        ] {
            assert!(no_proxy(list, "example.com", 80), "{list}");
            assert!(no_proxy(list, "a.example.com", 80), "{list}");
            assert!(no_proxy(list, "b.a.Example.COM", 80), "{list}");
            assert!(no_proxy(list, "example.com.", 80), "{list}");
            assert!(!no_proxy(list, "badexample.com", 80), "{list}");
            assert!(!no_proxy(list, "example.com.evil", 80), "{list}");
            assert!(!no_proxy(list, "com", 80), "{list}");
        }
    }

    #[test]
    fn no_proxy_lists_split_on_commas_and_spaces() {
        let list = " one.example, two.example three.example,,\tfour.example ";
        for host in [
            "one.example",
            "two.example",
            "three.example",
            "four.example",
        ] {
            assert!(no_proxy(list, host, 80), "{host}");
        }
        assert!(!no_proxy(list, "five.example", 80));
        assert!(!no_proxy("", "one.example", 80));
    }

    #[test]
    fn no_proxy_addresses_and_ranges_match_ip_hosts_only() {
        assert!(no_proxy("127.0.0.1", "127.0.0.1", 80));
        assert!(!no_proxy("127.0.0.1", "127.0.0.2", 80));
        assert!(no_proxy("10.0.0.0/8", "10.200.3.4", 80));
        assert!(!no_proxy("10.0.0.0/8", "11.0.0.1", 80));
        assert!(no_proxy("192.168.1.0/24", "192.168.1.255", 80));
        assert!(no_proxy("::1", "::1", 80));
        assert!(no_proxy("[::1]", "::1", 80));
        assert!(no_proxy("::1/128", "::1", 80));
        assert!(!no_proxy("::1/128", "::2", 80));
        assert!(no_proxy("fd00::/8", "fd12:3456::1", 80));
        assert!(!no_proxy("fd00::/8", "10.0.0.1", 80));
        assert!(!no_proxy("10.0.0.0/8", "fd00::1", 80));
        // An address entry is not a name suffix, and a name does not match an
        // address.
        assert!(!no_proxy("0.0.1", "127.0.0.1", 80));
        assert!(!no_proxy("localhost", "127.0.0.1", 80));
        assert!(!no_proxy("127.0.0.1", "localhost", 80));
    }

    #[test]
    fn no_proxy_ports_must_match_when_given() {
        assert!(no_proxy("example.com:8080", "example.com", 8080));
        assert!(no_proxy(".example.com:8080", "a.example.com", 8080));
        assert!(!no_proxy("example.com:8080", "example.com", 80));
        assert!(no_proxy("127.0.0.1:9000", "127.0.0.1", 9000));
        assert!(!no_proxy("127.0.0.1:9000", "127.0.0.1", 9001));
        assert!(no_proxy("[::1]:9000", "::1", 9000));
        assert!(!no_proxy("[::1]:9000", "::1", 9001));
        // A bad port makes the entry ignored, not a match.
        assert!(!no_proxy("example.com:http", "example.com", 80));
    }
}
