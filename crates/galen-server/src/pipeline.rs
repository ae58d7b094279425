//! The ingest pipeline shared by every adapter.
//!
//! `items -> resolve device (Directory) -> normalise (galen-model) -> one durable group commit of
//! accepted measurements and dead letters (galen-store) -> per-item results + live events`.
//! The store call is the only await: results are returned, and live events published, only after
//! the commit, so nothing is acknowledged or shown that could still be lost.

use std::sync::Arc;

use galen_clinical::Input;
use galen_model::{Clock, PatientId, Rejection, RejectionReason, Timestamp, normalize};
use galen_store::{AppendOutcome, DeadLetter, IngestBatch, Receipt, Store};
use tokio::sync::broadcast;

use crate::clinical::Clinical;
use crate::directory::Directory;
use crate::live::LiveMeasurement;
use crate::metrics::Metrics;

/// One item as an adapter read it, before validation.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Device serial.
    pub device: &'a str,
    /// LOINC, MDC or alias.
    pub code: &'a str,
    /// Value in `unit`.
    pub value: f64,
    /// Unit as sent.
    pub unit: &'a str,
    /// Measurement time.
    pub time: Timestamp,
    /// The sender's id of the item, for duplicate detection.
    pub id: Option<&'a str>,
    /// The item as received, kept in the dead-letter store if it is refused.
    pub raw: &'a [u8],
}

/// An item the adapter could not read at all (missing field, bad time, wrong type).
#[derive(Debug, Clone)]
pub struct Unreadable<'a> {
    /// Why.
    pub rejection: Rejection,
    /// The device serial, when it could be read.
    pub device: Option<&'a str>,
    /// The item as received.
    pub raw: &'a [u8],
}

/// What became of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// Durably stored.
    Accepted {
        /// The patient it was attributed to; `None` means the device had no assignment covering
        /// the measurement's time: the value is kept and reported as unassigned.
        patient: Option<PatientId>,
    },
    /// Already stored by an earlier request.
    Duplicate {
        /// As for accepted.
        patient: Option<PatientId>,
    },
    /// Refused and kept as a dead letter.
    Rejected(Rejection),
}

/// Counts of one ingest call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Stored now.
    pub accepted: usize,
    /// Stored before.
    pub duplicates: usize,
    /// Refused.
    pub rejected: usize,
    /// Of the accepted, those no assignment covers.
    pub unassigned: usize,
}

/// Items validated against the directory, ready to commit.
struct Validated<'a> {
    batch: IngestBatch,
    pending: Vec<Pending>,
    serials: Vec<&'a str>,
    /// Values flagged absent by a known, assigned device: technical-alarm inputs.
    absent: Vec<Input>,
}

enum Pending {
    Stored {
        index: usize,
        patient: Option<PatientId>,
    },
    Rejected(Rejection),
}

/// The ingest pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    directory: Directory,
    live: broadcast::Sender<Arc<Vec<LiveMeasurement>>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    clinical: Clinical,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        directory: Directory,
        live: broadcast::Sender<Arc<Vec<LiveMeasurement>>>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        clinical: Clinical,
    ) -> Pipeline {
        Pipeline {
            store,
            directory,
            live,
            metrics,
            clock,
            clinical,
        }
    }

    /// Validates, stores and publishes `items`; returns one result per item, in order.
    ///
    /// When this returns `Ok`, every [`ItemResult::Accepted`] item and every dead letter is
    /// durable. On `Err` nothing may be assumed stored and the sender should retry (duplicates
    /// are recognised).
    pub async fn ingest(
        &self,
        source: &str,
        items: Vec<Result<Incoming<'_>, Unreadable<'_>>>,
    ) -> Result<(Vec<ItemResult>, IngestSummary), galen_store::Error> {
        self.ingest_with_receipt(
            source,
            items,
            None::<fn(&[Option<&Rejection>]) -> Option<Receipt>>,
        )
        .await
    }

    /// As [`Pipeline::ingest`], and stores `audit` (the audit records of the request that sent
    /// the items) in the same commit: both durable together, or neither.
    pub async fn ingest_audited(
        &self,
        source: &str,
        items: Vec<Result<Incoming<'_>, Unreadable<'_>>>,
        audit: Vec<galen_store::AuditRecord>,
    ) -> Result<(Vec<ItemResult>, IngestSummary), galen_store::Error> {
        let now = self.clock.now();
        let mut validated = self.validate(source, &items, now);
        validated.batch.audit = audit;
        self.commit(source, validated).await
    }

    /// As [`Pipeline::ingest`], and stores the answer to the sender's message in the same commit.
    ///
    /// `receipt` is called after validation, before the commit, with each item's verdict (`None`
    /// when it is to be stored, or why it is refused); the receipt it returns, if any, is stored
    /// atomically with the items (see [`galen_store::IngestBatch::receipt`]). A store failure
    /// stores neither; a message answered before fails with
    /// [`galen_store::Error::AlreadyAnswered`] and stores nothing.
    pub async fn ingest_with_receipt(
        &self,
        source: &str,
        items: Vec<Result<Incoming<'_>, Unreadable<'_>>>,
        receipt: Option<impl FnOnce(&[Option<&Rejection>]) -> Option<Receipt> + Send>,
    ) -> Result<(Vec<ItemResult>, IngestSummary), galen_store::Error> {
        let now = self.clock.now();
        let mut validated = self.validate(source, &items, now);
        if let Some(receipt) = receipt {
            let verdicts: Vec<Option<&Rejection>> = validated
                .pending
                .iter()
                .map(|pending| match pending {
                    Pending::Stored { .. } => None,
                    Pending::Rejected(rejection) => Some(rejection),
                })
                .collect();
            validated.batch.receipt = receipt(&verdicts);
        }
        self.commit(source, validated).await
    }

    /// As [`Pipeline::ingest`], but all or nothing: when any item is refused, only the refused
    /// items are stored (as dead letters) and the answer is `Ok(Err(...))` with each refused item's
    /// index and reason; otherwise every item is committed in one store commit, with `audit`
    /// (the request's audit records, stored only when the items are).
    pub async fn ingest_all_or_nothing(
        &self,
        source: &str,
        items: Vec<Result<Incoming<'_>, Unreadable<'_>>>,
        audit: Vec<galen_store::AuditRecord>,
    ) -> Result<Result<(Vec<ItemResult>, IngestSummary), Vec<(usize, Rejection)>>, galen_store::Error>
    {
        let now = self.clock.now();
        let mut validated = self.validate(source, &items, now);
        let refused: Vec<(usize, Rejection)> = validated
            .pending
            .iter()
            .enumerate()
            .filter_map(|(index, pending)| match pending {
                Pending::Rejected(rejection) => Some((index, rejection.clone())),
                Pending::Stored { .. } => None,
            })
            .collect();
        if refused.is_empty() {
            validated.batch.audit = audit;
            return self.commit(source, validated).await.map(Ok);
        }
        // Keep the dead letters; drop the measurements and their results.
        validated.batch.measurements.clear();
        validated
            .pending
            .retain(|pending| matches!(pending, Pending::Rejected(_)));
        validated.serials.clear();
        self.commit(source, validated).await?;
        Ok(Err(refused))
    }

    /// Resolves each item's device and patient and normalises its value.
    fn validate<'a>(
        &self,
        source: &str,
        items: &'a [Result<Incoming<'a>, Unreadable<'a>>],
        now: Timestamp,
    ) -> Validated<'a> {
        let mut batch = IngestBatch::default();
        let mut pending = Vec::with_capacity(items.len());
        let mut serials = Vec::new();
        let publish = self.live.receiver_count() > 0;
        let mut absent = Vec::new();
        {
            let directory = self.directory.read();
            for item in items {
                let incoming = match item {
                    Ok(incoming) => incoming,
                    Err(unreadable) => {
                        batch.dead_letters.push(dead_letter(
                            now,
                            source,
                            &unreadable.rejection,
                            unreadable.device,
                            unreadable.raw,
                        ));
                        pending.push(Pending::Rejected(unreadable.rejection.clone()));
                        continue;
                    }
                };
                let checked = match directory.device_by_serial(incoming.device) {
                    None => Err(Rejection::new(
                        RejectionReason::UnknownDevice,
                        // The serial is not repeated: unregistered, it is whatever the sender wrote.
                        "the device is not registered; register its serial with POST /api/v1/devices",
                    )),
                    Some(device) if !device.details.status.accepts_data() => Err(Rejection::new(
                        RejectionReason::DeviceNotAccepting,
                        format!(
                            "device {:?} is marked {}; its data is refused",
                            incoming.device,
                            device.details.status.code()
                        ),
                    )),
                    Some(device) => normalize(
                        device.id,
                        incoming.code,
                        incoming.value,
                        incoming.unit,
                        incoming.time,
                        now,
                        incoming.id.map(str::to_owned),
                    ),
                };
                match checked {
                    Ok(measurement) => {
                        let patient = directory.patient_at(measurement.device, measurement.time);
                        pending.push(Pending::Stored {
                            index: batch.measurements.len(),
                            patient,
                        });
                        if publish {
                            serials.push(incoming.device);
                        }
                        batch.measurements.push(measurement);
                    }
                    Err(rejection) => {
                        if rejection.reason == RejectionReason::DataAbsent
                            && let Some(device) = directory.device_by_serial(incoming.device)
                            && let Some(patient) = directory.patient_at(device.id, incoming.time)
                        {
                            absent.push(Input::DataAbsent {
                                patient,
                                device: device.id,
                                time: incoming.time,
                            });
                        }
                        batch.dead_letters.push(dead_letter(
                            now,
                            source,
                            &rejection,
                            Some(incoming.device),
                            incoming.raw,
                        ));
                        pending.push(Pending::Rejected(rejection));
                    }
                }
            }
        }
        Validated {
            batch,
            pending,
            serials,
            absent,
        }
    }

    /// Commits validated items; publishes and evaluates what was stored.
    async fn commit(
        &self,
        source: &str,
        validated: Validated<'_>,
    ) -> Result<(Vec<ItemResult>, IngestSummary), galen_store::Error> {
        let Validated {
            batch,
            pending,
            serials,
            absent,
        } = validated;
        // Live views and the clinical engine need a little of each measurement after the batch
        // has moved into the store.
        let published: Vec<_> = batch
            .measurements
            .iter()
            .map(|measurement| {
                (
                    measurement.device,
                    measurement.vital,
                    measurement.value,
                    measurement.time,
                )
            })
            .collect();
        let mut clinical_inputs = Vec::with_capacity(published.len() + absent.len());
        let outcomes = self.store.ingest(batch).await?;
        let mut summary = IngestSummary::default();
        let mut live = Vec::new();
        let results: Vec<ItemResult> = pending
            .into_iter()
            .map(|pending| match pending {
                Pending::Rejected(rejection) => {
                    summary.rejected += 1;
                    self.metrics.rejected(rejection.reason);
                    ItemResult::Rejected(rejection)
                }
                Pending::Stored { index, patient } => match outcomes.get(index) {
                    Some(AppendOutcome::Accepted) => {
                        summary.accepted += 1;
                        if patient.is_none() {
                            summary.unassigned += 1;
                        }
                        if let (Some(patient), Some((device, vital, value, time))) =
                            (patient, published.get(index))
                        {
                            clinical_inputs.push(Input::Measurement {
                                patient,
                                device: *device,
                                vital: *vital,
                                value: *value,
                                time: *time,
                            });
                        }
                        if let (Some((_, vital, value, time)), Some(serial)) =
                            (published.get(index), serials.get(index))
                        {
                            live.push(LiveMeasurement {
                                patient,
                                device: (*serial).to_owned(),
                                vital: *vital,
                                value: *value,
                                time: *time,
                            });
                        }
                        ItemResult::Accepted { patient }
                    }
                    _ => {
                        summary.duplicates += 1;
                        ItemResult::Duplicate { patient }
                    }
                },
            })
            .collect();
        self.metrics.ingested(source, &summary);
        if !live.is_empty() {
            // An error only means nobody is listening right now.
            let _ = self.live.send(Arc::new(live));
        }
        // The engine sees measurements in commit order; within a batch, in time order.
        clinical_inputs.extend(absent);
        clinical_inputs.sort_by_key(Input::time);
        if self.clinical.submit(clinical_inputs).await.is_err() {
            tracing::warn!("clinical engine stopped; measurements were stored but not evaluated");
        }
        Ok((results, summary))
    }
}

fn dead_letter(
    now: Timestamp,
    source: &str,
    rejection: &Rejection,
    device: Option<&str>,
    raw: &[u8],
) -> DeadLetter {
    DeadLetter {
        received: now,
        source: source.to_owned(),
        reason: rejection.reason,
        message: rejection.message.clone(),
        device: device.map(str::to_owned),
        payload: raw.to_vec(),
    }
}
