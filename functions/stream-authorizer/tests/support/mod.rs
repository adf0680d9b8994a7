//! A real issuer for the tests: an HTTP server on loopback serving an
//! OpenID Connect discovery document and a JWKS, with the committed
//! test-only keys under `tests/keys` to sign tokens.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One test key and the `kid` it is published under.
pub struct TestKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    pem: &'static [u8],
}

pub const RSA_1: TestKey = TestKey { kid: "rsa-1", alg: Algorithm::RS256, pem: include_bytes!("../keys/rsa-1.pem") };
pub const RSA_2: TestKey = TestKey { kid: "rsa-2", alg: Algorithm::RS256, pem: include_bytes!("../keys/rsa-2.pem") };
pub const EC_1: TestKey = TestKey { kid: "ec-1", alg: Algorithm::ES256, pem: include_bytes!("../keys/ec-1.pem") };

impl TestKey {
    pub fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem).expect("EC test key"),
            _ => EncodingKey::from_rsa_pem(self.pem).expect("RSA test key"),
        }
    }

    /// The public key as its JWKS entry.
    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding(), self.alg).expect("a JWK of the test key");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).expect("JSON")
    }

    /// `claims` signed with this key under its own kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.alg, Some(self.kid), claims)
    }

    /// `claims` signed with this key, the header naming `alg` and `kid`.
    pub fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &self.encoding()).expect("signing")
    }
}

struct State {
    issuer: String,
    keys: Mutex<Value>,
    jwks_fetches: AtomicUsize,
    failing: AtomicBool,
}

/// The issuer's server; stops when dropped.
pub struct Issuer {
    pub url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Issuer {
    /// Serves `{url}/.well-known/openid-configuration` and `{url}/jwks`
    /// publishing `keys`.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let state = Arc::new(State {
            issuer: url.clone(),
            keys: Mutex::new(Value::Null),
            jwks_fetches: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        let issuer = Self { url, state, task };
        issuer.publish(keys);
        issuer
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: &[&TestKey]) {
        let set = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        *self.state.keys.lock().expect("not poisoned") = set;
    }

    /// Publishes `set` as the key set, as it is.
    pub fn publish_raw(&self, set: Value) {
        *self.state.keys.lock().expect("not poisoned") = set;
    }

    /// Makes every answer a 503 (or normal again).
    pub fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// How many times the key set was served.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        Ok(response)
    };
    if state.failing.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    match request.uri().path() {
        "/.well-known/openid-configuration" => {
            let document = json!({"issuer": state.issuer, "jwks_uri": format!("{}/jwks", state.issuer)});
            reply(StatusCode::OK, document.to_string())
        }
        "/jwks" => {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let keys = state.keys.lock().expect("not poisoned").to_string();
            reply(StatusCode::OK, keys)
        }
        _ => reply(StatusCode::NOT_FOUND, String::new()),
    }
}
