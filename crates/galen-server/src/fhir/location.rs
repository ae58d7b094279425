//! Location (wards and beds): read and search, derived from the registered patients' ward and bed
//! in the in-memory directory. Nothing is stored: a ward or bed exists while a patient is placed
//! there. Ids, content and order: `galen_fhir::location`.
//!
//! A read computes the current wards and beds and finds the one with the requested id (ids are
//! hashes and are never decoded). A search filters the same list; every match is known, so the
//! total is exact, and pages resume after the last ward or bed returned (the cursor holds its
//! names), so admissions and moves between pages do not shift them.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::Location;
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::location::{LocationKey, location_to_fhir, locations_of};
use galen_fhir::search::LocationQuery;

use super::{
    FhirError, FhirResult, base_url, check_accept, fhir_response, read_cursor, resource_headers,
    stamp,
};
use crate::App;

fn location_meta(location: &mut Location) -> &mut Option<galen_fhir::Meta> {
    &mut location.meta
}

/// The wards and beds patients are placed in now, in search order.
fn current_locations(app: &App) -> BTreeSet<LocationKey> {
    let directory = app.0.directory.read();
    locations_of(directory.patients())
}

/// `GET /fhir/Location/{id}`.
pub(crate) async fn read_location(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let key = current_locations(&app)
        .into_iter()
        .find(|key| key.id() == id)
        .ok_or_else(|| FhirError::not_found("Location"))?;
    let mut location = location_to_fhir(&key);
    let etag = stamp(&mut location, location_meta);
    Ok(fhir_response(
        StatusCode::OK,
        &location,
        resource_headers(&etag, None),
    ))
}

/// `GET /fhir/Location`.
pub(crate) async fn search_locations(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = LocationQuery::parse(&params)?;
    let cursor = read_cursor(query.paging.cursor.as_deref(), LocationKey::from_cursor)?;
    let count = query.paging.count;
    let matches: Vec<LocationKey> = if query.matches_nothing() {
        Vec::new()
    } else {
        current_locations(&app)
            .into_iter()
            .filter(|key| query.matches(key))
            .collect()
    };
    let total = matches.len() as u64;
    let mut page: Vec<LocationKey> = matches
        .into_iter()
        .filter(|key| cursor.as_ref().is_none_or(|cursor| key > cursor))
        .take(count.saturating_add(1))
        .collect();
    let more = page.len() > count;
    page.truncate(count);
    let next = more.then(|| page.last().map(LocationKey::cursor)).flatten();
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "Location", &params)
        .total(total)
        .next_cursor(next.as_deref());
    for key in &page {
        let mut location = location_to_fhir(key);
        stamp(&mut location, location_meta);
        bundle = bundle.entry(location);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}
