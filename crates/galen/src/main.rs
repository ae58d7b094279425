//! The `galen` binary: command line, configuration, wiring and shutdown.
//!
//! Only this crate reads the environment, config files and the wall clock's time zone; the
//! libraries get plain config structs.

mod audit_cli;
mod bench;
mod bench_clinical;
mod bench_fhir;
mod bench_mllp;
mod bench_mqtt;
mod bridge;
mod certs;
mod check_cli;
mod client;
mod config;
mod demo;
mod keys_cli;
mod mapping_cli;
mod replay;
mod simulate;
mod simulate_mqtt;
mod users_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use galen_model::SystemClock;
use galen_server::{App, DeviceTls, ServerConfig, TlsFiles};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;

/// mimalloc: the ingest path allocates and frees many small strings per request; glibc's
/// allocator spent a fifth of the ingest benchmark consolidating free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Galen: connect medical devices, watch every patient live, keep every measurement.
#[derive(Debug, Parser)]
#[command(name = "galen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Galen with 24 simulated patients on two wards, open access, and print the dashboard URL.
    Demo(demo::DemoArgs),
    /// Run Galen for real: configured by a TOML file, GALEN_* environment variables and flags.
    Serve(Box<config::ServeArgs>),
    /// Drive a running Galen server over HTTP with simulated patients.
    Simulate(simulate::SimulateArgs),
    /// Measure ingest throughput and query latency against a baseline in the same run.
    Bench(bench::BenchArgs),
    /// Run stored measurements and staff entries through the clinical engine again and compare
    /// its alarms with the stored ones (under the same or a proposed configuration).
    Replay(replay::ReplayArgs),
    /// Check a mapping template against a sample payload.
    Mapping(mapping_cli::MappingArgs),
    /// Check the audit trail's hash chain (`galen audit verify`).
    Audit(audit_cli::AuditArgs),
    /// Check a data directory's integrity: database structure and every stored measurement's
    /// checksum.
    Check(check_cli::CheckArgs),
    /// Encryption at rest: make a master key, re-seal a data directory under a new one.
    Keys(keys_cli::KeysArgs),
    /// Create a development CA, a server certificate and device certificates for TLS.
    Certs(certs::CertsArgs),
    /// Create and list accounts (first-run setup: `galen users add --role administrator`).
    Users(users_cli::UsersArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve(*args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Mapping(args) => mapping_cli::run(args),
            Command::Audit(args) => audit_cli::run(args),
            Command::Check(args) => check_cli::run(args),
            Command::Keys(args) => keys_cli::run(args),
            Command::Certs(args) => certs::run(args),
            Command::Users(args) => users_cli::run(args).await,
        }
    })
}

/// Sets up structured logging on stderr. Logs carry internal ids only, never names or MRNs.
pub(crate) fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GALEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder.try_init(),
    };
}

/// Binds the HTTP listener, naming the flag to change when the port is taken.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    bind_flag(addr, "--http-addr", "GALEN_HTTP_ADDR").await
}

/// Binds a listener, naming `flag` (and its environment variable) when the port is taken.
pub(crate) async fn bind_flag(addr: SocketAddr, flag: &str, env: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "address {addr} is already in use; choose another with {flag} (or {env}), or turn the listener off with {flag} off"
            )
        } else {
            anyhow::anyhow!("cannot listen on {addr} ({flag}): {error}")
        }
    })
}

/// The device listeners besides HTTP, bound and ready to serve.
#[derive(Debug, Default)]
pub(crate) struct DeviceListeners {
    /// HL7 v2 over MLLP.
    pub(crate) mllp: Option<TcpListener>,
    /// MQTT.
    pub(crate) mqtt: Option<TcpListener>,
    /// MQTT over TLS.
    pub(crate) mqtt_tls: Option<(TcpListener, DeviceTls)>,
    /// HL7 v2 over MLLP/TLS.
    pub(crate) mllp_tls: Option<(TcpListener, DeviceTls)>,
}

impl DeviceListeners {
    /// Binds the listeners asked for (`None` = off).
    pub(crate) async fn bind(
        mllp: Option<SocketAddr>,
        mqtt: Option<SocketAddr>,
    ) -> Result<DeviceListeners> {
        let mllp = match mllp {
            Some(addr) => Some(bind_flag(addr, "--mllp-addr", "GALEN_MLLP_ADDR").await?),
            None => None,
        };
        let mqtt = match mqtt {
            Some(addr) => Some(bind_flag(addr, "--mqtt-addr", "GALEN_MQTT_ADDR").await?),
            None => None,
        };
        Ok(DeviceListeners {
            mllp,
            mqtt,
            ..DeviceListeners::default()
        })
    }

    /// Loads the TLS material and binds the TLS listeners asked for (`None` = off). The device
    /// CA, if any, admits client certificates on MQTT (optional there: devices may use their
    /// password instead) and on MLLP, where they are required unless `mllp_anonymous`.
    pub(crate) async fn bind_tls(
        mut self,
        files: Option<&TlsFiles>,
        mqtt: Option<SocketAddr>,
        mllp: Option<SocketAddr>,
        mllp_anonymous: bool,
    ) -> Result<DeviceListeners> {
        let Some(files) = files else {
            if mqtt.is_some() || mllp.is_some() {
                anyhow::bail!("the TLS listeners need --tls-cert and --tls-key");
            }
            return Ok(self);
        };
        if let Some(addr) = mqtt {
            let tls = DeviceTls::from_files(files).context("setting up MQTT over TLS")?;
            let listener = bind_flag(addr, "--mqtt-tls-addr", "GALEN_MQTT_TLS_ADDR").await?;
            self.mqtt_tls = Some((listener, tls));
        }
        if let Some(addr) = mllp {
            // HL7 v2 has no credentials: the client certificate is the device's only proof of
            // identity, so without permission for anonymous senders it is required.
            let tls = if mllp_anonymous {
                DeviceTls::from_files(files)
            } else {
                DeviceTls::requiring_client_certificates(files)
            }
            .context("setting up MLLP over TLS")?;
            let listener = bind_flag(addr, "--mllp-tls-addr", "GALEN_MLLP_TLS_ADDR").await?;
            self.mllp_tls = Some((listener, tls));
        }
        Ok(self)
    }

    /// Starts serving each listener on `app`, printing where (before the dashboard line, which
    /// tells scripts that everything is up).
    fn start(self, app: &App) -> Result<()> {
        if let Some(listener) = self.mllp {
            let local = listener.local_addr().context("reading the MLLP address")?;
            println!("galen: HL7 v2 over MLLP at mllp://{local}");
            tokio::spawn(app.clone().serve_mllp(listener));
        }
        if let Some(listener) = self.mqtt {
            let local = listener.local_addr().context("reading the MQTT address")?;
            println!("galen: MQTT at mqtt://{local}");
            tokio::spawn(app.clone().serve_mqtt(listener));
        }
        if let Some((listener, tls)) = self.mqtt_tls {
            let local = listener
                .local_addr()
                .context("reading the MQTT-over-TLS address")?;
            println!("galen: MQTT over TLS at mqtts://{local}");
            tokio::spawn(app.clone().serve_mqtt_tls(listener, tls));
        }
        if let Some((listener, tls)) = self.mllp_tls {
            let local = listener
                .local_addr()
                .context("reading the MLLP/TLS address")?;
            println!("galen: HL7 v2 over MLLP/TLS at mllps://{local}");
            tokio::spawn(app.clone().serve_mllp_tls(listener, tls));
        }
        #[cfg(unix)]
        {
            // SIGHUP reloads the mapping templates (a broken file keeps the old ones in force)
            // and the accounts (`galen users add` on a running server).
            let app = app.clone();
            if let Ok(mut hangups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        match app.reload_accounts().await {
                            Ok(count) => tracing::info!(count, "accounts reloaded"),
                            Err(error) => tracing::error!(%error, "accounts could not be reloaded"),
                        }
                        let app = app.clone();
                        // A failed reload is logged by `reload_templates` and changes nothing.
                        if let Ok(Ok(count)) =
                            tokio::task::spawn_blocking(move || app.reload_templates()).await
                        {
                            tracing::info!(count, "mapping templates reloaded");
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// A listener address flag: `HOST:PORT`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    /// Not listening.
    Off,
    /// Listening here.
    At(SocketAddr),
}

impl ListenAddr {
    pub(crate) fn addr(self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Off => None,
            ListenAddr::At(addr) => Some(addr),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<ListenAddr, String> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(ListenAddr::Off);
        }
        text.parse()
            .map(ListenAddr::At)
            .map_err(|_| format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:2575) or off"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Off => formatter.write_str("off"),
            ListenAddr::At(addr) => write!(formatter, "{addr}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<ListenAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Opens the embedded store in `data_dir` without encryption at rest (demo, benchmarks).
pub(crate) async fn open_store(data_dir: PathBuf) -> Result<SqliteStore> {
    open_store_with(data_dir, None).await
}

/// Opens the embedded store in `data_dir`, sealing identifying data under `key` when given.
pub(crate) async fn open_store_with(
    data_dir: PathBuf,
    key: Option<galen_store::crypto::MasterKey>,
) -> Result<SqliteStore> {
    let shown = data_dir.display().to_string();
    let options = SqliteOptions {
        data_key: key,
        ..SqliteOptions::default()
    };
    tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir, options))
        .await
        .context("opening the store")?
        .with_context(|| format!("opening the data directory {shown}"))
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: draining requests and flushing the store");
}

/// Starts the device listeners and the HTTP server on `listener` and prints where they are.
/// Returns when it stops.
/// With `tls`, the HTTP listener serves HTTPS.
pub(crate) async fn run_server(
    app: App,
    listener: TcpListener,
    tls: Option<DeviceTls>,
    devices: DeviceListeners,
    what: &str,
) -> Result<()> {
    devices.start(&app)?;
    let local = listener.local_addr().context("reading the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("galen: {what} at {scheme}://{local}/");
    tracing::info!(address = %local, scheme, "listening");
    match tls {
        None => app.serve(listener, shutdown_signal()).await,
        Some(tls) => app.serve_tls(listener, tls, shutdown_signal()).await,
    }
    .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}

async fn serve(args: config::ServeArgs) -> Result<()> {
    let settings = config::Settings::resolve(args)?;
    init_logging(settings.log_format);
    settings.check_transport()?;
    settings.check_encryption()?;
    settings.check_device_identity()?;
    // With a server certificate the HTTP listener serves HTTPS (no client certificates there).
    let http_tls = settings
        .tls
        .as_ref()
        .map(|files| {
            DeviceTls::from_files(&TlsFiles {
                device_ca: None,
                ..files.clone()
            })
        })
        .transpose()
        .context("setting up HTTPS")?;
    let api_token = match settings.api_token.clone() {
        Some(token) => token,
        None => config::load_or_create_token(&settings.data_dir)?,
    };
    let listener = bind(settings.http_addr).await?;
    let devices = DeviceListeners::bind(settings.mllp_addr.addr(), settings.mqtt_addr.addr())
        .await?
        .bind_tls(
            settings.tls.as_ref(),
            settings.mqtt_tls_addr.addr(),
            settings.mllp_tls_addr.addr(),
            settings.allow_anonymous_mllp,
        )
        .await?;
    let signing_key = config::load_or_create_signing_key(
        &settings.data_dir,
        settings.oauth_signing_key.as_deref(),
    )?;
    let local = listener.local_addr().context("reading the bound address")?;
    let oauth =
        galen_server::access::oauth::OAuthConfig::new(&settings.public_url(local), signing_key)
            .map_err(anyhow::Error::msg)?;
    tracing::info!(public_url = %oauth.public_url, token_endpoint = %oauth.token_endpoint(), "OAuth2 token endpoint");
    let store =
        Arc::new(open_store_with(settings.data_dir.clone(), settings.data_key.clone()).await?);
    audit_cli::log_head_periodically(store.clone());
    let server_config = ServerConfig {
        api_token: Some(api_token),
        max_body_bytes: settings.max_body_bytes,
        stale_after_seconds: settings.stale_after_seconds,
        clinical: settings.clinical.clone(),
        template_dir: settings.templates.clone(),
        export_dir: Some(settings.data_dir.join("exports")),
        outbound: galen_server::OutboundTls::with_ca_files(settings.outbound_ca.as_slice())?,
        hardening: settings.hardening.clone(),
        // With a certificate the HTTP listener serves HTTPS only: the session cookie is Secure.
        secure_cookies: settings.tls.is_some(),
        oauth: Some(oauth),
        access: galen_server::access::accounts::AccessSettings {
            require_admin_totp: settings.require_admin_totp,
            ..galen_server::access::accounts::AccessSettings::default()
        },
        mllp: galen_server::MllpSettings {
            anonymous: settings.allow_anonymous_mllp,
            ..galen_server::MllpSettings::default()
        },
        ..ServerConfig::default()
    };
    let app = App::new(store, Arc::new(SystemClock), server_config).await?;
    if let Some(broker) = settings.mqtt_broker.clone() {
        bridge::start(&app, broker, &settings.data_dir)?;
    }
    run_server(app, listener, http_tls, devices, "dashboard").await
}
