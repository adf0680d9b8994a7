//! The issuer's signing keys (DESIGN §12): found through OpenID Connect
//! discovery (`{issuer}/.well-known/openid-configuration` → `jwks_uri`),
//! kept for the process's lifetime, and fetched again once when a token
//! names a `kid` the cached set lacks — at most once per refetch interval,
//! so tokens with made-up kids cannot turn the function against the
//! issuer.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::{Client, Url};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{fetchable, AuthConfig};
use crate::error::KeySetError;

/// The longest discovery document or key set read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Time allowed to connect to the issuer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one whole request to the issuer, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Least time between two fetches of the key set for unknown kids.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// One usable key: the one algorithm it verifies and its public part.
#[derive(Clone)]
pub struct VerifyingKey {
    /// `RS256` for an RSA key, `ES256` for an EC P-256 key.
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The usable keys of one key set by `kid`. Keys without a `kid`, meant
/// for encryption, of another type or curve, or whose `alg` is neither
/// RS256 nor ES256 are left out; they never spoil the others.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`). Errors: the body is not
    /// JSON or has no `keys` array. Unusable keys are skipped with a warning.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let document: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let entries = document.get("keys").and_then(Value::as_array).ok_or("no `keys` array")?;
        let mut keys = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            match usable(entry) {
                Ok((kid, key)) => match keys.entry(kid) {
                    Entry::Occupied(_) => tracing::warn!(index, "key set: a second key with the same kid is skipped"),
                    Entry::Vacant(slot) => {
                        slot.insert(key);
                    }
                },
                Err(why) => tracing::warn!(index, why, "key set: key skipped"),
            }
        }
        Ok(Self { keys })
    }

    /// The key with this `kid`, if usable.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The `kid` and verifying key of one JWKS entry, or why it is unusable.
fn usable(entry: &Value) -> Result<(String, VerifyingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|_| "not a JWK")?;
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty()).ok_or("no kid")?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key");
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return Err("neither an RSA nor an EC P-256 key"),
    };
    let declared = match algorithm {
        Algorithm::ES256 => KeyAlgorithm::ES256,
        _ => KeyAlgorithm::RS256,
    };
    if jwk.common.key_algorithm.is_some_and(|alg| alg != declared) {
        return Err("its alg is neither RS256 nor ES256");
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "its key material is unreadable")?;
    Ok((kid, VerifyingKey { algorithm, key }))
}

/// The cache: where the key set lives, the set, and when it was fetched.
#[derive(Default)]
struct Cached {
    jwks_uri: Option<Url>,
    keys: Option<(Arc<KeySet>, Instant)>,
}

/// Fetches and keeps the issuer's key set. Shared by every invocation of
/// the process; one fetch at a time.
pub struct KeySource {
    client: Client,
    issuer: String,
    discovery_url: String,
    refetch_interval: Duration,
    cached: Mutex<Cached>,
}

impl KeySource {
    /// A source for `config`'s issuer, nothing fetched yet. Errors: the
    /// HTTP client cannot be built ([`KeySetError::Client`]).
    pub fn new(config: &AuthConfig) -> Result<Self, KeySetError> {
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KeySetError::Client(status_shared::error::chain(&e)))?;
        Ok(Self {
            client,
            issuer: config.issuer.clone(),
            discovery_url: config.discovery_url(),
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            cached: Mutex::new(Cached::default()),
        })
    }

    /// The same source with another least time between refetches.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// The key with `kid`: from the cached set; if the set lacks it, from
    /// a set fetched once more, unless the cached one is younger than the
    /// refetch interval. `Ok(None)`: no usable key has that kid. Errors:
    /// nothing is cached and the issuer cannot be read, or a refetch
    /// failed (the cached set is kept for the kids it has).
    pub async fn key(&self, kid: &str) -> Result<Option<VerifyingKey>, KeySetError> {
        let mut cached = self.cached.lock().await;
        if let Some((keys, fetched)) = &cached.keys {
            if let Some(key) = keys.get(kid) {
                return Ok(Some(key.clone()));
            }
            if fetched.elapsed() < self.refetch_interval {
                tracing::warn!("unknown kid; the key set is too recent to fetch again");
                return Ok(None);
            }
            tracing::info!("unknown kid; fetching the key set again");
        }
        let keys = self.fetch_keys(&mut cached).await?;
        Ok(keys.get(kid).cloned())
    }

    /// Fetches the key set (after discovery if `jwks_uri` is not known
    /// yet) and caches it.
    async fn fetch_keys(&self, cached: &mut Cached) -> Result<Arc<KeySet>, KeySetError> {
        let jwks_uri = match &cached.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                cached.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let body = self.get(jwks_uri.as_str()).await?;
        let keys =
            KeySet::parse(&body).map_err(|reason| KeySetError::Document { url: jwks_uri.to_string(), reason })?;
        tracing::info!(keys = keys.len(), "key set fetched");
        let keys = Arc::new(keys);
        cached.keys = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    /// Reads the discovery document: its `issuer` must be the configured
    /// one and its `jwks_uri` an https URL (http only on loopback).
    async fn discover(&self) -> Result<Url, KeySetError> {
        let url = &self.discovery_url;
        let document = |reason: &str| KeySetError::Document { url: url.clone(), reason: reason.to_owned() };
        let body = self.get(url).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| document("not JSON"))?;
        if value.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(document("its issuer is not JWT_ISSUER"));
        }
        let jwks_uri = value.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| document("no jwks_uri"))?;
        fetchable(jwks_uri).ok_or_else(|| document("jwks_uri is not https (http only on loopback)"))
    }

    /// GETs `url`, wanting a 2xx answer of at most [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &str) -> Result<Vec<u8>, KeySetError> {
        let failed =
            |e: reqwest::Error| KeySetError::Fetch { url: url.to_owned(), reason: status_shared::error::chain(&e) };
        let mut response =
            self.client.get(url).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(KeySetError::Status { url: url.to_owned(), status: response.status().as_u16() });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(KeySetError::TooLarge { url: url.to_owned(), max: MAX_DOCUMENT_BYTES });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An EC JWK of the given curve; only its shape matters here.
    fn ec(kid: &str, crv: &str) -> Value {
        json!({"kty": "EC", "kid": kid, "crv": crv,
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    #[test]
    fn unusable_keys_are_skipped_and_the_rest_kept() {
        let body = json!({"keys": [
            ec("good", "P-256"),
            ec("p384", "P-384"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AQAB"},
            "not an object",
            ec("good", "P-256"),
        ]});
        let keys = KeySet::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get("good").map(|k| k.algorithm), Some(Algorithm::ES256));
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
        assert!(KeySet::parse(br#"{"keys": []}"#).unwrap().is_empty());
    }
}
