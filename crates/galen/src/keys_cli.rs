//! Encryption at rest from the command line (see `galen_store::crypto`): where the master key
//! comes from (`--data-key-file` / `GALEN_DATA_KEY_FILE`, or the key itself in `GALEN_DATA_KEY`),
//! `galen keys generate` (a new master key file, mode 0600) and `galen keys rotate` (re-seals a
//! data directory under a new master key; also encrypts one written in the clear).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use galen_store::crypto::MasterKey;

/// Where the master key of encryption at rest comes from.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct DataKeyArgs {
    /// File holding the master key of encryption at rest (`<key id>:<64 hex digits>`, made by
    /// `galen keys generate`). Keep it outside the data directory and its backups. The key itself
    /// may be given in GALEN_DATA_KEY instead.
    #[arg(long, env = "GALEN_DATA_KEY_FILE")]
    pub(crate) data_key_file: Option<PathBuf>,
}

impl DataKeyArgs {
    /// The master key, if one is given.
    pub(crate) fn load(&self) -> Result<Option<MasterKey>> {
        if let Some(path) = &self.data_key_file {
            return read_key(path).map(Some);
        }
        match std::env::var("GALEN_DATA_KEY") {
            Ok(text) if !text.trim().is_empty() => {
                MasterKey::parse(&text).context("GALEN_DATA_KEY").map(Some)
            }
            _ => Ok(None),
        }
    }
}

fn read_key(path: &Path) -> Result<MasterKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the data key file {}", path.display()))?;
    MasterKey::parse(&text).with_context(|| format!("the data key file {}", path.display()))
}

/// Flags of `galen keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new random master key to a file (mode 0600). Prints only the file and the key id.
    Generate {
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// The key's id, stored with the data key it wraps (e.g. the month it was made).
        #[arg(long)]
        id: String,
    },
    /// Re-seal every encrypted value of a data directory under a new master key (stop the server
    /// first). A directory written without encryption is encrypted.
    Rotate {
        /// Data directory to re-seal.
        #[arg(long, env = "GALEN_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The current master key's file (none for a directory not yet encrypted).
        #[arg(long)]
        old_key_file: Option<PathBuf>,
        /// The new master key's file (from `galen keys generate`, with a new id).
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

pub(crate) fn run(args: KeysArgs) -> Result<()> {
    match args.command {
        KeysCommand::Generate { out, id } => generate(&out, &id),
        KeysCommand::Rotate {
            data_dir,
            old_key_file,
            new_key_file,
        } => {
            let old = old_key_file.as_deref().map(read_key).transpose()?;
            let new = read_key(&new_key_file)?;
            let rotated = galen_store::embedded::rotate(&data_dir, old.as_ref(), &new)
                .with_context(|| format!("re-sealing {}", data_dir.display()))?;
            println!(
                "re-sealed under master key '{}' (data key {}): {} patients, {} documents, {} dead letters, {} break-glass reasons; the old key no longer opens this directory",
                new.id(),
                rotated.data_key,
                rotated.patients,
                rotated.documents,
                rotated.dead_letters,
                rotated.grants
            );
            Ok(())
        }
    }
}

fn generate(out: &Path, id: &str) -> Result<()> {
    let line = MasterKey::generate(id).context("the key id")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(out) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists; a key file is never overwritten", out.display())
        }
        Err(error) => return Err(error).with_context(|| format!("creating {}", out.display())),
    };
    writeln!(file, "{line}").with_context(|| format!("writing {}", out.display()))?;
    println!("master key '{id}' written to {} (mode 0600)", out.display());
    Ok(())
}
