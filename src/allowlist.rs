//! Where keyward may send credentials (DESIGN §7 "confused deputy"): whoever may create a
//! ProviderCredential or a Webhook pool could point its URL at their own server and have
//! keyward send it a Secret of that namespace. So an outbound URL must name a host the
//! operator allows: the providers' official hosts, plus `--allow-host` entries (an exact
//! host, case-insensitive, trailing dot ignored; or `*.domain` for any host below it).
//! URLs carrying userinfo are refused outright (`https://api.openai.com@evil.test/` goes to
//! evil.test). IP literals match only an identical `--allow-host` entry. The playground
//! also allows loopback, since everything there is local.

use std::collections::BTreeSet;
use std::net::IpAddr;

use url::{Host, Url};

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0:?} is not a URL")]
    NotUrl(String),
    #[error("{0}: only http and https URLs are allowed")]
    Scheme(String),
    #[error(
        "the URL carries a user name or password; put credentials in a Secret, never in the URL"
    )]
    UserInfo,
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "host {0:?} is not allowed: keyward only sends credentials to the providers' official hosts and to hosts the operator allows (--allow-host)"
    )]
    HostNotAllowed(String),
}

/// Why an `--allow-host` entry is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--allow-host {entry:?}: {why}")]
pub struct BadEntry {
    pub entry: String,
    pub why: &'static str,
}

/// The hosts keyward may call.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    exact: BTreeSet<String>,
    /// `*.example.com` as `.example.com`.
    below: BTreeSet<String>,
    loopback: bool,
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Allowlist {
    /// From `--allow-host` entries; `loopback` also allows localhost and loopback IPs.
    pub fn new(entries: &[String], loopback: bool) -> Result<Self, BadEntry> {
        let mut list = Self {
            loopback,
            ..Self::default()
        };
        for entry in entries {
            let bad = |why| BadEntry {
                entry: entry.clone(),
                why,
            };
            let e = normalize(entry.trim());
            if e.is_empty() {
                return Err(bad("empty"));
            }
            if e.contains("://") || e.contains('/') || e.contains('@') {
                return Err(bad("give a host name, not a URL"));
            }
            if let Some(rest) = e.strip_prefix("*.") {
                if rest.is_empty() || rest.contains('*') {
                    return Err(bad("a wildcard must be *.domain"));
                }
                list.below.insert(format!(".{rest}"));
            } else if e.contains('*') {
                return Err(bad("a wildcard must be *.domain"));
            } else {
                list.exact.insert(e);
            }
        }
        Ok(list)
    }

    /// Checks `url` against the list plus `official` hosts (a provider's own); returns the
    /// parsed URL when it may be called.
    pub fn check(&self, url: &str, official: &[&str]) -> Result<Url, Refused> {
        let parsed = Url::parse(url).map_err(|_| Refused::NotUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refused::Scheme(parsed.scheme().to_string()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refused::UserInfo);
        }
        let host = parsed.host().ok_or(Refused::NoHost)?;
        let allowed = match &host {
            Host::Domain(d) => {
                let d = normalize(d);
                (self.loopback && d == "localhost")
                    || official.iter().any(|o| normalize(o) == d)
                    || self.exact.contains(&d)
                    || self.below.iter().any(|suffix| d.ends_with(suffix.as_str()))
            }
            Host::Ipv4(ip) => self.ip_allowed(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => self.ip_allowed(IpAddr::V6(*ip)),
        };
        if allowed {
            Ok(parsed)
        } else {
            Err(Refused::HostNotAllowed(host.to_string()))
        }
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        (self.loopback && ip.is_loopback())
            || self
                .exact
                .iter()
                .any(|e| e.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str], loopback: bool) -> Allowlist {
        Allowlist::new(
            &entries.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            loopback,
        )
        .expect("valid entries")
    }

    #[test]
    fn exact_hosts_wildcards_case_and_trailing_dots() {
        let l = list(&["keygen.internal.example", "*.proxy.example"], false);
        for ok in [
            "https://keygen.internal.example/v1/keys",
            "https://KEYGEN.Internal.Example./v1",
            "http://keygen.internal.example:8443/x",
            "https://eu.proxy.example/openai/v1",
            "https://a.b.proxy.example/",
        ] {
            assert!(l.check(ok, &[]).is_ok(), "{ok}");
        }
        for refused in [
            "https://proxy.example/",
            "https://keygen.internal.example.evil.test/",
            "https://evilproxy.example/",
            "https://other.example/",
        ] {
            assert!(
                matches!(l.check(refused, &[]), Err(Refused::HostNotAllowed(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn bypass_attempts_are_refused() {
        let l = list(&[], false);
        let official = ["api.openai.com"];
        assert!(l.check("https://api.openai.com/v1", &official).is_ok());
        assert_eq!(
            l.check("https://api.openai.com@evil.test/", &official),
            Err(Refused::UserInfo)
        );
        assert_eq!(
            l.check("https://user:pw@api.openai.com/", &official),
            Err(Refused::UserInfo)
        );
        for refused in [
            "https://api.openai.com.evil.test/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://2130706433/",
            "https://localhost/",
        ] {
            assert!(
                matches!(l.check(refused, &official), Err(Refused::HostNotAllowed(_))),
                "{refused}"
            );
        }
        assert!(matches!(
            l.check("file:///etc/passwd", &official),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            l.check("not a url", &official),
            Err(Refused::NotUrl(_))
        ));
    }

    #[test]
    fn ip_literals_only_by_exact_entry_and_loopback_in_the_playground() {
        let l = list(&["10.0.0.5", "[fd00::1]"], false);
        assert!(l.check("http://10.0.0.5:8080/", &[]).is_ok());
        assert!(l.check("http://[fd00::1]/", &[]).is_ok());
        assert!(l.check("http://10.0.0.6/", &[]).is_err());
        let playground = list(&[], true);
        for ok in [
            "http://127.0.0.1:9000/",
            "http://localhost:9000/",
            "http://[::1]:9000/",
        ] {
            assert!(playground.check(ok, &[]).is_ok(), "{ok}");
        }
        assert!(playground.check("https://example.com/", &[]).is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "https://x.example", "*.", "a.*.example", "x@y"] {
            assert!(
                Allowlist::new(&[bad.to_string()], false).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
