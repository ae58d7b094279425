//! The continuous engine: per-patient state, scoring after every input, alarm conditions with
//! delays and hysteresis, and the alarm lifecycle (IEC 60601-1-8 concepts: priority, condition
//! delay, latching, acknowledge, audio pause, escalation).
//!
//! # Time
//! Every input carries the time it happened. Each patient has a monotone clock: an input moves it
//! to the input's time (never back; a late input is processed at the patient's current time).
//! Timers (escalation, end of an audio pause, a silent device, a reading going stale) fire at
//! their due time: before an input at time `t`, every timer due at or before `t` fires, stamped
//! with its own due time; [`Engine::advance`] fires timers up to a time with no input. So the
//! outputs depend only on the inputs and their order, never on when the engine happened to run:
//! replaying the stored inputs in time order reproduces the stored outputs exactly.
//!
//! # Conditions and alarms
//! A rule watches one thing (a limit, a score band, a trend, a device). Its *condition* has a level
//! (a priority) or none. An alarm is raised only when a level has persisted for the rule's delay
//! *and a later input confirms it* ("re-check before notifying", against alarm fatigue), so a
//! spike shorter than the delay raises nothing. A condition ends when the value is back inside
//! the limit by the hysteresis and, if the rule says so, has stayed there for the clear delay.
//! There is at most one open alarm per rule and device (de-duplication); a worse level escalates
//! its priority in place. Every change is an [`AlarmEvent`] with who, when, why and the
//! configuration version.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;

use galen_model::{DeviceId, PatientId, Timestamp, VitalSign};

use crate::config::{ClinicalConfig, Priority, RuleKind, Side, Tier};
use crate::inputs::{
    Consciousness, MeasurementRef, Oxygen, Parameter, Reading, ScoreInputs, Source, Spo2Scale,
    Value,
};
use crate::score::Score;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;

fn seconds(count: u32) -> i64 {
    i64::from(count) * MICROS_PER_SECOND
}

/// An alarm's id: the patient and a number counting that patient's alarms from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlarmId {
    /// The patient.
    pub patient: PatientId,
    /// The patient's alarm number.
    pub number: u32,
}

impl fmt::Display for AlarmId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.patient.0, self.number)
    }
}

impl AlarmId {
    /// Inverse of `Display` (`3-17`).
    pub fn parse(text: &str) -> Option<AlarmId> {
        let (patient, number) = text.split_once('-')?;
        Some(AlarmId {
            patient: PatientId(patient.parse().ok()?),
            number: number.parse().ok()?,
        })
    }
}

/// Where an alarm is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmState {
    /// Condition present, not acknowledged.
    Active,
    /// Condition present, acknowledged: signalling stops until the condition ends or worsens.
    Acknowledged,
    /// Condition ended, but a latching alarm keeps signalling until acknowledged.
    Latched,
    /// Over.
    Resolved,
}

impl AlarmState {
    /// `active`, `acknowledged`, `latched` or `resolved`.
    pub fn code(self) -> &'static str {
        match self {
            AlarmState::Active => "active",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Latched => "latched",
            AlarmState::Resolved => "resolved",
        }
    }

    /// Inverse of [`AlarmState::code`].
    pub fn parse(text: &str) -> Option<AlarmState> {
        [
            AlarmState::Active,
            AlarmState::Acknowledged,
            AlarmState::Latched,
            AlarmState::Resolved,
        ]
        .into_iter()
        .find(|state| state.code() == text)
    }
}

/// What happened to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The condition persisted past its delay: the alarm exists, the first role is notified.
    Raised,
    /// The condition worsened: the priority went up (and any acknowledgement was cleared).
    PriorityEscalated,
    /// Not acknowledged in time: the next role is notified.
    Escalated,
    /// Still not acknowledged at the last role: notified again.
    Reminded,
    /// Someone acknowledged it.
    Acknowledged,
    /// Someone paused its audio signal until a time.
    Silenced,
    /// The audio pause ended with the alarm still unacknowledged.
    SilenceExpired,
    /// The condition ended; a latching alarm stays until acknowledged.
    Latched,
    /// A latched alarm's condition came back.
    ConditionReturned,
    /// The condition ended (or a latched alarm was acknowledged): the alarm is over.
    Resolved,
    /// Someone closed it while its condition was present (for example a false alarm); the rule
    /// raises nothing more until the condition ends.
    ResolvedByUser,
}

impl Transition {
    /// Stable code used in the API and stored records.
    pub fn code(self) -> &'static str {
        match self {
            Transition::Raised => "raised",
            Transition::PriorityEscalated => "priority_escalated",
            Transition::Escalated => "escalated",
            Transition::Reminded => "reminded",
            Transition::Acknowledged => "acknowledged",
            Transition::Silenced => "silenced",
            Transition::SilenceExpired => "silence_expired",
            Transition::Latched => "latched",
            Transition::ConditionReturned => "condition_returned",
            Transition::Resolved => "resolved",
            Transition::ResolvedByUser => "resolved_by_user",
        }
    }

    /// Whether this transition should reach people (webhooks, pagers): raise, worsening,
    /// escalation, reminders and the end of an audio pause.
    pub fn notifies(self) -> bool {
        matches!(
            self,
            Transition::Raised
                | Transition::PriorityEscalated
                | Transition::Escalated
                | Transition::Reminded
                | Transition::SilenceExpired
                | Transition::ConditionReturned
        )
    }
}

/// One alarm transition, as stored and published.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmEvent {
    /// Which alarm.
    pub alarm: AlarmId,
    /// Index of the rule in [`ClinicalConfig::rules`].
    pub rule: usize,
    /// The device, for technical alarms.
    pub device: Option<DeviceId>,
    /// What happened.
    pub transition: Transition,
    /// When (an input's time or a timer's due time).
    pub time: Timestamp,
    /// When the alarm was raised.
    pub raised_at: Timestamp,
    /// Priority after the transition.
    pub priority: Priority,
    /// State after the transition.
    pub state: AlarmState,
    /// Who acted (operator transitions) — `None` for the engine's own.
    pub actor: Option<String>,
    /// Why (operator's reason).
    pub reason: Option<String>,
    /// Escalation level after the transition (0 = first role).
    pub escalation_level: u8,
    /// The role to notify, for notifying transitions.
    pub role: Option<String>,
    /// End of the audio pause, if one is running.
    pub silenced_until: Option<Timestamp>,
    /// The value that raised or last confirmed the condition, when there is one.
    pub value: Option<f64>,
    /// The limit or threshold it was compared with.
    pub threshold: Option<f64>,
    /// The inputs behind the value (measurements, entries).
    pub evidence: Vec<Source>,
    /// Configuration version.
    pub config_version: Arc<str>,
}

/// A score that changed (total, a parameter's points, band or completeness).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreChange {
    /// The patient.
    pub patient: PatientId,
    /// Index of the table in [`ClinicalConfig::tables`].
    pub table: usize,
    /// The score.
    pub score: Score,
    /// Configuration version.
    pub config_version: Arc<str>,
}

/// A condition that ended before its delay ran out, so no alarm was raised: what the condition
/// delay filtered (the delay's effect, for the alarm fatigue report).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilteredCondition {
    /// The patient.
    pub patient: PatientId,
    /// Index of the rule in [`ClinicalConfig::rules`].
    pub rule: usize,
    /// The device, for technical rules.
    pub device: Option<DeviceId>,
    /// When the condition was first observed.
    pub onset: Timestamp,
    /// When it ended.
    pub ended: Timestamp,
}

/// What the engine produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A condition ended without becoming an alarm.
    Filtered(FilteredCondition),
    /// A score changed (boxed: a score is much larger than an alarm event).
    Score(Box<ScoreChange>),
    /// An alarm transition.
    Alarm(Box<AlarmEvent>),
}

/// A per-patient override of a limit rule.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitOverride {
    /// Tiers replacing the rule's (empty: the limit is off for this patient).
    pub tiers: Vec<Tier>,
    /// Until when (exclusive); `None` until cleared.
    pub expires: Option<Timestamp>,
    /// Who set it.
    pub author: String,
    /// Why.
    pub reason: String,
    /// When.
    pub set_at: Timestamp,
}

/// What a staff entry says or does.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    /// Observed level of consciousness.
    Consciousness(Consciousness),
    /// Air or supplemental oxygen.
    Oxygen(Oxygen),
    /// Which SpO2 scale applies (a clinical decision).
    Spo2Scale(Spo2Scale),
    /// Override a limit rule for this patient.
    LimitOverride {
        /// The rule id (`limit.spo2.low`).
        rule: String,
        /// New tiers; empty turns the limit off.
        tiers: Vec<Tier>,
        /// Until when.
        expires: Option<Timestamp>,
    },
    /// Go back to the default limit.
    ClearOverride {
        /// The rule id.
        rule: String,
    },
    /// Acknowledge an alarm.
    Acknowledge(AlarmId),
    /// Pause an alarm's audio signal.
    Silence {
        /// Which alarm.
        alarm: AlarmId,
        /// For how long (at most the configured maximum).
        seconds: u32,
    },
    /// Close an alarm.
    Resolve(AlarmId),
}

/// A staff entry: an input of the engine, stored before it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Stored id (the source of readings it sets).
    pub id: i64,
    /// The patient.
    pub patient: PatientId,
    /// When.
    pub time: Timestamp,
    /// Who.
    pub author: String,
    /// Why (required for overrides, scale changes and closing an alarm).
    pub reason: Option<String>,
    /// What.
    pub kind: EntryKind,
}

/// An input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A stored measurement attributed to a patient.
    Measurement {
        /// The patient.
        patient: PatientId,
        /// The device.
        device: DeviceId,
        /// What.
        vital: VitalSign,
        /// Value in the canonical unit.
        value: f64,
        /// When it was measured.
        time: Timestamp,
    },
    /// A device flagged a value as absent (sensor off, NaN sentinel).
    DataAbsent {
        /// The patient.
        patient: PatientId,
        /// The device.
        device: DeviceId,
        /// When.
        time: Timestamp,
    },
    /// The device's assignment to the patient ended: its technical alarms end and it is no
    /// longer expected to send.
    DeviceReleased {
        /// The patient.
        patient: PatientId,
        /// The device.
        device: DeviceId,
        /// When.
        time: Timestamp,
    },
    /// A staff entry.
    Entry(Entry),
}

impl Input {
    /// The patient the input concerns.
    pub fn patient(&self) -> PatientId {
        match self {
            Input::Measurement { patient, .. }
            | Input::DataAbsent { patient, .. }
            | Input::DeviceReleased { patient, .. } => *patient,
            Input::Entry(entry) => entry.patient,
        }
    }

    /// When it happened.
    pub fn time(&self) -> Timestamp {
        match self {
            Input::Measurement { time, .. }
            | Input::DataAbsent { time, .. }
            | Input::DeviceReleased { time, .. } => *time,
            Input::Entry(entry) => entry.time,
        }
    }
}

/// Why an entry was refused. The refusal is deterministic (it depends only on earlier inputs), so
/// a replay refuses the same entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// No open alarm with that id.
    #[error("alarm {0} is not open")]
    NoSuchAlarm(AlarmId),
    /// The action does not apply in the alarm's state.
    #[error("{0}")]
    Conflict(String),
    /// The entry is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// An open alarm restored from storage after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredAlarm {
    /// Its id.
    pub alarm: AlarmId,
    /// Its rule id.
    pub rule: String,
    /// Its device.
    pub device: Option<DeviceId>,
    /// Priority.
    pub priority: Priority,
    /// State (not resolved).
    pub state: AlarmState,
    /// When raised.
    pub raised_at: Timestamp,
    /// Escalation level reached.
    pub escalation_level: u8,
    /// Audio pause end, if any.
    pub silenced_until: Option<Timestamp>,
    /// Time of its last transition.
    pub last_transition: Timestamp,
    /// The value that raised it.
    pub value: Option<f64>,
    /// The limit it was compared with.
    pub threshold: Option<f64>,
}

/// Per-minute means of one parameter over the last [`crate::config::MAX_TREND_MINUTES`]
/// minutes or fewer: what trend rules compare.
#[derive(Debug, Clone)]
struct MinuteRing {
    parameter: Parameter,
    /// Minute number (since the epoch) of the newest slot.
    head: i64,
    sums: Box<[f32]>,
    counts: Box<[u16]>,
}

impl MinuteRing {
    fn new(parameter: Parameter, minutes: usize) -> MinuteRing {
        MinuteRing {
            parameter,
            head: i64::MIN,
            sums: vec![0.0; minutes].into_boxed_slice(),
            counts: vec![0; minutes].into_boxed_slice(),
        }
    }

    fn len(&self) -> i64 {
        self.sums.len() as i64
    }

    fn slot(&self, minute: i64) -> usize {
        minute.rem_euclid(self.len()) as usize
    }

    fn add(&mut self, time: Timestamp, value: f64) {
        let minute = time.micros().div_euclid(MICROS_PER_MINUTE);
        if self.head == i64::MIN || minute - self.head >= self.len() {
            self.sums.fill(0.0);
            self.counts.fill(0);
            self.head = minute;
        } else if minute > self.head {
            for cleared in self.head + 1..=minute {
                let slot = self.slot(cleared);
                self.sums[slot] = 0.0;
                self.counts[slot] = 0;
            }
            self.head = minute;
        } else if self.head - minute >= self.len() {
            return;
        }
        let slot = self.slot(minute);
        self.sums[slot] += value as f32;
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// Mean of the minutes `[last - span + 1, last]`, if any of them has data.
    fn mean(&self, last: i64, span: i64) -> Option<f64> {
        let (mut sum, mut count) = (0.0_f64, 0_u32);
        for minute in last - span + 1..=last {
            if minute > self.head || self.head - minute >= self.len() {
                continue;
            }
            let slot = self.slot(minute);
            sum += f64::from(self.sums[slot]);
            count += u32::from(self.counts[slot]);
        }
        (count > 0).then(|| sum / f64::from(count))
    }
}

/// A rule's condition for one patient (and device, for technical rules).
#[derive(Debug, Clone)]
struct Condition {
    rule: u16,
    device: Option<DeviceId>,
    observed: Option<Priority>,
    /// Since when the level has been at least each priority, continuously.
    since: [Option<Timestamp>; 3],
    /// Since when no level has been observed.
    absent_since: Option<Timestamp>,
    value: Option<f64>,
    threshold: Option<f64>,
    evidence: Option<Source>,
    /// Closed by a user while present: raise nothing until the condition ends.
    suppressed: bool,
    /// Absent for at least the clear delay: over (kept only while a latched alarm needs it).
    ended: bool,
    /// When this episode of the condition began.
    onset: Option<Timestamp>,
    /// Whether this episode raised an alarm.
    raised: bool,
}

#[derive(Debug, Clone)]
struct Alarm {
    id: AlarmId,
    rule: u16,
    device: Option<DeviceId>,
    priority: Priority,
    state: AlarmState,
    raised_at: Timestamp,
    escalation_level: u8,
    next_notify: Option<Timestamp>,
    silenced_until: Option<Timestamp>,
    /// The value and limit that raised the alarm or last worsened it.
    value: Option<f64>,
    threshold: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct DeviceSeen {
    device: DeviceId,
    last_seen: Timestamp,
    /// Learned reporting interval (exponential moving average of the gaps between arrivals more
    /// than half a second apart, so the vitals of one set count once), microseconds.
    interval_micros: Option<f32>,
    silent: bool,
}

/// Gaps shorter than this are parts of one reading set, not reporting intervals.
const SAME_SET_MICROS: i64 = 500_000;

impl DeviceSeen {
    /// When this device counts as silent: more than `after` seconds, or more than `intervals` of
    /// its learned interval if that is longer, after its last data.
    fn silent_at(&self, after: u32, intervals: u32) -> Timestamp {
        let learned = self.interval_micros.map_or(0, |interval| {
            (f64::from(interval) * f64::from(intervals)) as i64
        });
        self.last_seen.add_micros(seconds(after).max(learned) + 1)
    }
}

/// What changed in a score, for deciding whether to emit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ScoreFingerprint {
    total: u16,
    band: u8,
    points: [u8; Parameter::COUNT],
    missing: u8,
}

impl ScoreFingerprint {
    fn of(score: &Score) -> ScoreFingerprint {
        let mut fingerprint = ScoreFingerprint {
            total: score.total,
            band: u8::try_from(score.band).unwrap_or(u8::MAX),
            points: [u8::MAX; Parameter::COUNT],
            missing: 0,
        };
        for (index, points) in score.points.iter().enumerate() {
            if let Some(points) = points {
                fingerprint.points[index] = points.points;
            }
        }
        for (index, missing) in score.missing.iter().enumerate() {
            if missing.is_some() {
                fingerprint.missing |= 1 << index;
            }
        }
        fingerprint
    }
}

#[derive(Debug, Clone)]
struct PatientState {
    id: PatientId,
    clock: Timestamp,
    readings: ScoreInputs,
    rings: Vec<MinuteRing>,
    devices: Vec<DeviceSeen>,
    scores: Vec<Option<ScoreFingerprint>>,
    /// Band index of each table's latest score.
    bands: Vec<Option<usize>>,
    overrides: Vec<(u16, LimitOverride)>,
    conditions: Vec<Condition>,
    alarms: Vec<Alarm>,
    next_alarm: u32,
    rescore_at: Option<Timestamp>,
    /// The earliest due time in the engine's timer heap for this patient.
    scheduled: Option<Timestamp>,
}

/// A read-only view of a patient's current clinical state.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientView {
    /// Newest reading per parameter.
    pub readings: ScoreInputs,
    /// Current score per table (recomputed at the patient's clock).
    pub scores: Vec<Score>,
    /// Open alarms.
    pub alarms: Vec<AlarmView>,
    /// Active limit overrides: rule index and override.
    pub overrides: Vec<(usize, LimitOverride)>,
}

/// An open alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmView {
    /// Id.
    pub id: AlarmId,
    /// Rule index.
    pub rule: usize,
    /// Device of a technical alarm.
    pub device: Option<DeviceId>,
    /// Priority.
    pub priority: Priority,
    /// State.
    pub state: AlarmState,
    /// When raised.
    pub raised_at: Timestamp,
    /// Escalation level.
    pub escalation_level: u8,
    /// Audio pause end.
    pub silenced_until: Option<Timestamp>,
    /// The value that raised the alarm or last worsened it.
    pub value: Option<f64>,
    /// The limit or threshold it was compared with.
    pub threshold: Option<f64>,
}

/// The clinical engine for all patients of a node.
#[derive(Debug)]
pub struct Engine {
    config: Arc<ClinicalConfig>,
    patients: HashMap<PatientId, PatientState>,
    /// Due times of patients' timers (may hold stale entries; checked when popped).
    timers: BinaryHeap<Reverse<(Timestamp, PatientId)>>,
    trended: Vec<(Parameter, usize)>,
    warming: bool,
}

impl Engine {
    /// An engine with no patients.
    pub fn new(config: Arc<ClinicalConfig>) -> Engine {
        let trended = config
            .trended_parameters()
            .into_iter()
            .map(|parameter| {
                let minutes = config
                    .rules
                    .iter()
                    .filter_map(|rule| match rule.kind {
                        RuleKind::Trend {
                            parameter: watched,
                            window_minutes,
                            average_minutes,
                            ..
                        } if watched == parameter => Some(window_minutes + average_minutes),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(1);
                (parameter, minutes as usize)
            })
            .collect();
        Engine {
            config,
            patients: HashMap::new(),
            timers: BinaryHeap::new(),
            trended,
            warming: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<ClinicalConfig> {
        &self.config
    }

    /// While warming (after a restart), inputs update readings, trends and scores but evaluate
    /// no alarm rule and produce no output; open alarms are then restored with
    /// [`Engine::restore`].
    pub fn set_warming(&mut self, warming: bool) {
        self.warming = warming;
    }

    /// Number of patients with state.
    pub fn patient_count(&self) -> usize {
        self.patients.len()
    }

    /// Approximate bytes of state held for one patient (struct plus heap), for capacity planning.
    pub fn patient_state_bytes(&self, patient: PatientId) -> Option<usize> {
        let state = self.patients.get(&patient)?;
        let rings: usize = state
            .rings
            .iter()
            .map(|ring| std::mem::size_of::<MinuteRing>() + ring.sums.len() * 6)
            .sum();
        Some(
            std::mem::size_of::<PatientState>()
                + rings
                + state.devices.capacity() * std::mem::size_of::<DeviceSeen>()
                + state.scores.capacity() * std::mem::size_of::<Option<ScoreFingerprint>>()
                + state.bands.capacity() * std::mem::size_of::<Option<usize>>()
                + state.overrides.capacity() * std::mem::size_of::<(u16, LimitOverride)>()
                + state.conditions.capacity() * std::mem::size_of::<Condition>()
                + state.alarms.capacity() * std::mem::size_of::<Alarm>(),
        )
    }

    fn patient_mut(&mut self, patient: PatientId) -> &mut PatientState {
        let config = &self.config;
        let trended = &self.trended;
        self.patients
            .entry(patient)
            .or_insert_with(|| PatientState {
                id: patient,
                clock: Timestamp::from_micros(i64::MIN),
                readings: ScoreInputs::default(),
                rings: trended
                    .iter()
                    .map(|(parameter, minutes)| MinuteRing::new(*parameter, *minutes))
                    .collect(),
                devices: Vec::new(),
                scores: vec![None; config.tables.len()],
                bands: vec![None; config.tables.len()],
                overrides: Vec::new(),
                conditions: Vec::new(),
                alarms: Vec::new(),
                next_alarm: 1,
                rescore_at: None,
                scheduled: None,
            })
    }

    /// Applies one input, first firing the patient's timers due at or before its time. Outputs
    /// are appended to `out`. An entry the engine refuses changes nothing and returns the reason.
    pub fn handle(&mut self, input: &Input, out: &mut Vec<Output>) -> Result<(), EntryError> {
        let patient_id = input.patient();
        let time = input.time();
        let config = self.config.clone();
        let warming = self.warming;
        let state = self.patient_mut(patient_id);
        let mut context = Context {
            config: &config,
            out,
            warming,
        };
        state.fire_timers(time, &mut context);
        if time > state.clock {
            state.clock = time;
        }
        let result = match input {
            Input::Measurement {
                device,
                vital,
                value,
                time,
                ..
            } => {
                state.measurement(*device, *vital, *value, *time, &mut context);
                Ok(())
            }
            Input::DataAbsent { device, time, .. } => {
                state.data_absent(*device, *time, &mut context);
                Ok(())
            }
            Input::DeviceReleased { device, .. } => {
                state.release(*device, &mut context);
                Ok(())
            }
            Input::Entry(entry) => state.entry(entry, &mut context),
        };
        if let Some(next) = state.schedule(&config) {
            self.timers.push(Reverse((next, patient_id)));
        }
        result
    }

    /// Fires every timer due at or before `now`, each at its own due time, in time order per
    /// patient. Call it periodically with the current time (minus a small grace for data in
    /// flight).
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let config = self.config.clone();
        while let Some(Reverse((due, patient_id))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(state) = self.patients.get_mut(&patient_id) else {
                continue;
            };
            let mut context = Context {
                config: &config,
                out,
                warming: self.warming,
            };
            if state.scheduled == Some(due) {
                state.scheduled = None;
            }
            state.fire_timers(now, &mut context);
            if let Some(next) = state.schedule(&config) {
                self.timers.push(Reverse((next, patient_id)));
            }
        }
    }

    /// Restores an open alarm after a restart (after warming). Unknown rules are skipped and
    /// returned as `false`.
    pub fn restore(&mut self, restored: &RestoredAlarm) -> bool {
        let Some(rule) = self.config.rule_index(&restored.rule) else {
            return false;
        };
        let config = self.config.clone();
        let state = self.patient_mut(restored.alarm.patient);
        state.next_alarm = state.next_alarm.max(restored.alarm.number + 1);
        if state.clock < restored.last_transition {
            state.clock = restored.last_transition;
        }
        let acknowledged = restored.state == AlarmState::Acknowledged;
        let next_notify = if acknowledged {
            None
        } else {
            config
                .escalation
                .after(restored.priority)
                .map(|after| restored.last_transition.add_micros(seconds(after)))
        };
        state.alarms.push(Alarm {
            id: restored.alarm,
            rule: rule as u16,
            device: restored.device,
            priority: restored.priority,
            state: restored.state,
            raised_at: restored.raised_at,
            escalation_level: restored.escalation_level,
            next_notify,
            silenced_until: restored.silenced_until,
            value: restored.value,
            threshold: restored.threshold,
        });
        let patient = restored.alarm.patient;
        if let Some(next) = state.schedule(&config) {
            self.timers.push(Reverse((next, patient)));
        }
        true
    }

    /// A patient's current state, scores recomputed at the patient's clock.
    pub fn view(&self, patient: PatientId) -> Option<PatientView> {
        let state = self.patients.get(&patient)?;
        let now = state.clock;
        Some(PatientView {
            readings: state.readings.clone(),
            scores: self
                .config
                .tables
                .iter()
                .map(|table| table.evaluate(&state.readings, now, &self.config.freshness))
                .collect(),
            alarms: state.alarms.iter().map(Alarm::view).collect(),
            overrides: state
                .overrides
                .iter()
                .filter(|(_, item)| item.expires.is_none_or(|expires| expires > now))
                .map(|(rule, item)| (usize::from(*rule), item.clone()))
                .collect(),
        })
    }

    /// Every open alarm of every patient.
    pub fn open_alarms(&self) -> Vec<AlarmView> {
        let mut alarms: Vec<AlarmView> = self
            .patients
            .values()
            .flat_map(|state| state.alarms.iter().map(Alarm::view))
            .collect();
        alarms.sort_by_key(|alarm| alarm.id);
        alarms
    }
}

impl Alarm {
    fn view(&self) -> AlarmView {
        AlarmView {
            id: self.id,
            rule: usize::from(self.rule),
            device: self.device,
            priority: self.priority,
            state: self.state,
            raised_at: self.raised_at,
            escalation_level: self.escalation_level,
            silenced_until: self.silenced_until,
            value: self.value,
            threshold: self.threshold,
        }
    }
}

struct Context<'a> {
    config: &'a ClinicalConfig,
    out: &'a mut Vec<Output>,
    warming: bool,
}

/// What an observation of a condition carries besides its level.
#[derive(Clone, Copy)]
struct Observation {
    level: Option<Priority>,
    value: Option<f64>,
    threshold: Option<f64>,
    evidence: Option<Source>,
}

impl Observation {
    fn none() -> Observation {
        Observation {
            level: None,
            value: None,
            threshold: None,
            evidence: None,
        }
    }
}

impl PatientState {
    /// The next due time if the heap needs a new entry for it (none is scheduled, or the
    /// scheduled one is later). A later due time needs none: the earlier entry pops, fires
    /// nothing and schedules the real one.
    fn schedule(&mut self, config: &ClinicalConfig) -> Option<Timestamp> {
        let next = self.next_deadline(config)?;
        if self.scheduled.is_none_or(|scheduled| next < scheduled) {
            self.scheduled = Some(next);
            Some(next)
        } else {
            None
        }
    }

    fn next_deadline(&self, config: &ClinicalConfig) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = self.rescore_at;
        let mut consider = |time: Option<Timestamp>| {
            if let Some(time) = time {
                next = Some(next.map_or(time, |current| current.min(time)));
            }
        };
        for alarm in &self.alarms {
            consider(alarm.next_notify);
            consider(alarm.silenced_until);
        }
        if let Some((after, intervals)) = silent_after(config) {
            for device in &self.devices {
                if !device.silent {
                    consider(Some(device.silent_at(after, intervals)));
                }
            }
        }
        for condition in &self.conditions {
            consider(clear_due(config, condition));
        }
        next
    }

    /// Fires every timer due at or before `limit`, in due-time order.
    fn fire_timers(&mut self, limit: Timestamp, context: &mut Context<'_>) {
        while let Some(due) = self.next_deadline(context.config) {
            if due > limit {
                break;
            }
            if due > self.clock {
                self.clock = due;
            }
            let now = due;
            // A condition whose value came back inside its limit ends once the clear delay has
            // passed, even if no later reading of that parameter arrives.
            let clearing: Vec<(usize, Option<DeviceId>)> = self
                .conditions
                .iter()
                .filter(|condition| {
                    clear_due(context.config, condition).is_some_and(|at| at <= now)
                })
                .map(|condition| (usize::from(condition.rule), condition.device))
                .collect();
            for (rule, device) in clearing {
                self.observe(rule, device, Observation::none(), now, context);
            }
            if self.rescore_at.is_some_and(|at| at <= now) {
                self.rescore_at = None;
                self.rescore(now, context);
            }
            if let Some((after, intervals)) = silent_after(context.config) {
                let silent: Vec<DeviceId> = self
                    .devices
                    .iter_mut()
                    .filter(|device| !device.silent && device.silent_at(after, intervals) <= now)
                    .map(|device| {
                        device.silent = true;
                        device.device
                    })
                    .collect();
                if let Some(rule) = context.config.technical.device_silent {
                    let priority = match context.config.rules[rule].kind {
                        RuleKind::DeviceSilent { priority, .. } => priority,
                        _ => Priority::Medium,
                    };
                    for device in silent {
                        let observation = Observation {
                            level: Some(priority),
                            value: None,
                            threshold: Some(f64::from(after)),
                            evidence: None,
                        };
                        self.observe(rule, Some(device), observation, now, context);
                    }
                }
            }
            for index in 0..self.alarms.len() {
                let alarm = &mut self.alarms[index];
                if alarm.silenced_until.is_some_and(|until| until <= now) {
                    alarm.silenced_until = None;
                    if alarm.state != AlarmState::Acknowledged {
                        if let Some(notify) = alarm.next_notify {
                            alarm.next_notify = Some(notify.max(now));
                        }
                        let alarm = alarm.clone();
                        emit(
                            self.id,
                            &alarm,
                            Transition::SilenceExpired,
                            now,
                            None,
                            None,
                            None,
                            context,
                        );
                    }
                }
            }
            for index in 0..self.alarms.len() {
                let alarm = &mut self.alarms[index];
                let silenced = alarm.silenced_until.is_some_and(|until| until > now);
                if alarm.next_notify.is_some_and(|at| at <= now) && !silenced {
                    let last_level = context.config.escalation.roles.len().saturating_sub(1);
                    let transition = if usize::from(alarm.escalation_level) < last_level {
                        alarm.escalation_level += 1;
                        Transition::Escalated
                    } else {
                        Transition::Reminded
                    };
                    alarm.next_notify = context
                        .config
                        .escalation
                        .after(alarm.priority)
                        .map(|after| now.add_micros(seconds(after)));
                    let alarm = alarm.clone();
                    emit(self.id, &alarm, transition, now, None, None, None, context);
                } else if silenced && alarm.next_notify.is_some_and(|at| at <= now) {
                    // Escalation waits for the end of the pause.
                    alarm.next_notify = alarm.silenced_until;
                }
            }
        }
    }

    fn touch_device(&mut self, device: DeviceId, context: &mut Context<'_>) {
        let now = self.clock;
        let was_silent = match self.devices.iter_mut().find(|seen| seen.device == device) {
            Some(seen) => {
                let gap = now.micros() - seen.last_seen.micros();
                if gap > SAME_SET_MICROS {
                    let gap = gap as f32;
                    seen.interval_micros = Some(
                        seen.interval_micros
                            .map_or(gap, |interval| interval * 0.8 + gap * 0.2),
                    );
                }
                seen.last_seen = seen.last_seen.max(now);
                std::mem::replace(&mut seen.silent, false)
            }
            None => {
                self.devices.push(DeviceSeen {
                    device,
                    last_seen: now,
                    interval_micros: None,
                    silent: false,
                });
                false
            }
        };
        if was_silent && let Some(rule) = context.config.technical.device_silent {
            self.observe(rule, Some(device), Observation::none(), now, context);
        }
    }

    fn measurement(
        &mut self,
        device: DeviceId,
        vital: VitalSign,
        value: f64,
        time: Timestamp,
        context: &mut Context<'_>,
    ) {
        let now = self.clock;
        self.touch_device(device, context);
        if let Some(rule) = context.config.technical.data_absent
            && self.has_condition(rule, Some(device))
        {
            self.observe(rule, Some(device), Observation::none(), now, context);
        }
        let source = Source::Measurement(MeasurementRef {
            device,
            vital,
            time,
        });
        if vital == VitalSign::BatteryCharge {
            if let Some(rule) = context.config.technical.low_battery
                && let RuleKind::LowBattery { tiers, hysteresis } = &context.config.rules[rule].kind
            {
                let previous = self.observed(rule, Some(device));
                let observation =
                    limit_level(tiers, Side::Below, *hysteresis, previous, value, source);
                self.observe(rule, Some(device), observation, now, context);
            }
            return;
        }
        let Some(parameter) = Parameter::from_vital(vital) else {
            return;
        };
        if let Some(ring) = self
            .rings
            .iter_mut()
            .find(|ring| ring.parameter == parameter)
        {
            ring.add(time, value);
        }
        let newest =
            self.readings.readings[parameter.index()].is_none_or(|reading| reading.time <= time);
        if !newest {
            // An older value than the one held: kept in history (trends), not in the scores.
            return;
        }
        self.readings.readings[parameter.index()] = Some(Reading {
            value: Value::Number(value),
            time,
            source,
        });
        for rule in 0..context.config.rules.len() {
            match &context.config.rules[rule].kind {
                RuleKind::Limit {
                    parameter: watched,
                    side,
                    tiers,
                    hysteresis,
                } if *watched == parameter => {
                    let observation = {
                        let tiers = self
                            .active_override(rule, now)
                            .map_or(tiers.as_slice(), |item| item.tiers.as_slice());
                        let previous = self.observed(rule, None);
                        limit_level(tiers, *side, *hysteresis, previous, value, source)
                    };
                    self.observe(rule, None, observation, now, context);
                }
                RuleKind::Trend {
                    parameter: watched,
                    change,
                    window_minutes,
                    average_minutes,
                    hysteresis,
                    priority,
                } if *watched == parameter => {
                    let Some(ring) = self.rings.iter().find(|ring| ring.parameter == parameter)
                    else {
                        continue;
                    };
                    let minute = time.micros().div_euclid(MICROS_PER_MINUTE);
                    let span = i64::from(*average_minutes);
                    let recent = ring.mean(minute, span);
                    let earlier = ring.mean(minute - i64::from(*window_minutes), span);
                    let observation = match (earlier, recent) {
                        (Some(earlier), Some(recent)) => {
                            let (size, threshold) = change.measure(earlier, recent);
                            let present = self.observed(rule, None).is_some();
                            let limit = if present {
                                threshold - hysteresis
                            } else {
                                threshold
                            };
                            Observation {
                                level: (size >= limit).then_some(*priority),
                                value: Some(size),
                                threshold: Some(threshold),
                                evidence: Some(source),
                            }
                        }
                        _ => Observation::none(),
                    };
                    self.observe(rule, None, observation, now, context);
                }
                _ => {}
            }
        }
        self.rescore(now, context);
    }

    fn data_absent(&mut self, device: DeviceId, _time: Timestamp, context: &mut Context<'_>) {
        let now = self.clock;
        self.touch_device(device, context);
        if let Some(rule) = context.config.technical.data_absent {
            let priority = match context.config.rules[rule].kind {
                RuleKind::DataAbsent { priority } => priority,
                _ => Priority::Low,
            };
            let observation = Observation {
                level: Some(priority),
                ..Observation::none()
            };
            self.observe(rule, Some(device), observation, now, context);
        }
    }

    fn release(&mut self, device: DeviceId, context: &mut Context<'_>) {
        let now = self.clock;
        self.devices.retain(|seen| seen.device != device);
        let technical: Vec<usize> = self
            .conditions
            .iter()
            .filter(|condition| condition.device == Some(device))
            .map(|condition| usize::from(condition.rule))
            .collect();
        for rule in technical {
            self.observe(rule, Some(device), Observation::none(), now, context);
        }
        // A released device's alarms end now, whatever their clear delay or latching: the
        // device no longer belongs to this patient.
        let mut index = 0;
        while index < self.alarms.len() {
            if self.alarms[index].device == Some(device) {
                let mut alarm = self.alarms.remove(index);
                alarm.state = AlarmState::Resolved;
                alarm.next_notify = None;
                emit(
                    self.id,
                    &alarm,
                    Transition::Resolved,
                    now,
                    None,
                    Some("device released"),
                    None,
                    context,
                );
            } else {
                index += 1;
            }
        }
        self.conditions
            .retain(|condition| condition.device != Some(device));
    }

    fn entry(&mut self, entry: &Entry, context: &mut Context<'_>) -> Result<(), EntryError> {
        let now = self.clock;
        let source = Source::Entry(entry.id);
        match &entry.kind {
            EntryKind::Consciousness(level) => {
                self.set_reading(
                    Parameter::Consciousness,
                    Value::Consciousness(*level),
                    entry.time,
                    source,
                );
                self.rescore(now, context);
            }
            EntryKind::Oxygen(oxygen) => {
                self.set_reading(
                    Parameter::SupplementalOxygen,
                    Value::Oxygen(*oxygen),
                    entry.time,
                    source,
                );
                self.rescore(now, context);
            }
            EntryKind::Spo2Scale(scale) => {
                if entry
                    .reason
                    .as_deref()
                    .is_none_or(|reason| reason.trim().is_empty())
                {
                    return Err(EntryError::Invalid(
                        "changing the SpO2 scale needs a reason".into(),
                    ));
                }
                self.readings.spo2_scale = *scale;
                self.rescore(now, context);
            }
            EntryKind::LimitOverride {
                rule,
                tiers,
                expires,
            } => {
                let index = limit_rule(context.config, rule)?;
                let side = match &context.config.rules[index].kind {
                    RuleKind::Limit { side, .. } => *side,
                    _ => Side::Below,
                };
                let mut tiers = tiers.clone();
                if tiers.iter().any(|tier| !tier.threshold.is_finite()) {
                    return Err(EntryError::Invalid(
                        "thresholds must be finite numbers".into(),
                    ));
                }
                tiers.sort_by(|a, b| match side {
                    Side::Below => a.threshold.total_cmp(&b.threshold),
                    Side::Above => b.threshold.total_cmp(&a.threshold),
                });
                // As in the configuration: a worse value never gets a lower priority.
                if tiers
                    .windows(2)
                    .any(|pair| pair[0].priority < pair[1].priority)
                {
                    return Err(EntryError::Invalid(
                        "a tier further from normal must not have a lower priority".into(),
                    ));
                }
                if expires.is_some_and(|expires| expires <= now) {
                    return Err(EntryError::Invalid(
                        "the override would already have expired".into(),
                    ));
                }
                let reason = entry
                    .reason
                    .clone()
                    .filter(|reason| !reason.trim().is_empty())
                    .ok_or_else(|| EntryError::Invalid("a limit override needs a reason".into()))?;
                self.overrides
                    .retain(|(existing, _)| usize::from(*existing) != index);
                self.overrides.push((
                    index as u16,
                    LimitOverride {
                        tiers,
                        expires: *expires,
                        author: entry.author.clone(),
                        reason,
                        set_at: entry.time,
                    },
                ));
                self.reevaluate_limit(index, now, context);
            }
            EntryKind::ClearOverride { rule } => {
                let index = limit_rule(context.config, rule)?;
                let before = self.overrides.len();
                self.overrides
                    .retain(|(existing, _)| usize::from(*existing) != index);
                if before == self.overrides.len() {
                    return Err(EntryError::Conflict(format!("{rule} has no override")));
                }
                self.reevaluate_limit(index, now, context);
            }
            EntryKind::Acknowledge(id) => {
                let index = self.alarm_index(*id)?;
                let alarm = &mut self.alarms[index];
                match alarm.state {
                    AlarmState::Acknowledged => {
                        return Err(EntryError::Conflict(format!(
                            "alarm {id} is already acknowledged"
                        )));
                    }
                    AlarmState::Latched => {
                        let mut alarm = self.alarms.remove(index);
                        alarm.state = AlarmState::Resolved;
                        alarm.next_notify = None;
                        alarm.silenced_until = None;
                        emit(
                            self.id,
                            &alarm,
                            Transition::Acknowledged,
                            now,
                            Some(&entry.author),
                            entry.reason.as_deref(),
                            None,
                            context,
                        );
                        emit(
                            self.id,
                            &alarm,
                            Transition::Resolved,
                            now,
                            None,
                            None,
                            None,
                            context,
                        );
                    }
                    _ => {
                        alarm.state = AlarmState::Acknowledged;
                        alarm.next_notify = None;
                        alarm.silenced_until = None;
                        let alarm = alarm.clone();
                        emit(
                            self.id,
                            &alarm,
                            Transition::Acknowledged,
                            now,
                            Some(&entry.author),
                            entry.reason.as_deref(),
                            None,
                            context,
                        );
                    }
                }
            }
            EntryKind::Silence {
                alarm: id,
                seconds: pause,
            } => {
                if *pause == 0 || *pause > context.config.silence_max_seconds {
                    return Err(EntryError::Invalid(format!(
                        "an audio pause lasts 1 to {} seconds",
                        context.config.silence_max_seconds
                    )));
                }
                let index = self.alarm_index(*id)?;
                let alarm = &mut self.alarms[index];
                if alarm.state == AlarmState::Acknowledged {
                    return Err(EntryError::Conflict(format!(
                        "alarm {id} is acknowledged; nothing to pause"
                    )));
                }
                alarm.silenced_until = Some(now.add_micros(seconds(*pause)));
                let alarm = alarm.clone();
                emit(
                    self.id,
                    &alarm,
                    Transition::Silenced,
                    now,
                    Some(&entry.author),
                    entry.reason.as_deref(),
                    None,
                    context,
                );
            }
            EntryKind::Resolve(id) => {
                let reason = entry
                    .reason
                    .as_deref()
                    .filter(|reason| !reason.trim().is_empty())
                    .ok_or_else(|| EntryError::Invalid("closing an alarm needs a reason".into()))?;
                let index = self.alarm_index(*id)?;
                let mut alarm = self.alarms.remove(index);
                alarm.state = AlarmState::Resolved;
                alarm.next_notify = None;
                alarm.silenced_until = None;
                if let Some(condition) = self.conditions.iter_mut().find(|condition| {
                    condition.rule == alarm.rule && condition.device == alarm.device
                }) {
                    condition.suppressed = condition.observed.is_some();
                }
                emit(
                    self.id,
                    &alarm,
                    Transition::ResolvedByUser,
                    now,
                    Some(&entry.author),
                    Some(reason),
                    None,
                    context,
                );
            }
        }
        Ok(())
    }

    fn set_reading(&mut self, parameter: Parameter, value: Value, time: Timestamp, source: Source) {
        let slot = &mut self.readings.readings[parameter.index()];
        if slot.is_none_or(|reading| reading.time <= time) {
            *slot = Some(Reading {
                value,
                time,
                source,
            });
        }
    }

    fn alarm_index(&self, id: AlarmId) -> Result<usize, EntryError> {
        self.alarms
            .iter()
            .position(|alarm| alarm.id == id)
            .ok_or(EntryError::NoSuchAlarm(id))
    }

    fn active_override(&self, rule: usize, now: Timestamp) -> Option<&LimitOverride> {
        self.overrides
            .iter()
            .find(|(index, item)| {
                usize::from(*index) == rule && item.expires.is_none_or(|expires| expires > now)
            })
            .map(|(_, item)| item)
    }

    fn reevaluate_limit(&mut self, rule: usize, now: Timestamp, context: &mut Context<'_>) {
        let RuleKind::Limit {
            parameter,
            side,
            tiers,
            hysteresis,
        } = &context.config.rules[rule].kind
        else {
            return;
        };
        let Some(reading) = self.readings.readings[parameter.index()] else {
            return;
        };
        let Value::Number(value) = reading.value else {
            return;
        };
        let observation = {
            let tiers = self
                .active_override(rule, now)
                .map_or(tiers.as_slice(), |item| item.tiers.as_slice());
            let previous = self.observed(rule, None);
            limit_level(tiers, *side, *hysteresis, previous, value, reading.source)
        };
        if observation.level.is_none() {
            // A clinician changed the limit: the value is inside it now, and the clear delay
            // (which waits out a value hovering at the limit) does not apply.
            let clear_delay = seconds(context.config.rules[rule].clear_delay_seconds);
            if let Some(condition) = self
                .conditions
                .iter_mut()
                .find(|condition| usize::from(condition.rule) == rule && condition.device.is_none())
            {
                condition.absent_since = Some(now.add_micros(-clear_delay));
            }
        }
        self.observe(rule, None, observation, now, context);
    }

    fn observed(&self, rule: usize, device: Option<DeviceId>) -> Option<Priority> {
        self.conditions
            .iter()
            .find(|condition| usize::from(condition.rule) == rule && condition.device == device)
            .and_then(|condition| condition.observed)
    }

    fn has_condition(&self, rule: usize, device: Option<DeviceId>) -> bool {
        self.conditions
            .iter()
            .any(|condition| usize::from(condition.rule) == rule && condition.device == device)
    }

    /// Recomputes every table; emits changed scores and feeds score-band rules.
    fn rescore(&mut self, now: Timestamp, context: &mut Context<'_>) {
        let freshness = &context.config.freshness;
        let mut rescore_at: Option<Timestamp> = None;
        for parameter in Parameter::ALL {
            if let Some(reading) = self.readings.reading(parameter) {
                let stale_at = reading.time.add_micros(
                    i64::from(freshness.max_age_seconds[parameter.index()]) * MICROS_PER_SECOND + 1,
                );
                if stale_at > now {
                    rescore_at = Some(rescore_at.map_or(stale_at, |at| at.min(stale_at)));
                }
            }
        }
        self.rescore_at = rescore_at;
        for (table_index, table) in context.config.tables.iter().enumerate() {
            let score = table.evaluate(&self.readings, now, freshness);
            let fingerprint = ScoreFingerprint::of(&score);
            self.bands[table_index] = Some(score.band);
            if self.scores[table_index] != Some(fingerprint) {
                self.scores[table_index] = Some(fingerprint);
                if !context.warming {
                    context.out.push(Output::Score(Box::new(ScoreChange {
                        patient: self.id,
                        table: table_index,
                        score: score.clone(),
                        config_version: context.config.version.clone(),
                    })));
                }
            }
            for rule in 0..context.config.rules.len() {
                let RuleKind::Score {
                    table: watched,
                    bands,
                } = &context.config.rules[rule].kind
                else {
                    continue;
                };
                if *watched != table_index {
                    continue;
                }
                let band = &table.bands()[score.band];
                let observation = Observation {
                    level: bands.get(&band.name).copied(),
                    value: Some(f64::from(score.total)),
                    threshold: None,
                    evidence: None,
                };
                let emitted = context.out.len();
                self.observe(rule, None, observation, now, context);
                // A score alarm's evidence is every input of the score.
                for output in &mut context.out[emitted..] {
                    if let Output::Alarm(event) = output {
                        event.evidence = score.sources().collect();
                    }
                }
            }
        }
    }

    /// Records an observation of a rule's condition and applies the alarm lifecycle.
    fn observe(
        &mut self,
        rule: usize,
        device: Option<DeviceId>,
        observation: Observation,
        now: Timestamp,
        context: &mut Context<'_>,
    ) {
        if context.warming {
            return;
        }
        let position = self.conditions.iter().position(|condition| {
            usize::from(condition.rule) == rule && condition.device == device
        });
        let position = match position {
            Some(position) => position,
            None if observation.level.is_none() => return,
            None => {
                self.conditions.push(Condition {
                    rule: rule as u16,
                    device,
                    observed: None,
                    since: [None; 3],
                    absent_since: None,
                    value: None,
                    threshold: None,
                    evidence: None,
                    suppressed: false,
                    ended: false,
                    onset: None,
                    raised: false,
                });
                self.conditions.len() - 1
            }
        };
        let config = context.config;
        let definition = &config.rules[rule];
        let condition = &mut self.conditions[position];
        if observation.level.is_some() && condition.onset.is_none() {
            condition.onset = Some(now);
        }
        condition.observed = observation.level;
        for priority in Priority::ALL {
            let slot = &mut condition.since[priority.index()];
            if observation.level.is_some_and(|level| level >= priority) {
                slot.get_or_insert(now);
            } else {
                *slot = None;
            }
        }
        // The value is the newest observed (the one that raised, worsened or ended the
        // condition); the threshold stays the limit it was last compared with.
        if observation.value.is_some() {
            condition.value = observation.value;
        }
        if observation.threshold.is_some() {
            condition.threshold = observation.threshold;
        }
        if observation.evidence.is_some() {
            condition.evidence = observation.evidence;
        }
        if observation.level.is_some() {
            condition.absent_since = None;
        } else {
            condition.absent_since.get_or_insert(now);
        }
        let delay = seconds(definition.delay_seconds);
        let effective = Priority::ALL.into_iter().rev().find(|priority| {
            condition.since[priority.index()]
                .is_some_and(|since| now.micros() - since.micros() >= delay)
        });
        let ended = condition.observed.is_none()
            && condition.absent_since.is_some_and(|since| {
                now.micros() - since.micros() >= seconds(definition.clear_delay_seconds)
            });
        if ended {
            condition.suppressed = false;
        }
        condition.ended = ended;
        let condition = condition.clone();
        let alarm_position = self
            .alarms
            .iter()
            .position(|alarm| usize::from(alarm.rule) == rule && alarm.device == device);
        match alarm_position {
            None => {
                if let Some(level) = effective.filter(|_| !condition.suppressed) {
                    let alarm = Alarm {
                        id: AlarmId {
                            patient: self.id,
                            number: self.next_alarm,
                        },
                        rule: rule as u16,
                        device,
                        priority: level,
                        state: AlarmState::Active,
                        raised_at: now,
                        escalation_level: 0,
                        next_notify: config
                            .escalation
                            .after(level)
                            .map(|after| now.add_micros(seconds(after))),
                        silenced_until: None,
                        value: condition.value,
                        threshold: condition.threshold,
                    };
                    self.next_alarm += 1;
                    self.conditions[position].raised = true;
                    emit(
                        self.id,
                        &alarm,
                        Transition::Raised,
                        now,
                        None,
                        None,
                        Some(&condition),
                        context,
                    );
                    self.alarms.push(alarm);
                }
            }
            Some(index) => {
                let alarm = &mut self.alarms[index];
                if let Some(level) = effective.filter(|level| *level > alarm.priority) {
                    // A worse condition is a new condition: it clears an acknowledgement and
                    // restarts escalation.
                    alarm.priority = level;
                    alarm.value = condition.value;
                    alarm.threshold = condition.threshold;
                    alarm.state = AlarmState::Active;
                    alarm.silenced_until = None;
                    alarm.next_notify = config
                        .escalation
                        .after(level)
                        .map(|after| now.add_micros(seconds(after)));
                    let alarm = alarm.clone();
                    emit(
                        self.id,
                        &alarm,
                        Transition::PriorityEscalated,
                        now,
                        None,
                        None,
                        Some(&condition),
                        context,
                    );
                } else if alarm.state == AlarmState::Latched && effective.is_some() {
                    alarm.state = AlarmState::Active;
                    let alarm = alarm.clone();
                    emit(
                        self.id,
                        &alarm,
                        Transition::ConditionReturned,
                        now,
                        None,
                        None,
                        Some(&condition),
                        context,
                    );
                } else if ended && alarm.state != AlarmState::Latched {
                    if alarm.state == AlarmState::Active && definition.latches(alarm.priority) {
                        alarm.state = AlarmState::Latched;
                        let alarm = alarm.clone();
                        emit(
                            self.id,
                            &alarm,
                            Transition::Latched,
                            now,
                            None,
                            None,
                            Some(&condition),
                            context,
                        );
                    } else {
                        let mut alarm = self.alarms.remove(index);
                        alarm.state = AlarmState::Resolved;
                        alarm.next_notify = None;
                        alarm.silenced_until = None;
                        emit(
                            self.id,
                            &alarm,
                            Transition::Resolved,
                            now,
                            None,
                            None,
                            Some(&condition),
                            context,
                        );
                    }
                }
            }
        }
        // Forget idle conditions: no level, no pending clear, no alarm, nothing suppressed.
        let has_alarm = self
            .alarms
            .iter()
            .any(|alarm| usize::from(alarm.rule) == rule && alarm.device == device);
        if ended
            && !has_alarm
            && let Some(position) = self.conditions.iter().position(|condition| {
                usize::from(condition.rule) == rule && condition.device == device
            })
        {
            let condition = self.conditions.remove(position);
            if let (false, Some(onset)) = (condition.raised, condition.onset)
                && !context.warming
            {
                context.out.push(Output::Filtered(FilteredCondition {
                    patient: self.id,
                    rule,
                    device,
                    onset,
                    ended: now,
                }));
            }
        }
    }
}

/// When an absent condition's clear delay runs out (none for a present or ended condition, or a
/// rule without clear delay: those end on the observation itself).
fn clear_due(config: &ClinicalConfig, condition: &Condition) -> Option<Timestamp> {
    if condition.observed.is_some() || condition.ended {
        return None;
    }
    let delay = config.rules[usize::from(condition.rule)].clear_delay_seconds;
    if delay == 0 {
        return None;
    }
    condition
        .absent_since
        .map(|since| since.add_micros(seconds(delay)))
}

fn limit_rule(config: &ClinicalConfig, rule: &str) -> Result<usize, EntryError> {
    config
        .rule_index(rule)
        .filter(|index| matches!(config.rules[*index].kind, RuleKind::Limit { .. }))
        .ok_or_else(|| EntryError::Invalid(format!("{rule:?} is not a limit rule")))
}

/// The silent-device rule's `(after_seconds, intervals)`. A device is silent once *more* than
/// that passed since its last data: a reading exactly `after` seconds later is on time.
fn silent_after(config: &ClinicalConfig) -> Option<(u32, u32)> {
    match config.rules[config.technical.device_silent?].kind {
        RuleKind::DeviceSilent {
            after_seconds,
            intervals,
            ..
        } => Some((after_seconds, intervals)),
        _ => None,
    }
}

/// The level of a limit condition for `value`: the worst tier it passes. A tier the condition is
/// already at (or past) is left only once the value is back inside by `hysteresis`.
fn limit_level(
    tiers: &[Tier],
    side: Side,
    hysteresis: f64,
    previous: Option<Priority>,
    value: f64,
    source: Source,
) -> Observation {
    for tier in tiers {
        let held = previous.is_some_and(|previous| previous >= tier.priority);
        let threshold = if held {
            side.relaxed(tier.threshold, hysteresis)
        } else {
            tier.threshold
        };
        if side.violates(value, threshold) {
            return Observation {
                level: Some(tier.priority),
                value: Some(value),
                threshold: Some(tier.threshold),
                evidence: Some(source),
            };
        }
    }
    Observation {
        value: Some(value),
        evidence: Some(source),
        ..Observation::none()
    }
}

#[allow(clippy::too_many_arguments)]
fn emit(
    patient: PatientId,
    alarm: &Alarm,
    transition: Transition,
    now: Timestamp,
    actor: Option<&str>,
    reason: Option<&str>,
    condition: Option<&Condition>,
    context: &mut Context<'_>,
) {
    if context.warming {
        return;
    }
    debug_assert_eq!(patient, alarm.id.patient);
    let role = transition.notifies().then(|| {
        context
            .config
            .escalation
            .role(alarm.escalation_level)
            .to_owned()
    });
    context.out.push(Output::Alarm(Box::new(AlarmEvent {
        alarm: alarm.id,
        rule: usize::from(alarm.rule),
        device: alarm.device,
        transition,
        time: now,
        raised_at: alarm.raised_at,
        priority: alarm.priority,
        state: alarm.state,
        actor: actor.map(str::to_owned),
        reason: reason.map(str::to_owned),
        escalation_level: alarm.escalation_level,
        role,
        silenced_until: alarm.silenced_until,
        value: condition.map_or(alarm.value, |condition| condition.value),
        threshold: condition.map_or(alarm.threshold, |condition| condition.threshold),
        evidence: condition
            .and_then(|condition| condition.evidence)
            .into_iter()
            .collect(),
        config_version: context.config.version.clone(),
    })));
}
