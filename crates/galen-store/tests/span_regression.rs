//! A series whose open chunk reaches the 6 h span limit must keep every point when newer points
//! force it to be sealed (found by the demo's six hours of history followed by live data).

use galen_model::{DeviceKind, DeviceStatus, Measurement, NewDevice, Timestamp, VitalSign};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use galen_store::{IngestBatch, MeasurementStore, RegistryStore};

const T0: i64 = 1_795_392_000_000_000;
const MINUTE: i64 = 60_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_then_live_keeps_every_point() {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(directory.path(), SqliteOptions::default()).expect("open");
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
    let at = |micros: i64| Measurement {
        device,
        vital: VitalSign::HeartRate,
        time: Timestamp::from_micros(micros),
        value: 70.0,
        external_id: None,
    };
    let history: Vec<Measurement> = (0..360).map(|minute| at(T0 + minute * MINUTE)).collect();
    store
        .ingest(IngestBatch {
            measurements: history,
            dead_letters: Vec::new(),
        })
        .await
        .expect("history");
    for second in 0..10 {
        let live = vec![at(T0 + 360 * MINUTE + second * 1_000_000)];
        store
            .ingest(IngestBatch {
                measurements: live,
                dead_letters: Vec::new(),
            })
            .await
            .expect("live");
    }
    let points = store
        .range(device, VitalSign::HeartRate, Timestamp::MIN, Timestamp::MAX)
        .await
        .expect("range");
    assert_eq!(points.len(), 370);
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
    let points = reopened
        .range(device, VitalSign::HeartRate, Timestamp::MIN, Timestamp::MAX)
        .await
        .expect("range");
    assert_eq!(points.len(), 370, "after reopening");
}
