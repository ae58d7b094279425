//! The vocabulary of the audit trail: what was done ([`AuditAction`]) and how it ended
//! ([`AuditOutcome`]).
//!
//! Both have stable string codes: they are stored in the audit log, hashed into its chain
//! (`galen_store::audit`) and served in the FHIR AuditEvent mapping (`galen_fhir::audit_event`),
//! so a code, once written, must keep its meaning forever. Add new variants; never rename a code.

use std::fmt;

/// What an audited event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditAction {
    /// Patient data was read (a page, a resource, a trend).
    Read,
    /// A search or list that may return patient data.
    Search,
    /// A record was created.
    Create,
    /// A record was changed.
    Update,
    /// A record was deleted.
    Delete,
    /// Data left Galen in bulk (`$export`, a download).
    Export,
    /// A user logged in.
    Login,
    /// A login attempt failed (wrong password, locked, unknown account).
    LoginFailed,
    /// A user logged out.
    Logout,
    /// A session ended on its own (idle timeout: automatic logoff).
    SessionExpired,
    /// An operator acted on an alarm (acknowledge, silence, close).
    AlarmAction,
    /// Configuration changed (clinical rules, accounts, roles, tokens, device credentials).
    ConfigChange,
    /// Emergency access outside the user's scope was started, with its reason.
    BreakGlass,
    /// A consent rule allowed or refused a disclosure.
    ConsentDecision,
    /// Device data was accepted into the store.
    Ingest,
    /// Patient data was sent out to a third party (a webhook, a subscription notification).
    Disclose,
}

impl AuditAction {
    /// Every action, in declaration order.
    pub const ALL: [AuditAction; 16] = [
        AuditAction::Read,
        AuditAction::Search,
        AuditAction::Create,
        AuditAction::Update,
        AuditAction::Delete,
        AuditAction::Export,
        AuditAction::Login,
        AuditAction::LoginFailed,
        AuditAction::Logout,
        AuditAction::SessionExpired,
        AuditAction::AlarmAction,
        AuditAction::ConfigChange,
        AuditAction::BreakGlass,
        AuditAction::ConsentDecision,
        AuditAction::Ingest,
        AuditAction::Disclose,
    ];

    /// The stable code (`read`, `login-failed`, ...).
    pub const fn code(self) -> &'static str {
        match self {
            AuditAction::Read => "read",
            AuditAction::Search => "search",
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
            AuditAction::Export => "export",
            AuditAction::Login => "login",
            AuditAction::LoginFailed => "login-failed",
            AuditAction::Logout => "logout",
            AuditAction::SessionExpired => "session-expired",
            AuditAction::AlarmAction => "alarm-action",
            AuditAction::ConfigChange => "config-change",
            AuditAction::BreakGlass => "break-glass",
            AuditAction::ConsentDecision => "consent-decision",
            AuditAction::Ingest => "ingest",
            AuditAction::Disclose => "disclose",
        }
    }

    /// The action with this code, if there is one.
    pub fn parse(code: &str) -> Option<AuditAction> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.code() == code)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// How an audited event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditOutcome {
    /// It was done.
    Success,
    /// Access control refused it (no permission, wrong ward, failed authentication).
    Denied,
    /// It was allowed but failed (invalid input, a conflict, a storage error).
    Failed,
}

impl AuditOutcome {
    /// Every outcome.
    pub const ALL: [AuditOutcome; 3] = [
        AuditOutcome::Success,
        AuditOutcome::Denied,
        AuditOutcome::Failed,
    ];

    /// The stable code (`success`, `denied`, `failed`).
    pub const fn code(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }

    /// The outcome with this code, if there is one.
    pub fn parse(code: &str) -> Option<AuditOutcome> {
        AuditOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.code() == code)
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut codes: Vec<&str> = AuditAction::ALL
            .iter()
            .map(|action| action.code())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), AuditAction::ALL.len());
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.code()), Some(action));
        }
        for outcome in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::parse(outcome.code()), Some(outcome));
        }
        assert_eq!(AuditAction::parse("Read"), None);
        assert_eq!(AuditOutcome::parse(""), None);
        assert_eq!(AuditAction::LoginFailed.to_string(), "login-failed");
    }
}
