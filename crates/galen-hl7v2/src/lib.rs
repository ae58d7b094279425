//! HL7 v2 for Galen: MLLP framing, lenient message parsing, reading ORU^R01 as profiled by IHE
//! PCD-01, and building acknowledgements.
//!
//! Bytes from a socket go into an [`mllp::Decoder`], which yields frames; a frame's text is
//! parsed into a [`Message`]; [`read_oru`] turns it into an [`OruReport`] (observations plus a
//! diagnostic for every oddity, each with its HL7 table 0357 code); [`build_ack`] answers. The
//! crate is synchronous, has no dependencies and does no I/O, so it can be fuzzed on its own.
//! Mapping MDC codes to Galen's vital signs and storing belong to the server.

mod ack;
mod message;
pub mod mllp;
mod oru;
mod time;

pub use ack::{Outcome, ack_code, build_ack};
pub use message::{Delimiters, Message, ParseError, Segment};
pub use oru::{
    Diagnostic, ErrorCode, Header, Observation, ObservationValue, OruReport, PatientRef, Refusal,
    Severity, read_header, read_oru,
};
pub use time::{Hl7Time, format_time, parse_time};
