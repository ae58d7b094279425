//! Score tables: every band edge of the built-in tables (NEWS2 chart 1 on both SpO2 scales,
//! qSOFA, MEWS), score bands, rounding, missing and stale inputs, table validation and a custom
//! table.

use galen_clinical::{
    Consciousness, Freshness, Missing, Oxygen, Parameter, Reading, ScoreInputs, ScoreTable, Source,
    Spo2Scale, TableError, Value,
};
use galen_model::Timestamp;
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::from_seconds(1_800_000_000);

/// A reading `age_seconds` before [`NOW`], from staff entry `entry`.
fn reading(value: Value, age_seconds: i64, entry: i64) -> Reading {
    Reading {
        value,
        time: NOW.add_micros(-age_seconds * 1_000_000),
        source: Source::Entry(entry),
    }
}

fn number(value: f64) -> Value {
    Value::Number(value)
}

/// A patient who scores 0 on every built-in table: RR 13, SpO2 98 (scale 1), air, SBP 120,
/// pulse 70, alert, 37.0 C; all readings 10 s old.
fn normal() -> ScoreInputs {
    let mut inputs = ScoreInputs::default();
    for parameter in Parameter::ALL {
        let value = match parameter {
            Parameter::RespiratoryRate => number(13.0),
            Parameter::Spo2 => number(98.0),
            Parameter::SupplementalOxygen => Value::Oxygen(Oxygen::Air),
            Parameter::SystolicBp => number(120.0),
            Parameter::HeartRate => number(70.0),
            Parameter::Consciousness => Value::Consciousness(Consciousness::Alert),
            Parameter::Temperature => number(37.0),
        };
        inputs.readings[parameter.index()] = Some(reading(value, 10, parameter.index() as i64));
    }
    inputs
}

/// `inputs` with `parameter` set to a fresh `value`.
fn with(mut inputs: ScoreInputs, parameter: Parameter, value: Value) -> ScoreInputs {
    inputs.readings[parameter.index()] = Some(reading(value, 10, 100 + parameter.index() as i64));
    inputs
}

fn with_all(inputs: ScoreInputs, values: &[(Parameter, Value)]) -> ScoreInputs {
    values.iter().fold(inputs, |inputs, &(parameter, value)| {
        with(inputs, parameter, value)
    })
}

/// Checks the points of one numeric `parameter` for each `(value, points)` case, with all other
/// parameters normal, the given SpO2 scale and air/oxygen state (`None`: no oxygen reading).
fn check(
    table: &ScoreTable,
    scale: Spo2Scale,
    oxygen: Option<Oxygen>,
    parameter: Parameter,
    cases: &[(f64, u8)],
) {
    for &(value, expected) in cases {
        let mut inputs = with(normal(), parameter, number(value));
        inputs.spo2_scale = scale;
        inputs.readings[Parameter::SupplementalOxygen.index()] =
            oxygen.map(|oxygen| reading(Value::Oxygen(oxygen), 10, 50));
        let score = table.evaluate(&inputs, NOW, &Freshness::default());
        let points = score.points[parameter.index()]
            .unwrap_or_else(|| panic!("{} {value}: no points", parameter.code()));
        assert_eq!(
            points.points,
            expected,
            "{} {} = {value} (scale {}, oxygen {oxygen:?})",
            table.id(),
            parameter.code(),
            scale.number()
        );
        assert_eq!(points.value, number(value));
        let sum: u16 = score
            .points
            .iter()
            .flatten()
            .map(|p| u16::from(p.points))
            .sum();
        assert_eq!(score.total, sum);
        assert_eq!(score.complete(), oxygen.is_some() || !uses_oxygen(table));
    }
}

fn uses_oxygen(table: &ScoreTable) -> bool {
    table.parameters().contains(&Parameter::SupplementalOxygen)
}

/// Checks the points of a coded value.
fn check_coded(table: &ScoreTable, parameter: Parameter, cases: &[(Value, u8)]) {
    for &(value, expected) in cases {
        let score = table.evaluate(
            &with(normal(), parameter, value),
            NOW,
            &Freshness::default(),
        );
        let points = score.points[parameter.index()].map(|p| p.points);
        assert_eq!(points, Some(expected), "{} {value:?}", table.id());
        assert_eq!(score.total, u16::from(expected));
        assert!(score.complete());
    }
}

/// Checks the total and band (name, rank, part of the monitoring text) of a score.
fn check_band(
    table: &ScoreTable,
    values: &[(Parameter, Value)],
    total: u16,
    (name, rank, monitoring): (&str, u8, &str),
) {
    let score = table.evaluate(&with_all(normal(), values), NOW, &Freshness::default());
    assert_eq!(score.total, total, "{values:?}");
    let band = &table.bands()[score.band];
    assert_eq!(band.name, name, "{values:?} total {total}");
    assert_eq!(band.rank, rank, "{values:?}");
    assert!(band.monitoring.contains(monitoring), "{}", band.monitoring);
    assert!(score.complete());
}

fn level(level: Consciousness) -> Value {
    Value::Consciousness(level)
}

fn oxygen(state: Oxygen) -> Value {
    Value::Oxygen(state)
}

use Parameter::{
    Consciousness as Acvpu, HeartRate, RespiratoryRate, Spo2, SupplementalOxygen, SystolicBp,
    Temperature,
};
use Spo2Scale::{Scale1, Scale2};

// ---- Built-in tables ----

#[test]
fn builtin_tables_load_with_header_parameters_and_maxima() {
    let tables = ScoreTable::builtin();
    let ids: Vec<&str> = tables.iter().map(ScoreTable::id).collect();
    assert_eq!(ids, ["news2", "qsofa", "mews"]);

    let news2 = ScoreTable::news2();
    assert_eq!(news2.version(), "rcp-2017.1");
    assert!(news2.name().contains("NEWS2"));
    assert!(news2.source().contains("Royal College of Physicians"));
    assert_eq!(news2.parameters(), Parameter::ALL.to_vec());
    assert_eq!(news2.max_total(), 20);
    let bands: Vec<(&str, u8)> = news2
        .bands()
        .iter()
        .map(|band| (band.name.as_str(), band.rank))
        .collect();
    assert_eq!(
        bands,
        [
            ("high", 4),
            ("medium", 3),
            ("low-medium", 2),
            ("low", 1),
            ("low", 0)
        ]
    );

    let qsofa = ScoreTable::qsofa();
    assert!(qsofa.source().contains("JAMA 2016"));
    assert_eq!(qsofa.parameters(), [RespiratoryRate, SystolicBp, Acvpu]);
    assert_eq!(qsofa.max_total(), 3);

    let mews = ScoreTable::mews();
    assert!(mews.source().contains("QJM 2001"));
    assert_eq!(
        mews.parameters(),
        [RespiratoryRate, SystolicBp, HeartRate, Acvpu, Temperature]
    );
    assert_eq!(mews.max_total(), 14);
    assert!(tables.iter().all(|table| !table.version().is_empty()));
}

#[test]
fn normal_patient_scores_zero_everywhere() {
    for table in ScoreTable::builtin() {
        let score = table.evaluate(&normal(), NOW, &Freshness::default());
        assert_eq!(score.total, 0, "{}", table.id());
        assert!(score.complete());
        assert_eq!(score.time, NOW);
        assert_eq!(score.band, table.bands().len() - 1);
        assert_eq!(score.max_single(), 0);
    }
}

// ---- NEWS2 chart 1, every edge ----

#[test]
fn news2_respiration_rate_edges() {
    let cases = [
        (0.0, 3),
        (8.0, 3),
        (9.0, 1),
        (11.0, 1),
        (12.0, 0),
        (20.0, 0),
        (21.0, 2),
        (24.0, 2),
        (25.0, 3),
        (60.0, 3),
    ];
    for scale in [Scale1, Scale2] {
        check(
            &ScoreTable::news2(),
            scale,
            Some(Oxygen::Air),
            RespiratoryRate,
            &cases,
        );
    }
}

#[test]
fn news2_spo2_scale_1_edges_on_air_and_oxygen() {
    let cases = [
        (50.0, 3),
        (91.0, 3),
        (92.0, 2),
        (93.0, 2),
        (94.0, 1),
        (95.0, 1),
        (96.0, 0),
        (100.0, 0),
    ];
    for state in [Oxygen::Air, Oxygen::Supplemental] {
        check(&ScoreTable::news2(), Scale1, Some(state), Spo2, &cases);
    }
}

#[test]
fn news2_spo2_scale_2_edges_on_air() {
    let cases = [
        (70.0, 3),
        (83.0, 3),
        (84.0, 2),
        (85.0, 2),
        (86.0, 1),
        (87.0, 1),
        (88.0, 0),
        (92.0, 0),
        (93.0, 0),
        (94.0, 0),
        (95.0, 0),
        (96.0, 0),
        (97.0, 0),
        (100.0, 0),
    ];
    check(
        &ScoreTable::news2(),
        Scale2,
        Some(Oxygen::Air),
        Spo2,
        &cases,
    );
}

#[test]
fn news2_spo2_scale_2_edges_on_oxygen() {
    let cases = [
        (70.0, 3),
        (83.0, 3),
        (84.0, 2),
        (85.0, 2),
        (86.0, 1),
        (87.0, 1),
        (88.0, 0),
        (92.0, 0),
        (93.0, 1),
        (94.0, 1),
        (95.0, 2),
        (96.0, 2),
        (97.0, 3),
        (100.0, 3),
    ];
    check(
        &ScoreTable::news2(),
        Scale2,
        Some(Oxygen::Supplemental),
        Spo2,
        &cases,
    );
}

#[test]
fn news2_spo2_scale_2_without_oxygen_reading_uses_air_bands_and_lists_oxygen_missing() {
    let cases = [(83.0, 3), (88.0, 0), (92.0, 0), (93.0, 0), (97.0, 0)];
    check(&ScoreTable::news2(), Scale2, None, Spo2, &cases);

    // Stale oxygen: same, with last_seen.
    let mut inputs = with(normal(), Spo2, number(97.0));
    inputs.spo2_scale = Scale2;
    inputs.readings[SupplementalOxygen.index()] =
        Some(reading(oxygen(Oxygen::Supplemental), 13 * 3600, 9));
    let score = ScoreTable::news2().evaluate(&inputs, NOW, &Freshness::default());
    assert_eq!(score.points[Spo2.index()].map(|p| p.points), Some(0));
    assert_eq!(score.total, 0);
    assert!(!score.complete());
    assert_eq!(
        score.missing[SupplementalOxygen.index()],
        Some(Missing {
            parameter: SupplementalOxygen,
            last_seen: Some(NOW.add_micros(-13 * 3600 * 1_000_000)),
        })
    );
}

#[test]
fn news2_air_or_oxygen() {
    check_coded(
        &ScoreTable::news2(),
        SupplementalOxygen,
        &[(oxygen(Oxygen::Air), 0), (oxygen(Oxygen::Supplemental), 2)],
    );
}

#[test]
fn news2_systolic_bp_edges() {
    let cases = [
        (40.0, 3),
        (90.0, 3),
        (91.0, 2),
        (100.0, 2),
        (101.0, 1),
        (110.0, 1),
        (111.0, 0),
        (219.0, 0),
        (220.0, 3),
        (300.0, 3),
    ];
    check(
        &ScoreTable::news2(),
        Scale1,
        Some(Oxygen::Air),
        SystolicBp,
        &cases,
    );
}

#[test]
fn news2_pulse_edges() {
    let cases = [
        (20.0, 3),
        (40.0, 3),
        (41.0, 1),
        (50.0, 1),
        (51.0, 0),
        (90.0, 0),
        (91.0, 1),
        (110.0, 1),
        (111.0, 2),
        (130.0, 2),
        (131.0, 3),
        (250.0, 3),
    ];
    check(
        &ScoreTable::news2(),
        Scale1,
        Some(Oxygen::Air),
        HeartRate,
        &cases,
    );
}

#[test]
fn news2_consciousness_levels() {
    check_coded(
        &ScoreTable::news2(),
        Acvpu,
        &[
            (level(Consciousness::Alert), 0),
            (level(Consciousness::NewConfusion), 3),
            (level(Consciousness::Voice), 3),
            (level(Consciousness::Pain), 3),
            (level(Consciousness::Unresponsive), 3),
        ],
    );
}

#[test]
fn news2_temperature_edges() {
    let cases = [
        (30.0, 3),
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (42.0, 2),
    ];
    check(
        &ScoreTable::news2(),
        Scale1,
        Some(Oxygen::Air),
        Temperature,
        &cases,
    );
}

// ---- NEWS2 charts 2-4, aggregate and bands ----

#[test]
fn news2_bands() {
    let table = ScoreTable::news2();
    let n = number;
    let low_12 = ("low", 0, "12-hourly");
    let low_4_6 = ("low", 1, "4-6-hourly");
    let low_medium = ("low-medium", 2, "1-hourly");
    let medium = ("medium", 3, "1-hourly");
    let high = ("high", 4, "continuous");
    check_band(&table, &[], 0, low_12);
    check_band(&table, &[(HeartRate, n(95.0))], 1, low_4_6);
    check_band(
        &table,
        &[(SupplementalOxygen, oxygen(Oxygen::Supplemental))],
        2,
        low_4_6,
    );
    let four = [
        (HeartRate, n(95.0)),
        (Temperature, n(38.5)),
        (SystolicBp, n(105.0)),
        (RespiratoryRate, n(10.0)),
    ];
    check_band(&table, &four, 4, low_4_6);
    // A single parameter scoring 3 with a total below 5.
    check_band(&table, &[(RespiratoryRate, n(8.0))], 3, low_medium);
    check_band(
        &table,
        &[(Acvpu, level(Consciousness::NewConfusion))],
        3,
        low_medium,
    );
    check_band(
        &table,
        &[(RespiratoryRate, n(8.0)), (HeartRate, n(95.0))],
        4,
        low_medium,
    );
    // 5 and 6: medium, whether or not a single parameter scores 3.
    let five = [
        (RespiratoryRate, n(22.0)),
        (HeartRate, n(115.0)),
        (Temperature, n(38.5)),
    ];
    check_band(&table, &five, 5, medium);
    check_band(
        &table,
        &[(RespiratoryRate, n(8.0)), (HeartRate, n(115.0))],
        5,
        medium,
    );
    let six = [
        (RespiratoryRate, n(22.0)),
        (HeartRate, n(115.0)),
        (SystolicBp, n(95.0)),
    ];
    check_band(&table, &six, 6, medium);
    // 7: high.
    let seven = [
        (RespiratoryRate, n(25.0)),
        (HeartRate, n(115.0)),
        (SystolicBp, n(95.0)),
    ];
    check_band(&table, &seven, 7, high);
    // Maximum, 20, on both scales.
    let worst = [
        (RespiratoryRate, n(5.0)),
        (Spo2, n(80.0)),
        (SupplementalOxygen, oxygen(Oxygen::Supplemental)),
        (SystolicBp, n(80.0)),
        (HeartRate, n(140.0)),
        (Acvpu, level(Consciousness::Unresponsive)),
        (Temperature, n(34.0)),
    ];
    check_band(&table, &worst, 20, high);
    let mut inputs = with_all(normal(), &worst);
    inputs = with(inputs, Spo2, n(99.0));
    inputs.spo2_scale = Scale2;
    let score = table.evaluate(&inputs, NOW, &Freshness::default());
    assert_eq!(score.total, 20);
    assert_eq!(score.total, table.max_total());
    assert_eq!(score.max_single(), 3);
}

// ---- qSOFA (Seymour et al., JAMA 2016) ----

#[test]
fn qsofa_edges() {
    let table = ScoreTable::qsofa();
    let air = Some(Oxygen::Air);
    let rr = [
        (12.0, 0),
        (21.0, 0),
        (21.4, 0),
        (21.5, 1),
        (22.0, 1),
        (40.0, 1),
    ];
    check(&table, Scale1, air, RespiratoryRate, &rr);
    let sbp = [
        (60.0, 1),
        (100.0, 1),
        (100.4, 1),
        (100.5, 0),
        (101.0, 0),
        (160.0, 0),
    ];
    check(&table, Scale1, air, SystolicBp, &sbp);
    check_coded(
        &table,
        Acvpu,
        &[
            (level(Consciousness::Alert), 0),
            (level(Consciousness::NewConfusion), 1),
            (level(Consciousness::Voice), 1),
            (level(Consciousness::Pain), 1),
            (level(Consciousness::Unresponsive), 1),
        ],
    );
    // Parameters qSOFA does not use are ignored.
    let score = table.evaluate(
        &with(normal(), Temperature, number(41.0)),
        NOW,
        &Freshness::default(),
    );
    assert_eq!(score.total, 0);
    assert_eq!(score.points[Temperature.index()], None);
}

#[test]
fn qsofa_positive_at_two() {
    let table = ScoreTable::qsofa();
    let negative = ("negative", 0, "routine");
    let positive = ("positive", 1, "hourly");
    check_band(&table, &[], 0, negative);
    check_band(&table, &[(RespiratoryRate, number(22.0))], 1, negative);
    check_band(&table, &[(SystolicBp, number(100.0))], 1, negative);
    let rr_sbp = [(RespiratoryRate, number(22.0)), (SystolicBp, number(100.0))];
    check_band(&table, &rr_sbp, 2, positive);
    let rr_mentation = [
        (RespiratoryRate, number(22.0)),
        (Acvpu, level(Consciousness::NewConfusion)),
    ];
    check_band(&table, &rr_mentation, 2, positive);
    let all = [
        (RespiratoryRate, number(30.0)),
        (SystolicBp, number(85.0)),
        (Acvpu, level(Consciousness::Voice)),
    ];
    check_band(&table, &all, 3, positive);
    let near = [(RespiratoryRate, number(21.0)), (SystolicBp, number(101.0))];
    check_band(&table, &near, 0, negative);
}

// ---- MEWS (Subbe et al., QJM 2001; local variant) ----

#[test]
fn mews_edges() {
    let table = ScoreTable::mews();
    let air = Some(Oxygen::Air);
    let sbp = [
        (50.0, 3),
        (70.0, 3),
        (71.0, 2),
        (80.0, 2),
        (81.0, 1),
        (100.0, 1),
        (101.0, 0),
        (199.0, 0),
        (200.0, 2),
        (260.0, 2),
    ];
    check(&table, Scale1, air, SystolicBp, &sbp);
    let hr = [
        (30.0, 2),
        (40.0, 2),
        (41.0, 1),
        (50.0, 1),
        (51.0, 0),
        (100.0, 0),
        (101.0, 1),
        (110.0, 1),
        (111.0, 2),
        (129.0, 2),
        (130.0, 3),
        (200.0, 3),
    ];
    check(&table, Scale1, air, HeartRate, &hr);
    let rr = [
        (4.0, 2),
        (8.0, 2),
        (9.0, 0),
        (14.0, 0),
        (15.0, 1),
        (20.0, 1),
        (21.0, 2),
        (29.0, 2),
        (30.0, 3),
        (50.0, 3),
    ];
    check(&table, Scale1, air, RespiratoryRate, &rr);
    let temperature = [
        (33.0, 2),
        (34.9, 2),
        (34.95, 0),
        (35.0, 0),
        (38.4, 0),
        (38.44, 0),
        (38.45, 2),
        (38.5, 2),
        (41.0, 2),
    ];
    check(&table, Scale1, air, Temperature, &temperature);
    check_coded(
        &table,
        Acvpu,
        &[
            (level(Consciousness::Alert), 0),
            (level(Consciousness::NewConfusion), 1),
            (level(Consciousness::Voice), 1),
            (level(Consciousness::Pain), 2),
            (level(Consciousness::Unresponsive), 3),
        ],
    );
    // SpO2 and oxygen are not MEWS parameters.
    let score = table.evaluate(
        &with(normal(), Spo2, number(80.0)),
        NOW,
        &Freshness::default(),
    );
    assert_eq!(score.total, 0);
}

#[test]
fn mews_threshold_at_five() {
    let table = ScoreTable::mews();
    let low = ("low", 0, "local policy");
    let high = ("high", 1, "hourly");
    let four = [(HeartRate, number(115.0)), (RespiratoryRate, number(25.0))];
    check_band(&table, &four, 4, low);
    let five = [
        (HeartRate, number(115.0)),
        (RespiratoryRate, number(25.0)),
        (SystolicBp, number(90.0)),
    ];
    check_band(&table, &five, 5, high);
    // A single 3 does not trigger MEWS by itself.
    check_band(&table, &[(HeartRate, number(130.0))], 3, low);
    let worst = [
        (SystolicBp, number(60.0)),
        (HeartRate, number(150.0)),
        (RespiratoryRate, number(35.0)),
        (Temperature, number(40.0)),
        (Acvpu, level(Consciousness::Unresponsive)),
    ];
    check_band(&table, &worst, 14, high);
}

// ---- Rounding ----

#[test]
fn numeric_values_round_half_away_from_zero_at_the_resolution() {
    let news2 = ScoreTable::news2();
    let air = Some(Oxygen::Air);
    // Temperature, one decimal: 36.05 is stored as 36.04999... in binary and must still round up.
    let temperature = [
        (35.04, 3),
        (35.05, 1),
        (36.04, 1),
        (36.05, 0),
        (38.04, 0),
        (38.05, 1),
        (39.04, 1),
        (39.05, 2),
        (36.0999999, 0),
    ];
    check(&news2, Scale1, air, Temperature, &temperature);
    // Integer parameters.
    check(
        &news2,
        Scale1,
        air,
        Spo2,
        &[(95.4, 1), (95.5, 0), (91.5, 2), (91.49, 3)],
    );
    check(
        &news2,
        Scale1,
        air,
        RespiratoryRate,
        &[(8.49, 3), (8.5, 1), (20.5, 2)],
    );
    check(
        &news2,
        Scale1,
        air,
        SystolicBp,
        &[(90.5, 2), (219.5, 3), (110.49, 1)],
    );
    check(
        &news2,
        Scale1,
        air,
        HeartRate,
        &[(40.5, 1), (130.5, 3), (90.4, 0)],
    );

    // The rounded value is recorded.
    for (value, rounded) in [
        (36.05, 36.1),
        (36.04, 36.0),
        (38.05, 38.1),
        (36.15, 36.2),
        (37.25, 37.3),
        (-0.05, -0.1),
        (-0.04, 0.0),
    ] {
        let score = news2.evaluate(
            &with(normal(), Temperature, number(value)),
            NOW,
            &Freshness::default(),
        );
        let points = score.points[Temperature.index()].expect("temperature present");
        assert_eq!(points.rounded, Some(rounded), "{value}");
    }
    for (value, rounded) in [(95.5, 96.0), (95.4999, 95.0), (0.5, 1.0), (-0.5, -1.0)] {
        let score = news2.evaluate(
            &with(normal(), Spo2, number(value)),
            NOW,
            &Freshness::default(),
        );
        let points = score.points[Spo2.index()].expect("spo2 present");
        assert_eq!(points.rounded, Some(rounded), "{value}");
        assert_eq!(points.value, number(value));
    }
}

/// A made-up table with a two-decimal temperature, where naive `(x * 100).round()` goes wrong.
const HUNDREDTHS: &str = r#"
id = "hundredths-test"
version = "test-1"
name = "Two-decimal temperature (test only)"
source = "invented for Galen tests"

[[parameter]]
code = "temperature"
decimals = 2
bands = [
    { max = 37.49, points = 0 },
    { min = 37.50, points = 1 },
]

[[band]]
name = "any"
rank = 0
monitoring = "none"
response = "none"
"#;

#[test]
fn rounding_is_exact_at_two_decimals() {
    // 37.495 is 37.49499999999999744... in binary, and 37.495 * 100 is 3749.4999999999995.
    let table = ScoreTable::from_toml(HUNDREDTHS).expect("valid table");
    let air = Some(Oxygen::Air);
    let cases = [(37.49, 0), (37.4949, 0), (37.495, 1), (37.5, 1)];
    check(&table, Scale1, air, Temperature, &cases);
    for (value, rounded) in [
        (35.105, 35.11),
        (36.995, 37.0),
        (1.005, 1.01),
        (0.145, 0.15),
    ] {
        let score = table.evaluate(
            &with(normal(), Temperature, number(value)),
            NOW,
            &Freshness::default(),
        );
        let points = score.points[Temperature.index()].expect("temperature present");
        assert_eq!(points.rounded, Some(rounded), "{value}");
    }
}

#[test]
fn non_finite_and_wrong_kind_values_are_missing_not_normal() {
    let news2 = ScoreTable::news2();
    for value in [
        number(f64::NAN),
        number(f64::INFINITY),
        level(Consciousness::Alert),
    ] {
        let score = news2.evaluate(
            &with(normal(), HeartRate, value),
            NOW,
            &Freshness::default(),
        );
        assert!(!score.complete(), "{value:?}");
        assert_eq!(score.points[HeartRate.index()], None);
        assert_eq!(
            score.missing[HeartRate.index()],
            Some(Missing {
                parameter: HeartRate,
                last_seen: None
            })
        );
    }
    let score = news2.evaluate(
        &with(normal(), Acvpu, number(15.0)),
        NOW,
        &Freshness::default(),
    );
    assert_eq!(score.missing_parameters().collect::<Vec<_>>(), [Acvpu]);
    // Huge values fall in the open-ended bands.
    check(
        &news2,
        Scale1,
        Some(Oxygen::Air),
        HeartRate,
        &[(1e300, 3), (-1e300, 3), (f64::MAX, 3)],
    );
}

// ---- Missing and stale inputs ----

#[test]
fn missing_parameters_are_listed_and_make_a_lower_bound() {
    let news2 = ScoreTable::news2();
    let mut inputs = with(normal(), HeartRate, number(115.0));
    inputs.readings[Temperature.index()] = None;
    inputs.readings[SystolicBp.index()] = None;
    let score = news2.evaluate(&inputs, NOW, &Freshness::default());
    assert!(!score.complete());
    assert_eq!(score.total, 2);
    assert_eq!(
        score.missing_parameters().collect::<Vec<_>>(),
        [SystolicBp, Temperature]
    );
    assert_eq!(
        score.missing[Temperature.index()],
        Some(Missing {
            parameter: Temperature,
            last_seen: None
        })
    );
    assert_eq!(score.points[Temperature.index()], None);
    assert_eq!(news2.bands()[score.band].name, "low");
    // Filling them in can only raise the score.
    let full = news2.evaluate(
        &with_all(
            inputs,
            &[(Temperature, number(39.5)), (SystolicBp, number(85.0))],
        ),
        NOW,
        &Freshness::default(),
    );
    assert!(full.complete());
    assert_eq!(full.total, 7);
    assert_eq!(news2.bands()[full.band].name, "high");

    // Nothing at all: total 0, every parameter missing, never "complete".
    let empty = news2.evaluate(&ScoreInputs::default(), NOW, &Freshness::default());
    assert_eq!(empty.total, 0);
    assert!(!empty.complete());
    assert_eq!(empty.missing_parameters().count(), Parameter::COUNT);
    assert_eq!(empty.sources().count(), 0);
}

#[test]
fn stale_readings_are_missing_with_last_seen() {
    let news2 = ScoreTable::news2();
    let freshness = Freshness::default();
    let max_age = i64::from(freshness.max_age_seconds[HeartRate.index()]);
    let mut inputs = normal();
    // Exactly at the limit still counts.
    inputs.readings[HeartRate.index()] = Some(reading(number(140.0), max_age, 7));
    let score = news2.evaluate(&inputs, NOW, &freshness);
    assert!(score.complete());
    assert_eq!(score.total, 3);
    // One microsecond later it does not.
    let later = NOW.add_micros(1);
    let score = news2.evaluate(&inputs, later, &freshness);
    assert!(!score.complete());
    assert_eq!(score.total, 0);
    assert_eq!(score.time, later);
    let seen = NOW.add_micros(-max_age * 1_000_000);
    assert_eq!(
        score.missing[HeartRate.index()],
        Some(Missing {
            parameter: HeartRate,
            last_seen: Some(seen)
        })
    );
    assert_eq!(score.points[HeartRate.index()], None);
    // Custom freshness.
    let mut strict = freshness;
    strict.max_age_seconds[Temperature.index()] = 5;
    let score = news2.evaluate(&normal(), NOW, &strict);
    assert_eq!(
        score.missing_parameters().collect::<Vec<_>>(),
        [Temperature]
    );
}

#[test]
fn score_reports_sources_and_max_single() {
    let news2 = ScoreTable::news2();
    let inputs = with_all(
        normal(),
        &[(RespiratoryRate, number(26.0)), (HeartRate, number(115.0))],
    );
    let score = news2.evaluate(&inputs, NOW, &Freshness::default());
    assert_eq!(score.max_single(), 3);
    let sources: Vec<Source> = score.sources().collect();
    assert_eq!(sources.len(), Parameter::COUNT);
    assert_eq!(
        sources[0],
        Source::Entry(100 + RespiratoryRate.index() as i64)
    );
    let rr = score.points[RespiratoryRate.index()].expect("rr present");
    assert_eq!(rr.parameter, RespiratoryRate);
    assert_eq!(rr.time, NOW.add_micros(-10_000_000));
    assert_eq!(rr.rounded, Some(26.0));
    let acvpu = score.points[Acvpu.index()].expect("acvpu present");
    assert_eq!(acvpu.rounded, None);
}

// ---- Custom tables and validation ----

/// A made-up paediatric chart (not a real PEWS) with one SpO2 entry and `{RR}` to replace.
const PAEDIATRIC: &str = r#"
# Made-up chart for tests; not a clinical standard.
id = "pews-test"
version = "test-1"
name = "Test paediatric chart"
source = "invented for Galen tests"

[[parameter]]
code = "respiratory_rate"
decimals = 0
bands = [{RR}]

[[parameter]]
code = "spo2"
decimals = 1
bands = [
    { max = 91.9, points = 2 },
    { min = 92.0, max = 93.5, points = 1, oxygen = "air" },
    { min = 92.0, points = 2, oxygen = "oxygen" },
    { min = 93.6, points = 0, oxygen = "air" },
]

[[parameter]]
code = "consciousness"
points = { alert = 0, confusion = 1, voice = 1, pain = 2, unresponsive = 3 }

[[band]]
name = "red"
rank = 2
min_total = 5
monitoring = "continuous"
response = "call the paediatric emergency team"

[[band]]
name = "amber"
rank = 1
min_single = 2
monitoring = "hourly"
response = "inform the nurse in charge"

[[band]]
name = "green"
rank = 0
monitoring = "4-hourly"
response = "routine"
"#;

const PAEDIATRIC_RR: &str =
    "{ max = 19, points = 2 }, { min = 20, max = 40, points = 0 }, { min = 41, points = 3 }";

fn paediatric(rr: &str) -> String {
    PAEDIATRIC.replace("{RR}", rr)
}

#[test]
fn custom_table_loads_and_scores() {
    let table = ScoreTable::from_toml(&paediatric(PAEDIATRIC_RR)).expect("valid table");
    assert_eq!(table.id(), "pews-test");
    assert_eq!(table.version(), "test-1");
    // Oxygen is used as a band condition, so it is a parameter of the table.
    assert_eq!(
        table.parameters(),
        [RespiratoryRate, Spo2, SupplementalOxygen, Acvpu]
    );
    assert_eq!(table.max_total(), 8);
    let air = Some(Oxygen::Air);
    let rr = [(19.0, 2), (20.0, 0), (40.0, 0), (41.0, 3)];
    check(&table, Scale1, air, RespiratoryRate, &rr);
    // One SpO2 entry serves both scales; one decimal resolution.
    for scale in [Scale1, Scale2] {
        let on_air = [(91.9, 2), (91.94, 2), (91.95, 1), (93.5, 1), (93.6, 0)];
        check(&table, scale, air, Spo2, &on_air);
        let on_oxygen = [(91.9, 2), (92.0, 2), (99.0, 2)];
        check(&table, scale, Some(Oxygen::Supplemental), Spo2, &on_oxygen);
    }
    // A child's normal respiratory rate (30) scores 0; the adult normal (13) scores 2.
    let child = with(normal(), RespiratoryRate, number(30.0));
    let score = table.evaluate(&child, NOW, &Freshness::default());
    assert_eq!(
        (score.total, table.bands()[score.band].name.as_str()),
        (0, "green")
    );
    let score = table.evaluate(&normal(), NOW, &Freshness::default());
    assert_eq!(
        (score.total, table.bands()[score.band].name.as_str()),
        (2, "amber")
    );
    // Oxygen scores nothing itself but is recorded, and moves SpO2 to the oxygen bands.
    let score = table.evaluate(
        &with(
            child.clone(),
            SupplementalOxygen,
            oxygen(Oxygen::Supplemental),
        ),
        NOW,
        &Freshness::default(),
    );
    assert_eq!(score.total, 2);
    assert_eq!(
        score.points[SupplementalOxygen.index()].map(|p| p.points),
        Some(0)
    );
    assert_eq!(table.bands()[score.band].name, "amber");
    let red = with_all(
        normal(),
        &[
            (RespiratoryRate, number(50.0)),
            (Acvpu, level(Consciousness::Pain)),
        ],
    );
    let score = table.evaluate(&red, NOW, &Freshness::default());
    assert_eq!(
        (score.total, table.bands()[score.band].name.as_str()),
        (5, "red")
    );
}

/// Asserts that `text` is refused, that the message names `mentions`, is lower-case and has no
/// final period, and returns the error.
fn refused(text: &str, mentions: &str) -> TableError {
    let error = match ScoreTable::from_toml(text) {
        Ok(table) => panic!("accepted: {}", table.id()),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
    assert!(!message.ends_with('.'), "{message:?}");
    assert!(
        message.starts_with(|c: char| c.is_lowercase()),
        "{message:?}"
    );
    error
}

#[test]
fn numeric_band_errors() {
    let gap = paediatric(
        "{ max = 19, points = 2 }, { min = 21, max = 40, points = 0 }, { min = 41, points = 3 }",
    );
    let error = refused(&gap, "respiratory_rate");
    assert!(
        matches!(&error, TableError::Gap { after, before, .. } if after == "19" && before == "21"),
        "{error}"
    );

    let overlap = paediatric(
        "{ max = 20, points = 2 }, { min = 20, max = 40, points = 0 }, { min = 41, points = 3 }",
    );
    let error = refused(&overlap, "respiratory_rate");
    assert!(
        matches!(&error, TableError::Overlap { at, .. } if at == "20"),
        "{error}"
    );

    let open_middle =
        paediatric("{ max = 19, points = 2 }, { min = 20, points = 0 }, { min = 41, points = 3 }");
    let error = refused(&open_middle, "respiratory_rate");
    assert!(matches!(error, TableError::OpenMiddle { .. }), "{error}");
    let unsorted = paediatric(
        "{ max = 19, points = 2 }, { min = 20, max = 40, points = 0 }, { min = 10, max = 15, points = 1 }, { min = 41, points = 3 }",
    );
    let error = refused(&unsorted, "respiratory_rate");
    assert!(matches!(error, TableError::Unsorted { .. }), "{error}");

    let closed_below = paediatric("{ min = 0, max = 40, points = 0 }, { min = 41, points = 3 }");
    let error = refused(&closed_below, "respiratory_rate");
    assert!(matches!(error, TableError::OpenBelow(_)), "{error}");

    let closed_above = paediatric("{ max = 19, points = 2 }, { min = 20, max = 90, points = 0 }");
    let error = refused(&closed_above, "respiratory_rate");
    assert!(matches!(error, TableError::OpenAbove(_)), "{error}");

    let empty = paediatric("");
    let error = refused(&empty, "respiratory_rate");
    assert!(matches!(error, TableError::NoRanges(_)), "{error}");

    let finer = paediatric("{ max = 19.5, points = 2 }, { min = 20, points = 0 }");
    let error = refused(&finer, "respiratory_rate");
    assert!(matches!(error, TableError::Bound { .. }), "{error}");

    let inverted = paediatric(
        "{ max = 19, points = 2 }, { min = 40, max = 20, points = 0 }, { min = 41, points = 3 }",
    );
    let error = refused(&inverted, "respiratory_rate");
    assert!(matches!(error, TableError::EmptyRange { .. }), "{error}");

    let condition = paediatric("{ points = 0, oxygen = \"nitrox\" }");
    let error = refused(&condition, "nitrox");
    assert!(
        matches!(error, TableError::OxygenCondition { .. }),
        "{error}"
    );

    // Oxygen-conditioned bands must cover every value in each state.
    let spo2_gap = paediatric(PAEDIATRIC_RR).replace(
        "{ min = 93.6, points = 0, oxygen = \"air\" }",
        "{ min = 93.7, points = 0, oxygen = \"air\" }",
    );
    let error = refused(&spo2_gap, "spo2 on air");
    assert!(
        matches!(&error, TableError::Gap { after, before, .. } if after == "93.5" && before == "93.7"),
        "{error}"
    );
    let spo2_open = paediatric(PAEDIATRIC_RR).replace(
        "{ min = 92.0, points = 2, oxygen = \"oxygen\" }",
        "{ min = 92.0, max = 99.0, points = 2, oxygen = \"oxygen\" }",
    );
    let error = refused(&spo2_open, "spo2 on oxygen");
    assert!(matches!(error, TableError::OpenAbove(_)), "{error}");
}

#[test]
fn parameter_errors() {
    let valid = paediatric(PAEDIATRIC_RR);

    let unknown = valid.replace("code = \"respiratory_rate\"", "code = \"resp_rate\"");
    let error = refused(&unknown, "resp_rate");
    assert!(matches!(error, TableError::UnknownParameter(_)), "{error}");

    let no_unresponsive = valid.replace(", unresponsive = 3", "");
    let error = refused(&no_unresponsive, "consciousness");
    assert!(
        matches!(error, TableError::MissingLevel { level: "U", .. }),
        "{error}"
    );

    let unknown_level = valid.replace("unresponsive = 3", "unresponsive = 3, drowsy = 1");
    let error = refused(&unknown_level, "drowsy");
    assert!(matches!(error, TableError::UnknownLevel { .. }), "{error}");

    let twice = valid.replace("unresponsive = 3", "unresponsive = 3, U = 3");
    let error = refused(&twice, "consciousness");
    assert!(
        matches!(error, TableError::DuplicateLevel { .. }),
        "{error}"
    );

    let duplicate = format!(
        "{valid}\n[[parameter]]\ncode = \"respiratory_rate\"\ndecimals = 0\nbands = [{{ points = 0 }}]\n"
    );
    // The extra [[parameter]] after [[band]] is still a parameter entry.
    let error = refused(&duplicate, "respiratory_rate");
    assert!(
        matches!(error, TableError::DuplicateParameter(_)),
        "{error}"
    );

    let scaled = valid.replace(
        "code = \"respiratory_rate\"",
        "code = \"respiratory_rate\"\nscale = 2",
    );
    let error = refused(&scaled, "respiratory_rate");
    assert!(matches!(error, TableError::InvalidScale { .. }), "{error}");

    let two_spo2 = format!(
        "{valid}\n[[parameter]]\ncode = \"spo2\"\ndecimals = 0\nbands = [{{ points = 0 }}]\n"
    );
    let error = refused(&two_spo2, "spo2");
    assert!(
        matches!(error, TableError::DuplicateParameter(_)),
        "{error}"
    );

    let numeric_points = valid.replace(
        "code = \"respiratory_rate\"\ndecimals = 0",
        "code = \"respiratory_rate\"\npoints = { air = 1 }",
    );
    let error = refused(&numeric_points, "respiratory_rate");
    assert!(matches!(error, TableError::Shape { .. }), "{error}");

    let fine = valid.replace("decimals = 1", "decimals = 7");
    let error = refused(&fine, "spo2");
    assert!(matches!(error, TableError::Decimals { .. }), "{error}");

    let oxygen_partial =
        format!("{valid}\n[[parameter]]\ncode = \"oxygen\"\npoints = {{ air = 0 }}\n");
    let error = refused(&oxygen_partial, "oxygen");
    assert!(
        matches!(
            error,
            TableError::MissingLevel {
                level: "oxygen",
                ..
            }
        ),
        "{error}"
    );

    let typo = valid.replace("decimals = 0", "decimal = 0");
    let error = refused(&typo, "decimal");
    assert!(matches!(error, TableError::Syntax(_)), "{error}");

    let no_version = valid.replace("version = \"test-1\"", "version = \" \"");
    let error = refused(&no_version, "version");
    assert!(
        matches!(error, TableError::EmptyField("version")),
        "{error}"
    );
}

#[test]
fn band_errors() {
    let valid = paediatric(PAEDIATRIC_RR);

    let no_catch_all = valid.replace(
        "name = \"green\"\nrank = 0",
        "name = \"green\"\nrank = 0\nmax_total = 4",
    );
    let error = refused(&no_catch_all, "green");
    assert!(matches!(error, TableError::NoCatchAll(_)), "{error}");

    let inverted = valid.replace("min_total = 5", "min_total = 5\nmax_total = 3");
    let error = refused(&inverted, "red");
    assert!(matches!(error, TableError::BandRange(_)), "{error}");

    let cut = valid.find("[[band]]").expect("bands in the test table");
    let error = refused(&valid[..cut], "bands");
    assert!(matches!(error, TableError::NoBands), "{error}");

    let nameless = valid.replace("name = \"amber\"", "name = \"\"");
    let error = refused(&nameless, "band 1");
    assert!(matches!(error, TableError::BandName(1)), "{error}");

    let unknown_condition = valid.replace("min_single = 2", "min_single = 2\nmax_single = 3");
    let error = refused(&unknown_condition, "max_single");
    assert!(matches!(error, TableError::Syntax(_)), "{error}");
}

#[test]
fn builtin_table_files_round_trip_through_from_toml() {
    for (text, id) in [
        (include_str!("../tables/news2.toml"), "news2"),
        (include_str!("../tables/qsofa.toml"), "qsofa"),
        (include_str!("../tables/mews.toml"), "mews"),
    ] {
        let table = ScoreTable::from_toml(text).expect("built-in table is valid");
        assert_eq!(table.id(), id);
        assert!(ScoreTable::builtin().contains(&table));
    }
}

// ---- Properties ----

fn value_strategy(parameter: Parameter) -> BoxedStrategy<Value> {
    match parameter {
        Parameter::Consciousness => proptest::sample::select(Consciousness::ALL.to_vec())
            .prop_map(Value::Consciousness)
            .boxed(),
        Parameter::SupplementalOxygen => {
            proptest::sample::select(vec![Oxygen::Air, Oxygen::Supplemental])
                .prop_map(Value::Oxygen)
                .boxed()
        }
        _ => prop_oneof![
            (-20i32..320).prop_map(|n| Value::Number(f64::from(n))),
            (-200i32..3200).prop_map(|n| Value::Number(f64::from(n) / 10.0)),
            (-20.0f64..320.0).prop_map(Value::Number),
        ]
        .boxed(),
    }
}

fn reading_strategy(parameter: Parameter) -> impl Strategy<Value = Option<Reading>> {
    proptest::option::of((value_strategy(parameter), 0i64..50_000, 0i64..1000))
        .prop_map(|reading| reading.map(|(value, age, entry)| self::reading(value, age, entry)))
}

fn inputs_strategy() -> impl Strategy<Value = ScoreInputs> {
    let readings: Vec<_> = Parameter::ALL.into_iter().map(reading_strategy).collect();
    (readings, any::<bool>()).prop_map(|(readings, scale2)| {
        let mut inputs = ScoreInputs::default();
        for (slot, reading) in inputs.readings.iter_mut().zip(readings) {
            *slot = reading;
        }
        inputs.spo2_scale = if scale2 { Scale2 } else { Scale1 };
        inputs
    })
}

fn tables() -> Vec<ScoreTable> {
    let mut tables = ScoreTable::builtin();
    tables.push(ScoreTable::from_toml(&paediatric(PAEDIATRIC_RR)).expect("valid table"));
    tables
}

proptest! {
    #[test]
    fn total_is_the_sum_of_points_and_at_most_max_total(inputs in inputs_strategy()) {
        for table in tables() {
            let score = table.evaluate(&inputs, NOW, &Freshness::default());
            let sum: u16 = score.points.iter().flatten().map(|p| u16::from(p.points)).sum();
            prop_assert_eq!(score.total, sum);
            prop_assert!(score.total <= table.max_total());
            let first = table
                .bands()
                .iter()
                .position(|band| band.matches(score.total, score.max_single()));
            prop_assert_eq!(Some(score.band), first);
            // Every parameter the table uses is either scored or missing, never both.
            for parameter in Parameter::ALL {
                let used = table.parameters().contains(&parameter);
                let scored = score.points[parameter.index()].is_some();
                let missing = score.missing[parameter.index()].is_some();
                prop_assert_eq!(used, scored != missing);
                prop_assert!(!(scored && missing));
            }
            prop_assert_eq!(score.complete(), score.missing_parameters().count() == 0);
        }
    }

    #[test]
    fn an_incomplete_score_is_a_lower_bound(
        inputs in inputs_strategy(),
        fill in proptest::collection::vec(any::<u32>(), Parameter::COUNT),
    ) {
        // Supplying any fresh value for each missing parameter never lowers the total or rank.
        let table = ScoreTable::news2();
        let score = table.evaluate(&inputs, NOW, &Freshness::default());
        let mut filled = inputs.clone();
        for parameter in score.missing_parameters() {
            let pick = fill[parameter.index()] as usize;
            let value = match parameter {
                Parameter::Consciousness => level(Consciousness::ALL[pick % 5]),
                Parameter::SupplementalOxygen => {
                    oxygen([Oxygen::Air, Oxygen::Supplemental][pick % 2])
                }
                _ => number((pick % 3000) as f64 / 10.0),
            };
            filled = with(filled, parameter, value);
        }
        let full = table.evaluate(&filled, NOW, &Freshness::default());
        prop_assert!(full.complete());
        prop_assert!(full.total >= score.total);
        prop_assert!(table.bands()[full.band].rank >= table.bands()[score.band].rank);
    }

    #[test]
    fn hundredths_halves_round_up_whatever_their_binary_error(hundredths in 0i32..100_000) {
        let table = ScoreTable::from_toml(HUNDREDTHS).expect("valid table");
        let text = format!("{}.{:02}5", hundredths / 100, hundredths % 100);
        let value: f64 = text.parse().expect("decimal");
        let score = table.evaluate(
            &with(normal(), Temperature, number(value)),
            NOW,
            &Freshness::default(),
        );
        let rounded = score.points[Temperature.index()].and_then(|p| p.rounded);
        prop_assert_eq!(rounded, Some(f64::from(hundredths + 1) / 100.0), "{}", text);
    }

    #[test]
    fn decimal_halves_round_up_whatever_their_binary_error(tenths in 300i32..450, digit in 0u32..10) {
        // "T.t5" and "T.t4" with a further digit, parsed like a device value would be.
        let whole = tenths / 10;
        let tenth = tenths % 10;
        let half: f64 = format!("{whole}.{tenth}5").parse().expect("decimal");
        let below: f64 = format!("{whole}.{tenth}4{digit}").parse().expect("decimal");
        let up = f64::from(tenths + 1) / 10.0;
        let down = f64::from(tenths) / 10.0;
        let table = ScoreTable::news2();
        for (value, expected) in [(half, up), (below, down)] {
            let score = table.evaluate(
                &with(normal(), Temperature, number(value)),
                NOW,
                &Freshness::default(),
            );
            let rounded = score.points[Temperature.index()].and_then(|p| p.rounded);
            prop_assert_eq!(rounded, Some(expected), "{}", value);
        }
    }
}
