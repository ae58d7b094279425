//! OAuth2 for machine clients over HTTP: the token endpoint (`POST /oauth/token`), SMART's
//! discovery document (`GET /fhir/.well-known/smart-configuration`), and client registration
//! (`/api/v1/oauth-clients`, administrators).
//!
//! The token endpoint authenticates the client itself, so it is outside the gate of
//! `auth::authenticate`; it writes its own audit records: every issued token (as the client) and
//! every refused request (as the client, or the client id presented).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use galen_model::Timestamp;
use galen_store::{AuditAction, AuditOutcome, ClientCredential, NewOAuthClient, OAuthClient};
use serde::Deserialize;
use serde_json::{Value, json};

use super::users::{check_text, invalid};
use super::{REGISTRY_BODY_LIMIT, parse_json};
use crate::App;
use crate::access::oauth::{
    CLIENT_ROLES, ClientAuthentication, JWT_BEARER, TokenError, check_allowed_scopes,
    new_client_id, new_client_secret, parse_jwks,
};
use crate::access::{Principal, Role};
use crate::audit::request_record;
use crate::error::{ApiError, ApiResult};

/// An RFC 6749 section 5.2 error answer: `401` for `invalid_client`, else `400` (`503` when the
/// server cannot answer now).
fn token_error(error: &TokenError, basic: bool) -> Response {
    let status = match error.code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = (
        status,
        Json(json!({ "error": error.code, "error_description": error.description })),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    // RFC 6749 section 5.2: a client that tried HTTP Basic is told the scheme.
    if basic && status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"galen\""),
        );
    }
    response
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte).
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8(decoded).ok()
}

/// `client_secret_basic` (RFC 6749 section 2.3.1): the id and secret, each form-encoded, in
/// `Authorization: Basic`. `Err` when the header is Basic but malformed.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, TokenError> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(None);
    };
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let malformed = || {
        TokenError::new(
            "invalid_request",
            "Authorization: Basic must carry base64(client_id:client_secret)",
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((
        form_decode(id).ok_or_else(malformed)?,
        form_decode(secret).ok_or_else(malformed)?,
    )))
}

/// The form of a token request; each parameter at most once (RFC 6749 section 3.2).
fn token_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, TokenError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(TokenError::new(
            "invalid_request",
            "send the token request as application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| TokenError::new("invalid_request", "the form does not parse"))?;
    let mut form = HashMap::new();
    for (name, value) in pairs {
        if form.insert(name.clone(), value).is_some() {
            return Err(TokenError::new(
                "invalid_request",
                format!("{name} is given more than once"),
            ));
        }
    }
    Ok(form)
}

/// How the request authenticates its client (exactly one way, RFC 6749 section 2.3).
fn authentication(
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<ClientAuthentication, TokenError> {
    let posted_id = form.get("client_id").cloned();
    let secret = form.get("client_secret").cloned();
    let assertion = form.get("client_assertion").cloned();
    let methods = usize::from(basic.is_some())
        + usize::from(secret.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(TokenError::new(
            "invalid_request",
            "use one client authentication method: Basic, client_secret or client_assertion",
        ));
    }
    if let Some((client_id, secret)) = basic {
        if posted_id
            .as_ref()
            .is_some_and(|posted| *posted != client_id)
        {
            return Err(TokenError::new(
                "invalid_request",
                "client_id differs from the one in Authorization",
            ));
        }
        return Ok(ClientAuthentication::Secret { client_id, secret });
    }
    if let Some(secret) = secret {
        let client_id = posted_id
            .ok_or_else(|| TokenError::new("invalid_request", "client_secret needs client_id"))?;
        return Ok(ClientAuthentication::Secret { client_id, secret });
    }
    if let Some(assertion) = assertion {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(TokenError::new(
                "invalid_request",
                format!("client_assertion_type must be {JWT_BEARER}"),
            ));
        }
        return Ok(ClientAuthentication::Assertion {
            client_id: posted_id,
            assertion,
        });
    }
    Err(TokenError::new(
        "invalid_client",
        "authenticate the client: HTTP Basic, client_id and client_secret, or a client_assertion (SMART Backend Services)",
    ))
}

/// Who a token request's record names before the client is known: the client id presented.
fn presented_client(form: &HashMap<String, String>, basic: Option<&(String, String)>) -> String {
    let presented = basic
        .map(|(id, _)| id.clone())
        .or_else(|| form.get("client_id").cloned());
    match presented {
        Some(id) => format!(
            "client-id:{}",
            id.chars()
                .filter(|character| !character.is_control())
                .take(100)
                .collect::<String>()
        ),
        None => "unidentified-client".to_owned(),
    }
}

/// `POST /oauth/token`: `grant_type=client_credentials` with a client secret or a signed JWT
/// assertion; answers an access token (RFC 6749 section 5.1) or an error (section 5.2).
pub(crate) async fn token(State(app): State<App>, request: Request) -> Response {
    let source = crate::auth::source_of(&request);
    let (parts, body) = request.into_parts();
    let now = app.0.clock.now();
    let body = match axum::body::to_bytes(body, REGISTRY_BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return token_error(
                &TokenError::new("invalid_request", "the request body is too large"),
                false,
            );
        }
    };
    let basic = basic_credentials(&parts.headers);
    let uses_basic = matches!(basic, Ok(Some(_)) | Err(_));
    let form = token_form(&parts.headers, &body);
    let actor_before = match (&form, &basic) {
        (Ok(form), Ok(basic)) => presented_client(form, basic.as_ref()),
        _ => "unidentified-client".to_owned(),
    };
    let outcome = (|| {
        let form = form?;
        let basic = basic?;
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            Some(_) => {
                return Err(TokenError::new(
                    "unsupported_grant_type",
                    "Galen issues tokens for grant_type=client_credentials only",
                ));
            }
            None => return Err(TokenError::new("invalid_request", "grant_type is required")),
        }
        let authentication = authentication(&form, basic)?;
        app.0
            .oauth
            .issue(authentication, form.get("scope").map(String::as_str), now)
    })();
    match outcome {
        Ok(issued) => {
            let record = request_record(
                now,
                &issued.client.actor(),
                issued.client.role_code(),
                AuditAction::Login,
                "/oauth/token",
                None,
                AuditOutcome::Success,
                &source,
                format!(
                    "access token {} issued for {}",
                    issued.token_id, issued.scope
                ),
            );
            if !app.0.audit.record(record).await {
                return token_error(
                    &TokenError::new(
                        "temporarily_unavailable",
                        "the audit trail could not be written; no token was issued, retry later",
                    ),
                    false,
                );
            }
            tracing::info!(client = %issued.client.stored.details.client_id, "access token issued");
            let mut response = Json(json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            }))
            .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
                .headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => {
            let (actor, role) = match &error.client {
                Some(client) => (client.actor(), client.role_code()),
                None => (actor_before, "none"),
            };
            let outcome = if error.code == "invalid_scope" {
                AuditOutcome::Denied
            } else {
                AuditOutcome::Failed
            };
            let record = request_record(
                now,
                &actor,
                role,
                AuditAction::LoginFailed,
                "/oauth/token",
                None,
                outcome,
                &source,
                format!("{}: {}", error.code, error.description),
            );
            app.0.audit.record(record).await;
            tracing::warn!(code = error.code, "token request refused");
            token_error(&error, uses_basic)
        }
    }
}

/// `GET /fhir/.well-known/smart-configuration` (SMART App Launch 2.x, "Conformance"): how to
/// get a token here.
pub(crate) async fn smart_configuration(State(app): State<App>) -> Response {
    let Some(config) = app.0.oauth.config() else {
        return ApiError::not_found("SMART configuration (OAuth is not configured)")
            .into_response();
    };
    let mut scopes = Vec::new();
    for context in ["system", "user"] {
        scopes.push(format!("{context}/*.cruds"));
        scopes.push(format!("{context}/*.rs"));
        for resource in crate::fhir::RESOURCE_TYPES {
            scopes.push(format!("{context}/{resource}.cruds"));
        }
    }
    Json(json!({
        "token_endpoint": config.token_endpoint(),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported":
            ["private_key_jwt", "client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": scopes,
        "capabilities": [
            "client-confidential-asymmetric",
            "client-confidential-symmetric",
            "permission-v2",
            "permission-v1",
        ],
    }))
    .into_response()
}

fn client_json(client: &OAuthClient) -> Value {
    let (method, jwks) = match &client.details.credential {
        ClientCredential::SecretSha256(_) => ("client_secret_basic", Value::Null),
        ClientCredential::Jwks(jwks) => (
            "private_key_jwt",
            serde_json::from_str(jwks).unwrap_or(Value::Null),
        ),
    };
    json!({
        "id": client.id,
        "client_id": client.details.client_id,
        "name": client.details.name,
        "role": client.details.role,
        "wards": client.details.wards,
        "scopes": client.details.scopes,
        "token_endpoint_auth_method": method,
        "jwks": jwks,
        "created": client.details.created.to_rfc3339(),
        "revoked": client.revoked.map(Timestamp::to_rfc3339),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireClient {
    name: String,
    role: String,
    #[serde(default)]
    wards: Vec<String>,
    scopes: Vec<String>,
    /// Public keys for `private_key_jwt`; without them the client gets a secret.
    jwks: Option<Value>,
}

/// `GET /api/v1/oauth-clients`: every client, revoked ones included, without secrets.
pub(crate) async fn list_clients(State(app): State<App>) -> ApiResult<Json<Value>> {
    let clients: Vec<Value> = app
        .0
        .store
        .oauth_clients()
        .await?
        .iter()
        .map(client_json)
        .collect();
    Ok(Json(json!({ "items": clients })))
}

/// `POST /api/v1/oauth-clients`: registers a machine client. Its secret (when it has no public
/// keys) is in this answer only.
pub(crate) async fn create_client(
    State(app): State<App>,
    record: crate::audit::WriteRecord,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(
    StatusCode,
    axum::Extension<crate::auth::Audited>,
    Json<Value>,
)> {
    let wire: WireClient = parse_json(&headers, &body)?;
    check_text("name", &wire.name)?;
    for ward in &wire.wards {
        check_text("a ward", ward)?;
    }
    let role = Role::parse(&wire.role)
        .filter(|role| CLIENT_ROLES.contains(role))
        .ok_or_else(|| {
            let codes: Vec<&str> = CLIENT_ROLES.iter().map(|role| role.code()).collect();
            invalid(format!(
                "a machine client's role is one of {} (administrators and patients are people)",
                codes.join(", ")
            ))
        })?;
    if role.ward_bound() && wire.wards.is_empty() {
        return Err(invalid(format!(
            "a {} client needs the wards it works on (wards)",
            role.code()
        )));
    }
    check_allowed_scopes(&wire.scopes).map_err(invalid)?;
    let (credential, secret) = match &wire.jwks {
        Some(jwks) => {
            let text = jwks.to_string();
            parse_jwks(&text).map_err(invalid)?;
            (ClientCredential::Jwks(text), None)
        }
        None => {
            let (secret, hash) = new_client_secret()
                .ok_or_else(|| ApiError::internal("no randomness for the client secret"))?;
            (ClientCredential::SecretSha256(hash), Some(secret))
        }
    };
    let client_id =
        new_client_id().ok_or_else(|| ApiError::internal("no randomness for the client id"))?;
    let client = app
        .0
        .store
        .create_oauth_client(
            NewOAuthClient {
                client_id,
                name: wire.name.trim().to_owned(),
                role: role.code().to_owned(),
                wards: wire.wards,
                scopes: wire.scopes,
                credential,
                created: app.0.clock.now(),
            },
            record.records(),
        )
        .await?;
    app.0.oauth.reload(app.0.store.as_ref()).await?;
    tracing::info!(actor = %principal.actor, client = %client.details.client_id, role = %client.details.role, "OAuth client registered");
    let mut answer = client_json(&client);
    if let Some(secret) = secret {
        answer["client_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, record.stored(), Json(answer)))
}

/// `DELETE /api/v1/oauth-clients/{id}`: revokes a client at once: no new token, and its issued
/// tokens stop working.
pub(crate) async fn revoke_client(
    State(app): State<App>,
    record: crate::audit::WriteRecord,
    principal: Principal,
    Path(id): Path<i64>,
) -> ApiResult<(axum::Extension<crate::auth::Audited>, Json<Value>)> {
    let client = app
        .0
        .store
        .revoke_oauth_client(id, app.0.clock.now(), record.records())
        .await?;
    app.0.oauth.reload(app.0.store.as_ref()).await?;
    tracing::info!(actor = %principal.actor, client = %client.details.client_id, "OAuth client revoked");
    Ok((record.stored(), Json(client_json(&client))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_decodes() {
        assert_eq!(form_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(form_decode("%3A%25").as_deref(), Some(":%"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }

    #[test]
    fn one_authentication_method_at_a_time() {
        let form = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect()
        };
        let basic = Some(("gc_1".to_owned(), "s".to_owned()));
        assert!(matches!(
            authentication(
                &form(&[("client_secret", "s"), ("client_id", "gc_1")]),
                basic.clone()
            ),
            Err(TokenError {
                code: "invalid_request",
                ..
            })
        ));
        assert!(matches!(
            authentication(&form(&[("client_id", "gc_2")]), basic.clone()),
            Err(TokenError {
                code: "invalid_request",
                ..
            })
        ));
        assert!(matches!(
            authentication(&form(&[]), basic),
            Ok(ClientAuthentication::Secret { .. })
        ));
        assert!(matches!(
            authentication(&form(&[("client_assertion", "x.y.z")]), None),
            Err(TokenError {
                code: "invalid_request",
                ..
            })
        ));
        assert!(matches!(
            authentication(
                &form(&[
                    ("client_assertion", "x.y.z"),
                    ("client_assertion_type", JWT_BEARER)
                ]),
                None
            ),
            Ok(ClientAuthentication::Assertion { .. })
        ));
        assert!(matches!(
            authentication(&form(&[]), None),
            Err(TokenError {
                code: "invalid_client",
                ..
            })
        ));
    }
}
