//! Access control for `galen serve`: one bearer token, presented as `Authorization: Bearer` by API
//! clients and devices, or as an HttpOnly cookie set by the `/login` page for dashboard users.
//!
//! Only demo mode runs without a token. Per-user accounts, roles and per-device credentials
//! replace this with the security work; the middleware is the seam where they plug in.

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::App;
use crate::error::ApiError;

const COOKIE: &str = "galen_token";

/// Compares in time independent of where the inputs differ.
fn same_secret(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (presented.as_bytes(), expected.as_bytes());
    let mut difference = presented.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .find_map(|cookie| {
                cookie
                    .trim()
                    .strip_prefix(COOKIE)
                    .and_then(|rest| rest.strip_prefix('='))
            })
    })
}

/// Lets a request through when no token is configured (demo) or the right one is presented.
/// Pages redirect to `/login`; API calls get 401.
pub(crate) async fn require_token(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = app.0.config.api_token.as_deref() else {
        return next.run(request).await;
    };
    if presented_token(request.headers()).is_some_and(|presented| same_secret(presented, expected))
    {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if path.starts_with("/fhir/") {
        let mut response = crate::fhir::unauthorized().into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    } else if path.starts_with("/api/") || path == "/metrics" {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "present the API token as 'Authorization: Bearer <token>'",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    } else {
        Redirect::to("/login").into_response()
    }
}

pub(crate) async fn login_page() -> Html<&'static str> {
    Html(crate::assets::LOGIN_HTML)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

pub(crate) async fn login(State(app): State<App>, Form(form): Form<LoginForm>) -> Response {
    let valid = app
        .0
        .config
        .api_token
        .as_deref()
        .is_none_or(|expected| same_secret(&form.token, expected));
    if !valid {
        tracing::warn!("dashboard login with a wrong token");
        return (StatusCode::UNAUTHORIZED, Html(crate::assets::LOGIN_HTML)).into_response();
    }
    let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", form.token);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("abcd", "abc"));
        assert!(!same_secret("", "abc"));
    }

    #[test]
    fn token_from_header_or_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; galen_token=s3cret".parse().expect("header"),
        );
        assert_eq!(presented_token(&headers), Some("s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer other".parse().expect("header"),
        );
        assert_eq!(presented_token(&headers), Some("other"));
    }
}
