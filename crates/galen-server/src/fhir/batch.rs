//! `POST /fhir` with a Bundle of type `batch`: each entry is carried out on its own, as if it
//! had been sent alone, and answered in a `batch-response` Bundle in the same order.
//!
//! Each entry becomes a request to Galen's own router with the caller's credentials, so an
//! entry gets exactly the validation, pipeline, conditional handling (`ifMatch`, `ifNoneExist`)
//! and errors of the interaction it names; one entry failing does not affect the others. A
//! `transaction` Bundle is refused: Galen cannot yet make registry writes and measurements one
//! atomic unit.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use galen_fhir::IssueType;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{FhirError, FhirResult, check_accept, check_content_type, fhir_response};
use crate::App;

/// Entries in one batch at most.
const MAX_ENTRIES: usize = 1000;
/// Largest answer of one entry kept in the response.
const MAX_ENTRY_ANSWER: usize = 16 * 1024 * 1024;

fn invalid(path: String, message: impl Into<String>) -> FhirError {
    FhirError::from(galen_fhir::Error::element(
        path,
        galen_fhir::Problem::Invalid,
        message,
    ))
}

/// One entry's request, checked.
struct EntryRequest {
    method: Method,
    uri: String,
    body: Option<String>,
    if_match: Option<String>,
    if_none_exist: Option<String>,
}

fn read_entry(index: usize, entry: &Value) -> FhirResult<EntryRequest> {
    let path = format!("Bundle.entry[{index}].request");
    let request = &entry["request"];
    let method = match request["method"].as_str() {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("DELETE") => Method::DELETE,
        Some(other) => {
            return Err(invalid(
                format!("{path}.method"),
                format!("{other} is not supported in a batch; use GET, POST, PUT or DELETE"),
            ));
        }
        None => return Err(invalid(format!("{path}.method"), "the method is required")),
    };
    let url = request["url"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches('/');
    let first = url.split(['/', '?']).next().unwrap_or("");
    if first.is_empty()
        || !first
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '$')
    {
        return Err(invalid(
            format!("{path}.url"),
            "a relative URL such as Patient, Patient/12 or Observation?patient=12 is required",
        ));
    }
    let body = match method {
        Method::POST | Method::PUT => {
            let resource = &entry["resource"];
            if !resource.is_object() {
                return Err(invalid(
                    format!("Bundle.entry[{index}].resource"),
                    "POST and PUT entries carry their resource",
                ));
            }
            Some(resource.to_string())
        }
        _ => None,
    };
    let text = |name: &str| request[name].as_str().map(str::to_owned);
    Ok(EntryRequest {
        method,
        uri: format!("/fhir/{url}"),
        body,
        if_match: text("ifMatch"),
        if_none_exist: text("ifNoneExist"),
    })
}

/// Carries out one entry through the router; returns the batch-response entry.
async fn carry_out(
    app: &App,
    credentials: &[(header::HeaderName, HeaderValue)],
    entry: EntryRequest,
) -> Value {
    let mut request = Request::builder()
        .method(entry.method)
        .uri(&entry.uri)
        .header(header::ACCEPT, "application/fhir+json")
        .header(header::CONTENT_TYPE, "application/fhir+json");
    for (name, value) in credentials {
        request = request.header(name, value);
    }
    if let Some(tag) = &entry.if_match {
        request = request.header(header::IF_MATCH, tag);
    }
    if let Some(condition) = &entry.if_none_exist {
        request = request.header("if-none-exist", condition);
    }
    let Ok(request) = request.body(Body::from(entry.body.unwrap_or_default())) else {
        return error_entry(StatusCode::BAD_REQUEST, "the entry is not a valid request");
    };
    let Ok(response) = crate::api::router(app.clone()).oneshot(request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = match http_body_util::Limited::new(response.into_body(), MAX_ENTRY_ANSWER)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error_entry(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the entry's answer is too large",
            );
        }
    };
    let mut answer = json!({ "status": status_line(status) });
    if let Some(location) = headers
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
    {
        answer["location"] = json!(location);
    }
    if let Some(tag) = headers
        .get(header::ETAG)
        .and_then(|value| value.to_str().ok())
    {
        answer["etag"] = json!(tag);
    }
    let resource: Option<Value> = serde_json::from_slice(&body)
        .ok()
        .filter(|value: &Value| value.get("resourceType").is_some());
    let mut out = json!({ "response": answer });
    match resource {
        Some(outcome) if outcome["resourceType"] == "OperationOutcome" => {
            out["response"]["outcome"] = outcome;
        }
        Some(resource) => out["resource"] = resource,
        None => {}
    }
    out
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

fn error_entry(status: StatusCode, message: &str) -> Value {
    let outcome = galen_fhir::outcome::OutcomeBuilder::new()
        .error(IssueType::Invalid, message)
        .build();
    json!({ "response": { "status": status_line(status), "outcome": outcome } })
}

/// `POST /fhir`.
pub(crate) async fn process(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let bundle: Value = serde_json::from_slice(&body).map_err(|error| {
        FhirError::from(galen_fhir::Error::Syntax {
            message: error.to_string(),
        })
    })?;
    if bundle["resourceType"] != "Bundle" {
        return Err(FhirError::from(galen_fhir::Error::ResourceType {
            expected: "Bundle",
            found: bundle["resourceType"].as_str().map(str::to_owned),
        }));
    }
    match bundle["type"].as_str() {
        Some("batch") => {}
        Some("transaction") => {
            return Err(FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueType::NotSupported,
                "transaction Bundles are not supported yet; send a batch (each entry on its own)",
            ));
        }
        _ => {
            return Err(invalid(
                "Bundle.type".to_owned(),
                "POST /fhir takes a Bundle of type batch",
            ));
        }
    }
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    if entries.len() > MAX_ENTRIES {
        return Err(invalid(
            "Bundle.entry".to_owned(),
            format!("at most {MAX_ENTRIES} entries per batch"),
        ));
    }
    // The caller's credentials go with every entry (each is checked as its own request), and
    // its host, so that locations and links name the server as the caller reached it.
    let credentials: Vec<(header::HeaderName, HeaderValue)> = [
        header::AUTHORIZATION,
        header::COOKIE,
        header::HOST,
        header::HeaderName::from_static("x-forwarded-proto"),
    ]
    .into_iter()
    .filter_map(|name| headers.get(&name).cloned().map(|value| (name, value)))
    .collect();
    let mut answers = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let answer = match read_entry(index, entry) {
            Ok(request) => carry_out(&app, &credentials, request).await,
            Err(error) => {
                let outcome = error.outcome;
                json!({ "response": { "status": status_line(error.status), "outcome": outcome } })
            }
        };
        answers.push(answer);
    }
    let response = json!({
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": answers,
    });
    Ok(fhir_response(StatusCode::OK, &response, HeaderMap::new()))
}
