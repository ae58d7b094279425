//! `galen bench mqtt`: device ingest over MQTT, and the memory an idle MQTT connection costs.
//!
//! Throughput (default): `--devices` device clients, each on its own TCP connection with its own
//! credential, publish one measurement per message (Galen JSON on
//! `galen/v1/devices/{serial}/measurements`) at QoS 1 to an in-process Galen for `--seconds`. Each
//! keeps `--window` messages unacknowledged and publishes the next as soon as a PUBACK (sent only
//! after the durable group commit) comes back. Reported: acknowledged messages per second, PUBACK
//! latency, and a check that the store holds exactly the acknowledged count. The baseline, in the
//! same run: Mosquitto relaying the same load (same clients, QoS 1, same payloads) to one null QoS 0
//! subscriber. Mosquitto acknowledges on receipt, from memory; Galen after fsync.
//!
//! Idle (`--idle N`): N authenticated connections (keep-alive 60 s) held open against an
//! in-process Galen. The clients run in a child process, so the server's resident memory is
//! measured alone: with none, half and all of them open (the second half's growth is the steady
//! cost of a connection, free of warm-up), and every connection must answer a PINGREQ at the end.
//!
//! The load generator must not be what is measured: a few threads (`--client-threads`, one
//! current-thread runtime each) drive all the sockets; each message is a pre-encoded PUBLISH in
//! which only the packet id, the value and the time are patched; the messages a read of PUBACKs
//! frees are sent in one write. Its CPU time is measured and printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use clap::Args;
use galen_model::{
    Clock, DeviceId, DeviceKind, DeviceStatus, NewAssignment, NewDevice, SystemClock, Timestamp,
    VitalSign,
};
use galen_server::{App, ServerConfig, TOPIC_PREFIX};
use galen_store::MeasurementStore;
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::subscribe::SubscribePacket;
use mqtt5_protocol::packet::{MqttPacket, Packet};
use mqtt5_protocol::types::{ConnectOptions, QoS, ReasonCode};
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench::{cpu_seconds, percentile, resident_kib};
use crate::bridge::{next_packet, packet_extent};

/// Flags of `galen bench mqtt`.
#[derive(Debug, Args)]
pub(crate) struct MqttArgs {
    /// Device clients publishing at once, each on its own TCP connection with its own credential.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Seconds of publishing; the messages still in flight are then awaited.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// QoS 1 messages each device keeps unacknowledged: it publishes the next one as soon as a
    /// PUBACK frees a slot. 1 is a device that waits for each acknowledgement; 8 stands for a
    /// gateway, or a monitor sending its backlog after a network outage.
    #[arg(long, default_value_t = 8)]
    window: u16,
    /// MQTT protocol level of the clients: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 5)]
    protocol: u8,
    /// The baseline broker (Mosquitto), HOST:PORT; `off` skips the baseline.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mosquitto: String,
    /// Threads of the load generator; each drives its share of the connections.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Instead of throughput: hold this many idle authenticated connections (keep-alive 60 s) and
    /// measure the server's resident memory per connection.
    #[arg(long)]
    idle: Option<usize>,
    /// Where to put the database (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Internal: be the idle clients' process, connecting to this address.
    #[arg(long, hide = true)]
    idle_client: Option<SocketAddr>,
    /// Internal: the idle run's id (serials and client ids).
    #[arg(long, hide = true)]
    run_id: Option<String>,
}

/// Environment variable that hands the device secrets' key to the idle clients' process.
const KEY_VARIABLE: &str = "GALEN_BENCH_MQTT_KEY";
/// Keep-alive of the idle connections, seconds.
const IDLE_KEEP_ALIVE: u16 = 60;
/// A PUBACK slower than this fails the run.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections being opened at once (keeps the listen backlogs from overflowing).
const CONNECTING_AT_ONCE: usize = 128;
/// Step between the times of one device's consecutive messages (so none is a duplicate).
const TIME_STEP_MICROS: i64 = 100;

pub(crate) async fn mqtt(args: MqttArgs) -> Result<()> {
    if !matches!(args.protocol, 4 | 5) {
        bail!("--protocol is 4 (MQTT 3.1.1) or 5");
    }
    if let Some(target) = args.idle_client {
        return idle_clients(target, &args).await;
    }
    note_machine_load();
    if let Some(connections) = args.idle {
        return idle(connections, &args).await;
    }
    throughput(&args).await
}

/// Says so when the machine is already busy: the figures then measure the neighbours too.
fn note_machine_load() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let load: Option<f64> = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok());
    if let Some(load) = load
        && load > 0.5 * cores as f64
    {
        println!(
            "note: load average {load:.2} on {cores} cores before the run; other work competes for the CPU"
        );
    }
}

/// One client's login.
#[derive(Debug, Clone)]
struct Login {
    serial: String,
    client_id: String,
    /// `None`: anonymous (the Mosquitto baseline).
    secret: Option<String>,
}

/// A short random id that keeps this run's serials, client ids and topics apart from any other
/// run on the same broker.
fn random_hex(bytes: usize) -> Result<String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn serial(run: &str, index: usize) -> String {
    format!("MQB-{run}-{index:05}")
}

fn login(run: &str, key: &str, index: usize) -> Login {
    Login {
        serial: serial(run, index),
        client_id: format!("bench-{run}-{index}"),
        secret: Some(format!("{key}-{index}")),
    }
}

/// Registers `count` devices with their credentials (and, with `patients`, each assigned to a
/// patient of its own, so that the clinical engine scores what they send).
async fn register(
    store: &dyn galen_store::Store,
    logins: &[Login],
    patients: bool,
    since: Timestamp,
) -> Result<Vec<DeviceId>> {
    let mut ids = Vec::with_capacity(logins.len());
    for (index, login) in logins.iter().enumerate() {
        let device = store
            .create_device(
                NewDevice {
                    serial: login.serial.clone(),
                    manufacturer: "Galen bench".into(),
                    model: "MQTT".into(),
                    kind: DeviceKind::Monitor,
                    status: DeviceStatus::Active,
                },
                Vec::new(),
            )
            .await?;
        let secret = login.secret.as_deref().unwrap_or_default();
        store
            .add_device_credential(
                device.id,
                sha2::Sha256::digest(secret).into(),
                since,
                Vec::new(),
            )
            .await?;
        if patients {
            let patient = store
                .create_patient(crate::demo::demo_patient(index, logins.len()), Vec::new())
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
        }
        ids.push(device.id);
    }
    Ok(ids)
}

/// Galen in this process: the store, the App, its MQTT address, and what stops it.
struct Galen {
    app: App,
    mqtt: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_galen(store: Arc<galen_store::embedded::SqliteStore>) -> Result<Galen> {
    let app = App::new(
        store.clone(),
        Arc::new(SystemClock),
        ServerConfig::default(),
    )
    .await?;
    let http = crate::bind("127.0.0.1:0".parse().context("address")?).await?;
    let mqtt_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mqtt = mqtt_listener.local_addr()?;
    tokio::spawn(app.clone().serve_mqtt(mqtt_listener));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = app.clone();
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        if let Err(error) = serving.serve(http, stopped).await {
            tracing::error!(%error, "benchmark server failed");
        }
    });
    Ok(Galen {
        app,
        mqtt,
        stop,
        server,
    })
}

impl Galen {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.server.await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput

async fn throughput(args: &MqttArgs) -> Result<()> {
    if args.devices == 0 || args.window == 0 || args.seconds == 0 || args.client_threads == 0 {
        bail!("--devices, --window, --seconds and --client-threads must be positive");
    }
    // Client and server sockets are both in this process.
    ensure_open_files(args.devices * 2 + 256)?;
    let (directory, _cleanup) = crate::bench::workspace(args.data_dir.clone())?;
    let run = random_hex(3)?;
    let key = random_hex(16)?;
    let logins: Vec<Login> = (0..args.devices)
        .map(|index| login(&run, &key, index))
        .collect();
    let now = SystemClock.now();
    // Each device's messages are TIME_STEP_MICROS apart from a minute ago: all distinct, none in
    // the future for any rate this machine reaches.
    let first_time = now.add_seconds(-60);

    let store = Arc::new(crate::open_store(directory.join("galen")).await?);
    let began = Instant::now();
    let device_ids = register(store.as_ref(), &logins, true, now.add_seconds(-3600)).await?;
    println!(
        "registered {} devices with credentials, each assigned to a patient, in {:.1} s",
        args.devices,
        began.elapsed().as_secs_f64()
    );
    let galen = start_galen(store.clone()).await?;
    let plan = LoadPlan {
        target: galen.mqtt,
        protocol: args.protocol,
        window: args.window,
        duration: Duration::from_secs(args.seconds),
        threads: args.client_threads,
        first_time,
    };
    let report = {
        let (plan, logins) = (plan.clone(), logins.clone());
        tokio::task::spawn_blocking(move || run_load(&plan, logins)).await??
    };
    let stats = store.stats();
    // Read back what is stored: every device's series over the run's times.
    let mut stored = 0usize;
    let last_time = first_time.add_seconds(3600);
    for device in &device_ids {
        stored += store
            .range(*device, VitalSign::HeartRate, first_time, last_time)
            .await?
            .len();
    }
    let connections = galen.app.metrics().open_connections("mqtt");
    // Pipeline calls: the MQTT listener makes one per run of PUBLISH packets read together.
    let pipeline_calls: Option<f64> = galen
        .app
        .metrics()
        .render(&stats)
        .lines()
        .find_map(|line| line.strip_prefix("galen_ingest_requests_total "))
        .and_then(|count| count.trim().parse().ok());
    galen.stop().await?;

    let galen_rate = report.rate();
    let mut latencies = report.latencies_ms();
    println!(
        "galen MQTT ingest: {} devices (own TCP connection and credential each), MQTT {}, QoS 1, window {}: \
         {} messages acknowledged after durable commit in {:.2} s = {galen_rate:.0} msgs/s; \
         PUBACK latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} group commits, mean {:.0} measurements and {:.2} ms per commit \
         (the store writer committed {:.0}% of the time)",
        args.devices,
        protocol_name(args.protocol),
        args.window,
        report.acked,
        report.seconds(),
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
        stats.commits,
        stats.batch_size_sum as f64 / stats.commits.max(1) as f64,
        stats.commit_seconds_sum * 1000.0 / stats.commits.max(1) as f64,
        stats.commit_seconds_sum * 100.0 / report.seconds(),
    );
    println!(
        "  CPU over the run: galen {:.2} cores, load generator {:.2} cores (machine: {} cores); {}; \
         {:.1} messages per pipeline call; {} connections open at the end",
        report.server_cpu_seconds() / report.seconds(),
        report.client_cpu_seconds / report.seconds(),
        std::thread::available_parallelism().map_or(0, usize::from),
        report.batching(),
        pipeline_calls.map_or(f64::NAN, |calls| report.acked as f64 / calls.max(1.0)),
        connections
    );
    if report.refused > 0 {
        bail!(
            "{} messages were refused (PUBACK reason >= 0x80)",
            report.refused
        );
    }
    if stored as u64 != report.acked || stats.accepted != report.acked {
        bail!(
            "the store holds {stored} measurements ({} accepted by the store) but {} were acknowledged",
            stats.accepted,
            report.acked
        );
    }
    println!(
        "  verified: the store holds exactly the {stored} acknowledged measurements (every device's series read back)"
    );

    if args.mosquitto.eq_ignore_ascii_case("off") {
        println!("baseline skipped (--mosquitto off)");
        return Ok(());
    }
    match mosquitto_baseline(args, &plan, &run).await {
        Ok(Some(baseline)) => {
            let relay_rate = baseline.delivered as f64 / baseline.delivery_seconds.max(1e-9);
            let mut latencies = baseline.load.latencies_ms();
            println!(
                "baseline Mosquitto at {}, same load (same clients, QoS 1, same payloads) relayed to one QoS 0 null subscriber: \
                 {} acknowledged in {:.2} s = {:.0} msgs/s (PUBACK p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms); \
                 {} delivered to the subscriber = {relay_rate:.0} msgs/s",
                args.mosquitto,
                baseline.load.acked,
                baseline.load.seconds(),
                baseline.load.rate(),
                percentile(&mut latencies, 0.5),
                percentile(&mut latencies, 0.99),
                percentile(&mut latencies, 1.0),
                baseline.delivered,
            );
            println!(
                "  CPU over the run: mosquitto {}, load generator and subscriber {:.2} cores; {}",
                baseline
                    .broker_cpu_seconds
                    .map(|cpu| format!("{:.2} cores", cpu / baseline.load.seconds()))
                    .unwrap_or_else(|| "unknown".into()),
                (baseline.load.client_cpu_seconds + baseline.subscriber_cpu_seconds)
                    / baseline.load.seconds(),
                baseline.load.batching()
            );
            if baseline.delivered < baseline.load.acked {
                println!(
                    "  note: the subscriber received {} of {} messages (Mosquitto drops QoS 0 messages for a subscriber whose queue is full)",
                    baseline.delivered, baseline.load.acked
                );
            }
            let baseline_rate = relay_rate.min(baseline.load.rate());
            println!(
                "galen {galen_rate:.0} msgs/s, mosquitto {baseline_rate:.0} msgs/s: ratio galen / mosquitto = {:.2} \
                 (Galen acknowledges after fsync, Mosquitto on receipt, from memory)",
                galen_rate / baseline_rate
            );
        }
        Ok(None) => {}
        Err(error) => println!("Mosquitto baseline failed: {error:#}"),
    }
    Ok(())
}

fn protocol_name(protocol: u8) -> &'static str {
    if protocol == 5 { "5" } else { "3.1.1" }
}

/// What the load generator does.
#[derive(Debug, Clone)]
struct LoadPlan {
    target: SocketAddr,
    protocol: u8,
    window: u16,
    duration: Duration,
    threads: usize,
    /// Time of every device's first message.
    first_time: Timestamp,
}

/// What it measured.
#[derive(Debug, Default)]
struct LoadReport {
    acked: u64,
    refused: u64,
    /// PUBACK latencies, microseconds.
    latencies: Vec<u32>,
    /// When the clients started publishing.
    started: Option<Instant>,
    /// From the start to the last PUBACK.
    elapsed: Duration,
    client_cpu_seconds: f64,
    process_cpu_seconds: f64,
    /// The clients' write and read calls: how well the messages and PUBACKs were batched.
    writes: u64,
    reads: u64,
}

impl LoadReport {
    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    fn rate(&self) -> f64 {
        self.acked as f64 / self.seconds()
    }

    /// Messages per client write and PUBACKs per client read.
    fn batching(&self) -> String {
        format!(
            "{:.1} messages per client write, {:.1} PUBACKs per client read",
            (self.acked + self.refused) as f64 / self.writes.max(1) as f64,
            (self.acked + self.refused) as f64 / self.reads.max(1) as f64
        )
    }

    fn latencies_ms(&self) -> Vec<f64> {
        self.latencies
            .iter()
            .map(|micros| f64::from(*micros) / 1000.0)
            .collect()
    }

    /// CPU time of the rest of this process (the in-process server) over the run.
    fn server_cpu_seconds(&self) -> f64 {
        (self.process_cpu_seconds - self.client_cpu_seconds).max(0.0)
    }
}

/// One thread's share of a load run.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    refused: u64,
    latencies: Vec<u32>,
    last_ack: Option<Instant>,
    cpu_seconds: f64,
    writes: u64,
    reads: u64,
}

/// Runs the load on `plan.threads` threads of its own and waits for it (blocking): all clients
/// connect, then all start publishing at once.
fn run_load(plan: &LoadPlan, logins: Vec<Login>) -> Result<LoadReport> {
    let threads = plan.threads.min(logins.len()).max(1);
    let connected = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    // (start, deadline), or None when a thread failed to connect and the run is off.
    let start: Arc<Mutex<Option<(Instant, Instant)>>> = Arc::default();
    let failed = Arc::new(AtomicBool::new(false));
    let mut shares: Vec<Vec<(usize, Login)>> = vec![Vec::new(); threads];
    for (index, login) in logins.into_iter().enumerate() {
        shares[index % threads].push((index, login));
    }
    let mut handles = Vec::new();
    for (number, share) in shares.into_iter().enumerate() {
        let (plan, connected, go, start, failed) = (
            plan.clone(),
            connected.clone(),
            go.clone(),
            start.clone(),
            failed.clone(),
        );
        // Named, so that profiles tell the load generator from the server.
        let thread = std::thread::Builder::new().name(format!("mqtt-load-{number}"));
        handles.push(thread.spawn(move || -> Result<Tally> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(load_thread(plan, share, &connected, &go, &start, &failed))
        })?);
    }
    connected.wait();
    let process_cpu = cpu_seconds("/proc/self/stat").unwrap_or(0.0);
    let began = Instant::now();
    if !failed.load(Ordering::SeqCst) {
        *start.lock().unwrap_or_else(|poison| poison.into_inner()) =
            Some((began, began + plan.duration));
    }
    go.wait();
    let mut report = LoadReport::default();
    let mut errors = Vec::new();
    let mut last_ack = began;
    for handle in handles {
        match handle.join() {
            Ok(Ok(tally)) => {
                report.acked += tally.acked;
                report.refused += tally.refused;
                report.latencies.extend(tally.latencies);
                report.client_cpu_seconds += tally.cpu_seconds;
                report.writes += tally.writes;
                report.reads += tally.reads;
                last_ack = last_ack.max(tally.last_ack.unwrap_or(began));
            }
            Ok(Err(error)) => errors.push(format!("{error:#}")),
            Err(_) => errors.push("a load thread panicked".into()),
        }
    }
    report.process_cpu_seconds = cpu_seconds("/proc/self/stat").unwrap_or(0.0) - process_cpu;
    report.started = Some(began);
    report.elapsed = last_ack - began;
    if let Some(error) = errors.first() {
        bail!(
            "{} of {threads} load threads failed; first: {error}",
            errors.len()
        );
    }
    Ok(report)
}

async fn load_thread(
    plan: LoadPlan,
    share: Vec<(usize, Login)>,
    connected: &Barrier,
    go: &Barrier,
    start: &Mutex<Option<(Instant, Instant)>>,
    failed: &AtomicBool,
) -> Result<Tally> {
    let opened = open_all(plan.target, &share, plan.protocol, 60, plan.window).await;
    if opened.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    // Every thread reaches both barriers, failed or not, so that none waits forever.
    connected.wait();
    go.wait();
    let streams = opened?;
    let Some((began, deadline)) = *start.lock().unwrap_or_else(|poison| poison.into_inner()) else {
        bail!("the run was called off: another load thread could not connect");
    };
    let cpu_before = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0);
    let mut tasks = tokio::task::JoinSet::new();
    for (stream, (_, login)) in streams.into_iter().zip(&share) {
        let template = Template::new(&login.serial, plan.protocol, plan.first_time)?;
        tasks.spawn(publish(stream, template, plan.window, began, deadline));
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let one = joined.context("a publisher task failed")??;
        tally.acked += one.acked;
        tally.refused += one.refused;
        tally.latencies.extend(one.latencies);
        tally.last_ack = tally.last_ack.max(one.last_ack);
        tally.writes += one.writes;
        tally.reads += one.reads;
    }
    tally.cpu_seconds = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0) - cpu_before;
    Ok(tally)
}

/// Opens a connection for every login (a bounded number at a time), in order.
async fn open_all(
    target: SocketAddr,
    logins: &[(usize, Login)],
    protocol: u8,
    keep_alive: u16,
    window: u16,
) -> Result<Vec<TcpStream>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for (position, (_, login)) in logins.iter().enumerate() {
        let (limit, login) = (limit.clone(), login.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let (stream, receive_maximum) = connect(target, &login, protocol, keep_alive)
                .await
                .with_context(|| format!("connecting {} to {target}", login.client_id))?;
            if receive_maximum < window {
                bail!(
                    "the server takes at most {receive_maximum} unacknowledged messages per connection (receive maximum), less than --window {window}"
                );
            }
            Ok::<_, anyhow::Error>((position, stream))
        });
    }
    let mut streams: Vec<Option<TcpStream>> = (0..logins.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (position, stream) = joined.context("a connecting task failed")??;
        streams[position] = Some(stream);
    }
    Ok(streams.into_iter().flatten().collect())
}

/// Connects and logs in; returns the stream and the server's receive maximum.
async fn connect(
    target: SocketAddr,
    login: &Login,
    protocol: u8,
    keep_alive: u16,
) -> Result<(TcpStream, u16)> {
    let mut stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let mut options = ConnectOptions::new(&login.client_id)
        .with_keep_alive(Duration::from_secs(u64::from(keep_alive)))
        .with_clean_start(true);
    if let Some(secret) = &login.secret {
        options = options.with_credentials(&login.serial, secret);
    }
    let packet = if protocol == 5 {
        ConnectPacket::new(options)
    } else {
        ConnectPacket::new_v311(options)
    };
    let mut out = BytesMut::with_capacity(128);
    packet.encode(&mut out).context("encoding CONNECT")?;
    stream.write_all(&out).await?;
    let mut buffer = BytesMut::with_capacity(128);
    let reply = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(packet) = next_packet(&mut buffer, 1 << 20, protocol)? {
                return Ok::<_, anyhow::Error>(packet);
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                bail!("closed before CONNACK");
            }
        }
    })
    .await
    .context("no CONNACK in 30 s")??;
    let Packet::ConnAck(connack) = reply else {
        bail!("answered CONNECT with {}", reply.packet_type_name());
    };
    if connack.reason_code != ReasonCode::Success {
        bail!("connection refused: {:?}", connack.reason_code);
    }
    // MQTT 3.1.1 has no receive maximum; MQTT 5's default is 65,535.
    let receive_maximum = if protocol == 5 {
        connack.receive_maximum().unwrap_or(u16::MAX)
    } else {
        u16::MAX
    };
    Ok((stream, receive_maximum))
}

/// One device's PUBLISH, encoded once; each message patches its packet id, value and time.
#[derive(Debug)]
struct Template {
    packet: Vec<u8>,
    packet_id_at: usize,
    value_at: usize,
    time_at: usize,
    first_micros: i64,
    sequence: i64,
}

/// Width of `YYYY-MM-DDTHH:MM:SS.ffffff` (the `Z` follows).
const TIME_WIDTH: usize = 26;

impl Template {
    fn new(serial: &str, protocol: u8, first_time: Timestamp) -> Result<Template> {
        let vital = VitalSign::HeartRate;
        let placeholder = "0000-00-00T00:00:00.000000";
        let payload = format!(
            r#"{{"code":"{}","value":72,"unit":"{}","time":"{placeholder}Z"}}"#,
            vital.alias(),
            vital.canonical_unit().ucum()
        );
        let topic = format!("{TOPIC_PREFIX}{serial}/measurements");
        let publish = if protocol == 5 {
            PublishPacket::new(
                topic.clone(),
                payload.clone().into_bytes(),
                QoS::AtLeastOnce,
            )
        } else {
            PublishPacket::new_v311(
                topic.clone(),
                payload.clone().into_bytes(),
                QoS::AtLeastOnce,
            )
        };
        let mut encoded = BytesMut::new();
        publish
            .with_packet_id(1)
            .encode(&mut encoded)
            .context("encoding PUBLISH")?;
        let packet = encoded.to_vec();
        let Some((header, _)) = packet_extent(&packet, u32::MAX)? else {
            bail!("incomplete PUBLISH encoding");
        };
        let payload_at = packet.len() - payload.len();
        let find = |needle: &str| {
            payload
                .find(needle)
                .map(|offset| payload_at + offset)
                .context("template field")
        };
        Ok(Template {
            packet_id_at: header + 2 + topic.len(),
            value_at: find("72,")?,
            time_at: find(placeholder)?,
            packet,
            first_micros: first_time.micros(),
            sequence: 0,
        })
    }

    /// Appends the next message, with `packet_id`, to `out`.
    fn append(&mut self, packet_id: u16, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.packet);
        let message = &mut out[at..];
        message[self.packet_id_at..self.packet_id_at + 2].copy_from_slice(&packet_id.to_be_bytes());
        // Heart rates 60..99 bpm: always two digits.
        let value = 60 + (self.sequence % 40) as u8;
        message[self.value_at] = b'0' + value / 10;
        message[self.value_at + 1] = b'0' + value % 10;
        write_time(
            &mut message[self.time_at..self.time_at + TIME_WIDTH],
            self.first_micros + self.sequence * TIME_STEP_MICROS,
        );
        self.sequence += 1;
    }
}

/// Writes `micros` (since the Unix epoch, UTC) as `YYYY-MM-DDTHH:MM:SS.ffffff` into `out`.
fn write_time(out: &mut [u8], micros: i64) {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let mut put = |at: usize, width: usize, mut number: i64| {
        for position in (at..at + width).rev() {
            out[position] = b'0' + (number % 10) as u8;
            number /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    put(20, 6, fraction);
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        out[at] = separator;
    }
}

/// (year, month, day) of a day counted from 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One device: keeps `window` messages in flight until `deadline`, then waits for the rest.
async fn publish(
    mut stream: TcpStream,
    mut template: Template,
    window: u16,
    began: Instant,
    deadline: Instant,
) -> Result<Tally> {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1024),
        ..Tally::default()
    };
    let mut sent_at = vec![began; usize::from(window)];
    let mut out = Vec::with_capacity(usize::from(window) * template.packet.len());
    let mut buffer = BytesMut::with_capacity(4096);
    // Packet ids 1..=window, each reused as soon as it is acknowledged.
    for packet_id in 1..=window {
        template.append(packet_id, &mut out);
    }
    let mut in_flight = usize::from(window);
    stream.write_all(&out).await?;
    tally.writes += 1;
    out.clear();
    while in_flight > 0 {
        let read = tokio::time::timeout(ACK_TIMEOUT, stream.read_buf(&mut buffer))
            .await
            .context("no PUBACK within a minute")??;
        if read == 0 {
            bail!("the server closed the connection");
        }
        tally.reads += 1;
        let now = Instant::now();
        let sending = now < deadline;
        while let Some((header, body)) = packet_extent(&buffer, 1 << 20)? {
            if buffer.len() < header + body {
                break;
            }
            match buffer[0] >> 4 {
                // PUBACK: packet id, then (MQTT 5) a reason code when it is not success.
                4 if body >= 2 => {
                    let packet_id = u16::from_be_bytes([buffer[header], buffer[header + 1]]);
                    let Some(slot) = sent_at.get_mut(usize::from(packet_id).wrapping_sub(1)) else {
                        bail!("PUBACK for packet id {packet_id}, never sent");
                    };
                    let reason = if body >= 3 { buffer[header + 2] } else { 0 };
                    if reason >= 0x80 {
                        tally.refused += 1;
                    } else {
                        tally.acked += 1;
                    }
                    tally.latencies.push(
                        now.duration_since(*slot)
                            .as_micros()
                            .min(u128::from(u32::MAX)) as u32,
                    );
                    in_flight -= 1;
                    if sending {
                        template.append(packet_id, &mut out);
                        *slot = now;
                        in_flight += 1;
                    }
                }
                // DISCONNECT
                14 => bail!("the server sent DISCONNECT"),
                _ => {}
            }
            buffer.advance(header + body);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            tally.writes += 1;
            out.clear();
        }
    }
    tally.last_ack = Some(Instant::now());
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// Baseline: Mosquitto

struct Baseline {
    load: LoadReport,
    delivered: u64,
    /// From the start to the last delivery to the subscriber.
    delivery_seconds: f64,
    subscriber_cpu_seconds: f64,
    broker_cpu_seconds: Option<f64>,
}

/// The same load through Mosquitto to one null subscriber; `None` (after saying why) when the
/// broker cannot be reached.
async fn mosquitto_baseline(
    args: &MqttArgs,
    plan: &LoadPlan,
    run: &str,
) -> Result<Option<Baseline>> {
    let address: SocketAddr = match tokio::net::lookup_host(&args.mosquitto).await {
        Ok(mut addresses) => match addresses.next() {
            Some(address) => address,
            None => bail!("--mosquitto {:?} resolves to nothing", args.mosquitto),
        },
        Err(error) => bail!("--mosquitto {:?}: {error}", args.mosquitto),
    };
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            println!(
                "MOSQUITTO BASELINE SKIPPED: the broker at {address} is unreachable ({error}); start it or pass --mosquitto HOST:PORT"
            );
            return Ok(None);
        }
        Err(_) => {
            println!("MOSQUITTO BASELINE SKIPPED: no answer from {address} within 2 s");
            return Ok(None);
        }
    }
    let logins: Vec<Login> = (0..args.devices)
        .map(|index| Login {
            serial: serial(run, index),
            client_id: format!("bench-{run}-m{index}"),
            secret: None,
        })
        .collect();
    let plan = LoadPlan {
        target: address,
        ..plan.clone()
    };
    let broker_pid = process_named("mosquitto");
    let broker_cpu =
        |pid: Option<u32>| pid.and_then(|pid| cpu_seconds(&format!("/proc/{pid}/stat")));
    // Serials are MQB-{run}-{index}: the subscriber counts this run's messages only.
    let subscriber = Subscriber::start(address, run, format!("{TOPIC_PREFIX}MQB-{run}-")).await?;
    let broker_before = broker_cpu(broker_pid);
    let load = tokio::task::spawn_blocking(move || run_load(&plan, logins)).await??;
    let broker_after = broker_cpu(broker_pid);
    let (delivered, last_delivery, subscriber_cpu) = subscriber.finish(load.acked).await?;
    Ok(Some(Baseline {
        delivery_seconds: match (load.started, last_delivery) {
            (Some(started), Some(last)) => last.saturating_duration_since(started).as_secs_f64(),
            _ => 0.0,
        },
        load,
        delivered,
        subscriber_cpu_seconds: subscriber_cpu,
        broker_cpu_seconds: broker_before
            .zip(broker_after)
            .map(|(before, after)| after - before),
    }))
}

/// The null subscriber: counts this run's messages, nothing else.
struct Subscriber {
    stop: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Result<(u64, Option<Instant>, f64)>>,
}

impl Subscriber {
    async fn start(address: SocketAddr, run: &str, prefix: String) -> Result<Subscriber> {
        let stop = Arc::new(AtomicBool::new(false));
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let (ready, subscribed) = tokio::sync::oneshot::channel::<Result<()>>();
        let client_id = format!("bench-{run}-subscriber");
        let (stop_flag, expected_count) = (stop.clone(), expected.clone());
        let thread = std::thread::Builder::new().name("mqtt-null-sub".into());
        let thread = thread.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(count_messages(
                address,
                client_id,
                prefix,
                ready,
                stop_flag,
                expected_count,
            ))
        })?;
        subscribed
            .await
            .context("the subscriber thread ended early")?
            .context("subscribing to Mosquitto")?;
        Ok(Subscriber {
            stop,
            expected,
            thread,
        })
    }

    /// Waits until `expected` messages arrived, or nothing came for 2 s; returns the count, the
    /// instant of the last delivery and the subscriber's CPU seconds.
    async fn finish(self, expected: u64) -> Result<(u64, Option<Instant>, f64)> {
        self.expected.store(expected, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the subscriber thread panicked"))?
        })
        .await?
    }
}

async fn count_messages(
    address: SocketAddr,
    client_id: String,
    prefix: String,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
    stop: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
) -> Result<(u64, Option<Instant>, f64)> {
    let login = Login {
        serial: String::new(),
        client_id,
        secret: None,
    };
    let subscribed = async {
        let (mut stream, _) = connect(address, &login, 5, 60).await?;
        let mut out = BytesMut::new();
        SubscribePacket::new(1)
            .add_filter(format!("{TOPIC_PREFIX}+/measurements"), QoS::AtMostOnce)
            .encode(&mut out)
            .context("encoding SUBSCRIBE")?;
        stream.write_all(&out).await?;
        let mut buffer = BytesMut::with_capacity(1 << 16);
        loop {
            if let Some(packet) = next_packet(&mut buffer, 1 << 20, 5)? {
                if let Packet::SubAck(suback) = packet {
                    if suback
                        .reason_codes
                        .first()
                        .and_then(|code| code.granted_qos())
                        .is_none()
                    {
                        bail!("subscription refused: {:?}", suback.reason_codes);
                    }
                    return Ok::<_, anyhow::Error>((stream, buffer));
                }
                continue;
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                bail!("closed before SUBACK");
            }
        }
    };
    let (mut stream, mut buffer) = match subscribed.await {
        Ok(subscribed) => {
            let _ = ready.send(Ok(()));
            subscribed
        }
        Err(error) => {
            let message = format!("{error:#}");
            let _ = ready.send(Err(error));
            bail!("{message}");
        }
    };
    let cpu_before = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0);
    let prefix = prefix.into_bytes();
    let mut count = 0u64;
    let mut last = None;
    let mut quiet_since = Instant::now();
    loop {
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(1 << 16);
        }
        let read =
            tokio::time::timeout(Duration::from_millis(100), stream.read_buf(&mut buffer)).await;
        match read {
            Ok(Ok(0)) => bail!("Mosquitto closed the subscriber's connection"),
            Ok(Ok(_)) => {
                let now = Instant::now();
                while let Some((header, body)) = packet_extent(&buffer, 1 << 20)? {
                    if buffer.len() < header + body {
                        break;
                    }
                    // PUBLISH (QoS 0): topic length, topic, payload.
                    if buffer[0] >> 4 == 3 && body >= 2 {
                        let length =
                            usize::from(u16::from_be_bytes([buffer[header], buffer[header + 1]]));
                        let topic = buffer
                            .get(header + 2..header + 2 + length)
                            .unwrap_or_default();
                        if topic.starts_with(&prefix) {
                            count += 1;
                            last = Some(now);
                        }
                    }
                    buffer.advance(header + body);
                }
                quiet_since = now;
            }
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {}
        }
        if stop.load(Ordering::SeqCst)
            && (count >= expected.load(Ordering::SeqCst)
                || quiet_since.elapsed() > Duration::from_secs(2))
        {
            break;
        }
    }
    let cpu = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0) - cpu_before;
    let _ = stream.write_all(&[0xE0, 0x00]).await;
    Ok((count, last, cpu))
}

// ---------------------------------------------------------------------------------------------
// Idle connections

async fn idle(connections: usize, args: &MqttArgs) -> Result<()> {
    if connections < 2 {
        bail!("--idle must be at least 2");
    }
    // This process holds the server's sockets; the clients run in a child process.
    ensure_open_files(connections + 256)?;
    let (directory, _cleanup) = crate::bench::workspace(args.data_dir.clone())?;
    let run = random_hex(3)?;
    let key = random_hex(16)?;
    let logins: Vec<Login> = (0..connections)
        .map(|index| login(&run, &key, index))
        .collect();
    let store = Arc::new(crate::open_store(directory.join("galen")).await?);
    let began = Instant::now();
    register(store.as_ref(), &logins, false, SystemClock.now()).await?;
    println!(
        "registered {connections} devices with credentials in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    drop(logins);
    let galen = start_galen(store.clone()).await?;

    let executable = std::env::current_exe().context("locating the galen binary")?;
    let mut child = tokio::process::Command::new(executable)
        .args(["bench", "mqtt", "--idle"])
        .arg(connections.to_string())
        .arg("--idle-client")
        .arg(galen.mqtt.to_string())
        .arg("--run-id")
        .arg(&run)
        .arg("--protocol")
        .arg(args.protocol.to_string())
        .env(KEY_VARIABLE, &key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the idle clients' process")?;
    let mut to_child = child.stdin.take().context("child stdin")?;
    let mut from_child =
        tokio::io::BufReader::new(child.stdout.take().context("child stdout")?).lines();

    // Resident memory of both processes: with nothing connected, then with the first half open
    // (which also pays the allocators' and runtime's warm-up), then with all open. The second
    // half's growth is the steady cost of a connection.
    let settle = Duration::from_secs(2);
    tokio::time::sleep(settle).await;
    let mut server = vec![resident_kib().context("reading VmRSS")?];
    let mut client = vec![child_rss(&mut to_child, &mut from_child).await?];
    let mut seconds = 0.0;
    for half in [connections / 2, connections - connections / 2] {
        to_child
            .write_all(format!("open {half}\n").as_bytes())
            .await?;
        // "opened <total> <seconds> <client RSS KiB>"
        let line = child_line(&mut from_child).await?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ["opened", _, took, rss] = fields[..] else {
            bail!("unexpected answer from the idle clients: {line:?}");
        };
        seconds += took.parse::<f64>()?;
        // Let every connection task reach its idle read, then measure.
        tokio::time::sleep(settle).await;
        server.push(resident_kib().context("reading VmRSS")?);
        client.push(rss.parse()?);
    }
    let open = galen.app.metrics().open_connections("mqtt");
    to_child.write_all(b"ping\n").await?;
    // "pong <answered> <silent>"
    let line = child_line(&mut from_child).await?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let ["pong", answered, silent] = fields[..] else {
        bail!("unexpected answer from the idle clients: {line:?}");
    };
    let (answered, silent): (usize, usize) = (answered.parse()?, silent.parse()?);
    let open_after_ping = galen.app.metrics().open_connections("mqtt");
    drop(to_child);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    // With the connections gone: what the server gives back.
    tokio::time::sleep(settle).await;
    let closed = resident_kib().context("reading VmRSS")?;
    galen.stop().await?;

    let bytes = |from: u64, to: u64, count: usize| {
        (to.saturating_sub(from)) as f64 * 1024.0 / count.max(1) as f64
    };
    let (first, second) = (connections / 2, connections - connections / 2);
    println!(
        "galen: {connections} idle authenticated MQTT {} connections (keep-alive {IDLE_KEEP_ALIVE} s), opened in {seconds:.1} s by a separate client process",
        protocol_name(args.protocol)
    );
    println!(
        "  server process resident memory: {:.1} MiB with none open, {:.1} MiB with {first}, {:.1} MiB with {connections}; \
         after they closed {:.1} MiB",
        mib(server[0]),
        mib(server[1]),
        mib(server[2]),
        mib(closed)
    );
    println!(
        "  per connection: {:.0} bytes over all {connections} (first half {:.0}, including warm-up; second half {:.0} = the steady cost)",
        bytes(server[0], server[2], connections),
        bytes(server[0], server[1], first),
        bytes(server[1], server[2], second)
    );
    println!(
        "  client process, for comparison (a bare tokio TcpStream each): {:.0} bytes per connection (second half)",
        bytes(client[1], client[2], second)
    );
    println!(
        "  still connected: the server counted {open} open before and {open_after_ping} after the check; \
         {answered} of {connections} answered PINGREQ with PINGRESP, {silent} did not"
    );
    if answered != connections || open != connections as i64 {
        bail!("not every connection stayed open");
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The idle clients' resident memory, KiB (asks with `rss`).
async fn child_rss(
    to_child: &mut tokio::process::ChildStdin,
    from_child: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Result<u64> {
    to_child.write_all(b"rss\n").await?;
    let line = child_line(from_child).await?;
    line.strip_prefix("rss ")
        .and_then(|kib| kib.trim().parse().ok())
        .with_context(|| format!("unexpected answer from the idle clients: {line:?}"))
}

/// The next line from the idle clients' process.
async fn child_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("the idle clients did not answer within 10 minutes")??
        .context("the idle clients' process ended early")
}

/// The idle clients' process. Commands on standard input: `rss` (answers `rss <KiB>`), `open N`
/// (opens N more connections; answers `opened <total> <seconds> <KiB>`), `ping` (a PINGREQ on
/// every connection; answers `pong <answered> <silent>`). It exits when its input closes.
async fn idle_clients(target: SocketAddr, args: &MqttArgs) -> Result<()> {
    let connections = args.idle.context("--idle is required with --idle-client")?;
    let run = args
        .run_id
        .clone()
        .context("--run-id is required with --idle-client")?;
    let key = std::env::var(KEY_VARIABLE).with_context(|| format!("{KEY_VARIABLE} is not set"))?;
    ensure_open_files(connections + 256)?;
    // Commands come on standard input, read on a thread of its own; its end ends the process.
    let (sender, mut commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut streams: Vec<TcpStream> = Vec::with_capacity(connections);
    while let Some(command) = commands.recv().await {
        let command = command.trim();
        if command == "rss" {
            println!("rss {}", resident_kib().unwrap_or(0));
        } else if let Some(count) = command.strip_prefix("open ") {
            let count: usize = count.parse().context("open N")?;
            let first = streams.len();
            let logins: Vec<(usize, Login)> = (first..first + count)
                .map(|index| (index, login(&run, &key, index)))
                .collect();
            let began = Instant::now();
            streams.extend(open_all(target, &logins, args.protocol, IDLE_KEEP_ALIVE, 1).await?);
            println!(
                "opened {} {:.1} {}",
                streams.len(),
                began.elapsed().as_secs_f64(),
                resident_kib().unwrap_or(0)
            );
        } else if command == "ping" {
            let mut tasks = tokio::task::JoinSet::new();
            for (position, mut stream) in streams.drain(..).enumerate() {
                tasks.spawn(async move {
                    let answered = async {
                        stream.write_all(&[0xC0, 0x00]).await?;
                        let mut reply = [0u8; 2];
                        stream.read_exact(&mut reply).await?;
                        Ok::<_, anyhow::Error>(reply == [0xD0, 0x00])
                    };
                    let answered = matches!(
                        tokio::time::timeout(Duration::from_secs(30), answered).await,
                        Ok(Ok(true))
                    );
                    (position, stream, answered)
                });
            }
            let mut back = Vec::with_capacity(tasks.len());
            let mut answered = 0usize;
            while let Some(joined) = tasks.join_next().await {
                let (position, stream, ok) = joined?;
                answered += usize::from(ok);
                back.push((position, stream));
            }
            back.sort_unstable_by_key(|(position, _)| *position);
            let total = back.len();
            streams = back.into_iter().map(|(_, stream)| stream).collect();
            println!("pong {answered} {}", total - answered);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// The pid of the one process called `name`, if there is exactly one.
fn process_named(name: &str) -> Option<u32> {
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|text| text.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        {
            if found.is_some() {
                return None;
            }
            found = Some(pid);
        }
    }
    found
}

/// Makes sure this process may open `needed` files: raises the soft limit up to the hard one
/// with util-linux `prlimit` if it is lower (the standard library cannot set limits), and
/// otherwise says which `ulimit -n` to run first.
fn ensure_open_files(needed: usize) -> Result<()> {
    let Some((soft, hard)) = open_file_limits() else {
        return Ok(());
    };
    if soft >= needed as u64 {
        return Ok(());
    }
    if hard >= needed as u64 {
        let raised = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={needed}:{hard}"))
            .status();
        if raised.is_ok_and(|status| status.success())
            && open_file_limits().is_some_and(|(soft, _)| soft >= needed as u64)
        {
            println!("raised the open-file limit from {soft} to {needed}");
            return Ok(());
        }
    }
    bail!(
        "this run needs {needed} open files but the limit is {soft} (hard limit {hard}); run `ulimit -n {needed}` in this shell first"
    )
}

/// (soft, hard) limits of open files of this process, from /proc/self/limits.
fn open_file_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let parse = |word: Option<&str>| match word {
        Some("unlimited") => Some(u64::MAX),
        Some(number) => number.parse().ok(),
        None => None,
    };
    Some((parse(numbers.next())?, parse(numbers.next())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339() {
        for micros in [
            0,
            1_795_392_000_123_456,
            951_782_400_000_001,   // 2000-02-29
            4_102_444_799_999_999, // 2099-12-31T23:59:59.999999
            -1,
        ] {
            let mut text = *b"0000-00-00T00:00:00.000000Z";
            write_time(&mut text[..TIME_WIDTH], micros);
            let text = std::str::from_utf8(&text).expect("ascii");
            assert_eq!(
                Timestamp::parse_rfc3339(text).expect(text).micros(),
                micros,
                "{text}"
            );
        }
    }

    #[test]
    fn template_messages_differ_only_where_patched() {
        let first = Timestamp::from_micros(1_795_392_000_000_000);
        for protocol in [4, 5] {
            let mut template = Template::new("MQB-x-00001", protocol, first).expect("template");
            let mut out = Vec::new();
            template.append(7, &mut out);
            template.append(300, &mut out);
            let one = out.len() / 2;
            let mut buffer = BytesMut::from(&out[..]);
            for (packet_id, time) in [(7, first), (300, first.add_micros(TIME_STEP_MICROS))] {
                let Some(Packet::Publish(publish)) =
                    next_packet(&mut buffer, 1 << 20, protocol).expect("decodes")
                else {
                    panic!("not a PUBLISH");
                };
                assert_eq!(publish.packet_id, Some(packet_id));
                assert_eq!(
                    publish.topic_name,
                    "galen/v1/devices/MQB-x-00001/measurements"
                );
                let body: serde_json::Value =
                    serde_json::from_slice(&publish.payload).expect("JSON");
                let sent = body["time"].as_str().expect("a time");
                assert_eq!(
                    Timestamp::parse_rfc3339(sent).expect("RFC 3339"),
                    time,
                    "{body}"
                );
                assert_eq!(body["value"], 60 + (packet_id != 7) as i64, "{body}");
            }
            assert_eq!(out.len(), one * 2);
        }
    }

    #[test]
    fn limits_and_cpu_are_read() {
        assert!(open_file_limits().is_some());
        assert!(cpu_seconds("/proc/self/stat").is_some());
        assert!(cpu_seconds("/proc/thread-self/stat").is_some());
    }
}
