//! Accounts, personal API tokens and sessions: the verifiers in memory, kept in step with the
//! store.
//!
//! **Passwords** are hashed with Argon2id (RFC 9106; the `argon2` crate's defaults: 19 MiB,
//! 2 passes, 1 lane, the OWASP minimum) with a 16-byte random salt, stored as a PHC string. A login
//! for an unknown name verifies against a fixed dummy hash, so its timing does not tell which
//! names exist. **Lockout:** [`MAX_FAILURES`] failed logins in a row lock the account for
//! [`LOCKOUT`]; every answer to a failed login is the same. **Sessions** are 256-bit random tokens
//! in an HttpOnly cookie; only their SHA-256 is kept, in memory (a restart logs everyone out).
//! A session ends after [`AccessSettings::idle_timeout`] without a request (automatic logoff,
//! 45 CFR 164.312(a)(2)(iii)) or [`AccessSettings::session_lifetime`] after login.
//! **API tokens** (`glt_` and 64 hex digits) are shown once at creation; only their SHA-256 is
//! stored. **Second factor:** an account with an active TOTP secret (`totp.rs`) signs in only with
//! a current code as well, each code once; a missing, wrong or replayed code is a failed login
//! like a wrong password (same answer, same lockout count).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use galen_model::Timestamp;
use galen_store::{ApiToken, BreakGlassGrant, Store, User};
use sha2::Digest;

use super::{Principal, Role, Scope};

/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account refuses logins.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// The prefix of personal API tokens.
pub const TOKEN_PREFIX: &str = "glt_";

/// Session and login settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessSettings {
    /// A session without a request for this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login whatever its use.
    pub session_lifetime: Duration,
    /// Administrators without an active second factor may do nothing but enrol one
    /// (`galen serve --require-admin-totp`).
    pub require_admin_totp: bool,
}

impl Default for AccessSettings {
    fn default() -> AccessSettings {
        AccessSettings {
            idle_timeout: Duration::from_secs(15 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            require_admin_totp: false,
        }
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD`] characters.
    #[error("a password needs at least {MIN_PASSWORD} characters")]
    TooShort,
    /// No randomness for the salt, or the hasher failed.
    #[error("the password could not be hashed")]
    Hashing,
}

/// The shortest password accepted (NIST SP 800-63B asks for at least 8; Galen guards patient
/// data and alarm control, so 12).
pub const MIN_PASSWORD: usize = 12;

/// Hashes `password` with Argon2id and a random salt; a PHC string.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| PasswordError::Hashing)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hashing)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| PasswordError::Hashing)
}

/// Whether `password` matches the PHC string `hash` (constant time in the hash comparison).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches, verified for unknown names so their timing matches known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$1vLUbQ4H1Lsd2Fkf3uDS4ntWy3CU/5I8wQ2mUhlsfS0";

fn sha256(text: &str) -> [u8; 32] {
    sha2::Sha256::digest(text.as_bytes()).into()
}

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

struct Session {
    user: i64,
    started: Timestamp,
    last_seen: Timestamp,
}

/// Why a login failed. Callers answer every case with the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown name, wrong password or disabled account.
    Invalid,
    /// The right password, but the second-factor code was missing, wrong or used before. Only
    /// the audit trail tells this apart: it suggests the password is known to someone else.
    SecondFactor,
    /// Too many failures: locked until then.
    Locked(Timestamp),
    /// The store could not record the attempt.
    Unavailable,
}

/// The principal of an account.
pub(crate) fn principal_of(user: &User, actor: String) -> Principal {
    let role = Role::parse(&user.details.role);
    let scope = match role {
        None => Scope::Nobody,
        Some(Role::Patient) => user.details.patient.map_or(Scope::Nobody, Scope::Patient),
        Some(role) if role.ward_bound() => {
            let wards: BTreeSet<String> = user.details.wards.iter().cloned().collect();
            if wards.is_empty() {
                Scope::Nobody
            } else {
                Scope::Wards(wards)
            }
        }
        Some(_) if user.details.wards.is_empty() => Scope::All,
        Some(_) => Scope::Wards(user.details.wards.iter().cloned().collect()),
    };
    Principal {
        actor,
        user: Some(user.id),
        token: None,
        // An unknown stored role grants nothing.
        role: role.unwrap_or(Role::Unknown),
        scope,
        emergency: BTreeSet::new(),
        organization: user.details.organization.clone(),
        smart: None,
    }
}

/// The accounts, tokens and sessions in memory; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Accounts {
    users: Arc<RwLock<HashMap<i64, User>>>,
    tokens: Arc<RwLock<HashMap<[u8; 32], ApiToken>>>,
    sessions: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    grants: Arc<RwLock<Vec<BreakGlassGrant>>>,
    settings: AccessSettings,
    /// Serialises reloads, as the directory does.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Accounts")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// Loads the accounts and tokens of `store`.
    pub(crate) async fn load(
        store: &dyn Store,
        settings: AccessSettings,
    ) -> galen_store::Result<Accounts> {
        let accounts = Accounts {
            settings,
            ..Accounts::default()
        };
        accounts.reload(store).await?;
        Ok(accounts)
    }

    /// Replaces the cached accounts and tokens with the store's.
    pub(crate) async fn reload(&self, store: &dyn Store) -> galen_store::Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let users: HashMap<i64, User> = store
            .users()
            .await?
            .into_iter()
            .map(|user| (user.id, user))
            .collect();
        let tokens: HashMap<[u8; 32], ApiToken> = store
            .api_tokens()
            .await?
            .into_iter()
            .map(|token| (token.secret_sha256, token))
            .collect();
        *self
            .users
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = users;
        *self
            .tokens
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = tokens;
        let grants = store.break_glass_grants().await?;
        *self
            .grants
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = grants;
        Ok(())
    }

    /// Every break-glass grant, by id.
    pub(crate) fn grants(&self) -> Vec<BreakGlassGrant> {
        self.grants
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Adds the patients the account's active break-glass grants open at `now`.
    pub(crate) fn with_emergency(&self, principal: &mut Principal, now: Timestamp) {
        let Some(user) = principal.user else {
            return;
        };
        if principal.sees_everyone() {
            return;
        }
        principal.emergency = self
            .grants
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .filter(|grant| grant.user == user && grant.active(now))
            .map(|grant| grant.patient)
            .collect();
    }

    /// Every account, by id.
    pub(crate) fn users(&self) -> Vec<User> {
        let mut users: Vec<User> = self
            .users
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .cloned()
            .collect();
        users.sort_by_key(|user| user.id);
        users
    }

    fn user(&self, id: i64) -> Option<User> {
        self.users
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&id)
            .cloned()
    }

    fn user_by_name(&self, name: &str) -> Option<User> {
        self.users
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .find(|user| user.details.name == name)
            .cloned()
    }

    /// Whether an account is called `name`.
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.user_by_name(name).is_some()
    }

    /// Whether account `id` has an active second factor.
    pub(crate) fn totp_active(&self, id: i64) -> bool {
        self.user(id)
            .is_some_and(|user| user.totp.is_some_and(|totp| totp.active))
    }

    /// The account `id` as cached.
    pub(crate) fn account(&self, id: i64) -> Option<User> {
        self.user(id)
    }

    /// Keeps `user` as the store returned it after a change.
    pub(crate) fn remember_user(&self, user: User) {
        self.remember(user);
    }

    /// Checks a name, password and, for an account with an active second factor, a TOTP `code`
    /// (each step's code is taken once, in the store); on success starts a session and returns
    /// its token (to put in the cookie) and the principal.
    pub(crate) async fn login(
        &self,
        store: &dyn Store,
        now: Timestamp,
        name: &str,
        password: &str,
        code: &str,
    ) -> Result<(String, Principal), LoginFailure> {
        let user = self.user_by_name(name);
        let hash = user.as_ref().map_or(DUMMY_HASH.to_owned(), |user| {
            user.details.password_hash.clone()
        });
        let password = password.to_owned();
        // Argon2 takes tens of milliseconds of CPU: off the async workers.
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        let Some(user) = user else {
            return Err(LoginFailure::Invalid);
        };
        if let Some(until) = user.locked_until.filter(|until| *until > now) {
            return Err(LoginFailure::Locked(until));
        }
        let mut failure = (!matches || user.disabled).then_some(LoginFailure::Invalid);
        if failure.is_none()
            && let Some(totp) = user.totp.as_ref().filter(|totp| totp.active)
        {
            let claimed = match super::totp::matching_step(&totp.secret, code, now) {
                Some(step) => store
                    .claim_totp_step(user.id, step)
                    .await
                    .map_err(|_| LoginFailure::Unavailable)?,
                None => false,
            };
            if !claimed {
                failure = Some(LoginFailure::SecondFactor);
            }
        }
        if let Some(failure) = failure {
            let lock = (user.failed_logins + 1 >= MAX_FAILURES)
                .then(|| now.add_micros(LOCKOUT.as_micros() as i64));
            let updated = store
                .record_login(user.id, false, lock)
                .await
                .map_err(|_| LoginFailure::Unavailable)?;
            self.remember(updated);
            return Err(match lock {
                Some(until) => LoginFailure::Locked(until),
                None => failure,
            });
        }
        let updated = store
            .record_login(user.id, true, None)
            .await
            .map_err(|_| LoginFailure::Unavailable)?;
        let principal = principal_of(&updated, updated.details.name.clone());
        self.remember(updated);
        let token = random_hex().ok_or(LoginFailure::Unavailable)?;
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(
                sha256(&token),
                Session {
                    user: user.id,
                    started: now,
                    last_seen: now,
                },
            );
        Ok((token, principal))
    }

    fn remember(&self, user: User) {
        self.users
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(user.id, user);
    }

    /// The principal of a session token, if the session is alive; touches it.
    pub(crate) fn session(&self, token: &str, now: Timestamp) -> Option<Principal> {
        let key = sha256(token);
        let user = {
            let mut sessions = self
                .sessions
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let session = sessions.get_mut(&key)?;
            let idle = now.micros() - session.last_seen.micros();
            let age = now.micros() - session.started.micros();
            if idle > self.settings.idle_timeout.as_micros() as i64
                || age > self.settings.session_lifetime.as_micros() as i64
            {
                sessions.remove(&key);
                return None;
            }
            session.last_seen = now;
            session.user
        };
        let user = self.user(user).filter(|user| !user.disabled)?;
        Some(principal_of(&user, user.details.name.clone()))
    }

    /// Ends a session.
    pub(crate) fn logout(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&sha256(token));
    }

    /// Ends every session of account `user` (disabled, or its password changed).
    pub(crate) fn end_sessions_of(&self, user: i64) {
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|_, session| session.user != user);
    }

    /// The principal of a personal API token, if it is valid now.
    pub(crate) fn api_token(&self, token: &str, now: Timestamp) -> Option<Principal> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let stored = self
            .tokens
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&sha256(token))
            .cloned()?;
        if stored.revoked.is_some() || stored.expires.is_some_and(|expires| expires <= now) {
            return None;
        }
        let user = self.user(stored.user).filter(|user| !user.disabled)?;
        let mut principal = principal_of(&user, user.details.name.clone());
        principal.token = Some(stored.id);
        Some(principal)
    }

    /// A new personal API token's secret and its SHA-256.
    pub(crate) fn new_token_secret() -> Option<(String, [u8; 32])> {
        let secret = format!("{TOKEN_PREFIX}{}", random_hex()?);
        let hash = sha256(&secret);
        Some((secret, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert_ne!(
            hash,
            hash_password("correct horse battery").expect("hash"),
            "salted"
        );
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
        assert!(!verify_password("not a hash", "x"));
        assert!(
            !verify_password(DUMMY_HASH, ""),
            "the dummy hash parses and matches nothing"
        );
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn token_secrets_have_the_prefix_and_enough_entropy() {
        let (secret, hash) = Accounts::new_token_secret().expect("random");
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(secret.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash, sha256(&secret));
    }
}
