//! The authorizer's configuration, read once from the environment at
//! start: the same issuer and audiences as the HTTP API's JWT authorizer
//! (template parameters `JwtIssuer`, `JwtAudience`; DESIGN §12).

use std::net::IpAddr;

use reqwest::Url;

/// Environment variable: the issuer URL, equal to the tokens' `iss`.
pub const JWT_ISSUER: &str = "JWT_ISSUER";
/// Environment variable: the accepted audiences, comma-separated.
pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";

/// Who may sign the tokens and for whom they must be meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The issuer exactly as tokens carry it in `iss`; its keys are found
    /// through `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// A token's `aud` must name at least one of these (never empty).
    pub audiences: Vec<String>,
}

/// Why the configuration was refused; the function does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("JWT_ISSUER must be an https URL (http only for a loopback host), got {0:?}")]
    Issuer(String),
    #[error("JWT_AUDIENCE must name at least one audience (a comma-separated list)")]
    Audience,
}

impl AuthConfig {
    /// Checks `issuer` (an https URL, or http for a loopback host as in
    /// tests and the local stack) and splits `audiences` at commas,
    /// trimming each and dropping empty ones.
    pub fn new(issuer: &str, audiences: &str) -> Result<Self, ConfigError> {
        let issuer = issuer.trim();
        if fetchable(issuer).is_none() {
            return Err(ConfigError::Issuer(issuer.to_owned()));
        }
        let audiences: Vec<String> =
            audiences.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        if audiences.is_empty() {
            return Err(ConfigError::Audience);
        }
        Ok(Self { issuer: issuer.to_owned(), audiences })
    }

    /// Reads [`JWT_ISSUER`] and [`JWT_AUDIENCE`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`AuthConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let issuer = lookup(JWT_ISSUER).ok_or(ConfigError::Missing(JWT_ISSUER))?;
        let audiences = lookup(JWT_AUDIENCE).ok_or(ConfigError::Missing(JWT_AUDIENCE))?;
        Self::new(&issuer, &audiences)
    }

    /// The issuer's OpenID Connect discovery document: the issuer with
    /// any trailing `/` removed, then `/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))
    }
}

/// `text` as a URL this function will fetch keys from: `https`, or `http`
/// when the host is loopback (`localhost`, `127.0.0.0/8`, `::1`), so no
/// key ever travels in clear text over a network.
pub(crate) fn fetchable(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    let host = url.host_str()?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Some(url),
        "http" if loopback => Some(url),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_a_trimmed_comma_list() {
        let config = AuthConfig::new("https://id.example.com/", " web, ,mobile ,").unwrap();
        assert_eq!(config.audiences, ["web", "mobile"]);
        assert_eq!(config.discovery_url(), "https://id.example.com/.well-known/openid-configuration");
        assert_eq!(AuthConfig::new("https://id.example.com", " , "), Err(ConfigError::Audience));
    }

    #[test]
    fn the_issuer_is_https_or_loopback_http() {
        for good in ["https://id.example.com", "http://127.0.0.1:9000", "http://localhost:1/x", "http://[::1]:80"] {
            assert!(AuthConfig::new(good, "a").is_ok(), "{good}");
        }
        for bad in ["http://id.example.com", "ftp://127.0.0.1", "id.example.com", "", "https://"] {
            assert!(matches!(AuthConfig::new(bad, "a"), Err(ConfigError::Issuer(_))), "{bad}");
        }
    }

    #[test]
    fn both_variables_are_required() {
        let only_issuer = |name: &str| (name == JWT_ISSUER).then(|| "https://id.example.com".to_owned());
        assert_eq!(AuthConfig::from_lookup(only_issuer), Err(ConfigError::Missing(JWT_AUDIENCE)));
        assert_eq!(AuthConfig::from_lookup(|_| None), Err(ConfigError::Missing(JWT_ISSUER)));
    }
}
