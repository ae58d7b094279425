//! Stored measurements carry checksums: a chunk damaged on disk is reported, by the API as an
//! integrity failure and by the store's check, never served as wrong values.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use galen_model::{
    DeviceKind, DeviceStatus, ManualClock, Measurement, NewDevice, Timestamp, VitalSign,
};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore, check_data_dir};
use galen_store::{IngestBatch, MeasurementStore, RegistryStore};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const SERVICE: &str = "service-token-for-the-integrity-test";

fn options() -> SqliteOptions {
    SqliteOptions {
        chunk_points: 10,
        ..SqliteOptions::default()
    }
}

#[tokio::test]
async fn a_damaged_chunk_is_reported_never_served() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let start = Timestamp::parse_rfc3339("2026-11-24T07:00:00Z").expect("time");
    let store = SqliteStore::open(dir.path(), options()).expect("open");
    let device = store
        .create_device(
            NewDevice {
                serial: "MON-1".into(),
                manufacturer: "Acme".into(),
                model: "M1".into(),
                kind: DeviceKind::Monitor,
                status: DeviceStatus::Active,
            },
            Vec::new(),
        )
        .await
        .expect("device");
    let measurements = (0..30)
        .map(|minute| Measurement {
            device: device.id,
            vital: VitalSign::HeartRate,
            time: start.add_seconds(minute * 60),
            value: 70.0 + minute as f64,
            external_id: None,
        })
        .collect();
    store
        .ingest(IngestBatch {
            measurements,
            ..IngestBatch::default()
        })
        .await
        .expect("ingest");
    store.close().await.expect("close");
    drop(store);
    let sound = check_data_dir(dir.path()).expect("check");
    assert!(sound.is_sound() && sound.chunks >= 3, "{sound:?}");

    // One bit flipped in one value of the second chunk, behind Galen's back.
    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("open");
    let (id, mut data): (i64, Vec<u8>) = connection
        .query_row(
            "SELECT id, data FROM chunks ORDER BY start_ts LIMIT 1 OFFSET 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("a chunk");
    let middle = data.len() / 2;
    data[middle] ^= 0x04;
    connection
        .execute(
            "UPDATE chunks SET data = ?1 WHERE id = ?2",
            rusqlite::params![data, id],
        )
        .expect("damage");
    drop(connection);
    let damaged = check_data_dir(dir.path()).expect("check");
    assert_eq!(
        damaged
            .damaged_chunks
            .iter()
            .map(|(chunk, _, _)| *chunk)
            .collect::<Vec<_>>(),
        vec![id],
        "{damaged:?}"
    );

    let store = Arc::new(SqliteStore::open(dir.path(), options()).expect("reopen"));
    let app = App::new(
        store,
        Arc::new(ManualClock::new(start.add_seconds(3600))),
        ServerConfig {
            api_token: Some(SERVICE.to_owned()),
            ..ServerConfig::default()
        },
    )
    .await
    .expect("app");
    let read = |from: &str, to: &str| {
        let request = Request::builder()
            .uri(format!(
                "/api/v1/devices/{}/vitals?code=hr&from={from}&to={to}",
                device.id.0
            ))
            .header(header::AUTHORIZATION, format!("Bearer {SERVICE}"))
            .body(Body::empty())
            .expect("request");
        let router = app.router();
        async move {
            let response = router.oneshot(request).await.expect("router");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let (status, answer) = read("2026-11-24T07:00:00Z", "2026-11-24T08:00:00Z").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert_eq!(answer["error"], "corrupt", "{answer}");
    // The sound chunks are still served.
    let (status, answer) = read("2026-11-24T07:00:00Z", "2026-11-24T07:05:00Z").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
