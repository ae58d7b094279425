//! OAuth2 machine clients end to end, in process: registration, the token endpoint (client
//! secrets and SMART Backend Services assertions signed with ES384 and RS384 keys), SMART scopes
//! on the FHIR API, and the refusals: expired, tampered, wrong-audience, wrong-issuer, `alg:
//! none`, HS256 and foreign-key access tokens; replayed, wrong-audience and otherwise bad
//! assertions; revoked clients; scopes beyond a client's allowance.
//!
//! Assertions and forged access tokens are made here with `ring` and `base64` directly, not with
//! Galen's JWT code, so a mistake there cannot hide itself. The RSA key in
//! `tests/fixtures/oauth-test-client-rsa.pem` is a throw-away test key.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use galen_model::{ManualClock, Timestamp};
use galen_server::access::oauth::{JWT_BEARER, OAuthConfig, SigningKey};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA384, RsaKeyPair,
};
use serde_json::{Value, json};
use tower::ServiceExt;

const SERVICE: &str = "service-token-for-the-oauth-test";
const PUBLIC_URL: &str = "https://galen.test";
const TOKEN_ENDPOINT: &str = "https://galen.test/oauth/token";
const FHIR_BASE: &str = "https://galen.test/fhir";
const RSA_KEY: &str = include_str!("fixtures/oauth-test-client-rsa.pem");

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A key that signs JWTs.
enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    fn new_ec() -> Signer {
        let random = SystemRandom::new();
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &random).expect("key");
        Signer::from_ec_pkcs8(document.as_ref())
    }

    fn from_ec_pkcs8(der: &[u8]) -> Signer {
        Signer::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der, &SystemRandom::new())
                .expect("P-384 key"),
        )
    }

    fn rsa() -> Signer {
        Signer::Rsa(RsaKeyPair::from_pkcs8(&pem_der(RSA_KEY)).expect("RSA key"))
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Ec(_) => "ES384",
            Signer::Rsa(_) => "RS384",
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let random = SystemRandom::new();
        match self {
            Signer::Ec(pair) => pair.sign(&random, message).expect("sign").as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA384, &random, message, &mut signature)
                    .expect("sign");
                signature
            }
        }
    }

    /// The public JWK (no private member) with `kid`.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({ "kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
                        "x": b64(&point[1..49]), "y": b64(&point[49..97]) })
            }
            Signer::Rsa(pair) => {
                let components: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
                json!({ "kty": "RSA", "kid": kid, "alg": "RS384",
                        "n": b64(&components.n), "e": b64(&components.e) })
            }
        }
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(body).expect("base64")
}

/// A compact JWS of `header` and `claims` signed by `signer`.
fn jws(header: &Value, claims: &Value, signer: &Signer) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = signer.sign(message.as_bytes());
    format!("{message}.{}", b64(&signature))
}

/// An HS256 JWS (the algorithm-confusion attack: a public key used as the HMAC secret).
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", b64(tag.as_ref()))
}

struct Fixture {
    app: App,
    clock: Arc<ManualClock>,
    galen_key: SigningKey,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
        let clock = Arc::new(ManualClock::new(
            Timestamp::parse_rfc3339("2026-11-24T08:00:00Z").expect("time"),
        ));
        let galen_key = SigningKey::generate().expect("signing key");
        let app = App::new(
            Arc::new(store),
            clock.clone(),
            ServerConfig {
                api_token: Some(SERVICE.to_owned()),
                oauth: Some(OAuthConfig::new(PUBLIC_URL, galen_key.clone()).expect("config")),
                ..ServerConfig::default()
            },
        )
        .await
        .expect("app starts");
        Fixture {
            app,
            clock,
            galen_key,
            _dir: dir,
        }
    }

    fn now_seconds(&self) -> i64 {
        use galen_model::Clock;
        self.clock.now().micros() / 1_000_000
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.router().oneshot(request).await.expect("router");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            let media = if path.starts_with("/fhir") {
                "application/fhir+json"
            } else {
                "application/json"
            };
            request = request.header(header::CONTENT_TYPE, media);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .expect("request");
        self.send(request).await
    }

    async fn status(&self, token: &str, method: Method, path: &str) -> StatusCode {
        self.call(token, method, path, None).await.0
    }

    async fn service(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, value) = self.call(SERVICE, method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// Registers a client; its answer (with `client_secret` when it has no keys).
    async fn register(&self, body: Value) -> Value {
        let (status, value) = self
            .call(SERVICE, Method::POST, "/api/v1/oauth-clients", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        value
    }

    /// `POST /oauth/token` with `form`, optionally with HTTP Basic credentials.
    async fn token_request(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (StatusCode, Value) {
        let mut request = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            request = request.header(
                header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
            );
        }
        let body = serde_urlencoded::to_string(form).expect("form");
        self.send(request.body(Body::from(body)).expect("request"))
            .await
    }

    /// A token for a secret client; panics unless one is issued.
    async fn secret_token(&self, client: &Value, scope: &str) -> String {
        let (status, answer) = self
            .token_request(
                &[("grant_type", "client_credentials"), ("scope", scope)],
                Some((
                    client["client_id"].as_str().expect("id"),
                    client["client_secret"].as_str().expect("secret"),
                )),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["access_token"].as_str().expect("token").to_owned()
    }

    /// Claims of a good assertion of `client_id`, made now.
    fn assertion_claims(&self, client_id: &str, jti: &str) -> Value {
        json!({
            "iss": client_id, "sub": client_id, "aud": TOKEN_ENDPOINT,
            "exp": self.now_seconds() + 240, "jti": jti,
        })
    }

    async fn assertion_request(&self, assertion: &str, scope: &str) -> (StatusCode, Value) {
        self.token_request(
            &[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
            ],
            None,
        )
        .await
    }

    /// Galen's own key, to forge access tokens with chosen claims.
    fn galen_signer(&self) -> Signer {
        Signer::from_ec_pkcs8(&pem_der(&self.galen_key.to_pem()))
    }

    fn access_header(&self) -> Value {
        json!({ "alg": "ES384", "typ": "at+jwt", "kid": self.galen_key.kid() })
    }

    fn access_claims(&self, client_id: &str, scope: &str) -> Value {
        let now = self.now_seconds();
        json!({
            "iss": PUBLIC_URL, "aud": FHIR_BASE, "sub": client_id, "client_id": client_id,
            "iat": now, "exp": now + 300, "jti": "forged", "scope": scope,
        })
    }
}

/// Two patients on two wards, each with a monitor and a heart rate; their ids.
async fn two_wards(fixture: &Fixture) -> (i64, i64) {
    let mut ids = Vec::new();
    for (mrn, ward, serial) in [("ICU-1", "ICU", "MON-ICU"), ("CAR-1", "CARDIO", "MON-CAR")] {
        let patient = fixture
            .service(
                Method::POST,
                "/api/v1/patients",
                json!({ "identifier": { "system": "urn:mrn", "value": mrn }, "name": { "family": "Test" },
                        "birth_date": "1950-01-01", "sex": "other", "ward": ward, "bed": "1" }),
            )
            .await["id"]
            .as_i64()
            .expect("id");
        let device = fixture
            .service(Method::POST, "/api/v1/devices", json!({ "serial": serial }))
            .await["id"]
            .as_i64()
            .expect("id");
        fixture
            .service(
                Method::POST,
                "/api/v1/assignments",
                json!({ "device": device, "patient": patient, "start": "2026-11-24T07:00:00Z" }),
            )
            .await;
        fixture
            .service(
                Method::POST,
                "/api/v1/measurements",
                json!([{ "device": serial, "code": "hr", "value": 80, "unit": "/min", "time": "2026-11-24T07:59:00Z" }]),
            )
            .await;
        ids.push(patient);
    }
    (ids[0], ids[1])
}

fn patient_resource(mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "urn:mrn", "value": mrn }],
        "name": [{ "family": "Scoped" }],
        "birthDate": "1960-01-01"
    })
}

#[tokio::test]
async fn a_secret_client_gets_a_token_that_works_within_its_scopes() {
    let fixture = Fixture::new().await;
    let (icu, _) = two_wards(&fixture).await;
    let client = fixture
        .register(
            json!({ "name": "lab interface", "role": "integration-engineer",
                          "scopes": ["system/Patient.rs"] }),
        )
        .await;
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    let secret = client["client_secret"].as_str().expect("secret shown once");
    let client_id = client["client_id"].as_str().expect("id");

    // Asked more than allowed: the grant is the intersection, and the answer says so.
    let (status, answer) = fixture
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.cruds system/Observation.rs"),
            ],
            Some((client_id, secret)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 300);
    assert_eq!(answer["scope"], "system/Patient.rs");
    let token = answer["access_token"].as_str().expect("token");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(
        (header["alg"].as_str(), header["typ"].as_str()),
        (Some("ES384"), Some("at+jwt"))
    );
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("claims"))
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(claims["aud"], FHIR_BASE);
    assert_eq!(claims["iss"], PUBLIC_URL);
    assert_eq!(claims["sub"], client_id);
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        300
    );

    // system/Patient.rs: search and read Patient; nothing else.
    assert_eq!(
        fixture.status(token, Method::GET, "/fhir/Patient").await,
        StatusCode::OK
    );
    assert_eq!(
        fixture
            .status(token, Method::GET, &format!("/fhir/Patient/{icu}"))
            .await,
        StatusCode::OK
    );
    let (status, refusal) = fixture
        .call(
            token,
            Method::GET,
            &format!("/fhir/Observation?patient={icu}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refusal.to_string().contains("Observation.s"), "{refusal}");
    let (status, _) = fixture
        .call(
            token,
            Method::POST,
            "/fhir/Patient",
            Some(patient_resource("NEW-1")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "create is not granted");
    assert_eq!(
        fixture.status(token, Method::GET, "/api/v1/patients").await,
        StatusCode::FORBIDDEN,
        "the token is for the FHIR API"
    );

    // client_secret_post works too; a wrong secret does not.
    let (status, answer) = fixture
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.read"),
                ("client_id", client_id),
                ("client_secret", secret),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["scope"], "system/Patient.rs", "v1 read is v2 rs");
    let (status, answer) = fixture
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.rs"),
            ],
            Some((client_id, "gcs_wrong")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"], "invalid_client");

    // The trail: the issuance, the refusal and the reads, as the client.
    let (_, trail) = fixture
        .call(
            SERVICE,
            Method::GET,
            "/api/v1/audit?actor=client:lab%20interface&limit=100",
            None,
        )
        .await;
    let records = trail["items"].as_array().expect("records");
    let has = |action: &str, outcome: &str, detail: &str| {
        records.iter().any(|record| {
            record["action"] == action
                && record["outcome"] == outcome
                && record["detail"]
                    .as_str()
                    .is_some_and(|text| text.contains(detail))
        })
    };
    assert!(has("login", "success", "system/Patient.rs"), "{trail}");
    assert!(has("login-failed", "failed", "invalid_client"), "{trail}");
    assert!(has("read", "success", client_id), "{trail}");
    assert!(has("search", "denied", "Observation.s"), "{trail}");
    assert!(
        !trail.to_string().contains(secret),
        "the secret is never recorded"
    );
}

#[tokio::test]
async fn backend_services_assertions_signed_with_es384_and_rs384_get_tokens() {
    let fixture = Fixture::new().await;
    two_wards(&fixture).await;
    for (name, signer) in [
        ("ec service", Signer::new_ec()),
        ("rsa service", Signer::rsa()),
    ] {
        let client = fixture
            .register(json!({ "name": name, "role": "integration-engineer",
                              "scopes": ["system/*.rs"],
                              "jwks": { "keys": [signer.jwk("key-1")] } }))
            .await;
        assert_eq!(client["token_endpoint_auth_method"], "private_key_jwt");
        assert!(client.get("client_secret").is_none());
        let client_id = client["client_id"].as_str().expect("id");
        let header = json!({ "alg": signer.alg(), "kid": "key-1", "typ": "JWT" });
        let assertion = jws(
            &header,
            &fixture.assertion_claims(client_id, &format!("{name}-1")),
            &signer,
        );
        let (status, answer) = fixture
            .assertion_request(&assertion, "system/Patient.rs system/Observation.rs")
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        assert_eq!(answer["scope"], "system/Observation.rs system/Patient.rs");
        let token = answer["access_token"].as_str().expect("token");
        assert_eq!(
            fixture.status(token, Method::GET, "/fhir/Patient").await,
            StatusCode::OK,
            "{name}"
        );
        // The same assertion again: a replayed jti.
        let (status, answer) = fixture
            .assertion_request(&assertion, "system/Patient.rs")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: replay");
        assert_eq!(answer["error"], "invalid_client");
        assert!(
            answer["error_description"]
                .as_str()
                .is_some_and(|text| text.contains("jti")),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn bad_assertions_are_refused() {
    let fixture = Fixture::new().await;
    let signer = Signer::new_ec();
    let client = fixture
        .register(json!({ "name": "svc", "role": "integration-engineer",
                          "scopes": ["system/Patient.rs"],
                          "jwks": { "keys": [signer.jwk("k1")] } }))
        .await;
    let client_id = client["client_id"].as_str().expect("id").to_owned();
    let header = json!({ "alg": "ES384", "kid": "k1", "typ": "JWT" });
    let now = fixture.now_seconds();
    let claims = |jti: &str| fixture.assertion_claims(&client_id, jti);
    let with = |jti: &str, name: &str, value: Value| {
        let mut claims = claims(jti);
        claims[name] = value;
        claims
    };
    let stranger = Signer::new_ec();
    let public_key_bytes = signer.jwk("k1").to_string();
    let mut tampered = jws(&header, &claims("tampered"), &signer);
    let last = tampered.pop().expect("a character");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String)> = vec![
        (
            "aud is not the token endpoint",
            jws(
                &header,
                &with("aud", "aud", json!("https://other.test/oauth/token")),
                &signer,
            ),
        ),
        (
            "aud is the FHIR base",
            jws(&header, &with("aud2", "aud", json!(FHIR_BASE)), &signer),
        ),
        (
            "expired",
            jws(&header, &with("old", "exp", json!(now - 120)), &signer),
        ),
        (
            "exp more than five minutes ahead",
            jws(&header, &with("far", "exp", json!(now + 3600)), &signer),
        ),
        (
            "no jti",
            jws(
                &header,
                &json!({ "iss": client_id, "sub": client_id, "aud": TOKEN_ENDPOINT, "exp": now + 60 }),
                &signer,
            ),
        ),
        (
            "sub is not the client",
            jws(&header, &with("sub", "sub", json!("someone")), &signer),
        ),
        (
            "signed by a key that is not registered",
            jws(&header, &claims("stranger"), &stranger),
        ),
        (
            "unknown kid",
            jws(
                &json!({ "alg": "ES384", "kid": "k2", "typ": "JWT" }),
                &claims("kid"),
                &signer,
            ),
        ),
        (
            "no kid",
            jws(
                &json!({ "alg": "ES384", "typ": "JWT" }),
                &claims("nokid"),
                &signer,
            ),
        ),
        (
            "the header names another algorithm than the key's",
            jws(
                &json!({ "alg": "RS384", "kid": "k1", "typ": "JWT" }),
                &claims("alg"),
                &signer,
            ),
        ),
        (
            "HS256 with the public key as the secret",
            hs256(
                &json!({ "alg": "HS256", "kid": "k1", "typ": "JWT" }),
                &claims("hs"),
                public_key_bytes.as_bytes(),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","kid":"k1"}"#),
                b64(claims("none").to_string().as_bytes())
            ),
        ),
        (
            "a jku to fetch keys from",
            jws(
                &json!({ "alg": "ES384", "kid": "k1", "jku": "https://evil.test/jwks" }),
                &claims("jku"),
                &signer,
            ),
        ),
        ("a tampered signature", tampered),
        ("not a JWT", "abc".to_owned()),
    ];
    for (case, assertion) in cases {
        let (status, answer) = fixture
            .assertion_request(&assertion, "system/Patient.rs")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {answer}");
        assert_eq!(answer["error"], "invalid_client", "{case}");
    }
    // The control: the same client, a fresh good assertion, works.
    let good = jws(&header, &claims("good"), &signer);
    let (status, answer) = fixture.assertion_request(&good, "system/Patient.rs").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // And a secret cannot stand in for a key.
    let (status, _) = fixture
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.rs"),
            ],
            Some((&client_id, "gcs_anything")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Malformed requests are 400s with RFC 6749 codes.
    let (status, answer) = fixture
        .token_request(
            &[("grant_type", "password"), ("scope", "system/Patient.rs")],
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (status, answer) = fixture
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion", good.as_str()),
                ("client_assertion_type", "urn:other"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let request = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"grant_type":"client_credentials"}"#))
        .expect("request");
    let (status, answer) = fixture.send(request).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

#[tokio::test]
async fn expired_tampered_and_foreign_access_tokens_are_refused() {
    let fixture = Fixture::new().await;
    two_wards(&fixture).await;
    let client = fixture
        .register(json!({ "name": "reader", "role": "integration-engineer",
                          "scopes": ["system/Patient.rs"] }))
        .await;
    let client_id = client["client_id"].as_str().expect("id").to_owned();
    let galen = fixture.galen_signer();
    let header = fixture.access_header();
    let claims = fixture.access_claims(&client_id, "system/Patient.rs");
    let with = |name: &str, value: Value| {
        let mut claims = claims.clone();
        claims[name] = value;
        claims
    };

    // The control: a token made here with Galen's key and the right claims is accepted, so each
    // refusal below is the one change it makes.
    let forged_right = jws(&header, &claims, &galen);
    assert_eq!(
        fixture
            .status(&forged_right, Method::GET, "/fhir/Patient")
            .await,
        StatusCode::OK
    );

    let issued = fixture.secret_token(&client, "system/Patient.rs").await;
    let mut bad_signature = issued.clone();
    let last = bad_signature.pop().expect("a character");
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });
    let parts: Vec<&str> = issued.split('.').collect();
    let widened = format!(
        "{}.{}.{}",
        parts[0],
        b64(with("scope", json!("system/*.cruds"))
            .to_string()
            .as_bytes()),
        parts[2]
    );
    let stranger = Signer::new_ec();
    let galen_public = {
        let point = galen_signer_public(&galen);
        b64(&point)
    };
    let cases: Vec<(&str, String)> = vec![
        ("a tampered signature", bad_signature),
        ("a payload changed under the signature", widened),
        (
            "another audience",
            jws(
                &header,
                &with("aud", json!("https://other.test/fhir")),
                &galen,
            ),
        ),
        (
            "the token endpoint as audience",
            jws(&header, &with("aud", json!(TOKEN_ENDPOINT)), &galen),
        ),
        (
            "another issuer",
            jws(&header, &with("iss", json!("https://evil.test")), &galen),
        ),
        (
            "expired",
            jws(
                &header,
                &with("exp", json!(fixture.now_seconds() - 60)),
                &galen,
            ),
        ),
        (
            "issued in the future",
            jws(
                &header,
                &with("iat", json!(fixture.now_seconds() + 3600)),
                &galen,
            ),
        ),
        ("signed by an unknown key", jws(&header, &claims, &stranger)),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(
                    json!({ "alg": "none", "typ": "at+jwt", "kid": fixture.galen_key.kid() })
                        .to_string()
                        .as_bytes()
                ),
                b64(claims.to_string().as_bytes())
            ),
        ),
        (
            "HS256 with Galen's public key as the secret",
            hs256(
                &json!({ "alg": "HS256", "typ": "at+jwt", "kid": fixture.galen_key.kid() }),
                &claims,
                galen_public.as_bytes(),
            ),
        ),
        (
            "not typed at+jwt",
            jws(
                &json!({ "alg": "ES384", "typ": "JWT", "kid": fixture.galen_key.kid() }),
                &claims,
                &galen,
            ),
        ),
        (
            "an unknown client",
            jws(
                &header,
                &json!({ "iss": PUBLIC_URL, "aud": FHIR_BASE, "sub": "gc_nobody", "client_id": "gc_nobody",
                         "iat": fixture.now_seconds(), "exp": fixture.now_seconds() + 300,
                         "jti": "x", "scope": "system/Patient.rs" }),
                &galen,
            ),
        ),
        (
            "no exp",
            jws(
                &header,
                &json!({ "iss": PUBLIC_URL, "aud": FHIR_BASE, "sub": client_id, "client_id": client_id,
                         "iat": fixture.now_seconds(), "jti": "x", "scope": "system/Patient.rs" }),
                &galen,
            ),
        ),
    ];
    for (case, token) in cases {
        let (status, _) = fixture
            .call(&token, Method::GET, "/fhir/Patient", None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
    }

    // The issued token works until it expires (five minutes, 30 s leeway), then never again.
    assert_eq!(
        fixture.status(&issued, Method::GET, "/fhir/Patient").await,
        StatusCode::OK
    );
    fixture
        .clock
        .advance_micros(Duration::from_secs(300 + 29).as_micros() as i64);
    assert_eq!(
        fixture.status(&issued, Method::GET, "/fhir/Patient").await,
        StatusCode::OK,
        "within the leeway"
    );
    fixture
        .clock
        .advance_micros(Duration::from_secs(2).as_micros() as i64);
    assert_eq!(
        fixture.status(&issued, Method::GET, "/fhir/Patient").await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    let (_, trail) = fixture
        .call(
            SERVICE,
            Method::GET,
            "/api/v1/audit?actor=unauthenticated&order=desc&limit=1",
            None,
        )
        .await;
    assert_eq!(trail["items"][0]["resource"], "/fhir/Patient", "{trail}");
    assert_eq!(trail["items"][0]["outcome"], "denied");
}

/// The public point of a P-384 key pair (what an attacker could read from a JWKS).
fn galen_signer_public(signer: &Signer) -> Vec<u8> {
    match signer {
        Signer::Ec(pair) => pair.public_key().as_ref().to_vec(),
        Signer::Rsa(_) => unreachable!("Galen signs with P-384"),
    }
}

#[tokio::test]
async fn a_revoked_client_gets_no_token_and_its_tokens_stop_working() {
    let fixture = Fixture::new().await;
    let signer = Signer::new_ec();
    let client = fixture
        .register(json!({ "name": "leaver", "role": "integration-engineer",
                          "scopes": ["system/Patient.rs"],
                          "jwks": { "keys": [signer.jwk("k1")] } }))
        .await;
    let client_id = client["client_id"].as_str().expect("id");
    let header = json!({ "alg": "ES384", "kid": "k1" });
    let (status, answer) = fixture
        .assertion_request(
            &jws(&header, &fixture.assertion_claims(client_id, "a"), &signer),
            "system/Patient.rs",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let token = answer["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        fixture.status(&token, Method::GET, "/fhir/Patient").await,
        StatusCode::OK
    );
    let (status, revoked) = fixture
        .call(
            SERVICE,
            Method::DELETE,
            &format!("/api/v1/oauth-clients/{}", client["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked"].is_string());
    assert_eq!(
        fixture.status(&token, Method::GET, "/fhir/Patient").await,
        StatusCode::UNAUTHORIZED,
        "an issued token stops at once"
    );
    let (status, answer) = fixture
        .assertion_request(
            &jws(&header, &fixture.assertion_claims(client_id, "b"), &signer),
            "system/Patient.rs",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"], "invalid_client");
    // A restart (a new App on the same data) keeps it revoked.
    let (list_status, list) = fixture
        .call(SERVICE, Method::GET, "/api/v1/oauth-clients", None)
        .await;
    assert_eq!(list_status, StatusCode::OK);
    assert!(list["items"][0]["revoked"].is_string(), "{list}");
}

#[tokio::test]
async fn scopes_beyond_the_allowance_or_needing_a_patient_are_refused() {
    let fixture = Fixture::new().await;
    let client = fixture
        .register(json!({ "name": "narrow", "role": "integration-engineer",
                          "scopes": ["system/Patient.rs", "user/Device.r"] }))
        .await;
    let id = client["client_id"].as_str().expect("id");
    let secret = client["client_secret"].as_str().expect("secret");
    for (scope, expected) in [
        ("system/Observation.rs", "none of the scopes"),
        ("system/Patient.cud", "none of the scopes"),
        ("user/Patient.rs", "none of the scopes"),
        ("system/Device.r", "none of the scopes"),
        ("patient/Patient.rs", "patient/"),
        ("system/Patient.rs?name=x", "query"),
        ("system/Foo.rs", "serves no Foo"),
        ("launch/patient", "not a SMART"),
        ("", "ask for"),
    ] {
        let (status, answer) = fixture
            .token_request(
                &[("grant_type", "client_credentials"), ("scope", scope)],
                Some((id, secret)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{scope}: {answer}");
        assert_eq!(answer["error"], "invalid_scope", "{scope}");
        assert!(
            answer["error_description"]
                .as_str()
                .is_some_and(|text| text.contains(expected)),
            "{scope}: {answer}"
        );
    }
    let (status, answer) = fixture
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "user/*.cruds"),
            ],
            Some((id, secret)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["scope"], "user/Device.r");
}

#[tokio::test]
async fn registration_is_for_administrators_and_checks_what_it_is_given() {
    let fixture = Fixture::new().await;
    let refused = |body: Value| {
        let fixture = &fixture;
        async move {
            let (status, answer) = fixture
                .call(SERVICE, Method::POST, "/api/v1/oauth-clients", Some(body))
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            answer.to_string()
        }
    };
    let base = |role: &str| json!({ "name": format!("c-{role}"), "role": role, "scopes": ["system/*.rs"] });
    assert!(refused(base("administrator")).await.contains("role"));
    assert!(refused(base("patient")).await.contains("role"));
    assert!(refused(base("nurse")).await.contains("wards"));
    assert!(
        refused(json!({ "name": "p", "role": "researcher", "scopes": ["patient/*.rs"] }))
            .await
            .contains("patient/")
    );
    assert!(
        refused(json!({ "name": "p", "role": "researcher", "scopes": [] }))
            .await
            .contains("scopes")
    );
    let signer = Signer::new_ec();
    let mut private = signer.jwk("k");
    private["d"] = json!("AAAA");
    assert!(
        refused(
            json!({ "name": "p", "role": "researcher", "scopes": ["system/*.rs"],
                        "jwks": { "keys": [private] } })
        )
        .await
        .contains("private")
    );
    // A nurse ward-bound client is fine with wards.
    let nurse = fixture
        .register(
            json!({ "name": "ward display", "role": "nurse", "wards": ["ICU"],
                          "scopes": ["user/Patient.rs"] }),
        )
        .await;
    assert_eq!(nurse["wards"], json!(["ICU"]));
    // The list shows no secret; the name is unique.
    let (_, list) = fixture
        .call(SERVICE, Method::GET, "/api/v1/oauth-clients", None)
        .await;
    assert!(!list.to_string().contains("gcs_"), "{list}");
    let (status, _) = fixture
        .call(
            SERVICE,
            Method::POST,
            "/api/v1/oauth-clients",
            Some(
                json!({ "name": "ward display", "role": "researcher", "scopes": ["system/*.rs"] }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Only administrators register: a nurse account's token is refused, and so is a client's.
    let user = fixture
        .service(
            Method::POST,
            "/api/v1/users",
            json!({ "name": "nurse.ann", "password": "correct horse battery staple",
                    "role": "nurse", "wards": ["ICU"] }),
        )
        .await;
    let api_token = fixture
        .service(
            Method::POST,
            &format!("/api/v1/users/{}/tokens", user["id"]),
            json!({ "label": "t" }),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        fixture
            .status(&api_token, Method::GET, "/api/v1/oauth-clients")
            .await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn ward_scope_and_role_still_apply_under_scopes() {
    let fixture = Fixture::new().await;
    let (icu, cardio) = two_wards(&fixture).await;
    let icu_only = fixture
        .register(
            json!({ "name": "icu feed", "role": "integration-engineer", "wards": ["ICU"],
                          "scopes": ["system/*.cruds"] }),
        )
        .await;
    let token = fixture.secret_token(&icu_only, "system/*.rs").await;
    assert_eq!(
        fixture
            .status(&token, Method::GET, &format!("/fhir/Patient/{icu}"))
            .await,
        StatusCode::OK
    );
    assert_eq!(
        fixture
            .status(&token, Method::GET, &format!("/fhir/Patient/{cardio}"))
            .await,
        StatusCode::FORBIDDEN,
        "another ward"
    );
    assert_eq!(
        fixture
            .status(
                &token,
                Method::GET,
                &format!("/fhir/Observation?patient={icu}")
            )
            .await,
        StatusCode::OK
    );
    // A researcher's role has no FHIR permission: scopes never widen it.
    let researcher = fixture
        .register(json!({ "name": "study", "role": "researcher", "scopes": ["system/*.cruds"] }))
        .await;
    let token = fixture.secret_token(&researcher, "system/*.cruds").await;
    assert_eq!(
        fixture.status(&token, Method::GET, "/fhir/Patient").await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn batch_transaction_and_export_are_checked_against_the_scopes() {
    let fixture = Fixture::new().await;
    let (icu, _) = two_wards(&fixture).await;
    let client = fixture
        .register(json!({ "name": "batcher", "role": "integration-engineer",
                          "scopes": ["system/Patient.rs"] }))
        .await;
    let token = fixture.secret_token(&client, "system/Patient.rs").await;
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            { "request": { "method": "GET", "url": format!("Patient/{icu}") } },
            { "request": { "method": "GET", "url": format!("Observation?patient={icu}") } },
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("B-1") },
        ]
    });
    let (status, answer) = fixture
        .call(&token, Method::POST, "/fhir", Some(batch))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let statuses: Vec<&str> = answer["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["response"]["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["200 OK", "403 Forbidden", "403 Forbidden"],
        "{answer}"
    );
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("T-1") },
        ]
    });
    let (status, answer) = fixture
        .call(&token, Method::POST, "/fhir", Some(transaction))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (_, patients) = fixture
        .call(
            SERVICE,
            Method::GET,
            "/fhir/Patient?identifier=urn:mrn|T-1",
            None,
        )
        .await;
    assert_eq!(patients["total"], 0, "nothing written: {patients}");

    let export = |query: &'static str| {
        let token = token.clone();
        let fixture = &fixture;
        async move {
            let request = Request::get(format!("/fhir/$export{query}"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header("prefer", "respond-async")
                .body(Body::empty())
                .expect("request");
            fixture.send(request).await.0
        }
    };
    assert_eq!(export("").await, StatusCode::FORBIDDEN, "every type");
    assert_eq!(export("?_type=Patient,Flag").await, StatusCode::FORBIDDEN);
    assert_eq!(export("?_type=Patient").await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn smart_configuration_advertises_the_token_endpoint_and_metadata_points_to_it() {
    let fixture = Fixture::new().await;
    let request = Request::get("/fhir/.well-known/smart-configuration")
        .body(Body::empty())
        .expect("request");
    let (status, configuration) = fixture.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(configuration["token_endpoint"], TOKEN_ENDPOINT);
    assert_eq!(
        configuration["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        configuration["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
    for capability in [
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
        "permission-v2",
    ] {
        assert!(
            configuration["capabilities"]
                .as_array()
                .expect("capabilities")
                .contains(&json!(capability)),
            "{capability}"
        );
    }
    assert!(
        configuration["token_endpoint_auth_methods_supported"]
            .as_array()
            .expect("methods")
            .contains(&json!("private_key_jwt"))
    );
    let request = Request::get("/fhir/metadata")
        .body(Body::empty())
        .expect("request");
    let (status, statement) = fixture.send(request).await;
    assert_eq!(status, StatusCode::OK);
    let security = &statement["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    assert!(
        security["description"].as_str().is_some_and(
            |text| text.contains("https://galen.test/fhir/.well-known/smart-configuration")
        ),
        "{security}"
    );
}

#[tokio::test]
async fn a_device_client_named_by_its_serial_sends_only_its_own_observations() {
    let fixture = Fixture::new().await;
    two_wards(&fixture).await;
    let device = fixture
        .register(
            json!({ "name": "MON-ICU", "role": "device", "scopes": ["system/Observation.c"] }),
        )
        .await;
    let token = fixture.secret_token(&device, "system/Observation.c").await;
    let observation = |serial: &str| {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] }],
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
            "device": { "identifier": { "system": "https://galen.invalid/fhir/sid/device-serial", "value": serial } },
            "effectiveDateTime": "2026-11-24T07:59:45Z",
            "valueQuantity": { "value": 82, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" }
        })
    };
    let (status, answer) = fixture
        .call(
            &token,
            Method::POST,
            "/fhir/Observation",
            Some(observation("MON-ICU")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, _) = fixture
        .call(
            &token,
            Method::POST,
            "/fhir/Observation",
            Some(observation("MON-CAR")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        fixture
            .status(&token, Method::GET, "/fhir/Observation")
            .await,
        StatusCode::FORBIDDEN,
        "no read"
    );
}
