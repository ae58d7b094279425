//! FHIR Bulk Data export (`$export`, Bulk Data Access IG 2.0): system, `Patient` and
//! `Group/[ward]` levels, `_type` and `_since`, asynchronous.
//!
//! Kick-off (`Prefer: respond-async`) answers `202` with the status URL in `Content-Location`
//! and starts a job that writes one NDJSON file per resource type into the export directory.
//! Polling the status answers `202` with `X-Progress` while it runs, then `200` with the manifest
//! (file URLs and counts); `DELETE` on the status URL cancels the job and removes its files.
//! Files are fetched from `$export-file/{job}/{Type}.ndjson` with the same token.
//!
//! Types: `Patient`, `Device`, `Observation` (vital signs, then the clinical engine's stored
//! early-warning scores, category `survey`, in the same file) and `Flag` (alarms).
//!
//! Memory stays bounded whatever the data size: vital signs are read one device and one day of
//! series at a time (all vital signs of that day together, so blood pressure panels form), scores
//! one patient and table at a time in pages of stored records, alarms one patient at a time in
//! pages of the alarm log (holding only the histories of alarms open at once), and everything is
//! written out line by line. Levels:
//! - system: every Patient, every Device, every Observation (unassigned data included), the
//!   scores and Flags of every patient;
//! - `Patient/$export`: every Patient, the Devices assigned to them, the Observations attributed
//!   to them, their scores and Flags;
//! - `Group/{ward}/$export`: as `Patient`, for the patients of one ward (Galen's groups are its
//!   wards; the id is the ward's name).
//!
//! `_since` keeps vital-sign Observations whose effective time is at or after it (measurements
//! are never updated, so for them this is the time they became part of the record, give or take
//! transport delay), scores whose effective time (the time of the input that changed the score)
//! is at or after it (scores are never updated either), and Flags whose last transition before
//! the transaction time (`meta.lastUpdated`) is at or after it, so an alarm raised earlier and
//! acknowledged or resolved since is exported, whole. Patients and Devices carry no change time
//! in Galen and are always exported whole.
//!
//! The job first waits until the clinical engine has stored everything it evaluated so far, so
//! the scores and transitions of data committed before the kick-off are in the export; nothing
//! at or after the transaction time is (transitions after it are left out of the Flags).
//! Jobs live in memory: a restart forgets them (their status URL then answers 404 and the client
//! starts again); files of finished jobs are removed after [`KEEP_FINISHED`].
//!
//! **Whose job.** A job answers only the account that started it: for anyone else its status,
//! files and cancellation are 404.
//!
//! **Consent.** An export by an account with an organisation is a disclosure to it, a
//! researcher's export a disclosure for research ([`Disclosure::of`]). Before anything is
//! written, each patient of the export is decided on by their consents
//! ([`crate::consent::Consents::decide`]) and every decision is audited (one record per patient);
//! when the records cannot be written the job fails and nothing is exported. Withheld patients
//! are left out whole (Patient, Observations, scores, Flags; Devices lose the reference to them),
//! and the manifest reports how many and why ([`CONSENT_EXTENSION`], and an OperationOutcome in
//! `error`), never who.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use galen_fhir::IssueType;
use galen_fhir::observation::{Reading, VitalReading, group_readings};
use galen_fhir::registry::{device_to_fhir, patient_to_fhir};
use galen_model::{DeviceId, PatientId, Timestamp, VitalSign};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{FhirError, FhirResult, base_url};
use crate::App;
use crate::access::Principal;
use crate::consent::{Disclosure, decision_record};

/// The manifest's `extension` member reporting what the patients' consents left out.
const CONSENT_EXTENSION: &str = "https://galen.invalid/fhir/StructureDefinition/export-consent";
/// How long the files of a finished job are kept.
const KEEP_FINISHED: Duration = Duration::from_secs(24 * 3600);
/// One read of a device's series during an export.
const SLICE_MICROS: i64 = 24 * 3600 * 1_000_000;
/// Resource types an export can contain, in file order.
pub(crate) const TYPES: [&str; 4] = ["Patient", "Device", "Observation", "Flag"];

/// The export jobs of this process.
#[derive(Debug, Default)]
pub(crate) struct Exports {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

#[derive(Debug)]
struct Job {
    /// The job's id (its status URL's last segment).
    id: String,
    directory: PathBuf,
    request: String,
    /// Who started it: only they may poll it, fetch its files or cancel it.
    owner: String,
    /// The role it was started in (for the consent decisions' audit records).
    role: &'static str,
    /// Whom the export discloses to and why; `None`: the hospital's own operations.
    disclosure: Option<Disclosure>,
    /// What the patients' consents left out, once decided.
    withheld: Mutex<Option<Withheld>>,
    transaction_time: Timestamp,
    cancelled: AtomicBool,
    /// Resources written so far (all types).
    written: AtomicU64,
    state: Mutex<JobState>,
}

/// The patients an export left out by their consent: how many, and why (by basis code). No ids:
/// the manifest goes to the recipient; the audit trail names the patients.
#[derive(Debug, Clone, Default)]
struct Withheld {
    considered: u64,
    withheld: BTreeSet<PatientId>,
    by_basis: std::collections::BTreeMap<&'static str, u64>,
}

/// The file holding the OperationOutcome that reports withheld patients.
const OUTCOME_FILE: &str = "OperationOutcome";

#[derive(Debug, Clone)]
enum JobState {
    Running,
    Done(Vec<(String, u64)>),
    Failed(String),
}

/// What an export covers.
#[derive(Debug, Clone)]
enum Level {
    System,
    Patients(Option<String>),
}

/// The parameters of a kick-off.
#[derive(Debug, Clone)]
struct Request {
    level: Level,
    types: BTreeSet<&'static str>,
    since: Option<Timestamp>,
}

fn bad_request(message: impl Into<String>) -> FhirError {
    FhirError::new(StatusCode::BAD_REQUEST, IssueType::Invalid, message)
}

/// Reads and checks the kick-off's headers and parameters.
fn read_request(
    level: Level,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> FhirResult<Request> {
    let asynchronous = headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|part| part.trim() == "respond-async"));
    if !asynchronous {
        return Err(bad_request(
            "$export runs asynchronously: send 'Prefer: respond-async'",
        ));
    }
    super::check_accept(headers)?;
    let mut types: BTreeSet<&'static str> = TYPES.into_iter().collect();
    let mut since = None;
    for (name, value) in params {
        match name.as_str() {
            "_outputFormat" => {
                if !matches!(
                    value.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) {
                    return Err(bad_request(format!(
                        "_outputFormat {value:?} is not supported; Galen writes application/fhir+ndjson"
                    )));
                }
            }
            "_type" => {
                let mut wanted = BTreeSet::new();
                for name in value.split(',').map(str::trim) {
                    let Some(known) = TYPES.iter().find(|known| **known == name) else {
                        return Err(bad_request(format!(
                            "_type {name:?} is not exported; Galen exports Patient, Device, Observation and Flag"
                        )));
                    };
                    wanted.insert(*known);
                }
                types = types.intersection(&wanted).copied().collect();
            }
            "_since" => {
                let instant = Timestamp::parse_rfc3339(value).map_err(|_| {
                    bad_request("_since is not a FHIR instant such as 2026-11-01T00:00:00Z")
                })?;
                since = Some(instant);
            }
            other => {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!(
                        "{other} is not a $export parameter Galen supports (_type, _since, _outputFormat)"
                    ),
                ));
            }
        }
    }
    Ok(Request {
        level,
        types,
        since,
    })
}

fn random_id() -> FhirResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "the system random generator failed",
        )
    })?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Starts a job and answers `202` with its status URL.
async fn kick_off(
    app: App,
    principal: Principal,
    level: Level,
    headers: HeaderMap,
    params: Vec<(String, String)>,
    request_path: &str,
) -> FhirResult<Response> {
    let request = read_request(level, &headers, &params)?;
    if let Level::Patients(Some(ward)) = &request.level {
        let known = app
            .0
            .directory
            .read()
            .patients()
            .iter()
            .any(|patient| &patient.details.ward == ward);
        if !known {
            return Err(FhirError::not_found("Group"));
        }
    }
    let id = random_id()?;
    let directory = app.0.config.export_dir().join(&id);
    tokio::fs::create_dir_all(&directory)
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot create the export directory");
            FhirError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                IssueType::Exception,
                "the export could not be started",
            )
        })?;
    let base = base_url(&headers);
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    let job = Arc::new(Job {
        id: id.clone(),
        directory,
        owner: principal.actor.clone(),
        role: principal.role.code(),
        disclosure: Disclosure::of(&principal),
        withheld: Mutex::new(None),
        request: if query.is_empty() {
            format!("{base}{request_path}")
        } else {
            format!("{base}{request_path}?{query}")
        },
        transaction_time: app.0.clock.now(),
        cancelled: AtomicBool::new(false),
        written: AtomicU64::new(0),
        state: Mutex::new(JobState::Running),
    });
    app.0
        .exports
        .jobs
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .insert(id.clone(), job.clone());
    tracing::info!(job = %id, "bulk export started");
    tokio::spawn(run(app.clone(), id.clone(), job, request));
    let mut answer = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("{base}/$export-status/{id}")) {
        answer.insert(header::CONTENT_LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, answer).into_response())
}

pub(crate) async fn system(
    State(app): State<App>,
    principal: Principal,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    kick_off(app, principal, Level::System, headers, params, "/$export").await
}

pub(crate) async fn patients(
    State(app): State<App>,
    principal: Principal,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    kick_off(
        app,
        principal,
        Level::Patients(None),
        headers,
        params,
        "/Patient/$export",
    )
    .await
}

pub(crate) async fn group(
    State(app): State<App>,
    principal: Principal,
    Path(ward): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    let path = format!("/Group/{ward}/$export");
    kick_off(
        app,
        principal,
        Level::Patients(Some(ward)),
        headers,
        params,
        &path,
    )
    .await
}

/// The job `id`, if `principal` started it (another caller's job is as unknown as a missing one).
fn job(app: &App, principal: &Principal, id: &str) -> FhirResult<Arc<Job>> {
    app.0
        .exports
        .jobs
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .get(id)
        .filter(|job| job.owner == principal.actor)
        .cloned()
        .ok_or_else(|| FhirError::not_found("export job"))
}

pub(crate) async fn status(
    State(app): State<App>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    let job = job(&app, &principal, &id)?;
    let state = job
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    match state {
        JobState::Running => {
            let mut answer = HeaderMap::new();
            let progress = format!("{} resources written", job.written.load(Ordering::Relaxed));
            if let Ok(value) = HeaderValue::from_str(&progress) {
                answer.insert("x-progress", value);
            }
            answer.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            Ok((StatusCode::ACCEPTED, answer).into_response())
        }
        JobState::Failed(message) => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            message,
        )),
        JobState::Done(files) => {
            let base = base_url(&headers);
            let output: Vec<_> = files
                .iter()
                .map(|(kind, count)| {
                    json!({
                        "type": kind,
                        "url": format!("{base}/$export-file/{id}/{kind}.ndjson"),
                        "count": count,
                    })
                })
                .collect();
            let withheld = job
                .withheld
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone();
            let mut error = Vec::new();
            if withheld
                .as_ref()
                .is_some_and(|withheld| !withheld.withheld.is_empty())
            {
                error.push(json!({
                    "type": OUTCOME_FILE,
                    "url": format!("{base}/$export-file/{id}/{OUTCOME_FILE}.ndjson"),
                    "count": 1,
                }));
            }
            let mut manifest = json!({
                "transactionTime": job.transaction_time.to_rfc3339(),
                "request": job.request,
                "requiresAccessToken": true,
                "output": output,
                "error": error,
            });
            // Bulk Data IG 2.0 reserves `extension` in the manifest for servers' own members.
            if let (Some(disclosure), Some(withheld)) = (&job.disclosure, &withheld) {
                manifest["extension"] = json!({
                    CONSENT_EXTENSION: {
                        "purpose": disclosure.purpose.code(),
                        "recipient": disclosure.recipient.as_ref().map(ToString::to_string),
                        "patientsConsidered": withheld.considered,
                        "patientsWithheld": withheld.withheld.len(),
                        "withheldBy": withheld.by_basis,
                    }
                });
            }
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                manifest.to_string(),
            )
                .into_response())
        }
    }
}

pub(crate) async fn cancel(
    State(app): State<App>,
    principal: Principal,
    Path(id): Path<String>,
) -> FhirResult<Response> {
    let job = {
        let mut jobs = app
            .0
            .exports
            .jobs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if jobs.get(&id).is_none_or(|job| job.owner != principal.actor) {
            return Err(FhirError::not_found("export job"));
        }
        jobs.remove(&id)
            .ok_or_else(|| FhirError::not_found("export job"))?
    };
    job.cancelled.store(true, Ordering::Relaxed);
    if let Err(error) = tokio::fs::remove_dir_all(&job.directory).await {
        tracing::warn!(%error, job = %id, "could not remove a cancelled export's files");
    }
    tracing::info!(job = %id, "bulk export cancelled");
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(crate) async fn file(
    State(app): State<App>,
    principal: Principal,
    Path((id, name)): Path<(String, String)>,
) -> FhirResult<Response> {
    let job = job(&app, &principal, &id)?;
    let Some(kind) = name
        .strip_suffix(".ndjson")
        .filter(|kind| TYPES.contains(kind) || *kind == OUTCOME_FILE)
    else {
        return Err(FhirError::not_found("export file"));
    };
    let done = matches!(
        *job.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()),
        JobState::Done(_)
    );
    if !done {
        return Err(FhirError::not_found("export file"));
    }
    let file = tokio::fs::File::open(job.directory.join(format!("{kind}.ndjson")))
        .await
        .map_err(|_| FhirError::not_found("export file"))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/fhir+ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One NDJSON output file being written.
struct Output {
    writer: tokio::io::BufWriter<tokio::fs::File>,
    count: u64,
}

impl Output {
    async fn create(directory: &std::path::Path, kind: &str) -> std::io::Result<Output> {
        let file = tokio::fs::File::create(directory.join(format!("{kind}.ndjson"))).await?;
        Ok(Output {
            writer: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            count: 0,
        })
    }

    async fn write(&mut self, resource: &impl serde::Serialize, job: &Job) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(resource)?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        self.count += 1;
        job.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn finish(mut self) -> std::io::Result<u64> {
        self.writer.flush().await?;
        self.writer.get_ref().sync_all().await?;
        Ok(self.count)
    }
}

/// Runs a job to its end and records the outcome.
async fn run(app: App, id: String, job: Arc<Job>, request: Request) {
    let outcome = write_all(&app, &job, &request).await;
    let state = match outcome {
        Ok(files) => {
            tracing::info!(job = %id, resources = job.written.load(Ordering::Relaxed), "bulk export finished");
            JobState::Done(files)
        }
        Err(error) => {
            if !job.cancelled.load(Ordering::Relaxed) {
                tracing::error!(job = %id, %error, "bulk export failed");
            }
            JobState::Failed("the export failed; start it again".into())
        }
    };
    *job.state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner()) = state;
    // Forget the job and its files a day later.
    let exports_app = app.clone();
    tokio::spawn(async move {
        tokio::time::sleep(KEEP_FINISHED).await;
        let removed = exports_app
            .0
            .exports
            .jobs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&id);
        if let Some(job) = removed {
            let _ = tokio::fs::remove_dir_all(&job.directory).await;
        }
    });
}

/// A FHIR read failure during a job (the job fails; the log says why).
fn failed(error: FhirError) -> std::io::Error {
    std::io::Error::other(format!("{error:?}"))
}

fn cancelled(job: &Job) -> std::io::Result<()> {
    if job.cancelled.load(Ordering::Relaxed) {
        Err(std::io::Error::other("cancelled"))
    } else {
        Ok(())
    }
}

/// The device series an export reads: `(device, from, to)`.
type Scope = (DeviceId, Timestamp, Timestamp);

async fn write_all(
    app: &App,
    job: &Job,
    request: &Request,
) -> Result<Vec<(String, u64)>, Box<dyn std::error::Error + Send + Sync>> {
    let now = job.transaction_time;
    let clinical = request.types.contains("Observation") || request.types.contains("Flag");
    if clinical && app.0.clinical.sync().await.is_err() {
        return Err("the clinical engine stopped".into());
    }
    // What the export covers, from one consistent view of the registry: the patients, every
    // device with its current patient, and each patient's assignments.
    let (patients, all_devices, assignments) = {
        let directory = app.0.directory.read();
        let patients: Vec<galen_model::Patient> = match &request.level {
            Level::System | Level::Patients(None) => {
                directory.patients().into_iter().cloned().collect()
            }
            Level::Patients(Some(ward)) => directory
                .patients()
                .into_iter()
                .filter(|patient| &patient.details.ward == ward)
                .cloned()
                .collect(),
        };
        let devices: Vec<(galen_model::Device, Option<PatientId>)> = directory
            .devices()
            .into_iter()
            .map(|device| (device.clone(), directory.patient_at(device.id, now)))
            .collect();
        let assignments: Vec<(PatientId, galen_model::NewAssignment)> = patients
            .iter()
            .flat_map(|patient| {
                directory
                    .assignments_of(patient.id, Timestamp::MIN, Timestamp::MAX)
                    .into_iter()
                    .map(|assignment| (patient.id, assignment.details))
                    .collect::<Vec<_>>()
            })
            .collect();
        (patients, devices, assignments)
    };
    // The patients' consents decide who is in a disclosure; the decisions are audited first.
    let withheld = screen(app, job, &patients).await?;
    let patients: Vec<galen_model::Patient> = patients
        .into_iter()
        .filter(|patient| !withheld.contains(&patient.id))
        .collect();
    // A Device names its current patient only when that patient is in the export.
    let shown = |patient: Option<PatientId>| patient.filter(|id| !withheld.contains(id));
    let mut scopes: Vec<Scope> = Vec::new();
    let devices: Vec<(galen_model::Device, Option<PatientId>)> = match &request.level {
        Level::System => {
            for (device, _) in &all_devices {
                scopes.push((device.id, Timestamp::MIN, now));
            }
            all_devices
                .into_iter()
                .map(|(device, patient)| (device, shown(patient)))
                .collect()
        }
        Level::Patients(_) => {
            let mut wanted = BTreeSet::new();
            for (patient, details) in &assignments {
                if withheld.contains(patient) {
                    continue;
                }
                wanted.insert(details.device);
                scopes.push((
                    details.device,
                    details.start,
                    details.end.unwrap_or(Timestamp::MAX).min(now),
                ));
            }
            all_devices
                .into_iter()
                .filter(|(device, _)| wanted.contains(&device.id))
                .map(|(device, patient)| (device, shown(patient)))
                .collect()
        }
    };
    let mut files = Vec::new();
    if request.types.contains("Patient") {
        let mut output = Output::create(&job.directory, "Patient").await?;
        for patient in &patients {
            cancelled(job)?;
            output.write(&patient_to_fhir(patient), job).await?;
        }
        files.push(("Patient".to_owned(), output.finish().await?));
    }
    if request.types.contains("Device") {
        let mut output = Output::create(&job.directory, "Device").await?;
        for (device, patient) in &devices {
            cancelled(job)?;
            output.write(&device_to_fhir(device, *patient), job).await?;
        }
        files.push(("Device".to_owned(), output.finish().await?));
    }
    if request.types.contains("Observation") {
        let mut output = Output::create(&job.directory, "Observation").await?;
        let patient_level = matches!(request.level, Level::Patients(_));
        for (device, from, to) in scopes {
            let from = match request.since {
                Some(since) => from.max(since),
                None => from,
            };
            // Start at the device's oldest point: scopes may be open towards the past.
            let mut oldest: Option<Timestamp> = None;
            for vital in VitalSign::ALL {
                if let Some(first) = app.0.store.earliest(device, vital).await? {
                    oldest = Some(oldest.map_or(first, |known: Timestamp| known.min(first)));
                }
            }
            let Some(oldest) = oldest else {
                continue;
            };
            let mut start = from.max(oldest);
            while start < to {
                cancelled(job)?;
                let end = start.add_micros(SLICE_MICROS).min(to);
                let readings = slice_readings(app, device, start, end, &withheld).await?;
                for observation in group_readings(&readings) {
                    if patient_level && observation.subject.is_none() {
                        continue;
                    }
                    output.write(&observation, job).await?;
                }
                start = end;
            }
        }
        // The early-warning scores of the patients in scope, newest first per patient and table.
        let tables = super::clinical::servable_tables(app);
        let from = request.since.unwrap_or(Timestamp::MIN);
        for patient in &patients {
            for table in &tables {
                let mut upper = Some(now);
                while let Some(to) = upper.filter(|to| *to > from) {
                    cancelled(job)?;
                    let (scores, next) =
                        super::clinical::export_scores_page(app, patient.id, table, from, to)
                            .await
                            .map_err(failed)?;
                    for score in &scores {
                        output.write(score, job).await?;
                    }
                    upper = next;
                }
            }
        }
        files.push(("Observation".to_owned(), output.finish().await?));
    }
    if request.types.contains("Flag") {
        let mut output = Output::create(&job.directory, "Flag").await?;
        for patient in &patients {
            let mut pages = super::clinical::ExportFlags::new(app, patient.id, request.since, now)
                .await
                .map_err(failed)?;
            loop {
                cancelled(job)?;
                let Some(flags) = pages.next_page(app).await.map_err(failed)? else {
                    break;
                };
                for flag in &flags {
                    output.write(flag, job).await?;
                }
            }
        }
        files.push(("Flag".to_owned(), output.finish().await?));
    }
    write_withheld_outcome(job).await?;
    Ok(files)
}

/// Decides, for each patient, whether the export may disclose their data ([`Job::disclosure`]),
/// audits every decision (one record per patient) before anything is written, and returns the
/// patients withheld. An export for the hospital's own operations decides nothing.
async fn screen(
    app: &App,
    job: &Job,
    patients: &[galen_model::Patient],
) -> Result<BTreeSet<PatientId>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(disclosure) = &job.disclosure else {
        return Ok(BTreeSet::new());
    };
    let at = app.0.clock.now();
    let resource = format!("/fhir/$export-status/{}", job.id);
    let mut summary = Withheld {
        considered: patients.len() as u64,
        ..Withheld::default()
    };
    let mut records = Vec::with_capacity(patients.len());
    for patient in patients {
        let decision = app.0.consents.decide(patient.id, disclosure, at);
        if !decision.permitted {
            summary.withheld.insert(patient.id);
            *summary.by_basis.entry(decision.basis.code()).or_default() += 1;
        }
        records.push(decision_record(
            at, &job.owner, job.role, &resource, "export", patient.id, disclosure, &decision,
        ));
    }
    if !app.0.audit.record_all(records).await {
        return Err("the consent decisions could not be audited; nothing was exported".into());
    }
    tracing::info!(
        job = %job.id,
        considered = summary.considered,
        withheld = summary.withheld.len(),
        "bulk export screened by consent"
    );
    let withheld = summary.withheld.clone();
    *job.withheld
        .lock()
        .unwrap_or_else(|poison| poison.into_inner()) = Some(summary);
    Ok(withheld)
}

/// Writes the OperationOutcome saying how many patients the consents left out and why (never
/// who), when any were.
async fn write_withheld_outcome(job: &Job) -> std::io::Result<()> {
    let summary = job
        .withheld
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    let (Some(summary), Some(disclosure)) = (summary, &job.disclosure) else {
        return Ok(());
    };
    if summary.withheld.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = summary
        .by_basis
        .iter()
        .map(|(basis, count)| format!("{count} {basis}"))
        .collect();
    let outcome = galen_fhir::outcome::OutcomeBuilder::new()
        .issue(
            galen_fhir::IssueSeverity::Warning,
            IssueType::Suppressed,
            format!(
                "{} of {} patients were left out of this export by their consent ({}): {}",
                summary.withheld.len(),
                summary.considered,
                disclosure.describe(),
                reasons.join(", ")
            ),
            None,
        )
        .build();
    let mut output = Output::create(&job.directory, OUTCOME_FILE).await?;
    output.write(&outcome, job).await?;
    output.finish().await?;
    Ok(())
}

/// Every reading of `device` in `[from, to)`, attributed, but those of `withheld` patients.
async fn slice_readings(
    app: &App,
    device: DeviceId,
    from: Timestamp,
    to: Timestamp,
    withheld: &BTreeSet<PatientId>,
) -> Result<Vec<VitalReading>, galen_store::Error> {
    let mut readings = Vec::new();
    for vital in VitalSign::ALL {
        let points = app.0.store.range(device, vital, from, to).await?;
        if points.is_empty() {
            continue;
        }
        let directory = app.0.directory.read();
        readings.extend(
            points
                .into_iter()
                .map(|point| VitalReading {
                    device,
                    patient: directory.patient_at(device, point.time),
                    vital,
                    time: point.time,
                    reading: Reading::from_device_value(point.value),
                })
                .filter(|reading| {
                    reading
                        .patient
                        .is_none_or(|patient| !withheld.contains(&patient))
                }),
        );
    }
    readings.sort_by_key(|reading| reading.time);
    Ok(readings)
}
