//! `galen bench clinical`: the clinical engine's throughput and memory, and the end-to-end alarm
//! latency (measurement sent over HTTP to alarm event read from the SSE stream) under ingest load.
//!
//! Baselines run in the same process: a bare "newest value per patient and vital" update of the
//! same measurements (the least any evaluator must do), and the durable-acknowledgement latency
//! of the same single-measurement POSTs that carry the probes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{percentile, resident_kib};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use galen_clinical::{ClinicalConfig, Consciousness, Engine, Entry, EntryKind, Input, Oxygen};
use galen_model::{Clock, DeviceId, PatientId, SystemClock, Timestamp, VitalSign};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug, Args)]
pub(crate) struct ClinicalArgs {
    /// Patients held by the engine in the throughput and memory part.
    #[arg(long, default_value_t = 100_000)]
    patients: usize,
    /// Vital-sign sets per patient (5 measurements each) in the throughput part.
    #[arg(long, default_value_t = 20)]
    sets: usize,
    /// Background ingest rate during the latency part, measurements per second.
    #[arg(long, default_value_t = 25_000)]
    load: usize,
    /// Monitors sending the background load.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Alarm probes to time (each one raises or clears a limit alarm).
    #[arg(long, default_value_t = 2_000)]
    probes: usize,
    /// Where to put the database (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// A cheap deterministic generator (splitmix64), so the part does not measure a PRNG crate.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn around(&mut self, centre: f64, spread: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (centre + (unit - 0.5) * 2.0 * spread).round()
    }
}

const VITALS: [(VitalSign, f64, f64); 5] = [
    (VitalSign::HeartRate, 85.0, 35.0),
    (VitalSign::Spo2, 94.0, 6.0),
    (VitalSign::RespiratoryRate, 18.0, 8.0),
    (VitalSign::SystolicBp, 120.0, 35.0),
    (VitalSign::BodyTemperature, 37.5, 1.5),
];

/// Part 1: engine throughput against the bare newest-value baseline, and memory per patient.
fn engine_part(args: &ClinicalArgs) -> Result<()> {
    if args.patients == 0 || args.sets == 0 {
        bail!("--patients and --sets must be positive");
    }
    let start = Timestamp::from_micros(1_795_392_000_000_000);
    let mut mix = Mix(7);
    // (patient, vital index, value) in time order: one set per patient per second.
    let mut values: Vec<(u32, u8, f32)> = Vec::with_capacity(args.patients * args.sets * 5);
    for _ in 0..args.sets {
        for patient in 0..args.patients {
            for (index, (_, centre, spread)) in VITALS.iter().enumerate() {
                values.push((
                    patient as u32,
                    index as u8,
                    mix.around(*centre, *spread) as f32,
                ));
            }
        }
    }
    let time_of = |position: usize| {
        let set = position / (args.patients * 5);
        start.add_micros(set as i64 * 1_000_000)
    };

    // Baseline: newest value per patient and vital.
    let mut newest = vec![[(0.0_f64, 0_i64); 5]; args.patients];
    let began = Instant::now();
    for (position, (patient, vital, value)) in values.iter().enumerate() {
        let slot = &mut newest[*patient as usize][usize::from(*vital)];
        let time = time_of(position).micros();
        if time >= slot.1 {
            *slot = (f64::from(*value), time);
        }
    }
    let baseline = values.len() as f64 / began.elapsed().as_secs_f64();
    std::hint::black_box(&newest);

    // Second baseline: the newest values plus the three score tables, no alarm rules and no
    // engine state (what a score-only evaluator does).
    let config = ClinicalConfig::builtin();
    let mut inputs = vec![galen_clinical::ScoreInputs::default(); args.patients];
    let began = Instant::now();
    let mut totals = 0_u64;
    for (position, (patient, vital, value)) in values.iter().enumerate() {
        let time = time_of(position);
        let vital = VITALS[usize::from(*vital)].0;
        let Some(parameter) = galen_clinical::Parameter::from_vital(vital) else {
            continue;
        };
        let patient_inputs = &mut inputs[*patient as usize];
        patient_inputs.readings[parameter.index()] = Some(galen_clinical::Reading {
            value: galen_clinical::Value::Number(f64::from(*value)),
            time,
            source: galen_clinical::Source::Entry(0),
        });
        for table in &config.tables {
            totals += u64::from(
                table
                    .evaluate(patient_inputs, time, &config.freshness)
                    .total,
            );
        }
    }
    let scoring_only = values.len() as f64 / began.elapsed().as_secs_f64();
    std::hint::black_box(totals);
    drop(inputs);

    let rss_before = resident_kib();
    let mut engine = Engine::new(Arc::new(ClinicalConfig::builtin()));
    let mut outputs = Vec::new();
    for patient in 0..args.patients {
        for kind in [
            EntryKind::Consciousness(Consciousness::Alert),
            EntryKind::Oxygen(Oxygen::Air),
        ] {
            let entry = Entry {
                id: patient as i64,
                patient: PatientId(patient as i64 + 1),
                time: start,
                author: "bench".into(),
                reason: None,
                kind,
            };
            let _ = engine.handle(&Input::Entry(entry), &mut outputs);
        }
    }
    outputs.clear();
    let mut produced = 0_usize;
    let began = Instant::now();
    for (position, (patient, vital, value)) in values.iter().enumerate() {
        let input = Input::Measurement {
            patient: PatientId(i64::from(*patient) + 1),
            device: DeviceId(i64::from(*patient) + 1),
            vital: VITALS[usize::from(*vital)].0,
            value: f64::from(*value),
            time: time_of(position),
        };
        let _ = engine.handle(&input, &mut outputs);
        if outputs.len() > 4096 {
            produced += outputs.len();
            outputs.clear();
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    produced += outputs.len();
    let rate = values.len() as f64 / elapsed;
    let rss_after = resident_kib();
    let sizes: Vec<usize> = (0..args.patients)
        .filter_map(|patient| engine.patient_state_bytes(PatientId(patient as i64 + 1)))
        .collect();
    let average = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    println!(
        "engine: {} measurements of {} patients in {elapsed:.2} s: {rate:.0} evaluations/s on one core \
         (each rescoring NEWS2, qSOFA and MEWS and checking every rule); {produced} outputs",
        values.len(),
        args.patients
    );
    println!(
        "baseline (newest value per patient and vital only): {baseline:.0}/s; engine/baseline = {:.3}",
        rate / baseline
    );
    println!(
        "baseline (newest values and the three score tables, no rules or alarm state): {scoring_only:.0}/s; \
         engine/scoring-only = {:.3}",
        rate / scoring_only
    );
    println!("state per patient: average {average:.0} B, largest {largest} B (budget 4096 B)");
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "resident memory growth: {:.1} MiB for {} patients = {:.0} B per patient",
            (after.saturating_sub(before)) as f64 / 1024.0,
            args.patients,
            (after.saturating_sub(before)) as f64 * 1024.0 / args.patients as f64
        );
    }
    Ok(())
}

/// Reads alarm events from the SSE stream and hands `(patient, arrival)` to the probe waiters.
async fn read_alarms(
    mut body: hyper::body::Incoming,
    waiters: Arc<std::sync::Mutex<HashMap<i64, mpsc::UnboundedSender<Instant>>>>,
) {
    let mut buffer = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let arrived = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.starts_with("event: alarm") && !block.contains("\nevent: alarm") {
                continue;
            }
            let Some(json) = block.lines().find_map(|line| line.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            if event["rule"] != "limit.systolic_bp.low" {
                continue;
            }
            let Some(patient) = event["patient"].as_i64() else {
                continue;
            };
            if let Some(sender) = waiters
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .get(&patient)
            {
                let _ = sender.send(arrived);
            }
        }
    }
}

/// Part 2: alarm latency end to end under background ingest.
async fn latency_part(args: &ClinicalArgs) -> Result<()> {
    const PROBES: usize = 4;
    let (directory, _cleanup) = crate::bench::workspace(args.data_dir.clone())?;
    let store = Arc::new(crate::open_store(directory.clone()).await?);
    let now = SystemClock.now();
    let devices = args.devices.max(1) + PROBES;
    let ids = crate::bench::register(store.as_ref(), devices, now.add_seconds(-3600)).await?;
    let (client, stop, server) = crate::bench::serve_in_process(store, None).await?;
    let serials: Vec<String> = (0..devices)
        .map(galen_sim::Simulator::device_serial)
        .collect();

    let waiters: Arc<std::sync::Mutex<HashMap<i64, mpsc::UnboundedSender<Instant>>>> =
        Arc::default();
    let mut receivers = Vec::new();
    for (_, patient) in &ids[..PROBES] {
        let (sender, receiver) = mpsc::unbounded_channel();
        waiters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(patient.0, sender);
        receivers.push(receiver);
    }
    let stream = client.stream("/api/v1/stream").await?;
    tokio::spawn(read_alarms(stream, waiters));

    // Background load: batches of 500 at the requested rate, newest values of the other monitors.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let client = client.clone();
        let serials = serials[PROBES..].to_vec();
        let running = running.clone();
        let sent = sent.clone();
        let per_tick = (args.load / 20).max(1);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            let mut mix = Mix(3);
            let mut cursor = 0_usize;
            while running.load(Ordering::Relaxed) {
                ticker.tick().await;
                let time = SystemClock.now();
                let mut remaining = per_tick;
                while remaining > 0 {
                    let count = remaining.min(500);
                    remaining -= count;
                    let items: Vec<Value> = (0..count)
                        .map(|index| {
                            let serial = &serials[(cursor + index) % serials.len()];
                            let (vital, centre, _) = VITALS[(cursor + index) % 3];
                            json!({
                                "device": serial,
                                "code": vital.alias(),
                                "value": mix.around(centre, 2.0),
                                "unit": vital.canonical_unit().ucum(),
                                "time": time.add_micros(-((cursor + index) as i64 % 997)).to_rfc3339(),
                            })
                        })
                        .collect();
                    cursor += count;
                    let body = Bytes::from(Value::Array(items).to_string());
                    if let Ok((status, _)) = client
                        .send(Method::POST, "/api/v1/measurements", Some(body))
                        .await
                        && status == StatusCode::OK
                    {
                        sent.fetch_add(count as u64, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Probes: each POSTs one systolic BP (70 raises the limit alarm at once, the rule has no
    // delay; 120 ends it) and waits for the alarm event on the stream.
    let began = Instant::now();
    let load_before = sent.load(Ordering::Relaxed);
    let mut tasks = Vec::new();
    let per_probe = args.probes.div_ceil(PROBES);
    for (index, mut receiver) in receivers.into_iter().enumerate() {
        let client = client.clone();
        let serial = serials[index].clone();
        tasks.push(tokio::spawn(async move {
            let mut alarm = Vec::new();
            let mut acknowledged = Vec::new();
            for probe in 0..per_probe {
                let value = if probe % 2 == 0 { 70.0 } else { 120.0 };
                let body = json!([{ "device": serial, "code": "systolic_bp", "value": value, "unit": "mm[Hg]", "time": SystemClock.now().to_rfc3339() }]);
                let sent_at = Instant::now();
                let (status, answer) = client
                    .send(Method::POST, "/api/v1/measurements", Some(Bytes::from(body.to_string())))
                    .await?;
                let acked = sent_at.elapsed();
                if status != StatusCode::OK {
                    bail!("probe answered {status}: {}", String::from_utf8_lossy(&answer));
                }
                let arrived = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
                    .await
                    .context("no alarm event within 5 s")?
                    .context("stream ended")?;
                alarm.push(arrived.saturating_duration_since(sent_at).as_secs_f64() * 1000.0);
                acknowledged.push(acked.as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok((alarm, acknowledged))
        }));
    }
    let mut alarm = Vec::new();
    let mut acknowledged = Vec::new();
    for task in tasks {
        let (more_alarm, more_acknowledged) = task.await??;
        alarm.extend(more_alarm);
        acknowledged.extend(more_acknowledged);
    }
    let elapsed = began.elapsed().as_secs_f64();
    let load_rate = (sent.load(Ordering::Relaxed) - load_before) as f64 / elapsed;
    running.store(false, Ordering::Relaxed);
    let _ = load.await;
    let metrics = client.send(Method::GET, "/metrics", None).await?.1;
    let _ = stop.send(());
    let _ = server.await;
    println!(
        "end to end, {} probes under {load_rate:.0} measurements/s of background ingest ({} monitors):",
        alarm.len(),
        args.devices
    );
    println!(
        "  measurement POSTed -> alarm event read from SSE: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        percentile(&mut alarm, 0.5),
        percentile(&mut alarm, 0.99),
        percentile(&mut alarm, 0.999),
        percentile(&mut alarm, 1.0)
    );
    println!(
        "  baseline, same POSTs -> durable 2xx: p50 {:.1} ms, p99 {:.1} ms; alarm p99 / ack p99 = {:.2}",
        percentile(&mut acknowledged, 0.5),
        percentile(&mut acknowledged, 0.99),
        percentile(&mut alarm, 0.99) / percentile(&mut acknowledged, 0.99)
    );
    let text = String::from_utf8_lossy(&metrics);
    for line in text.lines().filter(|line| {
        line.starts_with("galen_alarm_event_latency_seconds_count")
            || line.starts_with("galen_alarm_event_latency_seconds_bucket{le=\"0.01\"}")
            || line.starts_with("galen_alarm_event_latency_seconds_bucket{le=\"0.1\"}")
    }) {
        println!("  server histogram (engine receipt -> SSE write): {line}");
    }
    Ok(())
}

pub(crate) async fn clinical(args: ClinicalArgs) -> Result<()> {
    engine_part(&args)?;
    if args.probes > 0 {
        latency_part(&args).await?;
    }
    Ok(())
}
