//! `galen bench fhir`: the FHIR API on a filled store, each figure beside a baseline in the same
//! run.
//!
//! The store is filled through its own port with `--stored` measurements: `--devices` monitors,
//! each assigned to a patient, each with heart rate, SpO2, respiratory rate and temperature once a
//! minute, in time order. Then, against the real server on loopback (in process):
//! - **create**: `--connections` clients POST one heart-rate Observation each request to
//!   `/fhir/Observation` for `--seconds`; baseline: the same values as one-item batches to
//!   `POST /api/v1/measurements` (the same pipeline and commit, Galen's own JSON);
//! - **read by id**: the same clients GET `/fhir/Observation/{id}` of random stored values;
//!   baseline: the store's own read of that instant (`MeasurementStore::range`), same concurrency;
//! - **search**: one client asks `Observation?patient=P&code=http://loinc.org|8867-4&date=ge..&date=lt..`
//!   for a random patient and hour (60 Observations, one page), `--searches` times; baseline: the
//!   store's range read of the same series and hour.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::Args;
use galen_model::{Clock, DeviceId, Measurement, PatientId, SystemClock, Timestamp, VitalSign};
use galen_sim::Simulator;
use galen_store::{IngestBatch, MeasurementStore};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::bench::{percentile, register, serve_in_process, workspace};

/// Flags of `galen bench fhir`.
#[derive(Debug, Args)]
pub(crate) struct FhirArgs {
    /// Measurements to store first (four vital signs per device per minute).
    #[arg(long, default_value_t = 10_000_000)]
    stored: usize,
    /// Monitors, each assigned to a patient.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Concurrent HTTP clients for create and read.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds each create and read part runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Searches to time.
    #[arg(long, default_value_t = 300)]
    searches: usize,
    /// Hours of the newest data the `$export` part exports (`_since`); NDJSON takes about 550
    /// bytes per Observation, so exporting 100 million would need 55 GB of disk.
    #[arg(long, default_value_t = 6)]
    export_hours: i64,
    /// Where to put the database (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const VITALS: [VitalSign; 4] = [
    VitalSign::HeartRate,
    VitalSign::Spo2,
    VitalSign::RespiratoryRate,
    VitalSign::BodyTemperature,
];
const MINUTE: i64 = 60_000_000;

/// A small deterministic generator (xorshift), so that runs read the same ids.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound.max(1) as u64) as usize
    }
}

fn value(vital: VitalSign, minute: i64, device: i64) -> f64 {
    let wobble = ((minute * 7 + device * 3) % 10) as f64;
    match vital {
        VitalSign::HeartRate => 60.0 + wobble * 3.0,
        VitalSign::Spo2 => 90.0 + wobble,
        VitalSign::RespiratoryRate => 12.0 + wobble,
        _ => 36.0 + wobble / 10.0,
    }
}

/// Runs `work` from `tasks` concurrent tasks for `seconds`; returns calls per second and the
/// per-call latencies in milliseconds. Each task gets its index and a call counter.
async fn run_for<F, Fut>(tasks: usize, seconds: u64, work: F) -> Result<(f64, Vec<f64>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let work = Arc::new(work);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let (work, stop, calls) = (work.clone(), stop.clone(), calls.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut call = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                work(task, call).await?;
                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                call += 1;
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    let rate = calls.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok((rate, latencies))
}

fn latency_line(latencies: &mut [f64]) -> String {
    format!(
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        percentile(latencies, 0.5),
        percentile(latencies, 0.95),
        percentile(latencies, 0.99)
    )
}

pub(crate) async fn fhir(args: FhirArgs) -> Result<()> {
    if args.devices == 0 || args.connections == 0 || args.searches == 0 || args.seconds == 0 {
        bail!("--devices, --connections, --searches and --seconds must be positive");
    }
    let (directory, _cleanup) = workspace(args.data_dir)?;
    let minutes = (args.stored / (args.devices * VITALS.len())).max(2) as i64;
    let now = SystemClock.now();
    let first = Timestamp::from_micros((now.micros() / MINUTE - minutes - 10) * MINUTE);
    let store = Arc::new(crate::open_store(directory.join("galen")).await?);
    let ids = register(store.as_ref(), args.devices, first.add_seconds(-60)).await?;

    let started = Instant::now();
    let mut batch = Vec::with_capacity(200_000);
    let mut stored = 0usize;
    for minute in 0..minutes {
        let time = first.add_micros(minute * MINUTE);
        for (device, _) in &ids {
            for vital in VITALS {
                batch.push(Measurement {
                    device: *device,
                    vital,
                    time,
                    value: value(vital, minute, device.0),
                    external_id: None,
                });
            }
        }
        if batch.len() >= 200_000 || minute == minutes - 1 {
            stored += batch.len();
            store
                .ingest(IngestBatch {
                    measurements: std::mem::take(&mut batch),
                    ..IngestBatch::default()
                })
                .await?;
        }
    }
    let fill = started.elapsed().as_secs_f64();
    println!(
        "galen bench fhir: stored {stored} measurements ({} devices x 4 vital signs x {minutes} minutes) in {fill:.1} s; {} clients, {} s per part",
        args.devices, args.connections, args.seconds
    );

    let (client, stop, server) =
        serve_in_process(store.clone(), Some(directory.join("exports"))).await?;
    let ids = Arc::new(ids);
    let last = first.add_micros((minutes - 1) * MINUTE);

    // Create: new heart rates after the filled range (which ends ten minutes ago), one device
    // per task, a millisecond apart.
    let create = {
        let (client, ids) = (client.clone(), ids.clone());
        run_for(args.connections, args.seconds, move |task, call| {
            let (client, ids) = (client.clone(), ids.clone());
            async move {
                let (device, patient) = ids[task % ids.len()];
                let time = last.add_micros(1_000_000 + call as i64 * 1000 + (task / ids.len()) as i64 * 10);
                let body = json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
                    "subject": { "reference": format!("Patient/{}", patient.0) },
                    "device": { "reference": format!("Device/{}", device.0) },
                    "effectiveDateTime": time.to_rfc3339(),
                    "valueQuantity": { "value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" }
                });
                let (status, answer) = client
                    .send(Method::POST, "/fhir/Observation", Some(Bytes::from(body.to_string())))
                    .await?;
                if status != StatusCode::CREATED {
                    bail!("POST /fhir/Observation answered {status}: {}", String::from_utf8_lossy(&answer));
                }
                Ok(())
            }
        })
        .await?
    };
    let baseline_create = {
        let (client, ids) = (client.clone(), ids.clone());
        run_for(args.connections, args.seconds, move |task, call| {
            let (client, ids) = (client.clone(), ids.clone());
            async move {
                let time = last.add_micros(
                    1_000_000 + call as i64 * 1000 + (task / ids.len()) as i64 * 10 + 500,
                );
                let body = json!([{
                    "device": Simulator::device_serial(task % ids.len()),
                    "code": "heart_rate",
                    "value": 72,
                    "unit": "/min",
                    "time": time.to_rfc3339(),
                }]);
                let (status, answer) = client
                    .send(
                        Method::POST,
                        "/api/v1/measurements",
                        Some(Bytes::from(body.to_string())),
                    )
                    .await?;
                if status != StatusCode::OK {
                    bail!(
                        "POST /api/v1/measurements answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                Ok(())
            }
        })
        .await?
    };

    // Read by id: random stored values.
    let read = {
        let (client, ids) = (client.clone(), ids.clone());
        run_for(args.connections, args.seconds, move |task, call| {
            let (client, ids) = (client.clone(), ids.clone());
            async move {
                let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ ((task as u64) << 32 | call));
                let (device, _) = ids[random.below(ids.len())];
                let minute = random.below(minutes as usize) as i64;
                let id = format!(
                    "{}.hr.{}",
                    device.0,
                    first.add_micros(minute * MINUTE).micros()
                );
                let (status, answer) = client
                    .send(Method::GET, &format!("/fhir/Observation/{id}"), None)
                    .await?;
                if status != StatusCode::OK {
                    bail!(
                        "GET /fhir/Observation/{id} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                Ok(())
            }
        })
        .await?
    };
    let baseline_read = {
        let (store, ids) = (store.clone(), ids.clone());
        run_for(args.connections, args.seconds, move |task, call| {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ ((task as u64) << 32 | call));
                let (device, _) = ids[random.below(ids.len())];
                let minute = random.below(minutes as usize) as i64;
                let time = first.add_micros(minute * MINUTE);
                let points = store
                    .range(device, VitalSign::HeartRate, time, time.add_micros(1))
                    .await?;
                if points.len() != 1 {
                    bail!("the store has {} points at {time:?}", points.len());
                }
                Ok(())
            }
        })
        .await?
    };

    // Search: one patient, heart rate, one hour.
    let mut random = Random(0x2545_F491_4F6C_DD1D);
    let (mut search, mut baseline_search) = (Vec::new(), Vec::new());
    let hours = (minutes / 60).max(1) as usize;
    for _ in 0..args.searches {
        let (device, patient): (DeviceId, PatientId) = ids[random.below(ids.len())];
        let from = first.add_micros(random.below(hours) as i64 * 60 * MINUTE);
        let to = from.add_micros(60 * MINUTE);
        let path = format!(
            "/fhir/Observation?patient={}&code=http://loinc.org|8867-4&date=ge{}&date=lt{}&_count=100",
            patient.0,
            from.to_rfc3339().replace('+', "%2B"),
            to.to_rfc3339().replace('+', "%2B")
        );
        let began = Instant::now();
        let (status, answer) = client.send(Method::GET, &path, None).await?;
        search.push(began.elapsed().as_secs_f64() * 1000.0);
        if status != StatusCode::OK {
            bail!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let bundle: serde_json::Value = serde_json::from_slice(&answer)?;
        let began = Instant::now();
        let points = store.range(device, VitalSign::HeartRate, from, to).await?;
        baseline_search.push(began.elapsed().as_secs_f64() * 1000.0);
        let served = bundle["entry"].as_array().map_or(0, Vec::len);
        if served != points.len() {
            bail!(
                "the search served {served} Observations where the store has {} points",
                points.len()
            );
        }
    }
    // Export: the newest --export-hours of every device through the API (asynchronous kick-off,
    // polling, then the job deleted with its files), then the same series read straight from
    // the store, as the export reads them.
    let since = now
        .add_micros(-args.export_hours.max(1) * 60 * MINUTE)
        .max(first);
    let began = Instant::now();
    let exported = export_since(&client, since).await?;
    let export_seconds = began.elapsed().as_secs_f64();
    let began = Instant::now();
    let mut read_points = 0usize;
    for (device, _) in ids.iter() {
        for vital in VitalSign::ALL {
            read_points += store.range(*device, vital, since, now).await?.len();
        }
    }
    let read_seconds = began.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await?;

    let (create_rate, mut create_latency) = create;
    let (baseline_create_rate, mut baseline_create_latency) = baseline_create;
    let (read_rate, mut read_latency) = read;
    let (baseline_read_rate, mut baseline_read_latency) = baseline_read;
    println!(
        "create: POST /fhir/Observation {create_rate:.0}/s ({}); baseline POST /api/v1/measurements, one item: {baseline_create_rate:.0}/s ({}); ratio {:.2}",
        latency_line(&mut create_latency),
        latency_line(&mut baseline_create_latency),
        create_rate / baseline_create_rate
    );
    println!(
        "read by id: GET /fhir/Observation/{{id}} {read_rate:.0}/s ({}); baseline store range read of that instant: {baseline_read_rate:.0}/s ({}); ratio {:.2}",
        latency_line(&mut read_latency),
        latency_line(&mut baseline_read_latency),
        read_rate / baseline_read_rate
    );
    println!(
        "search patient + code + one hour ({} searches, 60 Observations each, {stored} stored): {}; baseline store range read of the series: {}",
        args.searches,
        latency_line(&mut search),
        latency_line(&mut baseline_search)
    );
    println!(
        "export: $export?_since (the newest {} h) of {exported} resources (Patients, Devices, Observations) in {export_seconds:.1} s = {:.0} resources/s; baseline store range reads of the same series: {read_points} points in {read_seconds:.2} s = {:.0} points/s",
        args.export_hours,
        exported as f64 / export_seconds,
        read_points as f64 / read_seconds
    );
    Ok(())
}

/// Runs a system-level `$export` of the data since `since` to its end, then deletes the job and
/// its files; returns the number of resources written.
async fn export_since(client: &crate::client::HttpClient, since: Timestamp) -> Result<u64> {
    let path = format!(
        "/fhir/$export?_since={}",
        since.to_rfc3339().replace('+', "%2B")
    );
    let (status, _, location) = client.kick_off(&path).await?;
    if status != StatusCode::ACCEPTED {
        bail!("$export answered {status}");
    }
    let Some(location) = location else {
        bail!("$export gave no Content-Location");
    };
    let path = location
        .find("/fhir/")
        .map(|start| location[start..].to_owned())
        .unwrap_or(location);
    loop {
        let (status, body) = client.send(Method::GET, &path, None).await?;
        match status {
            StatusCode::ACCEPTED => tokio::time::sleep(Duration::from_millis(200)).await,
            StatusCode::OK => {
                let manifest: serde_json::Value = serde_json::from_slice(&body)?;
                return Ok(manifest["output"]
                    .as_array()
                    .map(|outputs| {
                        outputs
                            .iter()
                            .filter_map(|output| output["count"].as_u64())
                            .sum()
                    })
                    .unwrap_or(0));
            }
            other => bail!(
                "{path} answered {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}
