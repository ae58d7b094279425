//! `galen mapping test` on every shipped template and its sample, and on broken inputs: the exit
//! status and the output name the measurements, or the field that failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

fn galen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_galen"))
        .arg("mapping")
        .arg("test")
        .args(args)
        .output()
        .expect("run galen mapping test")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn shipped(name: &str) -> (String, String) {
    let directory = templates();
    (
        directory.join(format!("{name}.toml")).display().to_string(),
        directory
            .join("samples")
            .join(format!("{name}.json"))
            .display()
            .to_string(),
    )
}

#[test]
fn every_shipped_template_passes_on_its_sample() {
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "ble-health-gateway",
            &[
                "code heart_rate, value 72, unit /min, time 2026-11-23T08:14:58.000Z, id a1f3-0042-chest-01-hr",
                "server stores heart_rate 72 /min",
                "code temperature, value 37.2, unit Cel",
                "code diastolic_bp, value 84, unit mm[Hg]",
                "skipped: measurement[0].value at $.readings[5].v skipped: null",
            ],
            "5 measurements, 1 skipped, 0 failed",
        ),
        (
            "smart-scale",
            &[
                "device SCL-2291-0042, code weight, value 154.2, unit [lb_av], time 2026-11-23T06:42:10.000Z, id scale-88123",
                "server stores weight 69.94",
            ],
            "1 measurements, 0 skipped, 0 failed",
        ),
        (
            "pulse-oximeter-hub",
            &[
                "device OXH-7731, code spo2, value 96.8, unit %, time 2026-11-23T08:15:00.000Z",
                "code spo2, value NaN",
                "server rejects (data_absent)",
                "code pulse_rate, value 71.8, unit /min",
                "server stores heart_rate 71.8 /min",
            ],
            "6 measurements, 0 skipped, 0 failed",
        ),
    ];
    for (name, lines, summary) in cases {
        let (template, sample) = shipped(name);
        let output = galen(&[&template, &sample]);
        let shown = text(&output);
        assert!(output.status.success(), "{name}: {shown}");
        assert!(
            shown.contains(&format!("template {name} v1")),
            "{name}: {shown}"
        );
        for line in lines {
            assert!(shown.contains(line), "{name}: no {line:?} in\n{shown}");
        }
        assert!(shown.contains(summary), "{name}: {shown}");
    }
}

#[test]
fn json_output_lists_items_with_the_server_verdict() {
    let (template, sample) = shipped("pulse-oximeter-hub");
    let output = galen(&[
        &template,
        &sample,
        "--json",
        "--topic",
        "galen/v1/devices/OXH-7731/oximetry",
        "--device",
        "OXH-7731",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["template"]["name"], "pulse-oximeter-hub");
    assert_eq!(report["counts"]["mapped"], 6);
    let items = report["items"].as_array().expect("items");
    assert_eq!(items[0]["value"], 96.8);
    assert_eq!(items[0]["server"]["accepted"], true);
    assert_eq!(items[1]["value"], Value::Null);
    assert_eq!(items[1]["server"]["reason"], "data_absent");
    assert_eq!(items[3]["id"], "OXH-7731-1795421700-pr");
}

#[test]
fn a_broken_sample_fails_naming_the_field_and_path() {
    let (template, sample) = shipped("ble-health-gateway");
    let mut payload: Value =
        serde_json::from_str(&std::fs::read_to_string(&sample).expect("sample")).expect("JSON");
    payload["readings"][1]["kind"] = Value::from("bp");
    payload["readings"][3]["v"] = Value::from("high");
    let directory = tempfile::tempdir().expect("temp dir");
    let broken = directory.path().join("broken.json");
    std::fs::write(&broken, payload.to_string()).expect("write");
    let output = galen(&[&template, broken.to_str().expect("UTF-8 path")]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains(
            "item 2 FAILED: measurement[0].code at $.readings[1].kind: the value has no entry in map"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "item 4 FAILED: measurement[0].value at $.readings[3].v: not a number but a string"
        ),
        "{shown}"
    );
    assert!(shown.contains("2 of 5 items failed"), "{shown}");
}

#[test]
fn a_sample_that_does_not_match_or_a_bad_template_fails() {
    let (template, sample) = shipped("ble-health-gateway");
    let output = galen(&[&template, &sample, "--topic", "galen/v1/devices/x/wifi"]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("topic \"galen/v1/devices/x/wifi\" does not match match.topic"),
        "{shown}"
    );

    let output = galen(&[&template, &sample, "--device", "someone-else"]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("device at $.gateway.serial"), "{shown}");

    let directory = tempfile::tempdir().expect("temp dir");
    let bad = directory.path().join("bad.toml");
    let text_of_template = std::fs::read_to_string(&template)
        .expect("template")
        .replace("@.v", "@.v]");
    std::fs::write(&bad, text_of_template).expect("write");
    let output = galen(&[bad.to_str().expect("UTF-8 path"), &sample]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("measurement[0].value.path: unexpected ']' at 3"),
        "{shown}"
    );
}
