//! Applying templates: every path feature, every field's conversions, and the errors and skips,
//! each naming the template field and the concrete payload path.

use galen_mapping::{Context, MAX_ITEMS, Mapped, Mapping, MappingError, Skip, Template};
use galen_model::Timestamp;
use serde_json::{Value, json};

const TIME: &str = "2026-11-23T08:15:00Z";

fn at(time: &str) -> Timestamp {
    Timestamp::parse_rfc3339(time).expect("time")
}

fn template(text: &str) -> Template {
    Template::from_toml(text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

/// A template with one measurement made of `fields` (TOML lines) and a device from the topic.
fn one(fields: &str) -> Template {
    template(&format!(
        "name = \"t\"\nversion = 1\n[[measurement]]\n{fields}\n"
    ))
}

const TOPIC: Context<'static> = Context {
    topic_device: Some("dev-1"),
};

fn apply(template: &Template, payload: Value) -> Mapping {
    template
        .apply(&payload, &TOPIC)
        .unwrap_or_else(|error| panic!("whole payload refused: {error}"))
}

fn only(mapping: &Mapping) -> &Mapped {
    assert_eq!(mapping.items.len(), 1, "{mapping:#?}");
    assert!(mapping.skipped.is_empty(), "{mapping:#?}");
    match &mapping.items[0] {
        Ok(mapped) => mapped,
        Err(error) => panic!("{error}"),
    }
}

fn only_error(mapping: &Mapping) -> &MappingError {
    assert_eq!(mapping.items.len(), 1, "{mapping:#?}");
    match &mapping.items[0] {
        Ok(mapped) => panic!("mapped {mapped:?}"),
        Err(error) => error,
    }
}

fn error(field: &str, path: Option<&str>, problem: &str) -> MappingError {
    MappingError {
        field: field.to_owned(),
        path: path.map(str::to_owned),
        problem: problem.to_owned(),
    }
}

const PLAIN: &str = r#"
code = { path = "$.code" }
value = { path = "$.value" }
unit = { path = "$.unit" }
time = { path = "$.time" }
"#;

#[test]
fn a_flat_payload_maps_field_by_field() {
    let mapping = apply(
        &one(PLAIN),
        json!({"code": "heart_rate", "value": 72, "unit": "/min", "time": TIME}),
    );
    assert_eq!(
        only(&mapping),
        &Mapped {
            device: "dev-1".into(),
            code: "heart_rate".into(),
            value: 72.0,
            unit: "/min".into(),
            time: at(TIME),
            id: None,
        }
    );
}

#[test]
fn paths_reach_quoted_names_indexes_and_negative_indexes() {
    let template = one(r#"
code = { path = "$['vital sign'][0]" }
value = { path = "$.series[-1]['v.al']" }
unit = { path = "$[\"u\"]" }
time = { path = "$.series[-2].t" }
id = { path = "$.meta['it\\'s'][1]" }
"#);
    let mapping = apply(
        &template,
        json!({
            "vital sign": ["spo2", "x"],
            "series": [{"t": "2026-11-23T08:00:00Z", "v.al": 1}, {"t": TIME, "v.al": 2}, {"v.al": 97}],
            "u": "%",
            "meta": {"it's": ["a", "b"]}
        }),
    );
    let mapped = only(&mapping);
    assert_eq!(mapped.code, "spo2");
    assert_eq!(mapped.value, 97.0);
    assert_eq!(mapped.unit, "%");
    assert_eq!(mapped.time, at(TIME));
    assert_eq!(mapped.id.as_deref(), Some("b"));
}

#[test]
fn for_each_visits_every_element_and_at_is_the_element() {
    let template = one(r#"
for_each = "$.sensors[*].readings[*]"
code = { path = "@.k" }
value = { path = "@.v" }
unit = { path = "$.unit" }
time = { path = "$.t" }
id = { format = "{$.msg}/{@.k}/{{literal}}" }
"#);
    let mapping = apply(
        &template,
        json!({
            "msg": 7, "unit": "/min", "t": TIME,
            "sensors": [
                {"readings": [{"k": "hr", "v": 60}, {"k": "rr", "v": 12}]},
                {"readings": []},
                {"readings": [{"k": "hr", "v": 61}]}
            ]
        }),
    );
    let read: Vec<(String, f64, Option<String>)> = mapping
        .mapped()
        .map(|item| (item.code.clone(), item.value, item.id.clone()))
        .collect();
    assert_eq!(
        read,
        [
            ("hr".into(), 60.0, Some("7/hr/{literal}".into())),
            ("rr".into(), 12.0, Some("7/rr/{literal}".into())),
            ("hr".into(), 61.0, Some("7/hr/{literal}".into())),
        ]
    );
    let empty = apply(&template, json!({"sensors": []}));
    assert_eq!(empty, Mapping::default());
}

#[test]
fn errors_inside_for_each_name_the_concrete_element() {
    let template = one(r#"
for_each = "$.readings[*]"
code = { path = "@.kind", map = { hr = "heart_rate", "1" = "spo2" } }
value = { path = "@.v" }
unit = { const = "/min" }
time = { path = "@.t", format = "epoch_s" }
"#);
    let mapping = apply(
        &template,
        json!({"readings": [
            {"kind": "hr", "v": 60, "t": 1},
            {"kind": "hr", "v": "abc", "t": 1},
            {"kind": "bp", "v": 120, "t": 1},
            {"kind": 1, "v": 97, "t": 1},
            {"kind": "hr", "t": 1},
            {"kind": "hr", "v": 61, "t": true},
            {"kind": ["hr"], "v": 61, "t": 1},
            7
        ]}),
    );
    let outcome: Vec<Result<(String, f64), MappingError>> = mapping
        .items
        .iter()
        .map(|item| match item {
            Ok(mapped) => Ok((mapped.code.clone(), mapped.value)),
            Err(error) => Err(error.clone()),
        })
        .collect();
    assert_eq!(
        outcome,
        [
            Ok(("heart_rate".into(), 60.0)),
            Err(error(
                "measurement[0].value",
                Some("$.readings[1].v"),
                "not a number but a string"
            )),
            Err(error(
                "measurement[0].code",
                Some("$.readings[2].kind"),
                "the value has no entry in map"
            )),
            Ok(("spo2".into(), 97.0)),
            Err(error(
                "measurement[0].value",
                Some("$.readings[4].v"),
                "missing"
            )),
            Err(error(
                "measurement[0].time",
                Some("$.readings[5].t"),
                "not a number of seconds since 1970"
            )),
            Err(error(
                "measurement[0].code",
                Some("$.readings[6].kind"),
                "not a string or number but an array"
            )),
            Err(error(
                "measurement[0].value",
                Some("$.readings[7].v"),
                "missing: $.readings[7] is a number, not an object"
            )),
        ]
    );
    assert_eq!(
        outcome[1].as_ref().expect_err("error").to_string(),
        "measurement[0].value at $.readings[1].v: not a number but a string"
    );
}

#[test]
fn map_default_catches_unmapped_values() {
    let template = one(r#"
code = { path = "$.c", map = { a = "heart_rate" }, default = "spo2" }
value = { path = "$.v" }
unit = { const = "%" }
time = { path = "$.t" }
"#);
    let code = |c: Value| {
        only(&apply(&template, json!({"c": c, "v": 1, "t": TIME})))
            .code
            .clone()
    };
    assert_eq!(code(json!("a")), "heart_rate");
    assert_eq!(code(json!("zzz")), "spo2");
    assert_eq!(code(json!(3.5)), "spo2");
}

#[test]
fn missing_values_are_errors_or_reported_skips() {
    let lines = |when: &str| {
        format!(
            "for_each = \"$.r[*]\"\ncode = {{ const = \"spo2\" }}\nvalue = {{ path = \"@.v\" }}\n\
             unit = {{ const = \"%\" }}\ntime = {{ path = \"$.t\" }}\nwhen_missing = \"{when}\""
        )
    };
    let payload = json!({"t": TIME, "r": [{"v": 97}, {"v": null}, {}, {"v": 96}]});
    let strict = apply(&one(&lines("error")), payload.clone());
    assert_eq!(strict.mapped().count(), 2);
    let errors: Vec<&MappingError> = strict.errors().collect();
    assert_eq!(
        errors,
        [
            &error("measurement[0].value", Some("$.r[1].v"), "null"),
            &error("measurement[0].value", Some("$.r[2].v"), "missing"),
        ]
    );

    let lenient = apply(&one(&lines("skip")), payload);
    let values: Vec<f64> = lenient.mapped().map(|item| item.value).collect();
    assert_eq!(values, [97.0, 96.0]);
    assert_eq!(lenient.items.len(), 2, "skips are not items");
    assert_eq!(
        lenient.skipped,
        [
            Skip {
                field: "measurement[0].value".into(),
                path: Some("$.r[1].v".into()),
                problem: "null".into()
            },
            Skip {
                field: "measurement[0].value".into(),
                path: Some("$.r[2].v".into()),
                problem: "missing".into()
            },
        ]
    );

    // A missing for_each array is one reported skip, or the whole payload's error.
    let skipped = apply(&one(&lines("skip")), json!({"t": TIME}));
    assert_eq!(skipped.items, []);
    assert_eq!(
        skipped.skipped,
        [Skip {
            field: "measurement[0].for_each".into(),
            path: Some("$.r".into()),
            problem: "missing".into()
        }]
    );
    let refused = one(&lines("error"))
        .apply(&json!({"t": TIME, "r": null}), &TOPIC)
        .expect_err("refused");
    assert_eq!(
        refused,
        error("measurement[0].for_each", Some("$.r"), "null")
    );
}

#[test]
fn a_for_each_over_something_else_than_an_array_refuses_the_payload() {
    let template = one(r#"
for_each = "$.r[*]"
code = { const = "spo2" }
value = { path = "@" }
unit = { const = "%" }
time = { path = "$.t" }
when_missing = "skip"
"#);
    let refused = template
        .apply(&json!({"r": {"a": 1}}), &TOPIC)
        .expect_err("refused");
    assert_eq!(
        refused.to_string(),
        "measurement[0].for_each at $.r: an object, not an array"
    );
    // `@` itself is the element.
    let mapping = apply(&template, json!({"t": TIME, "r": [95, "96.5"]}));
    let values: Vec<f64> = mapping.mapped().map(|item| item.value).collect();
    assert_eq!(values, [95.0, 96.5]);
}

#[test]
fn values_are_scaled_offset_and_sentinels_become_nan() {
    let template = one(r#"
code = { const = "temperature" }
value = { path = "$.v", scale = 0.01, offset = -273.15, absent = [65535] }
unit = { const = "Cel" }
time = { path = "$.t" }
"#);
    let value = |raw: Value| only(&apply(&template, json!({"v": raw, "t": TIME}))).value;
    assert!((value(json!(31_030)) - 37.15).abs() < 1e-9);
    assert!((value(json!("31030")) - 37.15).abs() < 1e-9);
    assert!(value(json!(65_535)).is_nan());
    assert!(value(json!("NaN")).is_nan());
    // Tenths divide exactly: no 96.80000000000001.
    let tenths = one(r#"
code = { const = "spo2" }
value = { path = "$.v", scale = 0.1 }
unit = { const = "%" }
time = { path = "$.t" }
"#);
    for (raw, expect) in [(968, 96.8), (971, 97.1), (1, 0.1), (3, 0.3)] {
        let mapped = only(&apply(&tenths, json!({"v": raw, "t": TIME}))).value;
        assert_eq!(mapped, expect);
    }
    let huge = one(r#"
code = { const = "spo2" }
value = { path = "$.v", scale = 1e300 }
unit = { const = "%" }
time = { path = "$.t" }
"#);
    let error = only_error(&apply(&huge, json!({"v": 1e10, "t": TIME}))).clone();
    assert_eq!(
        error,
        self::error(
            "measurement[0].value",
            Some("$.v"),
            "out of range after scale and offset"
        )
    );
}

#[test]
fn times_come_in_three_formats() {
    let with = |format: &str| {
        one(&format!(
            "code = {{ const = \"spo2\" }}\nvalue = {{ path = \"$.v\" }}\n\
             unit = {{ const = \"%\" }}\ntime = {{ path = \"$.t\", format = \"{format}\" }}"
        ))
    };
    let time = |template: &Template, raw: Value| match &apply(template, json!({"v": 97, "t": raw}))
        .items[0]
    {
        Ok(mapped) => Ok(mapped.time),
        Err(error) => Err(error.problem.clone()),
    };
    let rfc3339 = with("rfc3339");
    assert_eq!(
        time(&rfc3339, json!("2026-11-23T09:15:00.250+01:00")),
        Ok(at("2026-11-23T08:15:00.250Z"))
    );
    assert_eq!(
        time(&rfc3339, json!("2026-11-23 08:15:00")),
        Err("not an RFC 3339 time with an offset".into())
    );
    assert_eq!(
        time(&rfc3339, json!(1_795_421_700)),
        Err("not an RFC 3339 time with an offset but a number".into())
    );
    let seconds = with("epoch_s");
    assert_eq!(time(&seconds, json!(1_795_421_700)), Ok(at(TIME)));
    assert_eq!(time(&seconds, json!("1795421700")), Ok(at(TIME)));
    assert_eq!(
        time(&seconds, json!(1_795_421_700.5)),
        Ok(at("2026-11-23T08:15:00.500Z"))
    );
    let millis = with("epoch_ms");
    assert_eq!(
        time(&millis, json!(1_795_421_700_001_i64)),
        Ok(at("2026-11-23T08:15:00.001Z"))
    );
    assert_eq!(
        time(&millis, json!(i64::MAX)),
        Err("time out of range".into())
    );
    assert_eq!(
        time(&millis, json!("soon")),
        Err("not a number of milliseconds since 1970".into())
    );
}

#[test]
fn the_device_comes_from_the_payload_the_topic_or_both_agreeing() {
    let with_device = |device: &str| {
        template(&format!(
            "name = \"t\"\nversion = 1\n[device]\n{device}\n[[measurement]]\n{PLAIN}"
        ))
    };
    let payload =
        json!({"gw": {"sn": 1234}, "code": "spo2", "value": 97, "unit": "%", "time": TIME});
    let from_path = with_device("path = \"$.gw.sn\"");
    let none = Context::default();
    let device = |template: &Template, context: &Context<'_>, payload: &Value| {
        template
            .apply(payload, context)
            .map(|mapping| only(&mapping).device.clone())
    };
    assert_eq!(device(&from_path, &none, &payload), Ok("1234".into()));
    let agreeing = Context {
        topic_device: Some("1234"),
    };
    assert_eq!(device(&from_path, &agreeing, &payload), Ok("1234".into()));
    assert_eq!(
        device(&from_path, &TOPIC, &payload),
        Err(error(
            "device",
            Some("$.gw.sn"),
            "the payload names another device than the topic (\"dev-1\")"
        ))
    );
    assert_eq!(
        device(&from_path, &TOPIC, &json!({"gw": {}})),
        Err(error("device", Some("$.gw.sn"), "missing"))
    );
    assert_eq!(
        device(&from_path, &none, &json!({"gw": {"sn": ""}})),
        Err(error("device", Some("$.gw.sn"), "empty"))
    );
    let constant = with_device("const = \"fixed-7\"");
    assert_eq!(device(&constant, &none, &payload), Ok("fixed-7".into()));
    let formatted = with_device("format = \"{$.gw.sn}-a\"");
    assert_eq!(device(&formatted, &none, &payload), Ok("1234-a".into()));
    let from_topic = one(PLAIN);
    assert_eq!(device(&from_topic, &TOPIC, &payload), Ok("dev-1".into()));
    assert_eq!(
        device(&from_topic, &none, &payload),
        Err(error(
            "device",
            None,
            "missing: the template has no [device] and the topic names none"
        ))
    );
}

#[test]
fn payload_values_are_never_repeated_in_messages() {
    // A payload may carry a patient's name in the wrong field: messages name the field and
    // describe the value, never repeat it.
    let long = "x".repeat(10_000);
    let mapping = apply(
        &one(PLAIN),
        json!({"code": "spo2", "value": "Ada Lovelace", "unit": "%", "time": TIME}),
    );
    let message = only_error(&mapping).to_string();
    assert_eq!(
        message,
        "measurement[0].value at $.value: not a number but a string"
    );
    let mapping = apply(
        &one(PLAIN),
        json!({"code": long, "value": 1, "unit": "%", "time": TIME}),
    );
    let problem = &only_error(&mapping).problem;
    assert_eq!(problem, "longer than 256 characters");
}

#[test]
fn a_payload_with_too_many_items_is_refused_whole() {
    let template = one(r#"
for_each = "$.r[*]"
code = { const = "spo2" }
value = { path = "@" }
unit = { const = "%" }
time = { path = "$.t" }
"#);
    let at_limit = json!({"t": TIME, "r": vec![97; MAX_ITEMS]});
    assert_eq!(apply(&template, at_limit).items.len(), MAX_ITEMS);
    let over = json!({"t": TIME, "r": vec![97; MAX_ITEMS + 1]});
    let refused = template.apply(&over, &TOPIC).expect_err("too many");
    assert_eq!(
        refused.to_string(),
        "measurement[0] at $.r[*]: the payload has more than 10000 items"
    );
}

#[test]
fn templates_load_from_json_too() {
    let template = Template::from_json(
        r#"{
            "name": "json-form", "version": 2,
            "match": {"path": "$.kind", "equals": 3},
            "device": {"path": "$.sn"},
            "measurement": [{
                "code": {"const": "heart_rate"}, "value": {"path": "$.hr"},
                "unit": {"const": "/min"}, "time": {"path": "$.ts", "format": "epoch_s"},
                "id": {"format": "{$.sn}:{$.ts}"}
            }]
        }"#,
    )
    .expect("loads");
    assert_eq!((template.name(), template.version()), ("json-form", 2));
    let payload = json!({"kind": 3.0, "sn": "A", "hr": 61, "ts": 1_795_421_700});
    assert!(template.matches(&payload, None));
    assert!(!template.matches(&json!({"kind": "3"}), None));
    let mapping = template
        .apply(&payload, &Context::default())
        .expect("usable");
    assert_eq!(
        only(&mapping),
        &Mapped {
            device: "A".into(),
            code: "heart_rate".into(),
            value: 61.0,
            unit: "/min".into(),
            time: at(TIME),
            id: Some("A:1795421700".into()),
        }
    );
}

#[test]
fn match_conditions_combine() {
    let template = template(
        r#"
name = "m"
version = 1
[match]
topic = "site/+/devices/+/vitals/#"
path = "$.header.type"
equals = "vitals"
[[measurement]]
code = { const = "spo2" }
value = { path = "$.v" }
unit = { const = "%" }
time = { path = "$.t" }
"#,
    );
    let payload = json!({"header": {"type": "vitals"}});
    assert!(template.matches(&payload, None));
    assert!(template.matches(&payload, Some("site/a/devices/d1/vitals")));
    assert!(template.matches(&payload, Some("site/a/devices/d1/vitals/spo2/raw")));
    assert!(!template.matches(&payload, Some("site/a/devices/d1/other")));
    assert!(!template.matches(&payload, Some("site/a/b/devices/d1/vitals")));
    assert!(!template.matches(&json!({"header": {"type": "status"}}), None));
    assert!(!template.matches(&json!({"header": {"type": null}}), None));
    assert!(!template.matches(&json!({"header": "vitals"}), None));
    assert!(!template.matches(&json!([1, 2]), None));
    assert_eq!(
        template.mismatch(&payload, Some("site/a/devices/d1/vitals")),
        None
    );
    assert_eq!(
        template
            .mismatch(&payload, Some("site/a/devices/d1/other"))
            .as_deref(),
        Some(
            "topic \"site/a/devices/d1/other\" does not match match.topic \"site/+/devices/+/vitals/#\""
        )
    );
    assert_eq!(
        template
            .mismatch(&json!({"header": {"type": "status"}}), None)
            .as_deref(),
        Some("match.path $.header.type is \"status\", not \"vitals\"")
    );
    assert_eq!(
        template.mismatch(&json!({"header": {}}), None).as_deref(),
        Some("match.path $.header.type is missing")
    );
    assert_eq!(
        template
            .mismatch(&json!({"header": {"type": null}}), None)
            .as_deref(),
        Some("match.path $.header.type is null")
    );

    let exists = self::template(
        r#"
name = "m"
version = 1
[match]
path = "$.spo2"
[[measurement]]
code = { const = "spo2" }
value = { path = "$.spo2" }
unit = { const = "%" }
time = { path = "$.t" }
"#,
    );
    assert!(exists.matches(&json!({"spo2": 0}), Some("any")));
    assert!(exists.matches(&json!({"spo2": false}), None));
    assert!(!exists.matches(&json!({"spo2": null}), None));
    assert!(!exists.matches(&json!({}), None));
    let everything = one(PLAIN);
    assert!(everything.matches(&json!(null), Some("a/b")));
}
