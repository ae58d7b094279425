//! `POST /fhir` with a Bundle of type `batch` or `transaction`.
//!
//! **Batch:** each entry is carried out on its own, as if it had been sent alone, and answered in
//! a `batch-response` Bundle in the same order. Each entry becomes a request to Galen's own
//! router with the caller's credentials, so an entry gets exactly the validation, pipeline,
//! conditional handling (`ifMatch`, `ifNoneExist`) and errors of the interaction it names; one
//! entry failing does not affect the others.
//!
//! **Transaction:** all or nothing. Every write entry is planned first with the same code as the
//! single interaction (parsing, mapping, `ifNoneExist`, `ifMatch`); the first entry that fails
//! fails the transaction with its status and an OperationOutcome naming the entry, and nothing
//! is written. Then the writes are made in one store commit, and the `GET` entries are read
//! (FHIR processes reads after writes). Registry writes (Patient, Device) are one registry
//! transaction; Observation creates are one ingest commit, in which no value is stored unless
//! every value is accepted. Galen keeps the registry and the time series in separate commits, so
//! one transaction holds one kind or the other, not both: a mixed transaction is refused before
//! anything is written. Posted Observations that are refused are kept as dead letters, like
//! any refused input. Each write entry is authorized as if it had been sent alone (role, SMART
//! scopes of a machine client, ward scope): a refused entry fails the transaction with `403`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use galen_fhir::IssueType;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::registry::{Planned, owner_of, plan_create, plan_update, served};
use super::{FhirError, FhirResult, check_accept, check_content_type, fhir_response, observation};
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
    auditor: super::registry::Auditor,
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
    let transaction = match bundle["type"].as_str() {
        Some("batch") => false,
        Some("transaction") => true,
        _ => {
            return Err(invalid(
                "Bundle.type".to_owned(),
                "POST /fhir takes a Bundle of type batch or transaction",
            ));
        }
    };
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    if entries.len() > MAX_ENTRIES {
        return Err(invalid(
            "Bundle.entry".to_owned(),
            format!("at most {MAX_ENTRIES} entries per Bundle"),
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
    if transaction {
        return process_transaction(&app, &auditor, &headers, &credentials, &entries).await;
    }
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

// --- Transactions -----------------------------------------------------------------------------

/// A transaction entry, planned.
enum Step {
    /// A registry write (or a conditional create that found its record).
    Registry(Planned),
    /// An Observation create, read and checked.
    Observation(Box<observation::Prepared>),
    /// A read, carried out after the writes.
    Read(EntryRequest),
}

/// Names the entry in every issue of an error of one entry.
fn in_entry(index: usize, mut error: FhirError) -> FhirError {
    for issue in &mut error.outcome.issue {
        let diagnostics = issue.diagnostics.take().unwrap_or_default();
        issue.diagnostics = Some(format!("Bundle.entry[{index}]: {diagnostics}"));
        if issue.expression.is_empty() {
            issue.expression.push(format!("Bundle.entry[{index}]"));
        }
    }
    error
}

/// The request headers of an entry: the caller's, plus the entry's conditions.
fn entry_headers(caller: &HeaderMap, request: &EntryRequest) -> HeaderMap {
    let mut headers = caller.clone();
    headers.remove(header::IF_MATCH);
    headers.remove("if-none-exist");
    if let Some(tag) = request
        .if_match
        .as_deref()
        .and_then(|tag| HeaderValue::from_str(tag).ok())
    {
        headers.insert(header::IF_MATCH, tag);
    }
    if let Some(condition) = request
        .if_none_exist
        .as_deref()
        .and_then(|condition| HeaderValue::from_str(condition).ok())
    {
        headers.insert("if-none-exist", condition);
    }
    headers
}

/// Plans one entry of a transaction.
async fn plan(
    app: &App,
    auditor: &super::registry::Auditor,
    caller: &HeaderMap,
    index: usize,
    request: EntryRequest,
) -> FhirResult<Step> {
    let path = request.uri.trim_start_matches("/fhir/").to_owned();
    let segments: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    let headers = entry_headers(caller, &request);
    let body = request.body.clone().unwrap_or_default();
    // A write entry is not replayed through the router: it gets the gate's checks here (role,
    // SMART scopes, ward scope), as if it had been sent alone. Reads go through the router.
    let entry_path = format!("/fhir/{}", path.split('?').next().unwrap_or(""));
    let authorize = |route: &str| match crate::auth::entry_refusal(
        app,
        &auditor.principal,
        &request.method,
        route,
        &entry_path,
    ) {
        Some(reason) => Err(super::forbidden(&reason)),
        None => Ok(()),
    };
    match (request.method.clone(), segments.as_slice()) {
        (Method::GET, _) => Ok(Step::Read(request)),
        (Method::POST, [kind @ ("Patient" | "Device")]) => {
            authorize(&format!("/fhir/{kind}"))?;
            plan_create(app, kind, &headers, body.as_bytes()).map(Step::Registry)
        }
        (Method::PUT, [kind @ ("Patient" | "Device"), id]) => {
            authorize(&format!("/fhir/{kind}/{{id}}"))?;
            plan_update(app, kind, id, &headers, body.as_bytes()).map(Step::Registry)
        }
        (Method::POST, ["Observation"]) => {
            authorize("/fhir/Observation")?;
            observation::prepare(app, &auditor.principal, Bytes::from(body))
                .await
                .map(|prepared| Step::Observation(Box::new(prepared)))
        }
        (method, _) => Err(invalid(
            format!("Bundle.entry[{index}].request"),
            format!(
                "{method} {path} cannot be part of a transaction; a transaction creates or updates Patient and Device (POST, PUT), creates Observations (POST) and reads (GET)"
            ),
        )),
    }
}

async fn process_transaction(
    app: &App,
    auditor: &super::registry::Auditor,
    caller: &HeaderMap,
    credentials: &[(header::HeaderName, HeaderValue)],
    entries: &[Value],
) -> FhirResult<Response> {
    let mut steps = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let request = read_entry(index, entry)?;
        let step = plan(app, auditor, caller, index, request)
            .await
            .map_err(|error| in_entry(index, error))?;
        steps.push(step);
    }
    let registry = steps.iter().any(|step| matches!(step, Step::Registry(_)));
    let observations = steps
        .iter()
        .any(|step| matches!(step, Step::Observation(_)));
    if registry && observations {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::NotSupported,
            "a transaction either writes Patient and Device records or creates Observations, not both: Galen commits the registry and the time series separately, so it could not make both one atomic unit; send two transactions",
        ));
    }
    let mut answers: Vec<Option<Value>> = vec![None; steps.len()];
    if registry {
        write_registry(app, auditor, caller, &steps, &mut answers).await?;
    }
    if observations {
        write_observations(app, auditor, caller, &steps, &mut answers).await?;
    }
    for (step, answer) in steps.into_iter().zip(&mut answers) {
        if let Step::Read(request) = step {
            *answer = Some(carry_out(app, credentials, request).await);
        }
    }
    let response = json!({
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": answers.into_iter().map(Option::unwrap_or_default).collect::<Vec<_>>(),
    });
    Ok(fhir_response(StatusCode::OK, &response, HeaderMap::new()))
}

/// A written entry's answer.
fn written_entry(status: StatusCode, resource: Value, etag: &str, location: &str) -> Value {
    // No fullUrl: two entries may name the same resource (an update and a conditional create
    // that found it), and a Bundle's fullUrls must differ; `location` names it.
    json!({
        "resource": resource,
        "response": { "status": status_line(status), "location": location, "etag": etag },
    })
}

/// Makes every registry write in one commit and answers each registry entry.
async fn write_registry(
    app: &App,
    auditor: &super::registry::Auditor,
    caller: &HeaderMap,
    steps: &[Step],
    answers: &mut [Option<Value>],
) -> FhirResult<()> {
    let mut writes = Vec::new();
    let mut created = Vec::new();
    for step in steps.iter() {
        if let Step::Registry(Planned::Write {
            write,
            created: new,
        }) = step
        {
            writes.push(write.clone());
            created.push(*new);
        }
    }
    let audit = auditor.records(app.0.clock.now(), created.clone());
    let written = app.0.store.apply_registry_audited(writes, audit).await?;
    super::reload(app).await?;
    tracing::info!(records = written.len(), "registry transaction over FHIR");
    let mut written = written.iter().zip(created);
    for (step, answer) in steps.iter().zip(answers.iter_mut()) {
        let (owner, status) = match step {
            Step::Registry(Planned::Existing(owner)) => (*owner, StatusCode::OK),
            Step::Registry(Planned::Write { .. }) => {
                let Some((registered, created)) = written.next() else {
                    break;
                };
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (owner_of(registered), status)
            }
            _ => continue,
        };
        let (resource, etag, location) = served(app, caller, owner)?;
        *answer = Some(written_entry(status, resource, &etag, &location));
    }
    Ok(())
}

/// Ingests every Observation entry in one all-or-nothing commit and answers each.
async fn write_observations(
    app: &App,
    auditor: &super::registry::Auditor,
    caller: &HeaderMap,
    steps: &[Step],
    answers: &mut [Option<Value>],
) -> FhirResult<()> {
    // Each item remembers its entry, to name it when it is refused. Each entry's audit record
    // commits with the items.
    let mut items = Vec::new();
    let mut origins = Vec::new();
    let mut audit = Vec::new();
    let now = app.0.clock.now();
    for (index, step) in steps.iter().enumerate() {
        if let Step::Observation(prepared) = step {
            audit.push(auditor.record(
                now,
                galen_store::AuditAction::Ingest,
                &format!("Bundle.entry[{index}] Observation"),
                None,
                "FHIR transaction entry, recorded with its values",
            ));
            for (value, item) in prepared.items().into_iter().enumerate() {
                items.push(item);
                origins.push((index, value));
            }
        }
    }
    let verdict = app
        .0
        .pipeline
        .ingest_all_or_nothing(observation::SOURCE, items, audit)
        .await?;
    let (results, _) = match verdict {
        Ok(stored) => stored,
        Err(refused) => {
            let mut outcome = galen_fhir::outcome::OutcomeBuilder::new();
            for (item, rejection) in refused {
                let Some(&(entry, value)) = origins.get(item) else {
                    continue;
                };
                let path = match &steps[entry] {
                    Step::Observation(prepared) => prepared.path(value),
                    _ => "Observation".to_owned(),
                };
                outcome = outcome.issue(
                    galen_fhir::IssueSeverity::Error,
                    IssueType::Invalid,
                    format!("Bundle.entry[{entry}]: {path}: {}", rejection.message),
                    Some(&path),
                );
            }
            let outcome = outcome
                .warning(
                    IssueType::Incomplete,
                    "nothing of the transaction was stored; the refused values are kept as dead letters",
                )
                .build();
            return Err(FhirError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                outcome,
            });
        }
    };
    for (index, step) in steps.iter().enumerate() {
        let Step::Observation(prepared) = step else {
            continue;
        };
        let accepted = origins.iter().zip(&results).any(|((entry, _), result)| {
            *entry == index && matches!(result, crate::pipeline::ItemResult::Accepted { .. })
        });
        let key = prepared.key()?;
        let (resource, etag, location) = observation::created(app, caller, &key).await?;
        let status = if accepted {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let resource = serde_json::to_value(resource).unwrap_or_default();
        answers[index] = Some(written_entry(status, resource, &etag, &location));
    }
    Ok(())
}
