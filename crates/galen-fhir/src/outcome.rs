//! `OperationOutcome`: how Galen tells a FHIR client what went wrong and where.
//!
//! [`OutcomeBuilder`] assembles issues (severity, a code from the R4 `IssueType` value set,
//! diagnostics, and the FHIRPath `expression` of the failing element); [`from_error`] turns this
//! crate's [`Error`] into a one-issue outcome. Internal server errors must not be rendered through
//! here with their details: use [`OutcomeBuilder::error`] with a generic diagnostic instead.

use serde::{Deserialize, Serialize};

use crate::datatypes::Extra;
use crate::error::Error;
use crate::resource::{OperationOutcome, OperationOutcomeIssue, ResourceType};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueSeverity {
    /// The interaction failed and the system may be in an inconsistent state.
    Fatal,
    /// The interaction failed.
    Error,
    /// The interaction succeeded, but something deserves attention.
    Warning,
    /// For information only.
    Information,
}

/// `OperationOutcome.issue.code`: the R4 `IssueType` value set
/// (<http://hl7.org/fhir/R4/valueset-issue-type.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueType {
    /// Content invalid against the specification or a profile.
    Invalid,
    /// A structural issue (not valid JSON, wrong JSON type).
    Structure,
    /// A required element is missing.
    Required,
    /// An element's value is invalid.
    Value,
    /// A content validation rule failed.
    Invariant,
    /// An authentication or authorisation problem.
    Security,
    /// The client needs to log in.
    Login,
    /// The user or system was not able to be authenticated.
    Unknown,
    /// The session or token expired.
    Expired,
    /// The user is not allowed to do this.
    Forbidden,
    /// Some information was not returned for policy reasons.
    Suppressed,
    /// Processing failed.
    Processing,
    /// The interaction, operation, resource or profile is not supported.
    NotSupported,
    /// An attempt to create a duplicate.
    Duplicate,
    /// Several matches where one was expected.
    MultipleMatches,
    /// The reference could not be resolved.
    NotFound,
    /// The resource was deleted.
    Deleted,
    /// The content is too long.
    TooLong,
    /// A code or system is not valid.
    CodeInvalid,
    /// An extension is not recognised or allowed.
    Extension,
    /// The operation would take too long or use too many resources.
    TooCostly,
    /// A business rule failed.
    BusinessRule,
    /// An edit conflict (version mismatch).
    Conflict,
    /// A transient failure: try again.
    Transient,
    /// A resource lock failed.
    LockError,
    /// No storage is available.
    NoStore,
    /// An unexpected internal error.
    Exception,
    /// An internal timeout.
    Timeout,
    /// Not all results could be returned.
    Incomplete,
    /// The client is sending too many requests.
    Throttled,
    /// Information only, no problem.
    Informational,
}

impl IssueType {
    /// The code as written in JSON.
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Unknown => "unknown",
            IssueType::Expired => "expired",
            IssueType::Forbidden => "forbidden",
            IssueType::Suppressed => "suppressed",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::Extension => "extension",
            IssueType::TooCostly => "too-costly",
            IssueType::BusinessRule => "business-rule",
            IssueType::Conflict => "conflict",
            IssueType::Transient => "transient",
            IssueType::LockError => "lock-error",
            IssueType::NoStore => "no-store",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Incomplete => "incomplete",
            IssueType::Throttled => "throttled",
            IssueType::Informational => "informational",
        }
    }
}

/// Builds an [`OperationOutcome`] issue by issue.
#[derive(Debug, Clone, Default)]
pub struct OutcomeBuilder {
    issues: Vec<OperationOutcomeIssue>,
}

impl OutcomeBuilder {
    /// An outcome without issues yet.
    pub fn new() -> OutcomeBuilder {
        OutcomeBuilder::default()
    }

    /// Adds an issue. `expression` is the FHIRPath of the failing element, when one is at fault.
    pub fn issue(
        mut self,
        severity: IssueSeverity,
        code: IssueType,
        diagnostics: impl Into<String>,
        expression: Option<&str>,
    ) -> OutcomeBuilder {
        let mut issue = OperationOutcomeIssue::new(severity, code, diagnostics);
        issue.expression = expression.map(str::to_owned).into_iter().collect();
        self.issues.push(issue);
        self
    }

    /// Adds an error issue.
    pub fn error(self, code: IssueType, diagnostics: impl Into<String>) -> OutcomeBuilder {
        self.issue(IssueSeverity::Error, code, diagnostics, None)
    }

    /// Adds a warning issue.
    pub fn warning(self, code: IssueType, diagnostics: impl Into<String>) -> OutcomeBuilder {
        self.issue(IssueSeverity::Warning, code, diagnostics, None)
    }

    /// The outcome. FHIR requires at least one issue: an outcome built without any reports
    /// success as one `information`/`informational` issue.
    pub fn build(self) -> OperationOutcome {
        let issue = if self.issues.is_empty() {
            vec![OperationOutcomeIssue::new(
                IssueSeverity::Information,
                IssueType::Informational,
                "all ok",
            )]
        } else {
            self.issues
        };
        OperationOutcome {
            resource_type: ResourceType::new(),
            id: None,
            issue,
            extra: Extra::new(),
        }
    }
}

/// One error issue describing `error`, with the failing element's FHIRPath as `expression`.
pub fn from_error(error: &Error) -> OperationOutcome {
    OutcomeBuilder::new()
        .issue(
            IssueSeverity::Error,
            error.issue_type(),
            error.to_string(),
            error.expression(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::Problem;

    #[test]
    fn an_element_error_names_its_path() {
        let error = Error::element(
            "Observation.valueQuantity.unit",
            Problem::Required,
            "a unit is required",
        );
        let outcome = from_error(&error);
        assert_eq!(
            serde_json::to_value(&outcome).expect("serialises"),
            json!({
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "error",
                    "code": "required",
                    "diagnostics": "Observation.valueQuantity.unit: a unit is required",
                    "expression": ["Observation.valueQuantity.unit"]
                }]
            })
        );
    }

    #[test]
    fn builder_collects_issues_in_order() {
        let outcome = OutcomeBuilder::new()
            .error(IssueType::NotSupported, "parameter _foo is not supported")
            .warning(IssueType::Incomplete, "results truncated")
            .issue(
                IssueSeverity::Fatal,
                IssueType::Exception,
                "internal error",
                None,
            )
            .build();
        let codes: Vec<(IssueSeverity, &str)> = outcome
            .issue
            .iter()
            .map(|issue| (issue.severity, issue.code.code()))
            .collect();
        assert_eq!(
            codes,
            [
                (IssueSeverity::Error, "not-supported"),
                (IssueSeverity::Warning, "incomplete"),
                (IssueSeverity::Fatal, "exception"),
            ]
        );
        assert!(
            outcome
                .issue
                .iter()
                .all(|issue| issue.expression.is_empty())
        );
        let empty = OutcomeBuilder::new().build();
        assert_eq!(empty.issue.len(), 1, "FHIR requires one issue");
        assert_eq!(empty.issue[0].severity, IssueSeverity::Information);
    }

    #[test]
    fn issue_codes_serialise_as_their_code() {
        for code in [
            IssueType::NotSupported,
            IssueType::CodeInvalid,
            IssueType::MultipleMatches,
            IssueType::TooCostly,
            IssueType::BusinessRule,
            IssueType::LockError,
            IssueType::NoStore,
            IssueType::NotFound,
            IssueType::TooLong,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serialises"),
                json!(code.code())
            );
        }
    }
}
