//! The single writer thread: group commit of measurements and dead letters, and checkpoints.
//!
//! Ingest calls queue [`Command::Ingest`] on a bounded channel (back-pressure: callers wait when it
//! is full). The thread takes everything queued, classifies each measurement as new or duplicate,
//! and writes the whole group as ONE write-ahead-log row plus its dead letters in one transaction;
//! one fsync covers thousands of measurements. Only after the commit does it publish the points to
//! the memtable and answer the callers, so an acknowledged measurement is always durable.
//!
//! A checkpoint (periodic, or when the log grows) writes every changed open chunk as a chunk row
//! and empties the log in one transaction; after a crash, the log is replayed on open.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::memtable::{MAX_SPAN_MICROS, Memtable, Sealed};
use super::{Counters, series_id};
use crate::audit::{AuditRecord, StoredAuditRecord};
use crate::codec::{WalPoint, decode_chunk, decode_wal, encode_chunk, encode_wal};
use crate::error::{Error, Result};
use crate::types::{AppendOutcome, IngestBatch, Receipt};

/// Where an ingest call waits for its answer.
type Reply = oneshot::Sender<Result<Vec<AppendOutcome>>>;

/// Work for the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    Ingest {
        batch: IngestBatch,
        reply: oneshot::Sender<Result<Vec<AppendOutcome>>>,
    },
    /// Audit records (already validated), appended to the chain in the next group commit.
    Audit {
        records: Vec<AuditRecord>,
        reply: oneshot::Sender<Result<Vec<StoredAuditRecord>>>,
    },
    Tick,
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Audit records waiting for a group commit, and where their stored form goes.
type AuditRequest = (
    Vec<AuditRecord>,
    oneshot::Sender<Result<Vec<StoredAuditRecord>>>,
);

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterTuning {
    pub(crate) chunk_points: usize,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) checkpoint_points: usize,
    pub(crate) max_group_measurements: usize,
    pub(crate) recent_ids: usize,
    pub(crate) receipt_retention_micros: i64,
}

/// External ids seen recently, bounded in number (oldest forgotten first).
///
/// Entries are 128-bit keys of `(device, id)` from two independently, randomly seeded hashers:
/// no allocation or string comparison per measurement, and two different ids match only on a
/// 128-bit collision (about 2^-128 per pair; the set lives in memory and is rebuilt from the
/// write-ahead log, so fresh seeds each start are fine).
#[derive(Debug, Default)]
struct RecentIds {
    keys: FastSet<u128>,
    order: VecDeque<u128>,
    seeds: (foldhash::fast::RandomState, foldhash::fast::RandomState),
}

impl RecentIds {
    fn key(&self, device: i64, id: &str) -> u128 {
        let high = self.seeds.0.hash_one((device, id));
        let low = self.seeds.1.hash_one((device, id));
        (u128::from(high) << 64) | u128::from(low)
    }

    fn contains(&self, device: i64, id: &str) -> bool {
        !self.keys.is_empty() && self.keys.contains(&self.key(device, id))
    }

    fn insert(&mut self, device: i64, id: &str, capacity: usize) {
        let key = self.key(device, id);
        if self.keys.insert(key) {
            self.order.push_back(key);
        }
        while self.order.len() > capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
    }
}

/// Hash maps and sets of the write path. foldhash is several times faster than the standard
/// SipHash here and still seeds itself randomly per process, so crafted ids cannot be aimed at
/// collisions ahead of time.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

pub(crate) struct Writer {
    connection: Connection,
    memtable: Arc<RwLock<Memtable>>,
    counters: Arc<Counters>,
    tuning: WriterTuning,
    /// Newest time stored per series (memtable or chunk rows): anything newer is certainly new.
    series_max: FastMap<i64, i64>,
    /// Newest time per series outside its open chunk (sealed chunks and chunk rows): a point newer
    /// than this that the open chunk lacks is new, without asking SQLite.
    sealed_max: FastMap<i64, i64>,
    recent_ids: RecentIds,
    points_since_checkpoint: usize,
    last_checkpoint: Instant,
    /// The chunk row `chunk_contains` decoded last: `(series, times)`. Replay after a crash
    /// checks runs of consecutive points against the same chunk; this makes that one decode.
    last_chunk: RefCell<Option<(i64, Vec<i64>)>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Writer")
            .field("series", &self.series_max.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Loads the per-series watermarks and replays the write-ahead log into the memtable, then
    /// checkpoints so the log starts empty.
    pub(crate) fn recover(
        connection: Connection,
        memtable: Arc<RwLock<Memtable>>,
        counters: Arc<Counters>,
        tuning: WriterTuning,
    ) -> Result<Writer> {
        let started = Instant::now();
        let mut series_max = FastMap::default();
        {
            let mut statement = connection
                .prepare("SELECT series_id, MAX(end_ts) FROM chunks GROUP BY series_id")?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
            for row in rows {
                let (series, max) = row?;
                series_max.insert(series, max);
            }
        }
        let mut writer = Writer {
            connection,
            memtable,
            counters,
            tuning,
            sealed_max: series_max.clone(),
            series_max,
            recent_ids: RecentIds::default(),
            points_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            last_chunk: RefCell::new(None),
        };
        let records: Vec<Vec<u8>> = {
            let mut statement = writer
                .connection
                .prepare("SELECT data FROM wal ORDER BY seq")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let loaded_ms = started.elapsed().as_millis() as u64;
        let wal_records = records.len();
        let mut replayed = 0usize;
        for record in records {
            for point in decode_wal(&record)? {
                let device = point.series >> 16;
                if writer.classify(device, &point, &FastSet::default(), &FastSet::default())?
                    == AppendOutcome::Accepted
                {
                    writer.publish(vec![point]);
                    replayed += 1;
                }
            }
        }
        let replay_ms = started.elapsed().as_millis() as u64;
        writer.checkpoint()?;
        if replayed > 0 {
            let total_ms = started.elapsed().as_millis() as u64;
            tracing::info!(
                replayed,
                wal_records,
                loaded_ms,
                replay_ms,
                total_ms,
                "replayed write-ahead log"
            );
        }
        Ok(writer)
    }

    /// Runs until closed or until every sender is gone.
    pub(crate) fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        while let Some(command) = receiver.blocking_recv() {
            let mut ingests = Vec::new();
            let mut audits: Vec<AuditRequest> = Vec::new();
            let mut close = None;
            let mut tick = false;
            let mut queued = 0usize;
            let mut next = Some(command);
            while let Some(command) = next.take() {
                match command {
                    Command::Ingest { batch, reply } => {
                        self.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                        queued += batch.measurements.len();
                        ingests.push((batch, reply));
                    }
                    Command::Audit { records, reply } => {
                        queued += records.len();
                        audits.push((records, reply));
                    }
                    Command::Tick => tick = true,
                    Command::Close { reply } => close = Some(reply),
                }
                if close.is_none() && queued < self.tuning.max_group_measurements {
                    next = receiver.try_recv().ok();
                }
            }
            if !ingests.is_empty() || !audits.is_empty() {
                self.group_commit(ingests, audits);
            }
            let due = self.points_since_checkpoint >= self.tuning.checkpoint_points
                || (tick && self.last_checkpoint.elapsed() >= self.tuning.checkpoint_interval);
            if (due || close.is_some())
                && let Err(error) = self.checkpoint()
            {
                tracing::error!(%error, "checkpoint failed; the write-ahead log keeps the data");
            }
            if let Some(reply) = close {
                receiver.close();
                // Answer anything that raced the close instead of leaving it hanging.
                while let Ok(command) = receiver.try_recv() {
                    match command {
                        Command::Ingest { reply, .. } => {
                            self.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                            let _ = reply.send(Err(Error::Closed));
                        }
                        Command::Audit { reply, .. } => {
                            let _ = reply.send(Err(Error::Closed));
                        }
                        Command::Tick | Command::Close { .. } => {}
                    }
                }
                let _ = reply.send(Ok(()));
                return;
            }
        }
        if let Err(error) = self.checkpoint() {
            tracing::error!(%error, "final checkpoint failed; the write-ahead log keeps the data");
        }
    }

    /// Decides whether `point` is new. Never changes state.
    fn classify(
        &self,
        device: i64,
        point: &WalPoint,
        group_keys: &FastSet<(i64, i64)>,
        group_ids: &FastSet<(i64, &str)>,
    ) -> Result<AppendOutcome> {
        if let Some(id) = &point.external_id
            && (group_ids.contains(&(device, id.as_str())) || self.recent_ids.contains(device, id))
        {
            return Ok(AppendOutcome::Duplicate);
        }
        if group_keys.contains(&(point.series, point.time)) {
            return Ok(AppendOutcome::Duplicate);
        }
        let newest = self
            .series_max
            .get(&point.series)
            .copied()
            .unwrap_or(i64::MIN);
        if point.time > newest {
            return Ok(AppendOutcome::Accepted);
        }
        let in_memory = self
            .memtable
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .contains(point.series, point.time);
        if in_memory || self.chunk_contains(point.series, point.time)? {
            return Ok(AppendOutcome::Duplicate);
        }
        Ok(AppendOutcome::Accepted)
    }

    /// Whether a chunk row holds `series` at `time`. Only reached for late (out-of-order) points.
    fn chunk_contains(&self, series: i64, time: i64) -> Result<bool> {
        if let Some((cached_series, times)) = self.last_chunk.borrow().as_ref()
            && *cached_series == series
            && times.binary_search(&time).is_ok()
        {
            return Ok(true);
        }
        let mut statement = self.connection.prepare_cached(
            "SELECT data FROM chunks WHERE series_id = ?1 AND start_ts BETWEEN ?2 AND ?3 AND end_ts >= ?3",
        )?;
        let mut rows =
            statement.query(params![series, time.saturating_sub(MAX_SPAN_MICROS), time])?;
        while let Some(row) = rows.next()? {
            let data: Vec<u8> = row.get(0)?;
            let times: Vec<i64> = decode_chunk(&data)?
                .into_iter()
                .map(|(existing, _)| existing)
                .collect();
            if times.binary_search(&time).is_ok() {
                *self.last_chunk.borrow_mut() = Some((series, times));
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes accepted points visible and remembers their ids. Call only once they are durable.
    fn publish(&mut self, points: Vec<WalPoint>) {
        {
            let mut memtable = self
                .memtable
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            for point in &points {
                let sealed = memtable.apply(
                    point.series,
                    point.time,
                    point.value,
                    self.tuning.chunk_points,
                );
                if let Some(sealed_newest) = sealed {
                    let known = self.sealed_max.entry(point.series).or_insert(i64::MIN);
                    *known = (*known).max(sealed_newest);
                }
            }
        }
        self.points_since_checkpoint += points.len();
        for point in points {
            let newest = self.series_max.entry(point.series).or_insert(i64::MIN);
            *newest = (*newest).max(point.time);
            if let Some(id) = point.external_id {
                self.recent_ids
                    .insert(point.series >> 16, &id, self.tuning.recent_ids);
            }
        }
    }

    fn group_commit(&mut self, ingests: Vec<(IngestBatch, Reply)>, audits: Vec<AuditRequest>) {
        let started = Instant::now();
        let audit_records: Vec<AuditRecord> = audits
            .iter()
            .flat_map(|(records, _)| records.iter().cloned())
            .collect();
        match self.write_group(&ingests, audit_records) {
            Ok((outcomes, staged, mut chained)) => {
                // Each audit request gets its own records back, in order.
                for (records, reply) in audits.into_iter().rev() {
                    let mine = chained.split_off(chained.len() - records.len());
                    let _ = reply.send(Ok(mine));
                }
                self.publish(staged);
                // Counters first, so that anyone who saw the answer also sees it counted.
                let batch_size: u64 = outcomes
                    .iter()
                    .map(|outcome| outcome.as_ref().map_or(0, |outcome| outcome.len() as u64))
                    .sum();
                self.counters.record_commit(started.elapsed(), batch_size);
                for ((_, reply), outcome) in ingests.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, "group commit failed; callers are told nothing was stored");
                for (_, reply) in ingests {
                    let _ = reply.send(Err(Error::Backend("group commit failed".into())));
                }
                for (_, reply) in audits {
                    let _ = reply.send(Err(Error::Backend("group commit failed".into())));
                }
            }
        }
    }

    /// The earlier receipt of each batch whose message was answered before (stored, or earlier
    /// in this group); `None` for the others.
    fn answered_before(&self, ingests: &[(IngestBatch, Reply)]) -> Result<Vec<Option<Receipt>>> {
        let mut lookup = self.connection.prepare_cached(
            "SELECT received, response FROM receipts WHERE source = ?1 AND key = ?2",
        )?;
        let mut in_group: HashMap<(&str, &str), &Receipt> = HashMap::new();
        let mut answered = Vec::with_capacity(ingests.len());
        for (batch, _) in ingests {
            let Some(receipt) = &batch.receipt else {
                answered.push(None);
                continue;
            };
            let key = (receipt.source.as_str(), receipt.key.as_str());
            if let Some(first) = in_group.get(&key) {
                answered.push(Some((*first).clone()));
                continue;
            }
            let stored = lookup
                .query_row(params![receipt.source, receipt.key], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .optional()?;
            match stored {
                Some((received, response)) => answered.push(Some(Receipt {
                    source: receipt.source.clone(),
                    key: receipt.key.clone(),
                    received: galen_model::Timestamp::from_micros(received),
                    response,
                })),
                None => {
                    in_group.insert(key, receipt);
                    answered.push(None);
                }
            }
        }
        Ok(answered)
    }

    /// Classifies and durably writes one group. Returns per-request outcomes (or the earlier
    /// answer of a repeated message, of which nothing is stored) and the new points.
    #[allow(clippy::type_complexity)]
    fn write_group(
        &mut self,
        ingests: &[(IngestBatch, Reply)],
        audit: Vec<AuditRecord>,
    ) -> Result<(
        Vec<Result<Vec<AppendOutcome>>>,
        Vec<WalPoint>,
        Vec<StoredAuditRecord>,
    )> {
        let answered = self.answered_before(ingests)?;
        let fresh = |index: usize| answered.get(index).is_none_or(Option::is_none);
        let mut group_keys = FastSet::default();
        let mut staged = Vec::new();
        let mut outcomes = Vec::with_capacity(ingests.len());
        let mut duplicates = 0u64;
        {
            let mut group_ids: FastSet<(i64, &str)> = FastSet::default();
            for (index, (batch, _)) in ingests.iter().enumerate() {
                if let Some(Some(earlier)) = answered.get(index) {
                    outcomes.push(Err(Error::AlreadyAnswered(Box::new(earlier.clone()))));
                    continue;
                }
                let mut request_outcomes = Vec::with_capacity(batch.measurements.len());
                for measurement in &batch.measurements {
                    let series = series_id(measurement.device, measurement.vital);
                    let point = WalPoint {
                        series,
                        time: measurement.time.micros(),
                        value: measurement.value,
                        external_id: measurement.external_id.clone(),
                    };
                    let outcome =
                        self.classify(measurement.device.0, &point, &group_keys, &group_ids)?;
                    if outcome == AppendOutcome::Accepted {
                        group_keys.insert((series, point.time));
                        if let Some(id) = &measurement.external_id {
                            group_ids.insert((measurement.device.0, id.as_str()));
                        }
                        staged.push(point);
                    } else {
                        duplicates += 1;
                    }
                    request_outcomes.push(outcome);
                }
                outcomes.push(Ok(request_outcomes));
            }
        }
        let sealing_count = self
            .memtable
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .sealing
            .len();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !staged.is_empty() {
            transaction
                .prepare_cached("INSERT INTO wal (data) VALUES (?1)")?
                .execute([encode_wal(&staged)])?;
        }
        write_sealing(&transaction, &self.memtable, sealing_count)?;
        let mut letters = 0u64;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO dead_letters (received, source, reason, message, device, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (index, (batch, _)) in ingests.iter().enumerate() {
                if !fresh(index) {
                    continue;
                }
                for letter in &batch.dead_letters {
                    insert.execute(params![
                        letter.received.micros(),
                        letter.source,
                        letter.reason.code(),
                        letter.message,
                        letter.device,
                        letter.payload,
                    ])?;
                    letters += 1;
                }
            }
        }
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO receipts (source, key, received, response) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (index, (batch, _)) in ingests.iter().enumerate() {
                if !fresh(index) {
                    continue;
                }
                if let Some(receipt) = &batch.receipt {
                    insert.execute(params![
                        receipt.source,
                        receipt.key,
                        receipt.received.micros(),
                        receipt.response,
                    ])?;
                }
            }
        }
        // The audit records of the group extend the chain in the same commit: one fsync for the
        // measurements and the records of the requests that are being answered. The records that
        // came alone are chained first (their callers get them back), then each stored batch's.
        let batches_records: Vec<AuditRecord> = ingests
            .iter()
            .enumerate()
            .filter(|(index, _)| fresh(*index))
            .flat_map(|(_, (batch, _))| batch.audit.iter().cloned())
            .collect();
        let chained = super::audit::append_in(&transaction, audit)?;
        super::audit::append_in(&transaction, batches_records)?;
        transaction.commit()?;
        drain_sealing(&self.memtable, sealing_count);
        self.counters
            .accepted
            .fetch_add(staged.len() as u64, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        self.counters
            .dead_letters
            .fetch_add(letters, Ordering::Relaxed);
        Ok((outcomes, staged, chained))
    }

    /// Persists sealed and dirty open chunks and empties the write-ahead log, atomically.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        let (sealing_count, dirty) = {
            let memtable = self
                .memtable
                .read()
                .unwrap_or_else(|poison| poison.into_inner());
            let dirty: Vec<Sealed> = memtable
                .open
                .iter()
                .filter(|(_, chunk)| chunk.dirty && !chunk.points.is_empty())
                .map(|(series, chunk)| Sealed {
                    series: *series,
                    points: chunk.points.clone(),
                    persisted_start: chunk.persisted_start,
                })
                .collect();
            (memtable.sealing.len(), dirty)
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        write_sealing(&transaction, &self.memtable, sealing_count)?;
        for chunk in &dirty {
            upsert_chunk(
                &transaction,
                chunk.series,
                &chunk.points,
                chunk.persisted_start,
            )?;
        }
        transaction.execute("DELETE FROM wal", [])?;
        // Receipts older than the retention, counted back from the newest one, are forgotten.
        transaction.execute(
            "DELETE FROM receipts WHERE received < (SELECT MAX(received) FROM receipts) - ?1",
            [self.tuning.receipt_retention_micros],
        )?;
        transaction.commit()?;
        drain_sealing(&self.memtable, sealing_count);
        {
            let mut memtable = self
                .memtable
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            for written in &dirty {
                // The writer is the only mutator and is here, so the chunk is still the one copied.
                if let Some(chunk) = memtable.open.get_mut(&written.series) {
                    chunk.dirty = false;
                    chunk.persisted_start = written.points.first().map(|(time, _)| *time);
                }
            }
        }
        self.points_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Writes the first `count` sealed chunks (the writer is the only one appending to the list, so
/// the first `count` are exactly those seen when the count was taken).
fn write_sealing(connection: &Connection, memtable: &RwLock<Memtable>, count: usize) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let memtable = memtable.read().unwrap_or_else(|poison| poison.into_inner());
    for sealed in memtable.sealing.iter().take(count) {
        upsert_chunk(
            connection,
            sealed.series,
            &sealed.points,
            sealed.persisted_start,
        )?;
    }
    Ok(())
}

/// Forgets sealed chunks once their rows are committed.
fn drain_sealing(memtable: &RwLock<Memtable>, count: usize) {
    if count > 0 {
        memtable
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .sealing
            .drain(..count);
    }
}

/// Writes a chunk row keyed by its first point, replacing the row of the same chunk written
/// earlier under another start (an out-of-order point moved the start).
fn upsert_chunk(
    connection: &Connection,
    series: i64,
    points: &[(i64, f64)],
    persisted_start: Option<i64>,
) -> Result<()> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Ok(());
    };
    if let Some(previous) = persisted_start
        && previous != first.0
    {
        connection
            .prepare_cached("DELETE FROM chunks WHERE series_id = ?1 AND start_ts = ?2")?
            .execute(params![series, previous])?;
    }
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO chunks (series_id, start_ts, end_ts, count, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![series, first.0, last.0, points.len() as i64, encode_chunk(points)])?;
    Ok(())
}

/// The newest chunk-row point of a series, for `latest` when the memtable has none.
pub(crate) fn newest_in_chunks(connection: &Connection, series: i64) -> Result<Option<(i64, f64)>> {
    let data: Option<Vec<u8>> = connection
        .prepare_cached(
            "SELECT data FROM chunks WHERE series_id = ?1 ORDER BY end_ts DESC LIMIT 1",
        )?
        .query_row([series], |row| row.get(0))
        .optional()?;
    Ok(match data {
        Some(data) => decode_chunk(&data)?.last().copied(),
        None => None,
    })
}
