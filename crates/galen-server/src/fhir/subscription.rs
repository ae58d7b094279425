//! FHIR Subscriptions on R4 after the Subscriptions R5 Backport IG (STU 1.1.0): topic-based,
//! `rest-hook` channel.
//!
//! Topics (filters in the `backport-filter-criteria` extension):
//! - [`TOPIC_OBSERVATION`]: a vital-sign Observation was stored; filters as an Observation search
//!   (`patient`, `subject`, `device`, `code`, `category`);
//! - [`TOPIC_ALARM`]: an alarm was raised or changed (acknowledged, escalated, latched, resolved);
//!   focus the alarm's `Flag`; filter `patient`;
//! - [`TOPIC_NEWS2_BAND`]: a patient's NEWS2 band changed; focus the score `Observation`; filter
//!   `patient`. The first NEWS2 score a process computes for a patient has nothing to compare
//!   with and is not an event.
//!
//! Lifecycle: a created Subscription is `requested`; Galen sends a handshake to the endpoint; a
//! `2xx` makes it `active`, anything else `error`. Each matching Observation is an event, numbered
//! from 1 for the subscription's life (`events-since-subscription-start`). A worker per
//! subscription sends the events queued since its last notification in one `history` Bundle
//! (the first entry a `Parameters` status, then the Observations when the payload is
//! `full-resource`, their references when `id-only`), waits for `2xx`, and retries with back-off
//! (1, 2, 4, 8 s). A notification that still fails puts the subscription in `error`; it keeps
//! trying with each new batch and returns to `active` on the next success, so a client sees
//! every event number at least once or sees the gap and can search. Heartbeats go out after the
//! `backport-heartbeat-period` without a notification. `GET Subscription/{id}/$status` answers
//! the status and the event count. Subscriptions and their event counts are stored: they survive
//! a restart.
//!
//! Events come from the pipeline's live feed, which publishes only after the durable commit, so a
//! notification never announces a value that could still be lost; the feed runs in memory, so
//! a notification follows its measurement by milliseconds.
//!
//! Not yet: the `websocket` channel, and `https` endpoints (the delivery client speaks plain
//! HTTP; put a TLS-terminating proxy in between until the security work adds a TLS client).
//! Channel headers (often credentials) are kept but never shown: reads return their names only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use galen_fhir::observation::{Reading, VitalReading, group_readings, parse_observation_id};
use galen_fhir::search::ObservationQuery;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{FhirError, FhirResult, base_url, check_accept, check_content_type, fhir_response};
use crate::App;
use crate::live::LiveMeasurement;

/// The topic: a vital-sign Observation was stored.
pub(crate) const TOPIC_OBSERVATION: &str =
    "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation";
/// The topic: an alarm was raised or changed.
pub(crate) const TOPIC_ALARM: &str = "https://galen.invalid/fhir/SubscriptionTopic/alarm";
/// The topic: a patient's NEWS2 band changed.
pub(crate) const TOPIC_NEWS2_BAND: &str = "https://galen.invalid/fhir/SubscriptionTopic/news2-band";

/// What a subscription listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Observation,
    Alarm,
    News2Band,
}

impl Topic {
    fn url(self) -> &'static str {
        match self {
            Topic::Observation => TOPIC_OBSERVATION,
            Topic::Alarm => TOPIC_ALARM,
            Topic::News2Band => TOPIC_NEWS2_BAND,
        }
    }
}
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
/// Events queued for one subscription at most; beyond, the subscription goes to `error`.
const QUEUE_LIMIT: usize = 10_000;
/// Events in one notification at most, unless the subscription asks for fewer.
const MAX_BATCH: usize = 500;
/// Event numbers reserved in the store at a time (see `Live::reserved`).
const EVENT_RESERVE: u64 = 1000;
/// Waits between delivery attempts of one notification.
const BACKOFF: [u64; 4] = [1, 2, 4, 8];
/// One delivery attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a notification carries besides the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Empty,
    IdOnly,
    FullResource,
}

/// One event: its focus and, for `full-resource`, how to get the resource.
#[derive(Debug, Clone)]
struct Event {
    /// `Observation/{id}` or `Flag/{id}`.
    focus: String,
    time: galen_model::Timestamp,
    payload: Payload,
}

#[derive(Debug, Clone)]
enum Payload {
    /// Built already (vital signs, from the live feed).
    Ready(Arc<Value>),
    /// An alarm's Flag, read from the alarm log once stored.
    Flag {
        id: String,
        raised: galen_model::Timestamp,
    },
    /// A score Observation, read from the store once stored.
    Score(galen_fhir::clinical::ScoreKey),
}

/// A subscription in force.
struct Live {
    id: i64,
    /// The FHIR base URL the subscription was created at (for the notifications' `fullUrl`s).
    base: String,
    /// The resource as created (status and id set by Galen; headers as sent).
    resource: Mutex<Value>,
    topic: Topic,
    /// The filter of the Observation topic.
    query: ObservationQuery,
    /// The patients the clinical topics are filtered to (`None`: all).
    patients: Option<std::collections::BTreeSet<galen_model::PatientId>>,
    endpoint: String,
    headers: Vec<(String, String)>,
    content: Content,
    heartbeat: Option<Duration>,
    max_count: usize,
    status: Mutex<String>,
    events: AtomicU64,
    /// The event count the store holds: numbers up to it may have been sent. It runs ahead of
    /// `events` by up to [`EVENT_RESERVE`], so the store is written once per that many events,
    /// and a restart resumes after every number possibly used (a gap, never a repeat).
    reserved: AtomicU64,
    queued: AtomicU64,
    sender: mpsc::UnboundedSender<Event>,
}

/// The subscriptions of this process, with their delivery workers.
#[derive(Default)]
pub(crate) struct Subscriptions {
    live: RwLock<HashMap<i64, Arc<Live>>>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Subscriptions")
            .finish_non_exhaustive()
    }
}

fn invalid(path: &str, message: impl Into<String>) -> FhirError {
    FhirError::from(galen_fhir::Error::element(
        path,
        galen_fhir::Problem::Invalid,
        message,
    ))
}

fn extension_value<'a>(element: &'a Value, name: &str) -> Option<&'a Value> {
    element["extension"]
        .as_array()?
        .iter()
        .find(|extension| extension["url"] == format!("{BACKPORT}{name}").as_str())
}

/// A parsed Subscription: everything but its id, status and event count.
struct Parsed {
    topic: Topic,
    query: ObservationQuery,
    patients: Option<std::collections::BTreeSet<galen_model::PatientId>>,
    endpoint: String,
    headers: Vec<(String, String)>,
    content: Content,
    heartbeat: Option<Duration>,
    max_count: usize,
}

fn parse(resource: &Value) -> FhirResult<Parsed> {
    if resource["resourceType"] != "Subscription" {
        return Err(FhirError::from(galen_fhir::Error::ResourceType {
            expected: "Subscription",
            found: resource["resourceType"].as_str().map(str::to_owned),
        }));
    }
    let topics = [Topic::Observation, Topic::Alarm, Topic::News2Band];
    let topic = match resource["criteria"].as_str() {
        Some(url) => topics
            .into_iter()
            .find(|topic| topic.url() == url)
            .ok_or_else(|| {
                invalid(
                    "Subscription.criteria",
                    format!(
                        "topic {url:?} is not one Galen offers; use {TOPIC_OBSERVATION}, {TOPIC_ALARM} or {TOPIC_NEWS2_BAND}"
                    ),
                )
            })?,
        None => {
            return Err(invalid(
                "Subscription.criteria",
                format!("the topic is required, e.g. {TOPIC_OBSERVATION}"),
            ));
        }
    };
    let filter = extension_value(&resource["_criteria"], "backport-filter-criteria")
        .and_then(|extension| extension["valueString"].as_str())
        .unwrap_or("");
    let filter = filter.split_once('?').map_or(filter, |(_, query)| query);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(filter)
        .map_err(|_| invalid("Subscription.criteria", "the filter is not a query string"))?;
    let allowed: &[&str] = match topic {
        Topic::Observation => &["patient", "subject", "device", "code", "category"],
        Topic::Alarm | Topic::News2Band => &["patient", "subject"],
    };
    if let Some((name, _)) = pairs
        .iter()
        .find(|(name, _)| !allowed.contains(&name.as_str()))
    {
        return Err(invalid(
            "Subscription.criteria",
            format!(
                "filter {name:?} is not offered for this topic; use {}",
                allowed.join(", ")
            ),
        ));
    }
    let (query, patients) = match topic {
        Topic::Observation => (
            ObservationQuery::parse(&pairs).map_err(|error| {
                invalid("Subscription.criteria", format!("the filter: {error}"))
            })?,
            None,
        ),
        Topic::Alarm | Topic::News2Band => {
            let mut patients = None;
            for (_, value) in &pairs {
                let id = value.strip_prefix("Patient/").unwrap_or(value);
                let id: i64 = id.parse().map_err(|_| {
                    invalid(
                        "Subscription.criteria",
                        format!("patient {value:?} is not a Patient reference"),
                    )
                })?;
                patients
                    .get_or_insert_with(std::collections::BTreeSet::new)
                    .insert(galen_model::PatientId(id));
            }
            (ObservationQuery::default(), patients)
        }
    };
    let channel = &resource["channel"];
    match channel["type"].as_str() {
        Some("rest-hook") => {}
        Some(other) => {
            return Err(invalid(
                "Subscription.channel.type",
                format!("channel {other:?} is not offered yet; use rest-hook"),
            ));
        }
        None => {
            return Err(invalid(
                "Subscription.channel.type",
                "rest-hook is required",
            ));
        }
    }
    let endpoint = channel["endpoint"].as_str().unwrap_or("").to_owned();
    if !endpoint.starts_with("http://") || endpoint.parse::<hyper::Uri>().is_err() {
        return Err(invalid(
            "Subscription.channel.endpoint",
            "an http:// URL is required (https delivery needs a TLS-terminating proxy for now)",
        ));
    }
    let mut headers = Vec::new();
    for (index, header) in channel["header"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some((name, value)) = header.as_str().and_then(|header| header.split_once(':')) else {
            return Err(invalid(
                &format!("Subscription.channel.header[{index}]"),
                "a header is written 'Name: value'",
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(value).is_err()
        {
            return Err(invalid(
                &format!("Subscription.channel.header[{index}]"),
                "not a valid HTTP header",
            ));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    let content = match (
        channel["payload"].as_str(),
        extension_value(&channel["_payload"], "backport-payload-content")
            .and_then(|extension| extension["valueCode"].as_str()),
    ) {
        (None, _) | (_, Some("empty")) => Content::Empty,
        (Some("application/fhir+json" | "application/json"), Some("full-resource")) => {
            Content::FullResource
        }
        (Some("application/fhir+json" | "application/json"), Some("id-only") | None) => {
            Content::IdOnly
        }
        (Some("application/fhir+json" | "application/json"), Some(other)) => {
            return Err(invalid(
                "Subscription.channel.payload",
                format!("payload content {other:?}: use empty, id-only or full-resource"),
            ));
        }
        (Some(other), _) => {
            return Err(invalid(
                "Subscription.channel.payload",
                format!("payload {other:?}: Galen notifies as application/fhir+json"),
            ));
        }
    };
    let unsigned = |name: &str| {
        extension_value(channel, name).and_then(|extension| extension["valueUnsignedInt"].as_u64())
    };
    let heartbeat = unsigned("backport-heartbeat-period")
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs);
    let max_count = unsigned("backport-max-count")
        .map_or(MAX_BATCH, |count| (count as usize).clamp(1, MAX_BATCH));
    Ok(Parsed {
        topic,
        query,
        patients,
        endpoint,
        headers,
        content,
        heartbeat,
        max_count,
    })
}

/// Builds the in-memory subscription and starts its worker.
fn activate(
    app: &App,
    id: i64,
    base: String,
    resource: Value,
    status: String,
    events: u64,
) -> FhirResult<Arc<Live>> {
    let parsed = parse(&resource)?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let live = Arc::new(Live {
        id,
        base,
        resource: Mutex::new(resource),
        topic: parsed.topic,
        query: parsed.query,
        patients: parsed.patients,
        endpoint: parsed.endpoint,
        headers: parsed.headers,
        content: parsed.content,
        heartbeat: parsed.heartbeat,
        max_count: parsed.max_count,
        status: Mutex::new(status),
        events: AtomicU64::new(events),
        reserved: AtomicU64::new(events),
        queued: AtomicU64::new(0),
        sender,
    });
    app.0
        .subscriptions
        .live
        .write()
        .unwrap_or_else(|poison| poison.into_inner())
        .insert(id, live.clone());
    tokio::spawn(worker(app.clone(), live.clone(), receiver));
    Ok(live)
}

/// Loads the stored subscriptions and starts the dispatcher; called once at start.
pub(crate) async fn start(app: &App) -> Result<(), galen_store::Error> {
    for stored in app.0.store.subscriptions().await? {
        let Ok(mut body) = serde_json::from_str::<Value>(&stored.body) else {
            tracing::error!(
                subscription = stored.id,
                "a stored subscription is unreadable; left off"
            );
            continue;
        };
        if stored.status == "off" {
            continue;
        }
        let base = body["base"].as_str().unwrap_or("").to_owned();
        let resource = body["resource"].take();
        if let Err(error) = activate(app, stored.id, base, resource, stored.status, stored.events) {
            tracing::error!(
                subscription = stored.id,
                ?error,
                "a stored subscription no longer parses; left off"
            );
        }
    }
    let receiver = app.0.live.subscribe();
    tokio::spawn(dispatch(app.clone(), receiver));
    let clinical = app.0.clinical.subscribe();
    tokio::spawn(dispatch_clinical(app.clone(), clinical));
    Ok(())
}

/// The next item of a feed, or `None` at shutdown. A feed that fell behind lost events: the
/// subscriptions of `topic` (or, for a clinical feed, both clinical topics) go to `error`, where
/// clients look, and the feed goes on.
async fn next<T: Clone>(
    app: &App,
    feed: &mut broadcast::Receiver<T>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    topic: Topic,
) -> Option<T> {
    loop {
        let item = tokio::select! {
            item = feed.recv() => item,
            _ = shutdown.changed() => return None,
        };
        match item {
            Ok(item) => return Some(item),
            Err(broadcast::error::RecvError::Closed) => return None,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::error!(
                    missed,
                    ?topic,
                    "subscription dispatch fell behind; subscriptions put in error"
                );
                for live in snapshot(app) {
                    if (live.topic == Topic::Observation) == (topic == Topic::Observation) {
                        set_status(app, &live, "error").await;
                    }
                }
            }
        }
    }
}

/// Turns committed measurements into events for the subscriptions they match.
async fn dispatch(app: App, mut feed: broadcast::Receiver<Arc<Vec<LiveMeasurement>>>) {
    let mut shutdown = app.0.shutdown.subscribe();
    while let Some(batch) = next(&app, &mut feed, &mut shutdown, Topic::Observation).await {
        let subscriptions = snapshot(&app);
        if subscriptions.is_empty() {
            continue;
        }
        let readings: Vec<VitalReading> = {
            let directory = app.0.directory.read();
            batch
                .iter()
                .filter_map(|measurement| {
                    let device = directory.device_by_serial(&measurement.device)?;
                    Some(VitalReading {
                        device: device.id,
                        patient: measurement.patient,
                        vital: measurement.vital,
                        time: measurement.time,
                        reading: Reading::from_device_value(measurement.value),
                    })
                })
                .collect()
        };
        for observation in group_readings(&readings) {
            let Some(id) = observation.id.clone() else {
                continue;
            };
            let Ok(key) = parse_observation_id(&id) else {
                continue;
            };
            let patient = readings
                .iter()
                .find(|reading| reading.device == key.device && reading.time == key.time)
                .and_then(|reading| reading.patient);
            let event = Event {
                focus: format!("Observation/{id}"),
                time: key.time,
                payload: Payload::Ready(Arc::new(json!(observation))),
            };
            for live in &subscriptions {
                if live.topic == Topic::Observation && live.query.matches_key(&key, patient) {
                    enqueue(&app, live, event.clone()).await;
                }
            }
        }
    }
}

/// Turns the clinical engine's outputs into events of the alarm and NEWS2-band topics.
async fn dispatch_clinical(app: App, mut feed: broadcast::Receiver<Arc<crate::ClinicalEvent>>) {
    let mut shutdown = app.0.shutdown.subscribe();
    // The NEWS2 band each patient was last seen in, and the instant of its last band event.
    let mut bands: HashMap<galen_model::PatientId, String> = HashMap::new();
    let mut announced: HashMap<galen_model::PatientId, galen_model::Timestamp> = HashMap::new();
    while let Some(output) = next(&app, &mut feed, &mut shutdown, Topic::Alarm).await {
        let Ok(body) = serde_json::from_str::<Value>(&output.json) else {
            continue;
        };
        let time = |name: &str| {
            body[name]
                .as_str()
                .and_then(|text| galen_model::Timestamp::parse_rfc3339(text).ok())
        };
        let (topic, event) = match output.kind {
            "alarm" => {
                let (Some(id), Some(at), Some(raised)) =
                    (body["alarm"].as_str(), time("time"), time("raised_at"))
                else {
                    continue;
                };
                (
                    Topic::Alarm,
                    Event {
                        focus: format!("Flag/{id}"),
                        time: at,
                        payload: Payload::Flag {
                            id: id.to_owned(),
                            raised,
                        },
                    },
                )
            }
            "score" if body["table"] == "news2" => {
                let (Some(band), Some(at)) = (body["band"].as_str(), time("time")) else {
                    continue;
                };
                let previous = bands.insert(output.patient, band.to_owned());
                if previous.as_deref().is_none_or(|previous| previous == band) {
                    continue;
                }
                // Several changes at one instant (one monitor report scored value by value) are
                // one event: its Observation is the score as it stood after all of them.
                if announced.insert(output.patient, at) == Some(at) {
                    continue;
                }
                let key = galen_fhir::clinical::ScoreKey {
                    patient: output.patient,
                    table: "news2".to_owned(),
                    time: at,
                };
                (
                    Topic::News2Band,
                    Event {
                        focus: format!("Observation/{}", key.id()),
                        time: at,
                        payload: Payload::Score(key),
                    },
                )
            }
            _ => continue,
        };
        for live in snapshot(&app) {
            let wanted = live.topic == topic
                && live
                    .patients
                    .as_ref()
                    .is_none_or(|patients| patients.contains(&output.patient));
            if wanted {
                enqueue(&app, &live, event.clone()).await;
            }
        }
    }
}

/// The subscriptions in force now.
fn snapshot(app: &App) -> Vec<Arc<Live>> {
    app.0
        .subscriptions
        .live
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .values()
        .cloned()
        .collect()
}

async fn enqueue(app: &App, live: &Arc<Live>, event: Event) {
    if live.queued.load(Ordering::Relaxed) as usize >= QUEUE_LIMIT {
        // The endpoint cannot keep up: events are numbered but not sent (the client sees the gap).
        live.events.fetch_add(1, Ordering::Relaxed);
        set_status(app, live, "error").await;
        return;
    }
    live.queued.fetch_add(1, Ordering::Relaxed);
    let _ = live.sender.send(event);
}

async fn set_status(app: &App, live: &Live, status: &str) {
    let changed = {
        let mut current = live
            .status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *current == status {
            false
        } else {
            *current = status.to_owned();
            true
        }
    };
    if changed {
        tracing::info!(
            subscription = live.id,
            status,
            "subscription status changed"
        );
        persist(app, live).await;
    }
}

/// What the store keeps of a subscription: the resource and the base URL it was created at.
fn stored_body(base: &str, resource: &Value) -> String {
    json!({ "base": base, "resource": resource }).to_string()
}

/// Stores the subscription's resource, status and event count.
async fn persist(app: &App, live: &Live) {
    let (body, status) = {
        let mut resource = live
            .resource
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let status = live
            .status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        resource["status"] = json!(status);
        (stored_body(&live.base, &resource), status)
    };
    let events = live.reserved.load(Ordering::Relaxed);
    if let Err(error) = app
        .0
        .store
        .update_subscription(live.id, body, status, events)
        .await
    {
        tracing::error!(subscription = live.id, %error, "could not store a subscription's state");
    }
}

/// The `Parameters` status resource of a notification.
fn status_parameters(live: &Live, kind: &str, events: &[(u64, &Event)]) -> Value {
    let status = live
        .status
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    let mut parameters = vec![
        json!({ "name": "subscription", "valueReference": { "reference": format!("Subscription/{}", live.id) } }),
        json!({ "name": "topic", "valueCanonical": live.topic.url() }),
        json!({ "name": "status", "valueCode": status }),
        json!({ "name": "type", "valueCode": kind }),
        json!({ "name": "events-since-subscription-start", "valueString": live.events.load(Ordering::Relaxed).to_string() }),
    ];
    for (number, event) in events {
        let mut parts = vec![
            json!({ "name": "event-number", "valueString": number.to_string() }),
            json!({ "name": "timestamp", "valueInstant": event.time.to_rfc3339() }),
        ];
        if live.content != Content::Empty {
            parts.push(json!({ "name": "focus", "valueReference": { "reference": event.focus } }));
        }
        parameters.push(json!({ "name": "notification-event", "part": parts }));
    }
    json!({ "resourceType": "Parameters", "parameter": parameters })
}

/// A notification Bundle (`history`, status first); `resources` are the events' resources for
/// `full-resource` (missing ones are sent as references).
fn notification(
    app: &App,
    live: &Live,
    kind: &str,
    events: &[(u64, &Event)],
    resources: &[Option<Arc<Value>>],
) -> Value {
    let base = &live.base;
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{}", uuid_like(live.id, live.events.load(Ordering::Relaxed), kind)),
        "resource": status_parameters(live, kind, events),
        "request": { "method": "GET", "url": format!("Subscription/{}/$status", live.id) },
        "response": { "status": "200" }
    })];
    for (index, (_, event)) in events.iter().enumerate() {
        if live.content == Content::Empty {
            break;
        }
        let resource_type = event.focus.split('/').next().unwrap_or("Observation");
        let mut entry = json!({
            "fullUrl": format!("{base}/{}", event.focus),
            "request": { "method": "PUT", "url": event.focus },
            "response": { "status": "200" }
        });
        if live.topic == Topic::Observation {
            entry["request"] = json!({ "method": "POST", "url": resource_type });
            entry["response"] = json!({ "status": "201" });
        }
        if live.content == Content::FullResource
            && let Some(Some(resource)) = resources.get(index)
        {
            entry["resource"] = (**resource).clone();
        }
        entries.push(entry);
    }
    json!({
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": app.0.clock.now().to_rfc3339(),
        "entry": entries,
    })
}

/// A deterministic UUID-shaped id for a notification's status entry.
fn uuid_like(subscription: i64, events: u64, kind: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{subscription}/{events}/{kind}"));
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// One delivery attempt; `true` on `2xx`.
async fn post(client: &Client<HttpConnector, Full<Bytes>>, live: &Live, body: &Value) -> bool {
    let mut request =
        hyper::Request::post(&live.endpoint).header("content-type", "application/fhir+json");
    for (name, value) in &live.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let Ok(request) = request.body(Full::new(Bytes::from(body.to_string()))) else {
        return false;
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) => response.status().is_success(),
        _ => false,
    }
}

/// Delivers a notification, retrying with back-off; `true` when delivered.
async fn deliver(client: &Client<HttpConnector, Full<Bytes>>, live: &Live, body: &Value) -> bool {
    if post(client, live, body).await {
        return true;
    }
    for seconds in BACKOFF {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        if post(client, live, body).await {
            return true;
        }
    }
    false
}

/// The resources of `events` for a `full-resource` notification. Alarm and score events are read
/// back from the store once the clinical engine has stored its outputs.
async fn resolve(app: &App, events: &[Event]) -> Vec<Option<Arc<Value>>> {
    let stored_later = events
        .iter()
        .any(|event| !matches!(event.payload, Payload::Ready(_)));
    if stored_later && app.0.clinical.sync().await.is_err() {
        return vec![None; events.len()];
    }
    let mut resources = Vec::with_capacity(events.len());
    for event in events {
        let resource = match &event.payload {
            Payload::Ready(resource) => Some(resource.clone()),
            Payload::Flag { id, raised } => super::clinical::flag_of(app, id, *raised)
                .await
                .ok()
                .flatten()
                .map(|flag| Arc::new(json!(flag))),
            Payload::Score(key) => super::clinical::stored_score(app, key)
                .await
                .ok()
                .flatten()
                .map(|observation| Arc::new(json!(observation))),
        };
        resources.push(resource);
    }
    resources
}

async fn worker(app: App, live: Arc<Live>, mut receiver: mpsc::UnboundedReceiver<Event>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut shutdown = app.0.shutdown.subscribe();
    // The handshake, for a new subscription.
    let requested = *live
        .status
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        == "requested";
    if requested {
        let handshake = notification(&app, &live, "handshake", &[], &[]);
        let status = if deliver(&client, &live, &handshake).await {
            "active"
        } else {
            "error"
        };
        set_status(&app, &live, status).await;
    }
    let mut last_sent = Instant::now();
    loop {
        let wait = live.heartbeat.map_or(Duration::from_secs(3600), |period| {
            period.saturating_sub(last_sent.elapsed())
        });
        let first = tokio::select! {
            event = receiver.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            () = tokio::time::sleep(wait) => None,
            _ = shutdown.changed() => return,
        };
        let Some(first) = first else {
            if live.heartbeat.is_some() {
                let heartbeat = notification(&app, &live, "heartbeat", &[], &[]);
                if post(&client, &live, &heartbeat).await {
                    set_status(&app, &live, "active").await;
                }
                last_sent = Instant::now();
            }
            continue;
        };
        let mut batch = vec![first];
        while batch.len() < live.max_count {
            match receiver.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        live.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let start = live.events.fetch_add(batch.len() as u64, Ordering::Relaxed) + 1;
        let last = start + batch.len() as u64 - 1;
        if last > live.reserved.load(Ordering::Relaxed) {
            // Reserve numbers before any of them is sent.
            live.reserved.store(last + EVENT_RESERVE, Ordering::Relaxed);
            persist(&app, &live).await;
        }
        let numbered: Vec<(u64, &Event)> = batch
            .iter()
            .enumerate()
            .map(|(index, event)| (start + index as u64, event))
            .collect();
        let resources = if live.content == Content::FullResource {
            resolve(&app, &batch).await
        } else {
            Vec::new()
        };
        let body = notification(&app, &live, "event-notification", &numbered, &resources);
        let delivered = deliver(&client, &live, &body).await;
        last_sent = Instant::now();
        if delivered {
            set_status(&app, &live, "active").await;
        } else {
            tracing::warn!(
                subscription = live.id,
                events = batch.len(),
                "a subscription notification could not be delivered"
            );
            set_status(&app, &live, "error").await;
        }
    }
}

/// The resource as served: Galen's id and status, header values hidden.
fn served(live: &Live) -> Value {
    let mut resource = live
        .resource
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    resource["id"] = json!(live.id.to_string());
    resource["status"] = json!(
        live.status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    );
    if let Some(headers) = resource["channel"]["header"].as_array_mut() {
        for header in headers {
            if let Some((name, _)) = header.as_str().and_then(|text| text.split_once(':')) {
                *header = json!(format!("{name}: (hidden)"));
            }
        }
    }
    resource
}

fn find(app: &App, id: &str) -> FhirResult<Arc<Live>> {
    let id: i64 = id
        .parse()
        .map_err(|_| FhirError::not_found("Subscription"))?;
    app.0
        .subscriptions
        .live
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .get(&id)
        .cloned()
        .ok_or_else(|| FhirError::not_found("Subscription"))
}

pub(crate) async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let mut resource: Value = serde_json::from_slice(&body).map_err(|error| {
        FhirError::from(galen_fhir::Error::Syntax {
            message: error.to_string(),
        })
    })?;
    parse(&resource)?;
    if let Some(object) = resource.as_object_mut() {
        object.remove("id");
        object.remove("meta");
    }
    resource["status"] = json!("requested");
    let base = base_url(&headers);
    let id = app
        .0
        .store
        .create_subscription(stored_body(&base, &resource), "requested".into())
        .await?;
    let live = activate(&app, id, base, resource, "requested".into(), 0)?;
    tracing::info!(subscription = id, "FHIR subscription created");
    let mut answer = HeaderMap::new();
    if let Ok(location) = format!("{}/Subscription/{id}", base_url(&headers)).parse() {
        answer.insert(axum::http::header::LOCATION, location);
    }
    Ok(fhir_response(StatusCode::CREATED, &served(&live), answer))
}

pub(crate) async fn read(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let live = find(&app, &id)?;
    Ok(fhir_response(
        StatusCode::OK,
        &served(&live),
        HeaderMap::new(),
    ))
}

pub(crate) async fn search(State(app): State<App>, headers: HeaderMap) -> FhirResult<Response> {
    check_accept(&headers)?;
    let mut all: Vec<Arc<Live>> = app
        .0
        .subscriptions
        .live
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .values()
        .cloned()
        .collect();
    all.sort_by_key(|live| live.id);
    let base = base_url(&headers);
    let entries: Vec<Value> = all
        .iter()
        .map(|live| {
            json!({
                "fullUrl": format!("{base}/Subscription/{}", live.id),
                "resource": served(live),
                "search": { "mode": "match" }
            })
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "link": [{ "relation": "self", "url": format!("{base}/Subscription") }],
        "entry": entries,
    });
    Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()))
}

pub(crate) async fn delete(State(app): State<App>, Path(id): Path<String>) -> FhirResult<Response> {
    let live = find(&app, &id)?;
    app.0
        .subscriptions
        .live
        .write()
        .unwrap_or_else(|poison| poison.into_inner())
        .remove(&live.id);
    app.0.store.delete_subscription(live.id).await?;
    tracing::info!(subscription = live.id, "FHIR subscription deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn status(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let live = find(&app, &id)?;
    let parameters = status_parameters(&live, "query-status", &[]);
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{
            "fullUrl": format!("urn:uuid:{}", uuid_like(live.id, live.events.load(Ordering::Relaxed), "query-status")),
            "resource": parameters,
            "search": { "mode": "match" }
        }],
    });
    Ok(fhir_response(StatusCode::OK, &bundle, HeaderMap::new()))
}
