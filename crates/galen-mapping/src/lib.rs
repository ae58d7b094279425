//! Declarative mapping templates: arbitrary device JSON in, Galen measurements out.
//!
//! A gateway or device that cannot be changed to speak Galen's native API sends whatever JSON its
//! firmware writes. A [`Template`] (TOML or JSON, see `docs/mapping.md`) says which payloads it
//! handles (`[match]`: MQTT topic filter, a field and its value), where the device serial is, and
//! where each measurement's code, value, unit, time and id are, using a small JSONPath subset.
//! [`Template::apply`] turns one payload into a [`Mapping`]: one [`Mapped`] or [`MappingError`]
//! per item, plus the items skipped on purpose. Codes and units pass through as the device wrote
//! them (after the template's `map`); validation and unit conversion stay in
//! [`galen_model::normalize`], which [`check`] runs the way the server will.
//!
//! Templates are parsed completely when they load, so a typo is a load error naming the field
//! (`measurement[1].value.path: unexpected ']' at 7`), never a surprise on the first payload.
//! Sizes are bounded ([`MAX_ITEMS`] items per payload, path length, map size…) so a hostile
//! payload cannot make mapping slow or large.
//!
//! The crate is pure: no I/O, no clock, no logging.

mod apply;
mod path;
mod template;
mod topic;

use std::io;

use galen_model::{DeviceId, Measurement, Rejection, normalize};
use serde::Serialize;

pub use apply::{Context, MAX_ITEMS, MAX_TEXT_CHARS, Mapped, Mapping, MappingError, Skip};
pub use template::{
    MAX_MAP_ENTRIES, MAX_MEASUREMENTS, MAX_TEMPLATE_BYTES, Template, TemplateError, TemplateSet,
};

/// Result of loading templates.
pub type Result<T, E = TemplateError> = std::result::Result<T, E>;

/// What the server's normaliser would make of `mapped`: the measurement in its canonical unit, or
/// the rejection (unknown code, wrong unit, data absent, implausible…). Runs
/// [`galen_model::normalize`] with a placeholder device and "now" equal to the measurement's own
/// time, so the device registry and clock checks (unknown device, future time, too old) are not
/// part of it.
pub fn check(mapped: &Mapped) -> Result<Measurement, Rejection> {
    normalize(
        DeviceId(0),
        &mapped.code,
        mapped.value,
        &mapped.unit,
        mapped.time,
        mapped.time,
        mapped.id.clone(),
    )
}

/// Longest quotation of payload text in a message, in characters.
const EXCERPT_CHARS: usize = 60;

/// `value` as compact JSON, cut after [`EXCERPT_CHARS`] characters with `…`. Serialisation stops
/// as soon as enough is written, so a huge or deeply nested value costs no more than a small one.
pub(crate) fn excerpt<T: Serialize + ?Sized>(value: &T) -> String {
    /// Accepts bytes until full, then refuses, which aborts serialisation.
    struct Bounded(Vec<u8>);
    impl io::Write for Bounded {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            // Four bytes per character at most, plus one to know there was more.
            let room = (EXCERPT_CHARS * 4 + 1).saturating_sub(self.0.len());
            if room == 0 {
                return Err(io::Error::other("excerpt full"));
            }
            let taken = bytes.len().min(room);
            self.0.extend_from_slice(&bytes[..taken]);
            Ok(taken)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut bounded = Bounded(Vec::new());
    let complete = serde_json::to_writer(&mut bounded, value).is_ok();
    let text = match std::str::from_utf8(&bounded.0) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&bounded.0[..error.valid_up_to()]).unwrap_or_default(),
    };
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if !complete || text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn excerpts_are_short_whatever_the_value() {
        assert_eq!(excerpt("abc"), "\"abc\"");
        assert_eq!(excerpt(&json!({"a": [1, 2]})), "{\"a\":[1,2]}");
        let long = "é".repeat(1_000);
        let quoted = excerpt(long.as_str());
        assert_eq!(quoted.chars().count(), EXCERPT_CHARS + 1);
        assert!(quoted.ends_with('…'));
        let mut deep = json!(1);
        for _ in 0..100_000 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        assert_eq!(excerpt(&deep), format!("{}…", "[".repeat(EXCERPT_CHARS)));
        // serde_json's own recursive drop would overflow the stack on this value.
        let mut stack = vec![deep];
        while let Some(value) = stack.pop() {
            if let serde_json::Value::Array(elements) = value {
                stack.extend(elements);
            }
        }
    }
}
