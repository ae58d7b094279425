//! The continuous engine: alarm lifecycle (condition delay, hysteresis, latching, acknowledge,
//! audio pause, escalation, closing by a user, limit overrides, de-duplication), technical and
//! trend alarms, score outputs, property tests over random input sequences, and scenario tests
//! driven by the deterministic simulator (including replay).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use galen_clinical::{
    AlarmEvent, AlarmId, AlarmState, AlarmView, ClinicalConfig, Consciousness, Engine, Entry,
    EntryError, EntryKind, FilteredCondition, Input, MeasurementRef, Output, Oxygen, Parameter,
    Priority, RuleKind, ScoreChange, Source, Spo2Scale, Tier, Transition,
};
use galen_model::{DeviceId, PatientId, Timestamp, VitalSign};
use galen_sim::{Scenario, SimConfig, Simulator, demo_scenarios};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Time zero of every test (a whole minute, so trend minutes line up with test seconds).
const T0: Timestamp = Timestamp::from_seconds(1_800_000_000);
const PATIENT: PatientId = PatientId(7);
const MONITOR: DeviceId = DeviceId(70);
const OXIMETER: DeviceId = DeviceId(71);
const NURSE: &str = "nurse.ada";
/// The built-in SpO2, heart-rate and respiratory-rate limits end a condition only after the value
/// has stayed back inside for this long (checked by the next reading).
const CLEAR_DELAY: i64 = 30;

const SPO2_LOW: &str = "limit.spo2.low";
const HR_HIGH: &str = "limit.heart_rate.high";
const SBP_LOW: &str = "limit.systolic_bp.low";
const NEWS2_RULE: &str = "score.news2";
const HR_TREND: &str = "trend.heart_rate.rise";
const DEVICE_SILENT: &str = "technical.device_silent";
const DATA_ABSENT: &str = "technical.data_absent";

/// `seconds` after [`T0`].
fn at(seconds: i64) -> Timestamp {
    T0.add_seconds(seconds)
}

/// One patient's bedside: an engine, every output so far, and entry ids.
struct Ward {
    engine: Engine,
    config: Arc<ClinicalConfig>,
    log: Vec<Output>,
    next_entry: i64,
}

impl Ward {
    fn new() -> Ward {
        Ward::with_config(ClinicalConfig::builtin())
    }

    fn with_config(config: ClinicalConfig) -> Ward {
        let config = Arc::new(config);
        Ward {
            engine: Engine::new(config.clone()),
            config,
            log: Vec::new(),
            next_entry: 1,
        }
    }

    fn rule(&self, id: &str) -> usize {
        self.config
            .rule_index(id)
            .unwrap_or_else(|| panic!("no rule {id}"))
    }

    fn table(&self, id: &str) -> usize {
        self.config
            .tables
            .iter()
            .position(|table| table.id() == id)
            .unwrap_or_else(|| panic!("no table {id}"))
    }

    fn input(&mut self, input: &Input) -> Result<Vec<Output>, EntryError> {
        let mut out = Vec::new();
        let result = self.engine.handle(input, &mut out);
        self.log.extend(out.iter().cloned());
        result.map(|()| out)
    }

    /// A measurement from `device` at `time`; measurements are never refused.
    fn measure_at(
        &mut self,
        device: DeviceId,
        time: Timestamp,
        vital: VitalSign,
        value: f64,
    ) -> Vec<Output> {
        let input = Input::Measurement {
            patient: PATIENT,
            device,
            vital,
            value,
            time,
        };
        self.input(&input).expect("a measurement is never refused")
    }

    fn measure(&mut self, seconds: i64, vital: VitalSign, value: f64) -> Vec<Output> {
        self.measure_at(MONITOR, at(seconds), vital, value)
    }

    fn spo2(&mut self, seconds: i64, value: f64) -> Vec<Output> {
        self.measure(seconds, VitalSign::Spo2, value)
    }

    fn entry(
        &mut self,
        seconds: i64,
        reason: Option<&str>,
        kind: EntryKind,
    ) -> Result<Vec<Output>, EntryError> {
        let entry = Entry {
            id: self.next_entry,
            patient: PATIENT,
            time: at(seconds),
            author: NURSE.to_owned(),
            reason: reason.map(str::to_owned),
            kind,
        };
        self.next_entry += 1;
        self.input(&Input::Entry(entry))
    }

    fn ack(&mut self, seconds: i64, alarm: AlarmId) -> Result<Vec<Output>, EntryError> {
        self.entry(seconds, None, EntryKind::Acknowledge(alarm))
    }

    fn advance(&mut self, time: Timestamp) -> Vec<Output> {
        let mut out = Vec::new();
        self.engine.advance(time, &mut out);
        self.log.extend(out.iter().cloned());
        out
    }

    /// The alarm events of rule `id` among `outputs`.
    fn events<'a>(&self, outputs: &'a [Output], id: &str) -> Vec<&'a AlarmEvent> {
        let rule = self.rule(id);
        alarm_events(outputs)
            .into_iter()
            .filter(|event| event.rule == rule)
            .collect()
    }

    /// Every alarm event of rule `id` so far.
    fn history(&self, id: &str) -> Vec<AlarmEvent> {
        self.events(&self.log, id).into_iter().cloned().collect()
    }

    /// Open alarms of rule `id`.
    fn open(&self, id: &str) -> Vec<AlarmView> {
        let rule = self.rule(id);
        self.engine
            .open_alarms()
            .into_iter()
            .filter(|alarm| alarm.rule == rule)
            .collect()
    }

    /// The single open alarm of rule `id`.
    fn only_open(&self, id: &str) -> AlarmView {
        let open = self.open(id);
        assert_eq!(open.len(), 1, "open alarms of {id}: {open:?}");
        open[0].clone()
    }

    /// News2 score changes among `outputs`.
    fn news2<'a>(&self, outputs: &'a [Output]) -> Vec<&'a ScoreChange> {
        let table = self.table("news2");
        score_changes(outputs)
            .into_iter()
            .filter(|change| change.table == table)
            .collect()
    }

    fn band_name(&self, change: &ScoreChange) -> String {
        self.config.tables[change.table].bands()[change.score.band]
            .name
            .clone()
    }
}

fn alarm_events(outputs: &[Output]) -> Vec<&AlarmEvent> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Alarm(event) => Some(&**event),
            Output::Score(_) | Output::Filtered(_) => None,
        })
        .collect()
}

fn score_changes(outputs: &[Output]) -> Vec<&ScoreChange> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Score(change) => Some(&**change),
            Output::Alarm(_) | Output::Filtered(_) => None,
        })
        .collect()
}

fn transitions(events: &[&AlarmEvent]) -> Vec<(Transition, Timestamp)> {
    events
        .iter()
        .map(|event| (event.transition, event.time))
        .collect()
}

fn owned_transitions(events: &[AlarmEvent]) -> Vec<(Transition, Timestamp)> {
    events
        .iter()
        .map(|event| (event.transition, event.time))
        .collect()
}

/// A ward with a medium SpO2 alarm raised at 15 s (88 % at 0 s and 15 s); returns its id.
fn medium_spo2_alarm(ward: &mut Ward) -> AlarmId {
    ward.spo2(0, 88.0);
    let out = ward.spo2(15, 88.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(15))]);
    assert_eq!(events[0].priority, Priority::Medium);
    events[0].alarm
}

/// A ward with a high SpO2 alarm raised at 15 s (80 % at 0 s and 15 s); returns its id.
fn high_spo2_alarm(ward: &mut Ward) -> AlarmId {
    ward.spo2(0, 80.0);
    let out = ward.spo2(15, 80.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(15))]);
    assert_eq!(events[0].priority, Priority::High);
    events[0].alarm
}

// ---------------------------------------------------------------------------------------------
// Condition delay, priority, hysteresis, latching
// ---------------------------------------------------------------------------------------------

#[test]
fn the_builtin_configuration_is_what_these_tests_assume() {
    let ward = Ward::new();
    let config = &ward.config;
    let spo2 = &config.rules[ward.rule(SPO2_LOW)];
    assert_eq!(
        (spo2.delay_seconds, i64::from(spo2.clear_delay_seconds)),
        (15, CLEAR_DELAY)
    );
    let RuleKind::Limit {
        tiers, hysteresis, ..
    } = &spo2.kind
    else {
        panic!("{SPO2_LOW} is a limit");
    };
    assert_eq!(*hysteresis, 2.0);
    let tiers: Vec<(f64, Priority)> = tiers
        .iter()
        .map(|tier| (tier.threshold, tier.priority))
        .collect();
    assert_eq!(tiers, [(85.0, Priority::High), (90.0, Priority::Medium)]);
    assert!(spo2.latches(Priority::High) && !spo2.latches(Priority::Medium));
    let heart_rate = &config.rules[ward.rule(HR_HIGH)];
    assert_eq!(heart_rate.delay_seconds, 10);
    assert_eq!(config.rules[ward.rule(SBP_LOW)].delay_seconds, 0);
    let score = &config.rules[ward.rule(NEWS2_RULE)];
    assert_eq!((score.delay_seconds, score.clear_delay_seconds), (60, 120));
    assert_eq!(config.rules[ward.rule(HR_TREND)].delay_seconds, 60);
    assert!(matches!(
        config.rules[ward.rule(DEVICE_SILENT)].kind,
        RuleKind::DeviceSilent {
            after_seconds: 60,
            intervals: 3,
            priority: Priority::Medium
        }
    ));
    let absent = &config.rules[ward.rule(DATA_ABSENT)];
    assert_eq!(absent.delay_seconds, 10);
    assert_eq!(
        config.escalation.roles,
        ["bedside_nurse", "charge_nurse", "rapid_response_team"]
    );
    assert_eq!(config.escalation.after(Priority::High), Some(120));
    assert_eq!(config.escalation.after(Priority::Medium), Some(300));
    assert_eq!(config.escalation.after(Priority::Low), None);
    assert_eq!(config.silence_max_seconds, 600);
    assert_eq!(
        config.freshness.max_age_seconds[Parameter::HeartRate.index()],
        300
    );
}

#[test]
fn spo2_below_limit_for_less_than_the_delay_raises_nothing() {
    let mut ward = Ward::new();
    for seconds in [0, 5, 10, 14] {
        ward.spo2(seconds, 88.0);
    }
    // Back inside (beyond the hysteresis) one second before the 15 s delay would have passed.
    ward.spo2(16, 96.0);
    ward.spo2(20, 96.0);
    assert!(ward.history(SPO2_LOW).is_empty());
    assert!(ward.open(SPO2_LOW).is_empty());
    // A later dip starts a new delay: the earlier seconds below do not count.
    ward.spo2(30, 88.0);
    ward.spo2(40, 88.0);
    assert!(ward.history(SPO2_LOW).is_empty());
}

#[test]
fn condition_is_raised_at_the_delay_by_a_confirming_reading_with_full_details() {
    let mut ward = Ward::new();
    for seconds in [0, 5, 10, 14] {
        ward.spo2(seconds, 88.0);
    }
    assert!(ward.history(SPO2_LOW).is_empty());
    let out = ward.spo2(15, 88.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(15))]);
    let raised = events[0];
    assert_eq!(raised.alarm.patient, PATIENT);
    assert_eq!(raised.device, None);
    assert_eq!(raised.priority, Priority::Medium);
    assert_eq!(raised.state, AlarmState::Active);
    assert_eq!(raised.raised_at, at(15));
    assert_eq!(raised.escalation_level, 0);
    assert_eq!(raised.role.as_deref(), Some("bedside_nurse"));
    assert_eq!(raised.actor, None);
    assert_eq!(raised.value, Some(88.0));
    assert_eq!(raised.threshold, Some(90.0));
    assert_eq!(
        raised.evidence,
        [Source::Measurement(MeasurementRef {
            device: MONITOR,
            vital: VitalSign::Spo2,
            time: at(15),
        })]
    );
    assert_eq!(raised.config_version, ward.config.version);
    assert!(!raised.config_version.is_empty());
    let open = ward.only_open(SPO2_LOW);
    assert_eq!(
        (open.id, open.priority, open.state),
        (raised.alarm, Priority::Medium, AlarmState::Active)
    );
}

#[test]
fn a_persisting_condition_waits_for_a_later_reading_not_for_the_clock() {
    let mut ward = Ward::new();
    ward.spo2(0, 88.0);
    // 30 s pass without a reading: the delay has passed, but nothing re-checked the value.
    let out = ward.advance(at(30));
    assert!(ward.events(&out, SPO2_LOW).is_empty());
    let out = ward.spo2(30, 88.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(30))]);
    assert_eq!(events[0].priority, Priority::Medium);
}

#[test]
fn a_worse_tier_escalates_priority_in_place() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    ward.spo2(20, 83.0);
    ward.spo2(30, 83.0);
    assert_eq!(
        ward.history(SPO2_LOW).len(),
        1,
        "the high tier has its own delay"
    );
    let out = ward.spo2(35, 83.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::PriorityEscalated, at(35))]
    );
    let event = events[0];
    assert_eq!(event.alarm, id, "same alarm, not a new one");
    assert_eq!(event.priority, Priority::High);
    assert_eq!(event.state, AlarmState::Active);
    assert_eq!(event.raised_at, at(15));
    assert_eq!((event.value, event.threshold), (Some(83.0), Some(85.0)));
    assert!(event.role.is_some(), "a worsening notifies");
    let open = ward.only_open(SPO2_LOW);
    assert_eq!((open.id, open.priority), (id, Priority::High));
    assert_eq!((open.value, open.threshold), (Some(83.0), Some(85.0)));
}

#[test]
fn hysteresis_holds_the_condition_until_the_value_is_back_inside_by_the_margin() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    // 91 is inside the limit (90) but not by the hysteresis (2): the condition holds.
    for seconds in [20, 30, 40] {
        let out = ward.spo2(seconds, 91.0);
        assert!(ward.events(&out, SPO2_LOW).is_empty(), "at {seconds} s");
    }
    assert_eq!(ward.only_open(SPO2_LOW).id, id);
    // 92 is back inside by the hysteresis: the condition is absent from 45 s and ends once that
    // has lasted the clear delay, at the first reading confirming it.
    for seconds in [45, 60, 45 + CLEAR_DELAY - 1] {
        let out = ward.spo2(seconds, 92.0);
        assert!(ward.events(&out, SPO2_LOW).is_empty(), "at {seconds} s");
    }
    let out = ward.spo2(45 + CLEAR_DELAY, 92.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::Resolved, at(45 + CLEAR_DELAY))]
    );
    assert_eq!((events[0].alarm, events[0].value), (id, Some(92.0)));
    assert!(ward.open(SPO2_LOW).is_empty());
    // Hysteresis only widens a present condition: a new one at 91 is no condition at all.
    for seconds in [80, 100, 130] {
        ward.spo2(seconds, 91.0);
    }
    assert_eq!(ward.history(SPO2_LOW).len(), 2);
}

#[test]
fn a_non_latching_medium_alarm_resolves_itself_when_the_condition_ends() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    ward.spo2(20, 97.0);
    assert_eq!(ward.only_open(SPO2_LOW).state, AlarmState::Active);
    let out = ward.spo2(20 + CLEAR_DELAY, 97.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::Resolved, at(20 + CLEAR_DELAY))]
    );
    assert_eq!(
        (events[0].alarm, events[0].state),
        (id, AlarmState::Resolved)
    );
    assert!(ward.open(SPO2_LOW).is_empty());
}

#[test]
fn a_latching_high_alarm_stays_latched_until_acknowledged() {
    let mut ward = Ward::new();
    let id = high_spo2_alarm(&mut ward);
    ward.spo2(20, 97.0);
    let out = ward.spo2(20 + CLEAR_DELAY, 97.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::Latched, at(20 + CLEAR_DELAY))]
    );
    assert_eq!(events[0].state, AlarmState::Latched);
    for seconds in [60, 70, 80] {
        let out = ward.spo2(seconds, 97.0);
        assert!(ward.events(&out, SPO2_LOW).is_empty());
    }
    let open = ward.only_open(SPO2_LOW);
    assert_eq!(
        (open.id, open.state, open.priority),
        (id, AlarmState::Latched, Priority::High)
    );
    let out = ward.ack(85, id).expect("acknowledging a latched alarm");
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [
            (Transition::Acknowledged, at(85)),
            (Transition::Resolved, at(85))
        ]
    );
    assert_eq!(events[0].actor.as_deref(), Some(NURSE));
    assert_eq!(events[1].state, AlarmState::Resolved);
    assert!(ward.open(SPO2_LOW).is_empty());
}

#[test]
fn an_acknowledged_high_alarm_resolves_when_its_condition_ends() {
    let mut ward = Ward::new();
    let id = high_spo2_alarm(&mut ward);
    ward.ack(20, id).expect("acknowledge");
    ward.spo2(30, 97.0);
    let out = ward.spo2(30 + CLEAR_DELAY, 97.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::Resolved, at(30 + CLEAR_DELAY))],
        "already acknowledged: nothing to latch"
    );
    assert!(ward.open(SPO2_LOW).is_empty());
}

#[test]
fn a_latched_alarm_whose_condition_comes_back_is_active_again() {
    let mut ward = Ward::new();
    let id = high_spo2_alarm(&mut ward);
    ward.spo2(20, 97.0);
    ward.spo2(20 + CLEAR_DELAY, 97.0);
    assert_eq!(ward.only_open(SPO2_LOW).state, AlarmState::Latched);
    ward.spo2(60, 80.0);
    assert_eq!(
        ward.history(SPO2_LOW).len(),
        2,
        "the return has its own delay"
    );
    let out = ward.spo2(75, 80.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::ConditionReturned, at(75))]
    );
    assert_eq!((events[0].alarm, events[0].state), (id, AlarmState::Active));
}

// ---------------------------------------------------------------------------------------------
// Acknowledge, audio pause, escalation, closing
// ---------------------------------------------------------------------------------------------

#[test]
fn unacknowledged_medium_alarm_escalates_after_300_s() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    let out = ward.advance(at(315).add_micros(-1));
    assert!(ward.events(&out, SPO2_LOW).is_empty());
    let out = ward.advance(at(400));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Escalated, at(315))]);
    assert_eq!(events[0].alarm, id);
    assert_eq!(events[0].escalation_level, 1);
    assert_eq!(events[0].role.as_deref(), Some("charge_nurse"));
}

#[test]
fn acknowledge_stops_escalation() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    let out = ward.ack(20, id).expect("acknowledge");
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Acknowledged, at(20))]);
    assert_eq!(events[0].actor.as_deref(), Some(NURSE));
    assert_eq!(events[0].state, AlarmState::Acknowledged);
    assert_eq!(events[0].role, None, "acknowledging notifies nobody");
    // The condition persists for 20 minutes: still no escalation, no reminder.
    for seconds in (30..=1200).step_by(10) {
        ward.spo2(seconds, 88.0);
        ward.advance(at(seconds));
    }
    ward.advance(at(3000));
    assert_eq!(
        owned_transitions(&ward.history(SPO2_LOW)),
        [
            (Transition::Raised, at(15)),
            (Transition::Acknowledged, at(20))
        ]
    );
    assert_eq!(ward.only_open(SPO2_LOW).state, AlarmState::Acknowledged);
}

#[test]
fn a_worse_condition_after_acknowledge_clears_it_and_restarts_escalation() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    ward.ack(20, id).expect("acknowledge");
    ward.spo2(30, 83.0);
    let out = ward.spo2(45, 83.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [(Transition::PriorityEscalated, at(45))]
    );
    assert_eq!(
        (events[0].alarm, events[0].state, events[0].priority),
        (id, AlarmState::Active, Priority::High)
    );
    assert_eq!(ward.only_open(SPO2_LOW).state, AlarmState::Active);
    // High escalates 120 s after the worsening.
    for seconds in (50..=160).step_by(10) {
        ward.spo2(seconds, 83.0);
    }
    let out = ward.advance(at(170));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Escalated, at(165))]);
    // Acknowledging the worse condition is allowed again.
    ward.ack(171, id).expect("acknowledge the worse condition");
}

#[test]
fn acknowledging_twice_is_a_conflict_and_an_unknown_alarm_is_no_such_alarm() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    ward.ack(20, id).expect("first acknowledge");
    let log = ward.log.len();
    assert!(matches!(ward.ack(21, id), Err(EntryError::Conflict(_))));
    let unknown = AlarmId {
        patient: PATIENT,
        number: 42,
    };
    assert_eq!(ward.ack(22, unknown), Err(EntryError::NoSuchAlarm(unknown)));
    assert_eq!(ward.log.len(), log, "a refused entry changes nothing");
    // Once resolved, the alarm is no longer open.
    ward.spo2(30, 97.0);
    ward.spo2(30 + CLEAR_DELAY, 97.0);
    assert!(ward.open(SPO2_LOW).is_empty());
    assert_eq!(ward.ack(61, id), Err(EntryError::NoSuchAlarm(id)));
    assert_eq!(
        ward.entry(
            62,
            None,
            EntryKind::Silence {
                alarm: id,
                seconds: 60
            }
        ),
        Err(EntryError::NoSuchAlarm(id))
    );
}

#[test]
fn an_audio_pause_is_bounded_and_not_allowed_on_an_acknowledged_alarm() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    let silence = |seconds| EntryKind::Silence { alarm: id, seconds };
    assert!(matches!(
        ward.entry(20, None, silence(601)),
        Err(EntryError::Invalid(_))
    ));
    assert!(matches!(
        ward.entry(20, None, silence(0)),
        Err(EntryError::Invalid(_))
    ));
    let out = ward
        .entry(20, None, silence(600))
        .expect("600 s is allowed");
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Silenced, at(20))]);
    assert_eq!(events[0].silenced_until, Some(at(620)));
    assert_eq!(events[0].actor.as_deref(), Some(NURSE));
    ward.ack(30, id).expect("acknowledge");
    assert_eq!(ward.only_open(SPO2_LOW).silenced_until, None);
    assert!(matches!(
        ward.entry(40, None, silence(60)),
        Err(EntryError::Conflict(_))
    ));
}

#[test]
fn a_silenced_alarm_does_not_escalate_until_the_pause_ends() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    ward.entry(
        25,
        Some("turning the patient"),
        EntryKind::Silence {
            alarm: id,
            seconds: 600,
        },
    )
    .expect("silence");
    // Escalation was due at 315 s; the pause lasts until 625 s.
    let out = ward.advance(at(625).add_micros(-1));
    assert!(ward.events(&out, SPO2_LOW).is_empty(), "{out:?}");
    let out = ward.advance(at(700));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [
            (Transition::SilenceExpired, at(625)),
            (Transition::Escalated, at(625))
        ]
    );
    assert_eq!(events[0].silenced_until, None);
    assert_eq!(events[0].role.as_deref(), Some("bedside_nurse"));
    assert_eq!(events[1].escalation_level, 1);
    assert_eq!(events[1].role.as_deref(), Some("charge_nurse"));
    // The next escalation keeps the normal interval from there.
    let out = ward.advance(at(1000));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Escalated, at(925))]);
    assert_eq!(events[0].role.as_deref(), Some("rapid_response_team"));
}

#[test]
fn a_short_pause_does_not_delay_escalation() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    ward.entry(
        25,
        None,
        EntryKind::Silence {
            alarm: id,
            seconds: 60,
        },
    )
    .expect("silence");
    let out = ward.advance(at(400));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [
            (Transition::SilenceExpired, at(85)),
            (Transition::Escalated, at(315))
        ]
    );
}

#[test]
fn an_unacknowledged_high_alarm_escalates_through_the_roles_at_due_times() {
    let mut ward = Ward::new();
    let id = high_spo2_alarm(&mut ward);
    let out = ward.advance(at(135).add_micros(-1));
    assert!(ward.events(&out, SPO2_LOW).is_empty());
    // One late advance fires every timer at its own due time.
    let out = ward.advance(at(400));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [
            (Transition::Escalated, at(135)),
            (Transition::Escalated, at(255)),
            (Transition::Reminded, at(375)),
        ]
    );
    let levels: Vec<(u8, Option<&str>)> = events
        .iter()
        .map(|event| (event.escalation_level, event.role.as_deref()))
        .collect();
    assert_eq!(
        levels,
        [
            (1, Some("charge_nurse")),
            (2, Some("rapid_response_team")),
            (2, Some("rapid_response_team")),
        ]
    );
    assert!(events.iter().all(|event| event.alarm == id));
    assert!(events.iter().all(|event| event.raised_at == at(15)));
    let open = ward.only_open(SPO2_LOW);
    assert_eq!(open.escalation_level, 2);
    // And the reminders go on at the same interval.
    let out = ward.advance(at(495));
    assert_eq!(
        transitions(&ward.events(&out, SPO2_LOW)),
        [(Transition::Reminded, at(495))]
    );
}

#[test]
fn closing_an_alarm_needs_a_reason_and_suppresses_it_until_the_condition_ends() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    assert!(matches!(
        ward.entry(20, None, EntryKind::Resolve(id)),
        Err(EntryError::Invalid(_))
    ));
    assert!(matches!(
        ward.entry(20, Some("  "), EntryKind::Resolve(id)),
        Err(EntryError::Invalid(_))
    ));
    let out = ward
        .entry(20, Some("probe on a cold finger"), EntryKind::Resolve(id))
        .expect("close");
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::ResolvedByUser, at(20))]);
    assert_eq!(events[0].actor.as_deref(), Some(NURSE));
    assert_eq!(events[0].reason.as_deref(), Some("probe on a cold finger"));
    assert_eq!(events[0].state, AlarmState::Resolved);
    assert!(ward.open(SPO2_LOW).is_empty());
    // The condition persists, even worsens: nothing is raised.
    for seconds in (30..=200).step_by(10) {
        ward.spo2(seconds, if seconds > 100 { 83.0 } else { 88.0 });
    }
    assert_eq!(ward.history(SPO2_LOW).len(), 2);
    assert!(ward.open(SPO2_LOW).is_empty());
    // Back inside for less than the clear delay: the condition has not ended yet.
    ward.spo2(210, 96.0);
    ward.spo2(220, 88.0);
    ward.spo2(240, 88.0);
    assert!(ward.open(SPO2_LOW).is_empty(), "still closed by the user");
    // The condition ends; a new one raises a new alarm.
    ward.spo2(250, 96.0);
    ward.spo2(250 + CLEAR_DELAY, 96.0);
    ward.spo2(290, 88.0);
    let out = ward.spo2(305, 88.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(305))]);
    assert_ne!(events[0].alarm, id);
}

// ---------------------------------------------------------------------------------------------
// Limit overrides
// ---------------------------------------------------------------------------------------------

fn copd_override(expires: Option<Timestamp>) -> EntryKind {
    EntryKind::LimitOverride {
        rule: SPO2_LOW.to_owned(),
        tiers: vec![
            Tier {
                threshold: 86.0,
                priority: Priority::Medium,
            },
            Tier {
                threshold: 80.0,
                priority: Priority::High,
            },
        ],
        expires,
    }
}

const COPD_REASON: &str = "COPD, prescribed target 88-92 %";

#[test]
fn a_limit_override_applies_until_it_expires() {
    let mut ward = Ward::new();
    ward.entry(0, Some(COPD_REASON), copd_override(Some(at(3600))))
        .expect("override");
    let view = ward.engine.view(PATIENT).expect("patient");
    assert_eq!(view.overrides.len(), 1);
    let (rule, item) = &view.overrides[0];
    assert_eq!(*rule, ward.rule(SPO2_LOW));
    assert_eq!(item.author, NURSE);
    assert_eq!(item.reason, COPD_REASON);
    assert_eq!(item.expires, Some(at(3600)));
    assert_eq!(item.set_at, at(0));
    assert_eq!(item.tiers[0].threshold, 80.0, "worst tier first");
    // 88 % for an hour: inside the patient's limit.
    for seconds in (10..3600).step_by(10) {
        ward.spo2(seconds, 88.0);
    }
    assert!(ward.history(SPO2_LOW).is_empty());
    let overrides = |ward: &Ward| ward.engine.view(PATIENT).expect("patient").overrides.len();
    assert_eq!(overrides(&ward), 1);
    // The override ends at 3600 s (exclusive): the default limit applies again.
    ward.spo2(3600, 88.0);
    assert_eq!(overrides(&ward), 0);
    ward.spo2(3610, 88.0);
    assert!(ward.history(SPO2_LOW).is_empty());
    let out = ward.spo2(3615, 88.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(3615))]);
    assert_eq!(events[0].threshold, Some(90.0));
    assert!(
        ward.engine
            .view(PATIENT)
            .expect("patient")
            .overrides
            .is_empty()
    );
}

#[test]
fn an_overridden_limit_still_alarms_past_its_own_threshold() {
    let mut ward = Ward::new();
    ward.entry(0, Some(COPD_REASON), copd_override(None))
        .expect("override");
    ward.spo2(10, 85.0);
    let out = ward.spo2(25, 85.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(25))]);
    assert_eq!(
        (events[0].priority, events[0].threshold),
        (Priority::Medium, Some(86.0))
    );
}

#[test]
fn a_limit_override_needs_a_reason_a_limit_rule_and_finite_future_values() {
    let mut ward = Ward::new();
    ward.spo2(0, 97.0);
    let refused = [
        ward.entry(10, None, copd_override(None)),
        ward.entry(10, Some(" "), copd_override(None)),
        ward.entry(10, Some(COPD_REASON), copd_override(Some(at(10)))),
        ward.entry(
            10,
            Some(COPD_REASON),
            EntryKind::LimitOverride {
                rule: NEWS2_RULE.to_owned(),
                tiers: Vec::new(),
                expires: None,
            },
        ),
        ward.entry(
            10,
            Some(COPD_REASON),
            EntryKind::LimitOverride {
                rule: SPO2_LOW.to_owned(),
                tiers: vec![Tier {
                    threshold: f64::NAN,
                    priority: Priority::High,
                }],
                expires: None,
            },
        ),
    ];
    for result in refused {
        assert!(matches!(result, Err(EntryError::Invalid(_))), "{result:?}");
    }
    assert!(
        ward.engine
            .view(PATIENT)
            .expect("patient")
            .overrides
            .is_empty()
    );
}

#[test]
fn a_limit_override_whose_worse_tier_has_a_lower_priority_is_refused() {
    // The configuration refuses such tiers ("a tier further from normal must not have a lower
    // priority"); a per-patient override must not bring them in either: with these tiers 79 %
    // would raise only a medium alarm while 83 % raises a high one.
    let mut ward = Ward::new();
    ward.spo2(0, 97.0);
    let inverted = EntryKind::LimitOverride {
        rule: SPO2_LOW.to_owned(),
        tiers: vec![
            Tier {
                threshold: 86.0,
                priority: Priority::High,
            },
            Tier {
                threshold: 80.0,
                priority: Priority::Medium,
            },
        ],
        expires: None,
    };
    let result = ward.entry(10, Some(COPD_REASON), inverted);
    assert!(matches!(result, Err(EntryError::Invalid(_))), "{result:?}");
    assert!(
        ward.engine
            .view(PATIENT)
            .expect("patient")
            .overrides
            .is_empty()
    );
    // Equal priorities and a single tier are fine.
    let flat = EntryKind::LimitOverride {
        rule: HR_HIGH.to_owned(),
        tiers: vec![
            Tier {
                threshold: 130.0,
                priority: Priority::Medium,
            },
            Tier {
                threshold: 150.0,
                priority: Priority::Medium,
            },
        ],
        expires: None,
    };
    ward.entry(20, Some("known tachycardia"), flat)
        .expect("equal priorities");
}

#[test]
fn an_override_re_evaluates_an_open_alarm_and_clearing_it_restores_the_default() {
    let mut ward = Ward::new();
    let id = medium_spo2_alarm(&mut ward);
    // 88 is inside the new limit 86 by its hysteresis (2): the condition ends now.
    let out = ward
        .entry(20, Some(COPD_REASON), copd_override(None))
        .expect("override");
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Resolved, at(20))]);
    assert_eq!(events[0].alarm, id);
    ward.entry(
        30,
        Some("target back to normal"),
        EntryKind::ClearOverride {
            rule: SPO2_LOW.to_owned(),
        },
    )
    .expect("clear");
    let out = ward.spo2(45, 88.0);
    assert_eq!(
        transitions(&ward.events(&out, SPO2_LOW)),
        [(Transition::Raised, at(45))]
    );
    assert!(matches!(
        ward.entry(
            50,
            Some("again"),
            EntryKind::ClearOverride {
                rule: SPO2_LOW.to_owned()
            }
        ),
        Err(EntryError::Conflict(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// De-duplication
// ---------------------------------------------------------------------------------------------

#[test]
fn one_open_alarm_per_rule_while_the_condition_persists() {
    let mut ward = Ward::new();
    for seconds in 0..600 {
        let value = if seconds < 400 { 88.0 } else { 83.0 };
        ward.spo2(seconds, value);
        assert!(ward.open(SPO2_LOW).len() <= 1, "at {seconds} s");
    }
    let history = ward.history(SPO2_LOW);
    let raised = history
        .iter()
        .filter(|event| event.transition == Transition::Raised)
        .count();
    let worsened = history
        .iter()
        .filter(|event| event.transition == Transition::PriorityEscalated)
        .count();
    assert_eq!((raised, worsened), (1, 1));
    assert!(history.iter().all(|event| event.alarm == history[0].alarm));
    assert_eq!(ward.only_open(SPO2_LOW).priority, Priority::High);
}

// ---------------------------------------------------------------------------------------------
// Technical alarms
// ---------------------------------------------------------------------------------------------

/// When a device whose last data came at `last` counts as silent: once *more* than 60 s passed
/// (a reading exactly 60 s later is on time, like a reading exactly at its freshness limit).
fn silent_due(last: Timestamp) -> Timestamp {
    last.add_seconds(60).add_micros(1)
}

#[test]
fn a_reading_exactly_60_s_after_the_last_one_is_on_time() {
    let mut ward = Ward::new();
    // Every 10 s: three learned intervals are 30 s, so the 60 s floor applies.
    for seconds in (0..=600).step_by(10) {
        ward.measure(seconds, VitalSign::HeartRate, 70.0);
        ward.advance(at(seconds));
    }
    assert!(ward.history(DEVICE_SILENT).is_empty());
    let out = ward.advance(at(660));
    assert!(ward.events(&out, DEVICE_SILENT).is_empty());
    let out = ward.advance(at(660).add_micros(1));
    assert_eq!(
        transitions(&ward.events(&out, DEVICE_SILENT)),
        [(Transition::Raised, silent_due(at(600)))]
    );
}

#[test]
fn a_silent_device_raises_a_technical_alarm_60_s_after_its_last_reading() {
    let mut ward = Ward::new();
    for seconds in [0, 10, 20, 30] {
        ward.measure_at(MONITOR, at(seconds), VitalSign::HeartRate, 70.0);
    }
    // The oximeter keeps sending; advance runs at odd moments, so stamping shows.
    for k in 0..=15 {
        ward.measure_at(OXIMETER, at(13 * k), VitalSign::Spo2, 97.0);
        ward.advance(at(13 * k + 5));
    }
    let history = ward.history(DEVICE_SILENT);
    assert_eq!(
        owned_transitions(&history),
        [(Transition::Raised, silent_due(at(30)))]
    );
    let raised = &history[0];
    assert_eq!(raised.device, Some(MONITOR));
    assert_eq!(raised.priority, Priority::Medium);
    assert_eq!(raised.threshold, Some(60.0));
    let out = ward.measure_at(MONITOR, at(205), VitalSign::HeartRate, 70.0);
    let events = ward.events(&out, DEVICE_SILENT);
    assert_eq!(transitions(&events), [(Transition::Resolved, at(205))]);
    assert_eq!(events[0].device, Some(MONITOR));
    assert!(ward.open(DEVICE_SILENT).is_empty());
}

#[test]
fn repeated_data_absent_raises_after_its_delay_and_a_valid_value_clears_it() {
    let mut ward = Ward::new();
    let absent = |seconds| Input::DataAbsent {
        patient: PATIENT,
        device: MONITOR,
        time: at(seconds),
    };
    ward.input(&absent(0)).expect("absent");
    ward.input(&absent(5)).expect("absent");
    assert!(ward.history(DATA_ABSENT).is_empty());
    let out = ward.input(&absent(10)).expect("absent");
    let events = ward.events(&out, DATA_ABSENT);
    assert_eq!(transitions(&events), [(Transition::Raised, at(10))]);
    assert_eq!(
        (events[0].device, events[0].priority),
        (Some(MONITOR), Priority::Low)
    );
    let out = ward.input(&absent(15)).expect("absent");
    assert!(ward.events(&out, DATA_ABSENT).is_empty());
    // Another device's values do not clear it.
    ward.measure_at(OXIMETER, at(17), VitalSign::Spo2, 97.0);
    assert_eq!(ward.open(DATA_ABSENT).len(), 1);
    let out = ward.measure(20, VitalSign::HeartRate, 70.0);
    assert_eq!(
        transitions(&ward.events(&out, DATA_ABSENT)),
        [(Transition::Resolved, at(20))]
    );
    assert!(ward.open(DATA_ABSENT).is_empty());
}

#[test]
fn brief_data_absent_between_valid_values_raises_nothing() {
    let mut ward = Ward::new();
    for seconds in (0..120).step_by(8) {
        ward.input(&Input::DataAbsent {
            patient: PATIENT,
            device: MONITOR,
            time: at(seconds),
        })
        .expect("absent");
        ward.measure(seconds + 4, VitalSign::HeartRate, 70.0);
    }
    assert!(ward.history(DATA_ABSENT).is_empty());
}

#[test]
fn releasing_a_device_ends_its_technical_alarms_and_expectations() {
    let mut ward = Ward::new();
    ward.measure_at(MONITOR, at(0), VitalSign::HeartRate, 70.0);
    for seconds in [0, 5, 10] {
        ward.input(&Input::DataAbsent {
            patient: PATIENT,
            device: OXIMETER,
            time: at(seconds),
        })
        .expect("absent");
    }
    ward.advance(at(90));
    let silent: Vec<Option<DeviceId>> = ward
        .open(DEVICE_SILENT)
        .iter()
        .map(|alarm| alarm.device)
        .collect();
    assert_eq!(silent, [Some(MONITOR), Some(OXIMETER)]);
    assert_eq!(ward.only_open(DATA_ABSENT).device, Some(OXIMETER));
    let out = ward
        .input(&Input::DeviceReleased {
            patient: PATIENT,
            device: MONITOR,
            time: at(100),
        })
        .expect("release");
    let events = alarm_events(&out);
    assert_eq!(transitions(&events), [(Transition::Resolved, at(100))]);
    assert_eq!(events[0].device, Some(MONITOR));
    let out = ward
        .input(&Input::DeviceReleased {
            patient: PATIENT,
            device: OXIMETER,
            time: at(110),
        })
        .expect("release");
    let mut ended: Vec<(usize, Option<DeviceId>, Transition)> = alarm_events(&out)
        .iter()
        .map(|event| (event.rule, event.device, event.transition))
        .collect();
    ended.sort_by_key(|(rule, _, _)| *rule);
    assert_eq!(
        ended,
        [
            (
                ward.rule(DEVICE_SILENT),
                Some(OXIMETER),
                Transition::Resolved
            ),
            (ward.rule(DATA_ABSENT), Some(OXIMETER), Transition::Resolved),
        ]
    );
    // Released devices are no longer expected to send.
    let out = ward.advance(at(5000));
    assert!(alarm_events(&out).is_empty(), "{out:?}");
    assert!(ward.engine.open_alarms().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Trends
// ---------------------------------------------------------------------------------------------

#[test]
fn a_heart_rate_rising_25_percent_over_an_hour_raises_the_trend_alarm() {
    let mut ward = Ward::new();
    for seconds in (0..3600).step_by(10) {
        ward.measure(seconds, VitalSign::HeartRate, 80.0);
    }
    assert!(ward.history(HR_TREND).is_empty());
    for seconds in (3600..4800).step_by(10) {
        ward.measure(seconds, VitalSign::HeartRate, 100.0);
    }
    let history = ward.history(HR_TREND);
    assert_eq!(history.len(), 1, "{history:?}");
    let raised = &history[0];
    assert_eq!(raised.transition, Transition::Raised);
    assert_eq!(raised.priority, Priority::Low);
    assert_eq!(raised.threshold, Some(20.0));
    assert!(raised.value.is_some_and(|value| value >= 20.0));
    // The 5-minute mean reaches +20 % during minute 63; the condition then needs 60 s.
    assert!(
        (at(3840)..=at(4000)).contains(&raised.time),
        "raised at {:?}",
        raised.time
    );
    // Physiologically 100/min is inside every limit.
    assert!(ward.history(HR_HIGH).is_empty());
}

#[test]
fn a_flat_or_slightly_rising_heart_rate_raises_no_trend_alarm() {
    let mut ward = Ward::new();
    for seconds in (0..3600).step_by(10) {
        ward.measure(seconds, VitalSign::HeartRate, 80.0);
    }
    // +10 % is below the 20 % threshold.
    for seconds in (3600..7800).step_by(10) {
        ward.measure(seconds, VitalSign::HeartRate, 88.0);
    }
    assert!(ward.history(HR_TREND).is_empty());
    assert!(alarm_events(&ward.log).is_empty(), "{:?}", ward.log.last());
}

#[test]
fn a_fast_spo2_fall_raises_the_rate_alarm_and_a_slow_drift_does_not() {
    let rate = "rate.spo2.fall";
    let mut ward = Ward::new();
    for seconds in (0..360).step_by(5) {
        ward.spo2(seconds, 98.0);
    }
    // 98 -> 91 and staying there: once both minutes of the 2-minute mean are at 91 (from 420 s)
    // it is 7 below the mean 5 minutes earlier; confirmed after the 30 s delay.
    for seconds in (360..480).step_by(5) {
        ward.spo2(seconds, 91.0);
    }
    let history = ward.history(rate);
    assert_eq!(owned_transitions(&history), [(Transition::Raised, at(450))]);
    assert_eq!(history[0].priority, Priority::Medium);
    assert!(
        ward.history(SPO2_LOW).is_empty(),
        "91 % is inside the limit"
    );

    let mut ward = Ward::new();
    // 98 -> 94 over 20 minutes: at most 1 point per 5 minutes.
    for seconds in (0..1200).step_by(5) {
        ward.spo2(seconds, 98.0 - (seconds / 300) as f64);
    }
    assert!(ward.history(rate).is_empty());
}

// ---------------------------------------------------------------------------------------------
// A small configuration: clear delay, latching medium, a single role
// ---------------------------------------------------------------------------------------------

const SMALL: &str = r#"
version = "test-small-1"
scores = []

[[limit]]
parameter = "spo2"
below = [{ threshold = 90, priority = "medium" }]
hysteresis = 0
delay_seconds = 5
clear_delay_seconds = 30
latching = true

[technical]
silent_after_seconds = 60
silent_priority = "medium"
data_absent_delay_seconds = 10
data_absent_priority = "low"

[escalation]
roles = ["nurse"]
after_seconds = { medium = 100 }

[silence]
max_seconds = 120
"#;

fn small() -> ClinicalConfig {
    ClinicalConfig::from_toml(SMALL, Vec::new()).expect("small config")
}

#[test]
fn a_clear_delay_keeps_the_condition_until_it_has_been_absent_long_enough() {
    let mut ward = Ward::with_config(small());
    ward.spo2(0, 85.0);
    let out = ward.spo2(5, 85.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Raised, at(5))]);
    assert_eq!(&*events[0].config_version, "test-small-1");
    let id = events[0].alarm;
    // Back inside at 10 s, but a dip at 35 s restarts the clear delay.
    ward.spo2(10, 95.0);
    ward.spo2(30, 95.0);
    ward.spo2(35, 85.0);
    ward.spo2(40, 95.0);
    ward.spo2(69, 95.0);
    assert_eq!(ward.history(SPO2_LOW).len(), 1);
    // Absent for 30 s since 40 s: the condition ends; this rule latches even at medium.
    let out = ward.spo2(70, 95.0);
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(transitions(&events), [(Transition::Latched, at(70))]);
    assert_eq!(events[0].alarm, id);
    let out = ward.ack(80, id).expect("acknowledge");
    assert_eq!(
        transitions(&ward.events(&out, SPO2_LOW)),
        [
            (Transition::Acknowledged, at(80)),
            (Transition::Resolved, at(80))
        ]
    );
}

#[test]
fn with_a_single_role_an_unacknowledged_alarm_is_reminded() {
    let mut ward = Ward::with_config(small());
    ward.spo2(0, 85.0);
    ward.spo2(5, 85.0);
    let id = ward.only_open(SPO2_LOW).id;
    assert!(matches!(
        ward.entry(
            6,
            None,
            EntryKind::Silence {
                alarm: id,
                seconds: 121
            }
        ),
        Err(EntryError::Invalid(_))
    ));
    let out = ward.advance(at(250));
    let events = ward.events(&out, SPO2_LOW);
    assert_eq!(
        transitions(&events),
        [
            (Transition::Reminded, at(105)),
            (Transition::Reminded, at(205))
        ]
    );
    assert!(
        events
            .iter()
            .all(|event| event.role.as_deref() == Some("nurse") && event.escalation_level == 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Scores through the engine
// ---------------------------------------------------------------------------------------------

fn missing(change: &ScoreChange) -> Vec<Parameter> {
    change.score.missing_parameters().collect()
}

#[test]
fn news2_changes_are_emitted_only_when_the_score_changes() {
    let mut ward = Ward::new();
    let out = ward.measure(0, VitalSign::HeartRate, 70.0);
    let changes = ward.news2(&out);
    assert_eq!(changes.len(), 1);
    let first = changes[0];
    assert_eq!(first.patient, PATIENT);
    assert_eq!(first.config_version, ward.config.version);
    assert!(!first.config_version.is_empty());
    assert_eq!(first.score.time, at(0));
    assert_eq!(first.score.total, 0);
    assert!(!first.score.complete());
    assert_eq!(
        missing(first),
        [
            Parameter::RespiratoryRate,
            Parameter::Spo2,
            Parameter::SupplementalOxygen,
            Parameter::SystolicBp,
            Parameter::Consciousness,
            Parameter::Temperature,
        ],
        "no consciousness entered: consciousness is missing, never assumed alert"
    );
    // Same points: no output.
    for (seconds, value) in [(1, 70.0), (2, 72.0), (3, 90.0)] {
        let out = ward.measure(seconds, VitalSign::HeartRate, value);
        assert!(ward.news2(&out).is_empty(), "HR {value}");
    }
    let out = ward.measure(4, VitalSign::HeartRate, 100.0);
    let changes = ward.news2(&out);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].score.total, 1);
    let out = ward.measure(5, VitalSign::HeartRate, 105.0);
    assert!(ward.news2(&out).is_empty());
    let out = ward
        .entry(6, None, EntryKind::Consciousness(Consciousness::Alert))
        .expect("consciousness");
    let changes = ward.news2(&out);
    assert_eq!(changes.len(), 1, "completeness changed");
    assert!(!missing(changes[0]).contains(&Parameter::Consciousness));
    assert_eq!(changes[0].score.total, 1);
    // The same entry again changes nothing.
    let out = ward
        .entry(7, None, EntryKind::Consciousness(Consciousness::Alert))
        .expect("consciousness");
    assert!(ward.news2(&out).is_empty());
}

/// A patient scoring NEWS2 0 with every parameter fresh at `seconds`.
fn complete_normal_patient(ward: &mut Ward, seconds: i64) -> Vec<Output> {
    let mut out = Vec::new();
    out.extend(
        ward.entry(
            seconds,
            None,
            EntryKind::Consciousness(Consciousness::Alert),
        )
        .expect("consciousness"),
    );
    out.extend(
        ward.entry(seconds, None, EntryKind::Oxygen(Oxygen::Air))
            .expect("oxygen"),
    );
    for (vital, value) in [
        (VitalSign::HeartRate, 70.0),
        (VitalSign::Spo2, 97.0),
        (VitalSign::RespiratoryRate, 16.0),
        (VitalSign::BodyTemperature, 37.0),
        (VitalSign::SystolicBp, 120.0),
    ] {
        out.extend(ward.measure(seconds, vital, value));
    }
    out
}

#[test]
fn staff_entries_change_the_news2_score() {
    let mut ward = Ward::new();
    let out = complete_normal_patient(&mut ward, 0);
    let last = *ward.news2(&out).last().expect("a score");
    assert!(last.score.complete());
    assert_eq!(last.score.total, 0);
    let steps: [(i64, Option<&str>, EntryKind, u16, &str); 4] = [
        (
            10,
            None,
            EntryKind::Consciousness(Consciousness::Voice),
            3,
            "low-medium",
        ),
        (
            20,
            None,
            EntryKind::Oxygen(Oxygen::Supplemental),
            5,
            "medium",
        ),
        // SpO2 97 % scores 0 on scale 1 but, on oxygen, 3 on scale 2.
        (
            40,
            Some("hypercapnic respiratory failure, target 88-92 %"),
            EntryKind::Spo2Scale(Spo2Scale::Scale2),
            8,
            "high",
        ),
        (
            50,
            Some("target back to normal"),
            EntryKind::Spo2Scale(Spo2Scale::Scale1),
            5,
            "medium",
        ),
    ];
    for (seconds, reason, kind, total, band) in steps {
        let out = ward.entry(seconds, reason, kind.clone()).expect("entry");
        let changes = ward.news2(&out);
        assert_eq!(changes.len(), 1, "{kind:?}");
        assert!(changes[0].score.complete());
        assert_eq!(changes[0].score.total, total, "{kind:?}");
        assert_eq!(ward.band_name(changes[0]), band, "{kind:?}");
    }
    // On scale 2, 88 % scores 0 where scale 1 gives 3.
    ward.entry(
        60,
        Some("hypercapnic respiratory failure, target 88-92 %"),
        EntryKind::Spo2Scale(Spo2Scale::Scale2),
    )
    .expect("scale 2");
    let out = ward.spo2(70, 88.0);
    let change = ward.news2(&out)[0];
    assert_eq!(
        change.score.points[Parameter::Spo2.index()].map(|points| points.points),
        Some(0)
    );
    let out = ward
        .entry(
            80,
            Some("reviewed"),
            EntryKind::Spo2Scale(Spo2Scale::Scale1),
        )
        .expect("scale 1");
    let change = ward.news2(&out)[0];
    assert_eq!(
        change.score.points[Parameter::Spo2.index()].map(|points| points.points),
        Some(3)
    );
    assert_eq!(change.score.total, 8);
    assert_eq!(ward.band_name(change), "high");
}

#[test]
fn changing_the_spo2_scale_needs_a_reason() {
    // The `Entry::reason` contract: "required for overrides, scale changes and closing an
    // alarm". Scale 2 is a clinical decision by a named clinician.
    let mut ward = Ward::new();
    complete_normal_patient(&mut ward, 0);
    let result = ward.entry(10, None, EntryKind::Spo2Scale(Spo2Scale::Scale2));
    assert!(matches!(result, Err(EntryError::Invalid(_))), "{result:?}");
    let result = ward.entry(10, Some(" "), EntryKind::Spo2Scale(Spo2Scale::Scale2));
    assert!(matches!(result, Err(EntryError::Invalid(_))), "{result:?}");
    assert_eq!(
        ward.engine
            .view(PATIENT)
            .expect("patient")
            .readings
            .spo2_scale,
        Spo2Scale::Scale1
    );
}

#[test]
fn a_reading_going_stale_makes_the_score_incomplete_at_its_stale_time() {
    let mut ward = Ward::new();
    let out = complete_normal_patient(&mut ward, 0);
    assert!(ward.news2(&out).last().expect("score").score.complete());
    // Still fresh at exactly 300 s (a reading counts while its age is at most the freshness).
    let out = ward.advance(at(300));
    assert!(ward.news2(&out).is_empty());
    let stale = at(300).add_micros(1);
    let out = ward.advance(stale);
    let changes = ward.news2(&out);
    assert_eq!(changes.len(), 1);
    let change = changes[0];
    assert_eq!(change.score.time, stale);
    assert!(!change.score.complete());
    assert_eq!(
        missing(change),
        [
            Parameter::RespiratoryRate,
            Parameter::Spo2,
            Parameter::HeartRate
        ]
    );
    for parameter in missing(change) {
        let item = change.score.missing[parameter.index()].expect("missing");
        assert_eq!(item.last_seen, Some(at(0)), "{parameter:?}");
    }
    // A late advance still stamps the next change (systolic BP, 3600 s) at its own due time.
    let out = ward.advance(at(4000));
    let changes = ward.news2(&out);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].score.time, at(3600).add_micros(1));
    assert!(missing(changes[0]).contains(&Parameter::SystolicBp));
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// One step of a random history; `dt` moves the clock forward (seconds).
#[derive(Debug, Clone)]
enum Op {
    /// A heart rate (30-180) or SpO2 (70-100) from one of two devices.
    Measure {
        dt: u8,
        device: u8,
        spo2: bool,
        value: u8,
    },
    /// An SpO2 value timed before the clock (a late input).
    Late {
        back: u8,
        value: u8,
    },
    /// A device flags its value as absent.
    Absent {
        dt: u8,
        device: u8,
    },
    /// A device's assignment ends (it may send again later: a new assignment).
    Release {
        dt: u8,
        device: u8,
    },
    /// A per-patient SpO2 low limit (medium tier at `threshold`, high 6 below), perhaps expiring.
    Override {
        dt: u8,
        threshold: u8,
        expires: Option<u16>,
    },
    /// Back to the default SpO2 limit (refused when there is no override).
    ClearOverride {
        dt: u8,
    },
    /// Acknowledge an open alarm (picked by index), or an unknown one when none is open.
    Ack {
        dt: u8,
        pick: u8,
    },
    Silence {
        dt: u8,
        pick: u8,
        seconds: u16,
    },
    Resolve {
        dt: u8,
        pick: u8,
        reason: bool,
    },
    /// Fire timers with no input.
    Advance {
        dt: u16,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u8..20, 0u8..2, any::<bool>(), 0u8..=100).prop_map(|(dt, device, spo2, value)| {
            Op::Measure { dt, device, spo2, value }
        }),
        1 => (0u8..60, 0u8..=100).prop_map(|(back, value)| Op::Late { back, value }),
        1 => (0u8..8, 0u8..2).prop_map(|(dt, device)| Op::Absent { dt, device }),
        1 => (0u8..30, 0u8..2).prop_map(|(dt, device)| Op::Release { dt, device }),
        1 => (0u8..30, 80u8..96, prop::option::of(1u16..1200))
            .prop_map(|(dt, threshold, expires)| Op::Override { dt, threshold, expires }),
        1 => (0u8..30).prop_map(|dt| Op::ClearOverride { dt }),
        2 => (0u8..30, any::<u8>()).prop_map(|(dt, pick)| Op::Ack { dt, pick }),
        2 => (0u8..30, any::<u8>(), 0u16..700)
            .prop_map(|(dt, pick, seconds)| Op::Silence { dt, pick, seconds }),
        1 => (0u8..30, any::<u8>(), any::<bool>())
            .prop_map(|(dt, pick, reason)| Op::Resolve { dt, pick, reason }),
        2 => (0u16..900).prop_map(|dt| Op::Advance { dt }),
    ]
}

fn spo2_value(value: u8) -> f64 {
    70.0 + f64::from(value % 31)
}

fn heart_rate_value(value: u8) -> f64 {
    30.0 + 1.5 * f64::from(value)
}

/// What one run of a random history produced.
#[derive(Debug, PartialEq)]
struct Run {
    outputs: Vec<Output>,
    results: Vec<Result<(), EntryError>>,
    /// Open alarms after every step.
    open: Vec<Vec<AlarmView>>,
}

fn run_ops(ops: &[Op]) -> (Run, Engine) {
    let mut engine = Engine::new(Arc::new(ClinicalConfig::builtin()));
    let mut run = Run {
        outputs: Vec::new(),
        results: Vec::new(),
        open: Vec::new(),
    };
    let mut clock = T0;
    let devices = [MONITOR, OXIMETER];
    for (entry_id, op) in (1..).zip(ops) {
        let dt = match op {
            Op::Measure { dt, .. }
            | Op::Absent { dt, .. }
            | Op::Release { dt, .. }
            | Op::Override { dt, .. }
            | Op::ClearOverride { dt }
            | Op::Ack { dt, .. }
            | Op::Silence { dt, .. }
            | Op::Resolve { dt, .. } => i64::from(*dt),
            Op::Advance { dt } => i64::from(*dt),
            Op::Late { .. } => 0,
        };
        clock = clock.add_seconds(dt);
        let open = engine.open_alarms();
        let pick = |pick: u8| {
            if open.is_empty() {
                AlarmId {
                    patient: PATIENT,
                    number: 9_999,
                }
            } else {
                open[usize::from(pick) % open.len()].id
            }
        };
        let entry = |kind: EntryKind, reason: Option<&str>| {
            Input::Entry(Entry {
                id: entry_id,
                patient: PATIENT,
                time: clock,
                author: NURSE.to_owned(),
                reason: reason.map(str::to_owned),
                kind,
            })
        };
        let input = match *op {
            Op::Measure {
                device,
                spo2,
                value,
                ..
            } => Some(Input::Measurement {
                patient: PATIENT,
                device: devices[usize::from(device)],
                vital: if spo2 {
                    VitalSign::Spo2
                } else {
                    VitalSign::HeartRate
                },
                value: if spo2 {
                    spo2_value(value)
                } else {
                    heart_rate_value(value)
                },
                time: clock,
            }),
            Op::Late { back, value } => Some(Input::Measurement {
                patient: PATIENT,
                device: OXIMETER,
                vital: VitalSign::Spo2,
                value: spo2_value(value),
                time: clock.add_seconds(-i64::from(back)),
            }),
            Op::Absent { device, .. } => Some(Input::DataAbsent {
                patient: PATIENT,
                device: devices[usize::from(device)],
                time: clock,
            }),
            Op::Ack { pick: index, .. } => Some(entry(EntryKind::Acknowledge(pick(index)), None)),
            Op::Silence {
                pick: index,
                seconds,
                ..
            } => Some(entry(
                EntryKind::Silence {
                    alarm: pick(index),
                    seconds: u32::from(seconds),
                },
                None,
            )),
            Op::Resolve {
                pick: index,
                reason,
                ..
            } => Some(entry(
                EntryKind::Resolve(pick(index)),
                reason.then_some("false alarm"),
            )),
            Op::Release { device, .. } => Some(Input::DeviceReleased {
                patient: PATIENT,
                device: devices[usize::from(device)],
                time: clock,
            }),
            Op::Override {
                threshold, expires, ..
            } => Some(entry(
                EntryKind::LimitOverride {
                    rule: SPO2_LOW.to_owned(),
                    tiers: vec![
                        Tier {
                            threshold: f64::from(threshold),
                            priority: Priority::Medium,
                        },
                        Tier {
                            threshold: f64::from(threshold) - 6.0,
                            priority: Priority::High,
                        },
                    ],
                    expires: expires.map(|seconds| clock.add_seconds(i64::from(seconds))),
                },
                Some("per-patient target"),
            )),
            Op::ClearOverride { .. } => Some(entry(
                EntryKind::ClearOverride {
                    rule: SPO2_LOW.to_owned(),
                },
                Some("default target"),
            )),
            Op::Advance { .. } => None,
        };
        match input {
            Some(input) => {
                let result = engine.handle(&input, &mut run.outputs);
                run.results.push(result);
            }
            None => engine.advance(clock, &mut run.outputs),
        }
        run.open.push(engine.open_alarms());
    }
    engine.advance(clock.add_seconds(3600), &mut run.outputs);
    run.open.push(engine.open_alarms());
    (run, engine)
}

/// Checks the lifecycle invariants over one run's outputs and final state.
fn check_invariants(run: &Run, engine: &Engine) -> Result<(), TestCaseError> {
    // (b) at most one open alarm per rule and device after every step.
    for (step, open) in run.open.iter().enumerate() {
        let keys: HashSet<(usize, Option<DeviceId>)> = open
            .iter()
            .map(|alarm| (alarm.rule, alarm.device))
            .collect();
        prop_assert_eq!(keys.len(), open.len(), "step {}: {:?}", step, open);
    }
    let mut raised: HashSet<AlarmId> = HashSet::new();
    let mut open: HashMap<AlarmId, (usize, Option<DeviceId>)> = HashMap::new();
    let mut resolved: HashSet<AlarmId> = HashSet::new();
    let mut acknowledged: HashSet<AlarmId> = HashSet::new();
    let mut last: HashMap<AlarmId, AlarmEvent> = HashMap::new();
    let mut clock = Timestamp::MIN;
    for output in &run.outputs {
        let time = match output {
            Output::Alarm(event) => event.time,
            Output::Score(change) => change.score.time,
            Output::Filtered(condition) => condition.ended,
        };
        // (d) times never go back for the patient.
        prop_assert!(
            time >= clock,
            "time went back: {:?} after {:?}",
            output,
            clock
        );
        clock = time;
        let Output::Alarm(event) = output else {
            continue;
        };
        let id = event.alarm;
        // (a) nothing follows a resolution.
        prop_assert!(
            !resolved.contains(&id),
            "event after resolution: {:?}",
            event
        );
        match event.transition {
            Transition::Raised => {
                prop_assert!(raised.insert(id), "raised twice: {:?}", event);
                prop_assert_eq!(event.raised_at, event.time);
                let key = (event.rule, event.device);
                // (b) from the event history as well.
                prop_assert!(
                    !open.values().any(|other| *other == key),
                    "second open alarm for {:?}: {:?}",
                    key,
                    event
                );
                open.insert(id, key);
            }
            _ => prop_assert!(
                open.contains_key(&id),
                "event of no open alarm: {:?}",
                event
            ),
        }
        if let Some(previous) = last.get(&id) {
            prop_assert!(
                event.priority >= previous.priority,
                "priority fell: {:?}",
                event
            );
            prop_assert!(
                event.escalation_level >= previous.escalation_level,
                "level fell: {:?}",
                event
            );
            prop_assert_eq!(event.raised_at, previous.raised_at);
        }
        match event.transition {
            Transition::Acknowledged => {
                acknowledged.insert(id);
            }
            Transition::PriorityEscalated => {
                acknowledged.remove(&id);
            }
            // (c) an acknowledged alarm is not escalated, reminded or re-signalled.
            Transition::Escalated | Transition::Reminded | Transition::SilenceExpired => {
                prop_assert!(
                    !acknowledged.contains(&id),
                    "acknowledged alarm signalled: {:?}",
                    event
                );
            }
            Transition::Resolved | Transition::ResolvedByUser => {
                open.remove(&id);
                resolved.insert(id);
            }
            _ => {}
        }
        last.insert(id, (**event).clone());
    }
    // (a) every raised alarm is open or was resolved, and the engine agrees with the events.
    let engine_open = engine.open_alarms();
    for id in &raised {
        prop_assert!(
            resolved.contains(id) || engine_open.iter().any(|alarm| alarm.id == *id),
            "alarm {} lost",
            id
        );
    }
    let engine_ids: HashSet<AlarmId> = engine_open.iter().map(|alarm| alarm.id).collect();
    let event_ids: HashSet<AlarmId> = open.keys().copied().collect();
    prop_assert_eq!(&engine_ids, &event_ids);
    for alarm in &engine_open {
        let event = &last[&alarm.id];
        prop_assert_eq!(
            (alarm.state, alarm.priority, alarm.escalation_level),
            (event.state, event.priority, event.escalation_level),
            "open alarm differs from its last event {:?}",
            event
        );
        prop_assert_eq!(alarm.rule, event.rule);
        prop_assert_eq!(alarm.device, event.device);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_histories_keep_the_lifecycle_invariants_and_are_deterministic(
        ops in prop::collection::vec(op_strategy(), 1..160)
    ) {
        let (first, engine) = run_ops(&ops);
        check_invariants(&first, &engine)?;
        // (e) a fresh engine given the same inputs gives the same outputs and refusals.
        let (second, _) = run_ops(&ops);
        prop_assert_eq!(first, second);
    }
}

#[test]
fn random_histories_do_raise_alarms() {
    // The property test is only meaningful if its histories reach the interesting states.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(op_strategy(), 100..160);
    let mut seen: HashSet<Transition> = HashSet::new();
    for _ in 0..50 {
        let ops = strategy.new_tree(&mut runner).expect("a history").current();
        let (run, _) = run_ops(&ops);
        seen.extend(
            alarm_events(&run.outputs)
                .iter()
                .map(|event| event.transition),
        );
    }
    for transition in [
        Transition::Raised,
        Transition::PriorityEscalated,
        Transition::Escalated,
        Transition::Acknowledged,
        Transition::Silenced,
        Transition::SilenceExpired,
        Transition::Latched,
        Transition::Resolved,
        Transition::ResolvedByUser,
    ] {
        assert!(seen.contains(&transition), "never saw {transition:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios from the simulator
// ---------------------------------------------------------------------------------------------

/// A recorded engine call.
#[derive(Debug, Clone)]
enum Step {
    Input(Input),
    Advance(Timestamp),
}

fn patient_of(index: usize) -> PatientId {
    PatientId(index as i64 + 1)
}

fn device_of(index: usize) -> DeviceId {
    DeviceId(1_000 + index as i64)
}

fn sim_input(reading: &galen_sim::Reading) -> Input {
    let vital = VitalSign::parse(reading.code).expect("a Galen vital code");
    assert_eq!(
        reading.unit,
        vital.canonical_unit().ucum(),
        "simulated values are in the canonical unit"
    );
    Input::Measurement {
        patient: patient_of(reading.patient_index),
        device: device_of(reading.patient_index),
        vital,
        value: reading.value,
        time: Timestamp::from_micros(reading.time_micros),
    }
}

/// What a simulated run produced.
struct SimRun {
    config: Arc<ClinicalConfig>,
    engine: Engine,
    outputs: Vec<Output>,
    results: Vec<Result<(), EntryError>>,
    steps: Vec<Step>,
    readings: Vec<galen_sim::Reading>,
}

impl SimRun {
    fn alarms(&self, patient: PatientId) -> Vec<&AlarmEvent> {
        alarm_events(&self.outputs)
            .into_iter()
            .filter(|event| event.alarm.patient == patient)
            .collect()
    }

    fn rule_alarms(&self, patient: PatientId, rule: &str) -> Vec<&AlarmEvent> {
        let rule = self.config.rule_index(rule).expect("rule");
        self.alarms(patient)
            .into_iter()
            .filter(|event| event.rule == rule)
            .collect()
    }

    fn band_sequence(&self, patient: PatientId) -> Vec<String> {
        let table = self
            .config
            .tables
            .iter()
            .position(|table| table.id() == "news2")
            .expect("news2");
        let mut bands: Vec<String> = Vec::new();
        for change in score_changes(&self.outputs) {
            if change.patient != patient || change.table != table {
                continue;
            }
            let name = &self.config.tables[table].bands()[change.score.band].name;
            if bands.last() != Some(name) {
                bands.push(name.clone());
            }
        }
        bands
    }
}

/// Runs the simulator for `minutes`, feeding each second's readings then advancing to it. At
/// time zero a nurse enters "alert" and "air" for every patient; with `nurse` set, a nurse
/// acknowledges each raised alarm 45 s later and pauses every third one for 2 minutes first.
fn run_sim(config: SimConfig, minutes: i64, nurse: bool) -> SimRun {
    let clinical = Arc::new(ClinicalConfig::builtin());
    let mut run = SimRun {
        config: clinical.clone(),
        engine: Engine::new(clinical),
        outputs: Vec::new(),
        results: Vec::new(),
        steps: Vec::new(),
        readings: Vec::new(),
    };
    let start = Timestamp::from_micros(config.start_micros);
    let patients = config.scenarios.len();
    let mut simulator = Simulator::new(config);
    let mut entry_id = 0;
    let mut todo: Vec<(Timestamp, EntryKind, PatientId)> = Vec::new();
    let apply = |run: &mut SimRun, step: Step| {
        match &step {
            Step::Input(input) => {
                let result = run.engine.handle(input, &mut run.outputs);
                run.results.push(result);
            }
            Step::Advance(time) => run.engine.advance(*time, &mut run.outputs),
        }
        run.steps.push(step);
    };
    for index in 0..patients {
        for kind in [
            EntryKind::Consciousness(Consciousness::Alert),
            EntryKind::Oxygen(Oxygen::Air),
        ] {
            entry_id += 1;
            let entry = Entry {
                id: entry_id,
                patient: patient_of(index),
                time: start,
                author: "nurse.bo".into(),
                reason: None,
                kind,
            };
            apply(&mut run, Step::Input(Input::Entry(entry)));
        }
    }
    let mut raised = 0;
    for second in 1..=minutes * 60 {
        let now = start.add_seconds(second);
        let emitted = run.outputs.len();
        for reading in simulator.step(now.micros()) {
            apply(&mut run, Step::Input(sim_input(&reading)));
            run.readings.push(reading);
        }
        todo.sort_by_key(|(time, _, _)| *time);
        while todo.first().is_some_and(|(time, _, _)| *time <= now) {
            let (_, kind, patient) = todo.remove(0);
            entry_id += 1;
            let entry = Entry {
                id: entry_id,
                patient,
                time: now,
                author: "nurse.bo".into(),
                reason: Some("at the bedside".into()),
                kind,
            };
            apply(&mut run, Step::Input(Input::Entry(entry)));
        }
        apply(&mut run, Step::Advance(now));
        if nurse {
            for event in alarm_events(&run.outputs[emitted..]) {
                if event.transition == Transition::Raised {
                    raised += 1;
                    let patient = event.alarm.patient;
                    if raised % 3 == 0 {
                        let kind = EntryKind::Silence {
                            alarm: event.alarm,
                            seconds: 120,
                        };
                        todo.push((now.add_seconds(20), kind, patient));
                    }
                    let kind = EntryKind::Acknowledge(event.alarm);
                    todo.push((now.add_seconds(45), kind, patient));
                }
            }
        }
    }
    run
}

const SIM_T0: i64 = 1_800_000_000_000_000;

#[test]
fn sepsis_drives_news2_from_low_to_high_and_raises_alarms() {
    let config = SimConfig {
        scenario_minutes: 30.0,
        ..SimConfig::uniform(11, 3, Scenario::Sepsis, 1.0, SIM_T0)
    };
    let run = run_sim(config, 40, false);
    for index in 0..3 {
        let patient = patient_of(index);
        let bands = run.band_sequence(patient);
        let first = |name: &str| bands.iter().position(|band| band == name);
        let (low, medium, high) = (first("low"), first("medium"), first("high"));
        assert_eq!(low, Some(0), "patient {index}: {bands:?}");
        assert!(
            medium.is_some() && medium > low,
            "patient {index}: {bands:?}"
        );
        assert!(
            high.is_some() && high > medium,
            "patient {index}: {bands:?}"
        );
        assert_eq!(bands.last().map(String::as_str), Some("high"), "{bands:?}");
        let score = run.rule_alarms(patient, NEWS2_RULE);
        assert_eq!(
            score.first().map(|event| event.transition),
            Some(Transition::Raised),
            "patient {index}"
        );
        assert!(
            score.iter().any(|event| event.priority == Priority::High),
            "patient {index}: {score:?}"
        );
        let vitals = [HR_HIGH, SBP_LOW]
            .iter()
            .flat_map(|rule| run.rule_alarms(patient, rule))
            .filter(|event| event.transition == Transition::Raised)
            .count();
        assert!(vitals >= 1, "patient {index}: no heart-rate or BP alarm");
        // A score alarm raised or worsened carries the score's inputs as evidence.
        assert!(
            score
                .iter()
                .filter(|event| matches!(
                    event.transition,
                    Transition::Raised | Transition::PriorityEscalated
                ))
                .all(|event| event.evidence.len() >= 5),
            "{score:?}"
        );
    }
}

#[test]
fn hypoxia_raises_an_spo2_limit_alarm() {
    let config = SimConfig {
        scenario_minutes: 30.0,
        ..SimConfig::uniform(12, 3, Scenario::Hypoxia, 1.0, SIM_T0)
    };
    let run = run_sim(config, 40, false);
    for index in 0..3 {
        let events = run.rule_alarms(patient_of(index), SPO2_LOW);
        assert!(
            events
                .iter()
                .any(|event| event.transition == Transition::Raised),
            "patient {index}: {events:?}"
        );
        // Never in the first minutes, while the saturation is still normal.
        let first = events[0].time;
        assert!(
            first > Timestamp::from_micros(SIM_T0).add_seconds(10 * 60),
            "patient {index}: raised at {first:?}"
        );
    }
}

#[test]
fn dropout_raises_device_silent_60_s_after_the_last_reading() {
    let config = SimConfig::uniform(13, 2, Scenario::Dropout, 1.0, SIM_T0);
    let run = run_sim(config, 25, false);
    for index in 0..2 {
        let times: Vec<i64> = run
            .readings
            .iter()
            .filter(|reading| reading.patient_index == index)
            .map(|reading| reading.time_micros)
            .collect();
        // The gaps (silent minutes 3-8 and 18-23): last reading before, first after.
        let gaps: Vec<(Timestamp, Timestamp)> = times
            .windows(2)
            .filter(|pair| pair[1] - pair[0] > 60_000_000)
            .map(|pair| {
                (
                    Timestamp::from_micros(pair[0]),
                    Timestamp::from_micros(pair[1]),
                )
            })
            .collect();
        assert_eq!(gaps.len(), 2, "patient {index}");
        let events = run.rule_alarms(patient_of(index), DEVICE_SILENT);
        let expected: Vec<(Transition, Timestamp)> = gaps
            .iter()
            .flat_map(|(last, next)| {
                [
                    (Transition::Raised, silent_due(*last)),
                    (Transition::Resolved, *next),
                ]
            })
            .collect();
        assert_eq!(transitions(&events), expected, "patient {index}");
        assert!(
            events
                .iter()
                .all(|event| event.device == Some(device_of(index)))
        );
    }
}

#[test]
fn artefact_spikes_raise_no_alarm() {
    let config = SimConfig::uniform(14, 4, Scenario::Artefact, 1.0, SIM_T0);
    let run = run_sim(config, 60, false);
    let spikes = run
        .readings
        .iter()
        .filter(|reading| {
            (reading.code == "spo2" && reading.value <= 75.0)
                || (reading.code == "heart_rate" && reading.value >= 160.0)
        })
        .count();
    assert!(spikes >= 40, "the scenario should spike ({spikes})");
    let alarms = alarm_events(&run.outputs);
    assert!(alarms.is_empty(), "{alarms:#?}");
}

#[test]
fn stable_patients_raise_nothing() {
    let config = SimConfig::uniform(15, 6, Scenario::Stable, 1.0, SIM_T0);
    let run = run_sim(config, 60, false);
    let alarms = alarm_events(&run.outputs);
    assert!(alarms.is_empty(), "{alarms:#?}");
    // Scores were computed and complete for everyone.
    for index in 0..6 {
        let view = run.engine.view(patient_of(index)).expect("patient");
        assert!(view.scores.iter().all(|score| score.complete()));
    }
    assert!(run.results.iter().all(Result::is_ok));
}

fn replay(steps: &[Step], advances: bool) -> (Vec<Output>, Vec<Result<(), EntryError>>) {
    let mut engine = Engine::new(Arc::new(ClinicalConfig::builtin()));
    let mut outputs = Vec::new();
    let mut results = Vec::new();
    let mut end = Timestamp::MIN;
    for step in steps {
        match step {
            Step::Input(input) => {
                end = end.max(input.time());
                results.push(engine.handle(input, &mut outputs));
            }
            Step::Advance(time) => {
                end = end.max(*time);
                if advances {
                    engine.advance(*time, &mut outputs);
                }
            }
        }
    }
    engine.advance(end, &mut outputs);
    (outputs, results)
}

fn per_patient(outputs: &[Output]) -> HashMap<PatientId, Vec<&Output>> {
    let mut by_patient: HashMap<PatientId, Vec<&Output>> = HashMap::new();
    for output in outputs {
        let patient = match output {
            Output::Alarm(event) => event.alarm.patient,
            Output::Score(change) => change.patient,
            Output::Filtered(condition) => condition.patient,
        };
        by_patient.entry(patient).or_default().push(output);
    }
    by_patient
}

fn demo_run() -> SimRun {
    let config = SimConfig {
        scenarios: demo_scenarios(12),
        scenario_minutes: 20.0,
        ..SimConfig::uniform(16, 0, Scenario::Stable, 0.2, SIM_T0)
    };
    run_sim(config, 45, true)
}

#[test]
fn replaying_the_recorded_inputs_reproduces_the_outputs() {
    let run = demo_run();
    let events = alarm_events(&run.outputs);
    // The history is rich: alarms raised, acknowledged (by entries) and paused.
    for transition in [
        Transition::Raised,
        Transition::Acknowledged,
        Transition::Silenced,
        Transition::Resolved,
    ] {
        assert!(
            events.iter().any(|event| event.transition == transition),
            "never saw {transition:?}"
        );
    }
    let (outputs, results) = replay(&run.steps, true);
    assert_eq!(results, run.results);
    assert_eq!(outputs.len(), run.outputs.len());
    assert!(outputs == run.outputs, "replay differs");
}

#[test]
fn replaying_without_the_periodic_advances_gives_the_same_outputs_per_patient() {
    // "the outputs depend only on the inputs and their order, never on when the engine
    // happened to run" (engine module doc): timers fire at their due times either way.
    let run = demo_run();
    let (outputs, results) = replay(&run.steps, false);
    assert_eq!(results, run.results);
    let expected = per_patient(&run.outputs);
    let actual = per_patient(&outputs);
    assert_eq!(expected.len(), actual.len());
    for (patient, outputs) in &expected {
        assert!(
            actual.get(patient) == Some(outputs),
            "patient {patient} differs"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Clear delay without further readings; low battery
// ---------------------------------------------------------------------------------------------

#[test]
fn a_condition_ends_after_its_clear_delay_even_without_another_reading() {
    let mut ward = Ward::new();
    for seconds in [0, 10, 15] {
        ward.spo2(seconds, 88.0);
    }
    assert_eq!(ward.only_open(SPO2_LOW).state, AlarmState::Active);
    // One normal SpO2 reading, then only heart rate from the same monitor: the value is back
    // inside the limit, so the alarm must end once the 30 s clear delay has passed, not stay
    // active (and escalate) showing 88 %.
    ward.spo2(20, 97.0);
    for seconds in (25..400).step_by(5) {
        ward.measure(seconds, VitalSign::HeartRate, 80.0);
    }
    let history = ward.history(SPO2_LOW);
    assert_eq!(
        owned_transitions(&history),
        [(Transition::Raised, at(15)), (Transition::Resolved, at(50)),],
        "resolved at the end of the clear delay, stamped with its due time"
    );
    assert_eq!(history[1].value, Some(97.0), "the value that ended it");
    assert!(ward.open(SPO2_LOW).is_empty());

    // Also through advance alone, with no input at all.
    let mut ward = Ward::new();
    for seconds in [0, 10, 15] {
        ward.spo2(seconds, 88.0);
    }
    ward.spo2(20, 97.0);
    ward.advance(at(49));
    assert_eq!(
        ward.open(SPO2_LOW).len(),
        1,
        "not before the delay has passed"
    );
    ward.advance(at(50));
    assert!(ward.open(SPO2_LOW).is_empty());
}

#[test]
fn low_battery_is_a_technical_alarm_per_device_with_hysteresis() {
    const LOW_BATTERY: &str = "technical.low_battery";
    let mut ward = Ward::new();
    let rule = ward.rule(LOW_BATTERY);
    assert!(ward.config.rules[rule].is_technical());
    ward.measure(0, VitalSign::BatteryCharge, 25.0);
    assert!(ward.history(LOW_BATTERY).is_empty(), "25 % is fine");
    ward.measure(10, VitalSign::BatteryCharge, 19.0);
    let open = ward.only_open(LOW_BATTERY);
    assert_eq!(open.priority, Priority::Low);
    assert_eq!(
        open.device,
        Some(MONITOR),
        "technical alarms name the device"
    );
    ward.measure(20, VitalSign::BatteryCharge, 9.0);
    assert_eq!(
        ward.only_open(LOW_BATTERY).priority,
        Priority::Medium,
        "worse: escalated in place"
    );
    // Charging: 22 % is above 20 but not by the 5-point hysteresis; 25 % ends it.
    ward.measure(30, VitalSign::BatteryCharge, 22.0);
    assert_eq!(ward.open(LOW_BATTERY).len(), 1);
    ward.measure(40, VitalSign::BatteryCharge, 25.0);
    assert!(ward.open(LOW_BATTERY).is_empty());
    let transitions: Vec<Transition> = ward
        .history(LOW_BATTERY)
        .iter()
        .map(|event| event.transition)
        .collect();
    assert_eq!(
        transitions,
        [
            Transition::Raised,
            Transition::PriorityEscalated,
            Transition::Resolved
        ]
    );
    // A battery value is not a vital sign: it scores nothing.
    let news2 = ward.news2(&ward.log.clone()).len();
    assert_eq!(news2, 0, "battery readings do not change any score");
}

#[test]
fn a_device_reporting_every_15_minutes_is_silent_after_three_of_its_intervals() {
    let mut ward = Ward::new();
    // A spot-check device: one systolic BP every 15 minutes.
    for minute in [0, 15, 30, 45] {
        ward.measure(minute * 60, VitalSign::SystolicBp, 120.0);
    }
    // Before its first interval is known, the 60 s floor applies: one technical alarm after the
    // first reading, resolved by the second. From then on its own cadence counts.
    let learning: Vec<Transition> = ward
        .history(DEVICE_SILENT)
        .iter()
        .map(|event| event.transition)
        .collect();
    assert_eq!(learning.first(), Some(&Transition::Raised));
    assert_eq!(learning.last(), Some(&Transition::Resolved), "{learning:?}");
    let after_learning = |ward: &Ward| -> Vec<AlarmEvent> {
        ward.history(DEVICE_SILENT)
            .into_iter()
            .filter(|event| event.time > at(15 * 60))
            .collect()
    };
    ward.advance(at(45 * 60 + 10 * 60));
    assert!(
        after_learning(&ward).is_empty(),
        "10 minutes without data is normal for it"
    );
    ward.advance(at(45 * 60 + 45 * 60));
    assert!(
        after_learning(&ward).is_empty(),
        "exactly 3 intervals is still on time"
    );
    ward.advance(at(45 * 60 + 45 * 60 + 1));
    let raised = after_learning(&ward);
    assert_eq!(
        owned_transitions(&raised),
        [(Transition::Raised, at(90 * 60).add_micros(1))]
    );
}

#[test]
fn a_condition_shorter_than_its_delay_is_counted_as_filtered_not_raised() {
    let mut ward = Ward::new();
    ward.spo2(0, 97.0);
    // 88 % for 10 s (the delay is 15 s), then back to normal for longer than the clear delay.
    ward.spo2(5, 88.0);
    ward.spo2(15, 88.0);
    let mut outputs = Vec::new();
    for seconds in (20..=60).step_by(5) {
        outputs.extend(ward.spo2(seconds, 97.0));
    }
    assert!(ward.history(SPO2_LOW).is_empty(), "no alarm");
    let filtered: Vec<&FilteredCondition> = outputs
        .iter()
        .filter_map(|output| match output {
            Output::Filtered(condition) => Some(condition),
            _ => None,
        })
        .collect();
    assert_eq!(filtered.len(), 1, "{outputs:?}");
    assert_eq!(filtered[0].rule, ward.rule(SPO2_LOW));
    assert_eq!(filtered[0].onset, at(5));
    assert_eq!(
        filtered[0].ended,
        at(50),
        "back inside at 20 s plus the 30 s clear delay"
    );

    // A condition that became an alarm is not counted as filtered when it ends.
    let mut ward = Ward::new();
    for seconds in [0, 10, 20] {
        ward.spo2(seconds, 88.0);
    }
    let mut outputs = Vec::new();
    for seconds in (25..=80).step_by(5) {
        outputs.extend(ward.spo2(seconds, 97.0));
    }
    assert!(!ward.history(SPO2_LOW).is_empty());
    assert!(
        outputs
            .iter()
            .all(|output| !matches!(output, Output::Filtered(_))),
        "{outputs:?}"
    );
}
