//! Encryption at rest: with a master key, no patient-identifying value reaches the database file
//! in the clear; the store opens only with its key; rotation re-seals everything under a new key
//! (also a store that was not encrypted before), after which the old key opens nothing.

use std::path::Path;

use galen_model::{
    DeviceKind, DeviceStatus, HumanName, Identifier, NewDevice, NewPatient, RejectionReason, Sex,
    Timestamp,
};
use galen_store::crypto::MasterKey;
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore, rotate};
use galen_store::{
    AccessStore, BreakGlassGrant, DeadLetter, Error, IngestBatch, MeasurementStore, NewUser,
    RegistryChange, RegistryStore, RegistryWrite,
};

/// Recognisable PHI: none of it may appear in the database files.
const PHI: [&str; 7] = [
    "TOTP-SECRET-0123456",
    "Quaxley",
    "Zebulon",
    "MRN-PHI-7731",
    "1932-02-29",
    "1931-02-29",
    "collapsed at the bus stop",
];

fn key(id: &str) -> MasterKey {
    MasterKey::parse(&MasterKey::generate(id).expect("generate")).expect("parse")
}

fn options(key: Option<&MasterKey>) -> SqliteOptions {
    SqliteOptions {
        data_key: key.cloned(),
        ..SqliteOptions::default()
    }
}

/// Every PHI string found in the data directory's database files.
fn phi_on_disk(dir: &Path) -> Vec<&'static str> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(content) = std::fs::read(dir.join(format!("{DATABASE_FILE}{suffix}"))) {
            bytes.extend(content);
        }
    }
    PHI.into_iter()
        .filter(|phi| {
            bytes
                .windows(phi.len())
                .any(|window| window == phi.as_bytes())
        })
        .collect()
}

fn zebulon() -> NewPatient {
    NewPatient {
        identifier: Identifier {
            system: "urn:mrn".into(),
            value: "MRN-PHI-7731".into(),
        },
        name: HumanName {
            family: "Quaxley".into(),
            given: "Zebulon".into(),
        },
        birth_date: NewPatient::parse_birth_date("1932-02-29").expect("date"),
        sex: Sex::Male,
        ward: "ICU".into(),
        bed: "7".into(),
    }
}

/// Writes every kind of identifying value: a patient with its posted document, a dead letter
/// carrying a PID segment, a break-glass reason.
async fn fill(store: &SqliteStore) {
    let written = store
        .apply_registry(vec![RegistryWrite {
            change: RegistryChange::CreatePatient(zebulon()),
            document: Some(
                r#"{"resourceType":"Patient","name":[{"family":"Quaxley","given":["Zebulon"]}]}"#
                    .into(),
            ),
        }])
        .await
        .expect("patient");
    let patient = match &written[0] {
        galen_store::Registered::Patient(patient) => patient.id,
        other => panic!("{other:?}"),
    };
    store
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
    store
        .ingest(IngestBatch {
            dead_letters: vec![DeadLetter {
                received: Timestamp::from_micros(1),
                source: "mllp".into(),
                reason: RejectionReason::Malformed,
                message: "PID-7 is not a date".into(),
                device: Some("MON-1".into()),
                payload: b"PID|||MRN-PHI-7731||Quaxley^Zebulon||1931-02-29".to_vec(),
            }],
            ..IngestBatch::default()
        })
        .await
        .expect("dead letter");
    let nurse = store
        .create_user(
            NewUser {
                name: "nurse.ann".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                role: "nurse".into(),
                wards: vec!["CARDIO".into()],
                patient: None,
                created: Timestamp::from_micros(0),
                organization: None,
            },
            Vec::new(),
        )
        .await
        .expect("user");
    store
        .begin_totp(nurse.id, b"TOTP-SECRET-0123456".to_vec(), Vec::new())
        .await
        .expect("second factor");
    store
        .create_break_glass(
            BreakGlassGrant {
                id: 0,
                user: nurse.id,
                patient,
                reason: "collapsed at the bus stop".into(),
                started: Timestamp::from_micros(0),
                expires: Timestamp::from_micros(60_000_000),
                ended: None,
            },
            Vec::new(),
        )
        .await
        .expect("grant");
}

/// Reads everything back and checks it.
async fn read_back(store: &SqliteStore) {
    let patients = store.patients(None).await.expect("patients");
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0].details, zebulon());
    assert!(
        store.registry_documents().await.expect("documents")[0]
            .body
            .contains("Quaxley")
    );
    assert!(
        store.dead_letters(0, 10).await.expect("letters")[0]
            .letter
            .payload
            .ends_with(b"1931-02-29")
    );
    assert_eq!(
        store.break_glass_grants().await.expect("grants")[0].reason,
        "collapsed at the bus stop"
    );
    let users = store.users().await.expect("users");
    assert_eq!(
        users[0].totp.as_ref().map(|totp| totp.secret.as_slice()),
        Some(b"TOTP-SECRET-0123456".as_slice())
    );
}

async fn close(store: SqliteStore) {
    store.close().await.expect("close");
}

#[tokio::test]
async fn identifying_values_are_sealed_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = key("2026-11");
    let store = SqliteStore::open(dir.path(), options(Some(&first))).expect("open");
    fill(&store).await;
    read_back(&store).await;
    // Identifiers stay unique although sealed at random: the blind index catches the duplicate.
    assert!(matches!(
        store.create_patient(zebulon(), Vec::new()).await,
        Err(Error::Conflict(_))
    ));
    close(store).await;
    assert_eq!(phi_on_disk(dir.path()), Vec::<&str>::new());

    let no_key = SqliteStore::open(dir.path(), options(None)).expect_err("needs its key");
    assert!(no_key.to_string().contains("encrypted"), "{no_key}");
    let other_id =
        SqliteStore::open(dir.path(), options(Some(&key("other")))).expect_err("wrong id");
    assert!(other_id.to_string().contains("'2026-11'"), "{other_id}");
    let forged = MasterKey::parse(&format!("2026-11:{}", "ab".repeat(32))).expect("parse");
    assert!(
        SqliteStore::open(dir.path(), options(Some(&forged))).is_err(),
        "same id, other key"
    );

    // Rotation: everything re-sealed under the new key; the old key opens nothing.
    let second = key("2027-05");
    let rotated = rotate(dir.path(), Some(&first), &second).expect("rotate");
    assert_eq!(
        (
            rotated.patients,
            rotated.documents,
            rotated.dead_letters,
            rotated.grants,
            rotated.second_factors
        ),
        (1, 1, 1, 1, 1)
    );
    assert!(SqliteStore::open(dir.path(), options(Some(&first))).is_err());
    let store = SqliteStore::open(dir.path(), options(Some(&second))).expect("open rotated");
    read_back(&store).await;
    close(store).await;
    assert_eq!(phi_on_disk(dir.path()), Vec::<&str>::new());
}

#[tokio::test]
async fn rotation_encrypts_a_store_written_in_the_clear() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path(), options(None)).expect("open");
    fill(&store).await;
    close(store).await;
    assert_eq!(
        phi_on_disk(dir.path()).len(),
        PHI.len(),
        "the test can see PHI"
    );
    let key = key("first");
    rotate(dir.path(), None, &key).expect("encrypt");
    // Vacuum so that freed pages holding the old plaintext leave the file.
    rusqlite::Connection::open(dir.path().join(DATABASE_FILE))
        .expect("open")
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
        .expect("vacuum");
    assert_eq!(phi_on_disk(dir.path()), Vec::<&str>::new());
    let store = SqliteStore::open(dir.path(), options(Some(&key))).expect("open encrypted");
    read_back(&store).await;
    close(store).await;
}
