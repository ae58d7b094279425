//! The clinical runtime: the engine task that turns committed measurements and staff entries into
//! scores and alarm transitions, the persister that stores them, and the live events and webhook
//! notifications they produce.
//!
//! ```text
//! pipeline (after commit) --inputs--> [ engine task ] --events--> live subscribers (SSE)
//! API entries (stored first) ------>      |      \----------> webhooks (own queue per endpoint)
//!                     timer tick ----->   v
//!                                  [ persister ] --> store (scores, alarm log)
//! ```
//!
//! Evaluation never waits for storage, a webhook or a subscriber: events go to a broadcast channel
//! and to the persister's queue. The engine is fed in commit order; its timers are advanced to
//! the clock minus [`TIMER_GRACE_MICROS`], so a reading still in flight is not overtaken by a
//! timer it would have cancelled (which keeps live processing equal to a replay).

pub(crate) mod encode;
pub(crate) mod entries;
mod runtime;
pub(crate) mod webhook;

pub use runtime::{Clinical, ClinicalEvent, ClinicalSettings, records, replay};
pub use webhook::{WebhookEndpoint, sign_webhook};

/// Timers fire this long after they are due (2 s), leaving time for readings in flight.
pub const TIMER_GRACE_MICROS: i64 = 2_000_000;
