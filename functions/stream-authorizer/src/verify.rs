//! Checks one token (DESIGN §12): a JWS signed with RS256 or ES256 by a
//! key of the issuer's set named by its `kid`; `iss` the configured
//! issuer; `aud` naming a configured audience; `exp` and, if present,
//! `nbf` within [`LEEWAY_S`] of `now`. Then reads `sub` as a user id by
//! the contract's id rule ([`UserId`]), string or number, as the HTTP API
//! does.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;
use status_shared::domain::UserId;

use crate::config::AuthConfig;
use crate::error::{AuthorizerError, KeySetError, Refusal};
use crate::jwks::KeySource;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_S: u64 = 60;
/// The longest token read, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The subject of a token that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `sub` is a user id.
    User(UserId),
    /// `sub` is absent or no user id; names what it was (`"string"`,
    /// `"number"`, `"absent"`, …), never its value.
    NotAUserId(&'static str),
}

/// The claims read after the signature checks; the rest are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Value,
    #[serde(default)]
    exp: Value,
    #[serde(default)]
    nbf: Value,
}

/// Verifies tokens against the configured issuer's keys.
pub struct Verifier {
    issuer: String,
    audiences: Vec<String>,
    keys: KeySource,
}

impl Verifier {
    /// A verifier for `config`, its keys fetched on first use. Errors:
    /// the HTTP client cannot be built.
    pub fn new(config: &AuthConfig) -> Result<Self, KeySetError> {
        // One crypto backend is compiled in; installing it explicitly keeps
        // verification working should another backend ever be unified in.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        Ok(Self::with_keys(config, KeySource::new(config)?))
    }

    /// A verifier for `config` using `keys`.
    pub fn with_keys(config: &AuthConfig, keys: KeySource) -> Self {
        Self { issuer: config.issuer.clone(), audiences: config.audiences.clone(), keys }
    }

    /// Verifies `token` at `now_s` (epoch seconds). Errors:
    /// [`AuthorizerError::Unauthorized`] with the reason when the token is
    /// not a valid one; [`AuthorizerError::KeysUnavailable`] when the
    /// issuer's keys could not be had to judge it.
    pub async fn verify(&self, token: &str, now_s: u64) -> Result<Subject, AuthorizerError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TooLong { max: MAX_TOKEN_BYTES }.into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| refusal(e.kind()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)).into());
        }
        if header.crit.is_some() {
            return Err(Refusal::Critical.into());
        }
        let kid = header.kid.as_deref().ok_or(Refusal::NoKid)?;
        let key = self.keys.key(kid).await.map_err(AuthorizerError::KeysUnavailable)?.ok_or(Refusal::UnknownKid)?;
        if key.algorithm != header.alg {
            let [key, token] = [key.algorithm, header.alg].map(|a| format!("{a:?}"));
            return Err(Refusal::KeyAlgorithm { key, token }.into());
        }
        let mut validation = Validation::new(header.alg);
        // Time is judged below against the caller's `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| refusal(e.kind()))?.claims;
        check_time(&claims, now_s)?;
        Ok(subject(&claims.sub))
    }
}

/// `exp` must be a NumericDate no more than [`LEEWAY_S`] behind `now`;
/// `nbf`, if present, one no more than [`LEEWAY_S`] ahead.
fn check_time(claims: &Claims, now: u64) -> Result<(), Refusal> {
    let exp = numeric_date(&claims.exp).ok_or_else(|| Refusal::ClaimFormat("exp".into()))?;
    if now > exp.saturating_add(LEEWAY_S) {
        return Err(Refusal::Expired { exp, now, leeway: LEEWAY_S });
    }
    if !claims.nbf.is_null() {
        let nbf = numeric_date(&claims.nbf).ok_or_else(|| Refusal::ClaimFormat("nbf".into()))?;
        if nbf > now.saturating_add(LEEWAY_S) {
            return Err(Refusal::NotYetValid { nbf, now, leeway: LEEWAY_S });
        }
    }
    Ok(())
}

/// A NumericDate: non-negative seconds, whole or fractional (truncated).
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_f64().filter(|s| s.is_finite() && *s >= 0.0).map(|s| s as u64))
}

/// `sub` as a user id: a decimal string or a JSON integer in the
/// contract's range, as status-api reads the HTTP API's claims.
fn subject(sub: &Value) -> Subject {
    let id = match sub {
        Value::String(text) => text.parse::<UserId>().ok(),
        Value::Number(number) => number.as_u64().and_then(|n| UserId::new(n).ok()),
        _ => None,
    };
    id.map_or_else(
        || {
            Subject::NotAUserId(match sub {
                Value::Null => "absent",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            })
        },
        Subject::User,
    )
}

/// The refusal for one of the JWT library's errors. Its texts for
/// malformed input can quote the input, so only the kind is kept.
fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidToken => Refusal::Malformed("not three dot-separated parts"),
        ErrorKind::Base64(_) => Refusal::Malformed("not base64url"),
        ErrorKind::Json(_) => Refusal::Malformed("a part is not the JSON expected"),
        ErrorKind::Utf8(_) => Refusal::Malformed("not UTF-8"),
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => Refusal::Malformed("unknown algorithm"),
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::MissingRequiredClaim(claim) => Refusal::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => Refusal::ClaimFormat(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::Library("algorithm does not fit the key"),
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat => {
            Refusal::Library("the key is unusable")
        }
        _ => Refusal::Library("other"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(exp: Value, nbf: Value) -> Claims {
        Claims { sub: Value::Null, exp, nbf }
    }

    #[test]
    fn exp_and_nbf_allow_exactly_the_leeway() {
        let now = 1_764_270_100;
        assert!(check_time(&claims(json!(now - 60), Value::Null), now).is_ok());
        assert!(matches!(check_time(&claims(json!(now - 61), Value::Null), now), Err(Refusal::Expired { .. })));
        assert!(check_time(&claims(json!(now + 1), json!(now + 60)), now).is_ok());
        assert!(matches!(
            check_time(&claims(json!(now + 900), json!(now + 61)), now),
            Err(Refusal::NotYetValid { .. })
        ));
        assert!(check_time(&claims(json!(u64::MAX), json!(0.5)), now).is_ok());
    }

    #[test]
    fn time_claims_must_be_numeric_dates() {
        let now = 1_764_270_100;
        for exp in [json!("1764270200"), json!(-1), json!(null), json!(true)] {
            assert_eq!(
                check_time(&claims(exp.clone(), Value::Null), now),
                Err(Refusal::ClaimFormat("exp".into())),
                "{exp}"
            );
        }
        assert_eq!(check_time(&claims(json!(now), json!("0")), now), Err(Refusal::ClaimFormat("nbf".into())));
        assert!(check_time(&claims(json!(now as f64 + 0.9), Value::Null), now).is_ok());
    }

    #[test]
    fn sub_follows_the_user_id_rule() {
        assert_eq!(subject(&json!("42")), Subject::User(UserId::new(42).unwrap()));
        assert_eq!(subject(&json!(42)), Subject::User(UserId::new(42).unwrap()));
        assert_eq!(subject(&json!("9223372036854775807")), Subject::User(UserId::new(UserId::MAX).unwrap()));
        for (sub, kind) in [
            (json!("0"), "string"),
            (json!("abc"), "string"),
            (json!("9223372036854775808"), "string"),
            (json!(" 42"), "string"),
            (json!(0), "number"),
            (json!(-5), "number"),
            (json!(4.5), "number"),
            (json!(null), "absent"),
            (json!([42]), "array"),
        ] {
            assert_eq!(subject(&sub), Subject::NotAUserId(kind), "{sub}");
        }
    }
}
