//! DeviceMetric: read and search, derived from the registry and the store. A registered device
//! has a metric for each vital sign it has stored values of, found with
//! `MeasurementStore::latest` (the newest point per vital sign). Nothing is stored for metrics.
//! Ids, content and the `operationalStatus` rule: `galen_fhir::device_metric`.
//!
//! **Search** walks the devices in scope (`source` and `_id` narrow them) in id order from the
//! cursor's device, asking the store for each one's vital signs, and stops once it has one match
//! more than the page holds. A page therefore costs one `latest` read per device it passes, not
//! per registered device. Pages are ordered by device, then vital sign, and resume strictly after
//! the last metric returned (the cursor is its id). `total` is given when the whole result fits
//! in the first page (or for `_count=0`, which reads every device in scope).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::DeviceMetric;
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::device_metric::{DeviceMetricKey, device_metric, parse_device_metric_id};
use galen_fhir::search::DeviceMetricQuery;

use super::{
    FhirError, FhirResult, base_url, check_accept, fhir_response, read_cursor, resource_headers,
    stamp,
};
use crate::App;

fn metric_meta(metric: &mut DeviceMetric) -> &mut Option<galen_fhir::Meta> {
    &mut metric.meta
}

/// `GET /fhir/DeviceMetric/{id}`.
pub(crate) async fn read_device_metric(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let key = parse_device_metric_id(&id)?;
    let device = app
        .0
        .directory
        .read()
        .device(key.device)
        .cloned()
        .ok_or_else(|| FhirError::not_found("DeviceMetric"))?;
    let measured = app
        .0
        .store
        .latest(key.device)
        .await?
        .iter()
        .any(|(vital, _)| *vital == key.vital);
    if !measured {
        return Err(FhirError::not_found("DeviceMetric"));
    }
    let mut metric = device_metric(&device, key.vital);
    let etag = stamp(&mut metric, metric_meta);
    Ok(fhir_response(
        StatusCode::OK,
        &metric,
        resource_headers(&etag, None),
    ))
}

/// `GET /fhir/DeviceMetric`.
pub(crate) async fn search_device_metrics(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = DeviceMetricQuery::parse(&params)?;
    let cursor = read_cursor(query.paging.cursor.as_deref(), |cursor| {
        parse_device_metric_id(cursor).ok()
    })?;
    let count = query.paging.count;
    let devices: Vec<galen_model::Device> = if query.matches_nothing() {
        Vec::new()
    } else {
        let scope = query.devices_in_scope();
        let directory = app.0.directory.read();
        directory
            .devices()
            .into_iter()
            .filter(|device| {
                scope
                    .as_ref()
                    .is_none_or(|scope| scope.contains(&device.id))
            })
            .filter(|device| cursor.is_none_or(|cursor| device.id >= cursor.device))
            .cloned()
            .collect()
    };
    let mut found: Vec<DeviceMetric> = Vec::new();
    for device in &devices {
        if count > 0 && found.len() > count {
            break;
        }
        for (vital, _) in app.0.store.latest(device.id).await? {
            let key = DeviceMetricKey {
                device: device.id,
                vital,
            };
            if cursor.is_none_or(|cursor| key > cursor) && query.matches(&key) {
                found.push(device_metric(device, vital));
            }
        }
    }
    let complete = found.len() <= count;
    let total = (cursor.is_none() && (complete || count == 0)).then_some(found.len() as u64);
    found.truncate(count);
    let next = (!complete)
        .then(|| found.last().and_then(|metric| metric.id.clone()))
        .flatten();
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "DeviceMetric", &params)
        .next_cursor(next.as_deref());
    if let Some(total) = total {
        bundle = bundle.total(total);
    }
    for mut metric in found {
        stamp(&mut metric, metric_meta);
        bundle = bundle.entry(metric);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}
