//! OAuth2 machine clients: registration checks, the token endpoint's decisions, and the access
//! tokens it issues.
//!
//! `POST /oauth/token (grant_type=client_credentials, scope) -> client authentication (a client
//! secret, RFC 6749 section 2.3.1, or a signed JWT assertion, RFC 7523 and SMART Backend Services)
//! -> granted scope = asked ∩ allowed -> access token (a JWT, RFC 9068: ES384, typ at+jwt, five
//! minutes) -> Authorization: Bearer on /fhir -> [`OAuth::principal`] (signature, issuer,
//! audience, expiry, client not revoked) -> Principal with the client's role, wards and scopes`.
//!
//! - **Keys.** Galen signs with one P-384 key ([`SigningKey`]: generated into the data directory
//!   by `galen serve`, or given). A client signs its assertions with one of the public keys it was
//!   registered with; each key is pinned to one algorithm (RS384 for RSA, ES384 for P-384, as SMART
//!   Backend Services requires), chosen by the key, never by the token's header.
//! - **Assertions** (SMART Backend Services, "Authenticating to the token endpoint"): `iss` = `sub`
//!   = the client id, `aud` = the token endpoint's URL, `exp` at most five minutes ahead, a `jti`
//!   never accepted twice while the assertion lives. Seen `jti`s are kept in memory, so a restart
//!   forgets them; an assertion from before a restart could be replayed within its five minutes
//!   (docs/threat-model.md).
//! - **No `patient/` scopes.** They need a patient chosen at launch (SMART App Launch); a backend
//!   service has no launch, so the token endpoint refuses them (`invalid_scope`).
//! - **Revocation** works at once: the client list is in memory, and every use of an access token
//!   looks its client up.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use galen_model::Timestamp;
use galen_store::{ClientCredential, OAuthClient, Store};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::smart::{Context, ScopeSet, SmartScope};
use super::{Principal, Role, Scope, SmartGrant};

/// Lifetime of an access token (SMART Backend Services recommends five minutes at most).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The latest `exp` of a client assertion, from now (SMART Backend Services: five minutes).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The `client_assertion_type` of a JWT assertion (RFC 7523 section 2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Prefix of generated client ids.
const CLIENT_ID_PREFIX: &str = "gc_";
/// Prefix of generated client secrets.
const SECRET_PREFIX: &str = "gcs_";
/// Assertion ids remembered at most; beyond it new assertions are refused until old ones expire.
const MAX_SEEN_ASSERTIONS: usize = 100_000;

/// Why a signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// Not a PKCS#8 P-384 private key.
    #[error("the OAuth signing key must be a PKCS#8 EC P-384 private key (PEM): {0}")]
    Format(String),
    /// No randomness.
    #[error("no randomness for a signing key")]
    Random,
}

/// Galen's key for access tokens: ECDSA P-384 (ES384). Its `Debug` shows the key id only.
#[derive(Clone)]
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey, SigningKeyError> {
        let random = ring::rand::SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &random)
            .map_err(|_| SigningKeyError::Random)?;
        SigningKey::from_pkcs8(document.as_ref())
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, SigningKeyError> {
        let random = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der, &random)
            .map_err(|error| SigningKeyError::Format(error.to_string()))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = thumbprint(&public);
        Ok(SigningKey {
            pkcs8: der.to_vec(),
            public,
            kid,
        })
    }

    /// A key from PEM (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, SigningKeyError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|error| SigningKeyError::Format(error.to_string()))?;
        SigningKey::from_pkcs8(der.secret_pkcs8_der())
    }

    /// The key as PKCS#8 PEM, to keep in a file readable by its owner only.
    pub fn to_pem(&self) -> String {
        let encoded = STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// The JWK thumbprint (RFC 7638 section 3: SHA-256 of the required members in lexical order) of
/// an uncompressed P-384 point.
fn thumbprint(point: &[u8]) -> String {
    let (x, y) = point
        .get(1..)
        .unwrap_or_default()
        .split_at(point.len().saturating_sub(1) / 2);
    let canonical = format!(
        r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// Settings of the token endpoint and of access tokens.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Galen's public base URL (`https://galen.example.org`, no trailing slash): the issuer of
    /// access tokens; `{public_url}/fhir` is their audience, `{public_url}/oauth/token` the
    /// audience of client assertions.
    pub public_url: String,
    /// The key access tokens are signed with.
    pub signing_key: SigningKey,
    /// How long an access token lives.
    pub token_lifetime: Duration,
}

impl OAuthConfig {
    /// Settings for `public_url` (checked: `http://` or `https://`, no query or fragment) with
    /// the default token lifetime.
    pub fn new(public_url: &str, signing_key: SigningKey) -> Result<OAuthConfig, String> {
        let url = public_url.trim().trim_end_matches('/');
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let valid = host.is_some_and(|host| {
            !host.is_empty()
                && !host
                    .chars()
                    .any(|character| character.is_whitespace() || matches!(character, '?' | '#'))
        });
        if !valid {
            return Err(format!(
                "the public URL {public_url:?} must be http:// or https:// and a host, without query or fragment"
            ));
        }
        Ok(OAuthConfig {
            public_url: url.to_owned(),
            signing_key,
            token_lifetime: TOKEN_LIFETIME,
        })
    }

    /// The FHIR base URL: the audience of access tokens.
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.public_url)
    }

    /// The token endpoint's URL: the audience of client assertions.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.public_url)
    }
}

/// A registered client's public key, pinned to one algorithm.
#[derive(Debug)]
pub(crate) struct ClientKey {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// A registered client as the token endpoint and the bearer check use it.
pub(crate) struct Client {
    pub(crate) stored: OAuthClient,
    role: Role,
    allowed: Vec<SmartScope>,
    keys: Vec<ClientKey>,
}

impl Client {
    fn from_stored(stored: OAuthClient) -> Result<Client, String> {
        let role = Role::parse(&stored.details.role)
            .ok_or_else(|| format!("unknown role {:?}", stored.details.role))?;
        let allowed = stored
            .details
            .scopes
            .iter()
            .map(|scope| SmartScope::parse(scope).map_err(|error| error.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = match &stored.details.credential {
            ClientCredential::Jwks(jwks) => parse_jwks(jwks)?,
            ClientCredential::SecretSha256(_) => Vec::new(),
        };
        Ok(Client {
            stored,
            role,
            allowed,
            keys,
        })
    }

    /// The audit trail's name of the client.
    pub(crate) fn actor(&self) -> String {
        format!("client:{}", self.stored.details.name)
    }

    /// The role's code.
    pub(crate) fn role_code(&self) -> &'static str {
        self.role.code()
    }

    fn scope(&self) -> Scope {
        let wards: BTreeSet<String> = self.stored.details.wards.iter().cloned().collect();
        match self.role {
            Role::Patient => Scope::Nobody,
            role if role.ward_bound() && wards.is_empty() => Scope::Nobody,
            _ if wards.is_empty() => Scope::All,
            _ => Scope::Wards(wards),
        }
    }
}

/// The roles a machine client may have. Not administrator (accounts and tokens are managed by
/// people), not patient (a patient's own data needs a patient in context).
pub const CLIENT_ROLES: [Role; 6] = [
    Role::IntegrationEngineer,
    Role::Auditor,
    Role::Researcher,
    Role::Device,
    Role::Clinician,
    Role::Nurse,
];

/// Checks the SMART scopes a client may be granted: each parses, none is `patient/`, each names
/// a type Galen serves (or `*`).
pub(crate) fn check_allowed_scopes(scopes: &[String]) -> Result<Vec<SmartScope>, String> {
    if scopes.is_empty() {
        return Err(
            "name the SMART scopes the client may be granted (scopes), e.g. system/Observation.rs"
                .to_owned(),
        );
    }
    scopes
        .iter()
        .map(|text| {
            let scope = SmartScope::parse(text).map_err(|error| error.to_string())?;
            check_scope_use(&scope)?;
            Ok(scope)
        })
        .collect()
}

/// Refuses `patient/` scopes and resource types Galen does not serve.
fn check_scope_use(scope: &SmartScope) -> Result<(), String> {
    if scope.context == Context::Patient {
        return Err(format!(
            "{scope}: patient/ scopes need a patient chosen at launch, which a backend service does not have; use system/ (or user/) scopes"
        ));
    }
    if let Some(resource) = &scope.resource
        && !crate::fhir::RESOURCE_TYPES.contains(&resource.as_str())
    {
        return Err(format!(
            "{scope}: Galen serves no {resource}; it serves {}",
            crate::fhir::RESOURCE_TYPES.join(", ")
        ));
    }
    Ok(())
}

/// Parses and checks a client's public JWK set: every key has a `kid` (unique), is an RSA key of
/// at least 2048 bits (RS384) or a P-384 key (ES384), and carries no private member.
pub(crate) fn parse_jwks(text: &str) -> Result<Vec<ClientKey>, String> {
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("jwks is not JSON: {error}"))?;
    let members = raw["keys"]
        .as_array()
        .ok_or("jwks must be a JWK set: {\"keys\": [...]}")?;
    if members.is_empty() || members.len() > 10 {
        return Err("jwks must hold 1 to 10 public keys".to_owned());
    }
    for member in members {
        // RFC 7518 sections 6.2.2, 6.3.2 and 6.4: the private members of EC, RSA and oct keys.
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            if member.get(private).is_some() {
                return Err(format!(
                    "a key in jwks has the private member {private:?}: register public keys only, and treat that private key as disclosed"
                ));
            }
        }
    }
    let set: JwkSet =
        serde_json::from_value(raw.clone()).map_err(|error| format!("jwks: {error}"))?;
    let mut keys: Vec<ClientKey> = Vec::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .filter(|kid| !kid.is_empty())
            .ok_or("every key in jwks needs a kid")?;
        if keys.iter().any(|key| key.kid == kid) {
            return Err(format!("two keys in jwks have the kid {kid:?}"));
        }
        let declared = jwk.common.key_algorithm;
        let (algorithm, key) = match &jwk.algorithm {
            AlgorithmParameters::RSA(parameters) => {
                if !matches!(declared, None | Some(KeyAlgorithm::RS384)) {
                    return Err(format!("key {kid:?}: an RSA key signs with RS384 here"));
                }
                let key = DecodingKey::from_rsa_components(&parameters.n, &parameters.e)
                    .map_err(|_| format!("key {kid:?}: n and e must be base64url"))?;
                let bits = match key.kind() {
                    jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, .. } => {
                        n.iter().skip_while(|byte| **byte == 0).count() * 8
                    }
                    jsonwebtoken::DecodingKeyKind::SecretOrDer(_) => 0,
                };
                if bits < 2048 {
                    return Err(format!("key {kid:?}: RSA keys need at least 2048 bits"));
                }
                (Algorithm::RS384, key)
            }
            AlgorithmParameters::EllipticCurve(parameters) => {
                if parameters.curve != EllipticCurve::P384
                    || !matches!(declared, None | Some(KeyAlgorithm::ES384))
                {
                    return Err(format!(
                        "key {kid:?}: elliptic-curve keys are P-384 and sign with ES384 here"
                    ));
                }
                let key = DecodingKey::from_ec_components(&parameters.x, &parameters.y)
                    .map_err(|_| format!("key {kid:?}: x and y must be base64url"))?;
                if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(97) {
                    return Err(format!(
                        "key {kid:?}: x and y must be 48 bytes each (P-384)"
                    ));
                }
                (Algorithm::ES384, key)
            }
            _ => {
                return Err(format!(
                    "key {kid:?}: only RSA (RS384) and P-384 (ES384) public keys are accepted"
                ));
            }
        };
        keys.push(ClientKey {
            kid,
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// A new client id (128 random bits).
pub(crate) fn new_client_id() -> Option<String> {
    Some(format!("{CLIENT_ID_PREFIX}{}", random_hex(16)?))
}

/// A new client secret (256 random bits) and its SHA-256.
pub(crate) fn new_client_secret() -> Option<(String, [u8; 32])> {
    let secret = format!("{SECRET_PREFIX}{}", random_hex(32)?);
    let hash = sha2::Sha256::digest(secret.as_bytes()).into();
    Some((secret, hash))
}

fn random_hex(bytes: usize) -> Option<String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).ok()?;
    Some(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Equal digests, in time independent of where they differ.
fn same_digest(left: &[u8; 32], right: &[u8; 32]) -> bool {
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// How a token request authenticates its client. Its `Debug` shows no secret or assertion.
pub(crate) enum ClientAuthentication {
    /// `client_secret_basic` or `client_secret_post`.
    Secret { client_id: String, secret: String },
    /// `private_key_jwt` (`client_assertion`).
    Assertion {
        /// `client_id`, when the request names it too.
        client_id: Option<String>,
        assertion: String,
    },
}

impl std::fmt::Debug for ClientAuthentication {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuthentication::Secret { client_id, .. } => formatter
                .debug_struct("Secret")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            ClientAuthentication::Assertion { client_id, .. } => formatter
                .debug_struct("Assertion")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// An RFC 6749 section 5.2 error of the token endpoint.
#[derive(Debug)]
pub(crate) struct TokenError {
    /// `invalid_request`, `invalid_client`, `invalid_scope`, ...
    pub(crate) code: &'static str,
    /// What to fix (never a secret).
    pub(crate) description: String,
    /// The client, once identified (for the audit record).
    pub(crate) client: Option<Arc<Client>>,
}

impl TokenError {
    pub(crate) fn new(code: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            code,
            description: description.into(),
            client: None,
        }
    }

    fn of(client: &Arc<Client>, code: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            code,
            description: description.into(),
            client: Some(client.clone()),
        }
    }
}

/// An issued access token. Its `Debug` shows the token's id, not the token.
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) expires_in: u64,
    pub(crate) scope: String,
    pub(crate) token_id: String,
    pub(crate) client: Arc<Client>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Issued")
            .field("token_id", &self.token_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("client_id", &self.stored.details.client_id)
            .finish_non_exhaustive()
    }
}

/// The claims of Galen's access tokens (RFC 9068 section 2.2).
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    aud: String,
    sub: String,
    client_id: String,
    exp: i64,
    iat: i64,
    jti: String,
    scope: String,
}

/// The claims Galen reads of a client assertion (the library checks `iss`, `sub` and `aud`).
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    exp: i64,
    jti: Option<String>,
    iat: Option<i64>,
    nbf: Option<i64>,
}

/// What is read of an assertion before its signature is checked: only whose keys to check it with.
#[derive(Debug, Deserialize)]
struct UnverifiedIssuer {
    iss: String,
}

struct Issuer {
    config: OAuthConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Machine clients and the keys of access tokens, in memory.
pub(crate) struct OAuth {
    issuer: Option<Issuer>,
    clients: RwLock<HashMap<String, Arc<Client>>>,
    /// Accepted assertions by (client id, jti), with their expiry (µs).
    seen: Mutex<HashMap<(String, String), i64>>,
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OAuth")
            .field("enabled", &self.issuer.is_some())
            .finish_non_exhaustive()
    }
}

fn seconds(time: Timestamp) -> i64 {
    time.micros().div_euclid(1_000_000)
}

impl OAuth {
    /// Loads the clients of `store`; `config` `None` issues and accepts no token.
    pub(crate) async fn load(
        store: &dyn Store,
        config: Option<OAuthConfig>,
    ) -> galen_store::Result<OAuth> {
        let issuer = config.map(|config| {
            super::jwt::install();
            Issuer {
                encoding: EncodingKey::from_ec_der(&config.signing_key.pkcs8),
                decoding: DecodingKey::from_ec_der(&config.signing_key.public),
                config,
            }
        });
        let oauth = OAuth {
            issuer,
            clients: RwLock::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
        };
        oauth.reload(store).await?;
        Ok(oauth)
    }

    /// Replaces the cached clients with the store's. A stored client that no longer parses (a
    /// role or scope this build does not know) is left out: it gets no token.
    pub(crate) async fn reload(&self, store: &dyn Store) -> galen_store::Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut clients = HashMap::new();
        for stored in store.oauth_clients().await? {
            let id = stored.id;
            match Client::from_stored(stored) {
                Ok(client) => {
                    clients.insert(client.stored.details.client_id.clone(), Arc::new(client));
                }
                Err(error) => {
                    tracing::error!(client = id, %error, "an OAuth client could not be loaded; it gets no token");
                }
            }
        }
        *self
            .clients
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = clients;
        Ok(())
    }

    /// The settings, when tokens are issued.
    pub(crate) fn config(&self) -> Option<&OAuthConfig> {
        self.issuer.as_ref().map(|issuer| &issuer.config)
    }

    fn client(&self, client_id: &str) -> Option<Arc<Client>> {
        self.clients
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(client_id)
            .cloned()
    }

    /// Authenticates the client of a token request and issues an access token for the scopes
    /// asked (`scope`, space-separated) that the client may have.
    pub(crate) fn issue(
        &self,
        authentication: ClientAuthentication,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Result<Issued, TokenError> {
        let Some(issuer) = &self.issuer else {
            return Err(TokenError::new(
                "unsupported_grant_type",
                "this server issues no tokens (OAuth is not configured)",
            ));
        };
        if !super::jwt::install() {
            return Err(TokenError::new(
                "server_error",
                "the JWT crypto provider is not Galen's",
            ));
        }
        let client = match authentication {
            ClientAuthentication::Secret { client_id, secret } => {
                self.check_secret(&client_id, &secret)?
            }
            ClientAuthentication::Assertion {
                client_id,
                assertion,
            } => self.check_assertion(issuer, client_id.as_deref(), &assertion, now)?,
        };
        let granted = grant(scope, &client)?;
        let token_id = random_hex(16).ok_or_else(|| {
            TokenError::of(&client, "server_error", "no randomness for the token id")
        })?;
        let lifetime = issuer.config.token_lifetime.as_secs();
        let claims = AccessClaims {
            iss: issuer.config.public_url.clone(),
            aud: issuer.config.fhir_base(),
            sub: client.stored.details.client_id.clone(),
            client_id: client.stored.details.client_id.clone(),
            exp: seconds(now) + i64::try_from(lifetime).unwrap_or(i64::MAX / 2),
            iat: seconds(now),
            jti: token_id.clone(),
            scope: granted.to_text(),
        };
        let mut header = Header::new(Algorithm::ES384);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(issuer.config.signing_key.kid().to_owned());
        let access_token =
            jsonwebtoken::encode(&header, &claims, &issuer.encoding).map_err(|_| {
                TokenError::of(&client, "server_error", "the token could not be signed")
            })?;
        Ok(Issued {
            access_token,
            expires_in: lifetime,
            scope: claims.scope,
            token_id,
            client,
        })
    }

    fn check_secret(&self, client_id: &str, secret: &str) -> Result<Arc<Client>, TokenError> {
        let presented: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
        let refused = || TokenError::new("invalid_client", "unknown client or wrong secret");
        let client = self.client(client_id).ok_or_else(refused)?;
        let ClientCredential::SecretSha256(expected) = &client.stored.details.credential else {
            return Err(TokenError::of(
                &client,
                "invalid_client",
                "this client authenticates with a signed JWT (private_key_jwt), not a secret",
            ));
        };
        if !same_digest(&presented, expected) {
            return Err(TokenError::of(
                &client,
                "invalid_client",
                "unknown client or wrong secret",
            ));
        }
        if client.stored.revoked.is_some() {
            return Err(TokenError::of(
                &client,
                "invalid_client",
                "the client is revoked",
            ));
        }
        Ok(client)
    }

    /// Checks a client assertion as SMART Backend Services asks.
    fn check_assertion(
        &self,
        issuer: &Issuer,
        client_id: Option<&str>,
        assertion: &str,
        now: Timestamp,
    ) -> Result<Arc<Client>, TokenError> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| {
            TokenError::new(
                "invalid_client",
                "client_assertion is not a JWT signed with RS384 or ES384",
            )
        })?;
        // Whose keys to check it with; nothing of it is trusted before the signature is.
        let named: UnverifiedIssuer = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| {
                TokenError::new(
                    "invalid_client",
                    "client_assertion has no iss (the client id)",
                )
            })?;
        if client_id.is_some_and(|client_id| client_id != named.iss) {
            return Err(TokenError::new(
                "invalid_request",
                "client_id differs from the assertion's iss",
            ));
        }
        let client = self
            .client(&named.iss)
            .ok_or_else(|| TokenError::new("invalid_client", "unknown client"))?;
        let refused = |description: &str| TokenError::of(&client, "invalid_client", description);
        if client.stored.revoked.is_some() {
            return Err(refused("the client is revoked"));
        }
        if client.keys.is_empty() {
            return Err(refused(
                "this client authenticates with its secret, not a signed JWT",
            ));
        }
        if header.jku.is_some() {
            return Err(refused(
                "jku is not accepted: Galen uses the public keys registered for the client",
            ));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| refused("the assertion's header needs the kid of the signing key"))?;
        let key = client
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .ok_or_else(|| refused("no key with this kid is registered for the client"))?;
        // The key decides the algorithm; the header must agree.
        if header.alg != key.algorithm {
            return Err(refused(&format!(
                "key {kid:?} signs with {:?} only",
                key.algorithm
            )));
        }
        let endpoint = issuer.config.token_endpoint();
        let mut validation = Validation::new(key.algorithm);
        // Times are checked below against Galen's clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_audience(&[endpoint.as_str()]);
        validation.set_issuer(&[client.stored.details.client_id.as_str()]);
        validation.sub = Some(client.stored.details.client_id.clone());
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key.key, &validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind as E;
                refused(&match error.kind() {
                    E::InvalidSignature => "the assertion's signature does not verify".to_owned(),
                    E::InvalidAudience => {
                        format!("the assertion's aud must be the token endpoint, {endpoint}")
                    }
                    E::InvalidSubject | E::InvalidIssuer => {
                        "the assertion's iss and sub must both be the client id".to_owned()
                    }
                    E::MissingRequiredClaim(claim) => {
                        format!("the assertion has no {claim}")
                    }
                    _ => "the assertion is not valid".to_owned(),
                })
            })?
            .claims;
        let now_seconds = seconds(now);
        let leeway = LEEWAY.as_secs() as i64;
        if claims.exp < now_seconds - leeway {
            return Err(refused("the assertion has expired"));
        }
        if claims.exp > now_seconds + MAX_ASSERTION_LIFETIME.as_secs() as i64 + leeway {
            return Err(refused(
                "the assertion's exp must be at most five minutes ahead",
            ));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now_seconds + leeway)
            || claims.iat.is_some_and(|iat| iat > now_seconds + leeway)
        {
            return Err(refused("the assertion is not valid yet"));
        }
        let jti = claims
            .jti
            .filter(|jti| !jti.is_empty() && jti.len() <= 256)
            .ok_or_else(|| refused("the assertion needs a jti (at most 256 characters)"))?;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now_micros = now.micros();
        seen.retain(|_, expires| *expires + LEEWAY.as_micros() as i64 >= now_micros);
        if seen.len() >= MAX_SEEN_ASSERTIONS {
            return Err(TokenError::of(
                &client,
                "temporarily_unavailable",
                "too many assertions in flight; retry in a minute",
            ));
        }
        let key = (client.stored.details.client_id.clone(), jti);
        if seen.contains_key(&key) {
            return Err(refused(
                "this assertion's jti was used already: make a new assertion for each request",
            ));
        }
        seen.insert(key, claims.exp.saturating_mul(1_000_000));
        drop(seen);
        Ok(client)
    }

    /// The principal of a bearer access token Galen issued, if it is valid now and its client is
    /// not revoked.
    pub(crate) fn principal(&self, token: &str, now: Timestamp) -> Option<Principal> {
        let issuer = self.issuer.as_ref()?;
        if !super::jwt::install() {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        // RFC 9068 section 4: the type is at+jwt; the algorithm and key are Galen's own.
        if header.alg != Algorithm::ES384
            || header.typ.as_deref() != Some("at+jwt")
            || header.kid.as_deref() != Some(issuer.config.signing_key.kid())
        {
            return None;
        }
        let mut validation = Validation::new(Algorithm::ES384);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_audience(&[issuer.config.fhir_base()]);
        validation.set_issuer(&[issuer.config.public_url.as_str()]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &issuer.decoding, &validation)
            .ok()?
            .claims;
        let now_seconds = seconds(now);
        let leeway = LEEWAY.as_secs() as i64;
        if claims.exp < now_seconds - leeway || claims.iat > now_seconds + leeway {
            return None;
        }
        if claims.sub != claims.client_id {
            return None;
        }
        let client = self
            .client(&claims.client_id)
            .filter(|client| client.stored.revoked.is_none())?;
        let scopes = claims
            .scope
            .split_whitespace()
            .map(SmartScope::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .ok()?;
        Some(Principal {
            actor: client.actor(),
            user: None,
            token: None,
            role: client.role,
            scope: client.scope(),
            smart: Some(Arc::new(SmartGrant {
                client_id: client.stored.details.client_id.clone(),
                client_name: client.stored.details.name.clone(),
                token_id: claims.jti,
                scopes: ScopeSet(scopes),
            })),
            emergency: std::collections::BTreeSet::new(),
            organization: None,
        })
    }
}

/// The scopes granted: each asked scope narrowed by each allowed one (RFC 6749 section 3.3: the
/// server may grant less than asked, and says so in the answer's `scope`).
fn grant(asked: Option<&str>, client: &Arc<Client>) -> Result<ScopeSet, TokenError> {
    let asked: Vec<&str> = asked.unwrap_or("").split_whitespace().collect();
    if asked.is_empty() {
        return Err(TokenError::of(
            client,
            "invalid_scope",
            "ask for the SMART scopes you need (scope=system/Observation.rs ...)",
        ));
    }
    let mut granted = BTreeSet::new();
    for text in asked {
        let scope = SmartScope::parse(text)
            .map_err(|error| TokenError::of(client, "invalid_scope", error.to_string()))?;
        check_scope_use(&scope)
            .map_err(|description| TokenError::of(client, "invalid_scope", description))?;
        granted.extend(
            client
                .allowed
                .iter()
                .filter_map(|allowed| scope.intersect(allowed)),
        );
    }
    if granted.is_empty() {
        return Err(TokenError::of(
            client,
            "invalid_scope",
            "none of the scopes asked for is allowed for this client",
        ));
    }
    Ok(ScopeSet(granted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_round_trip_through_pem_and_stay_out_of_debug() {
        let key = SigningKey::generate().expect("key");
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(pem.as_bytes()).expect("parses");
        assert_eq!((again.kid(), &again.public), (key.kid(), &key.public));
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()) && !shown.contains(&pem[28..60]));
        assert!(
            SigningKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn public_urls_are_checked() {
        let key = SigningKey::generate().expect("key");
        let config = OAuthConfig::new("https://galen.example.org/", key.clone()).expect("ok");
        assert_eq!(config.fhir_base(), "https://galen.example.org/fhir");
        assert_eq!(
            config.token_endpoint(),
            "https://galen.example.org/oauth/token"
        );
        for bad in ["galen.example.org", "ftp://x", "https://", "https://x/?a=b"] {
            assert!(OAuthConfig::new(bad, key.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn jwks_holds_public_p384_and_rsa_keys_only() {
        let ec = r#"{"kty":"EC","crv":"P-384","kid":"k1",
            "x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let set = |keys: &str| format!(r#"{{"keys":[{keys}]}}"#);
        let keys = parse_jwks(&set(ec)).expect("a P-384 key");
        assert_eq!(keys[0].algorithm, Algorithm::ES384);
        let private = ec.replace(r#""kid":"k1","#, r#""kid":"k1","d":"AAAA","#);
        assert!(
            parse_jwks(&set(&private))
                .expect_err("private")
                .contains("private")
        );
        let p256 = ec.replace("P-384", "P-256");
        assert!(parse_jwks(&set(&p256)).is_err());
        assert!(parse_jwks(&set(r#"{"kty":"oct","kid":"h","k":"c2VjcmV0"}"#)).is_err());
        assert!(parse_jwks(&set(&ec.replace(r#""kid":"k1","#, ""))).is_err());
        assert!(
            parse_jwks(&set(&format!("{ec},{ec}"))).is_err(),
            "kids are unique"
        );
        let small_rsa = r#"{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}"#;
        assert!(
            parse_jwks(&set(small_rsa))
                .expect_err("small")
                .contains("2048")
        );
        assert!(
            parse_jwks(&set(
                &ec.replace(r#""kty":"EC","#, r#""kty":"EC","alg":"ES256","#)
            ))
            .is_err()
        );
        assert!(parse_jwks(r#"{"keys":[]}"#).is_err());
    }
}
