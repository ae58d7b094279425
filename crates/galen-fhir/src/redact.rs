//! Error messages about JSON input that do not repeat the input.
//!
//! A value in the wrong place is often the very data that must not leak: a patient's name where a
//! number belongs, an MRN as an id, a birth date as a measurement time. Galen's error messages
//! therefore name the element and what is expected, never the value received (answers, dead
//! letters and logs can travel further than the request did). serde's messages quote the value
//! (`invalid type: string "Ada Lovelace", expected f64`, ``unknown field `x` ``); the functions
//! here keep their structure and position and replace the quoted input. Used for FHIR bodies here
//! and for Galen's native JSON API in the server.

/// `message`, a serde or serde_json error message, with every quoted piece of input replaced:
///
/// - `invalid type: string "…", expected …` and `invalid value: …` keep the kind (`string`,
///   `integer`, …) and drop the value;
/// - ``unknown field `…` `` and ``unknown variant `…` `` drop the name (the expected ones, from
///   the schema, stay);
/// - axum's ``Cannot parse `…` to a `T` `` and ``… with value `…` to a `T` `` (a path segment)
///   drop the segment.
///
/// Messages without such pieces (syntax errors with their line and column, missing fields) are
/// returned as they are.
pub fn serde_message(message: &str) -> String {
    let mut text = message.to_owned();
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some(start) = text.find(marker) {
            let from = start + marker.len();
            // The expected part is the schema's; the value comes before its last ", expected".
            if let Some(length) = text[from..].rfind(", expected") {
                let unexpected = &text[from..from + length];
                if !unexpected.contains(['`', '"', '\'']) {
                    // `sequence`, `map`, `null`: a kind, no value.
                    continue;
                }
                let kind = unexpected
                    .split(['`', '"', '\''])
                    .next()
                    .unwrap_or_default()
                    .trim();
                let kind = if kind.is_empty() { "a value" } else { kind };
                let replacement = format!("{kind} (not shown)");
                text.replace_range(from..from + length, &replacement);
            }
        }
    }
    for (marker, ends) in [
        ("unknown field `", ["`, expected", "`, there are no fields"]),
        (
            "unknown variant `",
            ["`, expected", "`, there are no variants"],
        ),
        ("with value `", ["` to a `", "` to a `"]),
        ("Cannot parse `", ["` to a `", "` to a `"]),
    ] {
        if let Some(start) = text.find(marker) {
            let from = start + marker.len() - 1;
            let end = ends
                .iter()
                .filter_map(|end| text[from + 1..].rfind(end))
                .max()
                .or_else(|| text[from + 1..].rfind('`'));
            if let Some(end) = end {
                text.replace_range(from..=from + 1 + end, "(not shown)");
            }
        }
    }
    text
}

/// A serde_json error as a message without the input it quotes (see [`serde_message`]).
pub fn json_error(error: &serde_json::Error) -> String {
    serde_message(&error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Wire {
        value: f64,
        #[serde(default)]
        kind: Option<Kind>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Monitor,
    }

    fn message_for(json: &str) -> String {
        let error = serde_json::from_str::<Wire>(json).expect_err("refused");
        json_error(&error)
    }

    #[test]
    fn values_and_names_from_the_input_are_not_repeated() {
        let cases = [
            (
                r#"{"value": "Ada Lovelace, expected nothing"}"#,
                "invalid type: string (not shown), expected f64 at line 1 column 42",
            ),
            (
                r#"{"value": true}"#,
                "invalid type: boolean (not shown), expected f64 at line 1 column 14",
            ),
            (
                r#"{"value": 1, "Ada `Lovelace`": 1}"#,
                "unknown field (not shown), expected `value` or `kind` at line 1 column 29",
            ),
            (
                r#"{"value": 1, "kind": "MRN-0042"}"#,
                "unknown variant (not shown), expected `monitor` at line 1 column 31",
            ),
            (
                r#"{"value": [1]}"#,
                "invalid type: sequence, expected f64 at line 1 column 10",
            ),
            (
                r#"{"value": 1"#,
                "EOF while parsing an object at line 1 column 11",
            ),
            (
                r#"{"kind": "monitor"}"#,
                "missing field `value` at line 1 column 19",
            ),
        ];
        for (json, expected) in cases {
            // The position stays, so the client can find the element.
            assert_eq!(message_for(json), expected, "{json}");
        }
        for json in [
            r#"{"value": "Ada Lovelace"}"#,
            r#"{"Ada Lovelace": 1}"#,
            r#"{"value": 1, "kind": "Ada Lovelace"}"#,
        ] {
            assert!(!message_for(json).contains("Lovelace"), "{json}");
        }
        assert_eq!(
            serde_message("Invalid URL: Cannot parse `MRN-0042` to a `i64`"),
            "Invalid URL: Cannot parse (not shown) to a `i64`"
        );
        assert_eq!(
            serde_message("Invalid URL: Cannot parse value at index 0 with value `Ada` to a `i64`"),
            "Invalid URL: Cannot parse value at index 0 with value (not shown) to a `i64`"
        );
        assert_eq!(
            serde_message("invalid value: integer `19370513`, expected a date"),
            "invalid value: integer (not shown), expected a date"
        );
    }
}
