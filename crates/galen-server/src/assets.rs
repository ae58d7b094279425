//! Dashboard pages and their static assets, compiled into the binary: running Galen needs no
//! npm, no CDN and no files beside the executable.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub(crate) const INDEX_HTML: &str = include_str!("../assets/index.html");
pub(crate) const PATIENT_HTML: &str = include_str!("../assets/patient.html");
pub(crate) const LOGIN_HTML: &str = include_str!("../assets/login.html");
/// The auditor's view of the audit trail (`/audit`).
pub(crate) const AUDIT_HTML: &str = include_str!("../assets/audit.html");
/// The login page after a failed attempt: one message whatever the cause (unknown account, wrong
/// password, locked), so it tells nothing about which accounts exist.
pub(crate) static LOGIN_FAILED_HTML: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    LOGIN_HTML.replace(
        "<!--failure-->",
        "<p role=\"alert\"><strong>Sign-in failed.</strong> Check the account, the password and, for an account with a second factor, the authenticator code (each code works once); after five failures in a row the account is locked for 15 minutes.</p>",
    )
});
const STYLE_CSS: &str = include_str!("../assets/style.css");
const COMMON_JS: &str = include_str!("../assets/common.js");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const PATIENT_JS: &str = include_str!("../assets/patient.js");
const AUDIT_JS: &str = include_str!("../assets/audit.js");

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub(crate) async fn patient_page(Path(_id): Path<String>) -> Html<&'static str> {
    Html(PATIENT_HTML)
}

/// `GET /audit`: auditors only (`Permission::ReadAudit`); the page reads `/api/v1/audit`.
pub(crate) async fn audit_page() -> Html<&'static str> {
    Html(AUDIT_HTML)
}

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "common.js" => (COMMON_JS, "text/javascript; charset=utf-8"),
        "dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "patient.js" => (PATIENT_JS, "text/javascript; charset=utf-8"),
        "audit.js" => (AUDIT_JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
