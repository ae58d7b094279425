//! Galen's clinical core: early-warning scores and the alarm lifecycle.
//!
//! Measurements and staff entries go in with the time they happened; scores and alarm transitions
//! come out. The crate is pure and deterministic: it does no I/O, never reads the wall clock and
//! never logs; "now" is always a parameter. The same inputs, in the same order, under the same
//! configuration version, give the same outputs bit for bit, which is what lets a stored history
//! be replayed to prove (or to tune) what the engine did.

mod config;
mod engine;
mod inputs;
mod score;

pub use config::{
    Change, ClinicalConfig, ConfigError, Escalation, MAX_TREND_MINUTES, Priority, Rule, RuleKind,
    Side, Tier,
};
pub use engine::{
    AlarmEvent, AlarmId, AlarmState, AlarmView, Engine, Entry, EntryError, EntryKind,
    FilteredCondition, Input, LimitOverride, Output, PatientView, RestoredAlarm, ScoreChange,
    Transition,
};
pub use inputs::{
    Consciousness, Freshness, MeasurementRef, Oxygen, Parameter, Reading, ScoreInputs, Source,
    Spo2Scale, Value,
};
pub use score::{Band, Missing, ParameterPoints, Score, ScoreTable, TableError};
