//! Units of measure and conversion to each dimension's canonical UCUM unit.
//!
//! Devices send units in UCUM (`mm[Hg]`), in IEEE 11073 MDC names (`MDC_DIM_MMHG`) or in common
//! shorthand (`mmHg`, `bpm`). [`Unit::parse`] accepts all three; Galen stores every value in the
//! canonical UCUM unit of its dimension so that mmHg and kPa can never be mixed in one series.

use std::fmt;

/// What a unit measures; a vital sign accepts exactly one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Events per minute (heart beats, breaths). Canonical `/min`.
    Rate,
    /// A percentage. Canonical `%`.
    Percent,
    /// Temperature. Canonical `Cel`.
    Temperature,
    /// Pressure. Canonical `mm[Hg]`.
    Pressure,
    /// Mass. Canonical `kg`.
    Mass,
    /// Length. Canonical `cm`.
    Length,
}

impl Dimension {
    /// The canonical unit values of this dimension are stored in.
    pub const fn canonical(self) -> Unit {
        match self {
            Dimension::Rate => Unit::PerMinute,
            Dimension::Percent => Unit::Percent,
            Dimension::Temperature => Unit::Celsius,
            Dimension::Pressure => Unit::MillimetreMercury,
            Dimension::Mass => Unit::Kilogram,
            Dimension::Length => Unit::Centimetre,
        }
    }
}

/// A unit Galen understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// `/min`
    PerMinute,
    /// `%`
    Percent,
    /// `Cel`
    Celsius,
    /// `[degF]`
    Fahrenheit,
    /// `mm[Hg]`
    MillimetreMercury,
    /// `kPa`
    Kilopascal,
    /// `kg`
    Kilogram,
    /// `g`
    Gram,
    /// `[lb_av]`
    Pound,
    /// `cm`
    Centimetre,
    /// `m`
    Metre,
    /// `[in_i]`
    Inch,
}

/// 1 kPa in mmHg: 1000 Pa / 133.322387415 Pa (the conventional millimetre of mercury).
const MMHG_PER_KPA: f64 = 1000.0 / 133.322_387_415;
/// The international avoirdupois pound, exactly 0.45359237 kg.
const KG_PER_POUND: f64 = 0.453_592_37;
/// The international inch, exactly 2.54 cm.
const CM_PER_INCH: f64 = 2.54;

impl Unit {
    /// Parses a UCUM code, an MDC unit name or common shorthand. Returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Unit> {
        let unit = match text.trim() {
            "/min"
            | "1/min"
            | "min-1"
            | "{beats}/min"
            | "{beat}/min"
            | "{breaths}/min"
            | "{breath}/min"
            | "{Breaths}/min"
            | "bpm"
            | "beats/min"
            | "breaths/min"
            | "rpm"
            | "MDC_DIM_BEAT_PER_MIN"
            | "MDC_DIM_RESP_PER_MIN"
            | "MDC_DIM_PER_MIN"
            | "264864"
            | "264928" => Unit::PerMinute,
            "%" | "percent" | "MDC_DIM_PERCENT" | "262688" => Unit::Percent,
            "Cel" | "degC" | "°C" | "C" | "cel" | "MDC_DIM_DEGC" | "268192" => Unit::Celsius,
            "[degF]" | "degF" | "°F" | "F" | "MDC_DIM_FAHR" | "266560" => Unit::Fahrenheit,
            "mm[Hg]" | "mmHg" | "mmhg" | "MDC_DIM_MMHG" | "266016" => Unit::MillimetreMercury,
            "kPa" | "kpa" | "MDC_DIM_KILO_PASCAL" | "267843" => Unit::Kilopascal,
            "kg" | "MDC_DIM_KILO_G" | "263875" => Unit::Kilogram,
            "g" | "MDC_DIM_X_G" | "263872" => Unit::Gram,
            "[lb_av]" | "lb" | "lbs" | "MDC_DIM_LB" | "263904" => Unit::Pound,
            "cm" | "MDC_DIM_CENTI_M" | "263441" => Unit::Centimetre,
            "m" | "MDC_DIM_X_M" | "263424" => Unit::Metre,
            "[in_i]" | "in" | "MDC_DIM_INCH" | "263520" => Unit::Inch,
            _ => return None,
        };
        Some(unit)
    }

    /// The UCUM code of this unit.
    pub const fn ucum(self) -> &'static str {
        match self {
            Unit::PerMinute => "/min",
            Unit::Percent => "%",
            Unit::Celsius => "Cel",
            Unit::Fahrenheit => "[degF]",
            Unit::MillimetreMercury => "mm[Hg]",
            Unit::Kilopascal => "kPa",
            Unit::Kilogram => "kg",
            Unit::Gram => "g",
            Unit::Pound => "[lb_av]",
            Unit::Centimetre => "cm",
            Unit::Metre => "m",
            Unit::Inch => "[in_i]",
        }
    }

    /// What this unit measures.
    pub const fn dimension(self) -> Dimension {
        match self {
            Unit::PerMinute => Dimension::Rate,
            Unit::Percent => Dimension::Percent,
            Unit::Celsius | Unit::Fahrenheit => Dimension::Temperature,
            Unit::MillimetreMercury | Unit::Kilopascal => Dimension::Pressure,
            Unit::Kilogram | Unit::Gram | Unit::Pound => Dimension::Mass,
            Unit::Centimetre | Unit::Metre | Unit::Inch => Dimension::Length,
        }
    }

    /// Converts `value` in this unit to the canonical unit of its dimension.
    pub fn to_canonical(self, value: f64) -> f64 {
        match self {
            Unit::PerMinute
            | Unit::Percent
            | Unit::Celsius
            | Unit::MillimetreMercury
            | Unit::Kilogram
            | Unit::Centimetre => value,
            Unit::Fahrenheit => (value - 32.0) * 5.0 / 9.0,
            Unit::Kilopascal => value * MMHG_PER_KPA,
            Unit::Gram => value / 1000.0,
            Unit::Pound => value * KG_PER_POUND,
            Unit::Metre => value * 100.0,
            Unit::Inch => value * CM_PER_INCH,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.ucum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unit: &str, value: f64, expect: f64, canonical: &str) {
        let parsed = Unit::parse(unit).unwrap_or_else(|| panic!("{unit} should parse"));
        let converted = parsed.to_canonical(value);
        assert!(
            (converted - expect).abs() < 1e-6,
            "{value} {unit} gave {converted}, expected {expect}"
        );
        assert_eq!(parsed.dimension().canonical().ucum(), canonical);
    }

    #[test]
    fn converts_to_canonical_units() {
        check("[degF]", 98.6, 37.0, "Cel");
        check("degF", 212.0, 100.0, "Cel");
        check("Cel", 36.6, 36.6, "Cel");
        check("kPa", 16.0, 120.009_853, "mm[Hg]");
        check("mmHg", 120.0, 120.0, "mm[Hg]");
        check("[lb_av]", 150.0, 68.038_855_5, "kg");
        check("g", 3_250.0, 3.25, "kg");
        check("[in_i]", 70.0, 177.8, "cm");
        check("m", 1.8, 180.0, "cm");
        check("bpm", 72.0, 72.0, "/min");
        check("MDC_DIM_PERCENT", 97.0, 97.0, "%");
    }

    #[test]
    fn unknown_units_are_refused() {
        for text in ["", "furlongs", "mm", "MMHG ", "kelvin"] {
            assert_eq!(Unit::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_unit_round_trips_through_its_ucum_code() {
        for unit in [
            Unit::PerMinute,
            Unit::Percent,
            Unit::Celsius,
            Unit::Fahrenheit,
            Unit::MillimetreMercury,
            Unit::Kilopascal,
            Unit::Kilogram,
            Unit::Gram,
            Unit::Pound,
            Unit::Centimetre,
            Unit::Metre,
            Unit::Inch,
        ] {
            assert_eq!(Unit::parse(unit.ucum()), Some(unit));
        }
    }
}
