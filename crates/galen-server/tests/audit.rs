//! The audit trail over HTTP, in-process: FHIR `AuditEvent` read and search and the auditor's
//! JSON view `/api/v1/audit`, over records appended directly through the store before the app
//! starts (seq 1 to 7, the day before "now"). The server audits the test's own requests too
//! (which handlers write which records is the access-control work's business, not this test's),
//! so every search here is limited to that day or to those seqs.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use galen_model::{AuditAction, AuditOutcome, ManualClock, PatientId, Timestamp};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use galen_store::{AuditQuery, AuditRecord, AuditStore, hash_to_hex};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

const NOW: &str = "2026-11-23T08:00:00Z";
/// When the test's own records start: a day before [`NOW`].
const BASE: &str = "2026-11-22T08:00:00Z";
/// Limits a FHIR search to the test's records.
const MINE: &str = "date=lt2026-11-23";
/// Limits an auditor-view query to the test's records.
const MINE_JSON: &str = "to=2026-11-23T00:00:00Z";

fn now() -> Timestamp {
    Timestamp::parse_rfc3339(NOW).expect("NOW is RFC 3339")
}

struct TestApp {
    app: App,
    store: Arc<SqliteStore>,
    _dir: TempDir,
}

/// An open (demo-mode) app over a store holding the records of [`records`].
async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    store.append_audit(records()).await.expect("append");
    let app = App::new(
        store.clone(),
        Arc::new(ManualClock::new(now())),
        ServerConfig {
            api_token: None,
            ..ServerConfig::default()
        },
    )
    .await
    .expect("app starts");
    TestApp {
        app,
        store,
        _dir: dir,
    }
}

fn record(
    seconds: i64,
    actor: &str,
    action: AuditAction,
    resource: &str,
    patient: Option<i64>,
    outcome: AuditOutcome,
) -> AuditRecord {
    AuditRecord {
        time: Timestamp::parse_rfc3339(BASE)
            .expect("BASE is RFC 3339")
            .add_seconds(seconds),
        actor: actor.into(),
        role: if actor.starts_with("device:") {
            "device".into()
        } else {
            "nurse".into()
        },
        action,
        resource: resource.into(),
        patient: patient.map(PatientId),
        outcome,
        source: "10.0.0.7:51234".into(),
        detail: if outcome == AuditOutcome::Denied {
            "role nurse has no access to ward B".into()
        } else {
            String::new()
        },
    }
}

/// Seven records: seq 1 to 7.
fn records() -> Vec<AuditRecord> {
    use AuditAction as A;
    use AuditOutcome as O;
    vec![
        record(0, "ann", A::Login, "/login", None, O::Success),
        record(10, "ann", A::Read, "Patient/1", Some(1), O::Success),
        record(20, "ann", A::Search, "Patient", None, O::Success),
        record(30, "ann", A::Read, "Patient/2", Some(2), O::Denied),
        record(
            40,
            "device:SN-1",
            A::Ingest,
            "Observation",
            Some(1),
            O::Success,
        ),
        record(3600, "bob", A::LoginFailed, "/login", None, O::Denied),
        record(7200, "ann", A::Update, "Patient/1", Some(1), O::Failed),
    ]
}

impl TestApp {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .app
            .router()
            .oneshot(
                Request::get(path)
                    .body(Body::empty())
                    .expect("valid request"),
            )
            .await
            .expect("the router never fails");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, json)
    }

    /// The ids of a searchset's entries.
    async fn search_ids(&self, path: &str) -> Vec<String> {
        let (status, bundle) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {bundle}");
        assert_eq!(bundle["type"], "searchset");
        bundle["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| entry["resource"]["id"].as_str().expect("an id").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| (*id).to_owned()).collect()
}

#[tokio::test]
async fn audit_events_are_read_by_seq() {
    let app = spawn_app().await;
    let (status, event) = app.get("/fhir/AuditEvent/4").await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["id"], "4");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "4");
    assert_eq!(event["outcomeDesc"], "role nurse has no access to ward B");
    assert_eq!(event["recorded"], "2026-11-22T08:00:30.000Z");
    assert_eq!(event["agent"][0]["who"]["display"], "ann");
    assert_eq!(event["agent"][0]["network"]["address"], "10.0.0.7");
    assert_eq!(event["entity"][0]["what"]["reference"], "Patient/2");
    assert!(event["meta"]["versionId"].is_string());
    for (path, status) in [
        ("/fhir/AuditEvent/999999", StatusCode::NOT_FOUND),
        ("/fhir/AuditEvent/0", StatusCode::NOT_FOUND),
        ("/fhir/AuditEvent/x", StatusCode::NOT_FOUND),
    ] {
        let (answer, outcome) = app.get(path).await;
        assert_eq!(answer, status, "{path}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
}

#[tokio::test]
async fn audit_events_are_searched_and_paged() {
    let app = spawn_app().await;
    assert_eq!(
        app.search_ids(&format!("/fhir/AuditEvent?{MINE}")).await,
        ids(&["1", "2", "3", "4", "5", "6", "7"])
    );
    assert_eq!(
        app.search_ids(&format!("/fhir/AuditEvent?patient=Patient/1&{MINE}"))
            .await,
        ids(&["2", "5", "7"])
    );
    assert_eq!(
        app.search_ids(&format!("/fhir/AuditEvent?patient=1,2&action=R&{MINE}"))
            .await,
        ids(&["2", "4"])
    );
    assert_eq!(
        app.search_ids(&format!("/fhir/AuditEvent?agent=device:SN-1&{MINE}"))
            .await,
        ids(&["5"])
    );
    assert_eq!(
        app.search_ids(&format!("/fhir/AuditEvent?outcome=4,8&{MINE}"))
            .await,
        ids(&["4", "6", "7"])
    );
    assert_eq!(
        app.search_ids(&format!(
            "/fhir/AuditEvent?subtype=http://dicom.nema.org/resources/ontology/DCM|110122&{MINE}"
        ))
        .await,
        ids(&["1", "6"])
    );
    assert_eq!(
        app.search_ids(&format!(
            "/fhir/AuditEvent?date=ge2026-11-22T09:00:00Z&{MINE}"
        ))
        .await,
        ids(&["6", "7"])
    );
    assert_eq!(
        app.search_ids(&format!(
            "/fhir/AuditEvent?date=ne2026-11-22T09:00:00Z&{MINE}"
        ))
        .await,
        ids(&["1", "2", "3", "4", "5", "7"]),
        "a window of two intervals"
    );
    assert_eq!(
        app.search_ids(&format!("/fhir/AuditEvent?_id=3,5,99&{MINE}"))
            .await,
        ids(&["3", "5"])
    );
    assert!(
        app.search_ids(&format!("/fhir/AuditEvent?outcome=12&{MINE}"))
            .await
            .is_empty()
    );

    // Pages of two, by cursor, with a total only when everything fits.
    let (_, first) = app
        .get(&format!("/fhir/AuditEvent?agent=ann&_count=2&{MINE}"))
        .await;
    assert!(first.get("total").is_none(), "{first}");
    let next = first["link"]
        .as_array()
        .and_then(|links| links.iter().find(|link| link["relation"] == "next"))
        .and_then(|link| link["url"].as_str())
        .expect("a next link")
        .to_owned();
    let path = next
        .split_once("/fhir/")
        .map(|(_, rest)| format!("/fhir/{rest}"))
        .expect("a FHIR URL");
    assert_eq!(app.search_ids(&path).await, ids(&["3", "4"]));
    let (_, counted) = app
        .get(&format!("/fhir/AuditEvent?agent=ann&_count=0&{MINE}"))
        .await;
    assert_eq!(counted["total"], 5);
    assert!(counted.get("entry").is_none());
    let (_, whole) = app.get(&format!("/fhir/AuditEvent?agent=ann&{MINE}")).await;
    assert_eq!(whole["total"], 5);

    for path in [
        "/fhir/AuditEvent?action=X",
        "/fhir/AuditEvent?outcome=success",
        "/fhir/AuditEvent?_sort=date",
        "/fhir/AuditEvent?entity=Patient/1",
        "/fhir/AuditEvent?_cursor=abc",
    ] {
        let (status, outcome) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }

    let (_, statement) = app.get("/fhir/metadata").await;
    let audit = statement["rest"][0]["resource"]
        .as_array()
        .and_then(|resources| resources.iter().find(|r| r["type"] == "AuditEvent"))
        .expect("AuditEvent is declared")
        .clone();
    let interactions: Vec<&str> = audit["interaction"]
        .as_array()
        .expect("interactions")
        .iter()
        .filter_map(|interaction| interaction["code"].as_str())
        .collect();
    assert_eq!(interactions, ["read", "search-type"]);
}

#[tokio::test]
async fn the_auditor_view_filters_and_pages() {
    let app = spawn_app().await;
    let (status, page) = app.get(&format!("/api/v1/audit?limit=3&{MINE_JSON}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let seqs = |page: &Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["seq"].as_i64().expect("seq"))
            .collect()
    };
    assert_eq!(seqs(&page), [1, 2, 3]);
    assert_eq!(page["next_after"], 3);
    // The head: the newest record when the page was read (the server's own records of this
    // test's requests included).
    let head_seq = page["head"]["seq"].as_i64().expect("a head");
    assert!(head_seq >= 7, "{page}");
    let at_head = app
        .store
        .audit(AuditQuery {
            after: head_seq - 1,
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(page["head"]["hash"], hash_to_hex(&at_head[0].hash));
    let item = &page["items"][1];
    assert_eq!(item["actor"], "ann");
    assert_eq!(item["action"], "read");
    assert_eq!(item["resource"], "Patient/1");
    assert_eq!(item["patient"], 1);
    assert_eq!(item["outcome"], "success");
    assert_eq!(item["previous_hash"], page["items"][0]["hash"]);
    let (_, rest) = app
        .get(&format!("/api/v1/audit?limit=3&after=3&{MINE_JSON}"))
        .await;
    assert_eq!(seqs(&rest), [4, 5, 6]);

    let cases = [
        ("/api/v1/audit?actor=ann&action=read,update", vec![2, 4, 7]),
        ("/api/v1/audit?patient=1&outcome=success", vec![2, 5]),
        ("/api/v1/audit?outcome=denied,failed", vec![4, 6, 7]),
        (
            "/api/v1/audit?from=2026-11-22T08:00:10Z&to=2026-11-22T09:00:00Z",
            vec![2, 3, 4, 5],
        ),
        ("/api/v1/audit?order=desc&limit=2", vec![7, 6]),
        ("/api/v1/audit?order=desc&limit=2&before=6", vec![5, 4]),
    ];
    for (path, expected) in cases {
        let path = if path.contains("to=") {
            path.to_owned()
        } else {
            format!("{path}&{MINE_JSON}")
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert_eq!(seqs(&page), expected, "{path}");
    }
    let (_, newest) = app
        .get(&format!("/api/v1/audit?order=desc&limit=2&{MINE_JSON}"))
        .await;
    assert_eq!(newest["next_before"], 6);
    assert!(newest["next_after"].is_null());

    for path in [
        "/api/v1/audit?action=peek",
        "/api/v1/audit?outcome=ok",
        "/api/v1/audit?order=up",
        "/api/v1/audit?from=yesterday",
        "/api/v1/audit?patinet=1",
    ] {
        let (status, answer) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
    }
}
