//! Configuration of `galen serve`: defaults, then the TOML file, then `GALEN_*` environment
//! variables, then flags (each later source wins).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
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
    /// Log format [default: text].
    #[arg(long, env = "GALEN_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    api_token_file: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    stale_after_seconds: Option<u64>,
    log_format: Option<LogFormat>,
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
}

pub(crate) const DEFAULT_DATA_DIR: &str = "galen-data";
const TOKEN_FILE: &str = "api-token";

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
        Ok(Settings {
            http_addr: args.http_addr.or(file.http_addr).unwrap_or(default_addr()),
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
        })
    }
}

pub(crate) fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
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
