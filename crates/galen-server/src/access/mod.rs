//! Who is asking and what they may do: roles, permissions, principals and ward scopes.
//!
//! `request -> authenticate (auth.rs: session cookie, personal API token, the service token, or an
//! OAuth2 access token of a machine client) -> Principal -> authorize (route -> Permission,
//! checked against the role's table) -> SMART scopes (machine clients: resource type and
//! interaction, `smart.rs`) -> scope (patient-level routes: the patient must be in the principal's
//! wards, or be its own patient)`.
//!
//! The role table is hand-written and small on purpose: a security reviewer reads it in one
//! screen ([`Role::permissions`]), and `tests/authz_matrix.rs` checks every role against every
//! route family.

pub mod accounts;
pub(crate) mod jwt;
pub mod oauth;
pub mod smart;
pub mod totp;

use std::collections::BTreeSet;
use std::sync::Arc;

use galen_model::{Patient, PatientId, Recipient};

/// What a route needs. Patient-level permissions are further limited by the principal's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Read patient data: the dashboard, patient pages, vital signs, scores, alarms, FHIR reads
    /// and searches of patient resources. Scoped.
    ReadPatientData,
    /// Act on a patient: alarm actions, nurse observations, SpO2 scale, alarm limits. Scoped.
    RecordCare,
    /// Send measurements (HTTP ingest, FHIR Observation create).
    Ingest,
    /// Read devices and assignments (no patient data).
    ViewRegistry,
    /// Register and change patients, devices, assignments and device credentials.
    ManageRegistry,
    /// Dead letters, mapping templates, webhook deliveries, metrics.
    Integrate,
    /// FHIR Bulk Data export (whole system, patients or wards).
    Export,
    /// FHIR Subscriptions.
    Subscribe,
    /// The audit trail.
    ReadAudit,
    /// Accounts and API tokens of others.
    ManageUsers,
    /// Emergency ("break-glass") access to a patient outside one's scope: time-limited, with a
    /// mandatory reason, alerted and audited (`api/break_glass.rs`).
    BreakGlass,
    /// Record and change patients' consents (FHIR Consent create and update). Scoped.
    RecordConsent,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 12] = [
        Permission::ReadPatientData,
        Permission::RecordCare,
        Permission::Ingest,
        Permission::ViewRegistry,
        Permission::ManageRegistry,
        Permission::Integrate,
        Permission::Export,
        Permission::Subscribe,
        Permission::ReadAudit,
        Permission::ManageUsers,
        Permission::BreakGlass,
        Permission::RecordConsent,
    ];

    /// Whether the permission is limited by the principal's ward or patient scope.
    pub fn scoped(self) -> bool {
        matches!(
            self,
            Permission::ReadPatientData | Permission::RecordCare | Permission::RecordConsent
        )
    }
}

/// A role of the list. The service token has [`Role::Service`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs Galen: accounts, registry, integration; reads patient data to administer it.
    Administrator,
    /// Physician: reads and acts on the patients of the wards in scope, exports, subscribes.
    Clinician,
    /// Ward nurse: reads and acts on the patients of the wards in scope.
    Nurse,
    /// Connects devices and systems: ingest, registry, mapping, dead letters, FHIR.
    IntegrationEngineer,
    /// Reads the audit trail, nothing else.
    Auditor,
    /// Research: bulk export of the patients who consented to research, nothing else.
    Researcher,
    /// A patient: their own data only.
    Patient,
    /// A device or gateway: ingest only.
    Device,
    /// The service token of `galen serve` (`<data-dir>/api-token`): every permission, for
    /// bootstrapping and integrations that predate personal tokens. Its use is audited.
    Service,
    /// A stored role this build does not know (written by a newer Galen, or edited): no
    /// permission at all.
    Unknown,
}

impl Role {
    /// The roles an account may have (the service role belongs to the service token only).
    pub const ACCOUNT_ROLES: [Role; 8] = [
        Role::Administrator,
        Role::Clinician,
        Role::Nurse,
        Role::IntegrationEngineer,
        Role::Auditor,
        Role::Researcher,
        Role::Patient,
        Role::Device,
    ];

    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::IntegrationEngineer => "integration-engineer",
            Role::Auditor => "auditor",
            Role::Researcher => "researcher",
            Role::Patient => "patient",
            Role::Device => "device",
            Role::Service => "service",
            Role::Unknown => "unknown",
        }
    }

    /// Parses an account role code.
    pub fn parse(code: &str) -> Option<Role> {
        Role::ACCOUNT_ROLES
            .into_iter()
            .find(|role| role.code() == code)
    }

    /// Whether accounts of this role are limited to wards (and need at least one).
    pub fn ward_bound(self) -> bool {
        matches!(self, Role::Clinician | Role::Nurse)
    }

    /// The role table: what each role may do. Least privilege: a nurse cannot register patients
    /// or export, an auditor sees no patient data, an administrator records no care.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission as P;
        match self {
            Role::Administrator => &[
                P::ReadPatientData,
                P::ViewRegistry,
                P::ManageRegistry,
                P::Integrate,
                P::ManageUsers,
            ],
            Role::Clinician => &[
                P::ReadPatientData,
                P::RecordCare,
                P::ViewRegistry,
                P::Subscribe,
                P::BreakGlass,
                P::RecordConsent,
            ],
            Role::Nurse => &[
                P::ReadPatientData,
                P::RecordCare,
                P::ViewRegistry,
                P::BreakGlass,
                P::RecordConsent,
            ],
            Role::IntegrationEngineer => &[
                P::ReadPatientData,
                P::Ingest,
                P::ViewRegistry,
                P::ManageRegistry,
                P::Integrate,
                P::Export,
                P::Subscribe,
                P::RecordConsent,
            ],
            Role::Auditor => &[P::ReadAudit],
            // Exports carry only the patients who consented to research (fhir/export.rs).
            Role::Researcher => &[P::Export],
            Role::Patient => &[P::ReadPatientData, P::RecordConsent],
            Role::Device => &[P::Ingest],
            Role::Service => &Permission::ALL,
            Role::Unknown => &[],
        }
    }

    /// Whether the role has `permission`.
    pub fn may(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

/// Whose patients a principal may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every patient.
    All,
    /// The patients placed on these wards.
    Wards(BTreeSet<String>),
    /// One patient (a patient account).
    Patient(PatientId),
    /// Nobody (an account whose scope is missing).
    Nobody,
}

/// What a machine client's access token grants: its SMART scopes, and which client and token
/// (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartGrant {
    /// The client's `client_id`.
    pub client_id: String,
    /// The client's name (a device client's name is its serial).
    pub client_name: String,
    /// The access token's `jti`.
    pub token_id: String,
    /// The granted scopes.
    pub scopes: smart::ScopeSet,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, as recorded in the audit trail: an account name (also when it acts through one of
    /// its API tokens, which the record's detail names), `service` or `demo`.
    pub actor: String,
    /// The account, if the caller is one (directly or through its API token).
    pub user: Option<i64>,
    /// The personal API token the account acts through, if any.
    pub token: Option<i64>,
    /// The role.
    pub role: Role,
    /// Whose patients it may see.
    pub scope: Scope,
    /// Patients outside the scope it may see for now, by break-glass grants of its account.
    pub emergency: BTreeSet<PatientId>,
    /// The organisation (or caregiver) the caller acts for: what it exports or subscribes to is
    /// disclosed to it, under the patients' consents. `None`: the hospital's own operations.
    pub organization: Option<Recipient>,
    /// A machine client's SMART grant: its scopes narrow every FHIR request. `None` for accounts,
    /// API tokens and the service token (no scope restriction).
    pub smart: Option<Arc<SmartGrant>>,
}

impl Principal {
    /// The service token's principal.
    pub fn service() -> Principal {
        Principal {
            actor: "service".to_owned(),
            user: None,
            token: None,
            role: Role::Service,
            scope: Scope::All,
            emergency: BTreeSet::new(),
            organization: None,
            smart: None,
        }
    }

    /// `galen demo`: everything, announced on the dashboard.
    pub fn demo() -> Principal {
        Principal {
            actor: "demo".to_owned(),
            user: None,
            token: None,
            role: Role::Service,
            scope: Scope::All,
            emergency: BTreeSet::new(),
            organization: None,
            smart: None,
        }
    }

    /// The name a device principal sends measurements as: an account's name, or a machine
    /// client's name (both are the device's serial).
    pub fn device_name(&self) -> &str {
        self.smart
            .as_ref()
            .map_or(self.actor.as_str(), |grant| grant.client_name.as_str())
    }

    /// Whether the principal has `permission` at all.
    pub fn may(&self, permission: Permission) -> bool {
        self.role.may(permission)
    }

    /// Whether `patient` is in scope, or opened by a break-glass grant.
    pub fn may_see(&self, patient: &Patient) -> bool {
        self.in_scope(patient) || self.emergency.contains(&patient.id)
    }

    /// Whether `patient` is in the principal's own scope (break-glass grants aside).
    pub fn in_scope(&self, patient: &Patient) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Wards(wards) => wards.contains(&patient.details.ward),
            Scope::Patient(own) => *own == patient.id,
            Scope::Nobody => false,
        }
    }

    /// Whether the scope is every patient.
    pub fn sees_everyone(&self) -> bool {
        self.scope == Scope::All
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_service_is_not_an_account_role() {
        for role in Role::ACCOUNT_ROLES {
            assert_eq!(Role::parse(role.code()), Some(role));
        }
        assert_eq!(Role::parse("service"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn least_privilege() {
        assert!(!Role::Nurse.may(Permission::ManageRegistry));
        assert!(!Role::Nurse.may(Permission::Export));
        assert!(!Role::Auditor.may(Permission::ReadPatientData));
        assert!(!Role::Administrator.may(Permission::RecordCare));
        assert!(!Role::Administrator.may(Permission::ReadAudit));
        assert_eq!(Role::Researcher.permissions(), &[Permission::Export]);
        assert!(Role::Unknown.permissions().is_empty());
        assert!(!Role::Administrator.may(Permission::RecordConsent));
        assert!(Role::Patient.may(Permission::RecordConsent));
        assert_eq!(Role::Device.permissions(), &[Permission::Ingest]);
        assert!(
            Role::Nurse.may(Permission::BreakGlass) && Role::Clinician.may(Permission::BreakGlass)
        );
        assert!(!Role::Administrator.may(Permission::BreakGlass));
        assert!(!Role::Patient.may(Permission::BreakGlass));
        assert!(
            Permission::ALL
                .iter()
                .all(|permission| Role::Service.may(*permission))
        );
    }
}
