//! Wards and beds as read-only FHIR `Location`s, derived from the patients' ward and bed.
//!
//! Galen stores no locations of its own: a ward exists while a registered patient is placed on
//! it, and a bed while a patient occupies it ([`locations_of`]). A patient whose ward is empty (or
//! only whitespace) is not placed and adds nothing; a bed without a ward cannot occur (the model
//! refuses it) and would be skipped too.
//!
//! **Content.** Every Location has `status` `active` and `mode` `instance` (a real place, not a
//! kind of place). A ward has `physicalType` `wa` and its name as `name`. A bed has `physicalType`
//! `bd`, its label as `name`, and `partOf` pointing to its ward's Location (with the ward's name
//! as `display`). Names are served exactly as registered.
//!
//! **Ids.** Ward and bed names are free text of any length, but a FHIR id is at most 64
//! characters of `[A-Za-z0-9.-]`. An id is therefore a readable slug plus a hash of the exact
//! names, separated by dots:
//! - ward: `ward.{slug of the ward}.{hash}`, e.g. `ward.icu-north.4b26fa5e8d6253a6`;
//! - bed: `bed.{slug of the ward}.{slug of the bed}.{hash}`, e.g. `bed.icu-north.4.3b9b9aae2ba7958f`.
//!
//! The slug is the name lower-cased, with every run of characters other than ASCII letters and
//! digits turned into one `-`, trimmed of `-` and cut to 40 (ward) or 20 (each part of a bed)
//! characters; a slug that comes out empty is left out with its dot. The hash is 64-bit FNV-1a
//! over the kind (`ward`/`bed`) and the exact names, each preceded by its length, written as 16
//! hex digits. So:
//! - ids are stable: they depend on the names alone, never on the order patients were
//!   registered in, and FNV-1a is fully specified (unlike Rust's `DefaultHasher`);
//! - names differing only in case, spacing or punctuation (`ICU` and `icu`, `Bay 1` and `Bay-1`)
//!   share a slug but are different places with different ids;
//! - two different names get the same id only if they also collide in 64 bits of hash, which for
//!   names a hospital gives its wards is not a practical concern (it is no defence against
//!   someone crafting colliding ward names on purpose, which needs registry write access anyway).
//!
//! Ids are opaque to clients: the server resolves one by computing the ids of the current wards
//! and beds, never by decoding it. Renaming a ward (every patient on it updated) gives it, and its
//! beds, new ids; the old ids then answer `404`.
//!
//! **Order and paging.** Locations sort by [`LocationKey`]: by ward name, each ward followed by
//! its beds by label (plain string order). A search resumes after the last key returned
//! ([`LocationKey::cursor`]), so patients admitted or moved between pages do not shift them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::codes;
use crate::datatypes::{CodeableConcept, Extra, Meta, Reference};
use crate::resource::{FhirResource, ResourceType};

/// Longest slug of a ward in a ward's id.
const WARD_SLUG: usize = 40;
/// Longest slug of each part (ward, bed) in a bed's id.
const BED_PART_SLUG: usize = 20;

/// `Location`: a ward or a bed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Always `Location`.
    pub resource_type: ResourceType<Location>,
    /// Logical id (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// `active`, `suspended` or `inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The ward's name or the bed's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `instance` (a specific place) or `kind` (a class of places).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// What kind of place: ward (`wa`) or bed (`bd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_type: Option<CodeableConcept>,
    /// The Location this one is part of (a bed's ward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<Reference>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl FhirResource for Location {
    const TYPE: &'static str = "Location";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// A ward (`bed` is `None`) or a bed of a ward, by their exact names. The order is the order of
/// search results: by ward, a ward before its beds, beds by label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocationKey {
    /// The ward's name.
    pub ward: String,
    /// The bed's label, for a bed.
    pub bed: Option<String>,
}

impl LocationKey {
    /// The ward named `ward`.
    pub fn ward(ward: &str) -> LocationKey {
        LocationKey {
            ward: ward.to_owned(),
            bed: None,
        }
    }

    /// The bed labelled `bed` on ward `ward`.
    pub fn bed(ward: &str, bed: &str) -> LocationKey {
        LocationKey {
            ward: ward.to_owned(),
            bed: Some(bed.to_owned()),
        }
    }

    /// The logical id (see the module documentation).
    pub fn id(&self) -> String {
        match &self.bed {
            None => {
                let hash = fnv1a(&["ward", &self.ward]);
                join_id("ward", &[slug(&self.ward, WARD_SLUG)], hash)
            }
            Some(bed) => {
                let hash = fnv1a(&["bed", &self.ward, bed]);
                join_id(
                    "bed",
                    &[slug(&self.ward, BED_PART_SLUG), slug(bed, BED_PART_SLUG)],
                    hash,
                )
            }
        }
    }

    /// `Location.name`: the ward's name or the bed's label.
    pub fn name(&self) -> &str {
        self.bed.as_deref().unwrap_or(&self.ward)
    }

    /// The ward a bed is part of; `None` for a ward.
    pub fn parent(&self) -> Option<LocationKey> {
        self.bed.as_ref().map(|_| LocationKey::ward(&self.ward))
    }

    /// A search cursor that resumes after this key: `w{hex of the ward}` or
    /// `b{hex of the ward}.{hex of the bed}`, the names' UTF-8 bytes in lower-case hex.
    pub fn cursor(&self) -> String {
        match &self.bed {
            None => format!("w{}", hex(&self.ward)),
            Some(bed) => format!("b{}.{}", hex(&self.ward), hex(bed)),
        }
    }

    /// Inverse of [`LocationKey::cursor`]; `None` for anything it did not write.
    pub fn from_cursor(cursor: &str) -> Option<LocationKey> {
        if let Some(ward) = cursor.strip_prefix('w') {
            return Some(LocationKey {
                ward: unhex(ward)?,
                bed: None,
            });
        }
        let (ward, bed) = cursor.strip_prefix('b')?.split_once('.')?;
        Some(LocationKey {
            ward: unhex(ward)?,
            bed: Some(unhex(bed)?),
        })
    }
}

/// The wards and beds the patients are placed in, in search order, each once. Patients without a
/// ward add nothing; a patient with a ward but no bed adds the ward only.
pub fn locations_of<'a>(
    patients: impl IntoIterator<Item = &'a galen_model::Patient>,
) -> BTreeSet<LocationKey> {
    let mut locations = BTreeSet::new();
    for patient in patients {
        let details = &patient.details;
        if details.ward.trim().is_empty() {
            continue;
        }
        locations.insert(LocationKey::ward(&details.ward));
        if !details.bed.trim().is_empty() {
            locations.insert(LocationKey::bed(&details.ward, &details.bed));
        }
    }
    locations
}

/// A ward or a bed as a FHIR Location.
pub fn location_to_fhir(key: &LocationKey) -> Location {
    let (code, display) = match key.bed {
        None => ("wa", "Ward"),
        Some(_) => ("bd", "Bed"),
    };
    Location {
        resource_type: ResourceType::new(),
        id: Some(key.id()),
        meta: None,
        status: Some("active".to_owned()),
        name: Some(key.name().to_owned()),
        mode: Some("instance".to_owned()),
        physical_type: Some(CodeableConcept::single(
            codes::LOCATION_PHYSICAL_TYPE,
            code,
            Some(display),
        )),
        part_of: key.parent().map(|ward| Reference {
            display: Some(ward.ward.clone()),
            ..Reference::to("Location", ward.id())
        }),
        extra: Extra::new(),
    }
}

/// `{kind}.{slug}….{hash}`, leaving out empty slugs.
fn join_id(kind: &str, slugs: &[String], hash: u64) -> String {
    let mut id = kind.to_owned();
    for slug in slugs.iter().filter(|slug| !slug.is_empty()) {
        id.push('.');
        id.push_str(slug);
    }
    let _ = write!(id, ".{hash:016x}");
    id
}

/// The name lower-cased, runs of anything but ASCII letters and digits as one `-`, no `-` at
/// either end, at most `limit` characters.
fn slug(name: &str, limit: usize) -> String {
    let mut slug = String::with_capacity(limit);
    let mut gap = false;
    for character in name.chars() {
        if slug.len() >= limit {
            break;
        }
        if character.is_ascii_alphanumeric() {
            if gap && !slug.is_empty() {
                slug.push('-');
                if slug.len() >= limit {
                    break;
                }
            }
            gap = false;
            slug.push(character.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    slug.trim_end_matches('-').to_owned()
}

/// 64-bit FNV-1a over `parts`, each preceded by its length in bytes (so `["ab", "c"]` and
/// `["a", "bc"]` differ).
fn fnv1a(parts: &[&str]) -> u64 {
    parts.iter().fold(FNV_OFFSET_BASIS, |hash, part| {
        let length = u64::try_from(part.len()).unwrap_or(u64::MAX);
        fnv1a_update(fnv1a_update(hash, &length.to_le_bytes()), part.as_bytes())
    })
}

/// The FNV-1a 64-bit offset basis (the hash of nothing).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// Feeds `bytes` into a 64-bit FNV-1a hash.
fn fnv1a_update(hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

fn hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2)
        || !text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests;
