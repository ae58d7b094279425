//! `galen check` on a data directory: `ok` for a sound one; the damaged chunk named, and a
//! non-zero exit, after one bit of a stored measurement is flipped.

use std::path::Path;
use std::process::Command;

use galen_model::{DeviceKind, DeviceStatus, Measurement, NewDevice, Timestamp, VitalSign};
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore};
use galen_store::{IngestBatch, MeasurementStore, RegistryStore};

fn check(data_dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args(["check", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run galen check");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn galen_check_names_a_damaged_chunk() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(
        dir.path(),
        SqliteOptions {
            chunk_points: 10,
            ..SqliteOptions::default()
        },
    )
    .expect("open");
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
    let start = Timestamp::parse_rfc3339("2026-11-24T07:00:00Z").expect("time");
    store
        .ingest(IngestBatch {
            measurements: (0..25)
                .map(|minute| Measurement {
                    device: device.id,
                    vital: VitalSign::Spo2,
                    time: start.add_seconds(minute * 60),
                    value: 97.0,
                    external_id: None,
                })
                .collect(),
            ..IngestBatch::default()
        })
        .await
        .expect("ingest");
    store.close().await.expect("close");
    drop(store);

    let (ok, output) = check(dir.path());
    assert!(ok, "{output}");
    assert!(
        output.starts_with("ok: database structure sound, 3 measurement chunks"),
        "{output}"
    );

    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("open");
    let (id, mut data): (i64, Vec<u8>) = connection
        .query_row(
            "SELECT id, data FROM chunks ORDER BY id LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("a chunk");
    let last = data.len() - 1;
    data[last] ^= 0x80;
    connection
        .execute(
            "UPDATE chunks SET data = ?1 WHERE id = ?2",
            rusqlite::params![data, id],
        )
        .expect("damage");
    drop(connection);
    let (ok, output) = check(dir.path());
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("damaged: chunk {id} (series "))
            && output.contains("fails its checksum"),
        "{output}"
    );
}
