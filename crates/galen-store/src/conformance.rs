//! The storage conformance suite: behaviour every backend must show.
//!
//! A backend's tests call [`run_all`] with a factory of fresh, empty databases. Each check opens
//! the database, works through the ports only, and where durability matters closes and reopens it.
//! Failures panic with a message naming the broken rule.

use std::sync::Arc;

use async_trait::async_trait;
use galen_model::{
    AssignmentId, DeviceId, DeviceKind, DeviceStatus, HumanName, Identifier, Measurement,
    NewAssignment, NewDevice, NewPatient, PatientId, RejectionReason, Sex, Timestamp, VitalSign,
};

use crate::{
    AlarmQuery, AlarmRecord, AppendOutcome, ClinicalEntry, DeadLetter, DeliveryRecord,
    DocumentOwner, Error, FilteredRecord, IngestBatch, Point, Receipt, Registered, RegistryChange,
    RegistryDocument, RegistryWrite, ScoreRecord, Store,
};

/// One empty database of the backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the database. After the previous handle was closed, opening again must show every
    /// durable write made through it.
    async fn open(&self) -> Arc<dyn Store>;
}

/// Runs every check, each on a fresh database from `fresh`.
pub async fn run_all(fresh: &(dyn Fn() -> Box<dyn Backend> + Sync)) {
    registry_round_trip(fresh().as_ref()).await;
    assignment_rules(fresh().as_ref()).await;
    ingest_range_and_reopen(fresh().as_ref()).await;
    duplicates_are_recognised(fresh().as_ref()).await;
    out_of_order_and_volume(fresh().as_ref()).await;
    aggregates_match_points(fresh().as_ref()).await;
    latest_and_earliest_per_vital(fresh().as_ref()).await;
    dead_letters_are_kept(fresh().as_ref()).await;
    clinical_records(fresh().as_ref()).await;
    receipts_are_kept_with_their_content(fresh().as_ref()).await;
    device_credentials(fresh().as_ref()).await;
    fhir_subscriptions(fresh().as_ref()).await;
    registry_transactions(fresh().as_ref()).await;
    accounts_and_api_tokens(fresh().as_ref()).await;
    oauth_clients(fresh().as_ref()).await;
    audit_trail(fresh().as_ref()).await;
    totp_second_factor(fresh().as_ref()).await;
    writes_commit_their_audit_records(fresh().as_ref()).await;
    break_glass_grants(fresh().as_ref()).await;
    consents(fresh().as_ref()).await;
}

/// A fixed instant the checks build on: 2026-11-23T00:00:00Z.
const T0: i64 = 1_795_392_000_000_000;
const SECOND: i64 = 1_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_micros(T0 + seconds * SECOND)
}

fn patient(mrn: &str, ward: &str, bed: &str) -> NewPatient {
    NewPatient {
        identifier: Identifier {
            system: "urn:test:mrn".into(),
            value: mrn.into(),
        },
        name: HumanName {
            family: format!("Family {mrn}"),
            given: "Given".into(),
        },
        birth_date: NewPatient::parse_birth_date("1960-05-17").expect("date"),
        sex: Sex::Female,
        ward: ward.into(),
        bed: bed.into(),
    }
}

fn device(serial: &str) -> NewDevice {
    NewDevice {
        serial: serial.into(),
        manufacturer: "Acme".into(),
        model: "M1".into(),
        kind: DeviceKind::Monitor,
        status: DeviceStatus::Active,
    }
}

fn measurement(device: DeviceId, vital: VitalSign, seconds: i64, value: f64) -> Measurement {
    Measurement {
        device,
        vital,
        time: at(seconds),
        value,
        external_id: None,
    }
}

async fn ingest(store: &dyn Store, measurements: Vec<Measurement>) -> Vec<AppendOutcome> {
    store
        .ingest(IngestBatch {
            measurements,
            dead_letters: Vec::new(),
            receipt: None,
            audit: Vec::new(),
        })
        .await
        .expect("ingest")
}

async fn all_points(store: &dyn Store, device: DeviceId, vital: VitalSign) -> Vec<Point> {
    store
        .range(device, vital, Timestamp::MIN, Timestamp::MAX)
        .await
        .expect("range")
}

async fn registry_round_trip(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = store
        .create_patient(patient("1", "B", "B-02"), Vec::new())
        .await
        .expect("create patient");
    let second = store
        .create_patient(patient("2", "A", "A-01"), Vec::new())
        .await
        .expect("create patient");
    let third = store
        .create_patient(patient("3", "B", "B-01"), Vec::new())
        .await
        .expect("create patient");
    assert!(
        matches!(
            store
                .create_patient(patient("1", "C", "C-01"), Vec::new())
                .await,
            Err(Error::Conflict(_))
        ),
        "a second patient with the same identifier must be a conflict"
    );
    let listed: Vec<PatientId> = store
        .patients(None)
        .await
        .expect("list")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        listed,
        vec![second.id, third.id, first.id],
        "patients sort by ward then bed"
    );
    let ward_b: Vec<PatientId> = store
        .patients(Some("B".into()))
        .await
        .expect("list")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ward_b, vec![third.id, first.id]);
    let mut moved = patient("1", "A", "A-09");
    moved.name.given = "Renamed".into();
    store
        .update_patient(first.id, moved.clone(), Vec::new())
        .await
        .expect("update");
    assert_eq!(
        store
            .patient(first.id)
            .await
            .expect("read")
            .map(|p| p.details),
        Some(moved)
    );
    assert!(matches!(
        store
            .update_patient(PatientId(999), patient("9", "A", "A"), Vec::new())
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.patient(PatientId(999)).await.expect("read"), None);

    let monitor = store
        .create_device(device("SN-1"), Vec::new())
        .await
        .expect("create device");
    assert!(matches!(
        store.create_device(device("SN-1"), Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    let mut retired = device("SN-1");
    retired.status = DeviceStatus::Inactive;
    store
        .update_device(monitor.id, retired.clone(), Vec::new())
        .await
        .expect("update device");
    assert_eq!(
        store
            .device(monitor.id)
            .await
            .expect("read")
            .map(|d| d.details),
        Some(retired)
    );
    assert_eq!(store.devices().await.expect("list").len(), 1);
    store.close().await.expect("close");

    let reopened = backend.open().await;
    assert_eq!(
        reopened.patients(None).await.expect("list").len(),
        3,
        "patients survive reopening"
    );
    assert_eq!(
        reopened.devices().await.expect("list").len(),
        1,
        "devices survive reopening"
    );
    reopened.close().await.expect("close");
}

async fn assignment_rules(backend: &dyn Backend) {
    let store = backend.open().await;
    let ada = store
        .create_patient(patient("1", "A", "A-01"), Vec::new())
        .await
        .expect("patient");
    let bob = store
        .create_patient(patient("2", "A", "A-02"), Vec::new())
        .await
        .expect("patient");
    let monitor = store
        .create_device(device("SN-1"), Vec::new())
        .await
        .expect("device");
    let assign = |patient: PatientId, start: i64, end: Option<i64>| NewAssignment {
        device: monitor.id,
        patient,
        start: at(start),
        end: end.map(at),
    };
    let first = store
        .create_assignment(assign(ada.id, 0, Some(100)), Vec::new())
        .await
        .expect("first assignment");
    assert!(
        matches!(
            store
                .create_assignment(assign(bob.id, 50, None), Vec::new())
                .await,
            Err(Error::Conflict(_))
        ),
        "overlapping assignments of one device must conflict"
    );
    let second = store
        .create_assignment(assign(bob.id, 100, None), Vec::new())
        .await
        .expect("touching interval is fine");
    assert!(matches!(
        store
            .create_assignment(assign(ada.id, 500, Some(600)), Vec::new())
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_assignment(assign(ada.id, 10, Some(10)), Vec::new())
            .await,
        Err(Error::Invalid(_))
    ));
    let missing = NewAssignment {
        device: DeviceId(999),
        patient: ada.id,
        start: at(0),
        end: None,
    };
    assert!(matches!(
        store.create_assignment(missing, Vec::new()).await,
        Err(Error::NotFound(_))
    ));
    let missing = NewAssignment {
        device: monitor.id,
        patient: PatientId(999),
        start: at(1000),
        end: None,
    };
    assert!(matches!(
        store.create_assignment(missing, Vec::new()).await,
        Err(Error::NotFound(_))
    ));

    assert!(
        matches!(
            store.end_assignment(first.id, at(200), Vec::new()).await,
            Err(Error::Conflict(_))
        ),
        "already ended"
    );
    assert!(
        matches!(
            store.end_assignment(second.id, at(100), Vec::new()).await,
            Err(Error::Conflict(_))
        ),
        "end after start"
    );
    let ended = store
        .end_assignment(second.id, at(300), Vec::new())
        .await
        .expect("end");
    assert_eq!(ended.details.end, Some(at(300)));
    assert!(matches!(
        store
            .end_assignment(AssignmentId(999), at(300), Vec::new())
            .await,
        Err(Error::NotFound(_))
    ));
    store
        .create_assignment(assign(ada.id, 300, None), Vec::new())
        .await
        .expect("after the end, the device is free");
    store.close().await.expect("close");

    let reopened = backend.open().await;
    let assignments = reopened.assignments().await.expect("list");
    assert_eq!(assignments.len(), 3);
    assert_eq!(
        assignments[1], ended,
        "assignment changes survive reopening"
    );
    reopened.close().await.expect("close");
}

async fn ingest_range_and_reopen(backend: &dyn Backend) {
    let store = backend.open().await;
    let monitor = store
        .create_device(device("SN-1"), Vec::new())
        .await
        .expect("device")
        .id;
    let mut measurements = Vec::new();
    for second in 0..3000 {
        measurements.push(measurement(
            monitor,
            VitalSign::HeartRate,
            second,
            60.0 + (second % 40) as f64,
        ));
        if second % 2 == 0 {
            measurements.push(measurement(
                monitor,
                VitalSign::Spo2,
                second,
                90.0 + (second % 10) as f64,
            ));
        }
    }
    for batch in measurements.chunks(700) {
        let outcomes = ingest(store.as_ref(), batch.to_vec()).await;
        assert!(
            outcomes
                .iter()
                .all(|outcome| *outcome == AppendOutcome::Accepted),
            "new points are accepted"
        );
    }
    let heart = all_points(store.as_ref(), monitor, VitalSign::HeartRate).await;
    assert_eq!(heart.len(), 3000, "every accepted point is visible");
    assert!(
        heart.windows(2).all(|pair| pair[0].time < pair[1].time),
        "points come in time order"
    );
    assert_eq!(
        heart[41],
        Point {
            time: at(41),
            value: 61.0
        }
    );
    let window = store
        .range(monitor, VitalSign::HeartRate, at(100), at(200))
        .await
        .expect("range");
    assert_eq!(window.len(), 100, "range is [from, to)");
    assert_eq!((window[0].time, window[99].time), (at(100), at(199)));
    assert!(
        store
            .range(monitor, VitalSign::BodyTemperature, at(0), at(5000))
            .await
            .expect("range")
            .is_empty()
    );
    assert!(
        store
            .range(DeviceId(42), VitalSign::HeartRate, at(0), at(5000))
            .await
            .expect("range")
            .is_empty()
    );
    store.close().await.expect("close");

    let reopened = backend.open().await;
    assert_eq!(
        all_points(reopened.as_ref(), monitor, VitalSign::HeartRate).await,
        heart,
        "points survive reopening"
    );
    assert_eq!(
        all_points(reopened.as_ref(), monitor, VitalSign::Spo2)
            .await
            .len(),
        1500
    );
    reopened.close().await.expect("close");
}

async fn duplicates_are_recognised(backend: &dyn Backend) {
    let store = backend.open().await;
    let monitor = store
        .create_device(device("SN-1"), Vec::new())
        .await
        .expect("device")
        .id;
    let other = store
        .create_device(device("SN-2"), Vec::new())
        .await
        .expect("device")
        .id;
    let mut with_id = measurement(monitor, VitalSign::HeartRate, 10, 70.0);
    with_id.external_id = Some("reading-1".into());
    let outcomes = ingest(
        store.as_ref(),
        vec![
            with_id.clone(),
            measurement(monitor, VitalSign::HeartRate, 10, 71.0),
            measurement(monitor, VitalSign::Spo2, 10, 97.0),
            measurement(other, VitalSign::HeartRate, 10, 80.0),
        ],
    )
    .await;
    use AppendOutcome::{Accepted, Duplicate};
    assert_eq!(
        outcomes,
        vec![Accepted, Duplicate, Accepted, Accepted],
        "same device, vital and time is a duplicate"
    );

    let mut same_id_other_time = measurement(monitor, VitalSign::HeartRate, 11, 72.0);
    same_id_other_time.external_id = Some("reading-1".into());
    let mut same_id_other_device = measurement(other, VitalSign::HeartRate, 11, 72.0);
    same_id_other_device.external_id = Some("reading-1".into());
    let outcomes = ingest(
        store.as_ref(),
        vec![
            with_id.clone(),
            same_id_other_time,
            same_id_other_device,
            measurement(monitor, VitalSign::HeartRate, 9, 1.0),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![Duplicate, Duplicate, Accepted, Accepted],
        "ids are per device"
    );
    assert_eq!(
        all_points(store.as_ref(), monitor, VitalSign::HeartRate)
            .await
            .len(),
        2
    );
    assert_eq!(
        all_points(store.as_ref(), monitor, VitalSign::HeartRate).await[1].value,
        70.0,
        "first write wins"
    );
    store.close().await.expect("close");

    let reopened = backend.open().await;
    let outcomes = ingest(
        reopened.as_ref(),
        vec![with_id, measurement(monitor, VitalSign::HeartRate, 9, 5.0)],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![Duplicate, Duplicate],
        "duplicates are recognised after reopening"
    );
    let stats = reopened.stats();
    assert_eq!(
        (stats.accepted, stats.duplicates),
        (0, 2),
        "stats count this session's outcomes"
    );
    reopened.close().await.expect("close");
}

/// A permutation that is deterministic without a random number generator.
fn shuffled(count: i64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..count).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for index in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(index, (state % (index as u64 + 1)) as usize);
    }
    order
}

async fn out_of_order_and_volume(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut devices = Vec::new();
    for index in 0..8 {
        devices.push(
            store
                .create_device(device(&format!("SN-{index}")), Vec::new())
                .await
                .expect("device")
                .id,
        );
    }
    // Mostly in order, interleaved across series, with a late tail shuffled in.
    let late: Vec<i64> = shuffled(400);
    let mut batch = Vec::new();
    for second in 400..5000 {
        for device in &devices {
            batch.push(measurement(
                *device,
                VitalSign::HeartRate,
                second,
                second as f64,
            ));
        }
        if second % 500 == 0 {
            let start = (second / 500 - 1) as usize * 40;
            for late_second in &late[start..start + 40] {
                for device in &devices {
                    batch.push(measurement(
                        *device,
                        VitalSign::HeartRate,
                        *late_second,
                        *late_second as f64,
                    ));
                }
            }
        }
        if batch.len() >= 5000 {
            let outcomes = ingest(store.as_ref(), std::mem::take(&mut batch)).await;
            assert!(
                outcomes
                    .iter()
                    .all(|outcome| *outcome == AppendOutcome::Accepted)
            );
        }
    }
    for late_second in &late[360..] {
        for device in &devices {
            batch.push(measurement(
                *device,
                VitalSign::HeartRate,
                *late_second,
                *late_second as f64,
            ));
        }
    }
    ingest(store.as_ref(), batch).await;
    let replay: Vec<Measurement> = late
        .iter()
        .map(|second| measurement(devices[3], VitalSign::HeartRate, *second, 0.0))
        .collect();
    assert!(
        ingest(store.as_ref(), replay)
            .await
            .iter()
            .all(|outcome| *outcome == AppendOutcome::Duplicate),
        "late points already stored are duplicates"
    );
    for device in &devices {
        let points = all_points(store.as_ref(), *device, VitalSign::HeartRate).await;
        let times: Vec<Timestamp> = points.iter().map(|point| point.time).collect();
        let expected: Vec<Timestamp> = (0..5000).map(at).collect();
        assert_eq!(
            times, expected,
            "every point once, in order, whatever the arrival order"
        );
        assert!(
            points
                .iter()
                .all(|point| point.value == ((point.time.micros() - T0) / SECOND) as f64)
        );
    }
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        all_points(reopened.as_ref(), devices[7], VitalSign::HeartRate)
            .await
            .len(),
        5000
    );
    reopened.close().await.expect("close");
}

async fn aggregates_match_points(backend: &dyn Backend) {
    let store = backend.open().await;
    let monitor = store
        .create_device(device("SN-1"), Vec::new())
        .await
        .expect("device")
        .id;
    let values: Vec<Measurement> = (0..1000)
        .map(|second| {
            measurement(
                monitor,
                VitalSign::RespiratoryRate,
                second * 3,
                ((second * 7) % 23) as f64,
            )
        })
        .collect();
    ingest(store.as_ref(), values).await;
    let bucket = 60 * SECOND;
    let buckets = store
        .aggregate(
            monitor,
            VitalSign::RespiratoryRate,
            at(30),
            at(2000),
            bucket,
        )
        .await
        .expect("aggregate");
    let points = store
        .range(monitor, VitalSign::RespiratoryRate, at(30), at(2000))
        .await
        .expect("range");
    let mut expected: Vec<(i64, Vec<f64>)> = Vec::new();
    for point in points {
        let start = point.time.micros().div_euclid(bucket) * bucket;
        match expected.last_mut() {
            Some((last, values)) if *last == start => values.push(point.value),
            _ => expected.push((start, vec![point.value])),
        }
    }
    assert_eq!(buckets.len(), expected.len());
    for (bucket, (start, values)) in buckets.iter().zip(expected) {
        assert_eq!(
            bucket.start.micros(),
            start,
            "buckets align to multiples of their width"
        );
        assert_eq!(bucket.count, values.len() as u64);
        assert_eq!(
            bucket.min,
            values.iter().copied().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            bucket.max,
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((bucket.mean - mean).abs() < 1e-9);
    }
    assert!(matches!(
        store
            .aggregate(monitor, VitalSign::RespiratoryRate, at(0), at(10), 0)
            .await,
        Err(Error::Invalid(_))
    ));
    store.close().await.expect("close");
}

async fn earliest(store: &dyn Store, device: DeviceId, vital: VitalSign) -> Option<Timestamp> {
    store.earliest(device, vital).await.expect("earliest")
}

async fn latest_and_earliest_per_vital(backend: &dyn Backend) {
    let store = backend.open().await;
    let monitor = store
        .create_device(device("SN-1"), Vec::new())
        .await
        .expect("device")
        .id;
    assert!(store.latest(monitor).await.expect("latest").is_empty());
    ingest(
        store.as_ref(),
        vec![
            measurement(monitor, VitalSign::Spo2, 20, 96.0),
            measurement(monitor, VitalSign::HeartRate, 30, 80.0),
            measurement(monitor, VitalSign::HeartRate, 10, 70.0),
        ],
    )
    .await;
    let expected = vec![
        (
            VitalSign::HeartRate,
            Point {
                time: at(30),
                value: 80.0,
            },
        ),
        (
            VitalSign::Spo2,
            Point {
                time: at(20),
                value: 96.0,
            },
        ),
    ];
    assert_eq!(store.latest(monitor).await.expect("latest"), expected);
    assert_eq!(
        earliest(store.as_ref(), monitor, VitalSign::HeartRate).await,
        Some(at(10))
    );
    assert_eq!(
        earliest(store.as_ref(), monitor, VitalSign::Spo2).await,
        Some(at(20))
    );
    assert_eq!(
        earliest(store.as_ref(), monitor, VitalSign::RespiratoryRate).await,
        None
    );
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        reopened.latest(monitor).await.expect("latest"),
        expected,
        "latest survives reopening"
    );
    // Older data arriving later moves the start back, wherever the earlier points now live.
    ingest(
        reopened.as_ref(),
        vec![measurement(monitor, VitalSign::HeartRate, 5, 66.0)],
    )
    .await;
    assert_eq!(
        earliest(reopened.as_ref(), monitor, VitalSign::HeartRate).await,
        Some(at(5))
    );
    assert_eq!(
        earliest(reopened.as_ref(), monitor, VitalSign::Spo2).await,
        Some(at(20))
    );
    reopened.close().await.expect("close");
}

async fn dead_letters_are_kept(backend: &dyn Backend) {
    let store = backend.open().await;
    let letter = |index: usize| DeadLetter {
        received: at(index as i64),
        source: "http".into(),
        reason: RejectionReason::Implausible,
        message: format!("spo2 of {index} is outside the possible range"),
        device: Some("SN-9".into()),
        payload: format!("{{\"value\":{index}}}").into_bytes(),
    };
    store
        .ingest(IngestBatch {
            measurements: Vec::new(),
            dead_letters: (0..5).map(letter).collect(),
            receipt: None,
            audit: Vec::new(),
        })
        .await
        .expect("dead letters");
    let first_page = store.dead_letters(0, 3).await.expect("list");
    assert_eq!(first_page.len(), 3);
    let rest = store
        .dead_letters(first_page[2].id, 10)
        .await
        .expect("list");
    assert_eq!(
        rest.len(),
        2,
        "paging by id continues where the last page stopped"
    );
    assert_eq!(rest[1].letter, letter(4));
    assert_eq!(store.stats().dead_letters, 5);
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        reopened.dead_letters(0, 100).await.expect("list").len(),
        5,
        "dead letters survive reopening"
    );
    reopened.close().await.expect("close");
}

fn alarm_record(alarm: &str, patient: i64, seconds: i64, state: &str) -> AlarmRecord {
    AlarmRecord {
        seq: 0,
        alarm: alarm.into(),
        patient: PatientId(patient),
        time: at(seconds),
        rule: "limit.spo2.low".into(),
        transition: if state == "resolved" {
            "resolved"
        } else {
            "raised"
        }
        .into(),
        priority: "high".into(),
        state: state.into(),
        body: format!("{{\"alarm\":\"{alarm}\"}}"),
    }
}

async fn clinical_records(backend: &dyn Backend) {
    let store = backend.open().await;
    let entry = |patient: i64, seconds: i64, kind: &str| ClinicalEntry {
        id: 0,
        patient: PatientId(patient),
        time: at(seconds),
        kind: kind.into(),
        author: "nurse.jones".into(),
        body: "{\"level\":\"A\"}".into(),
    };
    let late = store
        .add_entry(entry(1, 20, "consciousness"), Vec::new())
        .await
        .expect("entry");
    let early = store
        .add_entry(entry(1, 10, "oxygen"), Vec::new())
        .await
        .expect("entry");
    store
        .add_entry(entry(2, 15, "acknowledge"), Vec::new())
        .await
        .expect("entry");
    assert!(
        late.id > 0 && early.id > late.id,
        "ids are assigned in insertion order"
    );
    let all = store.entries(None, at(0), at(100)).await.expect("entries");
    let times: Vec<i64> = all
        .iter()
        .map(|entry| (entry.time.micros() - T0) / SECOND)
        .collect();
    assert_eq!(times, [10, 15, 20], "entries come back in time order");
    let by_kind = store
        .entries_of_kinds(&["acknowledge", "consciousness"], at(0), at(100))
        .await
        .expect("entries");
    let kinds: Vec<&str> = by_kind.iter().map(|entry| entry.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["acknowledge", "consciousness"],
        "filtered by kind, time order"
    );
    let one = store
        .entries(Some(PatientId(1)), at(0), at(20))
        .await
        .expect("entries");
    assert_eq!(
        one,
        vec![early.clone()],
        "patient filter and half-open range"
    );

    let score = |seconds: i64, total: i64| ScoreRecord {
        patient: PatientId(1),
        time: at(seconds),
        table: "news2".into(),
        total,
        band: "medium".into(),
        complete: seconds % 2 == 0,
        body: format!("{{\"total\":{total}}}"),
    };
    let appended = store
        .append_outputs(
            vec![score(1, 2), score(2, 5), score(3, 7)],
            vec![
                alarm_record("1-1", 1, 2, "active"),
                alarm_record("1-2", 1, 3, "active"),
                alarm_record("2-1", 2, 3, "active"),
            ],
        )
        .await
        .expect("append");
    assert!(
        appended.windows(2).all(|pair| pair[0].seq < pair[1].seq),
        "seq increases"
    );
    store
        .append_outputs(Vec::new(), vec![alarm_record("1-1", 1, 9, "resolved")])
        .await
        .expect("append");
    let newest_two = store
        .scores(PatientId(1), "news2", at(0), at(10), 2)
        .await
        .expect("scores");
    assert_eq!(
        newest_two,
        vec![score(2, 5), score(3, 7)],
        "the newest, oldest first"
    );
    assert!(
        store
            .scores(PatientId(1), "qsofa", at(0), at(10), 9)
            .await
            .expect("scores")
            .is_empty()
    );

    let query = AlarmQuery {
        patient: Some(PatientId(1)),
        after: 0,
        from: at(0),
        to: at(100),
        limit: 100,
    };
    let patient_log = store.alarm_records(query).await.expect("alarms");
    assert_eq!(patient_log.len(), 3);
    let resumed = store
        .alarm_records(AlarmQuery {
            after: patient_log[0].seq,
            ..query
        })
        .await
        .expect("alarms");
    assert_eq!(resumed.len(), 2, "resume after a seq");
    let open: Vec<String> = store
        .open_alarms()
        .await
        .expect("open")
        .into_iter()
        .map(|record| record.alarm)
        .collect();
    assert_eq!(open, ["1-2", "2-1"], "a resolved alarm is not open");

    let filtered = |patient: i64, rule: &str, ended: i64| FilteredRecord {
        patient: PatientId(patient),
        rule: rule.into(),
        onset: at(ended - 5),
        ended: at(ended),
    };
    store
        .append_filtered(vec![
            filtered(1, "limit.spo2.low", 10),
            filtered(1, "limit.spo2.low", 20),
            filtered(2, "limit.heart_rate.high", 30),
            filtered(1, "limit.spo2.low", 90),
        ])
        .await
        .expect("filtered");
    assert_eq!(
        store.filtered_counts(at(0), at(50)).await.expect("counts"),
        vec![
            (PatientId(1), "limit.spo2.low".to_owned(), 2),
            (PatientId(2), "limit.heart_rate.high".to_owned(), 1)
        ],
        "counted per patient and rule, by end time in the range"
    );
    let delivery = DeliveryRecord {
        id: 0,
        endpoint: "pager".into(),
        event: "1-1/1".into(),
        attempt: 1,
        time: at(4),
        status: Some(503),
        error: Some("service unavailable".into()),
        delivered: false,
    };
    let stored = store
        .record_delivery(delivery.clone())
        .await
        .expect("delivery");
    assert!(stored.id > 0);
    store.close().await.expect("close");

    let reopened = backend.open().await;
    assert_eq!(
        reopened
            .entries(None, at(0), at(100))
            .await
            .expect("entries")
            .len(),
        3
    );
    assert_eq!(
        reopened.deliveries(0, 10).await.expect("deliveries"),
        vec![stored]
    );
    assert_eq!(
        reopened
            .alarm_records(AlarmQuery {
                patient: None,
                ..query
            })
            .await
            .expect("alarms")
            .len(),
        4
    );
    reopened.close().await.expect("close");
}

/// A receipt is stored in the same commit as the content it answers, the first one stored for a
/// key wins, and it survives a reopen.
async fn receipts_are_kept_with_their_content(backend: &dyn Backend) {
    let store = backend.open().await;
    let device = store
        .create_device(device("SN-R1"), Vec::new())
        .await
        .expect("device")
        .id;
    let receipt = |response: &str| Receipt {
        source: "mllp".into(),
        key: "MON|0012|ICU|MSG-1".into(),
        received: at(5),
        response: response.as_bytes().to_vec(),
    };
    assert_eq!(
        store
            .receipt("mllp", "MON|0012|ICU|MSG-1")
            .await
            .expect("read"),
        None
    );
    store
        .ingest(IngestBatch {
            measurements: vec![measurement(device, VitalSign::HeartRate, 5, 72.0)],
            dead_letters: Vec::new(),
            receipt: Some(receipt("first answer")),
            audit: Vec::new(),
        })
        .await
        .expect("ingest with receipt");
    let repeated = store
        .ingest(IngestBatch {
            measurements: vec![measurement(device, VitalSign::HeartRate, 6, 73.0)],
            dead_letters: vec![DeadLetter {
                received: at(6),
                source: "mllp".into(),
                reason: RejectionReason::UnknownCode,
                message: "a repeat's refused item".into(),
                device: Some("SN-R1".into()),
                payload: b"OBX|9".to_vec(),
            }],
            receipt: Some(receipt("second answer")),
            audit: Vec::new(),
        })
        .await
        .map(|_| ())
        .expect_err("a repeated message is not stored again");
    match repeated {
        Error::AlreadyAnswered(earlier) => assert_eq!(*earlier, receipt("first answer")),
        other => panic!("expected the earlier answer, got {other}"),
    }
    assert!(
        store.dead_letters(0, 10).await.expect("letters").is_empty(),
        "nothing of a repeated message is stored"
    );
    // Two copies in flight at once: the group commit stores one and answers the other with it.
    let copy = |response: &str| IngestBatch {
        measurements: vec![measurement(device, VitalSign::HeartRate, 7, 74.0)],
        receipt: Some(Receipt {
            key: "MON|0012|ICU|MSG-3".into(),
            ..receipt(response)
        }),
        ..IngestBatch::default()
    };
    let (left, right) = tokio::join!(store.ingest(copy("left")), store.ingest(copy("right")));
    let answers: Vec<_> = [left, right]
        .into_iter()
        .map(|result| match result {
            Ok(_) => None,
            Err(Error::AlreadyAnswered(earlier)) => Some(earlier.response),
            Err(other) => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        answers.iter().filter(|answer| answer.is_none()).count(),
        1,
        "one copy stored"
    );
    let stored_response = store
        .receipt("mllp", "MON|0012|ICU|MSG-3")
        .await
        .expect("read")
        .expect("stored")
        .response;
    assert!(
        answers.contains(&Some(stored_response)),
        "the other got the stored answer"
    );
    let found = store
        .receipt("mllp", "MON|0012|ICU|MSG-1")
        .await
        .expect("read");
    assert_eq!(
        found,
        Some(receipt("first answer")),
        "the first receipt of a key is kept"
    );
    assert_eq!(
        store
            .receipt("http", "MON|0012|ICU|MSG-1")
            .await
            .expect("read"),
        None,
        "receipts are per source"
    );
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        reopened
            .receipt("mllp", "MON|0012|ICU|MSG-1")
            .await
            .expect("read"),
        Some(receipt("first answer")),
        "a receipt is durable"
    );
    let values: Vec<f64> = all_points(reopened.as_ref(), device, VitalSign::HeartRate)
        .await
        .into_iter()
        .map(|point| point.value)
        .collect();
    assert_eq!(
        values,
        [72.0, 74.0],
        "the repeat's value (73) was not stored"
    );
    reopened.close().await.expect("close");
}

/// Credentials keep only the hash, can be revoked once, and belong to existing devices.
async fn device_credentials(backend: &dyn Backend) {
    let store = backend.open().await;
    let device = store
        .create_device(device("SN-C1"), Vec::new())
        .await
        .expect("device")
        .id;
    assert!(matches!(
        store
            .add_device_credential(DeviceId(9_999), [1; 32], at(0), Vec::new())
            .await,
        Err(Error::NotFound(_))
    ));
    let first = store
        .add_device_credential(device, [7; 32], at(1), Vec::new())
        .await
        .expect("credential");
    let second = store
        .add_device_credential(device, [8; 32], at(2), Vec::new())
        .await
        .expect("rotation");
    assert_ne!(first.id, second.id);
    let revoked = store
        .revoke_device_credential(device, first.id, at(3), Vec::new())
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked, Some(at(3)));
    assert!(matches!(
        store
            .revoke_device_credential(device, first.id, at(4), Vec::new())
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store
            .revoke_device_credential(DeviceId(device.0 + 1), second.id, at(4), Vec::new())
            .await,
        Err(Error::NotFound(_))
    ));
    store.close().await.expect("close");
    let reopened = backend.open().await;
    let all = reopened.device_credentials().await.expect("list");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].secret_sha256, [7; 32]);
    assert_eq!(all[0].revoked, Some(at(3)));
    assert_eq!(all[1].secret_sha256, [8; 32]);
    assert_eq!(all[1].revoked, None);
    assert_eq!(all[1].created, at(2));
    reopened.close().await.expect("close");
}

async fn fhir_subscriptions(backend: &dyn Backend) {
    let store = backend.open().await;
    assert!(store.subscriptions().await.expect("list").is_empty());
    let first = store
        .create_subscription(
            r#"{"resourceType":"Subscription"}"#.into(),
            "requested".into(),
            Vec::new(),
        )
        .await
        .expect("create");
    let second = store
        .create_subscription("{}".into(), "requested".into(), Vec::new())
        .await
        .expect("create");
    assert_ne!(first, second);
    store
        .update_subscription(
            first,
            r#"{"changed":true}"#.into(),
            "active".into(),
            42,
            Vec::new(),
        )
        .await
        .expect("update");
    assert!(matches!(
        store
            .update_subscription(second + 100, "{}".into(), "active".into(), 0, Vec::new())
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .delete_subscription(second, Vec::new())
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_subscription(second, Vec::new())
            .await
            .expect("delete again")
    );
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        reopened.subscriptions().await.expect("list"),
        vec![crate::StoredSubscription {
            id: first,
            body: r#"{"changed":true}"#.into(),
            status: "active".into(),
            events: 42,
        }],
        "kept across reopening"
    );
    reopened.close().await.expect("close");
}

fn write(change: RegistryChange, document: Option<&str>) -> RegistryWrite {
    RegistryWrite {
        change,
        document: document.map(str::to_owned),
    }
}

async fn registry_transactions(backend: &dyn Backend) {
    let store = backend.open().await;
    let existing = store
        .create_patient(patient("T-0", "A", "1"), Vec::new())
        .await
        .expect("create");
    // All or nothing: a conflict in the third write leaves no trace of the first two.
    let failed = store
        .apply_registry(vec![
            write(
                RegistryChange::CreatePatient(patient("T-1", "A", "2")),
                Some("p1"),
            ),
            write(RegistryChange::CreateDevice(device("T-D1")), Some("d1")),
            write(
                RegistryChange::CreatePatient(patient("T-0", "A", "3")),
                None,
            ),
        ])
        .await;
    assert!(
        matches!(failed, Err(Error::Conflict(_))),
        "a duplicate identifier is a conflict: {failed:?}"
    );
    assert_eq!(
        store.patients(None).await.expect("list"),
        vec![existing.clone()]
    );
    assert!(store.devices().await.expect("list").is_empty());
    assert!(
        store
            .registry_documents()
            .await
            .expect("documents")
            .is_empty()
    );
    let missing = store
        .apply_registry(vec![
            write(RegistryChange::CreateDevice(device("T-D1")), Some("d1")),
            write(
                RegistryChange::UpdateDevice(DeviceId(9_999), device("T-D2")),
                None,
            ),
        ])
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    assert!(store.devices().await.expect("list").is_empty());

    // Applied in order, with their documents; an update replaces or removes a document.
    let written = store
        .apply_registry(vec![
            write(
                RegistryChange::CreatePatient(patient("T-1", "", "")),
                Some("p1"),
            ),
            write(RegistryChange::CreateDevice(device("T-D1")), Some("d1")),
            write(
                RegistryChange::UpdatePatient(existing.id, patient("T-0", "B", "9")),
                Some("p0"),
            ),
        ])
        .await
        .expect("apply");
    let [
        Registered::Patient(created),
        Registered::Device(registered),
        Registered::Patient(updated),
    ] = written.as_slice()
    else {
        panic!("one record per write, in order: {written:?}");
    };
    assert_eq!(
        created.details,
        patient("T-1", "", ""),
        "not placed on a ward"
    );
    assert_eq!(updated.id, existing.id);
    assert_eq!(
        store
            .patient(existing.id)
            .await
            .expect("read")
            .map(|p| p.details),
        Some(patient("T-0", "B", "9"))
    );
    store
        .apply_registry(vec![write(
            RegistryChange::UpdateDevice(registered.id, device("T-D1")),
            Some("d1 again"),
        )])
        .await
        .expect("apply");
    store
        .apply_registry(vec![write(
            RegistryChange::UpdatePatient(created.id, patient("T-1", "", "")),
            None,
        )])
        .await
        .expect("apply");
    let (created, registered) = (created.id, registered.id);
    store.close().await.expect("close");
    let reopened = backend.open().await;
    let mut documents = reopened.registry_documents().await.expect("documents");
    documents.sort_by_key(|document| format!("{:?}", document.owner));
    let mut expected = vec![
        RegistryDocument {
            owner: DocumentOwner::Device(registered),
            body: "d1 again".into(),
        },
        RegistryDocument {
            owner: DocumentOwner::Patient(existing.id),
            body: "p0".into(),
        },
    ];
    expected.sort_by_key(|document| format!("{:?}", document.owner));
    assert_eq!(
        documents, expected,
        "kept across reopening; {created:?} removed"
    );
    reopened.close().await.expect("close");
}

async fn accounts_and_api_tokens(backend: &dyn Backend) {
    let store = backend.open().await;
    let nurse = crate::NewUser {
        name: "nurse.ann".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: "nurse".into(),
        wards: vec!["ICU".into(), "Ward 7, east".into()],
        patient: None,
        organization: None,
        created: at(0),
    };
    let created = store
        .create_user(nurse.clone(), Vec::new())
        .await
        .expect("create");
    assert_eq!(created.details, nurse);
    assert!(!created.disabled && created.failed_logins == 0 && created.locked_until.is_none());
    assert!(matches!(
        store.create_user(nurse.clone(), Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    let failed = store
        .record_login(created.id, false, None)
        .await
        .expect("failure");
    assert_eq!(failed.failed_logins, 1);
    let locked = store
        .record_login(created.id, false, Some(at(900)))
        .await
        .expect("failure");
    assert_eq!(
        (locked.failed_logins, locked.locked_until),
        (2, Some(at(900)))
    );
    let cleared = store
        .record_login(created.id, true, None)
        .await
        .expect("success");
    assert_eq!((cleared.failed_logins, cleared.locked_until), (0, None));
    let changed = store
        .update_user(
            created.id,
            crate::UserChange {
                password_hash: None,
                role: "clinician".into(),
                wards: Vec::new(),
                patient: None,
                organization: Some(galen_model::Recipient::Organization("acme-lab".into())),
                disabled: true,
            },
            Vec::new(),
        )
        .await
        .expect("update");
    assert_eq!(changed.details.password_hash, nurse.password_hash, "kept");
    assert_eq!(
        (changed.details.role.as_str(), changed.disabled),
        ("clinician", true)
    );
    assert!(changed.details.wards.is_empty());
    assert_eq!(
        changed.details.organization,
        Some(galen_model::Recipient::Organization("acme-lab".into()))
    );
    assert!(matches!(
        store
            .update_user(
                9_999,
                crate::UserChange {
                    password_hash: None,
                    role: "nurse".into(),
                    wards: Vec::new(),
                    patient: None,
                    organization: None,
                    disabled: false,
                },
                Vec::new()
            )
            .await,
        Err(Error::NotFound(_))
    ));

    let token = store
        .create_api_token(
            created.id,
            "EHR interface".into(),
            [7; 32],
            at(1),
            Some(at(86_400)),
            Vec::new(),
        )
        .await
        .expect("token");
    assert_eq!(
        (token.secret_sha256, token.expires, token.revoked),
        ([7; 32], Some(at(86_400)), None)
    );
    assert!(matches!(
        store
            .create_api_token(9_999, "x".into(), [1; 32], at(1), None, Vec::new())
            .await,
        Err(Error::NotFound(_))
    ));
    let revoked = store
        .revoke_api_token(token.id, at(5), Vec::new())
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked, Some(at(5)));
    assert!(matches!(
        store.revoke_api_token(token.id, at(6), Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    store.close().await.expect("close");
    let reopened = backend.open().await;
    let users = reopened.users().await.expect("users");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].details.wards, Vec::<String>::new());
    assert_eq!(
        users[0]
            .details
            .organization
            .as_ref()
            .map(ToString::to_string),
        Some("Organization/acme-lab".to_owned()),
        "the organisation is kept"
    );
    assert_eq!(reopened.api_tokens().await.expect("tokens"), vec![revoked]);
    reopened.close().await.expect("close");
}

/// Consents: created with their id and document, updated, listed per patient, refused for an
/// unknown patient or an invalid record, written atomically with their audit records, and
/// durable across reopening.
async fn consents(backend: &dyn Backend) {
    use crate::{ConsentAudit, StoredConsent};
    use galen_model::{
        ConsentId, ConsentProvision, ConsentPurpose, ConsentStatus, NewConsent, Recipient,
    };
    let store = backend.open().await;
    let first = store
        .create_patient(patient("C-1", "ICU", "1"), Vec::new())
        .await
        .expect("patient");
    let second = store
        .create_patient(patient("C-2", "ICU", "2"), Vec::new())
        .await
        .expect("patient");
    let consent = |patient: PatientId, provision: ConsentProvision| NewConsent {
        patient,
        status: ConsentStatus::Active,
        purpose: ConsentPurpose::Sharing,
        provision,
        recipients: vec![
            Recipient::Organization("acme-lab".into()),
            Recipient::Identifier {
                system: "urn:oid:1.2.3".into(),
                value: "care|giver".into(),
            },
        ],
        start: Some(at(0)),
        end: Some(at(3_600)),
        dated: at(-60),
        recorded: at(1),
        recorded_by: "nurse.ann".into(),
    };
    // Each write's audit record names the consent's id, and commits with it.
    let audit = |action: crate::AuditAction| {
        ConsentAudit::new(move |written: &galen_model::Consent| {
            vec![crate::AuditRecord {
                resource: format!("Consent/{}", written.id.0),
                ..audit_record(
                    1,
                    "nurse.ann",
                    action,
                    Some(written.details.patient.0),
                    crate::AuditOutcome::Success,
                )
            }]
        })
    };
    let created = store
        .create_consent(
            consent(first.id, ConsentProvision::Deny),
            "{\"resourceType\":\"Consent\"}".into(),
            audit(crate::AuditAction::Create),
        )
        .await
        .expect("create");
    assert_eq!(
        created.consent.details,
        consent(first.id, ConsentProvision::Deny)
    );
    assert_eq!(created.document, "{\"resourceType\":\"Consent\"}");
    let trail = whole_chain(store.as_ref()).await;
    assert_eq!(trail.len(), 1, "the create's record");
    assert_eq!(
        trail[0].record.resource,
        format!("Consent/{}", created.consent.id.0)
    );
    let other = store
        .create_consent(
            consent(second.id, ConsentProvision::Permit),
            "{}".into(),
            ConsentAudit::none(),
        )
        .await
        .expect("create");
    assert_ne!(other.consent.id, created.consent.id);

    // Refusals store nothing, not even the audit record.
    assert!(matches!(
        store
            .create_consent(
                consent(PatientId(9_999), ConsentProvision::Deny),
                "{}".into(),
                audit(crate::AuditAction::Create),
            )
            .await,
        Err(Error::NotFound(_))
    ));
    let mut empty_period = consent(first.id, ConsentProvision::Deny);
    empty_period.end = empty_period.start;
    assert!(matches!(
        store
            .create_consent(empty_period, "{}".into(), ConsentAudit::none())
            .await,
        Err(Error::Invalid(_))
    ));
    let bad_audit = ConsentAudit::new(|_: &galen_model::Consent| {
        vec![audit_record(
            1,
            "",
            crate::AuditAction::Create,
            None,
            crate::AuditOutcome::Success,
        )]
    });
    assert!(matches!(
        store
            .create_consent(
                consent(first.id, ConsentProvision::Permit),
                "{}".into(),
                bad_audit
            )
            .await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        store.consents(None).await.expect("all").len(),
        2,
        "a refused write stores no consent"
    );
    assert_eq!(whole_chain(store.as_ref()).await.len(), 1, "and no record");

    // Withdrawn: the same consent, inactive.
    let mut withdrawn = consent(first.id, ConsentProvision::Deny);
    withdrawn.status = ConsentStatus::Inactive;
    let updated = store
        .update_consent(
            created.consent.id,
            withdrawn.clone(),
            "{\"status\":\"inactive\"}".into(),
            audit(crate::AuditAction::Update),
        )
        .await
        .expect("update");
    assert_eq!(updated.consent.id, created.consent.id);
    assert_eq!(updated.consent.details, withdrawn);
    assert!(matches!(
        store
            .update_consent(
                ConsentId(9_999),
                withdrawn.clone(),
                "{}".into(),
                ConsentAudit::none()
            )
            .await,
        Err(Error::NotFound(_))
    ));
    store.close().await.expect("close");

    let reopened = backend.open().await;
    assert_eq!(
        reopened.consent(created.consent.id).await.expect("read"),
        Some(updated.clone())
    );
    assert_eq!(
        reopened.consent(ConsentId(9_999)).await.expect("read"),
        None
    );
    let of_first: Vec<StoredConsent> = reopened.consents(Some(first.id)).await.expect("list");
    assert_eq!(of_first, vec![updated.clone()]);
    assert_eq!(
        reopened.consents(None).await.expect("all"),
        vec![updated, other],
        "by id"
    );
    let trail = whole_chain(reopened.as_ref()).await;
    assert_eq!(
        trail
            .iter()
            .map(|stored| stored.record.action)
            .collect::<Vec<_>>(),
        [crate::AuditAction::Create, crate::AuditAction::Update]
    );
    assert!(crate::verify_chain(trail).is_ok());
    reopened.close().await.expect("close");
}

fn audit_record(
    seconds: i64,
    actor: &str,
    action: crate::AuditAction,
    patient: Option<i64>,
    outcome: crate::AuditOutcome,
) -> crate::AuditRecord {
    crate::AuditRecord {
        time: at(seconds),
        actor: actor.into(),
        role: "nurse".into(),
        action,
        resource: patient.map_or_else(|| "/api/v1/alarms".to_owned(), |id| format!("Patient/{id}")),
        patient: patient.map(PatientId),
        outcome,
        source: "127.0.0.1:40000".into(),
        detail: String::new(),
    }
}

async fn whole_chain(store: &dyn Store) -> Vec<crate::StoredAuditRecord> {
    store
        .audit(crate::AuditQuery::default())
        .await
        .expect("audit")
}

/// The audit trail: appended in order with consecutive seqs and a valid hash chain, serialised
/// under concurrency, filtered and paged by seq, written atomically with registry changes, and
/// durable across reopening.
async fn audit_trail(backend: &dyn Backend) {
    use crate::{
        AuditAction as Action, AuditOutcome as Outcome, AuditQuery, GENESIS_HASH, RegistryAudit,
        verify_chain,
    };
    let store = backend.open().await;
    assert_eq!(store.audit_head().await.expect("head"), None, "empty");
    assert!(whole_chain(store.as_ref()).await.is_empty());
    assert!(
        store
            .append_audit(Vec::new())
            .await
            .expect("nothing")
            .is_empty()
    );

    let first = vec![
        audit_record(0, "nurse.ann", Action::Read, Some(1), Outcome::Success),
        audit_record(1, "nurse.ann", Action::Search, None, Outcome::Success),
        audit_record(2, "dr.bob", Action::Update, Some(2), Outcome::Denied),
    ];
    let stored = store.append_audit(first.clone()).await.expect("append");
    assert_eq!(
        stored.iter().map(|record| record.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "seqs start at 1 and follow each other"
    );
    assert_eq!(stored[0].previous_hash, GENESIS_HASH);
    assert_eq!(stored[1].previous_hash, stored[0].hash);
    assert_eq!(
        stored
            .iter()
            .map(|record| record.record.clone())
            .collect::<Vec<_>>(),
        first,
        "records come back as given"
    );
    assert_eq!(
        store.audit_head().await.expect("head"),
        Some((3, stored[2].hash))
    );
    assert_eq!(
        whole_chain(store.as_ref()).await,
        stored,
        "what was returned is stored"
    );

    // An invalid record fails the whole append.
    let mut invalid = audit_record(3, "", Action::Read, None, Outcome::Success);
    invalid.actor.clear();
    assert!(matches!(
        store
            .append_audit(vec![
                audit_record(3, "x", Action::Read, None, Outcome::Success),
                invalid
            ])
            .await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        store.audit_head().await.expect("head").map(|head| head.0),
        Some(3),
        "nothing of a failed append is stored"
    );

    // Concurrent appenders never fork the chain.
    let appends = (0..8).map(|index| {
        let store = store.clone();
        async move {
            store
                .append_audit(vec![
                    audit_record(
                        10 + index,
                        "device:SN-1",
                        Action::Ingest,
                        Some(1),
                        Outcome::Success,
                    ),
                    audit_record(
                        10 + index,
                        "device:SN-1",
                        Action::Ingest,
                        None,
                        Outcome::Failed,
                    ),
                ])
                .await
                .expect("concurrent append")
        }
    });
    let batches = futures_join_all(appends).await;
    for batch in &batches {
        assert_eq!(
            batch[1].seq,
            batch[0].seq + 1,
            "one append's records are consecutive"
        );
    }
    let all = whole_chain(store.as_ref()).await;
    assert_eq!(all.len(), 19);
    let verified = verify_chain(all.clone()).expect("the chain verifies");
    assert_eq!(verified.records, 19);
    assert_eq!(verified.head, store.audit_head().await.expect("head"));

    // Filters and paging agree with the records' own matching.
    let queries = [
        AuditQuery {
            actor: Some("nurse.ann".into()),
            ..AuditQuery::default()
        },
        AuditQuery {
            patient: Some(PatientId(1)),
            ..AuditQuery::default()
        },
        AuditQuery {
            actions: vec![Action::Update, Action::Search],
            ..AuditQuery::default()
        },
        AuditQuery {
            outcomes: vec![Outcome::Failed],
            limit: 3,
            ..AuditQuery::default()
        },
        AuditQuery {
            from: at(1),
            to: at(12),
            after: 2,
            ..AuditQuery::default()
        },
        AuditQuery {
            newest_first: true,
            before: 18,
            limit: 4,
            ..AuditQuery::default()
        },
    ];
    for query in queries {
        let mut expected: Vec<_> = all
            .iter()
            .filter(|record| {
                query.matches(record) && record.seq > query.after && record.seq < query.before
            })
            .cloned()
            .collect();
        if query.newest_first {
            expected.reverse();
        }
        expected.truncate(query.limit);
        assert_eq!(
            store.audit(query.clone()).await.expect("query"),
            expected,
            "{query:?}"
        );
    }

    // With a registry transaction: both or neither.
    let existing = store
        .create_patient(patient("AU-1", "A", "1"), Vec::new())
        .await
        .expect("patient");
    let failed = store
        .apply_registry_audited(
            vec![
                write(
                    RegistryChange::CreatePatient(patient("AU-2", "A", "2")),
                    None,
                ),
                write(
                    RegistryChange::CreatePatient(patient("AU-1", "A", "3")),
                    None,
                ),
            ],
            RegistryAudit::records(vec![audit_record(
                20,
                "admin",
                Action::Create,
                None,
                Outcome::Success,
            )]),
        )
        .await;
    assert!(matches!(failed, Err(Error::Conflict(_))), "{failed:?}");
    assert_eq!(
        whole_chain(store.as_ref()).await.len(),
        19,
        "a failed registry transaction leaves no audit record"
    );
    let invalid_audit = store
        .apply_registry_audited(
            vec![write(
                RegistryChange::CreatePatient(patient("AU-3", "A", "4")),
                None,
            )],
            RegistryAudit::records(vec![audit_record(
                20,
                "",
                Action::Create,
                None,
                Outcome::Success,
            )]),
        )
        .await;
    assert!(
        matches!(invalid_audit, Err(Error::Invalid(_))),
        "{invalid_audit:?}"
    );
    assert_eq!(
        store.patients(None).await.expect("patients"),
        vec![existing],
        "an audit record that cannot be stored stops the change"
    );
    let written = store
        .apply_registry_audited(
            vec![write(
                RegistryChange::CreatePatient(patient("AU-2", "A", "2")),
                Some("{}"),
            )],
            RegistryAudit::new(|written| {
                written
                    .iter()
                    .filter_map(|registered| match registered {
                        Registered::Patient(created) => Some(audit_record(
                            21,
                            "admin",
                            Action::Create,
                            Some(created.id.0),
                            Outcome::Success,
                        )),
                        Registered::Device(_) => None,
                    })
                    .collect()
            }),
        )
        .await
        .expect("apply");
    let [Registered::Patient(created)] = written.as_slice() else {
        panic!("one patient: {written:?}");
    };
    let head = store.audit_head().await.expect("head").expect("a head");
    assert_eq!(head.0, 20);
    let last = store
        .audit(AuditQuery {
            after: 19,
            ..AuditQuery::default()
        })
        .await
        .expect("last");
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].record.patient, last[0].record.resource.clone()),
        (Some(created.id), format!("Patient/{}", created.id.0)),
        "the audit record names the id the transaction gave"
    );
    store.close().await.expect("close");

    let reopened = backend.open().await;
    assert_eq!(
        reopened.audit_head().await.expect("head"),
        Some(head),
        "the head survives reopening"
    );
    let appended = reopened
        .append_audit(vec![audit_record(
            30,
            "system",
            Action::ConfigChange,
            None,
            Outcome::Success,
        )])
        .await
        .expect("append after reopening");
    assert_eq!(appended[0].seq, 21);
    assert_eq!(appended[0].previous_hash, head.1, "the chain continues");
    let verified = verify_chain(whole_chain(reopened.as_ref()).await).expect("verifies");
    assert_eq!(verified.records, 21);
    reopened.close().await.expect("close");
}

/// Runs futures concurrently and collects their outputs in order (galen-store has no
/// futures-util).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// Every audited write stores its records in its own transaction: a write that succeeds stores
/// them, one that fails stores none, and a record that cannot be stored stops the write.
async fn writes_commit_their_audit_records(backend: &dyn Backend) {
    use crate::{AuditAction as Action, AuditOutcome as Outcome};
    let store = backend.open().await;
    let record = |seconds: i64, action: Action| {
        vec![audit_record(
            seconds,
            "admin",
            action,
            None,
            Outcome::Success,
        )]
    };
    let invalid = || vec![audit_record(0, "", Action::Create, None, Outcome::Success)];
    let chain_length =
        |store: Arc<dyn Store>| async move { whole_chain(store.as_ref()).await.len() };
    let ada = store
        .create_patient(patient("AW-1", "A", "1"), Vec::new())
        .await
        .expect("patient");
    let monitor = store
        .create_device(device("SN-AW1"), Vec::new())
        .await
        .expect("device");

    // Ingest: the batch's records commit with its measurements.
    let stored = store
        .ingest(IngestBatch {
            measurements: vec![measurement(monitor.id, VitalSign::HeartRate, 1, 70.0)],
            audit: record(1, Action::Ingest),
            ..IngestBatch::default()
        })
        .await
        .expect("ingest");
    assert_eq!(stored, vec![AppendOutcome::Accepted]);
    assert_eq!(chain_length(store.clone()).await, 1, "the ingest's record");
    let refused = store
        .ingest(IngestBatch {
            measurements: vec![measurement(monitor.id, VitalSign::HeartRate, 2, 71.0)],
            audit: invalid(),
            ..IngestBatch::default()
        })
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    assert_eq!(
        store
            .latest(monitor.id)
            .await
            .expect("latest")
            .first()
            .map(|(_, point)| point.value),
        Some(70.0),
        "a batch whose record cannot be stored stores nothing"
    );
    let receipt = Receipt {
        source: "mllp".into(),
        key: "AW|1".into(),
        received: at(3),
        response: b"ACK".to_vec(),
    };
    store
        .ingest(IngestBatch {
            receipt: Some(receipt.clone()),
            audit: record(3, Action::Ingest),
            ..IngestBatch::default()
        })
        .await
        .expect("first copy");
    let again = store
        .ingest(IngestBatch {
            receipt: Some(receipt),
            audit: record(4, Action::Ingest),
            ..IngestBatch::default()
        })
        .await;
    assert!(matches!(again, Err(Error::AlreadyAnswered(_))), "{again:?}");
    assert_eq!(
        chain_length(store.clone()).await,
        2,
        "a message answered before stores no record"
    );

    // Registry writes.
    let assignment = store
        .create_assignment(
            NewAssignment {
                device: monitor.id,
                patient: ada.id,
                start: at(0),
                end: None,
            },
            record(5, Action::Create),
        )
        .await
        .expect("assign");
    let overlapping = store
        .create_assignment(
            NewAssignment {
                device: monitor.id,
                patient: ada.id,
                start: at(10),
                end: None,
            },
            record(6, Action::Create),
        )
        .await;
    assert!(matches!(overlapping, Err(Error::Conflict(_))));
    assert!(matches!(
        store.end_assignment(assignment.id, at(20), invalid()).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        store.assignments().await.expect("assignments")[0]
            .details
            .end,
        None,
        "an end whose record cannot be stored does not happen"
    );
    store
        .end_assignment(assignment.id, at(20), record(7, Action::Update))
        .await
        .expect("end");
    assert!(matches!(
        store
            .add_device_credential(DeviceId(999), [1; 32], at(8), record(8, Action::Create))
            .await,
        Err(Error::NotFound(_))
    ));
    let credential = store
        .add_device_credential(monitor.id, [1; 32], at(8), record(8, Action::Create))
        .await
        .expect("credential");
    store
        .revoke_device_credential(monitor.id, credential.id, at(9), record(9, Action::Delete))
        .await
        .expect("revoke");
    assert_eq!(
        chain_length(store.clone()).await,
        6,
        "ingest x2, assign, end, add, revoke"
    );

    // Staff entries, accounts and subscriptions.
    let entry = ClinicalEntry {
        id: 0,
        patient: ada.id,
        time: at(10),
        kind: "observation".into(),
        author: "nurse.jones".into(),
        body: "{}".into(),
    };
    assert!(matches!(
        store.add_entry(entry.clone(), invalid()).await,
        Err(Error::Invalid(_))
    ));
    store
        .add_entry(entry, record(10, Action::Create))
        .await
        .expect("entry");
    assert_eq!(
        store
            .entries(None, at(0), at(100))
            .await
            .expect("entries")
            .len(),
        1,
        "only the entry whose record was stored"
    );
    let account = crate::NewUser {
        name: "auditor.audrey".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: "auditor".into(),
        wards: Vec::new(),
        patient: None,
        created: at(11),
        organization: None,
    };
    let user = store
        .create_user(account.clone(), record(11, Action::ConfigChange))
        .await
        .expect("user");
    assert!(matches!(
        store
            .create_user(account, record(11, Action::ConfigChange))
            .await,
        Err(Error::Conflict(_))
    ));
    let token = store
        .create_api_token(
            user.id,
            "EHR".into(),
            [2; 32],
            at(12),
            None,
            record(12, Action::ConfigChange),
        )
        .await
        .expect("token");
    store
        .revoke_api_token(token.id, at(13), record(13, Action::ConfigChange))
        .await
        .expect("revoke token");
    let subscription = store
        .create_subscription("{}".into(), "active".into(), record(14, Action::Create))
        .await
        .expect("subscription");
    store
        .update_subscription(
            subscription,
            "{}".into(),
            "off".into(),
            0,
            record(15, Action::Update),
        )
        .await
        .expect("update subscription");
    assert!(
        store
            .delete_subscription(subscription, record(16, Action::Delete))
            .await
            .expect("delete subscription")
    );
    let chain = whole_chain(store.as_ref()).await;
    let times: Vec<Timestamp> = chain.iter().map(|stored| stored.record.time).collect();
    assert_eq!(
        times,
        [1, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
            .map(at)
            .to_vec(),
        "one record per write that happened, in commit order"
    );
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(whole_chain(reopened.as_ref()).await, chain, "durable");
}

async fn break_glass_grants(backend: &dyn Backend) {
    use crate::{AuditAction as Action, AuditOutcome as Outcome, BreakGlassGrant};
    let store = backend.open().await;
    let ada = store
        .create_patient(patient("BG-1", "ICU", "1"), Vec::new())
        .await
        .expect("patient");
    let nurse = store
        .create_user(
            crate::NewUser {
                name: "nurse.bea".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                role: "nurse".into(),
                wards: vec!["CARDIO".into()],
                patient: None,
                created: at(0),
                organization: None,
            },
            Vec::new(),
        )
        .await
        .expect("user");
    let grant = BreakGlassGrant {
        id: 0,
        user: nurse.id,
        patient: ada.id,
        reason: "cardiac arrest call on another ward".into(),
        started: at(10),
        expires: at(10 + 30 * 60),
        ended: None,
    };
    assert!(matches!(
        store
            .create_break_glass(
                BreakGlassGrant {
                    patient: PatientId(999),
                    ..grant.clone()
                },
                Vec::new()
            )
            .await,
        Err(Error::NotFound(_))
    ));
    let record = vec![audit_record(
        10,
        "nurse.bea",
        Action::BreakGlass,
        Some(ada.id.0),
        Outcome::Success,
    )];
    let stored = store
        .create_break_glass(grant.clone(), record)
        .await
        .expect("grant");
    assert_eq!(
        BreakGlassGrant {
            id: stored.id,
            ..grant
        },
        stored
    );
    assert!(!stored.active(at(9)), "not before it starts");
    assert!(stored.active(at(10)));
    assert!(stored.active(at(10 + 30 * 60 - 1)));
    assert!(!stored.active(at(10 + 30 * 60)), "lapsed at its expiry");
    let ended = store
        .end_break_glass(stored.id, at(100), Vec::new())
        .await
        .expect("end");
    assert_eq!(ended.ended, Some(at(100)));
    assert!(!ended.active(at(100)) && ended.active(at(99)));
    assert!(matches!(
        store.end_break_glass(stored.id, at(101), Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.end_break_glass(999, at(101), Vec::new()).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        whole_chain(store.as_ref()).await.len(),
        1,
        "the grant's record"
    );
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        reopened.break_glass_grants().await.expect("grants"),
        vec![ended],
        "durable"
    );
}

async fn oauth_clients(backend: &dyn Backend) {
    let store = backend.open().await;
    let with_secret = crate::NewOAuthClient {
        client_id: "gc_1".into(),
        name: "lab interface".into(),
        role: "integration-engineer".into(),
        wards: vec!["ICU".into(), "Ward 7, east".into()],
        scopes: vec!["system/Observation.rs".into(), "system/Patient.r".into()],
        credential: crate::ClientCredential::SecretSha256([3; 32]),
        created: at(0),
    };
    let with_keys = crate::NewOAuthClient {
        client_id: "gc_2".into(),
        name: "research warehouse".into(),
        role: "researcher".into(),
        wards: Vec::new(),
        scopes: vec!["system/*.rs".into()],
        credential: crate::ClientCredential::Jwks(r#"{"keys":[]}"#.into()),
        created: at(1),
    };
    let first = store
        .create_oauth_client(with_secret.clone(), Vec::new())
        .await
        .expect("create");
    assert_eq!(
        (first.details.clone(), first.revoked),
        (with_secret.clone(), None)
    );
    let second = store
        .create_oauth_client(with_keys.clone(), Vec::new())
        .await
        .expect("create");
    assert_eq!(second.details, with_keys);
    for taken in [
        crate::NewOAuthClient {
            client_id: "gc_3".into(),
            ..with_secret.clone()
        },
        crate::NewOAuthClient {
            name: "other".into(),
            ..with_secret.clone()
        },
    ] {
        assert!(
            matches!(
                store.create_oauth_client(taken, Vec::new()).await,
                Err(Error::Conflict(_))
            ),
            "name and client_id are unique"
        );
    }
    assert!(matches!(
        store
            .create_oauth_client(
                crate::NewOAuthClient {
                    client_id: "gc_4".into(),
                    name: "spaced".into(),
                    scopes: vec!["system/Patient.r system/Device.r".into()],
                    ..with_secret.clone()
                },
                Vec::new()
            )
            .await,
        Err(Error::Invalid(_))
    ));
    let revoked = store
        .revoke_oauth_client(first.id, at(5), Vec::new())
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked, Some(at(5)));
    assert!(matches!(
        store.revoke_oauth_client(first.id, at(6), Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.revoke_oauth_client(9_999, at(6), Vec::new()).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        matches!(
            store
                .create_oauth_client(
                    crate::NewOAuthClient {
                        client_id: "gc_5".into(),
                        ..with_secret.clone()
                    },
                    Vec::new()
                )
                .await,
            Err(Error::Conflict(_))
        ),
        "a revoked client's name stays taken"
    );
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(
        reopened.oauth_clients().await.expect("clients"),
        vec![revoked, second],
        "durable, by id"
    );
    reopened.close().await.expect("close");
}

async fn totp_second_factor(backend: &dyn Backend) {
    let store = backend.open().await;
    let admin = store
        .create_user(
            crate::NewUser {
                name: "admin.ada".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                role: "administrator".into(),
                wards: Vec::new(),
                patient: None,
                created: at(0),
                organization: None,
            },
            Vec::new(),
        )
        .await
        .expect("create");
    assert_eq!(admin.totp, None, "no second factor by default");
    assert!(
        !store.claim_totp_step(admin.id, 5).await.expect("claim"),
        "no step is taken without an active factor"
    );
    assert!(matches!(
        store.activate_totp(admin.id, 1, Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    let pending = store
        .begin_totp(admin.id, vec![1; 20], Vec::new())
        .await
        .expect("begin");
    let expected = crate::Totp {
        secret: vec![1; 20],
        active: false,
        last_step: 0,
    };
    assert_eq!(pending.totp, Some(expected));
    assert!(
        !store.claim_totp_step(admin.id, 5).await.expect("claim"),
        "an unconfirmed enrolment opens nothing"
    );
    // A second enrolment replaces an unconfirmed one.
    let pending = store
        .begin_totp(admin.id, vec![2; 20], Vec::new())
        .await
        .expect("again");
    assert_eq!(
        pending.totp.as_ref().map(|totp| totp.secret.clone()),
        Some(vec![2; 20])
    );
    let active = store
        .activate_totp(admin.id, 100, Vec::new())
        .await
        .expect("activate");
    assert_eq!(
        active.totp,
        Some(crate::Totp {
            secret: vec![2; 20],
            active: true,
            last_step: 100,
        })
    );
    assert!(
        !format!("{active:?}").contains("[2, 2"),
        "Debug never shows the secret"
    );
    assert!(matches!(
        store.begin_totp(admin.id, vec![3; 20], Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.activate_totp(admin.id, 101, Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    // Each step once, and never an earlier one.
    assert!(!store.claim_totp_step(admin.id, 100).await.expect("claim"));
    assert!(store.claim_totp_step(admin.id, 101).await.expect("claim"));
    assert!(
        !store.claim_totp_step(admin.id, 101).await.expect("claim"),
        "replay"
    );
    assert!(
        !store.claim_totp_step(admin.id, 99).await.expect("claim"),
        "older"
    );
    let claims = futures_join_all((0..8).map(|_| {
        let store = store.clone();
        let id = admin.id;
        async move { store.claim_totp_step(id, 102).await.expect("claim") }
    }))
    .await;
    assert_eq!(
        claims.iter().filter(|won| **won).count(),
        1,
        "of concurrent uses of one code, one wins"
    );
    assert!(matches!(
        store.begin_totp(9_999, vec![1; 20], Vec::new()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.remove_totp(9_999, Vec::new()).await,
        Err(Error::NotFound(_))
    ));
    store.close().await.expect("close");
    let reopened = backend.open().await;
    let users = reopened.users().await.expect("users");
    assert_eq!(
        users[0]
            .totp
            .as_ref()
            .map(|totp| (totp.active, totp.last_step)),
        Some((true, 102)),
        "durable"
    );
    let removed = reopened
        .remove_totp(admin.id, Vec::new())
        .await
        .expect("remove");
    assert_eq!(removed.totp, None);
    assert!(
        !reopened
            .claim_totp_step(admin.id, 200)
            .await
            .expect("claim")
    );
    reopened.close().await.expect("close");
}
