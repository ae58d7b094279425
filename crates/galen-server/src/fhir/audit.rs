//! AuditEvent: the audit trail, read-only. Each AuditEvent is one record of the store's audit
//! chain (`AuditStore`), its id the record's seq; the mapping is `galen_fhir::audit_event`.
//!
//! **Search** narrows the store query with what the store can filter (one patient, one agent,
//! the actions and outcomes, the time bounds of `date`, the seq bounds of `_id`), tests every
//! record it gets with the full query (`date=ne...` or several patients need that), and reads on
//! in pages until one match more than the page holds has been found. Results come in seq order,
//! oldest first; the cursor is the last seq returned. `total` is given when the whole result fits
//! in the first page, and for `_count=0` (which counts every match, a page of the store at a
//! time).
//!
//! Audit records carry no PHI (ids, not names), so AuditEvents do not either.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::audit_event::{AuditEntry, audit_event, parse_audit_event_id};
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::search::AuditEventQuery;
use galen_fhir::{AuditEvent, Meta};
use galen_model::Timestamp;
use galen_store::{AuditQuery, StoredAuditRecord};

use super::{
    FhirError, FhirResult, base_url, check_accept, fhir_response, read_cursor, resource_headers,
    stamp,
};
use crate::App;

/// Records read from the store per page while counting (`_count=0`).
const COUNT_PAGE: usize = 1000;

fn event_meta(event: &mut AuditEvent) -> &mut Option<Meta> {
    &mut event.meta
}

/// The mapping's view of a stored record.
pub(crate) fn entry(stored: &StoredAuditRecord) -> AuditEntry<'_> {
    let record = &stored.record;
    AuditEntry {
        seq: stored.seq,
        time: record.time,
        actor: &record.actor,
        role: &record.role,
        action: record.action,
        resource: &record.resource,
        patient: record.patient,
        outcome: record.outcome,
        source: &record.source,
        detail: &record.detail,
    }
}

/// `GET /fhir/AuditEvent/{id}`.
pub(crate) async fn read_audit_event(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    // Auditors only: `auth::authenticate` checked `Permission::ReadAudit` before this runs,
    // and records this read in the audit trail.
    check_accept(&headers)?;
    let seq = parse_audit_event_id(&id)?;
    let stored = app
        .0
        .store
        .audit(AuditQuery {
            after: seq - 1,
            before: seq.saturating_add(1),
            limit: 1,
            ..AuditQuery::default()
        })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| FhirError::not_found("AuditEvent"))?;
    let mut event = audit_event(&entry(&stored));
    let etag = stamp(&mut event, event_meta);
    Ok(fhir_response(
        StatusCode::OK,
        &event,
        resource_headers(&etag, None),
    ))
}

/// `GET /fhir/AuditEvent`.
pub(crate) async fn search_audit_events(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    // Auditors only: `auth::authenticate` checked `Permission::ReadAudit` before this runs,
    // and records this search in the audit trail.
    check_accept(&headers)?;
    let query = AuditEventQuery::parse(&params)?;
    let cursor = read_cursor(query.paging.cursor.as_deref(), |cursor| {
        cursor.parse::<i64>().ok().filter(|seq| *seq >= 0)
    })?;
    let count = query.paging.count;
    let mut found: Vec<StoredAuditRecord> = Vec::new();
    let mut counted: u64 = 0;
    if !query.matches_nothing() {
        // Not empty: an empty window matches nothing.
        let (from, to) = query
            .dates
            .bounds()
            .unwrap_or((Timestamp::MIN, Timestamp::MAX));
        let (first_id, last_id) = query.id_bounds().unwrap_or((1, i64::MAX - 1));
        let page = if count == 0 { COUNT_PAGE } else { count + 1 };
        let mut store_query = AuditQuery {
            from,
            to,
            actor: query.single_agent(),
            patient: query.single_patient(),
            actions: query
                .actions
                .as_ref()
                .map(|actions| actions.iter().copied().collect())
                .unwrap_or_default(),
            outcomes: query
                .outcomes
                .as_ref()
                .map(|outcomes| outcomes.iter().copied().collect())
                .unwrap_or_default(),
            after: cursor.unwrap_or(0).max(first_id - 1),
            before: last_id.saturating_add(1),
            newest_first: false,
            limit: page,
        };
        loop {
            let records = app.0.store.audit(store_query.clone()).await?;
            let exhausted = records.len() < page;
            for stored in records {
                store_query.after = stored.seq;
                if !query.matches(&entry(&stored)) {
                    continue;
                }
                if count == 0 {
                    counted += 1;
                } else {
                    found.push(stored);
                    if found.len() > count {
                        break;
                    }
                }
            }
            if exhausted || (count > 0 && found.len() > count) {
                break;
            }
        }
    }
    let complete = found.len() <= count;
    let total = if count == 0 {
        cursor.is_none().then_some(counted)
    } else {
        (cursor.is_none() && complete).then_some(found.len() as u64)
    };
    found.truncate(count);
    let next = (!complete)
        .then(|| found.last().map(|stored| stored.seq.to_string()))
        .flatten();
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "AuditEvent", &params)
        .next_cursor(next.as_deref());
    if let Some(total) = total {
        bundle = bundle.total(total);
    }
    for stored in &found {
        let mut event = audit_event(&entry(stored));
        stamp(&mut event, event_meta);
        bundle = bundle.entry(event);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}
