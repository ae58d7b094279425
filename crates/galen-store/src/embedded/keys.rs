//! The data key of an encrypted store (see [`crate::crypto`]): table `data_keys`, one row, the
//! data key wrapped under the master key whose id it names.

use rusqlite::{Connection, OptionalExtension, params};

use crate::crypto::{FieldCipher, MasterKey};
use crate::error::{Error, Result};

/// The stored data key: id, master key id, wrapped key.
fn stored(connection: &Connection) -> Result<Option<(u32, String, Vec<u8>)>> {
    Ok(connection
        .query_row(
            "SELECT id, master_key_id, wrapped FROM data_keys ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get::<_, u32>(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?)
}

/// The cipher of the store on `connection`: the stored data key unwrapped with `master`, a new one
/// when the store has none yet, or `None` for a store without encryption. Refuses a store whose
/// data key is wrapped under another master key, and an encrypted store opened without a key.
pub(crate) fn open_cipher(
    connection: &Connection,
    master: Option<&MasterKey>,
) -> Result<Option<FieldCipher>> {
    match (stored(connection)?, master) {
        (None, None) => Ok(None),
        (Some((id, master_id, _)), None) => Err(Error::Invalid(format!(
            "this data directory is encrypted (data key {id} under master key '{master_id}'): give its master key (--data-key-file or GALEN_DATA_KEY)"
        ))),
        (Some((id, master_id, wrapped)), Some(master)) => {
            if master_id != master.id() {
                return Err(Error::Invalid(format!(
                    "the data key is under master key '{master_id}', but the key given is '{}'",
                    master.id()
                )));
            }
            Ok(Some(FieldCipher::new(id, master.unwrap(id, &wrapped)?)))
        }
        (None, Some(master)) => Ok(Some(create(connection, master, 1)?)),
    }
}

/// Makes data key `id`, stores it wrapped under `master`, and returns its cipher.
pub(crate) fn create(connection: &Connection, master: &MasterKey, id: u32) -> Result<FieldCipher> {
    let (cipher, key) = FieldCipher::generate(id)?;
    connection.execute(
        "INSERT INTO data_keys (id, master_key_id, wrapped) VALUES (?1, ?2, ?3)",
        params![id, master.id(), master.wrap(id, &key)?],
    )?;
    Ok(cipher)
}
