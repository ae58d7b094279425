//! `POST /api/v1/measurements`: a JSON array of `{device, code, value, unit, time, id?}`.
//!
//! Answers `200` with a result per item (accepted, duplicate or rejected with reason) when at
//! least one item was stored or recognised, `422` when every item was refused, `400` for a body
//! that is not a JSON array, `413` for a body over the limit, `415` for a non-JSON content type.
//! Every refused item or body is kept as a dead letter before the answer is sent.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use galen_model::{Rejection, RejectionReason};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::is_json;
use crate::App;
use crate::error::ApiError;
use crate::pipeline::{Incoming, ItemResult, Unreadable};
use crate::wire::{Parsed, parse_item};

const SOURCE: &str = "http";

/// Records a refused whole request and answers it.
async fn refuse_request(
    app: &App,
    status: StatusCode,
    reason: RejectionReason,
    message: String,
    payload: &[u8],
) -> Response {
    let rejection = Rejection::new(reason, message.clone());
    let item = Err(Unreadable {
        rejection,
        device: None,
        raw: payload,
    });
    if let Err(error) = app.0.pipeline.ingest(SOURCE, vec![item]).await {
        return ApiError::from(error).into_response();
    }
    ApiError::new(status, reason.code(), message).into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct ReportQuery {
    /// `full` (default): one result per item, in order. `problems`: only items that were not
    /// accepted, each with its `index` (for gateways posting thousands of items a request).
    report: Option<String>,
}

pub(crate) async fn post_measurements(
    State(app): State<App>,
    record: crate::audit::WriteRecord,
    principal: crate::access::Principal,
    Query(query): Query<ReportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let problems_only = match query.report.as_deref() {
        None | Some("full") => false,
        Some("problems") => true,
        Some(_) => return ApiError::bad_request("report must be full or problems").into_response(),
    };
    let limit = app.0.config.max_body_bytes;
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            let message =
                format!("request body is larger than {limit} bytes; send smaller batches");
            return refuse_request(
                &app,
                StatusCode::PAYLOAD_TOO_LARGE,
                RejectionReason::TooLarge,
                message,
                b"",
            )
            .await;
        }
        Err(_) => {
            return ApiError::bad_request("the request body could not be read").into_response();
        }
    };
    if !is_json(&headers) {
        let message =
            "send measurements as a JSON array with 'Content-Type: application/json'".to_owned();
        return refuse_request(
            &app,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectionReason::UnsupportedMediaType,
            message,
            &bytes,
        )
        .await;
    }
    let raw_items: Vec<&RawValue> = match serde_json::from_slice(&bytes) {
        Ok(items) => items,
        Err(error) => {
            let message = format!(
                "the body must be a JSON array of measurements: {}",
                galen_fhir::redact::json_error(&error)
            );
            return refuse_request(
                &app,
                StatusCode::BAD_REQUEST,
                RejectionReason::Malformed,
                message,
                &bytes,
            )
            .await;
        }
    };

    // Parse every item on its own so one bad item cannot take the others down.
    let parsed: Vec<Parsed<'_>> = raw_items.iter().map(|raw| parse_item(raw)).collect();
    let items = parsed
        .iter()
        .zip(&raw_items)
        .map(|(parsed, raw)| {
            let raw = raw.get().as_bytes();
            match parsed {
                Parsed::Item { wire, .. } if wire.device.is_none() => Err(Unreadable {
                    rejection: Rejection::new(
                        RejectionReason::Malformed,
                        "item is not a measurement: missing field `device`",
                    ),
                    device: None,
                    raw,
                }),
                // A device account sends for itself only: its name is its serial.
                Parsed::Item { wire, .. }
                    if principal.role == crate::access::Role::Device
                        && wire.device.as_deref() != Some(principal.actor.as_str()) =>
                {
                    Err(Unreadable {
                        rejection: Rejection::new(
                            RejectionReason::Forbidden,
                            "a device account may send only its own measurements (device = its account name)",
                        ),
                        device: wire.device.as_deref(),
                        raw,
                    })
                }
                Parsed::Item { wire, time, id } => Ok(Incoming {
                    device: wire.device.as_deref().unwrap_or_default(),
                    code: &wire.code,
                    value: wire.value,
                    unit: &wire.unit,
                    time: *time,
                    id: id.as_deref(),
                    raw,
                }),
                Parsed::Unreadable { rejection, device } => Err(Unreadable {
                    rejection: rejection.clone(),
                    device: device.as_deref(),
                    raw,
                }),
            }
        })
        .collect();

    let (results, summary) = match app
        .0
        .pipeline
        .ingest_audited(SOURCE, items, record.records())
        .await
    {
        Ok(done) => done,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let total = results.len();
    let results: Vec<Value> = results
        .into_iter()
        .enumerate()
        .filter(|(_, result)| !problems_only || !matches!(result, ItemResult::Accepted { .. }))
        .map(|(index, result)| {
            let mut item = match result {
                ItemResult::Accepted { patient } => json!({ "status": "accepted", "patient": patient.map(|id| id.0) }),
                ItemResult::Duplicate { patient } => json!({ "status": "duplicate", "patient": patient.map(|id| id.0) }),
                ItemResult::Rejected(rejection) => {
                    json!({ "status": "rejected", "reason": rejection.reason.code(), "message": rejection.message })
                }
            };
            if problems_only {
                item["index"] = json!(index);
            }
            item
        })
        .collect();
    let status = if summary.rejected > 0 && summary.rejected == total {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = json!({
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "unassigned": summary.unassigned,
        "results": results,
    });
    (status, record.stored(), Json(body)).into_response()
}
