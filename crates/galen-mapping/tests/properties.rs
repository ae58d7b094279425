//! Properties over arbitrary input: applying a template to any JSON value never panics and stays
//! within its limits, and loading any text as a template never panics.

use galen_mapping::{Context, MAX_ITEMS, Template};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

const SHIPPED: [&str; 3] = [
    include_str!("../../../templates/ble-health-gateway.toml"),
    include_str!("../../../templates/smart-scale.toml"),
    include_str!("../../../templates/pulse-oximeter-hub.toml"),
];

/// Uses every feature: nested for_each, quoted names, negative indexes, maps with defaults,
/// formats, sentinels, all time formats, skip.
const EVERYTHING: &str = r#"
name = "everything"
version = 1
[match]
topic = "a/+/#"
path = "$.type"
equals = "v"
[device]
format = "{$.gw.sn}-{$.gw['model name']}"
[[measurement]]
for_each = "$.sensors[*].readings[*]"
code = { path = "@.kind", map = { hr = "heart_rate", "1" = "spo2" }, default = "temperature" }
value = { path = "@.v", scale = 0.1, offset = -1.5, absent = [127] }
unit = { path = "$.units[-1]" }
time = { path = "@.t", format = "epoch_ms" }
id = { format = "{$.msg}-{@.kind}-{{x}}" }
when_missing = "skip"
[[measurement]]
code = { const = "spo2" }
value = { path = "$.spo2" }
unit = { const = "%" }
time = { path = "$.time" }
[[measurement]]
for_each = "$.t[*]"
code = { path = "@[0]" }
value = { path = "@[1]" }
unit = { path = "@[-1]" }
time = { path = "$.ts", format = "epoch_s" }
"#;

/// Keys the templates look for, so arbitrary payloads reach past the first lookup.
const KEYS: [&str; 24] = [
    "type",
    "gateway",
    "serial",
    "readings",
    "kind",
    "v",
    "t",
    "msg_id",
    "sensor",
    "samples",
    "spo2_x10",
    "pr_x10",
    "hub",
    "device",
    "weight",
    "value",
    "unit",
    "measured_at",
    "record_id",
    "event",
    "gw",
    "sn",
    "sensors",
    "units",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|number| Value::Number(number.into())),
        any::<f64>().prop_map(|number| Number::from_f64(number).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("hr".to_owned()),
            Just("NaN".to_owned()),
            Just("1".to_owned()),
            Just("ble.measurement".to_owned()),
            Just("weight".to_owned()),
            Just("lb".to_owned()),
            Just("2026-11-23T08:15:00Z".to_owned()),
            Just("1795421700".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
                        "[a-z ]{0,4}"
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn templates() -> Vec<Template> {
    SHIPPED
        .iter()
        .chain([EVERYTHING].iter())
        .map(|text| Template::from_toml(text).expect("loads"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn apply_never_panics_and_stays_bounded(payload in json(), topic_device in prop::option::of("[a-z0-9-]{0,6}")) {
        for template in templates() {
            let _ = template.matches(&payload, Some("a/b/c"));
            let _ = template.matches(&payload, None);
            let context = Context { topic_device: topic_device.as_deref() };
            match template.apply(&payload, &context) {
                Ok(mapping) => {
                    prop_assert!(mapping.items.len() + mapping.skipped.len() <= MAX_ITEMS);
                    for error in mapping.errors() {
                        prop_assert!(error.field.starts_with("measurement["), "{}", error);
                        prop_assert!(error.to_string().chars().count() < 400, "{}", error);
                    }
                    for skip in &mapping.skipped {
                        prop_assert!(skip.field.starts_with("measurement["), "{}", skip);
                    }
                    for mapped in mapping.mapped() {
                        prop_assert!(!mapped.device.is_empty());
                        let _ = galen_mapping::check(mapped);
                    }
                }
                Err(error) => {
                    prop_assert!(
                        error.field == "device" || error.field.starts_with("measurement["),
                        "{}", error
                    );
                    prop_assert!(error.to_string().chars().count() < 400, "{}", error);
                }
            }
        }
    }

    #[test]
    fn nested_payloads_in_a_sample_shape_never_panic(readings in prop::collection::vec(json(), 0..20)) {
        let payload = serde_json::json!({
            "type": "ble.measurement", "msg_id": "m", "gateway": {"serial": "gw"},
            "readings": readings,
        });
        for template in templates() {
            let _ = template.apply(&payload, &Context::default());
        }
    }

    #[test]
    fn loading_any_text_never_panics(text in ".{0,200}") {
        let _ = Template::from_toml(&text);
        let _ = Template::from_json(&text);
    }

    #[test]
    fn loading_mutated_templates_never_panics(
        position in 0usize..EVERYTHING.len(),
        insert in prop_oneof![
            prop::sample::select(vec!["[*]", "@", "{", "}", "'", "]", "-1", "\"", "\n"]).prop_map(str::to_owned),
            ".{0,3}",
        ],
    ) {
        let mut text = EVERYTHING.to_owned();
        let mut at = position;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        if let Ok(template) = Template::from_toml(&text) {
            let _ = template.apply(&serde_json::json!({"sensors": [{"readings": [{"v": 1}]}]}), &Context::default());
        }
    }
}
