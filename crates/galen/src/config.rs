//! Configuration of `galen serve`: defaults, then the TOML file, then `GALEN_*` environment
//! variables, then flags (each later source wins).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use galen_clinical::{ClinicalConfig, Priority, ScoreTable};
use galen_server::{ClinicalSettings, HardeningConfig, TlsFiles, WebhookEndpoint};

use crate::ListenAddr;
use serde::Deserialize;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Flags of `galen serve`. Every flag also reads a `GALEN_*` environment variable.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (keys: http_addr, data_dir, api_token_file, max_body_bytes,
    /// stale_after_seconds, log_format).
    #[arg(long, env = "GALEN_CONFIG")]
    config: Option<PathBuf>,
    /// Address and port of the HTTP listener [default: 127.0.0.1:8080].
    #[arg(long, env = "GALEN_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./galen-data].
    #[arg(long, env = "GALEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// API token clients must present. When neither this nor `api_token_file` is set, a token is
    /// generated once and kept in <data-dir>/api-token (readable by the owner only).
    #[arg(long, env = "GALEN_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Largest accepted request body in bytes [default: 16777216].
    #[arg(long, env = "GALEN_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Seconds without data after which the dashboard marks a patient stale [default: 60].
    #[arg(long, env = "GALEN_STALE_AFTER_SECONDS")]
    stale_after_seconds: Option<u64>,
    /// Clinical configuration (score tables, alarm rules, escalation) in TOML
    /// [default: the built-in one, see galen-clinical/config/default.toml].
    #[arg(long, env = "GALEN_CLINICAL_CONFIG")]
    clinical_config: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "GALEN_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Address and port of the plain HL7 v2 (MLLP) listener, or `off` [default: off]. MLLP has
    /// no credentials, so this listener is anonymous and needs --allow-anonymous-mllp; prefer
    /// --mllp-tls-addr with --device-ca.
    #[arg(long, env = "GALEN_MLLP_ADDR")]
    mllp_addr: Option<ListenAddr>,
    /// Address and port of the MQTT listener, or `off` [default: 127.0.0.1:1883].
    #[arg(long, env = "GALEN_MQTT_ADDR")]
    mqtt_addr: Option<ListenAddr>,
    /// Directory of mapping templates for device payloads (`*.toml`, `*.json`); reloaded on
    /// SIGHUP and by `POST /api/v1/mapping/reload`.
    #[arg(long, env = "GALEN_TEMPLATES")]
    templates: Option<PathBuf>,
    /// Address and port of the MQTT-over-TLS listener (conventionally port 8883), or `off`
    /// [default: off]. Needs --tls-cert and --tls-key.
    #[arg(long, env = "GALEN_MQTT_TLS_ADDR")]
    mqtt_tls_addr: Option<ListenAddr>,
    /// Address and port of the HL7 v2 over MLLP/TLS listener, or `off` [default: off]. Needs
    /// --tls-cert and --tls-key.
    #[arg(long, env = "GALEN_MLLP_TLS_ADDR")]
    mllp_tls_addr: Option<ListenAddr>,
    /// Certificate chain (PEM, server certificate first) of the TLS device listeners.
    #[arg(long, env = "GALEN_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "GALEN_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign device certificates: an MQTT-over-TLS or MLLP/TLS client
    /// presenting one is authenticated as the device whose serial is the certificate's subject
    /// CN. MLLP/TLS requires one (unless --allow-anonymous-mllp).
    #[arg(long, env = "GALEN_DEVICE_CA")]
    device_ca: Option<PathBuf>,
    /// External MQTT broker to take device messages from, mqtt://HOST:PORT [default: none]. Galen
    /// joins the shared subscription $share/<group>/galen/v1/devices/+/+ and acknowledges each
    /// message once stored.
    #[arg(long, env = "GALEN_MQTT_BROKER")]
    mqtt_broker: Option<String>,
    /// User name at the external broker.
    #[arg(long, env = "GALEN_MQTT_BROKER_USERNAME")]
    mqtt_broker_username: Option<String>,
    /// File holding the password at the external broker.
    #[arg(long, env = "GALEN_MQTT_BROKER_PASSWORD_FILE")]
    mqtt_broker_password_file: Option<PathBuf>,
    /// Shared-subscription group: Galen nodes in the same group split the messages [default:
    /// galen].
    #[arg(long, env = "GALEN_MQTT_BROKER_GROUP")]
    mqtt_broker_group: Option<String>,
    /// CA certificates (PEM) trusted for outbound HTTPS (alarm webhooks, FHIR rest-hook
    /// subscriptions), in addition to the platform's: the hospital's own CA.
    #[arg(long, env = "GALEN_OUTBOUND_CA")]
    outbound_ca: Option<PathBuf>,
    /// Start even when a listener (HTTP without --tls-cert, MQTT, MLLP) is plaintext on an
    /// address other than loopback: only where a TLS proxy or a closed network protects it.
    #[arg(long, env = "GALEN_ALLOW_PLAINTEXT", value_parser = clap::builder::BoolishValueParser::new())]
    allow_plaintext: bool,
    #[command(flatten)]
    data_key: crate::keys_cli::DataKeyArgs,
    /// Start without a master key for encryption at rest: patient names, identifiers, birth
    /// dates, kept documents and dead-letter payloads are then stored in the clear. Only where
    /// the volume itself is encrypted.
    #[arg(long, env = "GALEN_ALLOW_UNENCRYPTED_DATA", value_parser = clap::builder::BoolishValueParser::new())]
    allow_unencrypted_data: bool,
    /// Start with HL7 v2 listeners that do not authenticate the sending device (--mllp-addr, or
    /// --mllp-tls-addr without --device-ca) and take every message's device ids at their word:
    /// only where a closed network or an interface engine vouches for every sender.
    #[arg(long, env = "GALEN_ALLOW_ANONYMOUS_MLLP", value_parser = clap::builder::BoolishValueParser::new())]
    allow_anonymous_mllp: bool,
    /// Administrator accounts without an active TOTP second factor may do nothing but enrol one
    /// (POST /api/v1/session/totp, then .../confirm).
    #[arg(long, env = "GALEN_REQUIRE_ADMIN_TOTP", value_parser = clap::builder::BoolishValueParser::new())]
    require_admin_totp: bool,
    /// HTTP requests per second each client address may make on average; 0 turns the limit off
    /// [default: 50]. Loopback clients are not limited.
    #[arg(long, env = "GALEN_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// HTTP requests a client may make at once before --rate-limit applies [default: 200].
    #[arg(long, env = "GALEN_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// Reverse proxies (IP addresses, comma-separated) whose X-Forwarded-For, -Proto and -Host
    /// headers are believed: for the rate limit, HSTS and the cross-site check.
    #[arg(long, env = "GALEN_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<IpAddr>>,
    /// Public base URL of this server as OAuth2 machine clients reach it
    /// (https://galen.example.org): the issuer of access tokens; their audience is <url>/fhir and
    /// the token endpoint <url>/oauth/token [default: http(s)://<http-addr>].
    #[arg(long, env = "GALEN_PUBLIC_URL")]
    public_url: Option<String>,
    /// PKCS#8 PEM file of the EC P-384 private key that signs OAuth2 access tokens [default:
    /// generated once into <data-dir>/oauth-signing-key.pem, readable by the owner only].
    #[arg(long, env = "GALEN_OAUTH_SIGNING_KEY")]
    oauth_signing_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    clinical_config: Option<PathBuf>,
    /// Hospital score tables (TOML) that the clinical configuration may name.
    #[serde(default)]
    score_tables: Vec<PathBuf>,
    #[serde(default)]
    webhook: Vec<FileWebhook>,
    http_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    api_token_file: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    stale_after_seconds: Option<u64>,
    log_format: Option<LogFormat>,
    mllp_addr: Option<ListenAddr>,
    mqtt_addr: Option<ListenAddr>,
    templates: Option<PathBuf>,
    mqtt_tls_addr: Option<ListenAddr>,
    mllp_tls_addr: Option<ListenAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    device_ca: Option<PathBuf>,
    mqtt_broker: Option<String>,
    mqtt_broker_username: Option<String>,
    mqtt_broker_password_file: Option<PathBuf>,
    mqtt_broker_group: Option<String>,
    outbound_ca: Option<PathBuf>,
    allow_plaintext: Option<bool>,
    allow_anonymous_mllp: Option<bool>,
    require_admin_totp: Option<bool>,
    rate_limit: Option<u32>,
    rate_limit_burst: Option<u32>,
    trusted_proxies: Option<Vec<IpAddr>>,
    public_url: Option<String>,
    oauth_signing_key: Option<PathBuf>,
}

/// A webhook endpoint in the configuration file. The HMAC secret is read from a file so that it
/// never sits in the main configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWebhook {
    name: String,
    url: String,
    secret_file: PathBuf,
    #[serde(default = "default_min_priority")]
    min_priority: String,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
}

fn default_min_priority() -> String {
    "low".into()
}

fn default_attempts() -> u32 {
    6
}

/// Loads the clinical configuration and webhooks.
pub(crate) fn clinical_settings(
    path: Option<&Path>,
    tables: &[PathBuf],
    webhooks: &[FileWebhook],
) -> Result<ClinicalSettings> {
    let mut extra = Vec::new();
    for table in tables {
        let text = std::fs::read_to_string(table)
            .with_context(|| format!("reading score table {}", table.display()))?;
        extra.push(
            ScoreTable::from_toml(&text)
                .with_context(|| format!("loading score table {}", table.display()))?,
        );
    }
    let config = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            ClinicalConfig::from_toml(&text, extra)
                .with_context(|| format!("loading {}", path.display()))?
        }
        None if extra.is_empty() => ClinicalConfig::builtin(),
        None => bail!("score_tables need a clinical_config that names them in `scores`"),
    };
    let mut endpoints = Vec::new();
    for webhook in webhooks {
        if !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://")) {
            bail!(
                "webhook {:?}: the URL must start with http:// or https://",
                webhook.name
            );
        }
        let secret = std::fs::read_to_string(&webhook.secret_file)
            .with_context(|| format!("reading the secret of webhook {:?}", webhook.name))?
            .trim()
            .to_owned();
        if secret.len() < 16 {
            bail!(
                "webhook {:?}: the secret must be at least 16 characters",
                webhook.name
            );
        }
        endpoints.push(WebhookEndpoint {
            name: webhook.name.clone(),
            url: webhook.url.clone(),
            secret,
            min_priority: Priority::parse(&webhook.min_priority).with_context(|| {
                format!(
                    "webhook {:?}: min_priority is low, medium or high",
                    webhook.name
                )
            })?,
            max_attempts: webhook.max_attempts.max(1),
            first_retry: std::time::Duration::from_secs(1),
        });
    }
    Ok(ClinicalSettings {
        config: std::sync::Arc::new(config),
        webhooks: endpoints,
        ..ClinicalSettings::default()
    })
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) http_addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) api_token: Option<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) stale_after_seconds: u64,
    pub(crate) log_format: LogFormat,
    pub(crate) clinical: ClinicalSettings,
    pub(crate) mllp_addr: ListenAddr,
    pub(crate) mqtt_addr: ListenAddr,
    pub(crate) templates: Option<PathBuf>,
    /// MQTT over TLS (`Off` unless asked for).
    pub(crate) mqtt_tls_addr: ListenAddr,
    /// HL7 v2 over MLLP/TLS (`Off` unless asked for).
    pub(crate) mllp_tls_addr: ListenAddr,
    /// Certificate, key and device CA of the TLS listeners; present whenever one of them is on.
    pub(crate) tls: Option<TlsFiles>,
    /// The external broker to take device messages from, if any.
    pub(crate) mqtt_broker: Option<crate::bridge::BrokerSettings>,
    /// Extra CA certificates (PEM file) for outbound HTTPS.
    pub(crate) outbound_ca: Option<PathBuf>,
    /// Plaintext listeners on non-loopback addresses are allowed.
    pub(crate) allow_plaintext: bool,
    /// The master key of encryption at rest.
    pub(crate) data_key: Option<galen_store::crypto::MasterKey>,
    /// Serving without encryption at rest is allowed.
    pub(crate) allow_unencrypted_data: bool,
    /// MLLP listeners that do not authenticate the sending device are allowed.
    pub(crate) allow_anonymous_mllp: bool,
    /// Administrators must enrol a TOTP second factor before doing anything else.
    pub(crate) require_admin_totp: bool,
    /// Rate limit and trusted proxies of the HTTP listener.
    pub(crate) hardening: HardeningConfig,
    /// Public base URL (OAuth2 issuer; FHIR audience and token endpoint under it), if given.
    pub(crate) public_url: Option<String>,
    /// The key file of OAuth2 access tokens, if given (else `<data-dir>/oauth-signing-key.pem`).
    pub(crate) oauth_signing_key: Option<PathBuf>,
}

pub(crate) const DEFAULT_DATA_DIR: &str = "galen-data";
const TOKEN_FILE: &str = "api-token";
/// Galen's OAuth2 signing key in the data directory, when none is given.
const SIGNING_KEY_FILE: &str = "oauth-signing-key.pem";

impl Settings {
    pub(crate) fn resolve(args: ServeArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let api_token = match (args.api_token, &file.api_token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the API token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if api_token.as_deref().is_some_and(|token| token.len() < 16) {
            bail!("the API token must be at least 16 characters long");
        }
        let mqtt_tls_addr = args
            .mqtt_tls_addr
            .or(file.mqtt_tls_addr)
            .unwrap_or(ListenAddr::Off);
        let mllp_tls_addr = args
            .mllp_tls_addr
            .or(file.mllp_tls_addr)
            .unwrap_or(ListenAddr::Off);
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(certificate), Some(private_key)) => Some(TlsFiles {
                certificate,
                private_key,
                device_ca: args.device_ca.or(file.device_ca),
            }),
            _ => None,
        };
        if tls.is_none() {
            for (addr, flag) in [
                (mqtt_tls_addr, "--mqtt-tls-addr"),
                (mllp_tls_addr, "--mllp-tls-addr"),
            ] {
                if addr != ListenAddr::Off {
                    bail!(
                        "{flag} needs a server certificate and key: give --tls-cert and --tls-key \
                         (or tls_cert and tls_key in the configuration file)"
                    );
                }
            }
        }
        let http_addr = args.http_addr.or(file.http_addr).unwrap_or(default_addr());
        Ok(Settings {
            http_addr,
            public_url: args.public_url.or(file.public_url),
            oauth_signing_key: args.oauth_signing_key.or(file.oauth_signing_key),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            api_token,
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(16 * 1024 * 1024),
            stale_after_seconds: args
                .stale_after_seconds
                .or(file.stale_after_seconds)
                .unwrap_or(60),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            mllp_addr: args.mllp_addr.or(file.mllp_addr).unwrap_or(ListenAddr::Off),
            mqtt_addr: args
                .mqtt_addr
                .or(file.mqtt_addr)
                .unwrap_or(ListenAddr::At(SocketAddr::from(([127, 0, 0, 1], 1883)))),
            templates: args.templates.or(file.templates),
            mqtt_tls_addr,
            mllp_tls_addr,
            tls,
            outbound_ca: args.outbound_ca.or(file.outbound_ca),
            allow_plaintext: args.allow_plaintext || file.allow_plaintext.unwrap_or(false),
            data_key: args.data_key.load()?,
            allow_unencrypted_data: args.allow_unencrypted_data,
            allow_anonymous_mllp: args.allow_anonymous_mllp
                || file.allow_anonymous_mllp.unwrap_or(false),
            require_admin_totp: args.require_admin_totp || file.require_admin_totp.unwrap_or(false),
            hardening: HardeningConfig {
                rate_per_second: args
                    .rate_limit
                    .or(file.rate_limit)
                    .unwrap_or(HardeningConfig::default().rate_per_second),
                rate_burst: args
                    .rate_limit_burst
                    .or(file.rate_limit_burst)
                    .unwrap_or(HardeningConfig::default().rate_burst),
                trusted_proxies: args
                    .trusted_proxies
                    .or(file.trusted_proxies)
                    .unwrap_or_default(),
                ..HardeningConfig::default()
            },
            mqtt_broker: match args.mqtt_broker.or(file.mqtt_broker) {
                Some(url) => Some(crate::bridge::BrokerSettings::resolve(
                    &url,
                    args.mqtt_broker_username.or(file.mqtt_broker_username),
                    args.mqtt_broker_password_file
                        .or(file.mqtt_broker_password_file)
                        .as_deref(),
                    args.mqtt_broker_group.or(file.mqtt_broker_group),
                )?),
                None => None,
            },
            clinical: clinical_settings(
                args.clinical_config
                    .as_deref()
                    .or(file.clinical_config.as_deref()),
                &file.score_tables,
                &file.webhook,
            )?,
        })
    }
}

impl Settings {
    /// The public base URL: the one given, else the address the HTTP listener is bound to
    /// (`local`; a wildcard address names no host a client could use: localhost then).
    pub(crate) fn public_url(&self, local: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            if local.ip().is_unspecified() {
                format!("{scheme}://localhost:{}", local.port())
            } else {
                format!("{scheme}://{local}")
            }
        })
    }

    /// The listeners that would carry data in plaintext on an address other than loopback:
    /// `(listener, flag, address)`. HTTP is plaintext unless a certificate is configured (then
    /// it serves HTTPS); the plain MQTT and MLLP listeners always are.
    pub(crate) fn exposed_plaintext(&self) -> Vec<(&'static str, &'static str, SocketAddr)> {
        let mut exposed = Vec::new();
        if self.tls.is_none() {
            exposed.push(("HTTP", "--http-addr", self.http_addr));
        }
        if let ListenAddr::At(addr) = self.mqtt_addr {
            exposed.push(("MQTT", "--mqtt-addr", addr));
        }
        if let ListenAddr::At(addr) = self.mllp_addr {
            exposed.push(("HL7 v2 (MLLP)", "--mllp-addr", addr));
        }
        exposed.retain(|(_, _, addr)| !addr.ip().is_loopback());
        exposed
    }

    /// Refuses plaintext listeners on non-loopback addresses unless `--allow-plaintext` is
    /// given (then they are logged as a warning).
    pub(crate) fn check_transport(&self) -> Result<()> {
        let exposed = self.exposed_plaintext();
        if exposed.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = exposed
            .iter()
            .map(|(listener, flag, addr)| format!("{listener} on {addr} ({flag})"))
            .collect();
        if self.allow_plaintext {
            tracing::warn!(
                listeners = %listed.join(", "),
                "plaintext listeners on non-loopback addresses, allowed by --allow-plaintext"
            );
            return Ok(());
        }
        bail!(
            "refusing to start: {} would carry patient data in plaintext on a non-loopback \
             address. Give --tls-cert and --tls-key (HTTP then serves HTTPS; for devices use \
             --mqtt-tls-addr / --mllp-tls-addr and turn the plain listeners off with \
             --mqtt-addr off / --mllp-addr off), listen on a loopback address, or pass \
             --allow-plaintext (GALEN_ALLOW_PLAINTEXT=true) if a TLS proxy or a closed network \
             protects them",
            listed.join(", ")
        )
    }
}

impl Settings {
    /// Refuses to serve without a master key for encryption at rest, unless
    /// `--allow-unencrypted-data` says the volume is encrypted instead.
    pub(crate) fn check_encryption(&self) -> Result<()> {
        match (&self.data_key, self.allow_unencrypted_data) {
            (Some(key), _) => {
                tracing::info!(
                    key = key.id(),
                    "patient-identifying data is encrypted at rest"
                );
                Ok(())
            }
            (None, true) => {
                tracing::warn!("no encryption at rest, allowed by --allow-unencrypted-data");
                Ok(())
            }
            (None, false) => bail!(
                "refusing to start: patient names, identifiers and birth dates would be stored \
                 unencrypted. Make a master key with `galen keys generate --out FILE --id ID`, \
                 keep it outside the data directory and give it with --data-key-file \
                 (GALEN_DATA_KEY_FILE) or GALEN_DATA_KEY; or pass --allow-unencrypted-data \
                 (GALEN_ALLOW_UNENCRYPTED_DATA=true) if the volume is encrypted"
            ),
        }
    }

    /// The HL7 v2 listeners that would not authenticate the sending device: the plain one, and
    /// MLLP/TLS without a device CA to verify client certificates. `(listener, flag, address)`.
    pub(crate) fn anonymous_mllp(&self) -> Vec<(&'static str, &'static str, SocketAddr)> {
        let mut anonymous = Vec::new();
        if let ListenAddr::At(addr) = self.mllp_addr {
            anonymous.push(("HL7 v2 (MLLP)", "--mllp-addr", addr));
        }
        let device_ca = self
            .tls
            .as_ref()
            .is_some_and(|files| files.device_ca.is_some());
        if let (ListenAddr::At(addr), false) = (self.mllp_tls_addr, device_ca) {
            anonymous.push((
                "HL7 v2 over MLLP/TLS without --device-ca",
                "--mllp-tls-addr",
                addr,
            ));
        }
        anonymous
    }

    /// Refuses anonymous device ingest: MLLP listeners that do not authenticate the sender,
    /// unless `--allow-anonymous-mllp` is given (then they are logged as a warning). MQTT and
    /// HTTP always authenticate their devices.
    pub(crate) fn check_device_identity(&self) -> Result<()> {
        let anonymous = self.anonymous_mllp();
        if anonymous.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = anonymous
            .iter()
            .map(|(listener, flag, addr)| format!("{listener} on {addr} ({flag})"))
            .collect();
        if self.allow_anonymous_mllp {
            tracing::warn!(
                listeners = %listed.join(", "),
                "HL7 v2 listeners accept messages for any registered device without \
                 authenticating the sender, allowed by --allow-anonymous-mllp"
            );
            return Ok(());
        }
        bail!(
            "refusing to start: {} would accept measurements from anyone, because HL7 v2 has no \
             credentials of its own. Serve MLLP over TLS with client certificates \
             (--mllp-tls-addr with --tls-cert, --tls-key and --device-ca; `galen certs` makes \
             development certificates), turn the listener off (--mllp-addr off), or pass \
             --allow-anonymous-mllp (GALEN_ALLOW_ANONYMOUS_MLLP=true) if a closed network or an \
             interface engine vouches for every sender",
            listed.join(", ")
        )
    }
}

pub(crate) fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Galen's OAuth2 signing key: from `given`, else `<data_dir>/oauth-signing-key.pem`, generated
/// (mode 0600) the first time. A file that is there but unusable stops the start: a new key would
/// silently void every token issued, and the file may be someone's mistake to look at. The key is
/// never printed or logged.
pub(crate) fn load_or_create_signing_key(
    data_dir: &Path,
    given: Option<&Path>,
) -> Result<galen_server::access::oauth::SigningKey> {
    use galen_server::access::oauth::SigningKey;
    let path = given.map_or_else(|| data_dir.join(SIGNING_KEY_FILE), Path::to_path_buf);
    match std::fs::read(&path) {
        Ok(pem) => {
            return SigningKey::from_pem(&pem)
                .with_context(|| format!("reading the OAuth signing key {}", path.display()));
        }
        Err(error) if given.is_some() || error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error)
                .with_context(|| format!("reading the OAuth signing key {}", path.display()));
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let key = SigningKey::generate().context("generating the OAuth signing key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(key.to_pem().as_bytes())?;
    file.sync_all()?;
    eprintln!(
        "galen: generated the OAuth signing key of access tokens in {}",
        path.display()
    );
    Ok(key)
}

/// Reads `<data_dir>/api-token`, creating it with a fresh random token (mode 0600) if absent.
/// The token itself is never printed or logged.
pub(crate) fn load_or_create_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim().to_owned();
        if token.len() >= 16 {
            return Ok(token);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|error| anyhow::anyhow!("no randomness for the API token: {error}"))?;
    let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    eprintln!(
        "galen: generated an API token in {} (clients send it as 'Authorization: Bearer <token>')",
        path.display()
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn resolve(flags: &[&str]) -> Result<Settings> {
        let mut argv = vec!["galen"];
        argv.extend_from_slice(flags);
        Settings::resolve(Cli::try_parse_from(argv).expect("flags parse").args)
    }

    fn config_file(directory: &Path, text: &str) -> String {
        let path = directory.join("galen.toml");
        std::fs::write(&path, text).expect("write config");
        path.display().to_string()
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let directory = tempfile::tempdir().expect("temp dir");
        let defaults = resolve(&[]).expect("defaults");
        assert_eq!(defaults.http_addr, default_addr());
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(
            (defaults.stale_after_seconds, defaults.log_format),
            (60, LogFormat::Text)
        );

        let token_file = directory.path().join("token");
        std::fs::write(&token_file, "  file-token-0123456789abcdef\n").expect("token file");
        let file = config_file(
            directory.path(),
            &format!(
                "http_addr = \"127.0.0.1:9000\"\ndata_dir = \"/var/lib/galen\"\nstale_after_seconds = 120\n\
                 log_format = \"json\"\napi_token_file = \"{}\"\n",
                token_file.display()
            ),
        );
        let from_file = resolve(&["--config", &file]).expect("file");
        assert_eq!(from_file.http_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(from_file.data_dir, PathBuf::from("/var/lib/galen"));
        assert_eq!(
            (from_file.stale_after_seconds, from_file.log_format),
            (120, LogFormat::Json)
        );
        assert_eq!(
            from_file.api_token.as_deref(),
            Some("file-token-0123456789abcdef"),
            "trimmed"
        );

        let flags = resolve(&[
            "--config",
            &file,
            "--http-addr",
            "0.0.0.0:8443",
            "--stale-after-seconds",
            "30",
        ])
        .expect("flags");
        assert_eq!(
            flags.http_addr.to_string(),
            "0.0.0.0:8443",
            "flags beat the file"
        );
        assert_eq!(flags.stale_after_seconds, 30);
        assert_eq!(
            flags.data_dir,
            PathBuf::from("/var/lib/galen"),
            "the file still fills the rest"
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let directory = tempfile::tempdir().expect("temp dir");
        let typo = config_file(directory.path(), "http_adress = \"127.0.0.1:1\"\n");
        let error = format!(
            "{:#}",
            resolve(&["--config", &typo]).expect_err("unknown key")
        );
        assert!(error.contains("http_adress"), "{error}");
        let error = format!(
            "{:#}",
            resolve(&["--api-token", "short"]).expect_err("short token")
        );
        assert!(error.contains("at least 16"), "{error}");
        let error = format!(
            "{:#}",
            resolve(&["--config", "/nonexistent/galen.toml"]).expect_err("missing file")
        );
        assert!(error.contains("/nonexistent/galen.toml"), "{error}");
    }

    #[test]
    fn tls_listeners_are_off_by_default_and_need_a_certificate() {
        let defaults = resolve(&[]).expect("defaults");
        assert_eq!(
            (defaults.mqtt_tls_addr, defaults.mllp_tls_addr),
            (ListenAddr::Off, ListenAddr::Off)
        );
        assert_eq!(defaults.tls, None);
        let error = format!(
            "{:#}",
            resolve(&["--mqtt-tls-addr", "127.0.0.1:8883"]).expect_err("no certificate")
        );
        assert!(
            error.contains("--mqtt-tls-addr") && error.contains("--tls-cert"),
            "{error}"
        );
        let error = format!(
            "{:#}",
            resolve(&["--mllp-tls-addr", "127.0.0.1:2576", "--tls-cert", "c.pem"])
                .expect_err("no key")
        );
        assert!(error.contains("--mllp-tls-addr"), "{error}");
        let directory = tempfile::tempdir().expect("temp dir");
        let file = config_file(
            directory.path(),
            "mqtt_tls_addr = \"0.0.0.0:8883\"\ntls_cert = \"/etc/galen/server.pem\"\n\
             tls_key = \"/etc/galen/server.key\"\ndevice_ca = \"/etc/galen/devices.pem\"\n",
        );
        let settings = resolve(&["--config", &file]).expect("from the file");
        assert_eq!(settings.mqtt_tls_addr.to_string(), "0.0.0.0:8883");
        assert_eq!(settings.mllp_tls_addr, ListenAddr::Off);
        let tls = settings.tls.expect("TLS files");
        assert_eq!(tls.certificate, PathBuf::from("/etc/galen/server.pem"));
        assert_eq!(tls.private_key, PathBuf::from("/etc/galen/server.key"));
        assert_eq!(tls.device_ca, Some(PathBuf::from("/etc/galen/devices.pem")));
        let flags = resolve(&["--config", &file, "--mqtt-tls-addr", "off"]).expect("flags");
        assert_eq!(flags.mqtt_tls_addr, ListenAddr::Off, "flags beat the file");
    }

    #[test]
    fn anonymous_mllp_is_off_by_default_and_refused_unless_allowed() {
        let defaults = resolve(&[]).expect("defaults");
        assert_eq!(
            defaults.mllp_addr,
            ListenAddr::Off,
            "plain MLLP is anonymous"
        );
        defaults.check_device_identity().expect("nothing anonymous");
        let plain = resolve(&["--mllp-addr", "127.0.0.1:2575"]).expect("flags");
        let error = format!("{:#}", plain.check_device_identity().expect_err("refused"));
        assert!(
            error.contains("HL7 v2 (MLLP) on 127.0.0.1:2575 (--mllp-addr)")
                && error.contains("--allow-anonymous-mllp")
                && error.contains("GALEN_ALLOW_ANONYMOUS_MLLP"),
            "{error}"
        );
        let tls = [
            "--mllp-tls-addr",
            "127.0.0.1:2576",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ];
        let error = format!(
            "{:#}",
            resolve(&tls)
                .expect("flags")
                .check_device_identity()
                .expect_err("no device CA")
        );
        assert!(error.contains("(--mllp-tls-addr)"), "{error}");
        let mut certified = tls.to_vec();
        certified.extend(["--device-ca", "ca.pem"]);
        resolve(&certified)
            .expect("flags")
            .check_device_identity()
            .expect("client certificates required");
        let mut allowed = tls.to_vec();
        allowed.extend(["--mllp-addr", "127.0.0.1:2575", "--allow-anonymous-mllp"]);
        let allowed = resolve(&allowed).expect("flags");
        assert!(allowed.allow_anonymous_mllp);
        allowed.check_device_identity().expect("allowed explicitly");
        let directory = tempfile::tempdir().expect("temp dir");
        let file = config_file(
            directory.path(),
            "mllp_addr = \"127.0.0.1:2575\"\nallow_anonymous_mllp = true\n",
        );
        resolve(&["--config", &file])
            .expect("file")
            .check_device_identity()
            .expect("allowed in the file");
    }

    #[test]
    fn plaintext_on_other_than_loopback_is_refused_unless_allowed() {
        resolve(&[])
            .expect("defaults")
            .check_transport()
            .expect("loopback by default");
        let exposed = [
            "--http-addr",
            "0.0.0.0:8080",
            "--mqtt-addr",
            "[::]:1883",
            "--mllp-addr",
            "127.0.0.1:2575",
        ];
        let error = format!(
            "{:#}",
            resolve(&exposed)
                .expect("flags")
                .check_transport()
                .expect_err("refused")
        );
        assert!(
            error.contains("HTTP on 0.0.0.0:8080 (--http-addr)")
                && error.contains("MQTT on [::]:1883 (--mqtt-addr)")
                && !error.contains("MLLP")
                && error.contains("--allow-plaintext")
                && error.contains("GALEN_ALLOW_PLAINTEXT"),
            "{error}"
        );
        let mut allowed = exposed.to_vec();
        allowed.push("--allow-plaintext");
        resolve(&allowed)
            .expect("flags")
            .check_transport()
            .expect("allowed explicitly");
        // With a certificate HTTP serves HTTPS: only the plain device listeners remain.
        let tls = resolve(&[
            "--http-addr",
            "0.0.0.0:8443",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server-key.pem",
            "--mqtt-addr",
            "off",
            "--mllp-addr",
            "10.0.0.5:2575",
        ])
        .expect("flags");
        let error = format!("{:#}", tls.check_transport().expect_err("MLLP"));
        assert!(
            error.contains("HL7 v2 (MLLP) on 10.0.0.5:2575 (--mllp-addr)")
                && !error.contains("HTTP on"),
            "{error}"
        );
        let directory = tempfile::tempdir().expect("temp dir");
        let file = config_file(
            directory.path(),
            "http_addr = \"0.0.0.0:8080\"\nallow_plaintext = true\nrate_limit = 7\n\
             rate_limit_burst = 9\ntrusted_proxies = [\"10.0.0.2\"]\n",
        );
        let settings = resolve(&["--config", &file]).expect("file");
        settings.check_transport().expect("allowed in the file");
        assert_eq!(
            (
                settings.hardening.rate_per_second,
                settings.hardening.rate_burst
            ),
            (7, 9)
        );
        assert_eq!(settings.hardening.trusted_proxies.len(), 1);
        let flags =
            resolve(&["--rate-limit", "0", "--trusted-proxies", "10.0.0.2,::1"]).expect("flags");
        assert_eq!(flags.hardening.rate_per_second, 0, "0 turns the limit off");
        assert_eq!(flags.hardening.trusted_proxies.len(), 2);
    }

    #[test]
    fn generated_token_is_private_random_and_stable() {
        let directory = tempfile::tempdir().expect("temp dir");
        let token = load_or_create_token(directory.path()).expect("token");
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|character| character.is_ascii_hexdigit()));
        assert_eq!(
            load_or_create_token(directory.path()).expect("again"),
            token,
            "kept across starts"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(directory.path().join(TOKEN_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(load_or_create_token(other.path()).expect("other"), token);
    }

    #[test]
    fn the_oauth_signing_key_is_generated_private_kept_or_given() {
        let directory = tempfile::tempdir().expect("temp dir");
        let key = load_or_create_signing_key(directory.path(), None).expect("key");
        let again = load_or_create_signing_key(directory.path(), None).expect("again");
        assert_eq!(again.kid(), key.kid(), "kept across starts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(directory.path().join(SIGNING_KEY_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
        let other = tempfile::tempdir().expect("temp dir");
        let given = other.path().join("given.pem");
        std::fs::write(&given, key.to_pem()).expect("write");
        let loaded = load_or_create_signing_key(other.path(), Some(&given)).expect("given");
        assert_eq!(loaded.kid(), key.kid());
        assert!(
            !other.path().join(SIGNING_KEY_FILE).exists(),
            "nothing generated when a key is given"
        );
        std::fs::write(&given, "not a key").expect("write");
        assert!(load_or_create_signing_key(other.path(), Some(&given)).is_err());
        assert!(
            load_or_create_signing_key(other.path(), Some(&other.path().join("missing.pem")))
                .is_err(),
            "a given key must exist"
        );
        std::fs::write(directory.path().join(SIGNING_KEY_FILE), "damaged").expect("write");
        assert!(
            load_or_create_signing_key(directory.path(), None).is_err(),
            "a damaged key stops the start instead of being replaced"
        );
    }

    #[test]
    fn the_public_url_defaults_to_the_listener() {
        let bound: SocketAddr = "127.0.0.1:41234".parse().expect("address");
        let defaults = resolve(&[]).expect("defaults");
        assert_eq!(defaults.public_url(bound), "http://127.0.0.1:41234");
        let wildcard: SocketAddr = "0.0.0.0:9000".parse().expect("address");
        assert_eq!(defaults.public_url(wildcard), "http://localhost:9000");
        let given = resolve(&["--public-url", "https://galen.example.org"]).expect("flags");
        assert_eq!(given.public_url(bound), "https://galen.example.org");
    }

    #[test]
    fn clinical_configuration_hospital_tables_and_webhooks_load_from_files() {
        let directory = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        // A hospital table (a made-up chart) and a clinical configuration that scores it.
        let table = write(
            "ward-chart.toml",
            "id = \"ward-chart\"\nversion = \"local-1\"\nname = \"Ward chart\"\nsource = \"test\"\n\
             [[parameter]]\ncode = \"heart_rate\"\ndecimals = 0\n\
             bands = [{ max = 100, points = 0 }, { min = 101, points = 2 }]\n\
             [[band]]\nname = \"raised\"\nrank = 1\nmonitoring = \"hourly\"\nresponse = \"review\"\nmin_total = 2\n\
             [[band]]\nname = \"normal\"\nrank = 0\nmonitoring = \"4-hourly\"\nresponse = \"routine\"\n",
        );
        let builtin = include_str!("../../galen-clinical/config/default.toml");
        let clinical = write(
            "clinical.toml",
            &builtin
                .replace(
                    "version = \"galen-default-2026.2\"",
                    "version = \"hospital-7\"",
                )
                .replace(
                    "scores = [\"news2\", \"qsofa\", \"mews\"]",
                    "scores = [\"news2\", \"qsofa\", \"mews\", \"ward-chart\"]",
                ),
        );
        let secret = write("pager.secret", "0123456789abcdef-secret\n");
        let file = config_file(
            directory.path(),
            &format!(
                "clinical_config = \"{clinical}\"\nscore_tables = [\"{table}\"]\n\
                 [[webhook]]\nname = \"pager\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"{secret}\"\nmin_priority = \"high\"\n"
            ),
        );
        let settings = resolve(&["--config", &file]).expect("loads");
        let config = &settings.clinical.config;
        assert_eq!(&*config.version, "hospital-7");
        assert!(config.tables.iter().any(|table| table.id() == "ward-chart"));
        let webhook = &settings.clinical.webhooks[0];
        assert_eq!(
            (webhook.name.as_str(), webhook.min_priority),
            ("pager", Priority::High)
        );
        assert_eq!(
            webhook.secret, "0123456789abcdef-secret",
            "read from its file, trimmed"
        );
        assert!(
            !format!("{webhook:?}").contains("secret"),
            "Debug never shows the secret"
        );

        // Mistakes are refused with a message that names them.
        let https = config_file(
            directory.path(),
            &format!(
                "[[webhook]]\nname = \"p\"\nurl = \"https://x/\"\nsecret_file = \"{secret}\"\n"
            ),
        );
        assert!(
            resolve(&["--config", &https]).is_ok(),
            "https webhooks are taken"
        );
        let ftp = config_file(
            directory.path(),
            &format!("[[webhook]]\nname = \"p\"\nurl = \"ftp://x/\"\nsecret_file = \"{secret}\"\n"),
        );
        let error = format!("{:#}", resolve(&["--config", &ftp]).expect_err("ftp"));
        assert!(error.contains("http:// or https://"), "{error}");
        let unknown = write("bad.toml", &builtin.replace("\"mews\"]", "\"pews\"]"));
        let error = format!(
            "{:#}",
            resolve(&["--clinical-config", &unknown]).expect_err("unknown table")
        );
        assert!(error.contains("pews"), "{error}");
    }
}
