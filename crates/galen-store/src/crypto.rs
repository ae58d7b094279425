//! Encryption at rest of patient-identifying data: AES-256-GCM with envelope keys.
//!
//! **Keys.** The *master key* (key-encryption key) comes from outside the data directory: a key
//! file or an environment variable, in the form `<key id>:<64 hex digits>` ([`MasterKey::parse`];
//! `galen keys generate` writes one). It never touches the database. The *data key* (32 random
//! bytes) encrypts the values; it is stored in table `data_keys` only wrapped (AES-256-GCM) under
//! the master key, beside the master key's id. Each sealed value starts with the id of the data
//! key that sealed it.
//!
//! **Values.** A sealed text is `enc1:` + base64(data key id, 4 bytes big-endian || 96-bit random
//! nonce || ciphertext and 128-bit tag); a sealed blob is the same bytes after the magic
//! [`BLOB_MAGIC`]. The additional authenticated data is the column's name (`patients.family`), so
//! a value moved to another column does not decrypt. Values without the prefix are plaintext
//! written before encryption was turned on; they are read as they are, and `galen keys rotate`
//! seals them.
//!
//! **Uniqueness of encrypted identifiers.** Sealing is randomised, so a patient's identifier is
//! sealed in `identifier_sealed` and the unique column `identifier_value` holds a *blind index*:
//! `idx1:` + hex(HMAC-SHA-256 under a key derived from the data key, over the identifier). Equal
//! identifiers give equal indexes, so a duplicate registration is still refused, and the index
//! reveals nothing else without the key.
//!
//! **Rotation.** `galen keys rotate` (server stopped) makes a new data key under a new master key,
//! re-seals every value and index in one transaction and drops the old data key: after it, the old
//! master key opens nothing.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// The prefix of a sealed text.
pub const TEXT_PREFIX: &str = "enc1:";
/// The prefix of a blind index.
pub const INDEX_PREFIX: &str = "idx1:";
/// The first bytes of a sealed blob.
pub const BLOB_MAGIC: &[u8] = b"GENC\x01";

/// The master key: its id and its 256 bits. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Parses `<id>:<64 hex digits>` (surrounding whitespace ignored). The id is 1 to 64 ASCII
    /// letters, digits, `-`, `_` or `.`.
    pub fn parse(text: &str) -> Result<MasterKey> {
        let invalid = |why: &str| Error::Invalid(format!("data key: {why}"));
        let (id, hex) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| invalid("expected <key id>:<64 hex digits>"))?;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
        if !id_ok {
            return Err(invalid(
                "the key id must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if hex.len() != 64 {
            return Err(invalid("the key must be 64 hex digits (256 bits)"));
        }
        let mut key = [0u8; 32];
        for (index, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16)
                .map_err(|_| invalid("the key must be 64 hex digits (256 bits)"))?;
        }
        Ok(MasterKey {
            id: id.to_owned(),
            key,
        })
    }

    /// A new random master key named `id`, as `<id>:<hex>` text (for a key file).
    pub fn generate(id: &str) -> Result<String> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Backend("the system random generator failed".into()))?;
        let text: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
        let line = format!("{id}:{text}");
        MasterKey::parse(&line)?;
        Ok(line)
    }

    /// The key's id, stored beside every data key it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps a data key: nonce || ciphertext and tag, bound to the data key's id.
    pub(crate) fn wrap(&self, data_key_id: u32, data_key: &[u8; 32]) -> Result<Vec<u8>> {
        let aad = format!("galen data key {data_key_id}");
        seal_bytes(&self.key, &[], data_key, aad.as_bytes())
    }

    /// Unwraps what [`MasterKey::wrap`] made.
    pub(crate) fn unwrap(&self, data_key_id: u32, wrapped: &[u8]) -> Result<[u8; 32]> {
        let aad = format!("galen data key {data_key_id}");
        let plain = open_bytes(&self.key, wrapped, aad.as_bytes()).map_err(|_| {
            Error::Invalid(format!(
                "data key {data_key_id} does not open with master key '{}': the key is wrong",
                self.id
            ))
        })?;
        plain
            .try_into()
            .map_err(|_| Error::Corrupt(format!("data key {data_key_id} has the wrong length")))
    }
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Backend("AES-256-GCM key".into()))
}

/// `prefix || nonce || ciphertext+tag` of `plain` under `key`, with `aad`.
fn seal_bytes(key: &[u8; 32], prefix: &[u8], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::Backend("the system random generator failed".into()))?;
    let mut out = Vec::with_capacity(prefix.len() + NONCE_LEN + plain.len() + 16);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    aead_key(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| Error::Backend("AES-256-GCM sealing failed".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens `nonce || ciphertext+tag` (after any prefix the caller removed).
fn open_bytes(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(Error::Corrupt("a sealed value is truncated".into()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| Error::Corrupt("a sealed value's nonce".into()))?;
    let mut body = body.to_vec();
    let plain = aead_key(key)?
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| Error::Corrupt("a sealed value fails authentication".into()))?;
    Ok(plain.to_vec())
}

/// The data key in use, and what seals and opens values with it.
#[derive(Clone)]
pub struct FieldCipher {
    id: u32,
    key: [u8; 32],
    index: hmac::Key,
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FieldCipher")
            .field("data_key", &self.id)
            .finish_non_exhaustive()
    }
}

impl FieldCipher {
    /// The cipher of data key `id`.
    pub(crate) fn new(id: u32, key: [u8; 32]) -> FieldCipher {
        // The index key is derived from the data key, so rotating the data key re-keys the index.
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &key),
            b"galen blind index",
        );
        FieldCipher {
            id,
            key,
            index: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A new random data key with id `id`.
    pub(crate) fn generate(id: u32) -> Result<(FieldCipher, [u8; 32])> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Backend("the system random generator failed".into()))?;
        Ok((FieldCipher::new(id, key), key))
    }

    /// The data key's id.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    fn seal(&self, column: &str, plain: &[u8]) -> Result<Vec<u8>> {
        seal_bytes(&self.key, &self.id.to_be_bytes(), plain, column.as_bytes())
    }

    fn open(&self, column: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let Some((id, rest)) = sealed.split_first_chunk::<4>() else {
            return Err(Error::Corrupt(format!(
                "{column}: a sealed value is truncated"
            )));
        };
        let id = u32::from_be_bytes(*id);
        if id != self.id {
            return Err(Error::Invalid(format!(
                "{column}: a value is sealed with data key {id}, which this store does not hold (data key {} is in use)",
                self.id
            )));
        }
        open_bytes(&self.key, rest, column.as_bytes())
            .map_err(|_| Error::Corrupt(format!("{column}: a sealed value fails authentication")))
    }

    /// Seals a text value of `column`.
    pub fn seal_text(&self, column: &str, plain: &str) -> Result<String> {
        let sealed = self.seal(column, plain.as_bytes())?;
        Ok(format!("{TEXT_PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Opens a text value of `column`; plaintext (no prefix) is returned as it is.
    pub fn open_text(&self, column: &str, stored: &str) -> Result<String> {
        let Some(encoded) = stored.strip_prefix(TEXT_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let sealed = STANDARD
            .decode(encoded)
            .map_err(|_| Error::Corrupt(format!("{column}: a sealed value is not base64")))?;
        String::from_utf8(self.open(column, &sealed)?)
            .map_err(|_| Error::Corrupt(format!("{column}: a sealed value is not UTF-8")))
    }

    /// Seals a blob value of `column`.
    pub fn seal_blob(&self, column: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = BLOB_MAGIC.to_vec();
        out.extend_from_slice(&self.seal(column, plain)?);
        Ok(out)
    }

    /// Opens a blob value of `column`; a blob without the magic is returned as it is.
    pub fn open_blob(&self, column: &str, stored: &[u8]) -> Result<Vec<u8>> {
        match stored.strip_prefix(BLOB_MAGIC) {
            Some(sealed) => self.open(column, sealed),
            None => Ok(stored.to_vec()),
        }
    }

    /// The blind index of an identifier: equal for equal `(system, value)`, meaningless without
    /// the key.
    pub fn blind_index(&self, system: &str, value: &str) -> String {
        let mut message = Vec::with_capacity(system.len() + value.len() + 1);
        message.extend_from_slice(system.as_bytes());
        message.push(0x1f);
        message.extend_from_slice(value.as_bytes());
        let tag = hmac::sign(&self.index, &message);
        let hex: String = tag
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("{INDEX_PREFIX}{hex}")
    }
}

/// Seals `plain` for `column` when a cipher is in use.
pub(crate) fn seal_text(cipher: Option<&FieldCipher>, column: &str, plain: &str) -> Result<String> {
    match cipher {
        Some(cipher) => cipher.seal_text(column, plain),
        None => Ok(plain.to_owned()),
    }
}

/// Opens a stored text of `column`: a sealed value needs the cipher.
pub(crate) fn open_text(
    cipher: Option<&FieldCipher>,
    column: &str,
    stored: &str,
) -> Result<String> {
    match cipher {
        Some(cipher) => cipher.open_text(column, stored),
        None if stored.starts_with(TEXT_PREFIX) => Err(Error::Invalid(format!(
            "{column} is encrypted: open the store with its data key"
        ))),
        None => Ok(stored.to_owned()),
    }
}

/// Opens a stored blob of `column`.
pub(crate) fn open_blob(
    cipher: Option<&FieldCipher>,
    column: &str,
    stored: &[u8],
) -> Result<Vec<u8>> {
    match cipher {
        Some(cipher) => cipher.open_blob(column, stored),
        None if stored.starts_with(BLOB_MAGIC) => Err(Error::Invalid(format!(
            "{column} is encrypted: open the store with its data key"
        ))),
        None => Ok(stored.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> FieldCipher {
        FieldCipher::new(7, [9; 32])
    }

    #[test]
    fn master_keys_parse_strictly_and_never_print() {
        let line = MasterKey::generate("k-2026").expect("generate");
        let key = MasterKey::parse(&format!("  {line}\n")).expect("parse");
        assert_eq!(key.id(), "k-2026");
        assert!(!format!("{key:?}").contains(&line[7..]));
        for bad in [
            "",
            "nokey",
            ":00",
            "id:00",
            "bad id:".to_owned().as_str(),
            &format!("k:{}", "g".repeat(64)),
        ] {
            assert!(MasterKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_round_trip_and_are_bound_to_their_column_and_key() {
        let cipher = cipher();
        let sealed = cipher
            .seal_text("patients.family", "Lovelace")
            .expect("seal");
        assert!(sealed.starts_with(TEXT_PREFIX) && !sealed.contains("Lovelace"));
        assert_ne!(
            sealed,
            cipher
                .seal_text("patients.family", "Lovelace")
                .expect("seal"),
            "random nonce"
        );
        assert_eq!(
            cipher.open_text("patients.family", &sealed).expect("open"),
            "Lovelace"
        );
        assert!(matches!(
            cipher.open_text("patients.given", &sealed),
            Err(Error::Corrupt(_))
        ));
        let other = FieldCipher::new(7, [8; 32]);
        assert!(other.open_text("patients.family", &sealed).is_err());
        let rotated = FieldCipher::new(8, [9; 32]);
        assert!(matches!(
            rotated.open_text("patients.family", &sealed),
            Err(Error::Invalid(_))
        ));
        assert_eq!(
            cipher
                .open_text("patients.family", "plain")
                .expect("legacy"),
            "plain"
        );
        let blob = cipher
            .seal_blob("dead_letters.payload", b"PID|||MRN-1")
            .expect("seal");
        assert_eq!(
            cipher
                .open_blob("dead_letters.payload", &blob)
                .expect("open"),
            b"PID|||MRN-1"
        );
        assert!(
            open_text(None, "patients.family", &sealed).is_err(),
            "no key, no value"
        );
    }

    #[test]
    fn a_flipped_bit_fails_authentication() {
        let cipher = cipher();
        let mut blob = cipher
            .seal_blob("break_glass.reason", b"reason")
            .expect("seal");
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(
            cipher.open_blob("break_glass.reason", &blob),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn blind_indexes_are_deterministic_per_key() {
        let cipher = cipher();
        assert_eq!(
            cipher.blind_index("urn:mrn", "1"),
            cipher.blind_index("urn:mrn", "1")
        );
        assert_ne!(
            cipher.blind_index("urn:mrn", "1"),
            cipher.blind_index("urn:mrn", "2")
        );
        assert_ne!(
            cipher.blind_index("urn:mr", "n1"),
            cipher.blind_index("urn:mrn", "1")
        );
        assert_ne!(
            cipher.blind_index("urn:mrn", "1"),
            FieldCipher::new(8, [1; 32]).blind_index("urn:mrn", "1")
        );
    }

    #[test]
    fn data_keys_wrap_under_the_master_key() {
        let master =
            MasterKey::parse(&MasterKey::generate("m1").expect("generate")).expect("parse");
        let wrapped = master.wrap(3, &[5; 32]).expect("wrap");
        assert_eq!(master.unwrap(3, &wrapped).expect("unwrap"), [5; 32]);
        let other = MasterKey::parse(&MasterKey::generate("m2").expect("generate")).expect("parse");
        assert!(other.unwrap(3, &wrapped).is_err());
    }
}
