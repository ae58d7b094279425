//! The TOTP second factor, in process with a manual clock: enrolment and confirmation, sign-in
//! with, without, with a wrong and with a replayed code (one answer for every failure, counted
//! toward the lockout), removal with a code or by another administrator, and
//! `require_admin_totp`. Codes come from the RFC 6238 implementation after the secret is read
//! back from the answer's base32 with a decoder written here.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use galen_model::{Clock, ManualClock, Timestamp};
use galen_server::access::accounts::AccessSettings;
use galen_server::access::totp::{code_at, step_of};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const SERVICE: &str = "service-token-for-the-totp-test";
const PASSWORD: &str = "correct horse battery staple";
const HOST: &str = "galen.example";

struct Fixture {
    app: App,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    cookie: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Fixture {
    async fn new(require_admin_totp: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
        let clock = Arc::new(ManualClock::new(
            Timestamp::parse_rfc3339("2026-11-24T08:00:10Z").expect("time"),
        ));
        let app = App::new(
            Arc::new(store),
            clock.clone(),
            ServerConfig {
                api_token: Some(SERVICE.to_owned()),
                access: AccessSettings {
                    require_admin_totp,
                    ..AccessSettings::default()
                },
                ..ServerConfig::default()
            },
        )
        .await
        .expect("app starts");
        Fixture {
            app,
            clock,
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.router().oneshot(request).await.expect("router");
        let status = response.status();
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            cookie,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// A request with a bearer token (`token`) or a session cookie (`cookie=value`).
    async fn call(
        &self,
        credential: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        request = if credential.starts_with("galen_session=") {
            request
                .header(header::COOKIE, credential)
                .header(header::HOST, HOST)
                .header(header::ORIGIN, format!("https://{HOST}"))
        } else {
            request.header(header::AUTHORIZATION, format!("Bearer {credential}"))
        };
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .expect("request");
        self.send(request).await
    }

    async fn login(&self, name: &str, password: &str, code: Option<&str>) -> Reply {
        let mut form = format!("name={name}&password={}", password.replace(' ', "+"));
        if let Some(code) = code {
            form.push_str(&format!("&code={code}"));
        }
        let request = Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .expect("request");
        self.send(request).await
    }

    /// Signs in and returns the session cookie, failing the test otherwise.
    async fn session(&self, name: &str, code: Option<&str>) -> String {
        let reply = self.login(name, PASSWORD, code).await;
        assert!(
            reply.status.is_redirection(),
            "sign-in of {name}: {} {}",
            reply.status,
            reply.text
        );
        reply.cookie.expect("a session cookie")
    }

    async fn account(&self, name: &str, role: &str, wards: &[&str]) -> i64 {
        let reply = self
            .call(
                SERVICE,
                Method::POST,
                "/api/v1/users",
                Some(json!({ "name": name, "password": PASSWORD, "role": role, "wards": wards })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json()["id"].as_i64().expect("id")
    }

    fn now_step(&self) -> u64 {
        step_of(self.clock.now())
    }

    /// Enrols and confirms a second factor for the session; returns the secret.
    async fn enrol(&self, session: &str) -> Vec<u8> {
        let reply = self
            .call(session, Method::POST, "/api/v1/session/totp", None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let secret = base32_decode(reply.json()["secret"].as_str().expect("secret"));
        let code = code_at(&secret, self.now_step());
        let reply = self
            .call(
                session,
                Method::POST,
                "/api/v1/session/totp/confirm",
                Some(json!({ "code": code })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        secret
    }
}

/// RFC 4648 base32 without padding, decoded independently of Galen's encoder.
fn base32_decode(text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for character in text.chars() {
        let value = match character {
            'A'..='Z' => u64::from(character) - u64::from('A'),
            '2'..='7' => u64::from(character) - u64::from('2') + 26,
            other => panic!("not base32: {other:?}"),
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push(((buffer >> bits) & 0xFF) as u8);
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_needs_a_fresh_code_once_a_second_factor_is_active() {
    let fixture = Fixture::new(false).await;
    fixture.account("ada", "administrator", &[]).await;
    let session = fixture.session("ada", None).await;

    // Enrolment: the secret is answered once, as base32 and an otpauth:// URI.
    let reply = fixture
        .call(&session, Method::POST, "/api/v1/session/totp", None)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let enrolment = reply.json();
    let encoded = enrolment["secret"].as_str().expect("secret").to_owned();
    let secret = base32_decode(&encoded);
    assert_eq!(secret.len(), 20, "160 bits");
    assert_eq!(
        enrolment["uri"],
        format!(
            "otpauth://totp/Galen:ada?secret={encoded}&issuer=Galen&algorithm=SHA1&digits=6&period=30"
        )
    );
    // Not active until confirmed: sign-in without a code still works, and nobody sees the secret.
    fixture.session("ada", None).await;
    let users = fixture
        .call(SERVICE, Method::GET, "/api/v1/users", None)
        .await;
    assert!(!users.text.contains(&encoded), "{}", users.text);
    assert_eq!(users.json()["items"][0]["second_factor"], false);
    let wrong = fixture
        .call(
            &session,
            Method::POST,
            "/api/v1/session/totp/confirm",
            Some(json!({ "code": "000000" })),
        )
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.text
    );
    let step = fixture.now_step();
    let confirm = fixture
        .call(
            &session,
            Method::POST,
            "/api/v1/session/totp/confirm",
            Some(json!({ "code": code_at(&secret, step) })),
        )
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.text);
    let me = fixture
        .call(&session, Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(me.json()["second_factor"], true);
    let again = fixture
        .call(&session, Method::POST, "/api/v1/session/totp", None)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "one factor at a time");

    // Without, with a wrong, and with the confirming (used) code: one answer, no session.
    let failures = [
        fixture.login("ada", PASSWORD, None).await,
        fixture.login("ada", PASSWORD, Some("123456")).await,
        fixture
            .login("ada", PASSWORD, Some(&code_at(&secret, step)))
            .await,
        fixture
            .login("ada", "wrong password!!", Some(&code_at(&secret, step + 1)))
            .await,
    ];
    let unknown = fixture.login("nobody", PASSWORD, Some("123456")).await;
    for failure in &failures {
        assert_eq!(failure.status, StatusCode::UNAUTHORIZED);
        assert!(failure.cookie.is_none());
        assert_eq!(
            failure.text, unknown.text,
            "the same answer for every failure"
        );
    }
    // The code of the next step is within the window; then it is used up.
    fixture
        .session("ada", Some(&code_at(&secret, step + 1)))
        .await;
    let replayed = fixture
        .login("ada", PASSWORD, Some(&code_at(&secret, step + 1)))
        .await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "a code works once"
    );
    // Thirty seconds later: the current code works, an older unused one does not (steps only go
    // forward), and one outside the window neither.
    fixture.clock.advance_micros(30_000_000);
    let now = fixture.now_step();
    assert_eq!(now, step + 1);
    fixture.clock.advance_micros(30_000_000);
    let now = fixture.now_step();
    let spaced = {
        let code = code_at(&secret, now);
        format!("{}+{}", &code[..3], &code[3..])
    };
    fixture.session("ada", Some(&spaced)).await;
    for code in [code_at(&secret, now - 1), code_at(&secret, now + 2)] {
        let reply = fixture.login("ada", PASSWORD, Some(&code)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{code}");
    }

    // Wrong codes count toward the lockout like wrong passwords (two so far since the last
    // success): three more lock the account, even against a fresh code.
    for _ in 0..3 {
        let reply = fixture.login("ada", PASSWORD, Some("000000")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    fixture.clock.advance_micros(30_000_000);
    let locked = fixture
        .login("ada", PASSWORD, Some(&code_at(&secret, fixture.now_step())))
        .await;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED, "locked");
    assert_eq!(locked.text, unknown.text);

    // The audit trail tells a second-factor failure from a wrong password (a known password is
    // worth a security officer's look), records enrolment as configuration changes, and holds
    // neither the secret nor a code.
    let trail = fixture
        .call(SERVICE, Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    let items = trail.json()["items"].as_array().expect("items").clone();
    let factor_failures = items
        .iter()
        .filter(|item| {
            item["action"] == "login-failed"
                && item["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains("second-factor"))
        })
        .count();
    // Three, one replay, two outside the window, two of the last three (the fifth failure in a
    // row is recorded as the lock it causes).
    assert_eq!(factor_failures, 3 + 1 + 2 + 2, "{items:#?}");
    for path in ["/api/v1/session/totp", "/api/v1/session/totp/confirm"] {
        assert!(
            items.iter().any(|item| item["action"] == "config-change"
                && item["resource"] == path
                && item["outcome"] == "success"),
            "{path} audited as a configuration change"
        );
    }
    assert!(!trail.text.contains(&encoded));
    assert!(!trail.text.contains(&code_at(&secret, step)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_factor_is_removed_with_a_code_or_by_another_administrator() {
    let fixture = Fixture::new(false).await;
    let ada = fixture.account("ada", "administrator", &[]).await;
    let bob = fixture.account("bob", "administrator", &[]).await;
    let session = fixture.session("ada", None).await;
    let secret = fixture.enrol(&session).await;

    // Not with an API token of the account, which could otherwise lock its holder out.
    let token = fixture
        .call(
            SERVICE,
            Method::POST,
            &format!("/api/v1/users/{ada}/tokens"),
            Some(json!({ "label": "script" })),
        )
        .await;
    let token = token.json()["token"].as_str().expect("token").to_owned();
    for (method, path) in [
        (Method::POST, "/api/v1/session/totp"),
        (Method::DELETE, "/api/v1/session/totp"),
    ] {
        let reply = fixture
            .call(&token, method, path, Some(json!({ "code": "000000" })))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            reply.text
        );
    }
    // Oneself: with a current, unused code only.
    let reply = fixture
        .call(
            &session,
            Method::DELETE,
            "/api/v1/session/totp",
            Some(json!({ "code": "000000" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let used = code_at(&secret, fixture.now_step());
    let reply = fixture
        .call(
            &session,
            Method::DELETE,
            "/api/v1/session/totp",
            Some(json!({ "code": used })),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the confirming code is used"
    );
    let reply = fixture
        .call(
            &session,
            Method::DELETE,
            &format!("/api/v1/users/{ada}/totp"),
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "not one's own without a code"
    );
    fixture.clock.advance_micros(30_000_000);
    let reply = fixture
        .call(
            &session,
            Method::DELETE,
            "/api/v1/session/totp",
            Some(json!({ "code": code_at(&secret, fixture.now_step()) })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    fixture.session("ada", None).await;

    // Another administrator removes a lost factor.
    let secret = fixture.enrol(&session).await;
    fixture.clock.advance_micros(30_000_000);
    fixture
        .session("ada", Some(&code_at(&secret, fixture.now_step())))
        .await;
    let bob_session = fixture.session("bob", None).await;
    let reply = fixture
        .call(
            &bob_session,
            Method::DELETE,
            &format!("/api/v1/users/{ada}/totp"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    fixture.session("ada", None).await;
    assert_ne!(ada, bob);
    let trail = fixture
        .call(
            SERVICE,
            Method::GET,
            "/api/v1/audit?action=config-change&actor=bob",
            None,
        )
        .await;
    assert!(
        trail.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|item| item["resource"] == format!("/api/v1/users/{ada}/totp")),
        "{}",
        trail.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_for_administrators_they_may_only_enrol_until_they_have_one() {
    let fixture = Fixture::new(true).await;
    let ada = fixture.account("ada", "administrator", &[]).await;
    fixture.account("nina", "nurse", &["ICU"]).await;
    let session = fixture.session("ada", None).await;
    let token = fixture
        .call(
            SERVICE,
            Method::POST,
            &format!("/api/v1/users/{ada}/tokens"),
            Some(json!({ "label": "script" })),
        )
        .await;
    let token = token.json()["token"].as_str().expect("token").to_owned();
    for credential in [session.as_str(), token.as_str()] {
        for path in ["/api/v1/users", "/api/v1/patients", "/api/v1/devices"] {
            let reply = fixture.call(credential, Method::GET, path, None).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
            assert!(reply.text.contains("second factor"), "{}", reply.text);
        }
    }
    let me = fixture
        .call(&session, Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["second_factor"], false);
    // Other roles are not concerned.
    let nurse = fixture.session("nina", None).await;
    let reply = fixture
        .call(&nurse, Method::GET, "/api/v1/patients", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let secret = fixture.enrol(&session).await;
    let reply = fixture
        .call(&session, Method::GET, "/api/v1/users", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "enrolled: {}", reply.text);
    fixture.clock.advance_micros(30_000_000);
    let fresh = fixture
        .session("ada", Some(&code_at(&secret, fixture.now_step())))
        .await;
    let reply = fixture
        .call(&fresh, Method::GET, "/api/v1/users", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}
