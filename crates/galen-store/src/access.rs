//! Who may use Galen: staff and patient accounts, and the personal API tokens of integrations.
//!
//! The store keeps only verifiers: a password's Argon2id hash (a PHC string) and an API token's
//! SHA-256. The one exception is an account's TOTP secret (RFC 6238), which both sides must hold
//! to compute codes: it is kept as given, never leaves through `Debug`, and encryption at rest is
//! the store's (see `docs/threat-model.md`). The roles and ward scopes are stored as text the server interprets; the store does not
//! know what a role may do. Sessions are not stored: they live in the server's memory and end with
//! the process.

use async_trait::async_trait;
use galen_model::{PatientId, Timestamp};

use crate::error::Result;

/// An account to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Login name, unique (compared as given).
    pub name: String,
    /// Argon2id hash of the password, as a PHC string.
    pub password_hash: String,
    /// Role code (`administrator`, `nurse`, ...).
    pub role: String,
    /// Wards the account may see; empty means every ward (for roles that are not ward-bound).
    pub wards: Vec<String>,
    /// For a patient account: the patient whose data it may see.
    pub patient: Option<PatientId>,
    /// When it was created.
    pub created: Timestamp,
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id of the account.
    pub id: i64,
    /// What it was created with (the password hash is the current one).
    pub details: NewUser,
    /// A disabled account cannot log in, and its tokens authenticate nothing.
    pub disabled: bool,
    /// Failed logins since the last successful one.
    pub failed_logins: u32,
    /// Until when logins are refused after repeated failures.
    pub locked_until: Option<Timestamp>,
    /// The account's TOTP second factor, active or being enrolled.
    pub totp: Option<Totp>,
}

/// An account's TOTP second factor (RFC 6238), as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Totp {
    /// The shared secret (random bytes; Galen uses 20, the HMAC-SHA-1 block the RFC suggests).
    pub secret: Vec<u8>,
    /// Confirmed with a code, so logins need one. `false`: an enrolment not yet confirmed, which
    /// logins ignore.
    pub active: bool,
    /// The last TOTP time step whose code was accepted: a code of this step or an earlier one is
    /// refused (each code works once).
    pub last_step: u64,
}

impl std::fmt::Debug for Totp {
    /// Never prints the secret.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Totp")
            .field("secret", &"<redacted>")
            .field("active", &self.active)
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// What an account change sets (everything but the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    /// A new password hash, or `None` to keep it.
    pub password_hash: Option<String>,
    /// The role.
    pub role: String,
    /// The ward scope.
    pub wards: Vec<String>,
    /// The patient of a patient account.
    pub patient: Option<PatientId>,
    /// Whether the account is disabled.
    pub disabled: bool,
}

/// A personal API token, as stored: only the SHA-256 of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Id of the token.
    pub id: i64,
    /// The account it acts for (with that account's role and scope).
    pub user: i64,
    /// The owner's label ("EHR interface").
    pub label: String,
    /// SHA-256 of the secret.
    pub secret_sha256: [u8; 32],
    /// When it was issued.
    pub created: Timestamp,
    /// When it stops working on its own.
    pub expires: Option<Timestamp>,
    /// When it was revoked.
    pub revoked: Option<Timestamp>,
}

/// Accounts and API tokens. Every mutating method is durable when it returns `Ok`.
#[async_trait]
pub trait AccessStore: Send + Sync + std::fmt::Debug {
    /// Creates an account. [`crate::Error::Conflict`] if the name is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    /// Changes an account. [`crate::Error::NotFound`] if there is none.
    async fn update_user(&self, id: i64, change: UserChange) -> Result<User>;
    /// Every account, by id.
    async fn users(&self) -> Result<Vec<User>>;
    /// Records a login attempt of account `id`: a success clears the failure count and the lock;
    /// a failure counts, and `lock_until` (when given) refuses logins until then.
    async fn record_login(
        &self,
        id: i64,
        success: bool,
        lock_until: Option<Timestamp>,
    ) -> Result<User>;
    /// Stores a new API token of account `user`. [`crate::Error::NotFound`] if the account does
    /// not exist.
    async fn create_api_token(
        &self,
        user: i64,
        label: String,
        secret_sha256: [u8; 32],
        created: Timestamp,
        expires: Option<Timestamp>,
    ) -> Result<ApiToken>;
    /// Revokes token `id` at `at`. [`crate::Error::NotFound`] if there is none,
    /// [`crate::Error::Conflict`] if it is already revoked.
    async fn revoke_api_token(&self, id: i64, at: Timestamp) -> Result<ApiToken>;
    /// Every API token, revoked ones included, by id.
    async fn api_tokens(&self) -> Result<Vec<ApiToken>>;
    /// Starts a TOTP enrolment of account `id`: `secret` is kept, inactive, replacing an
    /// unconfirmed one. [`crate::Error::NotFound`] without the account,
    /// [`crate::Error::Conflict`] if a second factor is already active. Durable on return.
    async fn begin_totp(&self, id: i64, secret: Vec<u8>) -> Result<User>;
    /// Activates the enrolled secret of account `id`, recording `step` (the step of the code that
    /// confirmed it) as used. [`crate::Error::Conflict`] if nothing is being enrolled (none, or
    /// already active). Durable on return.
    async fn activate_totp(&self, id: i64, step: u64) -> Result<User>;
    /// Removes the second factor of account `id` (active or being enrolled).
    /// [`crate::Error::NotFound`] without the account. Durable on return.
    async fn remove_totp(&self, id: i64) -> Result<User>;
    /// Uses time step `step` of account `id`'s active second factor: `true` if it is later than
    /// every step used before (and is now the last one used), `false` otherwise (a replayed or
    /// older code, or no active second factor). Atomic: of two logins with the same code, one
    /// wins. Durable on return.
    async fn claim_totp_step(&self, id: i64, step: u64) -> Result<bool>;
}
