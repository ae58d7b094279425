//! Galen's runtime: the ingest pipeline, the HTTP API, the live ward view and the metrics.
//!
//! A measurement flows one way: an adapter (today the HTTP endpoint `POST /api/v1/measurements`,
//! or the in-process simulator) hands raw items to the [`Pipeline`], which resolves the device
//! from the registry cache ([`Directory`]), validates and normalises each item (galen-model),
//! appends the accepted ones and the dead letters in one durable group commit (galen-store), and
//! only then answers the sender and publishes the new values to live subscribers (SSE).
//!
//! Build the router with [`App::router`] and call it in-process in tests, or run it on an
//! already-bound listener with [`App::serve`].

pub mod access;
mod api;
mod assets;
mod audit;
mod auth;
pub mod clinical;
mod consent;
mod directory;
mod error;
mod fhir;
mod hardening;
mod https;
mod listener;
mod live;
mod metrics;
mod mllp;
mod mqtt;
mod pipeline;
mod templates;
mod tls;
mod wire;

use std::future::Future;
use std::sync::Arc;

use galen_model::Clock;
use galen_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

pub use clinical::{Clinical, ClinicalEvent, ClinicalSettings, WebhookEndpoint};
pub use directory::Directory;
pub use hardening::HardeningConfig;
pub use live::LiveMeasurement;
pub use metrics::Metrics;
pub use mllp::MllpSettings;
pub use mqtt::{MqttSettings, TOPIC_PREFIX};
pub use pipeline::{Incoming, IngestSummary, ItemResult, Pipeline, Unreadable};
pub use templates::load_templates;
pub use tls::{DeviceTls, OutboundTls, TlsError, TlsFiles};

/// Settings of the HTTP server. Built by the binary from flags, environment and config file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bearer token that API clients and dashboard users must present. `None` only in demo mode:
    /// then everything is open, and the dashboard says so.
    pub api_token: Option<String>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// A tile is marked stale when its newest reading is older than this.
    pub stale_after_seconds: u64,
    /// Scores, alarm rules and notifications.
    pub clinical: ClinicalSettings,
    /// The HL7 v2 (MLLP) listener.
    pub mllp: MllpSettings,
    /// The MQTT listener.
    pub mqtt: MqttSettings,
    /// Directory of mapping templates (`*.toml`, `*.json`) for device payloads.
    pub template_dir: Option<std::path::PathBuf>,
    /// Where FHIR bulk exports write their files (`galen serve`: `<data-dir>/exports`); `None`
    /// uses a directory of this process under the system's temporary directory.
    pub export_dir: Option<std::path::PathBuf>,
    /// Trust of outbound HTTPS (webhooks, FHIR rest-hook subscriptions).
    pub outbound: OutboundTls,
    /// Rate limit per client and trusted proxies of the HTTP surface.
    pub hardening: HardeningConfig,
    /// Session timeouts.
    pub access: access::accounts::AccessSettings,
    /// Whether the session cookie is marked `Secure` (the dashboard is reached over HTTPS).
    pub secure_cookies: bool,
    /// OAuth2 for machine clients (the token endpoint, SMART scopes); `None` issues and accepts
    /// no access token.
    pub oauth: Option<access::oauth::OAuthConfig>,
}

impl ServerConfig {
    /// The directory FHIR bulk exports write into.
    pub fn export_dir(&self) -> std::path::PathBuf {
        self.export_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("galen-exports-{}", std::process::id()))
        })
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            api_token: None,
            max_body_bytes: 16 * 1024 * 1024,
            stale_after_seconds: 60,
            clinical: ClinicalSettings::default(),
            mllp: MllpSettings::default(),
            mqtt: MqttSettings::default(),
            template_dir: None,
            export_dir: None,
            outbound: OutboundTls::default(),
            hardening: HardeningConfig::default(),
            access: access::accounts::AccessSettings::default(),
            secure_cookies: false,
            oauth: None,
        }
    }
}

/// Errors starting the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] galen_store::Error),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
    /// The mapping templates did not load.
    #[error("{0}")]
    Templates(String),
}

/// Why a staff entry was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EntryRefused {
    /// Storing it failed; nothing was applied.
    #[error(transparent)]
    Store(galen_store::Error),
    /// The engine refused it (stored, not applied).
    #[error(transparent)]
    Engine(galen_clinical::EntryError),
    /// The engine is shutting down.
    #[error("the clinical engine is not running")]
    Stopped,
}

pub(crate) struct AppInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) directory: Directory,
    pub(crate) pipeline: Pipeline,
    pub(crate) live: broadcast::Sender<Arc<Vec<LiveMeasurement>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) clinical: Clinical,
    pub(crate) config: ServerConfig,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Held (shared) by every open device connection; taken exclusively at shutdown to wait for
    /// them before the store closes.
    pub(crate) adapters: Arc<tokio::sync::RwLock<()>>,
    /// Open MQTT sessions by client id.
    pub(crate) mqtt_sessions: mqtt::Sessions,
    /// The mapping templates in force (replaced whole on reload).
    pub(crate) templates: std::sync::RwLock<Arc<galen_mapping::TemplateSet>>,
    /// When this process started (the CapabilityStatement's date).
    pub(crate) started: galen_model::Timestamp,
    /// FHIR bulk export jobs.
    pub(crate) exports: fhir::Exports,
    /// FHIR subscriptions in force.
    pub(crate) subscriptions: fhir::Subscriptions,
    /// The client of outbound deliveries (`http://` and `https://`), one connection pool.
    pub(crate) outbound: tls::OutboundClient,
    /// The HTTP rate limiter and the proxies believed.
    pub(crate) hardening: hardening::Hardening,
    /// Accounts, API tokens and sessions.
    pub(crate) accounts: access::accounts::Accounts,
    /// OAuth2 machine clients and the keys of their access tokens.
    pub(crate) oauth: access::oauth::OAuth,
    /// The audit trail's writer.
    pub(crate) audit: audit::AuditLog,
    /// Patients' consents, and the decisions of the paths that disclose data outside care.
    pub(crate) consents: consent::Consents,
}

/// The assembled runtime; cheap to clone.
#[derive(Clone)]
pub struct App(pub(crate) Arc<AppInner>);

impl std::fmt::Debug for App {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("App")
            .field("config", &"..")
            .finish_non_exhaustive()
    }
}

impl App {
    /// Loads the registry cache from `store` and wires the pipeline.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> Result<App, Error> {
        let directory = Directory::load(store.as_ref()).await?;
        let accounts = access::accounts::Accounts::load(store.as_ref(), config.access).await?;
        let consents = consent::Consents::load(store.as_ref()).await?;
        let oauth = access::oauth::OAuth::load(store.as_ref(), config.oauth.clone()).await?;
        let store_for_audit = store.clone();
        let (live, _) = broadcast::channel(1024);
        let metrics = Arc::new(Metrics::default());
        let now = clock.now();
        let assigned: Vec<_> = {
            let snapshot = directory.read();
            snapshot
                .patients()
                .into_iter()
                .flat_map(|patient| {
                    snapshot
                        .assignments_of(patient.id, now, now.add_micros(1))
                        .into_iter()
                        .map(|assignment| {
                            (
                                patient.id,
                                assignment.details.device,
                                assignment.details.start,
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let outbound = config.outbound.client();
        let clinical = Clinical::start(
            store.clone(),
            clock.clone(),
            config.clinical.clone(),
            assigned,
            outbound.clone(),
        )
        .await?;
        let pipeline = Pipeline::new(
            store.clone(),
            directory.clone(),
            live.clone(),
            metrics.clone(),
            clock.clone(),
            clinical.clone(),
        );
        let templates = match &config.template_dir {
            Some(directory) => templates::load_templates(directory).map_err(Error::Templates)?,
            None => galen_mapping::TemplateSet::default(),
        };
        let (shutdown, _) = watch::channel(false);
        let app = App(Arc::new(AppInner {
            store,
            directory,
            pipeline,
            live,
            metrics,
            started: clock.now(),
            exports: fhir::Exports::default(),
            subscriptions: fhir::Subscriptions::default(),
            outbound,
            hardening: hardening::Hardening::new(&config.hardening),
            accounts,
            oauth,
            audit: audit::AuditLog::start(store_for_audit),
            consents,
            clock,
            clinical,
            config,
            shutdown,
            adapters: Arc::new(tokio::sync::RwLock::new(())),
            mqtt_sessions: mqtt::Sessions::default(),
            templates: std::sync::RwLock::new(Arc::new(templates)),
        }));
        fhir::start_subscriptions(&app).await?;
        Ok(app)
    }

    /// Reloads the accounts, API tokens and OAuth clients from the store (after `galen users
    /// add`); returns the number of accounts.
    pub async fn reload_accounts(&self) -> Result<usize, galen_store::Error> {
        self.0.accounts.reload(self.0.store.as_ref()).await?;
        self.0.oauth.reload(self.0.store.as_ref()).await?;
        Ok(self.0.accounts.users().len())
    }

    /// The ingest pipeline, for in-process adapters such as the demo simulator.
    pub fn pipeline(&self) -> &Pipeline {
        &self.0.pipeline
    }

    /// The registry cache.
    pub fn directory(&self) -> &Directory {
        &self.0.directory
    }

    /// Records a staff entry (observation, setting or alarm action) durably, with `audit` (the
    /// request's audit records) in the same transaction, then applies it.
    /// Returns the stored entry's id, or why it was refused (a refused entry stays stored: it
    /// documents the attempt, and a replay refuses it the same way).
    pub async fn record_entry(
        &self,
        patient: galen_model::PatientId,
        by: &str,
        kind: galen_clinical::EntryKind,
        reason: Option<String>,
        audit: Vec<galen_store::AuditRecord>,
    ) -> Result<i64, EntryRefused> {
        let entry = clinical::entries::StoredEntry { kind, reason };
        let (code, body) = entry.encode();
        let now = self.0.clock.now();
        let stored = self
            .0
            .store
            .add_entry(
                galen_store::ClinicalEntry {
                    id: 0,
                    patient,
                    time: now,
                    kind: code.to_owned(),
                    author: by.to_owned(),
                    body,
                },
                audit,
            )
            .await
            .map_err(EntryRefused::Store)?;
        self.0
            .clinical
            .apply(entry.into_engine(stored.id, patient, now, by.to_owned()))
            .await
            .map_err(|_| EntryRefused::Stopped)?
            .map_err(EntryRefused::Engine)?;
        // The transitions the entry caused (an acknowledgement, a resolution) are stored before
        // the answer, so whoever reads the alarm log next sees them: the persister gathers its
        // writes for a moment, which would otherwise show a nurse her action missing.
        self.0
            .clinical
            .sync()
            .await
            .map_err(|_| EntryRefused::Stopped)?;
        Ok(stored.id)
    }

    /// A guard that keeps the store open while a device connection works; `None` once shutdown
    /// has begun waiting for connections.
    pub(crate) fn adapter_guard(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        self.0.adapters.clone().try_read_owned().ok()
    }

    /// Puts `templates` in force for every payload read from now on.
    pub fn set_templates(&self, templates: galen_mapping::TemplateSet) {
        tracing::info!(templates = templates.len(), "mapping templates in force");
        *self
            .0
            .templates
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(templates);
    }

    /// The runtime's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The clinical runtime (scores, alarms).
    pub fn clinical(&self) -> &Clinical {
        &self.0.clinical
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// The whole HTTP surface: API, dashboard, health and metrics, behind the hardening
    /// middleware (rate limit, cross-site check, security headers). FHIR batch entries are
    /// replayed through `api::router`, inside it.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone()).layer(axum::middleware::from_fn_with_state(
            self.clone(),
            hardening::harden,
        ))
    }

    /// Serves on `listener` until `shutdown` completes; then ends live streams, stops accepting,
    /// finishes in-flight requests, stores every score and alarm transition evaluated so far and
    /// closes the store (flushing everything buffered).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        self.serve_http(listener, None, shutdown).await
    }

    /// [`App::serve`] over TLS (HTTPS): each connection completes the handshake with `tls`
    /// first (no client certificates are asked for).
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: DeviceTls,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        self.serve_http(listener, Some(tls), shutdown).await
    }

    async fn serve_http(
        self,
        listener: TcpListener,
        tls: Option<DeviceTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let signal = self.0.shutdown.clone();
        let graceful = async move {
            shutdown.await;
            let _ = signal.send(true);
        };
        https::serve(&self, listener, tls, graceful).await?;
        // Device connections finish the message in hand; their acknowledgements depend on it.
        let _connections_closed = self.0.adapters.write().await;
        // Everything evaluated so far is stored before the store closes.
        if self.0.clinical.sync().await.is_err() {
            tracing::warn!("clinical engine already stopped at shutdown");
        }
        self.0.store.close().await?;
        Ok(())
    }
}
