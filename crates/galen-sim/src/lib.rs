//! Deterministic physiological vital-sign simulator.
//!
//! A [`SimConfig`] (seed, one [`Scenario`] per patient, sampling rate, time zero) goes in; a
//! [`Simulator`] turns it into a time-ordered stream of [`Reading`]s, each shaped the way a
//! bedside monitor would send it to Galen: device serial, Galen vital code, value rounded to
//! device resolution, UCUM unit, scheduled sample time and a unique, reproducible id. The
//! demo, the `galen simulate` command, tests and benchmarks all consume that stream.
//!
//! The crate is pure: no I/O, no threads, no clock. The caller passes "now" as microseconds
//! since the Unix epoch to [`Simulator::step`], or pulls readings with [`Simulator::take`].
//! Randomness comes from a built-in xoshiro256** generator seeded through splitmix64, with
//! Box-Muller normals, so the same config gives the same readings bit for bit on a given
//! platform regardless of any crate version. Every patient has its own random stream derived
//! from `(seed, patient_index)`, so adding patients never changes the others' values.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

/// Galen vital-sign codes, in the order readings of one set are emitted.
pub const VITAL_CODES: [&str; 6] = [
    "heart_rate",
    "spo2",
    "respiratory_rate",
    "temperature",
    "systolic_bp",
    "diastolic_bp",
];
/// UCUM units matching [`VITAL_CODES`] position by position.
pub const VITAL_UNITS: [&str; 6] = ["/min", "%", "/min", "Cel", "mm[Hg]", "mm[Hg]"];
/// Temperature is included in every `TEMPERATURE_EVERY_SETS`-th set (and in the first).
pub const TEMPERATURE_EVERY_SETS: u64 = 30;
/// Systolic and diastolic BP are included in every `BP_EVERY_SETS`-th set (and in the first).
pub const BP_EVERY_SETS: u64 = 60;
/// A [`Scenario::Dropout`] device repeats a silence pattern with this period, in minutes
/// measured from the simulation's time zero.
pub const DROPOUT_CYCLE_MINUTES: f64 = 15.0;
/// Within each dropout cycle the device is silent from this minute...
pub const DROPOUT_SILENT_FROM_MINUTES: f64 = 3.0;
/// ...up to (excluding) this minute: by default 5 silent minutes out of every 15.
pub const DROPOUT_SILENT_TO_MINUTES: f64 = 8.0;
/// Mean time between artefact spikes of a [`Scenario::Artefact`] patient (a Poisson process).
pub const ARTEFACT_MEAN_INTERVAL_SECONDS: f64 = 180.0;

const HR: usize = 0;
const SPO2: usize = 1;
const RR: usize = 2;
const TEMP: usize = 3;
const SBP: usize = 4;
const DBP: usize = 5;
/// Heart-rate rise per degree Celsius above baseline (about 10/min per 1 C of fever).
const FEVER_HR_PER_C: f64 = 10.0;
/// Respiratory-rate rise per degree Celsius above baseline.
const FEVER_RR_PER_C: f64 = 2.0;
/// Ornstein-Uhlenbeck drift: relaxation time (s) and stationary standard deviation per vital.
const DRIFT_TAU_S: [f64; 6] = [300.0, 300.0, 300.0, 900.0, 600.0, 600.0];
const DRIFT_SD: [f64; 6] = [3.0, 0.6, 0.8, 0.1, 2.5, 2.0];
/// Independent per-sample measurement noise (standard deviation) per vital.
const NOISE_SD: [f64; 6] = [1.0, 0.4, 0.6, 0.03, 2.0, 1.5];
/// Physiological clamp per vital (low, high).
const LIMITS: [(f64, f64); 6] = [
    (25.0, 230.0),
    (50.0, 100.0),
    (4.0, 60.0),
    (32.0, 42.5),
    (50.0, 250.0),
    (25.0, 150.0),
];

/// Clinical storyline for one simulated patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Healthy adult: baseline values with slow drift and measurement noise.
    Stable,
    /// Linear deterioration over `scenario_minutes` to fever ~39.3 C, HR ~125, RR ~28,
    /// SBP ~86 mmHg and SpO2 ~92 %, so NEWS2 climbs from low through medium to high.
    Sepsis,
    /// SpO2 falls linearly to ~84 % over `scenario_minutes`, with compensatory RR (~26) and
    /// HR (+22/min) rise.
    Hypoxia,
    /// Stable physiology, but roughly every [`ARTEFACT_MEAN_INTERVAL_SECONDS`] a spike of 1-2
    /// consecutive sets: SpO2 reads 60-75 % (probe motion) or HR reads 160-200/min.
    Artefact,
    /// Stable physiology, but the device emits nothing while silent (see
    /// [`DROPOUT_SILENT_FROM_MINUTES`]..[`DROPOUT_SILENT_TO_MINUTES`] of each cycle).
    Dropout,
}

impl Scenario {
    /// Every scenario, in declaration order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Stable,
        Scenario::Sepsis,
        Scenario::Hypoxia,
        Scenario::Artefact,
        Scenario::Dropout,
    ];

    /// Lower-case name: "stable", "sepsis", "hypoxia", "artefact" or "dropout".
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Stable => "stable",
            Scenario::Sepsis => "sepsis",
            Scenario::Hypoxia => "hypoxia",
            Scenario::Artefact => "artefact",
            Scenario::Dropout => "dropout",
        }
    }

    /// Inverse of [`Scenario::name`], case-insensitive and ignoring surrounding whitespace;
    /// the US spelling "artifact" is accepted too.
    pub fn parse(text: &str) -> Option<Scenario> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("artifact") {
            return Some(Scenario::Artefact);
        }
        Scenario::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The demo mix: mostly [`Scenario::Stable`], with one Sepsis, Hypoxia, Artefact and Dropout
/// patient in every block of 12 (positions 1, 4, 7 and 10), so 24 patients get two of each.
pub fn demo_scenarios(patients: usize) -> Vec<Scenario> {
    (0..patients)
        .map(|i| match i % 12 {
            1 => Scenario::Sepsis,
            4 => Scenario::Hypoxia,
            7 => Scenario::Artefact,
            10 => Scenario::Dropout,
            _ => Scenario::Stable,
        })
        .collect()
}

/// One reading as a device would send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Index of the patient in [`SimConfig::scenarios`].
    pub patient_index: usize,
    /// Serial of the sending monitor, see [`Simulator::device_serial`].
    pub device_serial: String,
    /// Galen vital code, one of [`VITAL_CODES`].
    pub code: &'static str,
    /// Value at device resolution: integers, temperature to 0.1.
    pub value: f64,
    /// UCUM unit, one of [`VITAL_UNITS`].
    pub unit: &'static str,
    /// Scheduled sample time in microseconds since the Unix epoch.
    pub time_micros: i64,
    /// `"{serial}-{sequence}"`, the sequence counting that device's emitted readings from 0.
    pub id: String,
}

/// Everything that determines a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Master seed; each patient's stream is derived from `(seed, patient_index)`.
    pub seed: u64,
    /// One scenario per patient; the length is the number of patients.
    pub scenarios: Vec<Scenario>,
    /// Vital-sign sets per patient per second; must be finite and > 0.
    pub rate_hz: f64,
    /// The simulation's time zero, in microseconds since the Unix epoch.
    pub start_micros: i64,
    /// Minutes a deteriorating storyline takes to reach its worst (then it stays there).
    pub scenario_minutes: f64,
}

impl SimConfig {
    /// `patients` patients all following `scenario`, with `scenario_minutes` of 30.
    pub fn uniform(
        seed: u64,
        patients: usize,
        scenario: Scenario,
        rate_hz: f64,
        start_micros: i64,
    ) -> Self {
        SimConfig {
            seed,
            scenarios: vec![scenario; patients],
            rate_hz,
            start_micros,
            scenario_minutes: 30.0,
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** with a cached Box-Muller spare.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut sm = seed;
        // splitmix64 is a bijection of its state, so the four words are never all zero.
        let s = [(); 4].map(|()| splitmix64(&mut sm));
        Rng { s, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Standard normal via Box-Muller.
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let angle = std::f64::consts::TAU * self.uniform();
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

/// Timing and process constants shared by all patients.
#[derive(Debug, Clone)]
struct Shared {
    start_micros: i64,
    interval_micros: f64,
    ramp_seconds: f64,
    /// Per-set OU decay factor and innovation standard deviation.
    decay: [f64; 6],
    innovation: [f64; 6],
    spike_chance: f64,
}

#[derive(Debug, Clone)]
struct Patient {
    index: usize,
    scenario: Scenario,
    serial: String,
    rng: Rng,
    offset_micros: f64,
    base: [f64; 6],
    /// Offset from baseline at the scenario's worst point.
    shift: [f64; 6],
    drift: [f64; 6],
    next_set: u64,
    sequence: u64,
    /// Remaining sets of the current artefact spike and whether it hits SpO2 (else HR).
    spike_left: u32,
    spike_spo2: bool,
}

impl Patient {
    fn new(seed: u64, index: usize, scenario: Scenario, shared: &Shared) -> Patient {
        let mut sm = seed;
        let stream = splitmix64(&mut sm) ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = Rng::new(stream);
        let mut base = [0.0; 6];
        base[HR] = rng.range(60.0, 95.0);
        base[SPO2] = rng.range(95.0, 99.0);
        base[RR] = rng.range(12.0, 18.0);
        base[TEMP] = rng.range(36.4, 37.2);
        base[SBP] = rng.range(105.0, 140.0);
        base[DBP] = rng.range(60.0, 85.0).min(base[SBP] - 30.0);
        // Start the drift in its stationary distribution so patients differ from the outset.
        let drift = DRIFT_SD.map(|sd| sd * rng.normal());
        let mut shift = [0.0; 6];
        match scenario {
            Scenario::Sepsis => {
                // The fever coupling supplies part of the HR/RR rise; the shift supplies the rest.
                shift[TEMP] = 39.3 - base[TEMP];
                shift[HR] = 125.0 - base[HR] - FEVER_HR_PER_C * shift[TEMP];
                shift[RR] = 28.0 - base[RR] - FEVER_RR_PER_C * shift[TEMP];
                shift[SPO2] = 92.0 - base[SPO2];
                shift[SBP] = 86.0 - base[SBP];
                shift[DBP] = 50.0 - base[DBP];
            }
            Scenario::Hypoxia => {
                shift[SPO2] = 84.0 - base[SPO2];
                shift[RR] = 26.0 - base[RR];
                shift[HR] = 22.0;
                shift[SBP] = 8.0;
                shift[DBP] = 4.0;
            }
            Scenario::Stable | Scenario::Artefact | Scenario::Dropout => {}
        }
        // Golden-ratio stagger spreads first samples evenly over the first interval.
        let phase = ((index as f64 + 0.5) * 0.618_033_988_749_895).fract();
        Patient {
            index,
            scenario,
            serial: Simulator::device_serial(index),
            rng,
            offset_micros: phase * shared.interval_micros,
            base,
            shift,
            drift,
            next_set: 0,
            sequence: 0,
            spike_left: 0,
            spike_spo2: false,
        }
    }

    fn set_time(&self, shared: &Shared) -> i64 {
        let offset = self.offset_micros + self.next_set as f64 * shared.interval_micros;
        shared.start_micros + offset.round() as i64
    }

    /// Simulates the next set and appends the readings the device actually sends.
    fn emit_set<E: Extend<Reading>>(&mut self, shared: &Shared, out: &mut E) {
        let set = self.next_set;
        let time_micros = self.set_time(shared);
        self.next_set += 1;
        let elapsed_s = (time_micros - shared.start_micros) as f64 / 1e6;

        if set > 0 {
            for v in 0..6 {
                self.drift[v] =
                    self.drift[v] * shared.decay[v] + shared.innovation[v] * self.rng.normal();
            }
        }
        let progress = if shared.ramp_seconds > 0.0 {
            (elapsed_s / shared.ramp_seconds).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let mut values = [0.0; 6];
        for (v, value) in values.iter_mut().enumerate() {
            *value = self.base[v] + progress * self.shift[v] + self.drift[v];
        }
        let fever = values[TEMP] - self.base[TEMP];
        values[HR] += FEVER_HR_PER_C * fever;
        values[RR] += FEVER_RR_PER_C * fever;
        for (value, sd) in values.iter_mut().zip(NOISE_SD) {
            *value += sd * self.rng.normal();
        }

        if self.scenario == Scenario::Artefact && set > 0 {
            if self.spike_left == 0 && self.rng.uniform() < shared.spike_chance {
                self.spike_left = if self.rng.uniform() < 0.5 { 1 } else { 2 };
                self.spike_spo2 = self.rng.uniform() < 0.5;
            }
            if self.spike_left > 0 {
                self.spike_left -= 1;
                if self.spike_spo2 {
                    values[SPO2] = self.rng.range(60.0, 75.0);
                } else {
                    values[HR] = self.rng.range(160.0, 200.0);
                }
            }
        }

        for (value, (low, high)) in values.iter_mut().zip(LIMITS) {
            *value = value.clamp(low, high);
        }
        values[DBP] = values[DBP].min(values[SBP] - 10.0);
        for (v, value) in values.iter_mut().enumerate() {
            *value = if v == TEMP {
                (*value * 10.0).round() / 10.0
            } else {
                value.round()
            };
        }

        if self.scenario == Scenario::Dropout && dropout_silent(elapsed_s) {
            return;
        }
        // Remainder matching rather than `is_multiple_of`, which needs Rust 1.87 (MSRV is 1.85).
        let count = match (set % BP_EVERY_SETS, set % TEMPERATURE_EVERY_SETS) {
            (0, _) => 6,
            (_, 0) => 4,
            _ => 3,
        };
        for v in 0..count {
            let id = format!("{}-{}", self.serial, self.sequence);
            self.sequence += 1;
            out.extend(std::iter::once(Reading {
                patient_index: self.index,
                device_serial: self.serial.clone(),
                code: VITAL_CODES[v],
                value: values[v],
                unit: VITAL_UNITS[v],
                time_micros,
                id,
            }));
        }
    }
}

fn dropout_silent(elapsed_s: f64) -> bool {
    let minute = (elapsed_s / 60.0).rem_euclid(DROPOUT_CYCLE_MINUTES);
    (DROPOUT_SILENT_FROM_MINUTES..DROPOUT_SILENT_TO_MINUTES).contains(&minute)
}

/// Generates readings for all patients of a [`SimConfig`] in schedule order.
///
/// Set `k` of patient `i` is scheduled at `start_micros + offset_i + k / rate_hz` seconds,
/// `offset_i` being a fixed stagger within the first interval. Heart rate, SpO2 and
/// respiratory rate are in every set, temperature every [`TEMPERATURE_EVERY_SETS`]-th and
/// BP every [`BP_EVERY_SETS`]-th, the first set including all six. Each vital is
/// baseline + scenario shift + slow Ornstein-Uhlenbeck drift (minutes-long relaxation) +
/// fever coupling (HR +10/min and RR +2/min per 1 C above baseline) + Gaussian noise,
/// clamped to physiological limits and rounded to device resolution.
#[derive(Debug, Clone)]
pub struct Simulator {
    shared: Shared,
    patients: Vec<Patient>,
    /// Next scheduled set per patient, earliest first, ties by patient index.
    queue: BinaryHeap<Reverse<(i64, usize)>>,
    /// Readings already simulated (by [`Simulator::take`]) but not handed out yet.
    pending: VecDeque<Reading>,
}

impl Simulator {
    /// Builds the simulator; nothing is generated until [`Simulator::step`] or
    /// [`Simulator::take`].
    ///
    /// # Panics
    /// If `config.rate_hz` is not finite and strictly positive.
    pub fn new(config: SimConfig) -> Simulator {
        assert!(
            config.rate_hz.is_finite() && config.rate_hz > 0.0,
            "rate_hz must be finite and > 0, got {}",
            config.rate_hz
        );
        let interval_s = 1.0 / config.rate_hz;
        let decay = DRIFT_TAU_S.map(|tau| (-interval_s / tau).exp());
        let mut innovation = [0.0; 6];
        for v in 0..6 {
            innovation[v] = DRIFT_SD[v] * (1.0 - decay[v] * decay[v]).sqrt();
        }
        let shared = Shared {
            start_micros: config.start_micros,
            interval_micros: interval_s * 1e6,
            ramp_seconds: config.scenario_minutes * 60.0,
            decay,
            innovation,
            spike_chance: 1.0 - (-interval_s / ARTEFACT_MEAN_INTERVAL_SECONDS).exp(),
        };
        let patients: Vec<Patient> = config
            .scenarios
            .iter()
            .enumerate()
            .map(|(i, &scenario)| Patient::new(config.seed, i, scenario, &shared))
            .collect();
        let queue = patients
            .iter()
            .map(|p| Reverse((p.set_time(&shared), p.index)))
            .collect();
        Simulator {
            shared,
            patients,
            queue,
            pending: VecDeque::new(),
        }
    }

    /// Number of simulated patients.
    pub fn patients(&self) -> usize {
        self.patients.len()
    }

    /// Scenario of patient `patient_index`.
    ///
    /// # Panics
    /// If `patient_index >= self.patients()`.
    pub fn scenario(&self, patient_index: usize) -> Scenario {
        self.patients[patient_index].scenario
    }

    /// Serial of the monitor attached to patient i: `"SIM-MON-{i:04}"`, e.g. "SIM-MON-0007".
    pub fn device_serial(patient_index: usize) -> String {
        format!("SIM-MON-{patient_index:04}")
    }

    /// Simulates the earliest scheduled set (if any patient exists) into `out`.
    fn advance<E: Extend<Reading>>(&mut self, out: &mut E) -> bool {
        let Some(Reverse((_, index))) = self.queue.pop() else {
            return false;
        };
        let patient = &mut self.patients[index];
        patient.emit_set(&self.shared, out);
        self.queue
            .push(Reverse((patient.set_time(&self.shared), index)));
        true
    }

    /// All readings scheduled at or before `now_micros` that were not emitted yet, in time
    /// order (ties by patient index, then [`VITAL_CODES`] order). `step(t1)` then `step(t2)`
    /// yields exactly the same readings as a single `step(t2)`.
    pub fn step(&mut self, now_micros: i64) -> Vec<Reading> {
        let mut out = Vec::new();
        while let Some(front) = self.pending.front() {
            if front.time_micros > now_micros {
                // Everything still to be simulated is scheduled later than this.
                return out;
            }
            out.extend(self.pending.pop_front());
        }
        while let Some(&Reverse((time, _))) = self.queue.peek() {
            if time > now_micros {
                break;
            }
            self.advance(&mut out);
        }
        out
    }

    /// The next `count` readings in schedule order regardless of any clock (advances the
    /// simulator). Returns fewer only when there are no patients.
    pub fn take(&mut self, count: usize) -> Vec<Reading> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.pending.pop_front() {
                Some(reading) => out.push(reading),
                None => {
                    let mut pending = std::mem::take(&mut self.pending);
                    let more = self.advance(&mut pending);
                    self.pending = pending;
                    if !more {
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000;
    const MINUTE: i64 = 60_000_000;

    fn run(config: SimConfig, minutes: i64) -> Vec<Reading> {
        Simulator::new(config).step(T0 + minutes * MINUTE)
    }

    fn series<'a>(readings: &'a [Reading], patient: usize, code: &str) -> Vec<&'a Reading> {
        readings
            .iter()
            .filter(|r| r.patient_index == patient && r.code == code)
            .collect()
    }

    /// Mean of a vital for one patient over [from, to) minutes.
    fn mean(readings: &[Reading], patient: usize, code: &str, from: f64, to: f64) -> f64 {
        let window: Vec<f64> = series(readings, patient, code)
            .into_iter()
            .filter(|r| {
                let minute = (r.time_micros - T0) as f64 / MINUTE as f64;
                minute >= from && minute < to
            })
            .map(|r| r.value)
            .collect();
        assert!(!window.is_empty(), "no {code} between {from} and {to}");
        window.iter().sum::<f64>() / window.len() as f64
    }

    #[test]
    fn same_config_same_readings_and_seeds_differ() {
        let config = SimConfig {
            scenarios: demo_scenarios(24),
            ..SimConfig::uniform(7, 0, Scenario::Stable, 1.0, T0)
        };
        let a = run(config.clone(), 20);
        assert_eq!(a, run(config.clone(), 20));
        assert!(a.len() > 24 * 3 * 1000);
        let other = run(SimConfig { seed: 8, ..config }, 20);
        assert_eq!(a.len(), other.len());
        assert_ne!(a, other);
    }

    #[test]
    fn adding_patients_leaves_others_unchanged() {
        let few = run(SimConfig::uniform(3, 2, Scenario::Sepsis, 2.0, T0), 10);
        let many = run(SimConfig::uniform(3, 5, Scenario::Sepsis, 2.0, T0), 10);
        let many_first: Vec<_> = many.into_iter().filter(|r| r.patient_index < 2).collect();
        assert_eq!(few, many_first);
    }

    #[test]
    fn split_steps_equal_single_step() {
        let config = SimConfig {
            scenarios: demo_scenarios(12),
            ..SimConfig::uniform(11, 0, Scenario::Stable, 0.7, T0)
        };
        let end = T0 + 40 * MINUTE;
        let whole = Simulator::new(config.clone()).step(end);
        let mut sim = Simulator::new(config.clone());
        let mut pieces = sim.step(T0 - MINUTE);
        assert!(pieces.is_empty());
        for t in [
            T0,
            T0 + 1,
            T0 + 1_234_567,
            T0 + 5 * MINUTE,
            T0 + 5 * MINUTE,
            end,
        ] {
            pieces.extend(sim.step(t));
        }
        assert_eq!(whole, pieces);
        // take() leaves partial sets pending; step() must still hand out the same stream.
        let mut sim = Simulator::new(config);
        let mut mixed = sim.take(5);
        mixed.extend(sim.step(T0 + 3 * MINUTE));
        mixed.extend(sim.take(7));
        mixed.extend(sim.step(end));
        assert_eq!(whole, mixed);
    }

    #[test]
    fn step_is_time_ordered_with_stable_ties() {
        let readings = run(SimConfig::uniform(5, 24, Scenario::Stable, 50.0, T0), 1);
        let key = |r: &Reading| {
            let code = VITAL_CODES.iter().position(|c| *c == r.code);
            (r.time_micros, r.patient_index, code)
        };
        assert!(readings.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        assert!(readings.iter().all(|r| r.time_micros <= T0 + MINUTE));
    }

    #[test]
    fn first_set_is_complete_and_cadence_holds() {
        let readings = run(SimConfig::uniform(1, 24, Scenario::Stable, 1.0, T0), 3);
        for patient in 0..24 {
            let first = series(&readings, patient, "heart_rate")[0].time_micros;
            assert!((T0..T0 + 1_000_000).contains(&first));
            for code in VITAL_CODES {
                assert_eq!(series(&readings, patient, code)[0].time_micros, first);
            }
            let hr = series(&readings, patient, "heart_rate");
            let temps = series(&readings, patient, "temperature");
            let sbp = series(&readings, patient, "systolic_bp");
            let dbp = series(&readings, patient, "diastolic_bp");
            assert_eq!(hr.len(), 180);
            assert_eq!(temps.len(), 6);
            assert_eq!((sbp.len(), dbp.len()), (3, 3));
            for (k, t) in temps.iter().enumerate() {
                assert_eq!(t.time_micros, hr[30 * k].time_micros);
            }
            for (k, (s, d)) in sbp.iter().zip(&dbp).enumerate() {
                assert_eq!(s.time_micros, hr[60 * k].time_micros);
                assert_eq!(s.time_micros, d.time_micros);
            }
            let mut gaps = hr.windows(2).map(|w| w[1].time_micros - w[0].time_micros);
            assert!(gaps.all(|g| g == 1_000_000));
        }
        let firsts: std::collections::HashSet<i64> = (0..24)
            .map(|p| series(&readings, p, "spo2")[0].time_micros)
            .collect();
        assert_eq!(firsts.len(), 24, "first samples should be staggered");
    }

    #[test]
    fn values_plausible_for_every_scenario() {
        for scenario in Scenario::ALL {
            let readings = run(SimConfig::uniform(42, 6, scenario, 1.0, T0), 120);
            for r in &readings {
                let ok = match r.code {
                    "spo2" => (50.0..=100.0).contains(&r.value),
                    "heart_rate" => (20.0..=250.0).contains(&r.value),
                    "respiratory_rate" => (4.0..=60.0).contains(&r.value),
                    "temperature" => (30.0..=43.0).contains(&r.value),
                    "systolic_bp" | "diastolic_bp" => (20.0..=300.0).contains(&r.value),
                    other => panic!("unexpected code {other}"),
                };
                assert!(ok, "{scenario}: implausible {r:?}");
                let resolution = if r.code == "temperature" { 10.0 } else { 1.0 };
                let scaled = r.value * resolution;
                assert!((scaled - scaled.round()).abs() < 1e-9, "{r:?} not rounded");
                let unit = VITAL_CODES
                    .iter()
                    .position(|c| *c == r.code)
                    .map(|i| VITAL_UNITS[i]);
                assert_eq!(Some(r.unit), unit);
            }
            for patient in 0..6 {
                let sbp = series(&readings, patient, "systolic_bp");
                let dbp = series(&readings, patient, "diastolic_bp");
                assert_eq!(sbp.len(), dbp.len());
                assert!(sbp.iter().zip(&dbp).all(|(s, d)| s.value > d.value));
            }
        }
    }

    #[test]
    fn sepsis_reaches_high_risk_and_stable_stays_normal() {
        for seed in [1, 2, 3] {
            let readings = run(SimConfig::uniform(seed, 8, Scenario::Sepsis, 1.0, T0), 36);
            for p in 0..8 {
                assert!(mean(&readings, p, "heart_rate", 0.0, 3.0) < 105.0);
                assert!(mean(&readings, p, "heart_rate", 30.0, 36.0) > 110.0);
                assert!(mean(&readings, p, "temperature", 30.0, 36.0) > 38.8);
                assert!(mean(&readings, p, "respiratory_rate", 30.0, 36.0) > 24.0);
                assert!(mean(&readings, p, "systolic_bp", 30.0, 36.0) < 95.0);
                assert!(mean(&readings, p, "spo2", 30.0, 36.0) < 95.0);
            }
            let readings = run(SimConfig::uniform(seed, 8, Scenario::Stable, 1.0, T0), 120);
            for p in 0..8 {
                for start in (0..120).step_by(10).map(f64::from) {
                    let hr = mean(&readings, p, "heart_rate", start, start + 10.0);
                    let rr = mean(&readings, p, "respiratory_rate", start, start + 10.0);
                    let spo2 = mean(&readings, p, "spo2", start, start + 10.0);
                    let temp = mean(&readings, p, "temperature", start, start + 10.0);
                    let sbp = mean(&readings, p, "systolic_bp", start, start + 10.0);
                    assert!((50.0..=105.0).contains(&hr), "stable HR {hr}");
                    assert!((9.5..=21.0).contains(&rr), "stable RR {rr}");
                    assert!(spo2 >= 93.0, "stable SpO2 {spo2}");
                    assert!((36.0..=37.8).contains(&temp), "stable temp {temp}");
                    assert!((95.0..=155.0).contains(&sbp), "stable SBP {sbp}");
                }
            }
        }
    }

    #[test]
    fn hypoxia_artefact_and_dropout_show_their_signature() {
        let readings = run(SimConfig::uniform(9, 6, Scenario::Hypoxia, 1.0, T0), 36);
        for p in 0..6 {
            assert!(mean(&readings, p, "spo2", 0.0, 3.0) > 93.0);
            assert!(mean(&readings, p, "spo2", 30.0, 36.0) < 88.0);
            assert!(mean(&readings, p, "respiratory_rate", 30.0, 36.0) > 21.0);
        }
        let readings = run(SimConfig::uniform(9, 6, Scenario::Artefact, 1.0, T0), 60);
        for p in 0..6 {
            let spo2_spikes = series(&readings, p, "spo2")
                .iter()
                .filter(|r| r.value <= 75.0)
                .count();
            let hr_spikes = series(&readings, p, "heart_rate")
                .iter()
                .filter(|r| r.value >= 160.0)
                .count();
            assert!(spo2_spikes + hr_spikes >= 1, "patient {p} had no artefact");
            assert!(
                spo2_spikes + hr_spikes < 120,
                "patient {p} is mostly artefact"
            );
        }
        let readings = run(SimConfig::uniform(9, 6, Scenario::Dropout, 1.0, T0), 60);
        for p in 0..6 {
            let hr = series(&readings, p, "heart_rate");
            let longest = hr
                .windows(2)
                .map(|w| w[1].time_micros - w[0].time_micros)
                .max();
            assert!(longest > Some(3 * MINUTE), "patient {p} never dropped out");
            assert!(hr.len() > 60 * 60 / 2, "patient {p} silent too long");
        }
    }

    #[test]
    fn ids_unique_and_formatted() {
        let readings = run(SimConfig::uniform(4, 12, Scenario::Dropout, 1.0, T0), 30);
        let ids: std::collections::HashSet<&str> = readings.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), readings.len());
        for p in 0..12 {
            let serial = Simulator::device_serial(p);
            let own: Vec<_> = readings.iter().filter(|r| r.patient_index == p).collect();
            for (n, r) in own.iter().enumerate() {
                assert_eq!(r.device_serial, serial);
                assert_eq!(r.id, format!("{serial}-{n}"));
            }
        }
        assert_eq!(Simulator::device_serial(7), "SIM-MON-0007");
    }

    #[test]
    fn take_returns_count_in_time_order() {
        let config = SimConfig::uniform(2, 10, Scenario::Stable, 5.0, T0);
        let mut sim = Simulator::new(config.clone());
        let mut all = sim.take(1001);
        assert_eq!(all.len(), 1001);
        all.extend(sim.take(999));
        assert_eq!(all.len(), 2000);
        assert!(all.windows(2).all(|w| w[0].time_micros <= w[1].time_micros));
        let last = all[1999].time_micros;
        let stepped = Simulator::new(config).step(last);
        assert_eq!(all[..], stepped[..2000]);
        let mut empty = Simulator::new(SimConfig::uniform(2, 0, Scenario::Stable, 1.0, T0));
        assert!(empty.take(10).is_empty());
    }

    #[test]
    fn scenario_names_round_trip_and_demo_mix() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
            assert_eq!(Scenario::parse(&s.name().to_uppercase()), Some(s));
        }
        assert_eq!(Scenario::parse("bogus"), None);
        let demo = demo_scenarios(24);
        assert_eq!(demo.len(), 24);
        for s in Scenario::ALL {
            let count = demo.iter().filter(|d| **d == s).count();
            assert_eq!(count, if s == Scenario::Stable { 16 } else { 2 });
        }
        let sim = Simulator::new(SimConfig {
            scenarios: demo,
            ..SimConfig::uniform(1, 0, Scenario::Stable, 1.0, T0)
        });
        assert_eq!((sim.patients(), sim.scenario(1)), (24, Scenario::Sepsis));
    }
}
