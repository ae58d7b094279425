//! The hardening middleware in-process, through `App::router`: security headers on every
//! answer, the per-client rate limit (429 with `Retry-After`, JSON or OperationOutcome, counted
//! in `/metrics`), the cross-site check of cookie-authenticated actions, HSTS only over TLS, and
//! request size limits on every API including FHIR.
//!
//! Requests carry the client's address the way the HTTP server attaches it (`ConnectInfo`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use galen_model::{ManualClock, Timestamp};
use galen_server::{App, HardeningConfig, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

const REMOTE: &str = "203.0.113.10:50000";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("text header"))
    }
}

struct TestApp {
    app: App,
    store: Arc<SqliteStore>,
    _dir: TempDir,
}

impl TestApp {
    /// The details of the audit records of requests refused before authentication.
    async fn refusals(&self) -> Vec<(String, String)> {
        use galen_store::AuditStore;
        self.store
            .audit(galen_store::AuditQuery::default())
            .await
            .expect("audit")
            .into_iter()
            .filter(|stored| stored.record.actor == "unidentified")
            .map(|stored| (stored.record.source, stored.record.detail))
            .collect()
    }
}

async fn spawn(hardening: HardeningConfig) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store"));
    let now = Timestamp::parse_rfc3339("2026-11-23T08:00:00Z").expect("time");
    let config = ServerConfig {
        max_body_bytes: 64 * 1024,
        hardening,
        ..ServerConfig::default()
    };
    let app = App::new(store.clone(), Arc::new(ManualClock::new(now)), config)
        .await
        .expect("app starts");
    TestApp {
        app,
        store,
        _dir: dir,
    }
}

/// A request as it arrives from `from` (`None`: in-process, no address).
fn request(
    method: Method,
    path: &str,
    from: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "galen.example:8080");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    if let Some(from) = from {
        let address: SocketAddr = from.parse().expect("address");
        request.extensions_mut().insert(ConnectInfo(address));
    }
    request
}

impl TestApp {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .app
            .router()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, from: Option<&str>) -> Reply {
        self.send(request(Method::GET, path, from, &[], None)).await
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics", None).await.body;
        let text = text.as_str().expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
            .trim()
            .parse()
            .expect("number")
    }
}

fn patient() -> String {
    json!({
        "identifier": { "system": "urn:oid:1.2.3.4", "value": "MRN-HARD-1" },
        "name": { "family": "Lovelace", "given": "Ada" },
        "birth_date": "1950-02-28",
        "sex": "female",
        "ward": "4B",
        "bed": "1",
    })
    .to_string()
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn(HardeningConfig::default()).await;
    for path in [
        "/",
        "/login",
        "/api/v1/patients",
        "/fhir/Patient",
        "/fhir/metadata",
        "/api/v1/nothing-here",
        "/metrics",
    ] {
        let reply = app.get(path, Some(REMOTE)).await;
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("referrer-policy"), Some("same-origin"));
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{path} carries or leads to patient data"
        );
        assert_eq!(
            reply.header("strict-transport-security"),
            None,
            "{path}: plain HTTP"
        );
    }
    let style = app.get("/assets/style.css", Some(REMOTE)).await;
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(style.header("cache-control"), Some("no-cache"));
    assert_eq!(style.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn hsts_only_when_a_trusted_proxy_says_https() {
    let app = spawn(HardeningConfig {
        trusted_proxies: vec!["10.0.0.2".parse().expect("proxy")],
        ..HardeningConfig::default()
    })
    .await;
    let forwarded = [("x-forwarded-proto", "https")];
    let through_proxy = app
        .send(request(
            Method::GET,
            "/healthz",
            Some("10.0.0.2:4000"),
            &forwarded,
            None,
        ))
        .await;
    assert_eq!(
        through_proxy.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let claimed = app
        .send(request(
            Method::GET,
            "/healthz",
            Some(REMOTE),
            &forwarded,
            None,
        ))
        .await;
    assert_eq!(
        claimed.header("strict-transport-security"),
        None,
        "a client cannot claim HTTPS for itself"
    );
}

#[tokio::test]
async fn over_the_rate_is_429_with_retry_after_and_counted() {
    let app = spawn(HardeningConfig {
        rate_per_second: 1,
        rate_burst: 3,
        ..HardeningConfig::default()
    })
    .await;
    for _ in 0..3 {
        let reply = app.get("/api/v1/patients", Some(REMOTE)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = app.get("/api/v1/patients", Some(REMOTE)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.body["error"], "rate_limited");
    assert_eq!(limited.header("x-frame-options"), Some("DENY"));

    let fhir = app.get("/fhir/Patient", Some(REMOTE)).await;
    assert_eq!(fhir.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fhir.body["resourceType"], "OperationOutcome");
    assert_eq!(fhir.body["issue"][0]["code"], "throttled");
    assert!(fhir.header("retry-after").is_some());

    // Health probes, loopback clients and other addresses are not held back.
    assert_eq!(
        app.get("/healthz", Some(REMOTE)).await.status,
        StatusCode::OK
    );
    for from in ["127.0.0.1:5000", "[::1]:5000", "203.0.113.11:1"] {
        assert_eq!(
            app.get("/api/v1/patients", Some(from)).await.status,
            StatusCode::OK,
            "{from}"
        );
    }
    // Another host in the same IPv6 /64 shares the bucket; another /64 does not.
    for _ in 0..3 {
        app.get("/api/v1/patients", Some("[2001:db8:0:1::1]:1"))
            .await;
    }
    assert_eq!(
        app.get("/api/v1/patients", Some("[2001:db8:0:1::2]:1"))
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.get("/api/v1/patients", Some("[2001:db8:0:2::1]:1"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.metric("galen_http_refused_total{reason=\"rate_limited\"}")
            .await,
        3.0
    );
    // Audited once per client and minute, not once per refused request.
    let refusals = app.refusals().await;
    assert_eq!(
        refusals
            .iter()
            .map(|(source, _)| source.as_str())
            .collect::<Vec<_>>(),
        ["203.0.113.10", "2001:db8:0:1::2"],
        "{refusals:?}"
    );
    assert!(
        refusals[0]
            .1
            .starts_with("GET /api/v1/patients: rate limit exceeded"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_have_buckets_of_their_own() {
    let app = spawn(HardeningConfig {
        rate_per_second: 1,
        rate_burst: 1,
        trusted_proxies: vec!["10.0.0.2".parse().expect("proxy")],
        ..HardeningConfig::default()
    })
    .await;
    let via = |client: &'static str| {
        request(
            Method::GET,
            "/api/v1/patients",
            Some("10.0.0.2:4000"),
            &[("x-forwarded-for", client)],
            None,
        )
    };
    assert_eq!(app.send(via("198.51.100.1")).await.status, StatusCode::OK);
    assert_eq!(
        app.send(via("198.51.100.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.send(via("198.51.100.2")).await.status, StatusCode::OK);
    // An untrusted peer's X-Forwarded-For is ignored: it is limited as itself.
    let spoofing = |client: &'static str| {
        request(
            Method::GET,
            "/api/v1/patients",
            Some(REMOTE),
            &[("x-forwarded-for", client)],
            None,
        )
    };
    assert_eq!(
        app.send(spoofing("198.51.100.3")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(spoofing("198.51.100.4")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn cookie_authenticated_actions_from_another_site_are_refused() {
    let app = spawn(HardeningConfig::default()).await;
    let cookie = ("cookie", "galen_session=anything");
    let json = ("content-type", "application/json");
    let post = |headers: &[(&str, &str)]| {
        request(
            Method::POST,
            "/api/v1/patients",
            Some(REMOTE),
            headers,
            Some(patient()),
        )
    };
    for headers in [
        vec![cookie, json, ("origin", "https://evil.example")],
        vec![cookie, json, ("referer", "https://evil.example/form")],
        vec![cookie, json],
        vec![cookie, json, ("sec-fetch-site", "cross-site")],
        vec![json, ("origin", "null")],
    ] {
        let reply = app.send(post(&headers)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(reply.body["error"], "cross_site_request");
        assert!(reply.header("content-security-policy").is_some());
    }
    let fhir = app
        .send(request(
            Method::POST,
            "/fhir/Patient",
            Some(REMOTE),
            &[cookie, ("origin", "https://evil.example")],
            Some("{}".into()),
        ))
        .await;
    assert_eq!(fhir.status, StatusCode::FORBIDDEN);
    assert_eq!(fhir.body["resourceType"], "OperationOutcome");
    assert_eq!(fhir.body["issue"][0]["code"], "forbidden");
    assert_eq!(
        app.metric("galen_http_refused_total{reason=\"cross_site\"}")
            .await,
        6.0
    );

    // From the dashboard itself (what a browser sends), and API clients with a bearer token,
    // reach the handler. (This app is open, as in demo mode, so the handler answers 201.)
    let same_origin = app
        .send(post(&[
            cookie,
            json,
            ("origin", "http://galen.example:8080"),
            ("sec-fetch-site", "same-origin"),
        ]))
        .await;
    assert_eq!(
        same_origin.status,
        StatusCode::CREATED,
        "{}",
        same_origin.body
    );
    let bearer = app
        .send(request(
            Method::PUT,
            "/api/v1/patients/1",
            Some(REMOTE),
            &[
                json,
                ("authorization", "Bearer whatever"),
                ("origin", "https://evil.example"),
            ],
            Some(patient()),
        ))
        .await;
    assert_ne!(bearer.status, StatusCode::FORBIDDEN, "{}", bearer.body);
    // Reading is never refused as cross-site (the cookie is SameSite=Strict anyway).
    let read = app
        .send(request(
            Method::GET,
            "/api/v1/patients",
            Some(REMOTE),
            &[cookie, ("origin", "https://evil.example")],
            None,
        ))
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let refusals = app.refusals().await;
    assert!(
        !refusals.is_empty()
            && refusals
                .iter()
                .all(|(_, detail)| detail.contains("cross-site request refused")),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn oversize_bodies_are_refused_on_every_api_including_fhir() {
    let app = spawn(HardeningConfig::default()).await;
    let big = format!(
        "{{\"resourceType\":\"Patient\",\"x\":\"{}\"}}",
        "a".repeat(70_000)
    );
    for (path, fhir) in [
        ("/fhir/Patient", true),
        ("/fhir", true),
        ("/fhir/Observation", true),
        ("/api/v1/patients", false),
    ] {
        let content_type = if fhir {
            "application/fhir+json"
        } else {
            "application/json"
        };
        let reply = app
            .send(request(
                Method::POST,
                path,
                None,
                &[("content-type", content_type)],
                Some(big.clone()),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        if fhir {
            assert_eq!(reply.body["resourceType"], "OperationOutcome", "{path}");
            assert_eq!(reply.body["issue"][0]["code"], "too-long", "{path}");
        } else {
            assert_eq!(reply.body["error"], "too_large", "{path}");
        }
    }
    // Ingest reads its body itself, with the same limit, and answers in its own words.
    let ingest = app
        .send(request(
            Method::POST,
            "/api/v1/measurements",
            None,
            &[("content-type", "application/json")],
            Some(format!("[{}]", " ".repeat(70_000))),
        ))
        .await;
    assert_eq!(ingest.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(ingest.body.is_object(), "{}", ingest.body);
}
