//! `galen replay`: runs the stored inputs of a period through the clinical engine again, under the
//! configuration in force or a proposed one, and compares the alarms with the stored ones. With
//! the same configuration it proves the stored history reproducible; with another it shows, per
//! rule and priority, how many alarms the proposal would have raised (tuning with evidence).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use galen_model::Timestamp;
use galen_server::clinical::{records, replay};
use galen_store::{AlarmQuery, AlarmRecord, ClinicalStore, MeasurementStore};
use serde_json::json;

/// Flags of `galen replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Data directory to read. Use a copy or a backup while a server runs on it.
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    key: crate::keys_cli::DataKeyArgs,
    /// Start of the period (RFC 3339).
    #[arg(long)]
    from: String,
    /// End of the period (RFC 3339, exclusive).
    #[arg(long)]
    to: String,
    /// Clinical configuration to replay under [default: the built-in one].
    #[arg(long)]
    clinical_config: Option<PathBuf>,
    /// Hospital score tables the configuration names.
    #[arg(long)]
    score_table: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn time(name: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text).with_context(|| format!("--{name} is not an RFC 3339 time"))
}

/// Raised alarms per (rule, priority of the raise).
fn raised(records: &[AlarmRecord]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for record in records
        .iter()
        .filter(|record| record.transition == "raised")
    {
        *counts
            .entry((record.rule.clone(), record.priority.clone()))
            .or_insert(0) += 1;
    }
    counts
}

pub(crate) async fn run(args: ReplayArgs) -> Result<()> {
    crate::init_logging(crate::config::LogFormat::Text);
    let from = time("from", &args.from)?;
    let to = time("to", &args.to)?;
    if from >= to {
        bail!("--from must be before --to");
    }
    let settings =
        crate::config::clinical_settings(args.clinical_config.as_deref(), &args.score_table, &[])?;
    let config = settings.config.clone();
    let store = Arc::new(crate::open_store_with(args.data_dir.clone(), args.key.load()?).await?);
    let outputs = replay(store.as_ref(), config.clone(), from, to).await?;
    let (scores, mut replayed, filtered) = records(&config, &outputs);
    let mut stored: Vec<AlarmRecord> = store
        .alarm_records(AlarmQuery {
            patient: None,
            after: 0,
            from,
            to,
            limit: usize::MAX,
        })
        .await?
        .into_iter()
        .map(|mut record| {
            record.seq = 0;
            record
        })
        .collect();
    store.close().await?;
    // Per patient, in order: the interleaving of patients depends on when timers ran.
    stored.sort_by_key(|record| record.patient);
    replayed.sort_by_key(|record| record.patient);
    let identical = stored == replayed;
    let (before, after) = (raised(&stored), raised(&replayed));
    let mut keys: Vec<&(String, String)> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    if args.json {
        let rows: Vec<_> = keys
            .iter()
            .map(|key| {
                json!({
                    "rule": key.0,
                    "priority": key.1,
                    "stored": before.get(*key).copied().unwrap_or(0),
                    "replayed": after.get(*key).copied().unwrap_or(0),
                })
            })
            .collect();
        let answer = json!({
            "from": from.to_rfc3339(),
            "to": to.to_rfc3339(),
            "config_version": &*config.version,
            "transitions": { "stored": stored.len(), "replayed": replayed.len() },
            "scores_replayed": scores.len(),
            "conditions_filtered_by_delay": filtered.len(),
            "identical": identical,
            "raised": rows,
        });
        println!("{answer:#}");
        return Ok(());
    }
    println!(
        "replayed {} to {} under configuration {}",
        from.to_rfc3339(),
        to.to_rfc3339(),
        config.version
    );
    println!(
        "alarm transitions: {} stored, {} replayed; {} score changes and {} conditions filtered by their delay in the replay",
        stored.len(),
        replayed.len(),
        scores.len(),
        filtered.len()
    );
    println!(
        "{:<32} {:<8} {:>8} {:>9}",
        "rule", "priority", "stored", "replayed"
    );
    for key in keys {
        println!(
            "{:<32} {:<8} {:>8} {:>9}",
            key.0,
            key.1,
            before.get(key).copied().unwrap_or(0),
            after.get(key).copied().unwrap_or(0)
        );
    }
    println!(
        "{}",
        if identical {
            "identical: every stored alarm transition was reproduced"
        } else {
            "different: the replay does not reproduce the stored transitions (another configuration, \
             data that arrived late, or a period that starts while alarms were open)"
        }
    );
    Ok(())
}
