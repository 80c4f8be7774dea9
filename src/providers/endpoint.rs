//! Where a validation request goes (DESIGN §7): the provider's base URL, or `baseURL` in its
//! place, with the check's path appended by concatenation, never RFC 3986 resolution (which
//! would drop `/v1` from `https://proxy/openai/v1`). The result must pass the allowlist:
//! the provider's official host, or a host the operator allows.

use url::Url;

use crate::allowlist::{Allowlist, Refused};

/// Why no request can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("baseURL {0:?} has a query or a fragment; give the base URL only")]
    QueryOrFragment(String),
    #[error("baseURL: {0}")]
    Refused(#[from] Refused),
}

impl EndpointError {
    /// Whether the allowlist refused the host (the condition reason `HostNotAllowed`).
    pub fn host_not_allowed(&self) -> bool {
        matches!(
            self,
            Self::Refused(Refused::HostNotAllowed(_) | Refused::UserInfo)
        )
    }
}

/// `base` with one trailing `/` stripped, then `path` appended.
pub fn join(base: &str, path: &str) -> Result<String, EndpointError> {
    let parsed = Url::parse(base).map_err(|_| Refused::NotUrl(base.to_string()))?;
    if parsed.query().is_some() || parsed.fragment().is_some() || base.contains(['?', '#']) {
        return Err(EndpointError::QueryOrFragment(base.to_string()));
    }
    Ok(format!("{}{path}", base.strip_suffix('/').unwrap_or(base)))
}

/// The URL to call: `base` (the override, or the provider's own) joined with `path`, allowed
/// when its host is one of the provider's `official` hosts or one the operator allows.
pub fn resolve(
    allowlist: &Allowlist,
    base: &str,
    path: &str,
    official: &[&str],
) -> Result<Url, EndpointError> {
    let joined = join(base, path)?;
    Ok(allowlist.check(&joined, official)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_never_resolved() {
        for (base, path, joined) in [
            (
                "https://proxy/anthropic",
                "/v1/models",
                "https://proxy/anthropic/v1/models",
            ),
            (
                "https://proxy/anthropic/",
                "/v1/models",
                "https://proxy/anthropic/v1/models",
            ),
            (
                "https://proxy/openai/v1",
                "/models",
                "https://proxy/openai/v1/models",
            ),
            (
                "https://proxy/openai/v1/",
                "/models",
                "https://proxy/openai/v1/models",
            ),
            (
                "https://api.openai.com/v1",
                "/models",
                "https://api.openai.com/v1/models",
            ),
            (
                "https://api.mistral.ai",
                "/v1/models",
                "https://api.mistral.ai/v1/models",
            ),
        ] {
            assert_eq!(join(base, path).as_deref(), Ok(joined), "{base} + {path}");
        }
        for bad in [
            "https://proxy/v1?x=1",
            "https://proxy/v1#frag",
            "https://proxy/?",
        ] {
            assert_eq!(
                join(bad, "/models"),
                Err(EndpointError::QueryOrFragment(bad.to_string()))
            );
        }
        assert!(matches!(
            join("not a url", "/models"),
            Err(EndpointError::Refused(Refused::NotUrl(_)))
        ));
    }

    #[test]
    fn only_the_official_host_or_allowed_hosts_get_the_key() {
        let none = Allowlist::new(&[], false).expect("list");
        let official = &["api.openai.com"][..];
        assert!(resolve(&none, "https://api.openai.com/v1", "/models", official).is_ok());
        assert!(resolve(&none, "https://API.openai.com./v1", "/models", official).is_ok());
        for bypass in [
            "https://api.openai.com@evil.test/v1",
            "https://api.openai.com.evil.test/v1",
            "https://evil.test/api.openai.com/v1",
            "https://127.0.0.1/v1",
            "https://[::1]/v1",
            "https://2130706433/v1",
        ] {
            let e = resolve(&none, bypass, "/models", official).expect_err(bypass);
            assert!(e.host_not_allowed(), "{bypass}: {e}");
        }
        assert!(matches!(
            resolve(&none, "ftp://api.openai.com/v1", "/models", official),
            Err(EndpointError::Refused(Refused::Scheme(_)))
        ));
        // Another provider's official host is not this one's.
        assert!(
            resolve(&none, "https://api.anthropic.com", "/v1/models", official)
                .expect_err("not openai's host")
                .host_not_allowed()
        );
        let proxy = Allowlist::new(&["llm-proxy.internal".to_string()], false).expect("list");
        assert!(
            resolve(
                &proxy,
                "https://llm-proxy.internal/openai/v1",
                "/models",
                official
            )
            .is_ok()
        );
    }
}
