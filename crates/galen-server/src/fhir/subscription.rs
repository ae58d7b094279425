//! FHIR Subscriptions on R4 after the Subscriptions R5 Backport IG (STU 1.1.0): topic-based,
//! `rest-hook` and `websocket` channels.
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
//! **Websocket channel.** A `websocket` subscription needs no endpoint and is `active` at once.
//! `Subscription/{id}/$get-ws-binding-token` (API token required) issues a random token, valid
//! once and for [`TOKEN_LIFETIME`], never logged, with the URL of the websocket endpoint
//! ([`WEBSOCKET_PATH`], built from the request's host like every absolute URL). That endpoint is
//! open at the HTTP level: the client connects and sends the text `bind-with-token <token>`, and
//! the token authenticates it (no cookie is involved, so a page of another origin gains nothing by
//! connecting). A bound connection gets a `handshake` Bundle, then every notification Bundle of
//! the subscription (events and heartbeats) as text frames; it may bind several subscriptions,
//! one token each. A wrong, used or expired token gets an OperationOutcome text frame and a close
//! with code 1008. Events are numbered the same way as for rest-hook, by the worker, whether or not
//! a connection is bound: delivery is best effort while connected (as the IG describes it). An
//! event that finds no connection is counted and not kept, so the client sees the gap: the
//! `events-since-subscription-start` of the handshake it gets on binding, of every heartbeat and
//! of `$status` says how many events there were, and it searches for what it missed. A connection
//! that falls behind ([`SOCKET_QUEUE`] notifications waiting) is closed (code 1008) rather than
//! silently skipped; deleting a subscription unbinds it, and a connection left without
//! subscriptions is closed (code 1000).
//!
//! **Consent.** A subscription created by an account with an organisation discloses its
//! notifications to that organisation. The worker decides on each event of a patient at delivery
//! (the patient's consents, now: a deny recorded a moment ago applies to the next event), audits
//! every decision before sending, and drops withheld events before numbering them, so the
//! recipient sees no gap for what was never theirs. An account with an organisation gets binding
//! tokens only for its own organisation's subscriptions.
//!
//! Rest-hook endpoints may be `http://` or `https://`; HTTPS is verified against the platform's
//! CA certificates plus `--outbound-ca` ([`crate::OutboundTls`]).
//! Channel headers (often credentials) are kept but never shown: reads return their names only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::tls::OutboundClient;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use galen_fhir::observation::{Reading, VitalReading, group_readings, parse_observation_id};
use galen_fhir::search::ObservationQuery;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc};

use super::{FhirError, FhirResult, base_url, check_accept, check_content_type, fhir_response};
use crate::App;
use crate::consent::{Disclosure, decision_record};
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

    /// The resource type its notifications carry.
    fn focus(self) -> &'static str {
        match self {
            Topic::Observation | Topic::News2Band => "Observation",
            Topic::Alarm => "Flag",
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
/// The path of the Subscription websocket endpoint.
pub(crate) const WEBSOCKET_PATH: &str = "/fhir/$subscription-ws";
/// How long a websocket binding token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Binding tokens outstanding at most (issued, neither used nor expired).
const MAX_TOKENS: usize = 10_000;
/// How long a new websocket connection may take to bind before it is closed.
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Notifications waiting for one websocket connection at most; beyond, it is closed.
const SOCKET_QUEUE: usize = 64;
/// The largest message a websocket client may send (`bind-with-token <token>` is short).
const MAX_CLIENT_MESSAGE: usize = 4096;

/// How notifications leave Galen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// POSTed to the subscription's endpoint.
    RestHook,
    /// Sent over the websocket connections bound to the subscription.
    Websocket,
}

/// What the queue of a websocket connection carries.
#[derive(Debug)]
enum Outgoing {
    /// A notification Bundle (JSON text).
    Text(Utf8Bytes),
    /// This subscription was deleted: the connection is no longer bound to it.
    Unbound(i64),
}

/// A websocket connection bound to a subscription: where the worker puts its notifications.
#[derive(Debug)]
struct SocketSink {
    /// The connection's queue.
    sender: mpsc::Sender<Outgoing>,
    /// Signalled when the queue was full: the connection fell behind and closes.
    overflow: Arc<Notify>,
}

/// An issued websocket binding token.
#[derive(Debug, Clone, Copy)]
struct Binding {
    subscription: i64,
    expires: Instant,
}

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
    /// The patient whose data it is (`None`: a measurement nobody was assigned to); the consents
    /// of the patient decide whether a subscription that discloses outside care gets it.
    patient: Option<galen_model::PatientId>,
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

/// Who created a subscription: its notifications are disclosed to their organisation.
#[derive(Debug, Clone)]
struct Owner {
    /// The actor, as the audit trail names it.
    actor: String,
    /// The role it acted in.
    role: String,
    /// The organisation notifications are disclosed to (`None`: the hospital's own).
    organization: Option<galen_model::Recipient>,
    /// The wards whose patients' events it may receive (`None`: every ward), as its creator's
    /// scope was: a ward-bound clinician's subscription carries her wards' patients only.
    wards: Option<std::collections::BTreeSet<String>>,
}

impl Owner {
    fn of(principal: &crate::access::Principal) -> Owner {
        Owner {
            actor: principal.actor.clone(),
            role: principal.role.code().to_owned(),
            organization: principal.organization.clone(),
            wards: match &principal.scope {
                crate::access::Scope::All => None,
                crate::access::Scope::Wards(wards) => Some(wards.clone()),
                crate::access::Scope::Patient(_) | crate::access::Scope::Nobody => {
                    Some(std::collections::BTreeSet::new())
                }
            },
        }
    }

    /// Whether an event about `patient` (or about no patient) is in the owner's scope.
    fn may_receive(&self, app: &App, patient: Option<galen_model::PatientId>) -> bool {
        let Some(wards) = &self.wards else {
            return true;
        };
        patient.is_some_and(|patient| {
            app.0
                .directory
                .read()
                .patient(patient)
                .is_some_and(|patient| wards.contains(&patient.details.ward))
        })
    }

    /// The disclosure each notification makes, or `None` for the hospital's own operations.
    fn disclosure(&self) -> Option<Disclosure> {
        self.organization.clone().map(|organization| Disclosure {
            purpose: galen_model::ConsentPurpose::Sharing,
            recipient: Some(organization),
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "actor": self.actor,
            "role": self.role,
            "organization": self.organization.as_ref().map(ToString::to_string),
            "wards": self.wards,
        })
    }

    /// Reads what [`Owner::to_json`] wrote; a subscription stored before owners were kept acted
    /// for the hospital.
    fn from_json(value: &Value) -> Option<Owner> {
        let organization = match value["organization"].as_str() {
            Some(text) => Some(galen_model::Recipient::parse(text).ok()?),
            None => None,
        };
        let wards = match &value["wards"] {
            Value::Null => None,
            wards => Some(serde_json::from_value(wards.clone()).ok()?),
        };
        Some(Owner {
            actor: value["actor"].as_str().unwrap_or("unknown").to_owned(),
            role: value["role"].as_str().unwrap_or("unknown").to_owned(),
            organization,
            wards,
        })
    }
}

/// A subscription in force.
struct Live {
    id: i64,
    /// Who created it, and so who receives its notifications.
    owner: Owner,
    /// The FHIR base URL the subscription was created at (for the notifications' `fullUrl`s).
    base: String,
    /// The resource as created (status and id set by Galen; headers as sent).
    resource: Mutex<Value>,
    topic: Topic,
    /// The filter of the Observation topic.
    query: ObservationQuery,
    /// The patients the clinical topics are filtered to (`None`: all).
    patients: Option<std::collections::BTreeSet<galen_model::PatientId>>,
    channel: Channel,
    /// The rest-hook endpoint (empty for a websocket).
    endpoint: String,
    headers: Vec<(String, String)>,
    content: Content,
    heartbeat: Option<Duration>,
    max_count: usize,
    /// The websocket connections bound now.
    sockets: Mutex<Vec<SocketSink>>,
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
    /// Websocket binding tokens issued and not yet used, by token.
    tokens: Mutex<HashMap<String, Binding>>,
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
    channel: Channel,
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
                        "a patient filter value is not a Patient reference (Patient/{id})",
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
    let channel_type = match channel["type"].as_str() {
        Some("rest-hook") => Channel::RestHook,
        Some("websocket") => Channel::Websocket,
        Some(other) => {
            return Err(invalid(
                "Subscription.channel.type",
                format!("channel {other:?} is not offered; use rest-hook or websocket"),
            ));
        }
        None => {
            return Err(invalid(
                "Subscription.channel.type",
                "the channel type is required: rest-hook or websocket",
            ));
        }
    };
    // A websocket subscription is reached through $get-ws-binding-token: no endpoint.
    let endpoint = match channel_type {
        Channel::RestHook => channel["endpoint"].as_str().unwrap_or("").to_owned(),
        Channel::Websocket => String::new(),
    };
    if channel_type == Channel::RestHook
        && (!(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.parse::<hyper::Uri>().is_err())
    {
        return Err(invalid(
            "Subscription.channel.endpoint",
            "an http:// or https:// URL is required",
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
        channel: channel_type,
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
    owner: Owner,
    base: String,
    resource: Value,
    status: String,
    events: u64,
) -> FhirResult<Arc<Live>> {
    let parsed = parse(&resource)?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let live = Arc::new(Live {
        id,
        owner,
        base,
        resource: Mutex::new(resource),
        topic: parsed.topic,
        query: parsed.query,
        patients: parsed.patients,
        channel: parsed.channel,
        endpoint: parsed.endpoint,
        headers: parsed.headers,
        content: parsed.content,
        heartbeat: parsed.heartbeat,
        max_count: parsed.max_count,
        sockets: Mutex::new(Vec::new()),
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
        let Some(owner) = Owner::from_json(&body["owner"]) else {
            tracing::error!(
                subscription = stored.id,
                "a stored subscription's owner is unreadable; left off"
            );
            continue;
        };
        if let Err(error) = activate(
            app,
            stored.id,
            owner,
            base,
            resource,
            stored.status,
            stored.events,
        ) {
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
                let affected: Vec<Arc<Live>> = snapshot(app)
                    .into_iter()
                    .filter(|live| {
                        (live.topic == Topic::Observation) == (topic == Topic::Observation)
                    })
                    .collect();
                if affected.is_empty() {
                    // Nobody subscribed to what was missed: nothing lost for anyone.
                    tracing::debug!(missed, ?topic, "subscription dispatch skipped ahead");
                    continue;
                }
                tracing::error!(
                    missed,
                    ?topic,
                    subscriptions = affected.len(),
                    "subscription dispatch fell behind; subscriptions put in error"
                );
                for live in affected {
                    set_status(app, &live, "error").await;
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
                patient,
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
        // Without a clinical subscription nothing is read (the feed is busy under load); band
        // tracking starts afresh with the first one, whose first score per patient is no change.
        if !snapshot(&app)
            .iter()
            .any(|live| live.topic != Topic::Observation)
        {
            bands.clear();
            announced.clear();
            continue;
        }
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
                        patient: Some(output.patient),
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
                        patient: Some(output.patient),
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

/// What the store keeps of a subscription: the resource, the base URL it was created at, and who
/// created it.
fn stored_body(base: &str, resource: &Value, owner: &Owner) -> String {
    json!({ "base": base, "resource": resource, "owner": owner.to_json() }).to_string()
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
        (stored_body(&live.base, &resource, &live.owner), status)
    };
    let events = live.reserved.load(Ordering::Relaxed);
    if let Err(error) = app
        .0
        .store
        .update_subscription(live.id, body, status, events, Vec::new())
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
async fn post(client: &OutboundClient, live: &Live, body: &Value) -> bool {
    let mut request =
        hyper::Request::post(&live.endpoint).header("content-type", "application/fhir+json");
    for (name, value) in &live.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let Ok(request) = request.body(Full::new(Bytes::from(body.to_string()))) else {
        return false;
    };
    let failure = match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => return true,
        Ok(Ok(response)) => format!("HTTP {}", response.status().as_u16()),
        Ok(Err(error)) => crate::tls::error_chain(&error),
        Err(_) => "timed out".to_owned(),
    };
    // The endpoint is not logged: its query may carry a credential.
    tracing::warn!(subscription = live.id, error = %failure, "rest-hook delivery failed");
    false
}

/// Delivers a notification, retrying with back-off; `true` when delivered.
async fn deliver(client: &OutboundClient, live: &Live, body: &Value) -> bool {
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

/// The events of `batch` that `live` may deliver: all of them for a subscription acting for the
/// hospital, otherwise those whose patient's consents permit sharing with the subscription's
/// organisation (and those of no patient). Every decision is audited (one record per event of a
/// patient) before anything is delivered; when the records cannot be written, nothing is.
async fn screen(app: &App, live: &Live, batch: Vec<Event>) -> Vec<Event> {
    // First the owner's ward scope: a subscription never carries more than its creator may read.
    let batch: Vec<Event> = batch
        .into_iter()
        .filter(|event| live.owner.may_receive(app, event.patient))
        .collect();
    let Some(disclosure) = live.owner.disclosure() else {
        return batch;
    };
    let at = app.0.clock.now();
    let resource = format!("Subscription/{}", live.id);
    let mut records = Vec::new();
    let mut kept = Vec::with_capacity(batch.len());
    for event in batch {
        let Some(patient) = event.patient else {
            kept.push(event);
            continue;
        };
        let decision = app.0.consents.decide(patient, &disclosure, at);
        records.push(decision_record(
            at,
            &live.owner.actor,
            &live.owner.role,
            &resource,
            "subscription",
            patient,
            &disclosure,
            &decision,
        ));
        if decision.permitted {
            kept.push(event);
        }
    }
    if !records.is_empty() && !app.0.audit.record_all(records).await {
        tracing::error!(
            subscription = live.id,
            "consent decisions could not be audited; the notification is withheld"
        );
        return Vec::new();
    }
    kept
}

async fn worker(app: App, live: Arc<Live>, mut receiver: mpsc::UnboundedReceiver<Event>) {
    let client = app.0.outbound.clone();
    let mut shutdown = app.0.shutdown.subscribe();
    // The handshake, for a new subscription.
    let requested = *live
        .status
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        == "requested";
    if requested {
        let status = match live.channel {
            Channel::RestHook => {
                let handshake = notification(&app, &live, "handshake", &[], &[]);
                if deliver(&client, &live, &handshake).await {
                    "active"
                } else {
                    "error"
                }
            }
            // Nothing to check: each connection gets its handshake when it binds.
            Channel::Websocket => "active",
        };
        set_status(&app, &live, status).await;
    }
    let mut last_sent = Instant::now();
    loop {
        if !in_force(&app, &live) {
            // Deleted: no more notifications, heartbeats included.
            return;
        }
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
            if live.heartbeat.is_some() && in_force(&app, &live) {
                let heartbeat = notification(&app, &live, "heartbeat", &[], &[]);
                match live.channel {
                    Channel::RestHook => {
                        if post(&client, &live, &heartbeat).await {
                            set_status(&app, &live, "active").await;
                        }
                    }
                    Channel::Websocket => {
                        send_to_sockets(&live, &heartbeat);
                    }
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
        // Events the patients' consents withhold from this subscription's recipient are dropped
        // here, before they are numbered: they were never the recipient's to see.
        let batch = screen(&app, &live, batch).await;
        if batch.is_empty() {
            continue;
        }
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
        // Nobody to send a websocket's events to: they stay numbered (the gap shows), unread.
        let listened = live.channel == Channel::RestHook || has_sockets(&live);
        let resources = if live.content == Content::FullResource && listened {
            resolve(&app, &batch).await
        } else {
            Vec::new()
        };
        let body = notification(&app, &live, "event-notification", &numbered, &resources);
        if live.channel == Channel::Websocket {
            if !send_to_sockets(&live, &body) {
                tracing::debug!(
                    subscription = live.id,
                    events = batch.len(),
                    "no websocket bound: events counted, not sent"
                );
            }
            last_sent = Instant::now();
            continue;
        }
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
    record: crate::audit::WriteRecord,
    principal: crate::access::Principal,
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
    let parsed = parse(&resource)?;
    // Notifications carry the topic's resources: a machine client needs to read and search them.
    let focus = parsed.topic.focus();
    let needed =
        crate::access::smart::Permissions::READ.and(crate::access::smart::Permissions::SEARCH);
    if principal
        .smart
        .as_ref()
        .is_some_and(|grant| !grant.scopes.allows(focus, needed))
    {
        return Err(super::forbidden(&format!(
            "the access token's scopes do not grant {focus}.rs, which this topic's notifications carry"
        )));
    }
    if let Some(object) = resource.as_object_mut() {
        object.remove("id");
        object.remove("meta");
    }
    resource["status"] = json!("requested");
    let base = base_url(&headers);
    let owner = Owner::of(&principal);
    let id = app
        .0
        .store
        .create_subscription(
            stored_body(&base, &resource, &owner),
            "requested".into(),
            record.records(),
        )
        .await?;
    let live = activate(&app, id, owner, base, resource, "requested".into(), 0)?;
    tracing::info!(subscription = id, "FHIR subscription created");
    let mut answer = HeaderMap::new();
    if let Ok(location) = format!("{}/Subscription/{id}", base_url(&headers)).parse() {
        answer.insert(axum::http::header::LOCATION, location);
    }
    Ok((
        record.stored(),
        fhir_response(StatusCode::CREATED, &served(&live), answer),
    )
        .into_response())
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

pub(crate) async fn delete(
    State(app): State<App>,
    record: crate::audit::WriteRecord,
    Path(id): Path<String>,
) -> FhirResult<Response> {
    let live = find(&app, &id)?;
    app.0
        .subscriptions
        .live
        .write()
        .unwrap_or_else(|poison| poison.into_inner())
        .remove(&live.id);
    unbind_sockets(&live);
    app.0
        .store
        .delete_subscription(live.id, record.records())
        .await?;
    tracing::info!(subscription = live.id, "FHIR subscription deleted");
    Ok((record.stored(), StatusCode::NO_CONTENT).into_response())
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

/// Whether `live` is still in force (not deleted).
fn in_force(app: &App, live: &Arc<Live>) -> bool {
    app.0
        .subscriptions
        .live
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .get(&live.id)
        .is_some_and(|current| Arc::ptr_eq(current, live))
}

/// Whether a websocket connection is bound to `live`.
fn has_sockets(live: &Live) -> bool {
    !live
        .sockets
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .is_empty()
}

/// Queues a notification for every websocket connection bound to `live`; `true` when at least
/// one took it. A connection whose queue is full fell behind: it is unbound and told to close,
/// so that its client reconnects and looks for what it missed instead of missing it silently.
fn send_to_sockets(live: &Live, notification: &Value) -> bool {
    let text = Utf8Bytes::from(notification.to_string());
    let mut sockets = live
        .sockets
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let mut sent = false;
    sockets.retain(
        |sink| match sink.sender.try_send(Outgoing::Text(text.clone())) {
            Ok(()) => {
                sent = true;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    subscription = live.id,
                    "a websocket client fell behind; its connection is closed"
                );
                sink.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        },
    );
    sent
}

/// Unbinds every connection from a deleted subscription.
fn unbind_sockets(live: &Live) {
    let sockets = std::mem::take(
        &mut *live
            .sockets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()),
    );
    for sink in sockets {
        if sink.sender.try_send(Outgoing::Unbound(live.id)).is_err() {
            sink.overflow.notify_one();
        }
    }
}

/// The URL of the websocket endpoint as the client reached this server (`ws://` or `wss://`).
fn websocket_url(headers: &HeaderMap) -> String {
    let base = base_url(headers);
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", "localhost/fhir"));
    let host = rest.strip_suffix("/fhir").unwrap_or(rest);
    let scheme = if scheme == "https" { "wss" } else { "ws" };
    format!("{scheme}://{host}{WEBSOCKET_PATH}")
}

/// `GET|POST /fhir/Subscription/{id}/$get-ws-binding-token`: a token that binds one websocket
/// connection to this subscription, valid once within [`TOKEN_LIFETIME`], and where to connect.
pub(crate) async fn binding_token(
    State(app): State<App>,
    principal: crate::access::Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let live = find(&app, &id)?;
    // Whoever binds receives the notifications: an organisation's account may bind only its own
    // organisation's subscriptions, whose events its patients' consents were checked against.
    if principal
        .organization
        .as_ref()
        .is_some_and(|organization| live.owner.organization.as_ref() != Some(organization))
    {
        return Err(super::forbidden(
            "this subscription's notifications go to another organisation",
        ));
    }
    if live.channel != Channel::Websocket {
        return Err(invalid(
            "Subscription.channel.type",
            "binding tokens are for websocket subscriptions; this one is rest-hook",
        ));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            galen_fhir::IssueType::Exception,
            "the system random generator failed",
        )
    })?;
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let now = Instant::now();
    {
        let mut tokens = app
            .0
            .subscriptions
            .tokens
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        tokens.retain(|_, binding| binding.expires > now);
        if tokens.len() >= MAX_TOKENS {
            return Err(FhirError::new(
                StatusCode::TOO_MANY_REQUESTS,
                galen_fhir::IssueType::Throttled,
                "too many binding tokens outstanding; use or let expire the ones issued",
            ));
        }
        tokens.insert(
            token.clone(),
            Binding {
                subscription: live.id,
                expires: now + TOKEN_LIFETIME,
            },
        );
    }
    let lifetime = i64::try_from(TOKEN_LIFETIME.as_micros()).unwrap_or(i64::MAX);
    let expiration = app.0.clock.now().add_micros(lifetime);
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "token", "valueString": token },
            { "name": "expiration", "valueDateTime": expiration.to_rfc3339() },
            { "name": "subscription", "valueString": format!("Subscription/{}", live.id) },
            { "name": "websocket-url", "valueUrl": websocket_url(&headers) },
        ]
    });
    tracing::info!(subscription = live.id, "websocket binding token issued");
    Ok(fhir_response(StatusCode::OK, &parameters, HeaderMap::new()))
}

/// `GET /fhir/$subscription-ws`: the websocket endpoint (open: binding tokens authenticate).
pub(crate) async fn websocket(
    State(app): State<App>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade
            .max_message_size(MAX_CLIENT_MESSAGE)
            .max_frame_size(MAX_CLIENT_MESSAGE)
            .on_upgrade(move |socket| serve_socket(app, socket)),
        Err(_) => FhirError::new(
            StatusCode::UPGRADE_REQUIRED,
            galen_fhir::IssueType::NotSupported,
            "connect with a WebSocket client, then send 'bind-with-token <token>' with a token \
             from Subscription/{id}/$get-ws-binding-token",
        )
        .into_response(),
    }
}

/// Closes a connection with `code` and `reason` (sent as the close frame's reason).
async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Binds the connection whose queue is `sender` with `message` (`bind-with-token <token>`): the
/// token is used up, the handshake queued first, then the connection is registered, so the
/// handshake comes before every notification. `Err` with what the client is told.
fn bind(
    app: &App,
    message: &str,
    sender: &mpsc::Sender<Outgoing>,
    overflow: &Arc<Notify>,
) -> Result<i64, &'static str> {
    let token = message
        .trim()
        .strip_prefix("bind-with-token")
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or("send 'bind-with-token <token>'")?;
    let binding = app
        .0
        .subscriptions
        .tokens
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .remove(token)
        .filter(|binding| binding.expires > Instant::now())
        .ok_or(
            "the binding token is unknown, used or expired; get one from $get-ws-binding-token",
        )?;
    let live = app
        .0
        .subscriptions
        .live
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .get(&binding.subscription)
        .cloned()
        .ok_or("the subscription no longer exists")?;
    let handshake = notification(app, &live, "handshake", &[], &[]);
    sender
        .try_send(Outgoing::Text(Utf8Bytes::from(handshake.to_string())))
        .map_err(|_| "too many notifications waiting; reconnect")?;
    live.sockets
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(SocketSink {
            sender: sender.clone(),
            overflow: overflow.clone(),
        });
    Ok(live.id)
}

/// One websocket connection: binds with tokens, then forwards its subscriptions' notifications
/// until the client leaves, the connection falls behind, its subscriptions are deleted or the
/// server shuts down.
async fn serve_socket(app: App, mut socket: WebSocket) {
    let mut shutdown = app.0.shutdown.subscribe();
    let (sender, mut queue) = mpsc::channel::<Outgoing>(SOCKET_QUEUE);
    let overflow = Arc::new(Notify::new());
    let mut bound: Vec<i64> = Vec::new();
    let bind_deadline = tokio::time::sleep(BIND_TIMEOUT);
    tokio::pin!(bind_deadline);
    let ending = loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => match bind(&app, text.as_str(), &sender, &overflow) {
                    Ok(id) => {
                        tracing::info!(subscription = id, "websocket bound to a subscription");
                        bound.push(id);
                    }
                    Err(reason) => {
                        tracing::info!("a websocket bind was refused");
                        let outcome = galen_fhir::outcome::OutcomeBuilder::new()
                            .error(galen_fhir::IssueType::Security, reason)
                            .build();
                        let text = serde_json::to_string(&outcome).unwrap_or_default();
                        let _ = socket.send(Message::Text(Utf8Bytes::from(text))).await;
                        break Some((close_code::POLICY, reason));
                    }
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                // Pings are answered by the library; nothing else is expected.
                Some(Ok(_)) => {}
            },
            outgoing = queue.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        break None;
                    }
                }
                Some(Outgoing::Unbound(id)) => {
                    bound.retain(|bound| *bound != id);
                    if bound.is_empty() {
                        break Some((close_code::NORMAL, "the subscription was deleted"));
                    }
                }
                None => break None,
            },
            () = overflow.notified() => {
                break Some((close_code::POLICY, "too slow: notifications were dropped; reconnect and search for what was missed"));
            }
            () = &mut bind_deadline, if bound.is_empty() => {
                break Some((close_code::POLICY, "send 'bind-with-token <token>' first"));
            }
            _ = shutdown.changed() => break Some((close_code::AWAY, "the server is shutting down")),
        }
    };
    // Unbind from every subscription still in force.
    let subscriptions = snapshot(&app);
    for live in subscriptions.iter().filter(|live| bound.contains(&live.id)) {
        live.sockets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|sink| !sink.sender.same_channel(&sender));
    }
    if let Some((code, reason)) = ending {
        close(socket, code, reason).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(channel: Value) -> Value {
        json!({
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "test",
            "criteria": TOPIC_OBSERVATION,
            "channel": channel,
        })
    }

    #[test]
    fn websocket_channel_needs_no_endpoint() {
        let parsed = parse(&subscription(json!({
            "type": "websocket",
            "payload": "application/fhir+json",
        })))
        .unwrap_or_else(|_| panic!("a websocket subscription parses"));
        assert_eq!(parsed.channel, Channel::Websocket);
        assert!(parsed.endpoint.is_empty());
        assert_eq!(parsed.content, Content::IdOnly);
        let rest_hook = parse(&subscription(json!({ "type": "rest-hook" })));
        assert!(rest_hook.is_err(), "rest-hook still needs an endpoint");
        let email = parse(&subscription(json!({ "type": "email" })));
        assert!(email.is_err(), "other channels are refused");
    }

    #[test]
    fn websocket_url_follows_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::HOST,
            axum::http::HeaderValue::from_static("galen.example:8080"),
        );
        assert_eq!(
            websocket_url(&headers),
            "ws://galen.example:8080/fhir/$subscription-ws"
        );
        headers.insert(
            "x-forwarded-proto",
            axum::http::HeaderValue::from_static("https"),
        );
        assert_eq!(
            websocket_url(&headers),
            "wss://galen.example:8080/fhir/$subscription-ws"
        );
    }
}
