//! What refuses a connect, and what the Lambda runtime reports for it.
//!
//! API Gateway reads a REQUEST authorizer's failure by its message alone:
//! exactly `Unauthorized` answers the client `401`; any other error
//! answers `500` (DESIGN §12). A refusal's reason is logged, never sent.

use lambda_runtime::Diagnostic;

/// Why a connect was refused as `401 Unauthorized`. The texts name what
/// was wrong, never the token nor a claim's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the event has no methodArn")]
    NoMethodArn,
    #[error("no token: neither query parameter `token` nor an `Authorization: Bearer` header")]
    NoToken,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the token is over {max} bytes")]
    TooLong { max: usize },
    #[error("the token is not a signed JWT in compact form ({0})")]
    Malformed(&'static str),
    #[error("algorithm {0} is not accepted (RS256 and ES256 only)")]
    Algorithm(String),
    #[error("the token's header marks extensions as critical")]
    Critical,
    #[error("the token's header has no kid")]
    NoKid,
    #[error("the issuer's key set has no usable key with the token's kid")]
    UnknownKid,
    #[error("the key with the token's kid is for {key}, the token is {token}")]
    KeyAlgorithm { key: String, token: String },
    #[error("the signature does not verify")]
    Signature,
    #[error("iss is not the configured issuer")]
    Issuer,
    #[error("aud names none of the configured audiences")]
    Audience,
    #[error("claim {0} is missing")]
    MissingClaim(String),
    #[error("claim {0} is malformed")]
    ClaimFormat(String),
    #[error("expired: exp {exp} s, now {now} s, leeway {leeway} s")]
    Expired { exp: u64, now: u64, leeway: u64 },
    #[error("not valid yet: nbf {nbf} s, now {now} s, leeway {leeway} s")]
    NotYetValid { nbf: u64, now: u64, leeway: u64 },
    #[error("refused by the JWT library ({0})")]
    Library(&'static str),
}

/// Why the issuer's keys could not be had: discovery or key set fetch
/// failed or answered something unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("GET {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: the body is over {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("{url}: {reason}")]
    Document { url: String, reason: String },
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizerError {
    /// A missing or invalid token, or an event that is no authorizer
    /// request: reported as exactly `Unauthorized`, so the client gets 401.
    #[error("Unauthorized")]
    Unauthorized(Refusal),
    /// The issuer's keys are out of reach, so no token can be judged:
    /// reported as another error, so the client gets 500 and may retry.
    #[error("the issuer's key set is unavailable")]
    KeysUnavailable(#[source] KeySetError),
}

impl AuthorizerError {
    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "Unauthorized",
            Self::KeysUnavailable(_) => "KeySetUnavailable",
        }
    }

    /// The reason to log at warn, with its causes.
    pub fn reason(&self) -> String {
        match self {
            Self::Unauthorized(refusal) => refusal.to_string(),
            Self::KeysUnavailable(_) => status_shared::error::chain(self),
        }
    }
}

impl From<Refusal> for AuthorizerError {
    fn from(refusal: Refusal) -> Self {
        Self::Unauthorized(refusal)
    }
}

impl From<AuthorizerError> for Diagnostic {
    /// `Unauthorized` carries no reason: API Gateway matches the message
    /// exactly. The other error carries its causes for the function's log.
    fn from(error: AuthorizerError) -> Self {
        let error_message = match &error {
            AuthorizerError::Unauthorized(_) => "Unauthorized".to_owned(),
            AuthorizerError::KeysUnavailable(_) => error.reason(),
        };
        Diagnostic { error_type: error.error_type().to_owned(), error_message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_reported_as_exactly_unauthorized() {
        let diagnostic: Diagnostic = AuthorizerError::from(Refusal::Signature).into();
        assert_eq!(diagnostic.error_message, "Unauthorized");
        assert_eq!(diagnostic.error_type, "Unauthorized");
    }

    #[test]
    fn an_unreachable_key_set_is_another_error_with_its_cause() {
        let cause = KeySetError::Status { url: "https://id.example.com/jwks".into(), status: 503 };
        let diagnostic: Diagnostic = AuthorizerError::KeysUnavailable(cause).into();
        assert_ne!(diagnostic.error_message, "Unauthorized");
        assert!(
            diagnostic.error_message.ends_with("GET https://id.example.com/jwks: HTTP 503"),
            "{}",
            diagnostic.error_message
        );
    }
}
