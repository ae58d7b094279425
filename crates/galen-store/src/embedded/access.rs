//! Accounts, personal API tokens, break-glass grants and OAuth2 machine clients in the embedded
//! store, on the registry connection.

use async_trait::async_trait;
use galen_model::{PatientId, Recipient, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::SqliteStore;
use super::audit::with_records;
use crate::access::{
    AccessStore, ApiToken, BreakGlassGrant, ClientCredential, NewOAuthClient, NewUser, OAuthClient,
    Totp, User, UserChange,
};
use crate::audit::AuditRecord;
use crate::crypto::{self, FieldCipher};
use crate::error::{Error, Result};

const USER_COLUMNS: &str = "id, name, password_hash, role, wards, patient_id, created, disabled, failed_logins, locked_until, organization, totp_secret, totp_active, totp_last_step";
const TOKEN_COLUMNS: &str = "id, user_id, label, secret_sha256, created, expires, revoked";
const CLIENT_COLUMNS: &str =
    "id, client_id, name, role, wards, scopes, secret_sha256, jwks, created, revoked";

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
    let totp = match row.get::<_, Option<Vec<u8>>>(11)? {
        None => None,
        Some(secret) => Some(Totp {
            secret,
            active: row.get::<_, i64>(12)? != 0,
            last_step: u64::try_from(row.get::<_, i64>(13)?).unwrap_or(0),
        }),
    };
    let organization = row
        .get::<_, Option<String>>(10)?
        .map(|text| {
            Recipient::parse(&text).map_err(|_| {
                rusqlite::Error::InvalidColumnType(
                    10,
                    "organization".into(),
                    rusqlite::types::Type::Text,
                )
            })
        })
        .transpose()?;
    Ok(User {
        id: row.get(0)?,
        details: NewUser {
            name: row.get(1)?,
            password_hash: row.get(2)?,
            role: row.get(3)?,
            wards: split_wards(&wards),
            patient: row.get::<_, Option<i64>>(5)?.map(PatientId),
            organization,
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

const GRANT_COLUMNS: &str = "id, user_id, patient_id, reason, started, expires, ended";

fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<BreakGlassGrant> {
    Ok(BreakGlassGrant {
        id: row.get(0)?,
        user: row.get(1)?,
        patient: PatientId(row.get(2)?),
        reason: row.get(3)?,
        started: Timestamp::from_micros(row.get(4)?),
        expires: Timestamp::from_micros(row.get(5)?),
        ended: row.get::<_, Option<i64>>(6)?.map(Timestamp::from_micros),
    })
}

/// The sealed column of grants (its values' additional authenticated data): a reason is free text
/// and may hold clinical detail.
pub(super) const REASON: &str = "break_glass.reason";

/// A stored grant with its reason opened.
fn opened(cipher: Option<&FieldCipher>, mut grant: BreakGlassGrant) -> Result<BreakGlassGrant> {
    grant.reason = crypto::open_text(cipher, REASON, &grant.reason)?;
    Ok(grant)
}

fn load_grant(
    connection: &Connection,
    cipher: Option<&FieldCipher>,
    id: i64,
) -> Result<Option<BreakGlassGrant>> {
    connection
        .prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM break_glass WHERE id = ?1"
        ))?
        .query_row([id], grant_from_row)
        .optional()?
        .map(|grant| opened(cipher, grant))
        .transpose()
}

fn client_from_row(row: &Row<'_>) -> rusqlite::Result<OAuthClient> {
    let wards: String = row.get(4)?;
    let scopes: String = row.get(5)?;
    let secret: Option<Vec<u8>> = row.get(6)?;
    let jwks: Option<String> = row.get(7)?;
    let credential = match (secret, jwks) {
        (Some(hash), None) => {
            ClientCredential::SecretSha256(hash.as_slice().try_into().map_err(|_| {
                rusqlite::Error::InvalidColumnType(
                    6,
                    "secret_sha256".into(),
                    rusqlite::types::Type::Blob,
                )
            })?)
        }
        (None, Some(jwks)) => ClientCredential::Jwks(jwks),
        // The table's CHECK keeps exactly one; anything else is a damaged row.
        _ => {
            return Err(rusqlite::Error::InvalidColumnType(
                6,
                "credential".into(),
                rusqlite::types::Type::Null,
            ));
        }
    };
    Ok(OAuthClient {
        id: row.get(0)?,
        details: NewOAuthClient {
            client_id: row.get(1)?,
            name: row.get(2)?,
            role: row.get(3)?,
            wards: split_wards(&wards),
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            credential,
            created: Timestamp::from_micros(row.get(8)?),
        },
        revoked: row.get::<_, Option<i64>>(9)?.map(Timestamp::from_micros),
    })
}

fn load_client(connection: &Connection, id: i64) -> Result<Option<OAuthClient>> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = ?1"
        ))?
        .query_row([id], client_from_row)
        .optional()?)
}

/// The sealed column of accounts: a TOTP secret is a shared secret, not a verifier, so it is
/// sealed like patient-identifying data (its values' additional authenticated data).
pub(super) const TOTP_SECRET: &str = "users.totp_secret";

/// A TOTP secret as stored: sealed when the store encrypts.
fn sealed_secret(cipher: Option<&FieldCipher>, secret: &[u8]) -> Result<Vec<u8>> {
    match cipher {
        Some(cipher) => cipher.seal_blob(TOTP_SECRET, secret),
        None => Ok(secret.to_vec()),
    }
}

/// An account as read, its TOTP secret opened.
fn opened_user(cipher: Option<&FieldCipher>, mut user: User) -> Result<User> {
    if let Some(totp) = &mut user.totp {
        totp.secret = crypto::open_blob(cipher, TOTP_SECRET, &totp.secret)?;
    }
    Ok(user)
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
    async fn create_user(&self, user: NewUser, audit: Vec<AuditRecord>) -> Result<User> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
                let inserted = transaction.execute(
                    "INSERT INTO users (name, password_hash, role, wards, patient_id, created, organization) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        user.name,
                        user.password_hash,
                        user.role,
                        join_wards(&user.wards),
                        user.patient.map(|patient| patient.0),
                        user.created.micros(),
                        user.organization.as_ref().map(Recipient::to_string)
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
                let created = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
                opened_user(cipher, created)
            })
        })
        .await
    }

    async fn update_user(
        &self,
        id: i64,
        change: UserChange,
        audit: Vec<AuditRecord>,
    ) -> Result<User> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
                let changed = transaction.execute(
                    "UPDATE users SET password_hash = COALESCE(?1, password_hash), role = ?2, wards = ?3,
                     patient_id = ?4, disabled = ?5, organization = ?7 WHERE id = ?6",
                    params![
                        change.password_hash,
                        change.role,
                        join_wards(&change.wards),
                        change.patient.map(|patient| patient.0),
                        i64::from(change.disabled),
                        id,
                        change.organization.as_ref().map(Recipient::to_string)
                    ],
                )?;
                if changed == 0 {
                    return Err(Error::NotFound("user"));
                }
                let updated = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
                opened_user(cipher, updated)
            })
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection
                    .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
                let rows = statement.query_map([], user_from_row)?;
                rows.map(|user| opened_user(shared.cipher.as_ref(), user?))
                    .collect()
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
        self.registry_sealed(move |connection, cipher| {
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
            opened_user(cipher, user)
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
        audit: Vec<AuditRecord>,
    ) -> Result<ApiToken> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                if load_user(transaction, user)?.is_none() {
                    return Err(Error::NotFound("user"));
                }
                transaction.execute(
                    "INSERT INTO api_tokens (user_id, label, secret_sha256, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user, label, secret_sha256.as_slice(), created.micros(), expires.map(Timestamp::micros)],
                )?;
                let id = transaction.last_insert_rowid();
                let token = load_token(transaction, id)?.ok_or(Error::NotFound("api token"))?;
                Ok(token)
            })
        })
        .await
    }

    async fn revoke_api_token(
        &self,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<ApiToken> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                let token = load_token(transaction, id)?.ok_or(Error::NotFound("api token"))?;
                if token.revoked.is_some() {
                    return Err(Error::Conflict("the token is already revoked".into()));
                }
                transaction.execute(
                    "UPDATE api_tokens SET revoked = ?1 WHERE id = ?2",
                    params![at.micros(), id],
                )?;
                let token = load_token(transaction, id)?.ok_or(Error::NotFound("api token"))?;
                Ok(token)
            })
        })
        .await
    }

    async fn begin_totp(&self, id: i64, secret: Vec<u8>, audit: Vec<AuditRecord>) -> Result<User> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
            let user = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
            if user.totp.as_ref().is_some_and(|totp| totp.active) {
                return Err(Error::Conflict(
                    "a second factor is already active; remove it first".into(),
                ));
            }
            transaction.execute(
                "UPDATE users SET totp_secret = ?1, totp_active = 0, totp_last_step = 0 WHERE id = ?2",
                params![sealed_secret(cipher, &secret)?, id],
            )?;
            let user = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
            opened_user(cipher, user)
            })
        })
        .await
    }

    async fn activate_totp(&self, id: i64, step: u64, audit: Vec<AuditRecord>) -> Result<User> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
                let user = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
                if user.totp.as_ref().is_none_or(|totp| totp.active) {
                    return Err(Error::Conflict("no second factor is being enrolled".into()));
                }
                transaction.execute(
                    "UPDATE users SET totp_active = 1, totp_last_step = ?1 WHERE id = ?2",
                    params![step_value(step), id],
                )?;
                let user = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
                opened_user(cipher, user)
            })
        })
        .await
    }

    async fn remove_totp(&self, id: i64, audit: Vec<AuditRecord>) -> Result<User> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
            let changed = transaction.execute(
                "UPDATE users SET totp_secret = NULL, totp_active = 0, totp_last_step = 0 WHERE id = ?1",
                [id],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("user"));
            }
            let user = load_user(transaction, id)?.ok_or(Error::NotFound("user"))?;
            opened_user(cipher, user)
            })
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

    async fn create_break_glass(
        &self,
        grant: BreakGlassGrant,
        audit: Vec<AuditRecord>,
    ) -> Result<BreakGlassGrant> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
                if load_user(transaction, grant.user)?.is_none() {
                    return Err(Error::NotFound("user"));
                }
                let patient: Option<i64> = transaction
                    .query_row("SELECT id FROM patients WHERE id = ?1", [grant.patient.0], |row| {
                        row.get(0)
                    })
                    .optional()?;
                if patient.is_none() {
                    return Err(Error::NotFound("patient"));
                }
                transaction.execute(
                    "INSERT INTO break_glass (user_id, patient_id, reason, started, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![grant.user, grant.patient.0, crypto::seal_text(cipher, REASON, &grant.reason)?, grant.started.micros(), grant.expires.micros()],
                )?;
                let id = transaction.last_insert_rowid();
                load_grant(transaction, cipher, id)?.ok_or(Error::NotFound("break-glass grant"))
            })
        })
        .await
    }

    async fn end_break_glass(
        &self,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<BreakGlassGrant> {
        self.registry_sealed(move |connection, cipher| {
            with_records(connection, audit, |transaction| {
                let grant = load_grant(transaction, cipher, id)?
                    .ok_or(Error::NotFound("break-glass grant"))?;
                if !grant.active(at) {
                    return Err(Error::Conflict("the grant has already ended".into()));
                }
                transaction.execute(
                    "UPDATE break_glass SET ended = ?1 WHERE id = ?2",
                    params![at.micros(), id],
                )?;
                load_grant(transaction, cipher, id)?.ok_or(Error::NotFound("break-glass grant"))
            })
        })
        .await
    }

    async fn break_glass_grants(&self) -> Result<Vec<BreakGlassGrant>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS} FROM break_glass ORDER BY id"
                ))?;
                let rows = statement.query_map([], grant_from_row)?;
                rows.map(|grant| opened(shared.cipher.as_ref(), grant?))
                    .collect()
            })
        })
        .await
    }

    async fn create_oauth_client(
        &self,
        client: NewOAuthClient,
        audit: Vec<AuditRecord>,
    ) -> Result<OAuthClient> {
        if client
            .scopes
            .iter()
            .any(|scope| scope.is_empty() || scope.chars().any(char::is_whitespace))
        {
            return Err(Error::Invalid(
                "a scope is one word without white space".into(),
            ));
        }
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
            let (secret, jwks) = match &client.credential {
                ClientCredential::SecretSha256(hash) => (Some(hash.to_vec()), None),
                ClientCredential::Jwks(jwks) => (None, Some(jwks.clone())),
            };
            let inserted = transaction.execute(
                "INSERT INTO oauth_clients (client_id, name, role, wards, scopes, secret_sha256, jwks, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    client.client_id,
                    client.name,
                    client.role,
                    join_wards(&client.wards),
                    client.scopes.join(" "),
                    secret,
                    jwks,
                    client.created.micros()
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(failure, _))
                    if failure.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(Error::Conflict(
                        "a client with this name or client_id exists".into(),
                    ));
                }
                other => other?,
            };
            let id = transaction.last_insert_rowid();
            let created = load_client(transaction, id)?.ok_or(Error::NotFound("oauth client"))?;
            Ok(created)
            })
        })
        .await
    }

    async fn revoke_oauth_client(
        &self,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<OAuthClient> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                let client =
                    load_client(transaction, id)?.ok_or(Error::NotFound("oauth client"))?;
                if client.revoked.is_some() {
                    return Err(Error::Conflict("the client is already revoked".into()));
                }
                transaction.execute(
                    "UPDATE oauth_clients SET revoked = ?1 WHERE id = ?2",
                    params![at.micros(), id],
                )?;
                let client =
                    load_client(transaction, id)?.ok_or(Error::NotFound("oauth client"))?;
                Ok(client)
            })
        })
        .await
    }

    async fn oauth_clients(&self) -> Result<Vec<OAuthClient>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY id"
                ))?;
                let rows = statement.query_map([], client_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }
}
