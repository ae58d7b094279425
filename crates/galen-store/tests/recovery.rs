//! Recovery and chunk-boundary behaviour of the embedded store, beyond the conformance suite:
//! a crash image (the database files copied while the store runs, as `kill -9` leaves them)
//! opens with every acknowledged point once and quickly, and a series whose open chunk reaches
//! the span limit keeps every point when newer data seals it.

use std::path::Path;
use std::time::{Duration, Instant};

use galen_model::{
    DeviceId, DeviceKind, DeviceStatus, Measurement, NewDevice, Timestamp, VitalSign,
};
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore};
use galen_store::{AppendOutcome, IngestBatch, MeasurementStore, RegistryStore};

const T0: i64 = 1_795_392_000_000_000;
const MINUTE: i64 = 60_000_000;

/// A store in `directory` with one registered monitor.
async fn store_with_device(directory: &Path, options: SqliteOptions) -> (SqliteStore, DeviceId) {
    let store = SqliteStore::open(directory, options).expect("open");
    let device = NewDevice {
        serial: "SN-1".into(),
        manufacturer: String::new(),
        model: String::new(),
        kind: DeviceKind::Monitor,
        status: DeviceStatus::Active,
    };
    let id = store
        .create_device(device, Vec::new())
        .await
        .expect("device")
        .id;
    (store, id)
}

fn heart_rate(device: DeviceId, micros: i64, external_id: Option<String>) -> Measurement {
    Measurement {
        device,
        vital: VitalSign::HeartRate,
        time: Timestamp::from_micros(micros),
        value: 70.0,
        external_id,
    }
}

async fn ingest(store: &SqliteStore, measurements: Vec<Measurement>) -> Vec<AppendOutcome> {
    store
        .ingest(IngestBatch {
            measurements,
            ..IngestBatch::default()
        })
        .await
        .expect("ingest")
}

async fn all_points(store: &SqliteStore, device: DeviceId) -> usize {
    store
        .range(device, VitalSign::HeartRate, Timestamp::MIN, Timestamp::MAX)
        .await
        .expect("range")
        .len()
}

fn copy_crash_image(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let source = from.join(format!("{DATABASE_FILE}{suffix}"));
        if source.exists() {
            std::fs::copy(&source, to.join(format!("{DATABASE_FILE}{suffix}")))
                .expect("copy database file");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_image_recovers_every_point_once() {
    let live = tempfile::tempdir().expect("temp dir");
    // A long checkpoint interval: the crash image holds a write-ahead log to replay.
    let options = SqliteOptions {
        checkpoint_interval: Duration::from_secs(3600),
        ..SqliteOptions::default()
    };
    let (store, device) = store_with_device(live.path(), options.clone()).await;
    let reading = |millis: i64| heart_rate(device, T0 + millis * 1000, Some(format!("m{millis}")));
    // Three senders' batches of 200 arrive interleaved and slightly out of order.
    let total = 60_000i64;
    for round in 0..total / 600 {
        for sender in [2, 0, 1] {
            let start = round * 600 + sender * 200;
            ingest(&store, (start..start + 200).map(reading).collect()).await;
        }
    }
    let crashed = tempfile::tempdir().expect("temp dir");
    copy_crash_image(live.path(), crashed.path());

    let started = Instant::now();
    let recovered = SqliteStore::open(crashed.path(), options).expect("recover");
    let recovery = started.elapsed();
    let points = recovered
        .range(device, VitalSign::HeartRate, Timestamp::MIN, Timestamp::MAX)
        .await
        .expect("range");
    assert_eq!(points.len(), total as usize, "every point once");
    assert!(points.windows(2).all(|pair| pair[0].time < pair[1].time));
    assert!(
        recovery < Duration::from_secs(3),
        "recovery of {total} points took {recovery:?}"
    );
    let again = ingest(&recovered, vec![reading(5), reading(total + 1)]).await;
    assert_eq!(
        again,
        vec![AppendOutcome::Duplicate, AppendOutcome::Accepted]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_then_live_keeps_every_point() {
    let directory = tempfile::tempdir().expect("temp dir");
    let (store, device) = store_with_device(directory.path(), SqliteOptions::default()).await;
    // Six hours at one point a minute, then live data a second apart: the open chunk hits the
    // span limit and is sealed.
    ingest(
        &store,
        (0..360)
            .map(|minute| heart_rate(device, T0 + minute * MINUTE, None))
            .collect(),
    )
    .await;
    for second in 0..10 {
        ingest(
            &store,
            vec![heart_rate(
                device,
                T0 + 360 * MINUTE + second * 1_000_000,
                None,
            )],
        )
        .await;
    }
    assert_eq!(all_points(&store, device).await, 370);
    let recent = store
        .range(
            device,
            VitalSign::HeartRate,
            Timestamp::from_micros(T0 + 60 * MINUTE),
            Timestamp::MAX,
        )
        .await
        .expect("range");
    assert_eq!(
        recent.len(),
        310,
        "a window starting inside an old chunk finds its points"
    );
    store.close().await.expect("close");
    let reopened = SqliteStore::open(directory.path(), SqliteOptions::default()).expect("reopen");
    assert_eq!(all_points(&reopened, device).await, 370, "after reopening");
}
