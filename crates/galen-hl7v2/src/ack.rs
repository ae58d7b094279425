//! Acknowledgements: `MSH` + `MSA` (+ one `ERR` per problem), in original mode (AA/AE/AR) or,
//! when the sender filled MSH-15, enhanced mode (CA/CE/CR).

use crate::message::Delimiters;
use crate::oru::{Diagnostic, Header, Severity};

/// The outcome to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (possibly with warnings).
    Accepted,
    /// Stored in part, or not stored because of an error in its content.
    Error,
    /// Refused as a whole (not a message Galen takes).
    Rejected,
}

/// The MSA-1 code for `outcome`, in the mode the original asked for.
pub fn ack_code(original: &Header, outcome: Outcome) -> &'static str {
    let enhanced = !original.accept_ack_type.trim().is_empty();
    match (enhanced, outcome) {
        (false, Outcome::Accepted) => "AA",
        (false, Outcome::Error) => "AE",
        (false, Outcome::Rejected) => "AR",
        (true, Outcome::Accepted) => "CA",
        (true, Outcome::Error) => "CE",
        (true, Outcome::Rejected) => "CR",
    }
}

/// Builds the ACK text (segments separated by CR, no MLLP framing). `control_id` is the ACK's own
/// MSH-10 and `timestamp` its MSH-7 (see [`crate::format_time`]).
pub fn build_ack(
    original: &Header,
    outcome: Outcome,
    diagnostics: &[Diagnostic],
    control_id: &str,
    timestamp: &str,
) -> String {
    let d = Delimiters::default();
    let escape = |text: &str| d.escape(text);
    let version = if original.version.is_empty() {
        "2.6".to_owned()
    } else {
        escape(&original.version)
    };
    let mut ack = format!(
        "MSH{f}{enc}{f}{app}{f}{facility}{f}{to_app}{f}{to_facility}{f}{timestamp}{f}{f}ACK{c}{event}{c}ACK{f}{control}{f}P{f}{version}",
        f = d.field,
        c = d.component,
        enc = d.encoding_characters(),
        app = escape(&original.receiving_application),
        facility = escape(&original.receiving_facility),
        to_app = escape(&original.sending_application),
        to_facility = escape(&original.sending_facility),
        event = escape(&original.trigger_event),
        control = escape(control_id),
    );
    ack.push('\r');
    let legacy = before_2_5(&version);
    ack.push_str(&format!(
        "MSA{f}{code}{f}{original}",
        f = d.field,
        code = ack_code(original, outcome),
        original = escape(&original.control_id)
    ));
    // Before 2.5, ERR has only ERR-1 (no severity or user message): MSA-3 carries the first
    // problem in words.
    if let (true, Some(first)) = (legacy, diagnostics.first()) {
        ack.push_str(&format!("{f}{}", escape(&first.message), f = d.field));
    }
    ack.push('\r');
    for diagnostic in diagnostics {
        if legacy {
            // ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&HL70357.
            ack.push_str(&format!(
                "ERR{f}{segment}{c}{occurrence}{c}{field}{c}{code}{s}{text}{s}HL70357\r",
                f = d.field,
                c = d.component,
                s = d.subcomponent,
                segment = diagnostic.segment,
                occurrence = diagnostic.occurrence,
                field = diagnostic
                    .field
                    .map(|field| field.to_string())
                    .unwrap_or_default(),
                code = diagnostic.code.code(),
                text = escape(diagnostic.code.text()),
            ));
            continue;
        }
        let location = match diagnostic.field {
            Some(field) => format!(
                "{}{c}{}{c}{field}",
                diagnostic.segment,
                diagnostic.occurrence,
                c = d.component
            ),
            None => format!(
                "{}{c}{}",
                diagnostic.segment,
                diagnostic.occurrence,
                c = d.component
            ),
        };
        let severity = match diagnostic.severity {
            Severity::Error => "E",
            Severity::Warning => "W",
        };
        // ERR-2 location, ERR-3 HL7 error code (CWE from table 0357), ERR-4 severity, ERR-8 user
        // message.
        ack.push_str(&format!(
            "ERR{f}{f}{location}{f}{code}{c}{text}{c}HL70357{f}{severity}{f}{f}{f}{f}{message}",
            f = d.field,
            c = d.component,
            code = diagnostic.code.code(),
            text = escape(diagnostic.code.text()),
            message = escape(&diagnostic.message),
        ));
        ack.push('\r');
    }
    ack
}

/// Whether `version` (MSH-12) is older than 2.5, whose ERR segment has only ERR-1.
fn before_2_5(version: &str) -> bool {
    let mut parts = version.split('.');
    let major = parts
        .next()
        .and_then(|part| part.trim().parse::<u32>().ok());
    let minor = parts
        .next()
        .and_then(|part| part.trim().parse::<u32>().ok());
    matches!((major, minor), (Some(2), Some(minor)) if minor < 5)
}
