//! Arbitrary bytes as a device payload through every shipped template: matching and mapping never
//! panic, stay within the item limit, and every message quotes little of the payload.
#![no_main]

use std::sync::LazyLock;

use galen_mapping::{Context, MAX_ITEMS, Template, check};
use libfuzzer_sys::fuzz_target;

const SHIPPED: [&str; 3] = [
    include_str!("../../../../templates/ble-health-gateway.toml"),
    include_str!("../../../../templates/smart-scale.toml"),
    include_str!("../../../../templates/pulse-oximeter-hub.toml"),
];

static TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(|| {
    SHIPPED
        .iter()
        .map(|text| Template::from_toml(text).expect("shipped templates load"))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for template in TEMPLATES.iter() {
        let _ = template.matches(&payload, Some("galen/v1/devices/GW-1/ble"));
        let _ = template.mismatch(&payload, None);
        for topic_device in [None, Some("BLEGW-00417")] {
            match template.apply(&payload, &Context { topic_device }) {
                Ok(mapping) => {
                    assert!(mapping.items.len() + mapping.skipped.len() <= MAX_ITEMS);
                    for item in &mapping.items {
                        match item {
                            Ok(mapped) => {
                                let _ = check(mapped);
                            }
                            Err(error) => assert!(error.to_string().chars().count() < 400),
                        }
                    }
                    for skip in &mapping.skipped {
                        assert!(skip.to_string().chars().count() < 400);
                    }
                }
                Err(error) => assert!(error.to_string().chars().count() < 400),
            }
        }
    }
});
