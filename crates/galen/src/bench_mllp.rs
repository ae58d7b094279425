//! `galen bench mllp`: HL7 v2 over MLLP into the real server, against a baseline in the same run.
//!
//! An in-process `App` over a fresh embedded store serves MLLP on a loopback port. `--devices`
//! monitors are registered and assigned; `--connections` clients each send IHE PCD-01 ORU^R01
//! reports (four OBX: heart rate, SpO2, respiratory rate, systolic pressure, all at one OBX-14
//! time, a millisecond apart from the connection's previous report) for `--seconds`. Each
//! connection keeps at most `--window` messages unacknowledged (1, the default, is how MLLP
//! senders behave: send, wait for the ACK, send the next; more pipelines them, which the listener
//! answers in order). ACK latency is measured from the write of a message to the arrival of its
//! ACK.
//!
//! The baseline is the store alone: the same values as one `MeasurementStore::ingest` per message
//! (with a receipt of an ACK's size, as the listener stores), from as many concurrent tasks as
//! there are connections, into a second fresh store, for the same time. It is what the MLLP layer
//! (framing, parsing, PCD-01 reading, the pipeline's normalisation, the ACK and
//! the clinical engine that every committed value feeds) costs on top of the durable group commit.
//!
//! `--breakdown` splits that cost further: the same values through `Pipeline::ingest_with_receipt`
//! (normalisation, directory, clinical engine, no MLLP) on a third store, and single-threaded
//! timings of one report's parse + PCD-01 read + ACK build.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{cpu_seconds, percentile};
use anyhow::{Context, Result, bail};
use clap::Args;
use galen_hl7v2::mllp::{Decoder, Frame, encode_frame};
use galen_model::{Clock, DeviceId, Measurement, SystemClock, Timestamp, VitalSign};
use galen_server::{App, ServerConfig};
use galen_sim::Simulator;
use galen_store::embedded::SqliteStore;
use galen_store::{IngestBatch, MeasurementStore, Receipt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags of `galen bench mllp`.
#[derive(Debug, Args)]
pub(crate) struct MllpArgs {
    /// Concurrent MLLP connections (and baseline tasks).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Registered monitors; connection i sends as monitor i modulo this.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Seconds each part runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unacknowledged messages allowed per connection (1 = send, wait for the ACK, send).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Skip the store-only baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also split the cost: the same values through the ingest pipeline without MLLP (own store
    /// and App, clinical engine included), and single-threaded timings of the HL7 work.
    #[arg(long)]
    breakdown: bool,
    /// Where to put the databases (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The values of one report: heart rate, SpO2, respiratory rate and systolic pressure.
const OBX_PER_MESSAGE: usize = 4;

/// What one report carries, derived cheaply from the connection and sequence number so that the
/// load generator costs little next to the server.
fn report_values(connection: usize, sequence: u64) -> [(&'static str, f64, &'static str); 4] {
    let wobble = ((sequence * 7 + connection as u64 * 13) % 20) as f64;
    [
        ("heart_rate", 60.0 + wobble, "/min"),
        ("spo2", 90.0 + wobble / 2.0, "%"),
        ("respiratory_rate", 12.0 + wobble / 4.0, "/min"),
        ("systolic_bp", 105.0 + wobble, "mm[Hg]"),
    ]
}

/// Time of report `sequence` of a connection: a millisecond apart, starting an hour ago; `lane`
/// (connection / devices) offsets connections that share a monitor by microseconds, so that
/// their values are never duplicates of each other.
fn report_time(start: Timestamp, sequence: u64, lane: usize) -> i64 {
    start.micros() + sequence as i64 * 1000 + lane as i64
}

/// What one connection or baseline task measured.
#[derive(Debug, Default)]
struct Tally {
    messages: u64,
    accepted: u64,
    other_acks: u64,
    latencies_ms: Vec<f64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.messages += other.messages;
        self.accepted += other.accepted;
        self.other_acks += other.other_acks;
        self.latencies_ms.extend(other.latencies_ms);
    }
}

/// `p50 / p95 / p99 / max` in milliseconds.
fn latency_line(latencies: &mut [f64]) -> String {
    latencies.sort_by(f64::total_cmp);
    let mut line = String::new();
    let _ = write!(
        line,
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(latencies, 0.5),
        percentile(latencies, 0.95),
        percentile(latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    line
}

/// Group commits: how many, their mean size and duration, and the share of the run the single
/// writer spent committing (near 100 % means the writer is the bottleneck).
fn commit_line(stats: &galen_store::StoreStats, seconds: f64) -> String {
    let commits = stats.commits.max(1) as f64;
    format!(
        "{} group commits, mean {:.1} measurements and {:.2} ms each, writer busy {:.0} %",
        stats.commits,
        stats.batch_size_sum as f64 / commits,
        stats.commit_seconds_sum / commits * 1000.0,
        stats.commit_seconds_sum / seconds * 100.0
    )
}

/// MSA-1 of an ACK, found without parsing the whole message.
fn ack_code(ack: &[u8]) -> &[u8] {
    ack.windows(4)
        .position(|window| window == b"MSA|")
        .and_then(|start| ack.get(start + 4..start + 6))
        .unwrap_or(b"")
}

/// One MLLP client: sends reports as `serial` until `stop`, keeping up to `window` in flight.
async fn mllp_client(
    address: std::net::SocketAddr,
    connection: usize,
    lane: usize,
    serial: String,
    start: Timestamp,
    window: usize,
    stop: Arc<AtomicBool>,
) -> Result<Tally> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut decoder = Decoder::new(1 << 20);
    let mut buffer = vec![0u8; 16 * 1024];
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut tally = Tally::default();
    let mut sequence = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && in_flight.is_empty() {
            return Ok(tally);
        }
        if !stopping && in_flight.len() < window {
            let time = report_time(start, sequence, lane);
            let values = report_values(connection, sequence);
            let control = format!("B{connection}-{sequence}");
            let text = crate::simulate::pcd01_report(
                &serial,
                None,
                &control,
                time,
                values
                    .iter()
                    .map(|(code, value, unit)| (*code, *value, *unit, time)),
            );
            stream.write_all(&encode_frame(text.as_bytes())).await?;
            in_flight.push_back(Instant::now());
            sequence += 1;
            tally.messages += 1;
            continue;
        }
        // Read until at least one ACK arrives.
        loop {
            match decoder.next_frame() {
                Some(Frame::Message(ack)) => {
                    let sent = in_flight
                        .pop_front()
                        .context("an ACK for a message never sent")?;
                    tally
                        .latencies_ms
                        .push(sent.elapsed().as_secs_f64() * 1000.0);
                    if ack_code(&ack) == b"AA" {
                        tally.accepted += 1;
                    } else {
                        if tally.other_acks == 0 {
                            tracing::warn!(ack = %String::from_utf8_lossy(&ack), "not AA");
                        }
                        tally.other_acks += 1;
                    }
                    break;
                }
                Some(other) => bail!("unexpected bytes from the listener: {other:?}"),
                None => {
                    let read = stream.read(&mut buffer).await?;
                    if read == 0 {
                        bail!("the listener closed connection {connection}");
                    }
                    decoder.push(&buffer[..read]);
                }
            }
        }
    }
}

/// One baseline task: the same values straight into the store, one ingest per message.
async fn store_client(
    store: Arc<SqliteStore>,
    connection: usize,
    lane: usize,
    device: DeviceId,
    start: Timestamp,
    stop: Arc<AtomicBool>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut sequence = 0u64;
    // A receipt as large as a typical ACK of the listener (MSH + MSA).
    let response = vec![b'A'; 110];
    while !stop.load(Ordering::Relaxed) {
        let time = Timestamp::from_micros(report_time(start, sequence, lane));
        let measurements = report_values(connection, sequence)
            .iter()
            .map(|(code, value, _)| {
                VitalSign::parse(code)
                    .map(|vital| Measurement {
                        device,
                        vital,
                        time,
                        value: *value,
                        external_id: None,
                    })
                    .context("a known vital sign")
            })
            .collect::<Result<Vec<_>>>()?;
        let receipt = Receipt {
            source: "mllp".into(),
            key: format!("BENCH|{device:?}||B{connection}-{sequence}"),
            received: SystemClock.now(),
            response: response.clone(),
        };
        let sent = Instant::now();
        store
            .ingest(IngestBatch {
                measurements,
                receipt: Some(receipt),
                ..IngestBatch::default()
            })
            .await?;
        tally
            .latencies_ms
            .push(sent.elapsed().as_secs_f64() * 1000.0);
        tally.messages += 1;
        tally.accepted += 1;
        sequence += 1;
    }
    Ok(tally)
}

/// One pipeline task: the same values through the ingest pipeline (no MLLP), one call per
/// message with a receipt, as the listener makes it.
async fn pipeline_client(
    app: App,
    connection: usize,
    lane: usize,
    serial: String,
    start: Timestamp,
    stop: Arc<AtomicBool>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut sequence = 0u64;
    let response = vec![b'A'; 110];
    while !stop.load(Ordering::Relaxed) {
        let time = Timestamp::from_micros(report_time(start, sequence, lane));
        let values = report_values(connection, sequence);
        let items = values
            .iter()
            .map(|(code, value, unit)| {
                Ok(galen_server::Incoming {
                    device: &serial,
                    code,
                    value: *value,
                    unit,
                    time,
                    id: None,
                    raw: b"",
                })
            })
            .collect();
        let key = format!("BENCH|{serial}||B{connection}-{sequence}");
        let receipt = |_: &[Option<&galen_model::Rejection>]| {
            Some(Receipt {
                source: "mllp".into(),
                key,
                received: SystemClock.now(),
                response: response.clone(),
            })
        };
        let sent = Instant::now();
        let (results, _) = app
            .pipeline()
            .ingest_with_receipt("bench", items, Some(receipt))
            .await?;
        tally
            .latencies_ms
            .push(sent.elapsed().as_secs_f64() * 1000.0);
        tally.messages += 1;
        if results
            .iter()
            .all(|result| matches!(result, galen_server::ItemResult::Accepted { .. }))
        {
            tally.accepted += 1;
        } else {
            tally.other_acks += 1;
        }
        sequence += 1;
    }
    Ok(tally)
}

/// Microseconds per call of `work`, run `count` times on this thread.
fn time_per_call(count: u32, mut work: impl FnMut(u32)) -> f64 {
    let started = Instant::now();
    for index in 0..count {
        work(index);
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(count)
}

/// Single-threaded cost of one report through parse + PCD-01 read + ACK build.
fn micro_timings(start: Timestamp) {
    let time = report_time(start, 0, 0);
    let text = crate::simulate::pcd01_report(
        &Simulator::device_serial(0),
        None,
        "B0-0",
        time,
        report_values(0, 0)
            .iter()
            .map(|(code, value, unit)| (*code, *value, *unit, time)),
    );
    let mut checksum = 0usize;
    let hl7 = time_per_call(20_000, |index| {
        let Ok(message) = galen_hl7v2::Message::parse(&text) else {
            return;
        };
        if let Ok(report) = galen_hl7v2::read_oru(&message) {
            let ack = galen_hl7v2::build_ack(
                &report.header,
                galen_hl7v2::Outcome::Accepted,
                &report.diagnostics,
                &format!("GALEN{index}"),
                &galen_hl7v2::format_time(time),
            );
            checksum += ack.len() + report.observations.len();
        }
    });
    println!(
        "breakdown, single-threaded: parse + PCD-01 read + ACK build {hl7:.1} µs per report [{checksum}]"
    );
}

/// What a part measured: the merged tallies, its wall time and the process CPU time it used.
struct PartResult {
    tally: Tally,
    seconds: f64,
    cpu_seconds: Option<f64>,
}

impl PartResult {
    /// `; CPU N µs per message (M cores busy)`, when the CPU time is known.
    fn cpu_line(&self, messages: u64) -> String {
        match self.cpu_seconds {
            Some(cpu) if messages > 0 => format!(
                "; process CPU {:.0} µs per message ({:.2} cores busy)",
                cpu * 1e6 / messages as f64,
                cpu / self.seconds
            ),
            _ => String::new(),
        }
    }
}

/// Runs `tasks` for `seconds`, then tells them to stop and merges what they measured.
async fn run_for(
    seconds: u64,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<Tally>>>,
) -> Result<PartResult> {
    let started = Instant::now();
    let cpu_before = cpu_seconds("/proc/self/stat");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await??);
    }
    let cpu_seconds = cpu_seconds("/proc/self/stat")
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    Ok(PartResult {
        tally,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds,
    })
}

pub(crate) async fn mllp(args: MllpArgs) -> Result<()> {
    if args.connections == 0 || args.devices == 0 || args.seconds == 0 || args.window == 0 {
        bail!("--connections, --devices, --seconds and --window must be positive");
    }
    let (directory, _cleanup) = crate::bench::workspace(args.data_dir.clone())?;
    let start = SystemClock.now().add_seconds(-3600);
    println!(
        "galen bench mllp: {} connections, {} monitors, {} OBX per ORU^R01, window {}, {} s per part, {} cores",
        args.connections,
        args.devices,
        OBX_PER_MESSAGE,
        args.window,
        args.seconds,
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // The listener, over a fresh store.
    let store = Arc::new(crate::open_store(directory.join("mllp")).await?);
    crate::bench::register(store.as_ref(), args.devices, start.add_seconds(-60)).await?;
    // The benchmark's clients send over plain MLLP on loopback, as anonymous senders.
    let config = ServerConfig {
        mllp: galen_server::MllpSettings {
            anonymous: true,
            ..galen_server::MllpSettings::default()
        },
        ..ServerConfig::default()
    };
    let app = App::new(store.clone(), Arc::new(SystemClock), config).await?;
    let http = crate::bind("127.0.0.1:0".parse().context("address")?).await?;
    let mllp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = mllp_listener.local_addr()?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let app = app.clone();
        async move {
            let stopped = async move {
                let _ = server_stopped.await;
            };
            if let Err(error) = app.serve(http, stopped).await {
                tracing::error!(%error, "benchmark server failed");
            }
        }
    });
    tokio::spawn(app.clone().serve_mllp(mllp_listener));

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..args.connections)
        .map(|connection| {
            tokio::spawn(mllp_client(
                address,
                connection,
                connection / args.devices,
                Simulator::device_serial(connection % args.devices),
                start,
                args.window,
                stop.clone(),
            ))
        })
        .collect();
    let mut mllp_part = run_for(args.seconds, stop, tasks).await?;
    let mllp_seconds = mllp_part.seconds;
    let mut mllp = std::mem::take(&mut mllp_part.tally);
    let stats = store.stats();
    drop(app);
    let _ = stop_server.send(());
    server.await?;
    if mllp.other_acks > 0 {
        bail!(
            "{} of {} messages were not acknowledged AA (see the warning above)",
            mllp.other_acks,
            mllp.messages
        );
    }
    let mllp_rate = mllp.accepted as f64 / mllp_seconds;
    println!(
        "galen MLLP: {} messages in {mllp_seconds:.2} s = {mllp_rate:.0} messages/s, {:.0} OBX/s; ACK latency {}; {}{}",
        mllp.accepted,
        mllp_rate * OBX_PER_MESSAGE as f64,
        latency_line(&mut mllp.latencies_ms),
        commit_line(&stats, mllp_seconds),
        mllp_part.cpu_line(mllp.messages),
    );
    if stats.accepted != mllp.accepted * OBX_PER_MESSAGE as u64 {
        bail!(
            "{} measurements stored for {} acknowledged messages",
            stats.accepted,
            mllp.accepted
        );
    }
    if args.breakdown {
        breakdown(&args, &directory, start).await?;
    }
    if args.no_baseline {
        return Ok(());
    }

    // The baseline: the store alone, same values, same concurrency, one ingest per message.
    let baseline_store = Arc::new(crate::open_store(directory.join("baseline")).await?);
    let devices = crate::bench::register(
        baseline_store.as_ref(),
        args.devices,
        start.add_seconds(-60),
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..args.connections)
        .map(|connection| {
            let (device, _) = devices[connection % devices.len()];
            tokio::spawn(store_client(
                baseline_store.clone(),
                connection,
                connection / args.devices,
                device,
                start,
                stop.clone(),
            ))
        })
        .collect();
    let mut baseline_part = run_for(args.seconds, stop, tasks).await?;
    let baseline_seconds = baseline_part.seconds;
    let mut baseline = std::mem::take(&mut baseline_part.tally);
    let baseline_stats = baseline_store.stats();
    baseline_store.close().await?;
    let baseline_rate = baseline.messages as f64 / baseline_seconds;
    println!(
        "baseline store.ingest (one call per message, receipt included, {} tasks): {} messages in {baseline_seconds:.2} s = {baseline_rate:.0} messages/s; latency {}; {}{}",
        args.connections,
        baseline.messages,
        latency_line(&mut baseline.latencies_ms),
        commit_line(&baseline_stats, baseline_seconds),
        baseline_part.cpu_line(baseline.messages),
    );
    println!(
        "ratio MLLP / store baseline: {:.2}",
        mllp_rate / baseline_rate
    );
    Ok(())
}

/// `--breakdown`: the pipeline without MLLP on its own store and App, then micro-timings.
async fn breakdown(args: &MllpArgs, directory: &std::path::Path, start: Timestamp) -> Result<()> {
    {
        let part = "pipeline";
        let store = Arc::new(crate::open_store(directory.join(part)).await?);
        crate::bench::register(store.as_ref(), args.devices, start.add_seconds(-60)).await?;
        let app = App::new(
            store.clone(),
            Arc::new(SystemClock),
            ServerConfig::default(),
        )
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..args.connections)
            .map(|connection| {
                tokio::spawn(pipeline_client(
                    app.clone(),
                    connection,
                    connection / args.devices,
                    Simulator::device_serial(connection % args.devices),
                    start,
                    stop.clone(),
                ))
            })
            .collect();
        let mut part = run_for(args.seconds, stop, tasks).await?;
        let seconds = part.seconds;
        let mut pipeline = std::mem::take(&mut part.tally);
        let stats = store.stats();
        let rate = pipeline.accepted as f64 / seconds;
        println!(
            "breakdown, pipeline without MLLP (ingest_with_receipt, clinical engine running, {} tasks): {rate:.0} messages/s; latency {}; {}{}{}",
            args.connections,
            latency_line(&mut pipeline.latencies_ms),
            commit_line(&stats, seconds),
            part.cpu_line(pipeline.messages),
            if pipeline.other_acks > 0 {
                format!("; {} messages not fully accepted", pipeline.other_acks)
            } else {
                String::new()
            }
        );
        micro_timings(start);
        drop(app);
        store.close().await?;
    }
    Ok(())
}
