//! One `$connect` authorization (DESIGN §12): read the event, verify the
//! token, answer with a policy or the error API Gateway turns into 401.
//! Every refusal is logged at warn with its reason, never the token.

use serde_json::Value;
use status_shared::domain::Millis;
use tracing::Instrument;

use crate::config::AuthConfig;
use crate::error::{AuthorizerError, KeySetError};
use crate::jwks::KeySource;
use crate::policy::AuthorizerResponse;
use crate::request::ConnectRequest;
use crate::verify::{Subject, Verifier};

/// The authorizer of one process: configuration and the cached keys.
pub struct Authorizer {
    verifier: Verifier,
}

impl Authorizer {
    /// An authorizer for `config`. Errors: the HTTP client for the
    /// issuer cannot be built.
    pub fn new(config: AuthConfig) -> Result<Self, KeySetError> {
        Ok(Self { verifier: Verifier::new(&config)? })
    }

    /// An authorizer for `config` that reads keys from `keys` (for a
    /// refetch interval of one's own).
    pub fn with_keys(config: &AuthConfig, keys: KeySource) -> Self {
        Self { verifier: Verifier::with_keys(config, keys) }
    }

    /// Answers one REQUEST authorizer event at `now` (epoch ms):
    /// - a valid token whose `sub` is a user id: Allow for the event's
    ///   `methodArn`, the id as `principalId` and `context.user_id`;
    /// - a valid token whose `sub` is no user id: Deny;
    /// - no `methodArn`, no token, or an invalid one:
    ///   [`AuthorizerError::Unauthorized`] (reported as `Unauthorized`);
    /// - the issuer's keys out of reach: [`AuthorizerError::KeysUnavailable`].
    pub async fn handle(
        &self,
        event: &Value,
        now: Millis,
        request_id: Option<&str>,
    ) -> Result<AuthorizerResponse, AuthorizerError> {
        let span = tracing::info_span!("invocation", request_id = request_id.unwrap_or_default());
        self.decide(event, now).instrument(span).await
    }

    async fn decide(&self, event: &Value, now: Millis) -> Result<AuthorizerResponse, AuthorizerError> {
        let request = ConnectRequest::from_event(event);
        let refused = |error: AuthorizerError, source: &str| {
            tracing::warn!(reason = %error.reason(), token_source = source, "connect refused");
            error
        };
        let method_arn = request.method_arn().map_err(|r| refused(r.into(), "none"))?;
        let (token, source) = request.bearer().map_err(|r| refused(r.into(), "none"))?;
        let now_s = u64::try_from(now.div_euclid(1000)).unwrap_or(0);
        match self.verifier.verify(token, now_s).await.map_err(|e| refused(e, &source.to_string()))? {
            Subject::User(user) => {
                tracing::info!(user_id = user.get(), token_source = %source, "connect allowed");
                Ok(AuthorizerResponse::allow(user, method_arn))
            }
            Subject::NotAUserId(kind) => {
                tracing::warn!(sub = kind, token_source = %source, "connect denied: sub is not a user id");
                Ok(AuthorizerResponse::deny(method_arn))
            }
        }
    }
}
