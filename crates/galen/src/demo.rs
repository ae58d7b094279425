//! `galen demo`: the server with an embedded store, 24 simulated patients on two wards, each with
//! a monitor, and the simulator feeding the ingest pipeline in-process. Open access: demo only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use galen_clinical::{Consciousness, EntryKind, Oxygen};
use galen_model::{
    Clock, DeviceKind, DeviceStatus, HumanName, Identifier, NewAssignment, NewDevice, NewPatient,
    PatientId, Sex, SystemClock, Timestamp,
};
use galen_server::{App, Incoming, Pipeline, ServerConfig};
use galen_sim::{Reading, Scenario, SimConfig, Simulator, demo_scenarios};
use galen_store::Store;

use crate::ListenAddr;
use crate::config::{DEFAULT_DATA_DIR, LogFormat, default_addr};

/// Flags of `galen demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address and port of the HTTP listener (port 0 picks a free one).
    #[arg(long, env = "GALEN_HTTP_ADDR", default_value_t = default_addr())]
    http_addr: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "GALEN_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Number of simulated patients (half on ward A, half on ward B).
    #[arg(long, default_value_t = 24)]
    patients: usize,
    /// Vital-sign sets per patient per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 2017)]
    seed: u64,
    /// Log format.
    #[arg(long, env = "GALEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// HL7 v2 (MLLP) listener, e.g. 127.0.0.1:2575 [default: off in the demo].
    #[arg(long, env = "GALEN_MLLP_ADDR", default_value_t = ListenAddr::Off)]
    mllp_addr: ListenAddr,
    /// MQTT listener, e.g. 127.0.0.1:1883; open to anonymous devices in the demo [default: off].
    #[arg(long, env = "GALEN_MQTT_ADDR", default_value_t = ListenAddr::Off)]
    mqtt_addr: ListenAddr,
    /// Directory of mapping templates for device payloads (e.g. ./templates).
    #[arg(long, env = "GALEN_TEMPLATES")]
    templates: Option<PathBuf>,
}

const GIVEN: [&str; 24] = [
    "Ada", "Brian", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Luca", "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera",
    "Wen", "Yusuf",
];
const FAMILY: [&str; 24] = [
    "Marsh",
    "Okafor",
    "Lindqvist",
    "Patel",
    "Novak",
    "Haddad",
    "Byrne",
    "Tanaka",
    "Moreau",
    "Berg",
    "Adeyemi",
    "Romano",
    "Cohen",
    "Larsen",
    "Petrova",
    "Alves",
    "Doyle",
    "Ortega",
    "Nieminen",
    "Singh",
    "Rahman",
    "Kovac",
    "Zhou",
    "Demir",
];

/// The demo's fictional patient `index`: MRN, name, ward and bed.
pub(crate) fn demo_patient(index: usize, patients: usize) -> NewPatient {
    let per_ward = patients.div_ceil(2).max(1);
    let ward = if index < per_ward { "A" } else { "B" };
    let bed = index % per_ward + 1;
    let born = 1935 + (index * 7) % 60;
    NewPatient {
        identifier: Identifier {
            system: "urn:galen:demo:mrn".into(),
            value: format!("MRN-{:04}", index + 1),
        },
        name: HumanName {
            family: FAMILY[index % FAMILY.len()].into(),
            given: GIVEN[index % GIVEN.len()].into(),
        },
        birth_date: NewPatient::parse_birth_date(&format!(
            "{born}-{:02}-{:02}",
            index % 12 + 1,
            index % 28 + 1
        ))
        .unwrap_or(time::Date::MIN),
        sex: if index.is_multiple_of(2) {
            Sex::Female
        } else {
            Sex::Male
        },
        ward: ward.into(),
        bed: format!("{ward}-{bed:02}"),
    }
}

/// Registers patients, monitors and open assignments that are not registered yet, so the demo
/// can restart on the same data directory.
pub(crate) async fn register_demo(
    store: &dyn Store,
    patients: usize,
    now: Timestamp,
) -> Result<()> {
    let known_patients = store.patients(None).await?;
    let known_devices = store.devices().await?;
    let assignments = store.assignments().await?;
    for index in 0..patients {
        let wanted = demo_patient(index, patients);
        let patient = match known_patients
            .iter()
            .find(|patient| patient.details.identifier == wanted.identifier)
        {
            Some(patient) => patient.clone(),
            None => store.create_patient(wanted, Vec::new()).await?,
        };
        let serial = Simulator::device_serial(index);
        let device = match known_devices
            .iter()
            .find(|device| device.details.serial == serial)
        {
            Some(device) => device.clone(),
            None => {
                store
                    .create_device(
                        NewDevice {
                            serial,
                            manufacturer: "Galen Simulator".into(),
                            model: "SIM-MON".into(),
                            kind: DeviceKind::Monitor,
                            status: DeviceStatus::Active,
                        },
                        Vec::new(),
                    )
                    .await?
            }
        };
        let assigned = assignments
            .iter()
            .any(|assignment| assignment.details.device == device.id && assignment.covers(now));
        if !assigned {
            let assignment = NewAssignment {
                device: device.id,
                patient: patient.id,
                start: now.add_seconds(-(HISTORY_HOURS + 1) * 3600),
                end: None,
            };
            match store.create_assignment(assignment, Vec::new()).await {
                // An earlier assignment of this device reaches into the history window: keep it.
                Ok(_) | Err(galen_store::Error::Conflict(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(())
}

/// Hours of history the demo creates on a fresh data directory, so trend charts have a past.
const HISTORY_HOURS: i64 = 6;

/// Fills the last [`HISTORY_HOURS`] with one stable vital-sign set per 30 s per patient (the
/// hours before the storylines start), unless the monitors already have data.
async fn backfill(app: &App, seed: u64, patients: usize, now: Timestamp) -> Result<()> {
    let first_device = app
        .directory()
        .read()
        .device_by_serial(&Simulator::device_serial(0))
        .map(|device| device.id);
    if let Some(device) = first_device
        && !app.store().latest(device).await?.is_empty()
    {
        return Ok(());
    }
    let start = now.add_seconds(-HISTORY_HOURS * 3600);
    let mut history = Simulator::new(SimConfig::uniform(
        seed,
        patients,
        Scenario::Stable,
        // Every 30 s: well inside the 60 s after which a silent monitor raises a technical alarm.
        1.0 / 30.0,
        start.micros(),
    ));
    let readings = history.step(now.add_seconds(-1).micros());
    for chunk in readings.chunks(20_000) {
        let items = chunk.iter().map(|reading| Ok(incoming(reading))).collect();
        app.pipeline().ingest("sim", items).await?;
    }
    tracing::info!(
        readings = readings.len(),
        hours = HISTORY_HOURS,
        "demo history created"
    );
    Ok(())
}

/// A simulated reading as an in-process adapter hands it to the pipeline.
fn incoming(reading: &Reading) -> Incoming<'_> {
    Incoming {
        device: &reading.device_serial,
        code: reading.code,
        value: reading.value,
        unit: reading.unit,
        time: Timestamp::from_micros(reading.time_micros),
        // In-process: no retries to recognise, and ids would collide across restarts.
        id: None,
        raw: b"",
    }
}

/// Feeds the simulator's readings into the pipeline every 250 ms until the process stops.
async fn feed(pipeline: Pipeline, mut simulator: Simulator, clock: Arc<dyn Clock>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let readings = simulator.step(clock.now().micros());
        if readings.is_empty() {
            continue;
        }
        let items = readings
            .iter()
            .map(|reading| Ok(incoming(reading)))
            .collect();
        if let Err(error) = pipeline.ingest("sim", items).await {
            tracing::warn!(%error, "simulated readings not stored");
        }
    }
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    crate::init_logging(args.log_format);
    if !(args.rate.is_finite() && args.rate > 0.0) {
        anyhow::bail!("--rate must be a positive number of vital-sign sets per second");
    }
    let listener = crate::bind(args.http_addr).await?;
    let devices =
        crate::DeviceListeners::bind(args.mllp_addr.addr(), args.mqtt_addr.addr()).await?;
    let store = Arc::new(crate::open_store(args.data_dir.clone()).await?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    register_demo(store.as_ref(), args.patients, now)
        .await
        .context("registering the demo patients")?;
    let config = ServerConfig {
        mqtt: galen_server::MqttSettings {
            anonymous: true,
            ..galen_server::MqttSettings::default()
        },
        // Demo mode is the one place anonymous ingest exists (its listeners are off by default).
        mllp: galen_server::MllpSettings {
            anonymous: true,
            ..galen_server::MllpSettings::default()
        },
        template_dir: args.templates.clone(),
        export_dir: Some(args.data_dir.join("exports")),
        ..ServerConfig::default()
    };
    let app = App::new(store, clock.clone(), config).await?;
    backfill(&app, args.seed, args.patients, now)
        .await
        .context("creating the demo history")?;
    // As a nurse does on admission: level of consciousness and air or oxygen, so NEWS2 is
    // complete (the demo's monitors measure the rest).
    let patients: Vec<PatientId> = app
        .directory()
        .read()
        .patients()
        .into_iter()
        .map(|patient| patient.id)
        .collect();
    for patient in patients {
        for kind in [
            EntryKind::Consciousness(Consciousness::Alert),
            EntryKind::Oxygen(Oxygen::Air),
        ] {
            app.record_entry(patient, "demo nurse", kind, None, Vec::new())
                .await
                .context("entering the demo observations")?;
        }
    }
    let simulator = Simulator::new(SimConfig {
        seed: args.seed,
        scenarios: demo_scenarios(args.patients),
        rate_hz: args.rate,
        start_micros: now.micros(),
        scenario_minutes: 30.0,
    });
    tracing::warn!(
        "demo mode: open access without authentication; never use it with real patients"
    );
    let feeder = tokio::spawn(feed(app.pipeline().clone(), simulator, clock));
    let result = crate::run_server(app, listener, None, devices, "dashboard").await;
    feeder.abort();
    result
}
