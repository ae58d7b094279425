//! The FHIR R4 datatypes the served resources use.
//!
//! Each type models the elements Galen reads or writes and keeps every other JSON member in
//! `extra` (FHIR extensions on primitives such as `_family`, elements Galen ignores such as
//! `Identifier.assigner`), so a datatype read and written again is the same JSON. Optional elements
//! are omitted when absent and lists when empty: FHIR forbids `null` and `[]`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Members of a JSON object that a type does not model, kept verbatim.
pub(crate) type Extra = Map<String, Value>;

/// `Coding`: one code in one code system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coding {
    /// The code system URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The code system's display text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Coding {
    /// A coding with a system, a code and a display.
    pub fn new(system: &str, code: impl Into<String>, display: Option<&str>) -> Coding {
        Coding {
            system: Some(system.to_owned()),
            code: Some(code.into()),
            display: display.map(str::to_owned),
            extra: Extra::new(),
        }
    }

    /// Whether this coding is `code` in `system`.
    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

/// `CodeableConcept`: codings of one concept in several systems, plus text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeableConcept {
    /// The codings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    /// Plain-language text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl CodeableConcept {
    /// A concept of one coding, with the coding's display as text.
    pub fn single(system: &str, code: impl Into<String>, display: Option<&str>) -> CodeableConcept {
        CodeableConcept {
            coding: vec![Coding::new(system, code, display)],
            text: display.map(str::to_owned),
            extra: Extra::new(),
        }
    }

    /// Whether any coding is `code` in `system`.
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.coding.iter().any(|coding| coding.is(system, code))
    }
}

/// `Quantity`: a measured amount with its unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quantity {
    /// The numerical value. A JSON number rather than `f64` so that what a client sent (`72` or
    /// `72.0`) is written back as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Number>,
    /// `<`, `<=`, `>=` or `>`: how to read the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparator: Option<String>,
    /// Human-readable unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The unit's code system (UCUM for Galen's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The unit's code in `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Quantity {
    /// The value as a JSON number: whole numbers without a fraction (`72`, not `72.0`), `None` for
    /// NaN and infinities (which JSON cannot carry).
    pub fn decimal(value: f64) -> Option<Number> {
        // 2^53: beyond it not every integer is representable, so keep the float form.
        const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;
        if value.fract() == 0.0 && value.abs() < EXACT_INTEGER_LIMIT {
            // Exact: the value is a whole number well inside i64.
            Some(Number::from(value as i64))
        } else {
            Number::from_f64(value)
        }
    }

    /// The value as `f64`.
    pub fn value_f64(&self) -> Option<f64> {
        self.value.as_ref().and_then(Number::as_f64)
    }
}

/// `Reference`: a link to another resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// Relative (`Patient/12`) or absolute URL of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The target's resource type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    /// A business identifier of the target, when its URL is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    /// Text for the reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Reference {
    /// A relative literal reference `{resource_type}/{id}`.
    pub fn to(resource_type: &str, id: impl std::fmt::Display) -> Reference {
        Reference {
            reference: Some(format!("{resource_type}/{id}")),
            ..Reference::default()
        }
    }
}

/// `Identifier`: a business identifier qualified by its system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identifier {
    /// `usual`, `official`, `temp`, `secondary` or `old`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// What kind of identifier (e.g. v2-0203 `MR`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeableConcept>,
    /// The namespace URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The identifier within `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `HumanName`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanName {
    /// `usual`, `official`, `temp`, `nickname`, `anonymous`, `old` or `maiden`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// The full name as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Given names, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given: Vec<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Period`: a time interval; either end may be open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    /// Start, inclusive (FHIR dateTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End, inclusive (FHIR dateTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Meta`: version, update time and claimed profiles of a resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Version of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// When the resource last changed (FHIR instant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// Profiles the resource claims to conform to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Extension`: a value (or nested extensions) identified by a URL.
///
/// Only `valueString` and `valueCode` are modelled; every other `value[x]` stays in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    /// The extension's definition.
    pub url: String,
    /// A string value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_string: Option<String>,
    /// A code value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_code: Option<String>,
    /// Nested extensions (of a complex extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Extension {
    /// A simple extension with a string value.
    pub fn string(url: &str, value: impl Into<String>) -> Extension {
        Extension {
            url: url.to_owned(),
            value_string: Some(value.into()),
            ..Extension::default()
        }
    }

    /// The first nested extension with `url`.
    pub fn nested(&self, url: &str) -> Option<&Extension> {
        self.extension.iter().find(|nested| nested.url == url)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_members_survive_a_round_trip() {
        let input = json!({
            "use": "official",
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "userSelected": true }] },
            "system": "urn:oid:1.2.3.4",
            "value": "MRN-1",
            "_value": { "extension": [{ "url": "http://example.org/checksum", "valueString": "7" }] },
            "period": { "start": "2020-01-01" },
            "assigner": { "display": "Hospital" }
        });
        let identifier: Identifier = serde_json::from_value(input.clone()).expect("identifier");
        assert_eq!(identifier.value.as_deref(), Some("MRN-1"));
        assert!(identifier.extra.contains_key("assigner"));
        assert_eq!(
            serde_json::to_value(&identifier).expect("serialises"),
            input
        );
    }

    #[test]
    fn absent_elements_are_omitted_not_null() {
        let quantity = Quantity {
            value: Quantity::decimal(72.0),
            ..Quantity::default()
        };
        assert_eq!(
            serde_json::to_value(&quantity).expect("serialises"),
            json!({ "value": 72 })
        );
        let name = HumanName::default();
        assert_eq!(serde_json::to_value(&name).expect("serialises"), json!({}));
    }

    #[test]
    fn decimals_keep_their_written_form() {
        assert_eq!(Quantity::decimal(72.0), Some(Number::from(72)));
        assert_eq!(Quantity::decimal(-3.0), Some(Number::from(-3)));
        assert_eq!(Quantity::decimal(36.6).and_then(|n| n.as_f64()), Some(36.6));
        assert_eq!(Quantity::decimal(f64::NAN), None);
        assert_eq!(Quantity::decimal(f64::INFINITY), None);
        assert_eq!(
            Quantity::decimal(1e300).and_then(|n| n.as_f64()),
            Some(1e300)
        );
        for text in [r#"{"value":72}"#, r#"{"value":72.0}"#, r#"{"value":0.25}"#] {
            let quantity: Quantity = serde_json::from_str(text).expect("quantity");
            assert_eq!(serde_json::to_string(&quantity).expect("serialises"), text);
        }
    }

    #[test]
    fn wrong_json_types_are_refused() {
        assert!(serde_json::from_value::<Quantity>(json!({ "value": "72" })).is_err());
        assert!(serde_json::from_value::<HumanName>(json!({ "given": "Ann" })).is_err());
        assert!(
            serde_json::from_value::<Extension>(json!({ "valueString": "x" })).is_err(),
            "url is required"
        );
    }
}
