//! Who may use Galen: staff and patient accounts, the personal API tokens of integrations, and
//! OAuth2 machine clients.
//!
//! The store keeps only verifiers: a password's Argon2id hash (a PHC string), an API token's or a
//! client secret's SHA-256, and a client's public keys. The one exception is an account's TOTP secret (RFC 6238), which both sides must hold
//! to compute codes: it is sealed by encryption at rest when the store encrypts (see `crate::crypto`),
//! and never leaves through `Debug`. The roles and ward scopes are stored as text the server interprets; the store does not
//! know what a role may do. Sessions are not stored: they live in the server's memory and end with
//! the process.

use async_trait::async_trait;
use galen_model::{PatientId, Recipient, Timestamp};

use crate::audit::AuditRecord;
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
    /// The organisation (or caregiver) the account acts for: what it exports or subscribes to is
    /// disclosed to it. `None`: the account acts for the hospital itself.
    pub organization: Option<Recipient>,
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
    /// The organisation the account acts for.
    pub organization: Option<Recipient>,
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

/// An emergency ("break-glass") grant: an account's time-limited access to one patient outside
/// its scope, with the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassGrant {
    /// Id of the grant.
    pub id: i64,
    /// The account it widens.
    pub user: i64,
    /// The patient it opens.
    pub patient: PatientId,
    /// Why, in the account's words (free text: may hold clinical detail; shown to auditors).
    pub reason: String,
    /// When it was granted.
    pub started: Timestamp,
    /// When it lapses on its own.
    pub expires: Timestamp,
    /// When the account ended it early.
    pub ended: Option<Timestamp>,
}

impl BreakGlassGrant {
    /// Whether it opens its patient at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.started <= now && now < self.expires && self.ended.is_none_or(|ended| now < ended)
    }
}

/// How an OAuth2 machine client authenticates at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredential {
    /// `client_secret_basic` or `client_secret_post`: the SHA-256 of the generated secret.
    SecretSha256([u8; 32]),
    /// `private_key_jwt` (SMART Backend Services): the client's public JWK set, as JSON text.
    Jwks(String),
}

/// An OAuth2 machine client to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOAuthClient {
    /// The `client_id` it presents; unique.
    pub client_id: String,
    /// Its name, unique; the audit trail names the client by it.
    pub name: String,
    /// Role code, as for accounts.
    pub role: String,
    /// Wards it may see; empty means every ward.
    pub wards: Vec<String>,
    /// The SMART scopes it may be granted, as text (`system/Observation.rs`).
    pub scopes: Vec<String>,
    /// How it authenticates.
    pub credential: ClientCredential,
    /// When it was registered.
    pub created: Timestamp,
}

/// A registered OAuth2 machine client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// Id of the registration.
    pub id: i64,
    /// What it was registered with.
    pub details: NewOAuthClient,
    /// When it was revoked: from then on it gets no token, and its tokens authenticate nothing.
    pub revoked: Option<Timestamp>,
}

/// Accounts, API tokens, break-glass grants and OAuth2 clients. Every mutating method is durable
/// when it returns `Ok`.
///
/// The `audit` records of a change (see [`crate::AuditStore`]) are appended to the audit chain in
/// the change's own transaction: both are durable together, or neither is (also when a record is
/// invalid).
#[async_trait]
pub trait AccessStore: Send + Sync + std::fmt::Debug {
    /// Creates an account. [`crate::Error::Conflict`] if the name is taken.
    async fn create_user(&self, user: NewUser, audit: Vec<AuditRecord>) -> Result<User>;
    /// Changes an account. [`crate::Error::NotFound`] if there is none.
    async fn update_user(
        &self,
        id: i64,
        change: UserChange,
        audit: Vec<AuditRecord>,
    ) -> Result<User>;
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
        audit: Vec<AuditRecord>,
    ) -> Result<ApiToken>;
    /// Revokes token `id` at `at`. [`crate::Error::NotFound`] if there is none,
    /// [`crate::Error::Conflict`] if it is already revoked.
    async fn revoke_api_token(
        &self,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<ApiToken>;
    /// Every API token, revoked ones included, by id.
    async fn api_tokens(&self) -> Result<Vec<ApiToken>>;
    /// Stores a break-glass grant (its `id` and `ended` are ignored).
    /// [`crate::Error::NotFound`] if the account or the patient does not exist.
    async fn create_break_glass(
        &self,
        grant: BreakGlassGrant,
        audit: Vec<AuditRecord>,
    ) -> Result<BreakGlassGrant>;
    /// Ends grant `id` at `at`. [`crate::Error::NotFound`] if there is none,
    /// [`crate::Error::Conflict`] if it has already ended or lapsed.
    async fn end_break_glass(
        &self,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<BreakGlassGrant>;
    /// Every grant, ended and lapsed ones included, by id.
    async fn break_glass_grants(&self) -> Result<Vec<BreakGlassGrant>>;
    /// Registers a machine client. [`crate::Error::Conflict`] if its name or `client_id` is
    /// taken (by a revoked client too: a name names one client in the audit trail for ever).
    async fn create_oauth_client(
        &self,
        client: NewOAuthClient,
        audit: Vec<AuditRecord>,
    ) -> Result<OAuthClient>;
    /// Revokes client `id` at `at`. [`crate::Error::NotFound`] if there is none,
    /// [`crate::Error::Conflict`] if it is already revoked.
    async fn revoke_oauth_client(
        &self,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<OAuthClient>;
    /// Every machine client, revoked ones included, by id.
    async fn oauth_clients(&self) -> Result<Vec<OAuthClient>>;
    /// Starts a TOTP enrolment of account `id`: `secret` is kept, inactive, replacing an
    /// unconfirmed one. [`crate::Error::NotFound`] without the account,
    /// [`crate::Error::Conflict`] if a second factor is already active. Durable on return.
    async fn begin_totp(&self, id: i64, secret: Vec<u8>, audit: Vec<AuditRecord>) -> Result<User>;
    /// Activates the enrolled secret of account `id`, recording `step` (the step of the code that
    /// confirmed it) as used. [`crate::Error::Conflict`] if nothing is being enrolled (none, or
    /// already active). Durable on return.
    async fn activate_totp(&self, id: i64, step: u64, audit: Vec<AuditRecord>) -> Result<User>;
    /// Removes the second factor of account `id` (active or being enrolled).
    /// [`crate::Error::NotFound`] without the account. Durable on return.
    async fn remove_totp(&self, id: i64, audit: Vec<AuditRecord>) -> Result<User>;
    /// Uses time step `step` of account `id`'s active second factor: `true` if it is later than
    /// every step used before (and is now the last one used), `false` otherwise (a replayed or
    /// older code, or no active second factor). Atomic: of two logins with the same code, one
    /// wins. Durable on return.
    async fn claim_totp_step(&self, id: i64, step: u64) -> Result<bool>;
}
