//! Arbitrary text as a TOML (and JSON) template: loading never panics, and a template that loads
//! maps a fixed sample without panicking.
#![no_main]

use galen_mapping::{Context, MAX_ITEMS, Template};
use libfuzzer_sys::fuzz_target;

const SAMPLE: &str = include_str!("../../../../templates/samples/ble-health-gateway.json");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let sample: serde_json::Value = serde_json::from_str(SAMPLE).expect("sample is JSON");
    for loaded in [Template::from_toml(&text), Template::from_json(&text)] {
        let Ok(template) = loaded else {
            continue;
        };
        let _ = template.matches(&sample, Some("galen/v1/devices/BLEGW-00417/ble"));
        for topic_device in [None, Some("BLEGW-00417")] {
            if let Ok(mapping) = template.apply(&sample, &Context { topic_device }) {
                assert!(mapping.items.len() + mapping.skipped.len() <= MAX_ITEMS);
            }
        }
    }
});
