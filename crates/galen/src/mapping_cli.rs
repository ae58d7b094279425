//! `galen mapping test`: applies a mapping template to a sample payload and shows, item by item,
//! what Galen would read and what its normaliser would make of it, so an integration engineer can
//! write a template against a captured payload before any device is connected. Fails (non-zero
//! exit) when the template does not load, the sample does not match the template's `[match]`,
//! the payload is unusable, or any item fails; a measurement the server would reject (an unknown
//! code, a data-absent sentinel) is shown but is not a failure of the template.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use galen_mapping::{Context, Mapped, Mapping, MappingError, Skip, Template, check};
use serde_json::{Value, json};

/// Flags of `galen mapping`.
#[derive(Debug, Args)]
pub(crate) struct MappingArgs {
    #[command(subcommand)]
    command: MappingCommand,
}

#[derive(Debug, Subcommand)]
enum MappingCommand {
    /// Apply a template to a sample payload and show every measurement, skip and error.
    Test {
        /// The template: a .toml or .json file.
        template: PathBuf,
        /// The sample payload: a JSON file, e.g. captured from the device.
        sample: PathBuf,
        /// The MQTT topic the payload arrives on, checked against match.topic.
        #[arg(long)]
        topic: Option<String>,
        /// The device id the transport vouches for (the topic's device level); used when the
        /// template has no [device], compared with the payload's when it has one.
        #[arg(long)]
        device: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: MappingArgs) -> Result<()> {
    match args.command {
        MappingCommand::Test {
            template,
            sample,
            topic,
            device,
            json,
        } => test(
            &template,
            &sample,
            topic.as_deref(),
            device.as_deref(),
            json,
        ),
    }
}

fn load_template(path: &Path) -> Result<Template> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the template {}", path.display()))?;
    let loaded = match path.extension().and_then(|extension| extension.to_str()) {
        Some("toml") => Template::from_toml(&text),
        Some("json") => Template::from_json(&text),
        _ => bail!(
            "template {}: name it .toml or .json so its format is known",
            path.display()
        ),
    };
    loaded.with_context(|| format!("loading the template {}", path.display()))
}

fn test(
    template_path: &Path,
    sample_path: &Path,
    topic: Option<&str>,
    device: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let template = load_template(template_path)?;
    let text = std::fs::read_to_string(sample_path)
        .with_context(|| format!("reading the sample {}", sample_path.display()))?;
    let sample: Value = serde_json::from_str(&text)
        .with_context(|| format!("the sample {} is not JSON", sample_path.display()))?;
    let header = json!({
        "name": template.name(),
        "version": template.version(),
        "file": template_path.display().to_string(),
    });

    if let Some(reason) = template.mismatch(&sample, topic) {
        if as_json {
            print_json(&json!({ "template": header, "matched": false, "reason": reason }))?;
        } else {
            println!(
                "template {} v{} does not match {}: {reason}",
                template.name(),
                template.version(),
                sample_path.display()
            );
        }
        bail!("the sample does not match the template: {reason}");
    }

    let context = Context {
        topic_device: device,
    };
    let mapping = match template.apply(&sample, &context) {
        Ok(mapping) => mapping,
        Err(error) => {
            if as_json {
                print_json(&json!({
                    "template": header,
                    "matched": true,
                    "error": error_json(&error),
                }))?;
            } else {
                println!("the whole payload is unusable: {error}");
            }
            bail!("the payload is unusable: {error}");
        }
    };

    let failed = mapping.errors().count();
    if as_json {
        print_json(&report_json(header, &mapping))?;
    } else {
        print_text(&template, template_path, sample_path, &mapping);
    }
    if failed > 0 {
        bail!(
            "{failed} of {} items failed; each is named above with its template field and payload path",
            mapping.items.len()
        );
    }
    Ok(())
}

fn print_json(value: &Value) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("writing JSON")?
    );
    Ok(())
}

/// What the server's normaliser says, as one line.
fn verdict(mapped: &Mapped) -> String {
    match check(mapped) {
        Ok(measurement) => format!(
            "server stores {} {} {}",
            measurement.vital.alias(),
            measurement.value,
            measurement.vital.canonical_unit()
        ),
        Err(rejection) => format!(
            "server rejects ({}): {}",
            rejection.reason, rejection.message
        ),
    }
}

fn print_text(template: &Template, template_path: &Path, sample_path: &Path, mapping: &Mapping) {
    println!(
        "template {} v{} ({}) matches {}",
        template.name(),
        template.version(),
        template_path.display(),
        sample_path.display()
    );
    for (index, item) in mapping.items.iter().enumerate() {
        let number = index + 1;
        match item {
            Ok(mapped) => {
                println!(
                    "item {number}: device {}, code {}, value {}, unit {}, time {}, id {}",
                    mapped.device,
                    mapped.code,
                    mapped.value,
                    mapped.unit,
                    mapped.time,
                    mapped.id.as_deref().unwrap_or("(none)")
                );
                println!("    {}", verdict(mapped));
            }
            Err(error) => println!("item {number} FAILED: {error}"),
        }
    }
    for skip in &mapping.skipped {
        println!("skipped: {skip}");
    }
    println!(
        "{} measurements, {} skipped, {} failed",
        mapping.mapped().count(),
        mapping.skipped.len(),
        mapping.errors().count()
    );
}

fn error_json(error: &MappingError) -> Value {
    json!({
        "field": error.field,
        "path": error.path,
        "problem": error.problem,
        "message": error.to_string(),
    })
}

fn skip_json(skip: &Skip) -> Value {
    json!({ "field": skip.field, "path": skip.path, "problem": skip.problem })
}

fn report_json(header: Value, mapping: &Mapping) -> Value {
    let items: Vec<Value> = mapping
        .items
        .iter()
        .map(|item| match item {
            Ok(mapped) => {
                let server = match check(mapped) {
                    Ok(measurement) => json!({
                        "accepted": true,
                        "vital": measurement.vital.alias(),
                        "value": measurement.value,
                        "unit": measurement.vital.canonical_unit().to_string(),
                    }),
                    Err(rejection) => json!({
                        "accepted": false,
                        "reason": rejection.reason.code(),
                        "message": rejection.message,
                    }),
                };
                json!({
                    "ok": true,
                    "device": mapped.device,
                    "code": mapped.code,
                    // NaN (data absent) has no JSON number: it is written as null.
                    "value": mapped.value,
                    "unit": mapped.unit,
                    "time": mapped.time.to_rfc3339(),
                    "id": mapped.id,
                    "server": server,
                })
            }
            Err(error) => {
                let mut value = error_json(error);
                value["ok"] = json!(false);
                value
            }
        })
        .collect();
    json!({
        "template": header,
        "matched": true,
        "items": items,
        "skipped": mapping.skipped.iter().map(skip_json).collect::<Vec<_>>(),
        "counts": {
            "mapped": mapping.mapped().count(),
            "skipped": mapping.skipped.len(),
            "failed": mapping.errors().count(),
        },
    })
}
