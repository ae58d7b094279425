//! Loading templates: every mistake is refused when the template loads, naming the field.

use galen_mapping::{Template, TemplateError, TemplateSet};

const MEASUREMENT: &str = r#"
[[measurement]]
code = { const = "spo2" }
value = { path = "$.v" }
unit = { const = "%" }
time = { path = "$.t" }
"#;

fn load_error(text: &str) -> String {
    match Template::from_toml(text) {
        Ok(template) => panic!("loaded {template:?}\n{text}"),
        Err(error) => error.to_string(),
    }
}

/// The load error of a template whose measurement is `fields`, inside a for_each when given.
fn measurement_error(fields: &str) -> String {
    load_error(&format!(
        "name = \"t\"\nversion = 1\n[[measurement]]\n{fields}\n"
    ))
}

fn with(fields: &str, replace: &str) -> String {
    let base = [
        ("code", "code = { const = \"spo2\" }"),
        ("value", "value = { path = \"$.v\" }"),
        ("unit", "unit = { const = \"%\" }"),
        ("time", "time = { path = \"$.t\" }"),
    ];
    let mut lines: Vec<String> = base
        .iter()
        .filter(|(key, _)| !replace.split(',').any(|replaced| replaced == *key))
        .map(|(_, line)| (*line).to_owned())
        .collect();
    lines.push(fields.to_owned());
    lines.join("\n")
}

#[test]
fn a_minimal_template_loads() {
    let template =
        Template::from_toml(&format!("name = \"a-1\"\nversion = 3\n{MEASUREMENT}")).expect("loads");
    assert_eq!(template.name(), "a-1");
    assert_eq!(template.version(), 3);
    assert_eq!(template.description(), None);
    assert_eq!(template.measurement_count(), 1);
}

#[test]
fn bad_path_syntax_names_the_field_and_position() {
    assert_eq!(
        measurement_error(&format!(
            "{}\n{}",
            "for_each = \"$.r[*]\"",
            with("value = { path = \"@.a.b]\" }", "value")
        )),
        "measurement[0].value.path: unexpected ']' at 5"
    );
    assert_eq!(
        measurement_error(&with("code = { path = \"$.a[\" }", "code")),
        "measurement[0].code.path: unexpected end of path at 4"
    );
    assert_eq!(
        measurement_error(&with("time = { path = \"ts\" }", "time")),
        "measurement[0].time.path: unexpected 't', a path starts with '$' or '@' at 0"
    );
    assert_eq!(
        load_error(&format!(
            "name = \"t\"\nversion = 1\n{MEASUREMENT}{}",
            MEASUREMENT.replace("$.v", "$.readings[x]")
        )),
        "measurement[1].value.path: unexpected 'x' at 11"
    );
    assert_eq!(
        measurement_error(&with("id = { format = \"{$.a}-{$.b[}\" }", "")),
        "measurement[0].id.format: unexpected end of path at 11"
    );
    assert_eq!(
        measurement_error(&with("id = { format = \"{$.a\" }", "")),
        "measurement[0].id.format: unclosed '{' at 0"
    );
    assert_eq!(
        measurement_error(&with("id = { format = \"a}\" }", "")),
        "measurement[0].id.format: unexpected '}' at 1 (write '}}' for a brace)"
    );
    assert_eq!(
        load_error(&format!(
            "name = \"t\"\nversion = 1\n[match]\npath = \"$..a\"\n{MEASUREMENT}"
        )),
        "match.path: unexpected '.' at 2"
    );
    assert_eq!(
        load_error(&format!(
            "name = \"t\"\nversion = 1\n[device]\npath = \"$.a b\"\n{MEASUREMENT}"
        )),
        "device.path: unexpected ' ' at 3"
    );
}

#[test]
fn current_element_and_wildcards_only_where_they_mean_something() {
    assert_eq!(
        measurement_error(&with("value = { path = \"@.v\" }", "value")),
        "measurement[0].value.path: '@' is only available inside a measurement with for_each"
    );
    assert_eq!(
        measurement_error(&format!(
            "for_each = \"$.r[*]\"\n{}",
            with("value = { path = \"@.v[*]\" }", "value")
        )),
        "measurement[0].value.path: [*] is only allowed in for_each"
    );
    assert_eq!(
        measurement_error(&format!("for_each = \"$.r\"\n{}", with("", ""))),
        "measurement[0].for_each: for_each needs a [*]"
    );
    assert_eq!(
        measurement_error(&format!("for_each = \"@.r[*]\"\n{}", with("", ""))),
        "measurement[0].for_each: for_each starts at '$'"
    );
    assert_eq!(
        measurement_error(&format!(
            "for_each = \"$[*][*][*][*][*]\"\n{}",
            with("", "")
        )),
        "measurement[0].for_each: more than 4 [*]"
    );
    assert_eq!(
        load_error(&format!(
            "name = \"t\"\nversion = 1\n[device]\npath = \"@.sn\"\n{MEASUREMENT}"
        )),
        "device.path: '@' is only available inside a measurement with for_each"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let error = measurement_error(&with("value = { path = \"$.v\", scael = 0.1 }", "value"));
    assert!(error.starts_with("not a valid TOML template:"), "{error}");
    assert!(error.contains("unknown field `scael`"), "{error}");
    let error = load_error(&format!(
        "name = \"t\"\nversion = 1\nauthor = \"x\"\n{MEASUREMENT}"
    ));
    assert!(error.contains("unknown field `author`"), "{error}");
    let error = load_error(&format!(
        "name = \"t\"\nversion = 1\n[match]\ntopics = \"a\"\n{MEASUREMENT}"
    ));
    assert!(error.contains("unknown field `topics`"), "{error}");
    let error = measurement_error(&with("when = \"skip\"", ""));
    assert!(error.contains("unknown field `when`"), "{error}");
    match Template::from_json(r#"{"name": "t", "version": 1, "measurment": []}"#) {
        Err(TemplateError::Syntax { format, message }) => {
            assert_eq!(format, "JSON");
            assert!(message.contains("unknown field `measurment`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_names_in_enumerations_are_refused() {
    assert_eq!(
        measurement_error(&with(
            "time = { path = \"$.t\", format = \"epoch_ns\" }",
            "time"
        )),
        "measurement[0].time.format: unknown format \"epoch_ns\", expected rfc3339, epoch_s or epoch_ms"
    );
    assert_eq!(
        measurement_error(&with("when_missing = \"ignore\"", "")),
        "measurement[0].when_missing: unknown choice \"ignore\", expected error or skip"
    );
}

#[test]
fn fields_must_be_complete_and_unambiguous() {
    for (fields, expected) in [
        (with("", "code"), "measurement[0].code: missing"),
        (with("", "value"), "measurement[0].value: missing"),
        (with("", "unit"), "measurement[0].unit: missing"),
        (with("", "time"), "measurement[0].time: missing"),
        (
            with("value = { scale = 2 }", "value"),
            "measurement[0].value.path: missing",
        ),
        (
            with("time = { format = \"epoch_s\" }", "time"),
            "measurement[0].time.path: missing",
        ),
        (
            with("code = { path = \"$.c\", const = \"spo2\" }", "code"),
            "measurement[0].code: give exactly one of path, const or format",
        ),
        (
            with("code = { map = { a = \"b\" } }", "code"),
            "measurement[0].code: give exactly one of path, const or format",
        ),
        (
            with("code = { const = \"spo2\", map = { a = \"b\" } }", "code"),
            "measurement[0].code: map and default need path or format, not const",
        ),
        (
            with("code = { path = \"$.c\", default = \"spo2\" }", "code"),
            "measurement[0].code.default: only meaningful with map",
        ),
        (
            with("value = { path = \"$.v\", scale = 0 }", "value"),
            "measurement[0].value.scale: must be a finite number other than 0",
        ),
        (
            with("value = { path = \"$.v\", offset = inf }", "value"),
            "measurement[0].value.offset: must be a finite number",
        ),
        (
            with("value = { path = \"$.v\", absent = [nan] }", "value"),
            "measurement[0].value.absent: values must be finite numbers (NaN and infinities are absent anyway)",
        ),
        (
            with("id = { format = \"\" }", ""),
            "measurement[0].id.format: empty format",
        ),
    ] {
        assert_eq!(measurement_error(&fields), expected, "{fields}");
    }
    assert_eq!(
        load_error("name = \"t\"\nversion = 1\n"),
        "measurement: a template needs at least one [[measurement]]"
    );
    assert_eq!(
        load_error(&format!("version = 1\n{MEASUREMENT}")),
        "name: missing"
    );
    assert_eq!(
        load_error(&format!("name = \"t\"\n{MEASUREMENT}")),
        "version: missing"
    );
    assert_eq!(
        load_error(&format!("name = \"t\"\nversion = 0\n{MEASUREMENT}")),
        "version: must be 1 or more"
    );
    for bad in ["Acme", "a b", "", "ä", "a_b"] {
        assert_eq!(
            load_error(&format!("name = \"{bad}\"\nversion = 1\n{MEASUREMENT}")),
            format!("name: \"{bad}\" must be 1 to 64 characters of a-z, 0-9 and '-'")
        );
    }
    let error = load_error(&format!("name = \"t\"\nversion = -1\n{MEASUREMENT}"));
    assert!(error.starts_with("not a valid TOML template:"), "{error}");
    let error = load_error("name = \"t\"\nversion = 1\n[[measurement]\n");
    assert!(error.starts_with("not a valid TOML template:"), "{error}");
}

#[test]
fn match_is_checked_at_load() {
    let match_error = |lines: &str| {
        load_error(&format!(
            "name = \"t\"\nversion = 1\n[match]\n{lines}\n{MEASUREMENT}"
        ))
    };
    assert_eq!(
        match_error("topic = \"a/#/b\""),
        "match.topic: '#' must be the last level of a topic filter"
    );
    assert_eq!(
        match_error("topic = \"a/b+\""),
        "match.topic: level \"b+\": '+' and '#' must stand alone between slashes"
    );
    assert_eq!(
        match_error("equals = \"x\""),
        "match.equals: needs match.path"
    );
    assert_eq!(
        match_error("path = \"$.a\"\nequals = [1]"),
        "match.equals: must be a string, number or boolean, not [1]"
    );
}

#[test]
fn limits_are_enforced() {
    let huge = format!(
        "name = \"t\"\nversion = 1\ndescription = \"{}\"\n{MEASUREMENT}",
        "x".repeat(300_000)
    );
    assert_eq!(
        Template::from_toml(&huge).map(|_| ()),
        Err(TemplateError::TooLarge { limit: 262_144 })
    );
    let many = format!("name = \"t\"\nversion = 1\n{}", MEASUREMENT.repeat(65));
    assert_eq!(
        load_error(&many),
        "measurement: more than 64 [[measurement]] blocks"
    );
    let entries: Vec<String> = (0..1_001)
        .map(|index| format!("k{index} = \"v\""))
        .collect();
    let big_map = with(
        &format!(
            "code = {{ path = \"$.c\", map = {{ {} }} }}",
            entries.join(", ")
        ),
        "code",
    );
    assert_eq!(
        measurement_error(&big_map),
        "measurement[0].code.map: more than 1000 entries"
    );
    let long_path = format!("$.{}", "a".repeat(600));
    assert_eq!(
        measurement_error(&with(
            &format!("value = {{ path = \"{long_path}\" }}"),
            "value"
        )),
        "measurement[0].value.path: path longer than 512 characters at 512"
    );
}

#[test]
fn duplicate_names_in_a_set_are_refused() {
    let load = |name: &str| {
        Template::from_toml(&format!("name = \"{name}\"\nversion = 1\n{MEASUREMENT}"))
            .expect("loads")
    };
    let error = TemplateSet::new(vec![
        ("a.toml".into(), load("same")),
        ("b.toml".into(), load("other")),
        ("c.toml".into(), load("same")),
    ])
    .expect_err("duplicate");
    assert_eq!(
        error.to_string(),
        "template name \"same\" is used by both a.toml and c.toml"
    );
    let set = TemplateSet::new(vec![
        ("z.toml".into(), load("zeta")),
        ("a.toml".into(), load("alpha")),
    ])
    .expect("distinct");
    let order: Vec<(&str, &str)> = set
        .iter()
        .map(|(source, template)| (source, template.name()))
        .collect();
    assert_eq!(order, [("a.toml", "alpha"), ("z.toml", "zeta")]);
    // Both match everything: the first in name order wins, whatever the load order.
    assert_eq!(
        set.select(&serde_json::json!({}), None).map(Template::name),
        Some("alpha")
    );
    assert!(TemplateSet::new(Vec::new()).expect("empty").is_empty());
}
