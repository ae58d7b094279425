//! Galen's measurement JSON, shared by the HTTP endpoint and the MQTT listener:
//! `{device, code, value, unit, time, id?}`, one item parsed at a time so that one bad item cannot
//! take the others down.

use std::borrow::Cow;

use galen_model::{Rejection, RejectionReason, Timestamp};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireMeasurement<'a> {
    /// Required over HTTP; over MQTT the topic names the device.
    #[serde(default, borrow)]
    pub(crate) device: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) code: Cow<'a, str>,
    pub(crate) value: f64,
    #[serde(borrow)]
    pub(crate) unit: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) time: Cow<'a, str>,
    /// A string or a number; kept as its text.
    #[serde(default, borrow)]
    pub(crate) id: Option<&'a RawValue>,
}

/// Reads the device serial out of an item that failed to parse, for the dead letter.
pub(crate) fn claimed_device(raw: &str) -> Option<String> {
    serde_json::from_str::<Value>(raw)
        .ok()?
        .get("device")?
        .as_str()
        .map(str::to_owned)
}

/// One item of a request after parsing.
pub(crate) enum Parsed<'a> {
    Item {
        wire: WireMeasurement<'a>,
        time: Timestamp,
        /// The id as text, whether it was sent as a string or a number.
        id: Option<Cow<'a, str>>,
    },
    Unreadable {
        rejection: Rejection,
        /// The device serial, if the item names one, for the dead letter.
        device: Option<String>,
    },
}

pub(crate) fn parse_item(raw: &RawValue) -> Parsed<'_> {
    let unreadable = |rejection| Parsed::Unreadable {
        rejection,
        device: claimed_device(raw.get()),
    };
    let wire: WireMeasurement<'_> = match serde_json::from_str(raw.get()) {
        Ok(wire) => wire,
        Err(error) => {
            let message = format!(
                "item is not a measurement: {}",
                galen_fhir::redact::json_error(&error)
            );
            return unreadable(Rejection::new(RejectionReason::Malformed, message));
        }
    };
    let time = match Timestamp::parse_rfc3339(&wire.time) {
        Ok(time) => time,
        Err(error) => {
            return unreadable(Rejection::new(RejectionReason::BadTime, error.to_string()));
        }
    };
    let id = wire.id.map(|raw_id| {
        serde_json::from_str::<Cow<'_, str>>(raw_id.get()).unwrap_or(Cow::Borrowed(raw_id.get()))
    });
    Parsed::Item { wire, time, id }
}
