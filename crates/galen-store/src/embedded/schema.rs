//! The embedded store's SQLite schema and connection settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Version of the schema this code writes; stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 7;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS wal (
    seq INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    start_ts INTEGER NOT NULL,
    end_ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_series_start ON chunks(series_id, start_ts);
CREATE INDEX IF NOT EXISTS chunks_series_end ON chunks(series_id, end_ts);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received INTEGER NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    device TEXT,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    received INTEGER NOT NULL,
    response BLOB NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_received ON receipts(received);
CREATE TABLE IF NOT EXISTS device_credentials (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    secret_sha256 BLOB NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER
);
CREATE TABLE IF NOT EXISTS patients (
    id INTEGER PRIMARY KEY,
    identifier_system TEXT NOT NULL,
    identifier_value TEXT NOT NULL,
    family TEXT NOT NULL,
    given TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL,
    ward TEXT NOT NULL,
    bed TEXT NOT NULL,
    identifier_sealed TEXT,
    UNIQUE (identifier_system, identifier_value)
);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE,
    manufacturer TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    patient_id INTEGER NOT NULL REFERENCES patients(id),
    start_ts INTEGER NOT NULL,
    end_ts INTEGER
);
CREATE INDEX IF NOT EXISTS assignments_device ON assignments(device_id, start_ts);
-- Schema 2: the clinical engine's inputs (entries) and outputs (scores, alarm transitions).
CREATE TABLE IF NOT EXISTS clinical_entries (
    id INTEGER PRIMARY KEY,
    patient_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS clinical_entries_time ON clinical_entries(ts, id);
CREATE INDEX IF NOT EXISTS clinical_entries_kind ON clinical_entries(kind, ts);
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY,
    patient_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    score_table TEXT NOT NULL,
    total INTEGER NOT NULL,
    band TEXT NOT NULL,
    complete INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scores_patient ON scores(patient_id, score_table, ts);
CREATE TABLE IF NOT EXISTS alarm_log (
    seq INTEGER PRIMARY KEY,
    alarm TEXT NOT NULL,
    patient_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    rule TEXT NOT NULL,
    transition TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_log_patient ON alarm_log(patient_id, seq);
CREATE INDEX IF NOT EXISTS alarm_log_alarm ON alarm_log(alarm, seq);
CREATE TABLE IF NOT EXISTS filtered_conditions (
    id INTEGER PRIMARY KEY,
    patient_id INTEGER NOT NULL,
    rule TEXT NOT NULL,
    onset INTEGER NOT NULL,
    ended INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS filtered_conditions_ended ON filtered_conditions(ended);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    delivered INTEGER NOT NULL
);
-- Schema 5: the FHIR resource a client last posted for a registry record.
CREATE TABLE IF NOT EXISTS registry_documents (
    owner_kind TEXT NOT NULL,
    owner_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (owner_kind, owner_id)
) WITHOUT ROWID;
-- Schema 6: accounts and personal API tokens (only verifiers are stored).
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    wards TEXT NOT NULL,
    patient_id INTEGER,
    created INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    totp_secret BLOB,
    totp_active INTEGER NOT NULL DEFAULT 0,
    totp_last_step INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    label TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    revoked INTEGER
);
-- Schema 7: OAuth2 machine clients. One credential each: a secret's SHA-256 or public keys.
CREATE TABLE IF NOT EXISTS oauth_clients (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    wards TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_sha256 BLOB,
    jwks TEXT,
    created INTEGER NOT NULL,
    revoked INTEGER,
    CHECK ((secret_sha256 IS NULL) <> (jwks IS NULL))
);
CREATE TABLE IF NOT EXISTS fhir_subscriptions (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    events INTEGER NOT NULL
);
-- Schema 6: the audit trail, a hash chain (see galen_store::audit). Append-only: the triggers
-- refuse UPDATE and DELETE, and an INSERT that does not extend the chain at its head (which also
-- stops INSERT OR REPLACE from overwriting a record). Someone who can write the file can drop
-- them; the hash chain is what detects that.
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    format INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    patient_id INTEGER,
    outcome TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL,
    previous_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
-- Schema 7: the data key of an encrypted store, wrapped under the master key (crate::crypto).
CREATE TABLE IF NOT EXISTS data_keys (
    id INTEGER PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS break_glass (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    patient_id INTEGER NOT NULL REFERENCES patients(id),
    reason TEXT NOT NULL,
    started INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    ended INTEGER
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log(ts);
CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log(patient_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor, seq);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: records cannot be changed');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: records cannot be deleted');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_extend_only BEFORE INSERT ON audit_log
WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM audit_log), 0) + 1
    OR NEW.previous_hash IS NOT COALESCE(
        (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), zeroblob(32))
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: a record must extend the chain at its head');
END;
-- Schema 7: patients' consents (galen_model::Consent) and the FHIR Consent each was recorded
-- from; never deleted (a withdrawn consent becomes inactive).
CREATE TABLE IF NOT EXISTS consents (
    id INTEGER PRIMARY KEY,
    patient_id INTEGER NOT NULL REFERENCES patients(id),
    status TEXT NOT NULL,
    purpose TEXT NOT NULL,
    provision TEXT NOT NULL,
    recipients TEXT NOT NULL,
    period_start INTEGER,
    period_end INTEGER,
    dated INTEGER NOT NULL,
    recorded INTEGER NOT NULL,
    recorded_by TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_patient ON consents(patient_id, id);
";

/// Columns added to existing tables after their creation: `(table, column, definition)`. Each is
/// added when missing, whatever the stored schema version says.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Schema 7: the organisation (or caregiver) an account discloses to, `Organization/{id}`.
    ("users", "organization", "TEXT"),
    // Schema 7: the sealed identifier of an encrypted store (crate::crypto).
    ("patients", "identifier_sealed", "TEXT"),
    // Schema 7: the TOTP second factor of accounts.
    ("users", "totp_secret", "BLOB"),
    ("users", "totp_active", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "totp_last_step", "INTEGER NOT NULL DEFAULT 0"),
];

/// Pages (4 KiB) of SQLite's write-ahead log between its checkpoints: 40 MiB. The default, 1,000,
/// checkpoints so often that the group commit loses a tenth to a fifth of its throughput
/// (`galen bench mllp`, store baseline: about 19,000 against 23,000 messages/s).
const CHECKPOINT_PAGES: i64 = 10_000;

/// Opens a connection with Galen's settings: WAL journal, `synchronous = FULL` (a commit is
/// fsynced before it returns, so "acknowledged" means "durable" even on power loss), foreign
/// keys, a busy timeout so the registry and the ingest writer can take turns, and SQLite's own
/// log checkpoint every [`CHECKPOINT_PAGES`].
pub(crate) fn connect(path: &Path) -> Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "cache_size", -65_536)?;
    connection.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    Ok(connection)
}

/// Creates or checks the schema.
pub(crate) fn migrate(connection: &Connection) -> Result<()> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the data directory was written by a newer Galen (schema {version}, this build knows {SCHEMA_VERSION})"
        )));
    }
    connection.execute_batch(SCHEMA)?;
    for (table, column, definition) in ADDED_COLUMNS {
        let present: i64 = connection.query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |row| row.get(0),
        )?;
        if present == 0 {
            connection.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(connection: &Connection, table: &str) -> Vec<String> {
        let mut statement = connection
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .expect("prepare");
        statement
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<rusqlite::Result<Vec<String>>>()
            .expect("rows")
    }

    #[test]
    fn added_columns_reach_old_and_new_databases_once() {
        let connection = Connection::open_in_memory().expect("open");
        // A schema-6 `users` table, as an older Galen created it.
        connection
            .execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 password_hash TEXT NOT NULL, role TEXT NOT NULL, wards TEXT NOT NULL,
                 patient_id INTEGER, created INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
                 failed_logins INTEGER NOT NULL DEFAULT 0, locked_until INTEGER);
                 PRAGMA user_version = 6;",
            )
            .expect("old schema");
        migrate(&connection).expect("migrate");
        migrate(&connection).expect("migrating again changes nothing");
        let users = columns(&connection, "users");
        assert_eq!(
            users.iter().filter(|name| *name == "organization").count(),
            1
        );
        assert!(columns(&connection, "consents").contains(&"recipients".to_owned()));
        assert!(columns(&connection, "patients").contains(&"identifier_sealed".to_owned()));
    }

    #[test]
    fn an_older_users_table_gains_the_added_columns() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("galen.db");
        let connection = connect(&path).expect("connect");
        // The users table as schema 6 created it, with an account.
        connection
            .execute_batch(
                "CREATE TABLE users (
                    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
                    role TEXT NOT NULL, wards TEXT NOT NULL, patient_id INTEGER,
                    created INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
                    failed_logins INTEGER NOT NULL DEFAULT 0, locked_until INTEGER);
                 INSERT INTO users (name, password_hash, role, wards, created)
                    VALUES ('ada', 'x', 'administrator', '', 0);
                 PRAGMA user_version = 6;",
            )
            .expect("schema 6");
        migrate(&connection).expect("migrate");
        let (secret, active, last): (Option<Vec<u8>>, i64, i64) = connection
            .query_row(
                "SELECT totp_secret, totp_active, totp_last_step FROM users WHERE name = 'ada'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .expect("the new columns");
        assert_eq!((secret, active, last), (None, 0, 0));
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        migrate(&connection).expect("migrating again changes nothing");
    }
}
