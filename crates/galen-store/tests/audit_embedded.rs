//! The embedded store's audit log beyond the port: the append-only triggers, and the read-only
//! reader `galen audit verify` uses (which sees every tampering the triggers could not stop once
//! they are dropped).

use galen_model::{AuditAction, AuditOutcome, PatientId, Timestamp};
use galen_store::embedded::{
    AuditLogReader, AuditLogState, DATABASE_FILE, SqliteOptions, SqliteStore,
};
use galen_store::{AuditRecord, AuditStore, BreakKind, MeasurementStore as _, verify_chain};
use rusqlite::Connection;
use tempfile::TempDir;

fn record(seconds: i64) -> AuditRecord {
    AuditRecord {
        time: Timestamp::from_micros(1_795_392_000_000_000 + seconds * 1_000_000),
        actor: "nurse.ann".into(),
        role: "nurse".into(),
        action: AuditAction::Read,
        resource: format!("Patient/{seconds}"),
        patient: Some(PatientId(seconds)),
        outcome: AuditOutcome::Success,
        source: "127.0.0.1:40000".into(),
        detail: String::new(),
    }
}

/// A data directory with a closed store holding `count` audit records.
async fn directory_with(count: i64) -> TempDir {
    let directory = TempDir::new().expect("temp dir");
    let store = SqliteStore::open(directory.path(), SqliteOptions::default()).expect("open");
    store
        .append_audit((1..=count).map(record).collect())
        .await
        .expect("append");
    store.close().await.expect("close");
    directory
}

fn read_all(directory: &TempDir) -> Vec<galen_store::StoredAuditRecord> {
    let reader = AuditLogReader::open(directory.path()).expect("reader");
    assert_eq!(reader.state().expect("state"), AuditLogState::Present);
    let mut records = Vec::new();
    reader
        .for_each(|stored| {
            records.push(stored);
            true
        })
        .expect("read");
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_refuse_changes_that_do_not_extend_the_chain() {
    let directory = directory_with(3).await;
    let connection = Connection::open(directory.path().join(DATABASE_FILE)).expect("open");
    let refused = |sql: &str| {
        let error = connection
            .execute_batch(sql)
            .expect_err("the trigger refuses it");
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    };
    refused("UPDATE audit_log SET detail = 'edited' WHERE seq = 2");
    refused("DELETE FROM audit_log WHERE seq = 3");
    refused("DELETE FROM audit_log");
    // Overwriting through a conflict resolution, or inserting off the head, is refused too.
    refused(
        "INSERT OR REPLACE INTO audit_log SELECT seq, format, ts, actor, role, action, resource, patient_id, outcome, source, 'x', previous_hash, hash FROM audit_log WHERE seq = 2",
    );
    refused(
        "INSERT INTO audit_log SELECT 7, format, ts, actor, role, action, resource, patient_id, outcome, source, detail, hash, hash FROM audit_log WHERE seq = 3",
    );
    refused(
        "INSERT INTO audit_log SELECT 4, format, ts, actor, role, action, resource, patient_id, outcome, source, detail, previous_hash, hash FROM audit_log WHERE seq = 3",
    );
    drop(connection);
    assert_eq!(
        verify_chain(read_all(&directory)).map(|chain| chain.records),
        Ok(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_pages_through_everything_and_sees_tampering() {
    let directory = directory_with(2_345).await;
    let records = read_all(&directory);
    assert_eq!(records.len(), 2_345, "pages of 1000 rows join up");
    let chain = verify_chain(records).expect("intact");
    assert_eq!(chain.head.map(|head| head.0), Some(2_345));

    let connection = Connection::open(directory.path().join(DATABASE_FILE)).expect("open");
    connection
        .execute_batch(
            "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET ts = 9223372036854775807 WHERE seq = 1500;",
        )
        .expect("tamper");
    drop(connection);
    let found = verify_chain(read_all(&directory)).expect_err("tampered");
    assert_eq!(
        (found.seq, found.kind),
        (1500, BreakKind::HashMismatch),
        "an odd value does not hide a row from the reader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_reads_beside_a_running_store_and_writes_nothing() {
    let directory = TempDir::new().expect("temp dir");
    let store = SqliteStore::open(directory.path(), SqliteOptions::default()).expect("open");
    store
        .append_audit(vec![record(1), record(2)])
        .await
        .expect("append");
    let reader = AuditLogReader::open(directory.path()).expect("reader");
    assert_eq!(reader.page(None, 10).expect("page").len(), 2);
    store.append_audit(vec![record(3)]).await.expect("append");
    assert_eq!(
        reader.page(Some(2), 10).expect("page")[0].seq,
        3,
        "later appends are seen"
    );
    let error = rusqlite::Connection::open_with_flags(
        directory.path().join(DATABASE_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("read-only")
    .execute_batch("CREATE TABLE intruder (x)")
    .expect_err("read-only");
    assert!(error.to_string().contains("readonly"), "{error}");
    drop(reader);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_tells_a_missing_trail_from_an_old_database() {
    let directory = directory_with(1).await;
    let connection = Connection::open(directory.path().join(DATABASE_FILE)).expect("open");
    connection
        .execute_batch("DROP TABLE audit_log")
        .expect("drop table");
    drop(connection);
    let reader = AuditLogReader::open(directory.path()).expect("reader");
    assert!(matches!(
        reader.state().expect("state"),
        AuditLogState::Missing(6..)
    ));

    let old = TempDir::new().expect("temp dir");
    let connection = Connection::open(old.path().join(DATABASE_FILE)).expect("create");
    connection
        .execute_batch("CREATE TABLE patients (id INTEGER PRIMARY KEY); PRAGMA user_version = 5;")
        .expect("old schema");
    drop(connection);
    let reader = AuditLogReader::open(old.path()).expect("reader");
    assert_eq!(
        reader.state().expect("state"),
        AuditLogState::NotYetCreated(5)
    );

    let empty = TempDir::new().expect("temp dir");
    assert!(matches!(
        AuditLogReader::open(empty.path()),
        Err(galen_store::Error::NotFound(_))
    ));
}

/// Reading a directory leaves it as it was: a store opens on it again and continues the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_continues_the_chain_after_the_reader() {
    let directory = directory_with(2).await;
    assert_eq!(read_all(&directory).len(), 2);
    let store = SqliteStore::open(directory.path(), SqliteOptions::default()).expect("reopen");
    let appended = store.append_audit(vec![record(3)]).await.expect("append");
    assert_eq!(appended[0].seq, 3);
    store.close().await.expect("close");
    assert_eq!(
        verify_chain(read_all(&directory)).map(|chain| chain.records),
        Ok(3)
    );
}
