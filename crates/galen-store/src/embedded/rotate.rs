//! `galen keys rotate`: a new data key under a new master key, every sealed value re-sealed with
//! it, in one transaction (see [`crate::crypto`]). Values stored before encryption was turned on
//! are sealed too. Run it with the server stopped: it takes the database's write lock for the
//! whole rewrite.

use std::path::Path;

use rusqlite::{TransactionBehavior, params};

use super::{DATABASE_FILE, DEAD_LETTER_PAYLOAD, keys, registry, schema};
use crate::crypto::{FieldCipher, MasterKey, open_blob, open_text};
use crate::error::{Error, Result};

/// What [`rotate`] re-sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotated {
    /// The new data key's id.
    pub data_key: u32,
    /// Patients re-sealed.
    pub patients: u64,
    /// Kept documents re-sealed.
    pub documents: u64,
    /// Dead letters re-sealed.
    pub dead_letters: u64,
    /// Break-glass reasons re-sealed.
    pub grants: u64,
    /// TOTP secrets re-sealed.
    pub second_factors: u64,
}

/// Re-seals the store in `data_dir` under `new` (a master key with a new id), opening it with
/// `old` (`None` for a store not yet encrypted).
pub fn rotate(data_dir: &Path, old: Option<&MasterKey>, new: &MasterKey) -> Result<Rotated> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.is_file() {
        return Err(Error::NotFound("database"));
    }
    if old.is_some_and(|old| old.id() == new.id()) {
        return Err(Error::Invalid(
            "the new master key needs a new key id (the id is stored with the data key)".into(),
        ));
    }
    let mut connection = schema::connect(&path)?;
    schema::migrate(&connection)?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = keys::open_cipher(&transaction, old)?;
    let next_id: u32 = transaction.query_row(
        "SELECT COALESCE(MAX(id), 0) + 1 FROM data_keys",
        [],
        |row| row.get(0),
    )?;
    transaction.execute("DELETE FROM data_keys", [])?;
    let next = keys::create(&transaction, new, next_id)?;
    let mut rotated = Rotated {
        data_key: next.key_id(),
        ..Rotated::default()
    };
    rotated.patients = registry::reseal_patients(&transaction, current.as_ref(), &next)?;
    rotated.documents = reseal_texts(
        &transaction,
        current.as_ref(),
        &next,
        "SELECT owner_kind || ':' || owner_id, body FROM registry_documents",
        "UPDATE registry_documents SET body = ?2 WHERE owner_kind || ':' || owner_id = ?1",
        registry::DOCUMENT,
    )?;
    rotated.grants = reseal_texts(
        &transaction,
        current.as_ref(),
        &next,
        "SELECT CAST(id AS TEXT), reason FROM break_glass",
        "UPDATE break_glass SET reason = ?2 WHERE id = CAST(?1 AS INTEGER)",
        super::access::REASON,
    )?;
    rotated.dead_letters = reseal_blobs(
        &transaction,
        current.as_ref(),
        &next,
        "SELECT id, payload FROM dead_letters",
        "UPDATE dead_letters SET payload = ?2 WHERE id = ?1",
        DEAD_LETTER_PAYLOAD,
    )?;
    rotated.second_factors = reseal_blobs(
        &transaction,
        current.as_ref(),
        &next,
        "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL",
        "UPDATE users SET totp_secret = ?2 WHERE id = ?1",
        super::access::TOTP_SECRET,
    )?;
    transaction.commit()?;
    Ok(rotated)
}

/// Re-seals the text column that `select` reads as `(key, value)` and `update` writes by key.
fn reseal_texts(
    connection: &rusqlite::Connection,
    current: Option<&FieldCipher>,
    next: &FieldCipher,
    select: &str,
    update: &str,
    column: &str,
) -> Result<u64> {
    let rows: Vec<(String, String)> = connection
        .prepare(select)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut statement = connection.prepare(update)?;
    let mut count = 0;
    for (key, value) in rows {
        let plain = open_text(current, column, &value)?;
        statement.execute(params![key, next.seal_text(column, &plain)?])?;
        count += 1;
    }
    Ok(count)
}

/// Re-seals the blob column that `select` reads as `(id, value)` and `update` writes by id.
fn reseal_blobs(
    connection: &rusqlite::Connection,
    current: Option<&FieldCipher>,
    next: &FieldCipher,
    select: &str,
    update: &str,
    column: &str,
) -> Result<u64> {
    let rows: Vec<(i64, Vec<u8>)> = connection
        .prepare(select)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut statement = connection.prepare(update)?;
    let mut count = 0;
    for (id, value) in rows {
        let plain = open_blob(current, column, &value)?;
        statement.execute(params![id, next.seal_blob(column, &plain)?])?;
        count += 1;
    }
    Ok(count)
}
