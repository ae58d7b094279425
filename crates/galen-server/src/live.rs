//! Live measurement events for dashboards (Server-Sent Events).
//!
//! The pipeline publishes one `Arc<Vec<_>>` per committed request on a broadcast channel; a slow
//! subscriber that falls behind loses events (and is told to resync), it never slows ingest.

use galen_model::{PatientId, Timestamp, VitalSign};

/// One committed measurement, as pushed to live views.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveMeasurement {
    /// The patient it was attributed to, if any.
    pub patient: Option<PatientId>,
    /// The device serial.
    pub device: String,
    /// What was measured.
    pub vital: VitalSign,
    /// Value in the canonical unit.
    pub value: f64,
    /// When it was measured.
    pub time: Timestamp,
}
