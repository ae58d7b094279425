//! The templates shipped in `templates/` on their sample payloads: exactly the expected
//! measurements, and what the server's normaliser makes of them.

use galen_mapping::{Context, Mapped, Template, TemplateSet, check};
use galen_model::{RejectionReason, Timestamp, VitalSign};
use serde_json::Value;

const SHIPPED: [(&str, &str, &str); 3] = [
    (
        "ble-health-gateway.toml",
        include_str!("../../../templates/ble-health-gateway.toml"),
        include_str!("../../../templates/samples/ble-health-gateway.json"),
    ),
    (
        "smart-scale.toml",
        include_str!("../../../templates/smart-scale.toml"),
        include_str!("../../../templates/samples/smart-scale.json"),
    ),
    (
        "pulse-oximeter-hub.toml",
        include_str!("../../../templates/pulse-oximeter-hub.toml"),
        include_str!("../../../templates/samples/pulse-oximeter-hub.json"),
    ),
];

fn load(file: &str) -> (Template, Value) {
    let (_, template, sample) = SHIPPED
        .iter()
        .find(|(name, _, _)| *name == file)
        .expect("shipped template");
    let template = Template::from_toml(template).unwrap_or_else(|error| panic!("{file}: {error}"));
    let sample = serde_json::from_str(sample).expect("sample is JSON");
    (template, sample)
}

fn ms(millis: i64) -> Timestamp {
    Timestamp::from_micros(millis * 1_000)
}

fn mapped(device: &str, code: &str, value: f64, unit: &str, time: Timestamp, id: &str) -> Mapped {
    Mapped {
        device: device.to_owned(),
        code: code.to_owned(),
        value,
        unit: unit.to_owned(),
        time,
        id: Some(id.to_owned()),
    }
}

/// Every item must be mapped; NaN values compare as NaN.
fn assert_mapped(actual: &[Result<Mapped, galen_mapping::MappingError>], expected: &[Mapped]) {
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
    for (actual, expected) in actual.iter().zip(expected) {
        let actual = actual.as_ref().unwrap_or_else(|error| panic!("{error}"));
        if expected.value.is_nan() {
            assert!(actual.value.is_nan(), "{actual:?}");
            let without_value = Mapped {
                value: 0.0,
                ..actual.clone()
            };
            assert_eq!(
                without_value,
                Mapped {
                    value: 0.0,
                    ..expected.clone()
                }
            );
        } else {
            assert_eq!(actual, expected);
        }
    }
}

#[test]
fn ble_health_gateway_maps_every_reported_reading_and_skips_the_silent_sensor() {
    let (template, sample) = load("ble-health-gateway.toml");
    assert_eq!(template.name(), "ble-health-gateway");
    assert_eq!(template.version(), 1);
    assert!(template.matches(&sample, Some("galen/v1/devices/BLEGW-00417/ble")));
    assert!(template.matches(&sample, None));
    assert!(!template.matches(&sample, Some("galen/v1/devices/BLEGW-00417/wifi")));

    let mapping = template
        .apply(&sample, &Context::default())
        .expect("payload usable");
    let device = "BLEGW-00417";
    assert_mapped(
        &mapping.items,
        &[
            mapped(
                device,
                "heart_rate",
                72.0,
                "/min",
                ms(1_795_421_698_000),
                "a1f3-0042-chest-01-hr",
            ),
            mapped(
                device,
                "respiratory_rate",
                16.0,
                "/min",
                ms(1_795_421_698_000),
                "a1f3-0042-chest-01-rr",
            ),
            mapped(
                device,
                "temperature",
                37.2,
                "Cel",
                ms(1_795_421_699_500),
                "a1f3-0042-patch-07-temp",
            ),
            mapped(
                device,
                "systolic_bp",
                128.0,
                "mm[Hg]",
                ms(1_795_421_690_250),
                "a1f3-0042-cuff-03-sys",
            ),
            mapped(
                device,
                "diastolic_bp",
                84.0,
                "mm[Hg]",
                ms(1_795_421_690_250),
                "a1f3-0042-cuff-03-dia",
            ),
        ],
    );
    assert_eq!(mapping.skipped.len(), 1);
    assert_eq!(mapping.skipped[0].field, "measurement[0].value");
    assert_eq!(mapping.skipped[0].path.as_deref(), Some("$.readings[5].v"));
    assert_eq!(mapping.skipped[0].problem, "null");
    assert_eq!(
        mapping.skipped[0].to_string(),
        "measurement[0].value at $.readings[5].v skipped: null"
    );
    for item in mapping.mapped() {
        let measurement = check(item).unwrap_or_else(|rejection| panic!("{rejection:?}"));
        assert_eq!(measurement.value, item.value, "canonical units already");
    }
    // The topic's device must agree with the payload's.
    assert!(
        template
            .apply(
                &sample,
                &Context {
                    topic_device: Some("BLEGW-00417")
                }
            )
            .is_ok()
    );
    let spoofed = template
        .apply(
            &sample,
            &Context {
                topic_device: Some("BLEGW-99999"),
            },
        )
        .expect_err("device mismatch");
    assert_eq!(spoofed.field, "device");
    assert_eq!(spoofed.path.as_deref(), Some("$.gateway.serial"));
    assert_eq!(
        spoofed.problem,
        "the payload names another device than the topic (\"BLEGW-99999\")"
    );
}

#[test]
fn smart_scale_maps_pounds_with_the_local_offset() {
    let (template, sample) = load("smart-scale.toml");
    assert!(template.matches(&sample, None));
    assert!(template.matches(&sample, Some("any/topic/at/all")));
    let mapping = template
        .apply(&sample, &Context::default())
        .expect("payload usable");
    let time = Timestamp::parse_rfc3339("2026-11-23T06:42:10Z").expect("time");
    assert_mapped(
        &mapping.items,
        &[mapped(
            "SCL-2291-0042",
            "weight",
            154.2,
            "[lb_av]",
            time,
            "scale-88123",
        )],
    );
    assert!(mapping.skipped.is_empty());
    let measurement = check(mapping.mapped().next().expect("one")).expect("accepted");
    assert_eq!(measurement.vital, VitalSign::BodyWeight);
    assert!(
        (measurement.value - 69.943_943_454).abs() < 1e-6,
        "{}",
        measurement.value
    );

    // The same scale set to kilograms.
    let mut in_kg = sample.clone();
    in_kg["weight"] = serde_json::json!({"value": 70.1, "unit": "kg"});
    let mapping = template.apply(&in_kg, &Context::default()).expect("usable");
    let item = mapping.mapped().next().expect("one");
    assert_eq!((item.value, item.unit.as_str()), (70.1, "kg"));

    // A unit the template does not know is this item's error, naming field and path.
    in_kg["weight"]["unit"] = serde_json::json!("st");
    let mapping = template.apply(&in_kg, &Context::default()).expect("usable");
    let error = mapping.errors().next().expect("one error");
    assert_eq!(
        error.to_string(),
        "measurement[0].unit at $.weight.unit: the value has no entry in map"
    );
}

#[test]
fn pulse_oximeter_hub_scales_tenths_and_passes_sentinels_as_absent() {
    let (template, sample) = load("pulse-oximeter-hub.toml");
    assert!(template.matches(&sample, Some("galen/v1/devices/OXH-7731/oximetry")));
    assert!(!template.matches(&sample, Some("galen/v1/devices/OXH-7731/ble")));
    let mapping = template
        .apply(&sample, &Context::default())
        .expect("payload usable");
    let device = "OXH-7731";
    let second = Timestamp::from_seconds;
    assert_mapped(
        &mapping.items,
        &[
            mapped(
                device,
                "spo2",
                96.8,
                "%",
                second(1_795_421_700),
                "OXH-7731-1795421700-spo2",
            ),
            mapped(
                device,
                "spo2",
                f64::NAN,
                "%",
                second(1_795_421_730),
                "OXH-7731-1795421730-spo2",
            ),
            mapped(
                device,
                "spo2",
                97.1,
                "%",
                second(1_795_421_760),
                "OXH-7731-1795421760-spo2",
            ),
            mapped(
                device,
                "pulse_rate",
                72.4,
                "/min",
                second(1_795_421_700),
                "OXH-7731-1795421700-pr",
            ),
            mapped(
                device,
                "pulse_rate",
                f64::NAN,
                "/min",
                second(1_795_421_730),
                "OXH-7731-1795421730-pr",
            ),
            mapped(
                device,
                "pulse_rate",
                71.8,
                "/min",
                second(1_795_421_760),
                "OXH-7731-1795421760-pr",
            ),
        ],
    );
    let verdicts: Vec<Result<f64, RejectionReason>> = mapping
        .mapped()
        .map(|item| {
            check(item)
                .map(|measurement| measurement.value)
                .map_err(|rejection| rejection.reason)
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            Ok(96.8),
            Err(RejectionReason::DataAbsent),
            Ok(97.1),
            Ok(72.4),
            Err(RejectionReason::DataAbsent),
            Ok(71.8),
        ]
    );
}

#[test]
fn the_shipped_set_selects_the_right_template_for_each_sample() {
    let templates = SHIPPED
        .iter()
        .map(|(file, text, _)| {
            let template = Template::from_toml(text).expect("loads");
            (file.to_string(), template)
        })
        .collect();
    let set = TemplateSet::new(templates).expect("distinct names");
    assert_eq!(set.len(), 3);
    let names: Vec<&str> = set.iter().map(|(_, template)| template.name()).collect();
    assert_eq!(
        names,
        ["ble-health-gateway", "pulse-oximeter-hub", "smart-scale"]
    );
    for (file, text, sample) in SHIPPED {
        let sample: Value = serde_json::from_str(sample).expect("JSON");
        let expected = Template::from_toml(text).expect("loads");
        let matching: Vec<&str> = set
            .matching(&sample, None)
            .map(|template| template.name())
            .collect();
        assert_eq!(matching, [expected.name()], "{file}: exactly one template");
        assert_eq!(
            set.select(&sample, None).map(Template::name),
            Some(expected.name())
        );
    }
    assert!(set.select(&serde_json::json!({"hello": 1}), None).is_none());
    assert_eq!(set.get("smart-scale").map(Template::version), Some(1));
    assert!(set.get("nope").is_none());
}
