//! `NO_PROXY` rules: which destinations are reached directly even when a proxy is set.
//!
//! The common dialect (curl, Go, reqwest): comma- or space-separated entries; `*` matches
//! everything; an IP address or CIDR matches addresses; any other entry is a domain that
//! matches itself and its subdomains (`example.com`, `.example.com` and `*.example.com` are
//! the same rule). Any entry may end in `:port` to match only that port. Names are not
//! resolved: `10.0.0.0/8` matches `https://10.1.2.3`, not a name that resolves there.

use std::net::IpAddr;

use ipnet::IpNet;

/// A parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    target: Target,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Net(IpNet),
    Domain(String),
}

impl NoProxy {
    /// Parses entries as found in `NO_PROXY` (each may itself hold a comma-separated list).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = NoProxy::default();
        for entry in entries
            .into_iter()
            .flat_map(|e| e.split([',', ' ', '\t', '\n']))
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                out.all = true;
            } else if let Some(rule) = Rule::parse(entry) {
                out.rules.push(rule);
            }
        }
        out
    }

    /// Whether nothing is excluded.
    pub fn is_empty(&self) -> bool {
        !self.all && self.rules.is_empty()
    }

    /// Whether a request to `host` (a name or an IP literal, IPv6 with or without brackets) on
    /// `port` goes direct.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.rules.iter().any(|rule| {
            rule.port.is_none_or(|p| p == port)
                && match (&rule.target, ip) {
                    (Target::Net(net), Some(ip)) => net.contains(&ip),
                    (Target::Domain(domain), None) => {
                        host == *domain
                            || host
                                .strip_suffix(domain.as_str())
                                .is_some_and(|rest| rest.ends_with('.'))
                    }
                    _ => false,
                }
        })
    }
}

impl Rule {
    fn parse(entry: &str) -> Option<Rule> {
        // A bare IPv6 address has colons but no port; `[v6]:port` has brackets.
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (host, tail) = rest.split_once(']')?;
            (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()))
        } else if entry.matches(':').count() == 1 {
            let (host, port) = entry.split_once(':')?;
            (host, Some(port.parse().ok()?))
        } else {
            (entry, None)
        };
        let target = if let Ok(net) = host.parse::<IpNet>() {
            Target::Net(net)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Target::Net(IpNet::from(ip))
        } else {
            let domain = host
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if domain.is_empty() {
                return None;
            }
            Target::Domain(domain)
        };
        Some(Rule { target, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(list: &str) -> NoProxy {
        NoProxy::parse([list])
    }

    #[test]
    fn domains_match_themselves_and_subdomains_only() {
        for list in [
            "corp.example",
            ".corp.example",
            "*.corp.example",
            "CORP.example.",
        ] {
            let n = np(list);
            assert!(n.matches("corp.example", 443), "{list}");
            assert!(n.matches("vault.dc1.corp.example", 443), "{list}");
            assert!(n.matches("Vault.Corp.Example.", 443), "{list}");
            assert!(!n.matches("notcorp.example", 443), "{list}");
            assert!(!n.matches("corp.example.org", 443), "{list}");
        }
    }

    #[test]
    fn ips_and_cidrs_match_addresses_not_names() {
        let n = np("10.0.0.0/8, 192.168.1.7 ,::1, fd00::/8");
        assert!(n.matches("10.200.3.4", 6443));
        assert!(n.matches("192.168.1.7", 80));
        assert!(!n.matches("192.168.1.8", 80));
        assert!(n.matches("[::1]", 8200));
        assert!(n.matches("fd12::5", 443));
        assert!(!n.matches("11.0.0.1", 443));
        assert!(!n.matches("ten.example", 443));
    }

    #[test]
    fn port_suffix_limits_a_rule_to_that_port() {
        let n = np("kms.internal:8443,127.0.0.1:2379,[::1]:6443");
        assert!(n.matches("kms.internal", 8443));
        assert!(!n.matches("kms.internal", 443));
        assert!(n.matches("127.0.0.1", 2379));
        assert!(!n.matches("127.0.0.1", 2380));
        assert!(n.matches("::1", 6443));
        assert!(!n.matches("::1", 443));
    }

    #[test]
    fn star_matches_everything_and_blanks_match_nothing() {
        assert!(np("localhost, *").matches("anything.example", 1));
        let blank = NoProxy::parse(["", " , ,"]);
        assert!(blank.is_empty());
        assert!(!blank.matches("localhost", 80));
    }
}
