//! Recovery from a crash image: the database files copied while the store is running (as a
//! `kill -9` would leave them) open with every acknowledged point, none twice, and quickly.

use std::time::{Duration, Instant};

use galen_model::{DeviceKind, DeviceStatus, Measurement, NewDevice, Timestamp, VitalSign};
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore};
use galen_store::{IngestBatch, MeasurementStore, RegistryStore};

const T0: i64 = 1_795_392_000_000_000;

fn copy_crash_image(from: &std::path::Path, to: &std::path::Path) {
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
    let store = SqliteStore::open(live.path(), options.clone()).expect("open");
    let device = store
        .create_device(NewDevice {
            serial: "SN-1".into(),
            manufacturer: String::new(),
            model: String::new(),
            kind: DeviceKind::Monitor,
            status: DeviceStatus::Active,
        })
        .await
        .expect("device")
        .id;
    // Three senders' batches of 200 arrive interleaved and slightly out of order.
    let measurement = |millis: i64| Measurement {
        device,
        vital: VitalSign::HeartRate,
        time: Timestamp::from_micros(T0 + millis * 1000),
        value: (millis % 90) as f64,
        external_id: Some(format!("m{millis}")),
    };
    let total = 60_000i64;
    for round in 0..total / 600 {
        for sender in [2, 0, 1] {
            let start = round * 600 + sender * 200;
            let batch: Vec<Measurement> = (start..start + 200).map(measurement).collect();
            store
                .ingest(IngestBatch {
                    measurements: batch,
                    dead_letters: Vec::new(),
                })
                .await
                .expect("ingest");
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
    let again = recovered
        .ingest(IngestBatch {
            measurements: vec![measurement(5), measurement(total + 1)],
            dead_letters: Vec::new(),
        })
        .await
        .expect("ingest");
    assert_eq!(
        again,
        vec![
            galen_store::AppendOutcome::Duplicate,
            galen_store::AppendOutcome::Accepted
        ]
    );
    eprintln!("recovered {total} points in {recovery:?}");
}
