//! `galen bench`: throughput and latency measured against a baseline in the same run, because
//! these machines are shared and noisy (absolute figures alone mean little).
//!
//! - `galen bench ingest`: batched HTTP ingest to durable commit through the real server on
//!   loopback, then a raw SQLite time-ordered append of the same rows (WAL, `synchronous=FULL`,
//!   one transaction per batch) as the baseline; prints both rates and their ratio.
//! - `galen bench query`: fills the store with N measurements, then times a 24 h query of one
//!   vital sign of one patient over the HTTP API and directly against the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use galen_model::{
    Clock, DeviceId, DeviceKind, DeviceStatus, Measurement, NewAssignment, NewDevice, PatientId,
    SystemClock, Timestamp, VitalSign,
};
use galen_server::{App, ServerConfig};
use galen_sim::{Scenario, SimConfig, Simulator};
use galen_store::{IngestBatch, MeasurementStore, Store};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::client::HttpClient;
use crate::demo::demo_patient;

/// Flags of `galen bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// Batched HTTP ingest to durable commit vs. a raw SQLite append of the same rows.
    Ingest(IngestArgs),
    /// 24 h query of one vital sign of one patient on a filled store.
    Query(QueryArgs),
    /// Clinical engine throughput and memory; alarm latency end to end under load.
    Clinical(crate::bench_clinical::ClinicalArgs),
    /// MQTT device ingest (QoS 1, PUBACK after durable commit) vs. Mosquitto relaying the same
    /// load; or, with --idle N, memory per idle MQTT connection.
    Mqtt(crate::bench_mqtt::MqttArgs),
    /// HL7 v2 ORU^R01 over MLLP to durable ACK vs. the store's ingest of the same values.
    Mllp(crate::bench_mllp::MllpArgs),
    /// FHIR Observation create, read by id and search on a filled store, each beside a baseline.
    Fhir(crate::bench_fhir::FhirArgs),
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Measurements to send.
    #[arg(long, default_value_t = 2_000_000)]
    measurements: usize,
    /// Measurements per HTTP request (and per baseline transaction).
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Simulated monitors (each assigned to a patient).
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Where to put the databases (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Measurements to store before querying (heart rate, 1 Hz, spread over the devices).
    #[arg(long, default_value_t = 10_000_000)]
    stored: usize,
    /// Monitors (each assigned to a patient).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Queries to time.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Where to put the database (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<()> {
    crate::init_logging(crate::config::LogFormat::Text);
    match args.what {
        BenchKind::Ingest(args) => ingest(args).await,
        BenchKind::Query(args) => query(args).await,
        BenchKind::Clinical(args) => crate::bench_clinical::clinical(args).await,
        BenchKind::Mqtt(args) => crate::bench_mqtt::mqtt(args).await,
        BenchKind::Mllp(args) => crate::bench_mllp::mllp(args).await,
        BenchKind::Fhir(args) => crate::bench_fhir::fhir(args).await,
    }
}

/// A directory for the run: the one given, or a temporary one that is removed at the end.
pub(crate) fn workspace(given: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(path) => {
            std::fs::create_dir_all(&path)?;
            Ok((path, None))
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("galen-bench-")
                .tempdir_in(".")
                .or_else(|_| tempfile::tempdir())?;
            Ok((temporary.path().to_path_buf(), Some(temporary)))
        }
    }
}

/// Median and 99th percentile of fsync after a 4 KiB append, in milliseconds.
fn fsync_latency(directory: &Path) -> Result<(f64, f64)> {
    use std::io::Write;
    let path = directory.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let mut samples = Vec::new();
    for _ in 0..100 {
        file.write_all(&[7u8; 4096])?;
        let started = Instant::now();
        file.sync_data()?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    ))
}

/// The `quantile` (0..=1) of `samples`, nearest rank; sorts them. NaN when empty.
pub(crate) fn percentile(samples: &mut [f64], quantile: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
    samples.get(index).copied().unwrap_or(f64::NAN)
}

/// Resident memory of this process, KiB (Linux; `None` elsewhere).
pub(crate) fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU seconds from a `/proc/.../stat` file (clock ticks of 1/100 s, Linux's
/// USER_HZ); `/proc/self/stat` for this process.
pub(crate) fn cpu_seconds(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// Registers `count` monitors, each assigned to its own patient; returns (device, patient) ids.
pub(crate) async fn register(
    store: &dyn Store,
    count: usize,
    since: Timestamp,
) -> Result<Vec<(DeviceId, PatientId)>> {
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let device = store
            .create_device(
                NewDevice {
                    serial: Simulator::device_serial(index),
                    manufacturer: "Galen Simulator".into(),
                    model: "SIM-MON".into(),
                    kind: DeviceKind::Monitor,
                    status: DeviceStatus::Active,
                },
                Vec::new(),
            )
            .await?;
        let patient = store
            .create_patient(demo_patient(index, count), Vec::new())
            .await?;
        store
            .create_assignment(
                NewAssignment {
                    device: device.id,
                    patient: patient.id,
                    start: since,
                    end: None,
                },
                Vec::new(),
            )
            .await?;
        ids.push((device.id, patient.id));
    }
    Ok(ids)
}

/// Runs the real server on `store` on a free loopback port; returns a client for it and what
/// stops it.
pub(crate) async fn serve_in_process(
    store: Arc<galen_store::embedded::SqliteStore>,
    export_dir: Option<PathBuf>,
) -> Result<(
    HttpClient,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let config = ServerConfig {
        export_dir,
        ..ServerConfig::default()
    };
    let app = App::new(store, Arc::new(SystemClock), config).await?;
    let listener = crate::bind("127.0.0.1:0".parse().context("address")?).await?;
    let client = HttpClient::new(&format!("http://{}", listener.local_addr()?), None)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        if let Err(error) = app.serve(listener, stopped).await {
            tracing::error!(%error, "benchmark server failed");
        }
    });
    Ok((client, stop, server))
}

async fn ingest(args: IngestArgs) -> Result<()> {
    if args.batch == 0 || args.devices == 0 || args.connections == 0 {
        bail!("--batch, --devices and --connections must be positive");
    }
    let (directory, _cleanup) = workspace(args.data_dir)?;
    let (fsync_median, fsync_p99) = fsync_latency(&directory)?;
    println!("fsync after 4 KiB append: median {fsync_median:.2} ms, p99 {fsync_p99:.2} ms");

    let now = SystemClock.now();
    // 1 Hz per device, ending now: every timestamp is in the accepted window.
    let span_seconds = (args.measurements / (args.devices * 3)).max(1) as i64 + 1;
    let start = now.add_seconds(-span_seconds);
    let mut simulator = Simulator::new(SimConfig::uniform(
        42,
        args.devices,
        Scenario::Stable,
        1.0,
        start.micros(),
    ));
    let readings = simulator.take(args.measurements);
    let bodies: Vec<Bytes> = readings
        .chunks(args.batch)
        .map(|chunk| crate::simulate::batch_body(chunk, start.micros(), 0))
        .collect();
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();

    let store = Arc::new(crate::open_store(directory.join("galen")).await?);
    register(store.as_ref(), args.devices, start.add_seconds(-60)).await?;
    let (client, stop, server) = serve_in_process(store.clone(), None).await?;
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(index) else { break };
                let sent = Instant::now();
                let (status, answer) = client
                    .send(
                        Method::POST,
                        "/api/v1/measurements?report=problems",
                        Some(body.clone()),
                    )
                    .await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                if status != StatusCode::OK {
                    bail!(
                        "batch {index} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                let summary: Value = serde_json::from_slice(&answer)?;
                accepted += summary["accepted"].as_u64().unwrap_or(0);
            }
            Ok::<_, anyhow::Error>((accepted, latencies))
        }));
    }
    let mut accepted = 0u64;
    let mut latencies = Vec::new();
    for worker in workers {
        let (count, mut worker_latencies) = worker.await??;
        accepted += count;
        latencies.append(&mut worker_latencies);
    }
    let galen_seconds = started.elapsed().as_secs_f64();
    let stats = store.stats();
    let _ = stop.send(());
    server.await?;
    if accepted != readings.len() as u64 {
        bail!(
            "only {accepted} of {} measurements were accepted",
            readings.len()
        );
    }

    let rows: Vec<(i64, i64, f64)> = readings
        .iter()
        .map(|reading| {
            let code = VitalSign::parse(reading.code)
                .map(VitalSign::storage_code)
                .unwrap_or(0);
            (
                (reading.patient_index as i64) << 16 | i64::from(code),
                reading.time_micros,
                reading.value,
            )
        })
        .collect();
    let baseline_path = directory.join("baseline.db");
    let batch = args.batch;
    let baseline_seconds =
        tokio::task::spawn_blocking(move || baseline_append(&baseline_path, &rows, batch))
            .await??;

    let galen_rate = readings.len() as f64 / galen_seconds;
    let baseline_rate = readings.len() as f64 / baseline_seconds;
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99);
    println!(
        "galen HTTP ingest: {} measurements ({:.1} MB JSON) in {galen_seconds:.2} s = {galen_rate:.0} measurements/s \
         ({} requests of {}, {} connections; request p50 {p50:.1} ms, p99 {p99:.1} ms; {} group commits, mean {:.0} per commit)",
        readings.len(),
        body_bytes as f64 / 1e6,
        bodies.len(),
        args.batch,
        args.connections,
        stats.commits,
        stats.batch_size_sum as f64 / stats.commits.max(1) as f64,
    );
    println!(
        "baseline raw SQLite time-ordered append: {baseline_seconds:.2} s = {baseline_rate:.0} rows/s"
    );
    println!("ratio galen / baseline: {:.2}", galen_rate / baseline_rate);
    Ok(())
}

/// The baseline: append `(series, ts, value)` rows in time order into a rowid table, WAL,
/// `synchronous=FULL`, one transaction (one fsync) per `batch` rows.
fn baseline_append(path: &Path, rows: &[(i64, i64, f64)], batch: usize) -> Result<f64> {
    let mut connection = rusqlite::Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(
        "CREATE TABLE samples (series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL)",
    )?;
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT INTO samples (series, ts, value) VALUES (?1, ?2, ?3)")?;
            for (series, time, value) in chunk {
                insert.execute(rusqlite::params![series, time, value])?;
            }
        }
        transaction.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn query(args: QueryArgs) -> Result<()> {
    if args.devices == 0 || args.runs == 0 {
        bail!("--devices and --runs must be positive");
    }
    let (directory, _cleanup) = workspace(args.data_dir)?;
    let per_device = (args.stored / args.devices).max(1) as i64;
    let now = SystemClock.now();
    let first = now.add_seconds(-per_device);
    let store = Arc::new(crate::open_store(directory.join("galen")).await?);
    let ids = register(store.as_ref(), args.devices, first.add_seconds(-60)).await?;

    // Fill in time order, interleaved across devices, as monitors would.
    let started = Instant::now();
    let mut batch = Vec::with_capacity(200_000);
    let mut stored = 0usize;
    for second in 0..per_device {
        for (device, _) in &ids {
            batch.push(Measurement {
                device: *device,
                vital: VitalSign::HeartRate,
                time: first.add_seconds(second),
                value: 60.0 + ((second * 7 + device.0) % 40) as f64,
                external_id: None,
            });
        }
        if batch.len() >= 200_000 || second == per_device - 1 {
            stored += batch.len();
            store
                .ingest(IngestBatch {
                    measurements: std::mem::take(&mut batch),
                    ..IngestBatch::default()
                })
                .await?;
        }
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    println!(
        "stored {stored} measurements ({} devices x {per_device} s at 1 Hz) through the store port in {fill_seconds:.1} s = {:.0}/s",
        args.devices,
        stored as f64 / fill_seconds
    );

    let (client, stop, server) = serve_in_process(store.clone(), None).await?;
    let to = first.add_seconds(per_device);
    let from = to.add_seconds(-86_400);
    let (mut direct, mut http, mut bucketed) = (Vec::new(), Vec::new(), Vec::new());
    let mut points = 0usize;
    for run in 0..args.runs {
        let (device, patient) = ids[run % ids.len()];
        let started = Instant::now();
        points = store
            .range(device, VitalSign::HeartRate, from, to)
            .await?
            .len();
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
        let path = format!(
            "/api/v1/patients/{}/vitals?code=heart_rate&from={}&to={}",
            patient.0,
            from.to_rfc3339(),
            to.to_rfc3339()
        );
        let started = Instant::now();
        let answer = client.get_json(&path).await?;
        http.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let buckets = client.get_json(&format!("{path}&bucket=5m")).await?;
        bucketed.push(started.elapsed().as_secs_f64() * 1000.0);
        let counted: u64 = buckets["buckets"]
            .as_array()
            .map(|all| all.iter().filter_map(|b| b["count"].as_u64()).sum())
            .unwrap_or(0);
        if counted != points as u64 {
            bail!("the 5-minute buckets count {counted} points where the store has {points}");
        }
        let served = answer["points"].as_array().map(Vec::len).unwrap_or(0);
        if served != points {
            bail!("the API served {served} points where the store has {points}");
        }
    }
    let _ = stop.send(());
    server.await?;
    println!(
        "24 h query of one vital sign ({points} points) with {stored} stored: store port median {:.2} ms, p95 {:.2} ms; \
         HTTP API raw points (JSON) median {:.2} ms, p95 {:.2} ms; HTTP API 5-minute buckets median {:.2} ms, p95 {:.2} ms",
        percentile(&mut direct, 0.5),
        percentile(&mut direct, 0.95),
        percentile(&mut http, 0.5),
        percentile(&mut http, 0.95),
        percentile(&mut bucketed, 0.5),
        percentile(&mut bucketed, 0.95)
    );
    Ok(())
}
