//! Hardening of the HTTP surface, one middleware around the whole router ([`harden`]):
//!
//! `request -> client (the peer, or the address a trusted proxy forwarded) -> rate limit per
//! client (429) -> origin check of unsafe methods (403) -> the router -> security headers`.
//!
//! - **Rate limit**: a token bucket per client address (IPv6 clients by /64 prefix, since one
//!   host usually has a whole /64). Loopback clients are not limited (they are on the server
//!   already; benchmarks and local tools use it), nor are `/healthz` and `/readyz`. Buckets that
//!   have filled up again are forgotten, so memory is bounded by the clients active within the
//!   last `burst / rate` seconds, and by `max_clients` in any case: when the table is full of
//!   active clients, new ones share one overflow bucket. Refusals are `429` with `Retry-After`.
//! - **Cross-site requests**: the dashboard authenticates with a cookie, which a browser also
//!   sends with a form or `fetch` that another site starts. An unsafe method (POST, PUT, PATCH,
//!   DELETE) not authenticated by a bearer token must come from this server's own pages: the
//!   browser's `Sec-Fetch-Site` must say `same-origin`, or else its `Origin` (or `Referer`) must
//!   name the host the request was sent to; a request with a cookie but none of the three is
//!   refused too. A bearer token cannot be forged cross-site (browsers add `Authorization` only
//!   when a script does, and Galen grants no CORS), so API clients are not affected. This is the
//!   algorithm of Go's `http.CrossOriginProtection`, stricter for cookies.
//! - **Headers** on every answer, refusals included: a Content-Security-Policy that allows only
//!   the server's own scripts, styles and connections (the dashboard has no inline script or
//!   style, which a test of the assets keeps true), no framing, `nosniff`, referrers only to the
//!   same origin, `Cache-Control: no-store` unless the handler chose otherwise (answers carry
//!   patient data; the static assets say `no-cache`), and `Strict-Transport-Security` when the
//!   request came over TLS (Galen's own, or a trusted proxy's `X-Forwarded-Proto: https`).
//!
//! The referrer policy is `same-origin`, not `no-referrer`: under `no-referrer` browsers send
//! `Origin: null` with same-origin POSTs, which would defeat the origin check; `same-origin`
//! still never tells another site which page (which patient) a link was followed from.
//!
//! FHIR batches replay their entries through the inner router, so an entry is not checked or
//! counted again: the Bundle's request was.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use galen_fhir::IssueType;

use crate::App;
use crate::error::ApiError;
use crate::fhir::FhirError;

/// The dashboard's Content-Security-Policy (every answer carries it; JSON needs nothing more).
/// `img-src data:` is for the empty favicon; `connect-src 'self'` covers `fetch` and the live
/// stream.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One year, without `includeSubDomains`: Galen cannot know the other hosts of its domain.
const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Settings of the HTTP hardening: the per-client rate limit and the proxies to believe.
#[derive(Debug, Clone, PartialEq)]
pub struct HardeningConfig {
    /// Requests per second a client may make on average; 0 turns the limit off.
    pub rate_per_second: u32,
    /// Requests a client may make at once before the rate applies (at least 1).
    pub rate_burst: u32,
    /// Most clients whose buckets are kept; beyond, new clients share one bucket.
    pub max_clients: usize,
    /// Reverse proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` are
    /// believed. Behind a proxy that is not listed, every client counts as the proxy (and a proxy
    /// on the loopback address would be exempt from the limit).
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for HardeningConfig {
    /// 50 requests a second, bursts of 200: a dashboard loads about ten resources a page and a
    /// gateway sends batches; a script hammering the API from one address is slowed down.
    fn default() -> HardeningConfig {
        HardeningConfig {
            rate_per_second: 50,
            rate_burst: 200,
            max_clients: 65_536,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The connection a request came on: set by the HTTP server for every connection (plain TCP or
/// TLS); absent when the router is called in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// The remote address.
    pub(crate) addr: SocketAddr,
    /// Whether the connection is TLS.
    pub(crate) tls: bool,
}

/// The hardening state of a running app: the rate limiter and the trusted proxies.
#[derive(Debug)]
pub(crate) struct Hardening {
    limiter: Option<RateLimiter>,
    trusted_proxies: Vec<IpAddr>,
    /// When each client's refusals were last audited, by kind: a flood of refused requests
    /// writes one audit record per client and kind a minute, not one per request.
    audited: Mutex<HashMap<(Option<IpAddr>, &'static str), Instant>>,
    max_clients: usize,
}

/// How often the refusals of one client are audited, at most.
const REFUSAL_AUDIT_INTERVAL: Duration = Duration::from_secs(60);

impl Hardening {
    pub(crate) fn new(config: &HardeningConfig) -> Hardening {
        Hardening {
            limiter: (config.rate_per_second > 0).then(|| {
                RateLimiter::new(
                    f64::from(config.rate_per_second),
                    f64::from(config.rate_burst.max(1)),
                    config.max_clients.max(1),
                )
            }),
            trusted_proxies: config.trusted_proxies.clone(),
            audited: Mutex::new(HashMap::new()),
            max_clients: config.max_clients.max(1),
        }
    }

    /// Whether a refusal of `kind` from `client` is due an audit record at `now`.
    fn refusal_due(&self, client: Option<IpAddr>, kind: &'static str, now: Instant) -> bool {
        let mut audited = self
            .audited
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if audited.len() >= self.max_clients {
            audited.retain(|_, last| now.duration_since(*last) < REFUSAL_AUDIT_INTERVAL);
        }
        match audited.get(&(client, kind)) {
            Some(last) if now.duration_since(*last) < REFUSAL_AUDIT_INTERVAL => false,
            _ => {
                if audited.len() < self.max_clients {
                    audited.insert((client, kind), now);
                }
                true
            }
        }
    }

    /// Who sent `request` and how: the peer, or what a trusted proxy says about its client.
    fn client(&self, request: &Request) -> Client {
        let extensions = request.extensions();
        let peer = extensions
            .get::<ConnectInfo<Peer>>()
            .map(|info| info.0)
            .or_else(|| {
                extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| Peer {
                        addr: info.0,
                        tls: false,
                    })
            });
        let headers = request.headers();
        let Some(peer) = peer else {
            return Client {
                address: None,
                secure: false,
                host: host_header(headers, false),
            };
        };
        let proxied = self.trusted_proxies.contains(&canonical(peer.addr.ip()));
        let address = if proxied {
            forwarded_client(headers, &self.trusted_proxies).unwrap_or(peer.addr.ip())
        } else {
            peer.addr.ip()
        };
        let forwarded_https = proxied
            && first_value(headers, "x-forwarded-proto")
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https"));
        Client {
            address: Some(canonical(address)),
            secure: peer.tls || forwarded_https,
            host: host_header(headers, proxied),
        }
    }
}

/// What the middleware knows about the sender of a request.
#[derive(Debug)]
struct Client {
    /// `None` for in-process calls (tests, FHIR batch entries).
    address: Option<IpAddr>,
    /// Came over TLS (directly, or to a trusted proxy).
    secure: bool,
    /// The host the request was sent to (`Host`, or a trusted proxy's `X-Forwarded-Host`).
    host: Option<String>,
}

/// The middleware: rate limit, origin check, security headers. See the module documentation.
pub(crate) async fn harden(State(app): State<App>, request: Request, next: Next) -> Response {
    let hardening = &app.0.hardening;
    let client = hardening.client(&request);
    // Owned: the refusals below are audited across an await, and a request is not `Sync`.
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let fhir = path == "/fhir" || path.starts_with("/fhir/");
    let now = Instant::now();
    let mut response = if let Some(retry_after) =
        rate_limited(hardening, client.address, &path, now)
    {
        app.0.metrics.http_refused("rate_limited");
        tracing::debug!("request refused: rate limit");
        if hardening.refusal_due(client.address, "rate_limited", now) {
            audit_refusal(&app, method, path, client.address, "rate limit exceeded; further refusals of this client within a minute are counted, not recorded").await;
        }
        too_many_requests(fhir, retry_after)
    } else if let Some(reason) = cross_site(&method, request.headers(), client.host.as_deref()) {
        app.0.metrics.http_refused("cross_site");
        tracing::warn!(reason, "cross-site request refused");
        if hardening.refusal_due(client.address, "cross_site", now) {
            audit_refusal(
                &app,
                method,
                path,
                client.address,
                &format!("cross-site request refused: {reason}"),
            )
            .await;
        }
        cross_site_refusal(fhir, reason)
    } else {
        let mut response = next.run(request).await;
        if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
            response = explain_too_large(response, fhir, app.0.config.max_body_bytes);
        }
        response
    };
    security_headers(response.headers_mut(), client.secure);
    response
}

/// Records a request the hardening layer refused, before anyone was authenticated: by path (never
/// the query), method and client address.
async fn audit_refusal(
    app: &App,
    method: axum::http::Method,
    path: String,
    client: Option<IpAddr>,
    detail: &str,
) {
    let path = path.as_str();
    let record = crate::audit::request_record(
        app.0.clock.now(),
        "unidentified",
        "none",
        crate::audit::action_of(&method, path),
        path,
        None,
        galen_store::AuditOutcome::Denied,
        &client.map_or_else(|| "in-process".to_owned(), |address| address.to_string()),
        format!("{method} {path}: {detail}"),
    );
    app.0.audit.record(record).await;
}

/// How long `address` must wait, if it is over its rate.
fn rate_limited(
    hardening: &Hardening,
    address: Option<IpAddr>,
    path: &str,
    now: Instant,
) -> Option<Duration> {
    let limiter = hardening.limiter.as_ref()?;
    let address = address?;
    if address.is_loopback() || matches!(path, "/healthz" | "/readyz") {
        return None;
    }
    limiter.check(bucket_key(address), now).err()
}

fn too_many_requests(fhir: bool, retry_after: Duration) -> Response {
    // Rounded up: a client that waits as told finds a token.
    let seconds = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
    let message = format!("too many requests from this address; retry in {seconds} s");
    let mut response = if fhir {
        FhirError::new(StatusCode::TOO_MANY_REQUESTS, IssueType::Throttled, message).into_response()
    } else {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn cross_site_refusal(fhir: bool, reason: &str) -> Response {
    let message = format!(
        "cross-site request refused ({reason}): a request authenticated by the sign-in cookie must \
         come from this server's own pages; API clients send 'Authorization: Bearer <token>'"
    );
    if fhir {
        FhirError::new(StatusCode::FORBIDDEN, IssueType::Forbidden, message).into_response()
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "cross_site_request", message).into_response()
    }
}

/// Gives axum's plain-text "length limit exceeded" the body of the API it was sent to (handlers
/// that answer 413 themselves, such as ingest, answer JSON already and are left alone).
fn explain_too_large(response: Response, fhir: bool, max_body_bytes: usize) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|media| media.starts_with("text/plain"));
    if !plain {
        return response;
    }
    let limit = max_body_bytes.min(crate::api::REGISTRY_BODY_LIMIT);
    let message = format!("the request body is larger than {limit} bytes");
    if fhir {
        FhirError::new(StatusCode::PAYLOAD_TOO_LARGE, IssueType::TooLong, message).into_response()
    } else {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).into_response()
    }
}

fn security_headers(headers: &mut HeaderMap, secure: bool) {
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    // Pages, API and FHIR answers carry patient data (or lead to it): never stored by a browser
    // or proxy. Only the static assets choose their own caching (`no-cache`).
    set(headers, header::CACHE_CONTROL, "no-store");
    if secure {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            STRICT_TRANSPORT_SECURITY,
        );
    }
}

/// Why an unsafe request is refused as cross-site, or `None` to let it through.
pub(crate) fn cross_site(
    method: &Method,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Option<&'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    if bearer {
        return None;
    }
    // Browsers since 2020-2023 say where a request comes from; the value is theirs, not a page's.
    if let Some(site) = first_value(headers, "sec-fetch-site") {
        return match site.to_ascii_lowercase().as_str() {
            "same-origin" | "none" => None,
            _ => Some("sent from another site"),
        };
    }
    let source = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(|origin| (origin, "origin"))
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|value| value.to_str().ok())
                .map(|referer| (referer, "referer"))
        });
    match source {
        Some((url, _)) => {
            let same = authority_of_url(url)
                .zip(host)
                .is_some_and(|(authority, host)| same_authority(&authority, host));
            (!same).then_some("its Origin or Referer names another site")
        }
        // Not a browser, or a very old one: without a cookie it is not authenticated by one.
        None if headers.contains_key(header::COOKIE) => {
            Some("a cookie without an Origin or Referer header")
        }
        None => None,
    }
}

/// `host[:port]` of an absolute `http(s)` URL (an `Origin` is one without a path); the default
/// port is dropped. `None` for `null` and anything else.
fn authority_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    Some(
        authority
            .strip_suffix(default_port)
            .map(str::to_owned)
            .unwrap_or(authority),
    )
}

/// Whether an origin's authority and a `Host` header name the same host and port (a `Host`
/// with the scheme's default port written out matches one without).
fn same_authority(origin: &str, host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let host = host
        .strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(&host);
    !host.is_empty() && origin == host
}

/// The `Host` the request was sent to (a trusted proxy's `X-Forwarded-Host` first).
fn host_header(headers: &HeaderMap, proxied: bool) -> Option<String> {
    let forwarded = proxied
        .then(|| first_value(headers, "x-forwarded-host"))
        .flatten();
    forwarded
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
        })
        .map(str::to_owned)
}

/// The first comma-separated value of a header.
fn first_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// The client a chain of trusted proxies forwarded for: the right-most address in
/// `X-Forwarded-For` that is not one of them (addresses left of it could be made up by the
/// client itself).
fn forwarded_client(headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().ok()?;
        for hop in text.split(',') {
            chain.push(canonical(hop.trim().parse().ok()?));
        }
    }
    chain
        .into_iter()
        .rev()
        .find(|address| !trusted.contains(address))
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The bucket of an address: IPv4 addresses alone, IPv6 addresses by their /64.
fn bucket_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Token buckets per client. One lock, held for a hash lookup and a little arithmetic.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    max_clients: usize,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    clients: HashMap<IpAddr, Bucket>,
    /// Shared by new clients while the table is full.
    overflow: Bucket,
    last_sweep: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle this long are swept even while the table has room.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: f64, max_clients: usize) -> RateLimiter {
        RateLimiter {
            rate,
            burst,
            max_clients,
            state: Mutex::new(Buckets {
                clients: HashMap::default(),
                overflow: Bucket {
                    tokens: burst,
                    updated: Instant::now(),
                },
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub(crate) fn check(&self, key: IpAddr, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.rate, self.burst);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let full = state.clients.len() >= self.max_clients;
        if full || now.saturating_duration_since(state.last_sweep) >= SWEEP_EVERY {
            // A bucket that has filled up again is the same as no bucket: forget it.
            state
                .clients
                .retain(|_, bucket| bucket.refilled(now, rate, burst) < burst);
            state.last_sweep = now;
        }
        let room = state.clients.len() < self.max_clients;
        let bucket = match state.clients.get_mut(&key) {
            Some(bucket) => bucket,
            None if room => state.clients.entry(key).or_insert(Bucket {
                tokens: burst,
                updated: now,
            }),
            None => &mut state.overflow,
        };
        bucket.tokens = bucket.refilled(now, rate, burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Clients with a bucket.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clients
            .len()
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().expect("header value"));
        }
        headers
    }

    const HOST: Option<&str> = Some("galen.example:8443");

    #[test]
    fn safe_methods_and_bearer_requests_pass_the_origin_check() {
        let evil = headers(&[
            ("origin", "https://evil.example"),
            ("cookie", "galen_token=x"),
        ]);
        assert_eq!(cross_site(&Method::GET, &evil, HOST), None);
        assert_eq!(cross_site(&Method::HEAD, &evil, HOST), None);
        let bearer = headers(&[
            ("origin", "https://evil.example"),
            ("authorization", "Bearer token"),
        ]);
        assert_eq!(cross_site(&Method::POST, &bearer, HOST), None);
        // Basic credentials do not authenticate to Galen: the cookie would, so check it.
        let basic = headers(&[
            ("origin", "https://evil.example"),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", "galen_token=x"),
        ]);
        assert!(cross_site(&Method::POST, &basic, HOST).is_some());
    }

    #[test]
    fn unsafe_cookie_requests_need_this_servers_origin() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let same = headers(&[
                ("origin", "https://galen.example:8443"),
                ("cookie", "galen_token=x"),
            ]);
            assert_eq!(cross_site(&method, &same, HOST), None, "{method}");
            let other = headers(&[
                ("origin", "https://evil.example"),
                ("cookie", "galen_token=x"),
            ]);
            assert!(cross_site(&method, &other, HOST).is_some(), "{method}");
            let missing = headers(&[("cookie", "galen_token=x")]);
            assert!(cross_site(&method, &missing, HOST).is_some(), "{method}");
        }
        // Origin "null" (sandboxed frames, privacy modes) is nobody's.
        let null = headers(&[("origin", "null"), ("cookie", "galen_token=x")]);
        assert!(cross_site(&Method::POST, &null, HOST).is_some());
        // A look-alike host or another port is another site.
        for origin in [
            "https://galen.example:8444",
            "https://galen.example",
            "https://galen.example:8443.evil.example",
            "https://evil.example/galen.example:8443",
            "ftp://galen.example:8443",
        ] {
            let other = headers(&[("origin", origin), ("cookie", "c=1")]);
            assert!(
                cross_site(&Method::POST, &other, HOST).is_some(),
                "{origin}"
            );
        }
        // Without a Host header nothing can match.
        let same = headers(&[("origin", "https://galen.example:8443"), ("cookie", "c=1")]);
        assert!(cross_site(&Method::POST, &same, None).is_some());
    }

    #[test]
    fn referer_stands_in_for_a_missing_origin() {
        let same = headers(&[
            ("referer", "https://galen.example:8443/patients/3?range=6h"),
            ("cookie", "galen_token=x"),
        ]);
        assert_eq!(cross_site(&Method::POST, &same, HOST), None);
        let other = headers(&[
            ("referer", "https://evil.example/page"),
            ("cookie", "galen_token=x"),
        ]);
        assert!(cross_site(&Method::POST, &other, HOST).is_some());
    }

    #[test]
    fn sec_fetch_site_decides_when_the_browser_sends_it() {
        for (site, refused) in [
            ("same-origin", false),
            ("none", false),
            ("same-site", true),
            ("cross-site", true),
        ] {
            let request = headers(&[
                ("sec-fetch-site", site),
                ("origin", "https://galen.example:8443"),
                ("cookie", "galen_token=x"),
            ]);
            assert_eq!(
                cross_site(&Method::POST, &request, HOST).is_some(),
                refused,
                "{site}"
            );
        }
    }

    #[test]
    fn requests_without_cookie_or_origin_are_not_browsers() {
        assert_eq!(cross_site(&Method::POST, &HeaderMap::new(), HOST), None);
    }

    #[test]
    fn default_ports_and_case_do_not_matter() {
        assert!(same_authority(
            &authority_of_url("http://Galen.Example").expect("origin"),
            "galen.example:80"
        ));
        assert!(same_authority(
            &authority_of_url("https://galen.example:443").expect("origin"),
            "GALEN.example"
        ));
        assert!(same_authority(
            &authority_of_url("http://[::1]:8080").expect("origin"),
            "[::1]:8080"
        ));
        assert_eq!(authority_of_url("null"), None);
        assert_eq!(authority_of_url("https://user@evil.example"), None);
    }

    #[test]
    fn bucket_refills_at_the_rate_and_says_when_to_retry() {
        let limiter = RateLimiter::new(2.0, 3.0, 100);
        let client: IpAddr = "203.0.113.7".parse().expect("address");
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(client, start), Ok(()));
        }
        let wait = limiter.check(client, start).expect_err("over the burst");
        assert!(
            (wait.as_secs_f64() - 0.5).abs() < 1e-6,
            "one token takes 1/rate: {wait:?}"
        );
        assert_eq!(
            limiter.check(client, start + Duration::from_millis(500)),
            Ok(())
        );
        assert!(
            limiter
                .check(client, start + Duration::from_millis(500))
                .is_err()
        );
        // Another client has a bucket of its own.
        let other: IpAddr = "203.0.113.8".parse().expect("address");
        assert_eq!(limiter.check(other, start), Ok(()));
    }

    #[test]
    fn idle_buckets_are_forgotten_and_the_table_is_bounded() {
        let limiter = RateLimiter::new(10.0, 10.0, 4);
        let start = Instant::now();
        for index in 0..4u8 {
            let client = IpAddr::from([198, 51, 100, index]);
            assert_eq!(limiter.check(client, start), Ok(()));
        }
        assert_eq!(limiter.clients(), 4);
        // Full of active clients: newcomers share the overflow bucket (10 tokens).
        for index in 4..14u8 {
            let client = IpAddr::from([198, 51, 100, index]);
            assert_eq!(limiter.check(client, start), Ok(()), "{index}");
        }
        assert!(
            limiter
                .check(IpAddr::from([198, 51, 100, 200]), start)
                .is_err()
        );
        assert_eq!(limiter.clients(), 4, "bounded");
        // A second later every bucket has refilled and is swept when a newcomer arrives.
        let later = start + Duration::from_secs(1);
        assert_eq!(
            limiter.check(IpAddr::from([198, 51, 100, 99]), later),
            Ok(())
        );
        assert_eq!(limiter.clients(), 1);
        // And idle buckets go after a minute even while there is room.
        let much_later = later + SWEEP_EVERY;
        assert_eq!(
            limiter.check(IpAddr::from([198, 51, 100, 98]), much_later),
            Ok(())
        );
        assert_eq!(limiter.clients(), 1);
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(bucket_key(one), bucket_key(two));
        assert_ne!(bucket_key(one), bucket_key(elsewhere));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("address");
        assert_eq!(
            canonical(mapped),
            "192.0.2.1".parse::<IpAddr>().expect("v4")
        );
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() {
        let proxies: Vec<IpAddr> = vec![
            "10.0.0.2".parse().expect("proxy"),
            "10.0.0.3".parse().expect("proxy"),
        ];
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.66, 203.0.113.5, 10.0.0.3")]);
        assert_eq!(
            forwarded_client(&forwarded, &proxies),
            Some("203.0.113.5".parse().expect("client")),
            "the client may have made up the left-most entry"
        );
        let garbage = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(forwarded_client(&garbage, &proxies), None);
    }

    #[test]
    fn headers_are_set_without_overriding_a_handlers_choice() {
        let mut answer = HeaderMap::new();
        answer.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        security_headers(&mut answer, false);
        assert_eq!(answer[header::CACHE_CONTROL], "no-cache");
        assert_eq!(answer[header::X_FRAME_OPTIONS], "DENY");
        assert!(!answer.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let mut secure = HeaderMap::new();
        security_headers(&mut secure, true);
        assert_eq!(secure[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            secure[header::STRICT_TRANSPORT_SECURITY],
            STRICT_TRANSPORT_SECURITY
        );
    }

    /// The CSP allows no inline script or style: the dashboard's assets must not need one.
    #[test]
    fn assets_need_no_inline_script_or_style() {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut checked = 0;
        for entry in std::fs::read_dir(&directory).expect("assets directory") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|extension| extension != "html") {
                continue;
            }
            let html = std::fs::read_to_string(&path)
                .expect("asset")
                .to_ascii_lowercase();
            let name = path.display();
            for (at, _) in html.match_indices("<script") {
                let tag = &html[at..html[at..].find('>').map_or(html.len(), |end| at + end)];
                assert!(
                    tag.contains(" src="),
                    "{name}: inline <script> (the CSP allows only script files)"
                );
            }
            assert!(
                !html.contains("<style"),
                "{name}: <style> element (move it to style.css: the CSP allows only style files)"
            );
            assert!(
                !html.contains(" style="),
                "{name}: style attribute (use a class in style.css: the CSP refuses inline styles)"
            );
            for handler in [
                " onclick=",
                " onload=",
                " onsubmit=",
                " onchange=",
                " oninput=",
            ] {
                assert!(
                    !html.contains(handler),
                    "{name}: inline event handler{handler}"
                );
            }
            assert!(!html.contains("javascript:"), "{name}: javascript: URL");
            checked += 1;
        }
        assert!(checked >= 3, "the dashboard pages were read");
        for script in ["common.js", "dashboard.js", "patient.js"] {
            let text = std::fs::read_to_string(directory.join(script)).expect("script");
            for forbidden in [
                "eval(",
                "new Function(",
                "setAttribute('style'",
                ".innerHTML",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{script}: {forbidden} is refused by the CSP or unsafe"
                );
            }
        }
    }
}
