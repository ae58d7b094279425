//! `galen simulate`: simulated monitors posting to a running Galen over its public HTTP API, the
//! way a device gateway would (batches, ids, retries with back-off).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use galen_model::{Clock, SystemClock, Timestamp};
use galen_sim::{Reading, Scenario, SimConfig, Simulator};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::HttpClient;
use crate::demo::demo_patient;

/// Flags of `galen simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Base URL of the Galen server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// API token of the server (not needed for `galen demo`).
    #[arg(long, env = "GALEN_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Number of simulated patients (each with one monitor).
    #[arg(long, default_value_t = 24)]
    patients: usize,
    /// Vital-sign sets per patient per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Storyline of every patient: stable, sepsis, hypoxia, artefact or dropout.
    #[arg(long, default_value = "stable", value_parser = parse_scenario)]
    scenario: Scenario,
    /// Seed; the same seed gives the same values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<u64>,
    /// Serial prefix offset: patient i uses the monitor SIM-MON-(i + offset), so several
    /// simulators can drive one server.
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

fn parse_scenario(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text).ok_or_else(|| {
        format!("unknown scenario {text:?}; use stable, sepsis, hypoxia, artefact or dropout")
    })
}

/// Registers the monitors, patients and assignments the simulation needs, tolerating ones that
/// exist already.
async fn register(client: &HttpClient, patients: usize, offset: usize) -> Result<()> {
    let devices = client.get_json("/api/v1/devices").await?;
    let known_patients = client.get_json("/api/v1/patients").await?;
    let find = |list: &Value, key: &dyn Fn(&Value) -> bool| -> Option<i64> {
        list["items"].as_array()?.iter().find(|item| key(item))?["id"].as_i64()
    };
    for index in offset..offset + patients {
        let serial = Simulator::device_serial(index);
        let device = match find(&devices, &|item| item["serial"] == serial.as_str()) {
            Some(id) => id,
            None => {
                let body = json!({ "serial": serial, "manufacturer": "Galen Simulator", "model": "SIM-MON", "kind": "monitor" });
                let (status, answer) = client.post_json("/api/v1/devices", &body).await?;
                if status != StatusCode::CREATED {
                    bail!("registering device {serial} answered {status}: {answer}");
                }
                answer["id"].as_i64().context("device id")?
            }
        };
        let patient = demo_patient(index, offset + patients);
        let mrn = patient.identifier.value.clone();
        let patient_id = match find(&known_patients, &|item| {
            item["identifier"]["value"] == mrn.as_str()
        }) {
            Some(id) => id,
            None => {
                let date = patient.birth_date;
                let body = json!({
                    "identifier": { "system": patient.identifier.system, "value": mrn },
                    "name": { "family": patient.name.family, "given": patient.name.given },
                    "birth_date": format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()),
                    "sex": patient.sex.code(),
                    "ward": patient.ward,
                    "bed": patient.bed,
                });
                let (status, answer) = client.post_json("/api/v1/patients", &body).await?;
                if status != StatusCode::CREATED {
                    bail!("registering a patient answered {status}: {answer}");
                }
                answer["id"].as_i64().context("patient id")?
            }
        };
        let start = SystemClock.now().add_seconds(-3600).to_rfc3339();
        let body = json!({ "device": device, "patient": patient_id, "start": start });
        let (status, answer) = client.post_json("/api/v1/assignments", &body).await?;
        if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
            bail!("assigning device {serial} answered {status}: {answer}");
        }
    }
    Ok(())
}

/// The JSON body of a batch of readings; ids carry the run's start so reruns never collide.
pub(crate) fn batch_body(readings: &[Reading], run: i64, offset: usize) -> Bytes {
    let items: Vec<Value> = readings
        .iter()
        .map(|reading| {
            json!({
                "device": Simulator::device_serial(reading.patient_index + offset),
                "code": reading.code,
                "value": reading.value,
                "unit": reading.unit,
                "time": Timestamp::from_micros(reading.time_micros).to_rfc3339(),
                "id": format!("{run}-{}-{}", offset, reading.id),
            })
        })
        .collect();
    Bytes::from(Value::Array(items).to_string())
}

pub(crate) async fn run(args: SimulateArgs) -> Result<()> {
    crate::init_logging(crate::config::LogFormat::Text);
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of vital-sign sets per second");
    }
    let client = HttpClient::new(&args.target, args.token.clone())?;
    register(&client, args.patients, args.offset)
        .await
        .context("registering simulated devices and patients")?;
    let now = SystemClock.now();
    let mut simulator = Simulator::new(SimConfig::uniform(
        args.seed,
        args.patients,
        args.scenario,
        args.rate,
        now.micros(),
    ));
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|seconds| started + Duration::from_secs(seconds));
    let (mut sent, mut accepted, mut duplicates, mut rejected) = (0usize, 0u64, 0u64, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut report = Instant::now();
    println!(
        "galen simulate: {} patients, scenario {}, {} sets/s each -> {}",
        args.patients, args.scenario, args.rate, args.target
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {},
            _ = tokio::signal::ctrl_c() => break,
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let readings = simulator.step(SystemClock.now().micros());
        if readings.is_empty() {
            continue;
        }
        let body = batch_body(&readings, now.micros() / 1_000_000, args.offset);
        let mut backoff = Duration::from_millis(100);
        let answer = loop {
            match client
                .send(Method::POST, "/api/v1/measurements", Some(body.clone()))
                .await
            {
                Ok((status, answer)) if !status.is_server_error() => break (status, answer),
                Ok((status, _)) => tracing::warn!(%status, "server error; retrying the same batch"),
                Err(error) => tracing::warn!(%error, "request failed; retrying the same batch"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        let (status, answer) = answer;
        let summary: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if status != StatusCode::OK && status != StatusCode::UNPROCESSABLE_ENTITY {
            bail!(
                "the server refused the batch with {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        sent += readings.len();
        accepted += summary["accepted"].as_u64().unwrap_or(0);
        duplicates += summary["duplicates"].as_u64().unwrap_or(0);
        rejected += summary["rejected"].as_u64().unwrap_or(0);
        if report.elapsed() >= Duration::from_secs(10) {
            println!(
                "sent {sent}: accepted {accepted}, duplicates {duplicates}, rejected {rejected}"
            );
            report = Instant::now();
        }
    }
    println!(
        "done after {:.0} s: sent {sent}, accepted {accepted}, duplicates {duplicates}, rejected {rejected}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
