//! `galen audit verify`: checks the hash chain of a data directory's audit trail, and the
//! server's periodic log line of the chain's head.
//!
//! The verifier opens the database read-only (it changes nothing, so it can examine a copy kept as
//! evidence, and can run beside a server on the same directory), streams the chain a page at a
//! time through `galen_store::ChainVerifier` (memory stays bounded whatever its length), and
//! prints either `ok: N records, head seq S hash H` or the first broken record (`broken: record
//! S: what is wrong`) and exits non-zero.
//!
//! A chain cut after its newest records is still a valid chain; what detects that is a head noted
//! outside the machine: the server logs `audit chain head` (seq and hash, never PHI) at start and
//! whenever it changed, every [`HEAD_LOG_INTERVAL`]; ship those lines off the machine and check a
//! directory against one with `--expect-head SEQ:HASH`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use galen_store::embedded::{AuditLogReader, AuditLogState};
use galen_store::{ChainBreak, ChainVerifier, Store, hash_from_hex, hash_to_hex};

/// How often the server logs the audit chain's head (when it changed).
pub(crate) const HEAD_LOG_INTERVAL: Duration = Duration::from_secs(300);

/// Flags of `galen audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit trail's hash chain: every record links to the one before and its content
    /// gives its hash. Names the first edited, removed, inserted or moved record.
    Verify {
        /// Data directory to check (read-only; a copy or the live one).
        #[arg(long, env = "GALEN_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// A head noted earlier, as SEQ:HASH (from the server's `audit chain head` log line or
        /// an earlier verify): the record at SEQ must exist and have HASH. Detects the removal
        /// of the newest records, which the chain alone cannot.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
    },
}

pub(crate) fn run(args: AuditArgs) -> Result<()> {
    match args.command {
        AuditCommand::Verify {
            data_dir,
            expect_head,
        } => verify(data_dir, expect_head.as_deref()),
    }
}

/// Parses `SEQ:HASH`.
fn parse_head(text: &str) -> Result<(i64, [u8; 32])> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or_else(|| anyhow!("--expect-head must be SEQ:HASH, e.g. 42:{}", "0".repeat(64)))?;
    let seq: i64 = seq
        .trim()
        .parse()
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(|| anyhow!("--expect-head: {seq:?} is not a positive seq"))?;
    let hash = hash_from_hex(hash.trim())
        .ok_or_else(|| anyhow!("--expect-head: the hash must be 64 hex digits"))?;
    Ok((seq, hash))
}

fn verify(data_dir: PathBuf, expect_head: Option<&str>) -> Result<()> {
    let expected = expect_head.map(parse_head).transpose()?;
    let shown = data_dir.display().to_string();
    let reader = AuditLogReader::open(&data_dir).map_err(|error| match error {
        galen_store::Error::NotFound(_) => anyhow!("no Galen database in {shown}"),
        other => anyhow!("cannot open the database in {shown}: {other}"),
    })?;
    match reader.state().context("reading the database schema")? {
        AuditLogState::Present => {}
        AuditLogState::NotYetCreated(version) => {
            if let Some((seq, _)) = expected {
                println!(
                    "broken: record {seq}: the database (schema {version}) has no audit trail"
                );
                bail!("the audit chain is broken at record {seq}");
            }
            println!("ok: 0 records (schema {version} predates the audit trail)");
            return Ok(());
        }
        AuditLogState::Missing(version) => {
            println!(
                "broken: the audit_log table is missing from a schema-{version} database: the audit trail was removed"
            );
            bail!("the audit trail was removed");
        }
    }
    let mut verifier = ChainVerifier::new();
    if let Some((seq, hash)) = expected {
        verifier = verifier.expect_head(seq, hash);
    }
    let mut broken: Option<ChainBreak> = None;
    reader
        .for_each(|stored| match verifier.push(&stored) {
            Ok(()) => true,
            Err(chain_break) => {
                broken = Some(chain_break);
                false
            }
        })
        .map_err(|error| {
            // An unreadable row (a value that is no record) is a break too; its seq is in the
            // message.
            println!("broken: {error}");
            anyhow!("the audit chain cannot be read: {error}")
        })?;
    let result = match broken {
        Some(chain_break) => Err(chain_break),
        None => verifier.finish(),
    };
    match result {
        Ok(chain) => {
            match chain.head {
                Some((seq, hash)) => println!(
                    "ok: {} records, head seq {seq} hash {}",
                    chain.records,
                    hash_to_hex(&hash)
                ),
                None => println!("ok: 0 records, no head (the audit trail is empty)"),
            }
            Ok(())
        }
        Err(chain_break) => {
            println!("broken: {chain_break}");
            bail!("the audit chain is broken at record {}", chain_break.seq)
        }
    }
}

/// Logs the audit chain's head now and then every [`HEAD_LOG_INTERVAL`] when it changed, so that
/// the head reaches wherever logs go (ideally off the machine) and can be checked later with
/// `galen audit verify --expect-head`. Seq and hash only: no PHI.
pub(crate) fn log_head_periodically(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        // `None` until the first reading, which is always logged (an empty trail too).
        let mut last: Option<Option<(i64, [u8; 32])>> = None;
        let mut ticks = tokio::time::interval(HEAD_LOG_INTERVAL);
        loop {
            ticks.tick().await;
            match store.audit_head().await {
                Ok(head) if last != Some(head) => {
                    match head {
                        Some((seq, hash)) => {
                            tracing::info!(seq, hash = %hash_to_hex(&hash), "audit chain head");
                        }
                        None => tracing::info!("audit chain head: the audit trail is empty"),
                    }
                    last = Some(head);
                }
                Ok(_) => {}
                Err(galen_store::Error::Closed) => return,
                Err(error) => tracing::warn!(%error, "cannot read the audit chain head"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let hash = "ab".repeat(32);
        assert_eq!(
            parse_head(&format!("42:{hash}")).expect("parses"),
            (42, [0xab; 32])
        );
        for bad in [
            "42".to_owned(),
            format!("0:{hash}"),
            format!("x:{hash}"),
            "42:abc".to_owned(),
        ] {
            assert!(parse_head(&bad).is_err(), "{bad}");
        }
    }
}
