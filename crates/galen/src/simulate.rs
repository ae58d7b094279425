//! `galen simulate`: simulated monitors feeding a running Galen the way real devices would.
//!
//! Patients, monitors and assignments are registered over the HTTP API in every case. The vital
//! signs then go either
//! - `--protocol http`: as JSON batches to the API, the way a device gateway would (batches, ids,
//!   retries with back-off), or
//! - `--protocol hl7`: as HL7 v2 ORU^R01 (IHE PCD-01), one message per vital-sign set, over one
//!   persistent MLLP connection per monitor, each message waiting for its ACK before the next.
//!   A message whose ACK does not arrive is sent again with the same control id, so the server
//!   answers a repeat from its receipt and stores nothing twice, or
//! - `--protocol mqtt`: as MQTT 5 devices, each logged in with a credential of its own, one QoS 1
//!   publish per vital-sign set (see `simulate_mqtt`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use galen_hl7v2::mllp::{Decoder, Frame, encode_frame};
use galen_hl7v2::{Delimiters, Message, format_time};
use galen_model::{Clock, NewPatient, SystemClock, Timestamp};
use galen_sim::{Reading, Scenario, SimConfig, Simulator};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

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
    pub(crate) patients: usize,
    /// Vital-sign sets per patient per second.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rate: f64,
    /// Storyline of every patient: stable, sepsis, hypoxia, artefact or dropout.
    #[arg(long, default_value = "stable", value_parser = parse_scenario)]
    pub(crate) scenario: Scenario,
    /// Seed; the same seed gives the same values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub(crate) duration: Option<u64>,
    /// Serial prefix offset: patient i uses the monitor SIM-MON-(i + offset), so several
    /// simulators can drive one server.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// How the monitors send their values: `http` (JSON batches to the API), `hl7` (HL7 v2
    /// ORU^R01 over MLLP to --mllp) or `mqtt` (MQTT 5 to --mqtt, each monitor with a credential of
    /// its own); registration always goes to --target.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    protocol: Protocol,
    /// The server's HL7 v2 (MLLP) listener, for `--protocol hl7`.
    #[arg(long, default_value = "127.0.0.1:2575")]
    pub(crate) mllp: String,
    /// The server's MQTT listener, for `--protocol mqtt`.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub(crate) mqtt: String,
}

/// The device protocol of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// JSON batches to `POST /api/v1/measurements`.
    Http,
    /// HL7 v2 ORU^R01 (IHE PCD-01) over MLLP.
    Hl7,
    /// MQTT 5, QoS 1, one credential per monitor.
    Mqtt,
}

fn parse_scenario(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text).ok_or_else(|| {
        format!("unknown scenario {text:?}; use stable, sepsis, hypoxia, artefact or dropout")
    })
}

/// Registers the monitors, patients and assignments the simulation needs, tolerating ones that
/// exist already; returns each monitor's id and serial, in patient order.
async fn register(
    client: &HttpClient,
    patients: usize,
    offset: usize,
) -> Result<Vec<(i64, String)>> {
    let devices = client.get_json("/api/v1/devices").await?;
    let known_patients = client.get_json("/api/v1/patients").await?;
    let find = |list: &Value, key: &dyn Fn(&Value) -> bool| -> Option<i64> {
        list["items"].as_array()?.iter().find(|item| key(item))?["id"].as_i64()
    };
    let mut monitors = Vec::with_capacity(patients);
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
        monitors.push((device, serial));
    }
    Ok(monitors)
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
    let monitors = register(&client, args.patients, args.offset)
        .await
        .context("registering simulated devices and patients")?;
    let now = SystemClock.now();
    let simulator = Simulator::new(SimConfig::uniform(
        args.seed,
        args.patients,
        args.scenario,
        args.rate,
        now.micros(),
    ));
    match args.protocol {
        Protocol::Http => send_http(&args, &client, simulator, now).await,
        Protocol::Hl7 => send_hl7(&args, simulator, now).await,
        Protocol::Mqtt => {
            crate::simulate_mqtt::send_mqtt(&args, &client, &monitors, simulator, now).await
        }
    }
}

/// Stops a simulation: Ctrl-C, or the end of `--duration`.
pub(crate) struct Stopping {
    deadline: Option<Instant>,
    ticker: tokio::time::Interval,
}

impl Stopping {
    pub(crate) fn new(started: Instant, duration: Option<u64>) -> Stopping {
        Stopping {
            deadline: duration.map(|seconds| started + Duration::from_secs(seconds)),
            ticker: tokio::time::interval(Duration::from_millis(200)),
        }
    }

    /// Waits for the next 200 ms tick; false when the simulation should end.
    pub(crate) async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => {},
            _ = tokio::signal::ctrl_c() => return false,
        }
        self.deadline
            .is_none_or(|deadline| Instant::now() < deadline)
    }
}

/// `--protocol http`: the readings of each tick as one JSON batch, retried until answered.
async fn send_http(
    args: &SimulateArgs,
    client: &HttpClient,
    mut simulator: Simulator,
    now: Timestamp,
) -> Result<()> {
    let started = Instant::now();
    let mut stopping = Stopping::new(started, args.duration);
    let (mut sent, mut accepted, mut duplicates, mut rejected) = (0usize, 0u64, 0u64, 0u64);
    let mut report = Instant::now();
    println!(
        "galen simulate: {} patients, scenario {}, {} sets/s each -> {}",
        args.patients, args.scenario, args.rate, args.target
    );
    while stopping.tick().await {
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

/// The IEEE 11073 MDC observation identifier and unit (`code^reference id^MDC`) an IHE PCD-01
/// monitor writes in OBX-3 and OBX-6 for a Galen vital code, if it is one of the simulated ones.
fn mdc_metric(code: &str) -> Option<(&'static str, &'static str)> {
    let metric = match code {
        "heart_rate" => (
            "147842^MDC_ECG_HEART_RATE^MDC",
            "264864^MDC_DIM_BEAT_PER_MIN^MDC",
        ),
        "spo2" => (
            "150456^MDC_PULS_OXIM_SAT_O2^MDC",
            "262688^MDC_DIM_PERCENT^MDC",
        ),
        "respiratory_rate" => (
            "151562^MDC_RESP_RATE^MDC",
            "264928^MDC_DIM_RESP_PER_MIN^MDC",
        ),
        "temperature" => ("150364^MDC_TEMP_BODY^MDC", "268192^MDC_DIM_DEGC^MDC"),
        "systolic_bp" => (
            "150021^MDC_PRESS_BLD_NONINV_SYS^MDC",
            "266016^MDC_DIM_MMHG^MDC",
        ),
        "diastolic_bp" => (
            "150022^MDC_PRESS_BLD_NONINV_DIA^MDC",
            "266016^MDC_DIM_MMHG^MDC",
        ),
        _ => return None,
    };
    Some(metric)
}

/// One value of an HL7 report: Galen vital code, value, UCUM unit, time (µs since the epoch).
pub(crate) type Hl7Value<'a> = (&'a str, f64, &'a str, i64);

/// An IHE PCD-01 ORU^R01 from the monitor `serial` (its EUI-64 in MSH-3.2 and OBX-18) about
/// `patient` (PID-3 and PID-5), with control id `control`, sent at `sent_micros`: MSH, PID, OBR, the MDS
/// containment row, then one OBX per value. Segments end with CR.
///
/// MSH-15 and MSH-16 stay empty: original-mode acknowledgement, one AA/AE/AR per message.
/// (Many PCD-01 monitors send `AL` and `NE` there, enhanced mode, and get CA/CE/CR instead.)
pub(crate) fn pcd01_report<'a>(
    serial: &str,
    patient: Option<&NewPatient>,
    control: &str,
    sent_micros: i64,
    values: impl IntoIterator<Item = Hl7Value<'a>>,
) -> String {
    let delimiters = Delimiters::default();
    let escape = |text: &str| delimiters.escape(text);
    let serial = escape(serial);
    let control = escape(control);
    let sent = format_time(sent_micros);
    let mut text = String::with_capacity(1024);
    // Writing into a String cannot fail.
    let _ = write!(
        text,
        "MSH|^~\\&|GALEN-SIM^{serial}^EUI-64|SIMULATOR|GALEN|GALEN|{sent}||ORU^R01^ORU_R01|{control}|P|2.6|||||||||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r"
    );
    if let Some(patient) = patient {
        let _ = write!(
            text,
            "PID|||{}^^^{}^MR||{}^{}\r",
            escape(&patient.identifier.value),
            escape(&patient.identifier.system),
            escape(&patient.name.family),
            escape(&patient.name.given)
        );
    }
    let _ = write!(
        text,
        "OBR|1|{control}^GALEN-SIM^{serial}^EUI-64||182777000^monitoring of patient^SCT|||{sent}\r\
         OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||{serial}^EUI-64\r"
    );
    for (index, (code, value, unit, time)) in values.into_iter().enumerate() {
        let (identifier, unit) = match mdc_metric(code) {
            Some((identifier, unit)) => (identifier.to_owned(), unit.to_owned()),
            None => (escape(code), escape(unit)),
        };
        let _ = write!(
            text,
            "OBX|{}|NM|{identifier}|1.1.1.{}|{value}|{unit}|||||F|||{}||||{serial}^EUI-64\r",
            index + 2,
            index + 1,
            format_time(time)
        );
    }
    text
}

/// The ACK codes seen by an HL7 simulation.
#[derive(Debug, Default)]
struct Hl7Counts {
    messages: AtomicU64,
    observations: AtomicU64,
    accepted: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    /// ACKs with another MSA-1 (commit ACKs, which original mode should not produce).
    other: AtomicU64,
    /// Messages sent again after a connection failed or an ACK did not come.
    resent: AtomicU64,
}

impl Hl7Counts {
    fn summary(&self) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "sent {} messages ({} OBX): AA {}, AE {}, AR {}, other {}, resent {}",
            load(&self.messages),
            load(&self.observations),
            load(&self.accepted),
            load(&self.errors),
            load(&self.rejected),
            load(&self.other),
            load(&self.resent)
        )
    }
}

/// One vital-sign set as an MLLP frame.
struct Hl7Job {
    control: String,
    frame: Vec<u8>,
    observations: u64,
}

/// How long to wait for an ACK before the connection is considered dead.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// An open MLLP connection and what has been read from it.
struct MllpConnection {
    stream: TcpStream,
    decoder: Decoder,
    buffer: Vec<u8>,
}

impl MllpConnection {
    async fn open(address: &str) -> Result<MllpConnection> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(address))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {address} timed out"))?
            .with_context(|| format!("connecting to the MLLP listener at {address}"))?;
        stream.set_nodelay(true)?;
        Ok(MllpConnection {
            stream,
            decoder: Decoder::new(1 << 20),
            buffer: vec![0; 16 * 1024],
        })
    }

    /// Sends one framed message and returns the ACK's text.
    async fn exchange(&mut self, frame: &[u8]) -> Result<String> {
        self.stream.write_all(frame).await?;
        self.next_ack().await
    }

    /// The next ACK frame's text.
    async fn next_ack(&mut self) -> Result<String> {
        loop {
            match self.decoder.next_frame() {
                Some(Frame::Message(bytes)) => {
                    return String::from_utf8(bytes).context("the ACK is not UTF-8");
                }
                Some(other) => bail!("unexpected bytes from the server: {other:?}"),
                None => {}
            }
            let read = tokio::time::timeout(ACK_TIMEOUT, self.stream.read(&mut self.buffer))
                .await
                .map_err(|_| anyhow::anyhow!("no ACK within {} s", ACK_TIMEOUT.as_secs()))??;
            if read == 0 {
                bail!("the server closed the connection");
            }
            self.decoder.push(&self.buffer[..read]);
        }
    }
}

/// MSA-1 and MSA-2 of an ACK.
fn read_ack(text: &str) -> Result<(String, String)> {
    let message =
        Message::parse(text).map_err(|error| anyhow::anyhow!("unreadable ACK: {error}"))?;
    let msa = message
        .segment("MSA")
        .with_context(|| format!("no MSA in the ACK {text:?}"))?;
    Ok((
        message.value(msa.raw(1)).into_owned(),
        message.value(msa.raw(2)).into_owned(),
    ))
}

/// Sends one monitor's messages in order over one connection, each after the previous one's
/// ACK; reconnects and resends (same control id) when the connection fails.
async fn mllp_sender(address: String, mut jobs: mpsc::Receiver<Hl7Job>, counts: Arc<Hl7Counts>) {
    let mut connection: Option<MllpConnection> = None;
    while let Some(job) = jobs.recv().await {
        let mut backoff = Duration::from_millis(100);
        let code = loop {
            let answer = match connection.as_mut() {
                Some(open) => open.exchange(&job.frame).await,
                None => match MllpConnection::open(&address).await {
                    Ok(open) => connection.insert(open).exchange(&job.frame).await,
                    Err(error) => Err(error),
                },
            };
            match answer.and_then(|ack| read_ack(&ack)) {
                Ok((code, control)) if control == job.control => break code,
                Ok((code, control)) => {
                    tracing::warn!(%code, %control, expected = %job.control, "ACK for another message; reconnecting");
                }
                Err(error) => {
                    tracing::warn!(%error, "MLLP exchange failed; resending the same message")
                }
            }
            connection = None;
            counts.resent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        let counter = match code.as_str() {
            "AA" => &counts.accepted,
            "AE" => &counts.errors,
            "AR" => &counts.rejected,
            _ => &counts.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        counts.messages.fetch_add(1, Ordering::Relaxed);
        counts
            .observations
            .fetch_add(job.observations, Ordering::Relaxed);
    }
}

/// `--protocol hl7`: each vital-sign set as one ORU^R01 on its monitor's own MLLP connection.
async fn send_hl7(args: &SimulateArgs, mut simulator: Simulator, now: Timestamp) -> Result<()> {
    // Fail early, and clearly, when nothing listens there.
    MllpConnection::open(&args.mllp).await.with_context(|| {
        format!(
            "is the server listening for HL7 v2 at {} (galen serve --mllp-addr)?",
            args.mllp
        )
    })?;
    let run = now.micros() / 1_000_000;
    let counts = Arc::new(Hl7Counts::default());
    let mut senders = Vec::with_capacity(args.patients);
    let mut tasks = Vec::with_capacity(args.patients);
    for _ in 0..args.patients {
        // A few sets of slack; a slow server then slows the simulation instead of queueing.
        let (sender, jobs) = mpsc::channel(16);
        senders.push(sender);
        tasks.push(tokio::spawn(mllp_sender(
            args.mllp.clone(),
            jobs,
            counts.clone(),
        )));
    }
    let patients: Vec<NewPatient> = (0..args.patients)
        .map(|index| crate::demo::demo_patient(index + args.offset, args.offset + args.patients))
        .collect();
    let started = Instant::now();
    let mut stopping = Stopping::new(started, args.duration);
    let mut report = Instant::now();
    println!(
        "galen simulate: {} patients, scenario {}, {} sets/s each -> mllp://{}",
        args.patients, args.scenario, args.rate, args.mllp
    );
    while stopping.tick().await {
        let readings = simulator.step(SystemClock.now().micros());
        // A set is the run of readings of one patient at one time (the simulator emits a set's
        // readings together).
        for set in readings.chunk_by(|left, right| {
            left.patient_index == right.patient_index && left.time_micros == right.time_micros
        }) {
            let first = &set[0];
            let serial = Simulator::device_serial(first.patient_index + args.offset);
            let control = format!("{run}-{}", first.id);
            let text = pcd01_report(
                &serial,
                patients.get(first.patient_index),
                &control,
                SystemClock.now().micros(),
                set.iter().map(|reading| {
                    (
                        reading.code,
                        reading.value,
                        reading.unit,
                        reading.time_micros,
                    )
                }),
            );
            let job = Hl7Job {
                control,
                frame: encode_frame(text.as_bytes()),
                observations: set.len() as u64,
            };
            let Some(sender) = senders.get(first.patient_index) else {
                continue;
            };
            if sender.send(job).await.is_err() {
                bail!("the MLLP sender of {serial} stopped");
            }
        }
        if report.elapsed() >= Duration::from_secs(10) {
            println!("{}", counts.summary());
            report = Instant::now();
        }
    }
    // Let every sender finish the sets it holds (each waits for its ACKs), but not forever.
    drop(senders);
    let waiting = async {
        for task in &mut tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .is_err()
    {
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        tracing::warn!("some HL7 messages were still unacknowledged after 30 s; giving up");
    }
    println!(
        "done after {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        counts.summary()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcd01_reports_read_back_cleanly() {
        let mut patient = crate::demo::demo_patient(3, 8);
        patient.identifier.value = "MRN^1".into();
        let time = 1_795_420_800_000_000;
        let text = pcd01_report(
            "SIM-MON-0003",
            Some(&patient),
            "17-SIM-MON-0003-0",
            time + 500_000,
            [
                ("heart_rate", 72.0, "/min", time),
                ("temperature", 36.8, "Cel", time),
                ("systolic_bp", 121.0, "mm[Hg]", time),
            ],
        );
        let message = Message::parse(&text).expect("parse");
        let report = galen_hl7v2::read_oru(&message).expect("an ORU^R01");
        assert_eq!(report.diagnostics, [], "{text}");
        assert_eq!(report.header.sending_device_id, "SIM-MON-0003");
        assert_eq!(report.header.control_id, "17-SIM-MON-0003-0");
        assert_eq!(report.patient.expect("PID-3").id, "MRN^1", "escaped");
        let read: Vec<(String, f64, String, i64, String)> = report
            .observations
            .iter()
            .map(|observation| {
                let value = match observation.value {
                    galen_hl7v2::ObservationValue::Number(number) => number,
                    _ => f64::NAN,
                };
                (
                    observation.code_text.clone(),
                    value,
                    observation.unit_text.clone(),
                    observation.time.map_or(0, |time| time.micros),
                    observation.equipment.clone(),
                )
            })
            .collect();
        let expect = |code: &str, value: f64, unit: &str| {
            (
                code.to_owned(),
                value,
                unit.to_owned(),
                time,
                "SIM-MON-0003".to_owned(),
            )
        };
        assert_eq!(
            read,
            [
                expect("MDC_ECG_HEART_RATE", 72.0, "MDC_DIM_BEAT_PER_MIN"),
                expect("MDC_TEMP_BODY", 36.8, "MDC_DIM_DEGC"),
                expect("MDC_PRESS_BLD_NONINV_SYS", 121.0, "MDC_DIM_MMHG"),
            ]
        );
    }
}
