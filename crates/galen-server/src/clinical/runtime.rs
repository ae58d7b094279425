//! The engine task and the persister.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use galen_clinical::{
    AlarmId, AlarmState, AlarmView, ClinicalConfig, Engine, Entry, EntryError, Input, Output,
    PatientView, Priority, RestoredAlarm,
};
use galen_model::{Clock, PatientId, Timestamp, VitalSign};
use galen_store::{AlarmRecord, FilteredRecord, ScoreRecord, Store};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::TIMER_GRACE_MICROS;
use super::encode::{alarm_json, alarm_record, score_json, score_record};
use super::webhook::{WebhookEndpoint, Webhooks};

/// Settings of the clinical runtime.
#[derive(Debug, Clone)]
pub struct ClinicalSettings {
    /// Rules, tables and policies.
    pub config: Arc<ClinicalConfig>,
    /// Webhook endpoints notified of alarm transitions.
    pub webhooks: Vec<WebhookEndpoint>,
    /// How often timers are advanced.
    pub tick: Duration,
    /// After a restart, how much recent history warms the engine up (readings, trends).
    pub warmup_minutes: u32,
}

impl Default for ClinicalSettings {
    fn default() -> ClinicalSettings {
        ClinicalSettings {
            config: Arc::new(ClinicalConfig::builtin()),
            webhooks: Vec::new(),
            tick: Duration::from_millis(250),
            warmup_minutes: 75,
        }
    }
}

/// A score change or alarm transition, rendered once for every live subscriber.
#[derive(Debug, Clone)]
pub struct ClinicalEvent {
    /// `alarm` or `score`.
    pub kind: &'static str,
    /// The patient.
    pub patient: PatientId,
    /// The JSON body.
    pub json: String,
    /// When the input that caused it was received by the engine (for latency measurement).
    pub received: std::time::Instant,
}

enum Command {
    Inputs(Vec<Input>, std::time::Instant),
    Entry(Entry, oneshot::Sender<Result<(), EntryError>>),
    View(PatientId, oneshot::Sender<Option<PatientView>>),
    OpenAlarms(oneshot::Sender<Vec<AlarmView>>),
    Advance(Timestamp, oneshot::Sender<()>),
    Sync(oneshot::Sender<()>),
}

enum Persist {
    Records(Vec<ScoreRecord>, Vec<AlarmRecord>, Vec<FilteredRecord>),
    Barrier(oneshot::Sender<()>),
}

/// Counters of the clinical runtime.
#[derive(Debug, Default)]
pub(crate) struct ClinicalMetrics {
    pub(crate) inputs: AtomicU64,
    pub(crate) scores: AtomicU64,
    pub(crate) alarm_events: AtomicU64,
    pub(crate) raised: [AtomicU64; 3],
    pub(crate) persist_failures: AtomicU64,
    pub(crate) persist_queue: AtomicU64,
    /// Measurement received by the engine to alarm event written to a live stream.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
}

/// Upper bounds (seconds) of the alarm delivery latency histogram.
const LATENCY_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

impl ClinicalMetrics {
    /// Records the time from an input reaching the engine to its alarm event being written to a
    /// live subscriber.
    pub(crate) fn alarm_delivered(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Handle to the clinical runtime; cheap to clone.
#[derive(Clone)]
pub struct Clinical {
    commands: mpsc::Sender<Command>,
    config: Arc<ClinicalConfig>,
    events: broadcast::Sender<Arc<ClinicalEvent>>,
    pub(crate) metrics: Arc<ClinicalMetrics>,
    pub(crate) webhooks: Webhooks,
}

impl std::fmt::Debug for Clinical {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Clinical")
            .field("config_version", &self.config.version)
            .finish_non_exhaustive()
    }
}

/// The runtime stopped (shutting down); nothing more is processed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the clinical engine is not running")]
pub struct Stopped;

impl Clinical {
    /// Starts the engine task, warmed up from `store`: recent measurements of current
    /// assignments and staff entries rebuild readings and trends, then open alarms are restored.
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: ClinicalSettings,
        assigned: Vec<(PatientId, galen_model::DeviceId, Timestamp)>,
        outbound: crate::tls::OutboundClient,
    ) -> galen_store::Result<Clinical> {
        let config = settings.config.clone();
        let mut engine = Engine::new(config.clone());
        warm_up(
            &mut engine,
            store.as_ref(),
            clock.now(),
            &settings,
            &assigned,
        )
        .await?;
        let (commands, receiver) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(4096);
        let metrics = Arc::new(ClinicalMetrics::default());
        let (persist, persist_receiver) = mpsc::unbounded_channel();
        tokio::spawn(persister(store.clone(), persist_receiver, metrics.clone()));
        let webhooks = Webhooks::start(settings.webhooks.clone(), store, clock.clone(), outbound);
        let clinical = Clinical {
            commands,
            config,
            events,
            metrics,
            webhooks,
        };
        tokio::spawn(run(
            engine,
            receiver,
            clinical.clone(),
            persist,
            clock,
            settings.tick,
        ));
        Ok(clinical)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<ClinicalConfig> {
        &self.config
    }

    /// Appends the clinical metrics in Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let metrics = &self.metrics;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP galen_clinical_inputs_total Measurements and device events evaluated by the clinical engine.
# TYPE galen_clinical_inputs_total counter
galen_clinical_inputs_total {}
# HELP galen_clinical_scores_total Score changes produced.
# TYPE galen_clinical_scores_total counter
galen_clinical_scores_total {}
# HELP galen_alarm_transitions_total Alarm transitions produced.
# TYPE galen_alarm_transitions_total counter
galen_alarm_transitions_total {}
# HELP galen_alarms_raised_total Alarms raised, by priority.
# TYPE galen_alarms_raised_total counter
",
            load(&metrics.inputs),
            load(&metrics.scores),
            load(&metrics.alarm_events),
        );
        for priority in Priority::ALL {
            let _ = writeln!(
                out,
                "galen_alarms_raised_total{{priority=\"{}\"}} {}",
                priority.code(),
                load(&metrics.raised[priority as usize])
            );
        }
        let _ = write!(
            out,
            "# HELP galen_clinical_persist_failures_total Failed attempts to store scores and alarm transitions (retried).
# TYPE galen_clinical_persist_failures_total counter
galen_clinical_persist_failures_total {}
# HELP galen_clinical_persist_queue Output batches waiting to be stored.
# TYPE galen_clinical_persist_queue gauge
galen_clinical_persist_queue {}
# HELP galen_alarm_event_latency_seconds From a measurement reaching the engine to its alarm event written to a live stream.
# TYPE galen_alarm_event_latency_seconds histogram
",
            load(&metrics.persist_failures),
            load(&metrics.persist_queue),
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&metrics.latency_buckets) {
            let _ = writeln!(
                out,
                "galen_alarm_event_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&metrics.latency_count);
        let _ = write!(
            out,
            "galen_alarm_event_latency_seconds_bucket{{le=\"+Inf\"}} {count}
galen_alarm_event_latency_seconds_sum {}
galen_alarm_event_latency_seconds_count {count}
",
            load(&metrics.latency_sum_micros) as f64 / 1e6
        );
        let webhooks = &self.webhooks.metrics;
        let _ = write!(
            out,
            "# HELP galen_webhook_deliveries_total Webhook notifications delivered (2xx).
# TYPE galen_webhook_deliveries_total counter
galen_webhook_deliveries_total {}
# HELP galen_webhook_failed_attempts_total Webhook attempts that failed (retried with back-off).
# TYPE galen_webhook_failed_attempts_total counter
galen_webhook_failed_attempts_total {}
# HELP galen_webhook_abandoned_total Webhook notifications given up after the last attempt.
# TYPE galen_webhook_abandoned_total counter
galen_webhook_abandoned_total {}
# HELP galen_webhook_dropped_total Webhook notifications dropped because an endpoint's queue was full.
# TYPE galen_webhook_dropped_total counter
galen_webhook_dropped_total {}
",
            load(&webhooks.delivered),
            load(&webhooks.failed_attempts),
            load(&webhooks.abandoned),
            load(&webhooks.dropped),
        );
    }

    /// Subscribes to live score and alarm events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ClinicalEvent>> {
        self.events.subscribe()
    }

    /// Hands inputs to the engine, in order. Waits only if the engine's queue is full
    /// (back-pressure), never for evaluation.
    pub async fn submit(&self, inputs: Vec<Input>) -> Result<(), Stopped> {
        if inputs.is_empty() {
            return Ok(());
        }
        self.commands
            .send(Command::Inputs(inputs, std::time::Instant::now()))
            .await
            .map_err(|_| Stopped)
    }

    /// Applies a staff entry (already stored) and returns the engine's verdict.
    pub async fn apply(&self, entry: Entry) -> Result<Result<(), EntryError>, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Entry(entry, reply))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// A patient's current clinical state.
    pub async fn view(&self, patient: PatientId) -> Result<Option<PatientView>, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::View(patient, reply))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Every open alarm.
    pub async fn open_alarms(&self) -> Result<Vec<AlarmView>, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::OpenAlarms(reply))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Fires timers due up to `now` (tests and replays; the runtime also ticks by itself).
    pub async fn advance(&self, now: Timestamp) -> Result<(), Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Advance(now, reply))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Returns once everything submitted before has been evaluated and its outputs stored.
    pub async fn sync(&self) -> Result<(), Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Sync(reply))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// Rebuilds readings, trends and device activity from recent history, then restores open alarms.
async fn warm_up(
    engine: &mut Engine,
    store: &dyn Store,
    now: Timestamp,
    settings: &ClinicalSettings,
    assigned: &[(PatientId, galen_model::DeviceId, Timestamp)],
) -> galen_store::Result<()> {
    let from = now.add_micros(-i64::from(settings.warmup_minutes) * 60_000_000);
    let mut inputs: Vec<Input> = Vec::new();
    for (patient, device, since) in assigned {
        let start = from.max(*since);
        for vital in VitalSign::ALL {
            for point in store
                .range(*device, vital, start, now.add_micros(1))
                .await?
            {
                inputs.push(Input::Measurement {
                    patient: *patient,
                    device: *device,
                    vital,
                    value: point.value,
                    time: point.time,
                });
            }
        }
    }
    // Staff entries: settings (scale, overrides) from all time, observations from the longest
    // freshness window; alarm actions are reflected in the restored alarms instead.
    let longest = settings
        .config
        .freshness
        .max_age_seconds
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    let observed_since = now.add_micros(-i64::from(longest) * 1_000_000);
    let mut records = store
        .entries_of_kinds(
            &["spo2_scale", "limit_override", "clear_override"],
            Timestamp::from_micros(0),
            now.add_micros(1),
        )
        .await?;
    records.extend(
        store
            .entries_of_kinds(
                &["consciousness", "oxygen"],
                observed_since,
                now.add_micros(1),
            )
            .await?,
    );
    for record in records {
        if let Ok(entry) = super::entries::decode(&record) {
            inputs.push(Input::Entry(entry.into_engine(
                record.id,
                record.patient,
                record.time,
                record.author,
            )));
        }
    }
    inputs.sort_by_key(Input::time);
    engine.set_warming(true);
    let mut discarded = Vec::new();
    for input in &inputs {
        let _ = engine.handle(input, &mut discarded);
        discarded.clear();
    }
    engine.set_warming(false);
    for record in store.open_alarms().await? {
        if let Some(restored) = restored_alarm(&record) {
            engine.restore(&restored);
        }
    }
    Ok(())
}

fn restored_alarm(record: &AlarmRecord) -> Option<RestoredAlarm> {
    let body: serde_json::Value = serde_json::from_str(&record.body).ok()?;
    let time = |name: &str| {
        body.get(name)
            .and_then(serde_json::Value::as_str)
            .and_then(|text| Timestamp::parse_rfc3339(text).ok())
    };
    Some(RestoredAlarm {
        alarm: AlarmId::parse(&record.alarm)?,
        rule: record.rule.clone(),
        device: body
            .get("device")
            .and_then(serde_json::Value::as_i64)
            .map(galen_model::DeviceId),
        priority: Priority::parse(&record.priority)?,
        state: AlarmState::parse(&record.state)?,
        raised_at: time("raised_at")?,
        escalation_level: body
            .get("escalation_level")
            .and_then(serde_json::Value::as_u64)
            .and_then(|level| u8::try_from(level).ok())
            .unwrap_or(0),
        silenced_until: time("silenced_until"),
        last_transition: record.time,
        value: body.get("value").and_then(serde_json::Value::as_f64),
        threshold: body.get("threshold").and_then(serde_json::Value::as_f64),
    })
}

async fn run(
    mut engine: Engine,
    mut receiver: mpsc::Receiver<Command>,
    clinical: Clinical,
    persist: mpsc::UnboundedSender<Persist>,
    clock: Arc<dyn Clock>,
    tick: Duration,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outputs = Vec::new();
    loop {
        let mut received = std::time::Instant::now();
        tokio::select! {
            command = receiver.recv() => {
                let Some(command) = command else { break };
                let mut next = Some(command);
                // Drain what is queued, so one persist batch covers many inputs.
                let mut budget = 256;
                while let Some(command) = next.take() {
                    match command {
                        Command::Inputs(inputs, at) => {
                            received = received.min(at);
                            clinical.metrics.inputs.fetch_add(inputs.len() as u64, Ordering::Relaxed);
                            for input in &inputs {
                                // Device inputs cannot be refused.
                                let _ = engine.handle(input, &mut outputs);
                            }
                        }
                        Command::Entry(entry, reply) => {
                            let verdict = engine.handle(&Input::Entry(entry), &mut outputs);
                            // Published (and queued for storage) before the operator is answered.
                            publish(&clinical, &persist, &mut outputs, received);
                            let _ = reply.send(verdict);
                        }
                        Command::View(patient, reply) => {
                            let _ = reply.send(engine.view(patient));
                        }
                        Command::OpenAlarms(reply) => {
                            let _ = reply.send(engine.open_alarms());
                        }
                        Command::Advance(now, reply) => {
                            engine.advance(now, &mut outputs);
                            publish(&clinical, &persist, &mut outputs, received);
                            let _ = reply.send(());
                        }
                        Command::Sync(reply) => {
                            publish(&clinical, &persist, &mut outputs, received);
                            let _ = persist.send(Persist::Barrier(reply));
                        }
                    }
                    budget -= 1;
                    if budget > 0 {
                        next = receiver.try_recv().ok();
                    }
                }
            }
            _ = ticker.tick() => {
                let now = clock.now().add_micros(-TIMER_GRACE_MICROS);
                engine.advance(now, &mut outputs);
            }
        }
        publish(&clinical, &persist, &mut outputs, received);
    }
}

/// Renders outputs once, publishes them live, queues them for storage and notification.
fn publish(
    clinical: &Clinical,
    persist: &mpsc::UnboundedSender<Persist>,
    outputs: &mut Vec<Output>,
    received: std::time::Instant,
) {
    if outputs.is_empty() {
        return;
    }
    let config = &clinical.config;
    let mut scores = Vec::new();
    let mut alarms = Vec::new();
    let mut filtered = Vec::new();
    for output in outputs.drain(..) {
        match output {
            Output::Filtered(condition) => filtered.push(filtered_record(config, &condition)),
            Output::Score(change) => {
                let json =
                    score_json(config, change.table, &change.score, change.patient).to_string();
                clinical.metrics.scores.fetch_add(1, Ordering::Relaxed);
                scores.push(score_record(config, &change, json.clone()));
                let _ = clinical.events.send(Arc::new(ClinicalEvent {
                    kind: "score",
                    patient: change.patient,
                    json,
                    received,
                }));
            }
            Output::Alarm(event) => {
                let json = alarm_json(config, &event).to_string();
                clinical
                    .metrics
                    .alarm_events
                    .fetch_add(1, Ordering::Relaxed);
                if event.transition == galen_clinical::Transition::Raised {
                    clinical.metrics.raised[event.priority as usize]
                        .fetch_add(1, Ordering::Relaxed);
                }
                if event.transition.notifies() {
                    clinical.webhooks.notify(&event, &json);
                }
                alarms.push(alarm_record(config, &event, json.clone()));
                let _ = clinical.events.send(Arc::new(ClinicalEvent {
                    kind: "alarm",
                    patient: event.alarm.patient,
                    json,
                    received,
                }));
            }
        }
    }
    clinical
        .metrics
        .persist_queue
        .fetch_add(1, Ordering::Relaxed);
    let _ = persist.send(Persist::Records(scores, alarms, filtered));
}

/// How long the persister gathers outputs before writing them (see [`persister`]).
const PERSIST_GATHER: Duration = Duration::from_millis(50);

/// Stores outputs in batches, at most one write per [`PERSIST_GATHER`]; retries a failed write
/// (outputs are never dropped while the process lives: the engine's state already moved on).
async fn persister(
    store: Arc<dyn Store>,
    mut receiver: mpsc::UnboundedReceiver<Persist>,
    metrics: Arc<ClinicalMetrics>,
) {
    while let Some(first) = receiver.recv().await {
        // Gather for a moment: these writes take SQLite's write lock beside the ingest writer,
        // and fewer, larger transactions leave it more of the lock (and of the disk's fsyncs).
        tokio::time::sleep(PERSIST_GATHER).await;
        let mut scores = Vec::new();
        let mut alarms = Vec::new();
        let mut filtered = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Persist::Records(more_scores, more_alarms, more_filtered) => {
                    metrics.persist_queue.fetch_sub(1, Ordering::Relaxed);
                    scores.extend(more_scores);
                    alarms.extend(more_alarms);
                    filtered.extend(more_filtered);
                }
                Persist::Barrier(reply) => barriers.push(reply),
            }
            if scores.len() + alarms.len() < 10_000 {
                next = receiver.try_recv().ok();
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let stored = match store.append_outputs(scores.clone(), alarms.clone()).await {
                Ok(_) => {
                    scores.clear();
                    alarms.clear();
                    store.append_filtered(filtered.clone()).await
                }
                Err(error) => Err(error),
            };
            match stored {
                Ok(()) => break,
                Err(galen_store::Error::Closed) => return,
                Err(error) => {
                    metrics.persist_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, "storing scores and alarm transitions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        for barrier in barriers {
            let _ = barrier.send(());
        }
    }
}

/// Replays the stored inputs of `[from, to)` through a fresh engine under `config`: every
/// measurement of every device while it was assigned to a patient, and every staff entry, in time
/// order (measurements before entries at the same instant, as the live pipeline delivers them),
/// with timers fired up to `to`. Under the configuration that produced them, the outputs equal the
/// stored scores and alarm transitions of the period when it started from an empty state; under
/// another configuration they show what that configuration would have done (for tuning).
pub async fn replay(
    store: &dyn Store,
    config: Arc<ClinicalConfig>,
    from: Timestamp,
    to: Timestamp,
) -> galen_store::Result<Vec<Output>> {
    let mut inputs: Vec<(Timestamp, u8, Input)> = Vec::new();
    for assignment in store.assignments().await? {
        let start = assignment.details.start.max(from);
        let end = assignment.details.end.unwrap_or(to).min(to);
        if end <= start {
            continue;
        }
        for vital in VitalSign::ALL {
            for point in store
                .range(assignment.details.device, vital, start, end)
                .await?
            {
                inputs.push((
                    point.time,
                    0,
                    Input::Measurement {
                        patient: assignment.details.patient,
                        device: assignment.details.device,
                        vital,
                        value: point.value,
                        time: point.time,
                    },
                ));
            }
        }
        if let Some(end) = assignment.details.end
            && end >= from
            && end < to
        {
            inputs.push((
                end,
                1,
                Input::DeviceReleased {
                    patient: assignment.details.patient,
                    device: assignment.details.device,
                    time: end,
                },
            ));
        }
    }
    for record in store.entries(None, from, to).await? {
        if let Ok(entry) = super::entries::decode(&record) {
            let entry = entry.into_engine(record.id, record.patient, record.time, record.author);
            inputs.push((record.time, 2, Input::Entry(entry)));
        }
    }
    // Stable sort: within a kind, store order (time order for measurements, id order for
    // entries).
    inputs.sort_by_key(|(time, order, _)| (*time, *order));
    let mut engine = Engine::new(config);
    let mut outputs = Vec::new();
    for (_, _, input) in &inputs {
        let _ = engine.handle(input, &mut outputs);
    }
    engine.advance(to, &mut outputs);
    Ok(outputs)
}

fn filtered_record(
    config: &ClinicalConfig,
    condition: &galen_clinical::FilteredCondition,
) -> FilteredRecord {
    FilteredRecord {
        patient: condition.patient,
        rule: config
            .rules
            .get(condition.rule)
            .map_or_else(String::new, |rule| rule.id.clone()),
        onset: condition.onset,
        ended: condition.ended,
    }
}

/// The store records of `outputs`, exactly as the runtime stores them (without `seq`).
pub fn records(
    config: &ClinicalConfig,
    outputs: &[Output],
) -> (Vec<ScoreRecord>, Vec<AlarmRecord>, Vec<FilteredRecord>) {
    let mut scores = Vec::new();
    let mut alarms = Vec::new();
    let mut filtered = Vec::new();
    for output in outputs {
        match output {
            Output::Filtered(condition) => filtered.push(filtered_record(config, condition)),
            Output::Score(change) => {
                let json = score_json(config, change.table, &change.score, change.patient);
                scores.push(score_record(config, change, json.to_string()));
            }
            Output::Alarm(event) => {
                let json = alarm_json(config, event);
                alarms.push(alarm_record(config, event, json.to_string()));
            }
        }
    }
    (scores, alarms, filtered)
}
