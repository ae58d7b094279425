//! Accounts and personal API tokens in the embedded store, on the registry connection.

use async_trait::async_trait;
use galen_model::{PatientId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::SqliteStore;
use crate::access::{AccessStore, ApiToken, NewUser, Totp, User, UserChange};
use crate::error::{Error, Result};

const USER_COLUMNS: &str = "id, name, password_hash, role, wards, patient_id, created, disabled, failed_logins, locked_until, totp_secret, totp_active, totp_last_step";
const TOKEN_COLUMNS: &str = "id, user_id, label, secret_sha256, created, expires, revoked";

/// Ward names are stored joined by the ASCII unit separator, which a ward name cannot contain
/// (the server refuses control characters in them).
const WARD_SEPARATOR: char = '\u{1f}';

fn join_wards(wards: &[String]) -> String {
    wards.join(&WARD_SEPARATOR.to_string())
}

fn split_wards(text: &str) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(WARD_SEPARATOR).map(str::to_owned).collect()
    }
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let wards: String = row.get(4)?;
    let totp = match row.get::<_, Option<Vec<u8>>>(10)? {
        None => None,
        Some(secret) => Some(Totp {
            secret,
            active: row.get::<_, i64>(11)? != 0,
            last_step: u64::try_from(row.get::<_, i64>(12)?).unwrap_or(0),
        }),
    };
    Ok(User {
        id: row.get(0)?,
        details: NewUser {
            name: row.get(1)?,
            password_hash: row.get(2)?,
            role: row.get(3)?,
            wards: split_wards(&wards),
            patient: row.get::<_, Option<i64>>(5)?.map(PatientId),
            created: Timestamp::from_micros(row.get(6)?),
        },
        disabled: row.get::<_, i64>(7)? != 0,
        failed_logins: u32::try_from(row.get::<_, i64>(8)?).unwrap_or(u32::MAX),
        locked_until: row.get::<_, Option<i64>>(9)?.map(Timestamp::from_micros),
        totp,
    })
}

/// A TOTP time step as SQLite's integer (steps of 30 s fit for the next 10^11 years).
fn step_value(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<ApiToken> {
    let hash: Vec<u8> = row.get(3)?;
    let secret_sha256: [u8; 32] = hash.as_slice().try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(3, "secret_sha256".into(), rusqlite::types::Type::Blob)
    })?;
    Ok(ApiToken {
        id: row.get(0)?,
        user: row.get(1)?,
        label: row.get(2)?,
        secret_sha256,
        created: Timestamp::from_micros(row.get(4)?),
        expires: row.get::<_, Option<i64>>(5)?.map(Timestamp::from_micros),
        revoked: row.get::<_, Option<i64>>(6)?.map(Timestamp::from_micros),
    })
}

fn load_user(connection: &Connection, id: i64) -> Result<Option<User>> {
    Ok(connection
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], user_from_row)
        .optional()?)
}

fn load_token(connection: &Connection, id: i64) -> Result<Option<ApiToken>> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
        ))?
        .query_row([id], token_from_row)
        .optional()?)
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = transaction.execute(
                "INSERT INTO users (name, password_hash, role, wards, patient_id, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    user.name,
                    user.password_hash,
                    user.role,
                    join_wards(&user.wards),
                    user.patient.map(|patient| patient.0),
                    user.created.micros()
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(failure, _))
                    if failure.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(Error::Conflict("an account with this name exists".into()));
                }
                other => other?,
            };
            let id = transaction.last_insert_rowid();
            let created = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            transaction.commit()?;
            Ok(created)
        })
        .await
    }

    async fn update_user(&self, id: i64, change: UserChange) -> Result<User> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = transaction.execute(
                "UPDATE users SET password_hash = COALESCE(?1, password_hash), role = ?2, wards = ?3,
                 patient_id = ?4, disabled = ?5 WHERE id = ?6",
                params![
                    change.password_hash,
                    change.role,
                    join_wards(&change.wards),
                    change.patient.map(|patient| patient.0),
                    i64::from(change.disabled),
                    id
                ],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("user"));
            }
            let updated = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            transaction.commit()?;
            Ok(updated)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection
                    .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
                let rows = statement.query_map([], user_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn record_login(
        &self,
        id: i64,
        success: bool,
        lock_until: Option<Timestamp>,
    ) -> Result<User> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = if success {
                transaction.execute(
                    "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?1",
                    [id],
                )?
            } else {
                transaction.execute(
                    "UPDATE users SET failed_logins = failed_logins + 1,
                     locked_until = COALESCE(?2, locked_until) WHERE id = ?1",
                    params![id, lock_until.map(Timestamp::micros)],
                )?
            };
            if changed == 0 {
                return Err(Error::NotFound("user"));
            }
            let user = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            transaction.commit()?;
            Ok(user)
        })
        .await
    }

    async fn create_api_token(
        &self,
        user: i64,
        label: String,
        secret_sha256: [u8; 32],
        created: Timestamp,
        expires: Option<Timestamp>,
    ) -> Result<ApiToken> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if load_user(&transaction, user)?.is_none() {
                return Err(Error::NotFound("user"));
            }
            transaction.execute(
                "INSERT INTO api_tokens (user_id, label, secret_sha256, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user, label, secret_sha256.as_slice(), created.micros(), expires.map(Timestamp::micros)],
            )?;
            let id = transaction.last_insert_rowid();
            let token = load_token(&transaction, id)?.ok_or(Error::NotFound("api token"))?;
            transaction.commit()?;
            Ok(token)
        })
        .await
    }

    async fn revoke_api_token(&self, id: i64, at: Timestamp) -> Result<ApiToken> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let token = load_token(&transaction, id)?.ok_or(Error::NotFound("api token"))?;
            if token.revoked.is_some() {
                return Err(Error::Conflict("the token is already revoked".into()));
            }
            transaction.execute(
                "UPDATE api_tokens SET revoked = ?1 WHERE id = ?2",
                params![at.micros(), id],
            )?;
            let token = load_token(&transaction, id)?.ok_or(Error::NotFound("api token"))?;
            transaction.commit()?;
            Ok(token)
        })
        .await
    }

    async fn begin_totp(&self, id: i64, secret: Vec<u8>) -> Result<User> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let user = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            if user.totp.as_ref().is_some_and(|totp| totp.active) {
                return Err(Error::Conflict(
                    "a second factor is already active; remove it first".into(),
                ));
            }
            transaction.execute(
                "UPDATE users SET totp_secret = ?1, totp_active = 0, totp_last_step = 0 WHERE id = ?2",
                params![secret, id],
            )?;
            let user = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            transaction.commit()?;
            Ok(user)
        })
        .await
    }

    async fn activate_totp(&self, id: i64, step: u64) -> Result<User> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let user = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            if user.totp.as_ref().is_none_or(|totp| totp.active) {
                return Err(Error::Conflict("no second factor is being enrolled".into()));
            }
            transaction.execute(
                "UPDATE users SET totp_active = 1, totp_last_step = ?1 WHERE id = ?2",
                params![step_value(step), id],
            )?;
            let user = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            transaction.commit()?;
            Ok(user)
        })
        .await
    }

    async fn remove_totp(&self, id: i64) -> Result<User> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = transaction.execute(
                "UPDATE users SET totp_secret = NULL, totp_active = 0, totp_last_step = 0 WHERE id = ?1",
                [id],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("user"));
            }
            let user = load_user(&transaction, id)?.ok_or(Error::NotFound("user"))?;
            transaction.commit()?;
            Ok(user)
        })
        .await
    }

    async fn claim_totp_step(&self, id: i64, step: u64) -> Result<bool> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // One statement decides: the step is taken only if it is later than the last one.
            let changed = transaction.execute(
                "UPDATE users SET totp_last_step = ?1
                 WHERE id = ?2 AND totp_active = 1 AND totp_secret IS NOT NULL AND totp_last_step < ?1",
                params![step_value(step), id],
            )?;
            transaction.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
                ))?;
                let rows = statement.query_map([], token_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }
}
