//! The crate's error: what went wrong, where (as FHIRPath), and how the server should report it.
//!
//! Every variant knows its FHIR issue type ([`Error::issue_type`]) and, where an element is at
//! fault, the FHIRPath expression of that element ([`Error::expression`]), so that
//! [`crate::outcome::from_error`] can build a precise `OperationOutcome`. Errors of a posted
//! Observation also map to the ingest pipeline's [`RejectionReason`] so the refused item can be
//! kept as a dead letter with the same reason codes as every other adapter uses.

use galen_model::RejectionReason;

use crate::outcome::IssueType;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with one element of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// A required element is absent or empty.
    Required,
    /// The element is present but its value is not acceptable.
    Invalid,
    /// A code Galen does not know (not a LOINC, MDC or Galen code of a vital sign).
    UnknownCode,
    /// A unit that is not a known UCUM or MDC unit.
    UnknownUnit,
    /// A known unit that cannot measure the coded quantity (kg for a heart rate).
    WrongUnit,
    /// The resource says the value is absent (`dataAbsentReason`), so there is nothing to store.
    DataAbsent,
    /// A date or time that is malformed, lacks an offset or is not precise enough.
    BadTime,
    /// Valid FHIR that Galen does not support (e.g. `valueString` for a vital sign).
    NotSupported,
}

impl Problem {
    /// The FHIR issue type of this problem.
    pub const fn issue_type(self) -> IssueType {
        match self {
            Problem::Required | Problem::DataAbsent => IssueType::Required,
            Problem::Invalid | Problem::WrongUnit | Problem::BadTime => IssueType::Value,
            Problem::UnknownCode | Problem::UnknownUnit => IssueType::CodeInvalid,
            Problem::NotSupported => IssueType::NotSupported,
        }
    }

    /// The ingest pipeline's reason code for an item refused for this problem.
    pub const fn rejection_reason(self) -> RejectionReason {
        match self {
            Problem::Required | Problem::Invalid | Problem::NotSupported => {
                RejectionReason::Malformed
            }
            Problem::UnknownCode => RejectionReason::UnknownCode,
            Problem::UnknownUnit => RejectionReason::UnknownUnit,
            Problem::WrongUnit => RejectionReason::WrongUnit,
            Problem::DataAbsent => RejectionReason::DataAbsent,
            Problem::BadTime => RejectionReason::BadTime,
        }
    }
}

/// Why FHIR input was refused. Messages name the element and what to fix, never the value
/// received: a value in the wrong place may be a patient's name or identifier, and an error
/// travels further than the request (logs, dead letters, proxies). See [`crate::redact`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body is not JSON, or an element has the wrong JSON type.
    #[error("the body is not valid FHIR JSON: {message}")]
    Syntax {
        /// The JSON parser's explanation.
        message: String,
    },
    /// `resourceType` is missing or names another resource than the one expected.
    #[error("resourceType must be {expected:?}, found {}", shown_type(found.as_deref()))]
    ResourceType {
        /// The resource type the endpoint takes.
        expected: &'static str,
        /// What the body said, if anything.
        found: Option<String>,
    },
    /// One element of an otherwise well-formed resource is wrong.
    #[error("{path}: {message}")]
    Element {
        /// FHIRPath of the element, e.g. `Observation.valueQuantity.unit`.
        path: String,
        /// What kind of problem.
        problem: Problem,
        /// What to fix.
        message: String,
    },
    /// A search parameter is unknown, unsupported or has a malformed value.
    #[error("search parameter {parameter}: {message}")]
    Search {
        /// The parameter as written (with its modifier, if any).
        parameter: String,
        /// [`IssueType::NotSupported`] for unknown parameters and modifiers,
        /// [`IssueType::Value`] for malformed values.
        issue: IssueType,
        /// What to fix.
        message: String,
    },
    /// A logical id that Galen never issues for this resource type.
    #[error("the {resource_type} id is not an id Galen issues")]
    Id {
        /// The resource type.
        resource_type: &'static str,
        /// The id as given.
        id: String,
    },
}

/// The `resourceType` a body gave, for a message: named when it is a resource type of FHIR R4
/// that Galen knows of, else described (it is not repeated: it may be anything a client typed).
fn shown_type(found: Option<&str>) -> String {
    /// Resource types Galen serves or refers to, and the common clinical ones a client may send
    /// by mistake.
    const KNOWN: &[&str] = &[
        "AuditEvent",
        "Bundle",
        "CapabilityStatement",
        "Consent",
        "Device",
        "DeviceMetric",
        "Encounter",
        "Flag",
        "Group",
        "Location",
        "Observation",
        "OperationOutcome",
        "Organization",
        "Parameters",
        "Patient",
        "Practitioner",
        "Subscription",
    ];
    match found {
        None => "none".to_owned(),
        Some(found) if KNOWN.contains(&found) => format!("{found:?}"),
        Some(_) => "another value".to_owned(),
    }
}

impl Error {
    /// An [`Error::Element`].
    pub fn element(path: impl Into<String>, problem: Problem, message: impl Into<String>) -> Error {
        Error::Element {
            path: path.into(),
            problem,
            message: message.into(),
        }
    }

    /// An [`Error::Search`] for a malformed value.
    pub(crate) fn search_value(parameter: &str, message: impl Into<String>) -> Error {
        Error::Search {
            parameter: parameter.to_owned(),
            issue: IssueType::Value,
            message: message.into(),
        }
    }

    /// An [`Error::Search`] for something Galen does not support.
    pub(crate) fn search_unsupported(parameter: &str, message: impl Into<String>) -> Error {
        Error::Search {
            parameter: parameter.to_owned(),
            issue: IssueType::NotSupported,
            message: message.into(),
        }
    }

    /// The FHIR issue type for `OperationOutcome.issue.code`.
    pub fn issue_type(&self) -> IssueType {
        match self {
            Error::Syntax { .. } => IssueType::Structure,
            Error::ResourceType { .. } => IssueType::Invalid,
            Error::Element { problem, .. } => problem.issue_type(),
            Error::Search { issue, .. } => *issue,
            Error::Id { .. } => IssueType::NotFound,
        }
    }

    /// The FHIRPath of the failing element, when one element is at fault.
    pub fn expression(&self) -> Option<&str> {
        match self {
            Error::Element { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The ingest pipeline's reason for refusing the item this error came from.
    pub fn rejection_reason(&self) -> RejectionReason {
        match self {
            Error::Element { problem, .. } => problem.rejection_reason(),
            _ => RejectionReason::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lower_case_and_name_the_path() {
        let error = Error::element(
            "Observation.valueQuantity.unit",
            Problem::UnknownUnit,
            "unit \"furlong\" is not a UCUM unit",
        );
        assert_eq!(
            error.to_string(),
            "Observation.valueQuantity.unit: unit \"furlong\" is not a UCUM unit"
        );
        assert_eq!(error.expression(), Some("Observation.valueQuantity.unit"));
        assert_eq!(error.issue_type(), IssueType::CodeInvalid);
        assert_eq!(error.rejection_reason(), RejectionReason::UnknownUnit);
        let missing = Error::ResourceType {
            expected: "Patient",
            found: None,
        };
        assert_eq!(
            missing.to_string(),
            "resourceType must be \"Patient\", found none"
        );
        let wrong = Error::ResourceType {
            expected: "Patient",
            found: Some("Device".to_owned()),
        };
        assert_eq!(
            wrong.to_string(),
            "resourceType must be \"Patient\", found \"Device\""
        );
        let typed = Error::ResourceType {
            expected: "Patient",
            found: Some("Ada Lovelace".to_owned()),
        };
        assert_eq!(
            typed.to_string(),
            "resourceType must be \"Patient\", found another value"
        );
        assert_eq!(wrong.expression(), None);
    }

    #[test]
    fn problems_map_to_pipeline_reasons() {
        let cases = [
            (Problem::Required, RejectionReason::Malformed),
            (Problem::Invalid, RejectionReason::Malformed),
            (Problem::NotSupported, RejectionReason::Malformed),
            (Problem::UnknownCode, RejectionReason::UnknownCode),
            (Problem::UnknownUnit, RejectionReason::UnknownUnit),
            (Problem::WrongUnit, RejectionReason::WrongUnit),
            (Problem::DataAbsent, RejectionReason::DataAbsent),
            (Problem::BadTime, RejectionReason::BadTime),
        ];
        for (problem, reason) in cases {
            assert_eq!(problem.rejection_reason(), reason, "{problem:?}");
        }
    }
}
