//! Parsing arbitrary text as HL7 v2, reading it as an ORU^R01 and answering it: no panic, and the
//! ACK is always a message that parses again.
#![no_main]

use galen_hl7v2::{Message, Outcome, build_ack, read_oru};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(message) = Message::parse(&text) else {
        return;
    };
    let ack = match read_oru(&message) {
        Ok(report) => build_ack(
            &report.header,
            Outcome::Error,
            &report.diagnostics,
            "ACK",
            "20261123",
        ),
        Err(refusal) => build_ack(
            &refusal.header,
            Outcome::Rejected,
            std::slice::from_ref(&refusal.diagnostic),
            "ACK",
            "20261123",
        ),
    };
    assert!(Message::parse(&ack).is_ok(), "unparsable ACK {ack:?}");
});
