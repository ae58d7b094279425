//! MLLP decoding of arbitrary bytes, fed in two reads at a split the input chooses.
#![no_main]

use galen_hl7v2::mllp::{Decoder, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(bytes.len());
    let mut decoder = Decoder::new(512);
    decoder.push(&bytes[..split]);
    let mut total = 0;
    while let Some(frame) = decoder.next_frame() {
        if let Frame::Message(message) = frame {
            total += message.len();
        }
    }
    decoder.push(&bytes[split..]);
    while let Some(frame) = decoder.next_frame() {
        if let Frame::Message(message) = frame {
            total += message.len();
        }
    }
    assert!(total <= bytes.len());
});
