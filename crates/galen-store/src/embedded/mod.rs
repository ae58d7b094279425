//! The embedded backend: one SQLite database file in the data directory.
//!
//! Layout, chosen for append throughput (see ARCHITECTURE.md): each group commit appends one
//! write-ahead-log row holding all its points; points then live in an in-memory [`memtable`] of
//! open chunks per series until a chunk is sealed (full, or spanning too long) or a checkpoint
//! persists it as a compressed chunk row keyed `(series_id, start_ts)`. Range queries read the few
//! chunk rows of one series plus the memtable. A series is one vital sign of one device; patient
//! attribution is applied on read from the assignments.

mod access;
mod audit;
mod check;
mod clinical;
mod consent;
mod keys;
mod memtable;
mod registry;
mod rotate;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use galen_model::{DeviceId, RejectionReason, Timestamp, VitalSign};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

pub use self::audit::{AuditLogReader, AuditLogState};
pub use self::check::{IntegrityReport, check_data_dir};
use self::memtable::{MAX_SPAN_MICROS, Memtable};
pub use self::rotate::{Rotated, rotate};
use self::writer::{Command, Writer, WriterTuning, newest_in_chunks};
use crate::MeasurementStore;
use crate::codec::decode_chunk;
use crate::error::{Error, Result};
use crate::types::{
    AppendOutcome, Bucket, DeadLetter, IngestBatch, Point, Receipt, StoreStats, StoredDeadLetter,
};

/// The sealed column of dead letters (the additional authenticated data of its values).
const DEAD_LETTER_PAYLOAD: &str = "dead_letters.payload";

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "galen.db";

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Points per sealed chunk.
    pub chunk_points: usize,
    /// How often open chunks are persisted and the write-ahead log emptied.
    pub checkpoint_interval: Duration,
    /// Checkpoint early once this many points were appended since the last one.
    pub checkpoint_points: usize,
    /// Ingest calls that may wait for the writer before callers are held back.
    pub queue_capacity: usize,
    /// Upper bound of measurements in one group commit.
    pub max_group_measurements: usize,
    /// External ids remembered for duplicate detection.
    pub recent_ids: usize,
    /// How long protocol receipts (HL7 ACKs by control id) are kept, counted back from the newest
    /// receipt.
    pub receipt_retention: Duration,
    /// The master key of encryption at rest ([`crate::crypto`]): patient-identifying values are
    /// sealed with the store's data key, which this key wraps. `None`: no encryption (an
    /// encrypted store then refuses to open).
    pub data_key: Option<crate::crypto::MasterKey>,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            chunk_points: 1024,
            checkpoint_interval: Duration::from_secs(30),
            checkpoint_points: 2_000_000,
            queue_capacity: 256,
            max_group_measurements: 200_000,
            recent_ids: 1_000_000,
            receipt_retention: Duration::from_secs(24 * 3600),
            data_key: None,
        }
    }
}

/// Write-path counters shared with the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    dead_letters: AtomicU64,
    commit_micros_sum: AtomicU64,
    commit_buckets: [AtomicU64; 8],
    batch_size_sum: AtomicU64,
    batch_size_max: AtomicU64,
    queue_depth: AtomicU64,
    checkpoints: AtomicU64,
}

impl Counters {
    fn record_commit(&self, elapsed: Duration, batch_size: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_micros_sum
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in StoreStats::COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.batch_size_sum.fetch_add(batch_size, Ordering::Relaxed);
        self.batch_size_max.fetch_max(batch_size, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StoreStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            commits: load(&self.commits),
            accepted: load(&self.accepted),
            duplicates: load(&self.duplicates),
            dead_letters: load(&self.dead_letters),
            commit_seconds_sum: load(&self.commit_micros_sum) as f64 / 1e6,
            commit_seconds_buckets: std::array::from_fn(|index| load(&self.commit_buckets[index])),
            batch_size_sum: load(&self.batch_size_sum),
            batch_size_max: load(&self.batch_size_max),
            queue_depth: load(&self.queue_depth),
            checkpoints: load(&self.checkpoints),
        }
    }
}

/// The series of one vital sign of one device. Devices ids stay far below 2^47.
pub(crate) fn series_id(device: DeviceId, vital: VitalSign) -> i64 {
    (device.0 << 16) | i64::from(vital.storage_code())
}

/// Read connections, reused.
#[derive(Debug)]
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn with<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => schema::connect(&self.path)?,
        };
        let result = work(&connection);
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(connection);
        result
    }
}

#[derive(Debug)]
struct Shared {
    /// Seals and opens patient-identifying values (`None`: not encrypted).
    cipher: Option<crate::crypto::FieldCipher>,
    readers: ReaderPool,
    registry: Mutex<Connection>,
    memtable: Arc<RwLock<Memtable>>,
    counters: Arc<Counters>,
}

/// Galen's default store: SQLite in the data directory, one writer thread with group commit.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, replaying any write-ahead log left by a
    /// crash. Blocking: call before serving, or from a blocking context.
    pub fn open(data_dir: &Path, options: SqliteOptions) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            Error::Backend(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let connection = schema::connect(&path)?;
        schema::migrate(&connection)?;
        let cipher = keys::open_cipher(&connection, options.data_key.as_ref())?;
        let memtable = Arc::new(RwLock::new(Memtable::default()));
        let counters = Arc::new(Counters::default());
        let tuning = WriterTuning {
            chunk_points: options.chunk_points.max(2),
            checkpoint_interval: options.checkpoint_interval,
            checkpoint_points: options.checkpoint_points.max(1),
            max_group_measurements: options.max_group_measurements.max(1),
            recent_ids: options.recent_ids,
            receipt_retention_micros: i64::try_from(options.receipt_retention.as_micros())
                .unwrap_or(i64::MAX),
        };
        let writer = Writer::recover(connection, memtable.clone(), counters.clone(), tuning)?;
        let (commands, receiver) = mpsc::channel(options.queue_capacity.max(1));
        std::thread::Builder::new()
            .name("galen-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|error| Error::Backend(format!("cannot start writer thread: {error}")))?;
        let ticker = commands.downgrade();
        let tick_every = (options.checkpoint_interval / 4).max(Duration::from_millis(50));
        std::thread::Builder::new()
            .name("galen-store-ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(tick_every);
                    let Some(sender) = ticker.upgrade() else {
                        return;
                    };
                    if sender.blocking_send(Command::Tick).is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| Error::Backend(format!("cannot start ticker thread: {error}")))?;
        let registry = schema::connect(&path)?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                cipher,
                readers: ReaderPool {
                    path,
                    idle: Mutex::new(Vec::new()),
                },
                registry: Mutex::new(registry),
                memtable,
                counters,
            }),
            commands,
        })
    }

    /// Runs blocking read work on the blocking thread pool.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|error| Error::Backend(format!("read task failed: {error}")))?
    }
}

/// Points of one series in `[from, to)`, sorted and unique by time.
fn range_points(shared: &Shared, series: i64, from: i64, to: i64) -> Result<Vec<(i64, f64)>> {
    let mut points = Vec::new();
    // Memtable first, then chunk rows: see the ordering rule in `memtable`.
    shared
        .memtable
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .collect(series, from, to, &mut points);
    shared.readers.with(|connection| {
        let mut statement = connection.prepare_cached(
            "SELECT data FROM chunks WHERE series_id = ?1 AND start_ts >= ?2 AND start_ts < ?3 AND end_ts >= ?4",
        )?;
        let mut rows = statement.query(params![series, from.saturating_sub(MAX_SPAN_MICROS), to, from])?;
        while let Some(row) = rows.next()? {
            let data = row.get_ref(0)?.as_blob().map_err(|error| Error::Corrupt(error.to_string()))?;
            let chunk = decode_chunk(data)?;
            let start = chunk.partition_point(|(time, _)| *time < from);
            let end = chunk.partition_point(|(time, _)| *time < to);
            points.extend_from_slice(&chunk[start..end.max(start)]);
        }
        Ok(())
    })?;
    points.sort_by_key(|(time, _)| *time);
    points.dedup_by_key(|(time, _)| *time);
    Ok(points)
}

#[async_trait]
impl MeasurementStore for SqliteStore {
    async fn ingest(&self, batch: IngestBatch) -> Result<Vec<AppendOutcome>> {
        if batch.measurements.is_empty()
            && batch.dead_letters.is_empty()
            && batch.receipt.is_none()
            && batch.audit.is_empty()
        {
            return Ok(Vec::new());
        }
        // Validated here, so that one bad record cannot fail the whole group commit.
        for record in &batch.audit {
            record.validate()?;
        }
        // A refused payload can carry anything a sender put in it (names, identifiers): sealed
        // before it reaches the writer.
        let mut batch = batch;
        if let Some(cipher) = &self.shared.cipher {
            for letter in &mut batch.dead_letters {
                letter.payload = cipher.seal_blob(DEAD_LETTER_PAYLOAD, &letter.payload)?;
            }
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .counters
            .queue_depth
            .fetch_add(1, Ordering::Relaxed);
        if self
            .commands
            .send(Command::Ingest { batch, reply })
            .await
            .is_err()
        {
            self.shared
                .counters
                .queue_depth
                .fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Closed);
        }
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn range(
        &self,
        device: DeviceId,
        vital: VitalSign,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Point>> {
        let series = series_id(device, vital);
        let points = self
            .read(move |shared| range_points(shared, series, from.micros(), to.micros()))
            .await?;
        Ok(points
            .into_iter()
            .map(|(time, value)| Point {
                time: Timestamp::from_micros(time),
                value,
            })
            .collect())
    }

    async fn aggregate(
        &self,
        device: DeviceId,
        vital: VitalSign,
        from: Timestamp,
        to: Timestamp,
        bucket_micros: i64,
    ) -> Result<Vec<Bucket>> {
        if bucket_micros <= 0 {
            return Err(Error::Invalid("bucket width must be positive".into()));
        }
        let series = series_id(device, vital);
        self.read(move |shared| {
            let points = range_points(shared, series, from.micros(), to.micros())?;
            Ok(bucketize(&points, bucket_micros))
        })
        .await
    }

    async fn earliest(&self, device: DeviceId, vital: VitalSign) -> Result<Option<Timestamp>> {
        let series = series_id(device, vital);
        self.read(move |shared| {
            // Memtable first, then chunk rows (see the ordering rule in `memtable`).
            let in_memory = shared
                .memtable
                .read()
                .unwrap_or_else(|poison| poison.into_inner())
                .oldest(series);
            let in_chunks: Option<i64> = shared.readers.with(|connection| {
                Ok(connection
                    .prepare_cached("SELECT MIN(start_ts) FROM chunks WHERE series_id = ?1")?
                    .query_row([series], |row| row.get(0))?)
            })?;
            let oldest = match (in_memory, in_chunks) {
                (Some(left), Some(right)) => Some(left.min(right)),
                (left, right) => left.or(right),
            };
            Ok(oldest.map(Timestamp::from_micros))
        })
        .await
    }

    async fn latest(&self, device: DeviceId) -> Result<Vec<(VitalSign, Point)>> {
        self.read(move |shared| {
            let mut latest = Vec::new();
            for vital in VitalSign::ALL {
                let series = series_id(device, vital);
                let in_memory = shared
                    .memtable
                    .read()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .newest(series);
                let in_chunks = shared
                    .readers
                    .with(|connection| newest_in_chunks(connection, series))?;
                let newest = match (in_memory, in_chunks) {
                    (Some(left), Some(right)) => Some(if right.0 > left.0 { right } else { left }),
                    (left, right) => left.or(right),
                };
                if let Some((time, value)) = newest {
                    latest.push((
                        vital,
                        Point {
                            time: Timestamp::from_micros(time),
                            value,
                        },
                    ));
                }
            }
            Ok(latest)
        })
        .await
    }

    async fn receipt(&self, source: &str, key: &str) -> Result<Option<Receipt>> {
        let (source, key) = (source.to_owned(), key.to_owned());
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT received, response FROM receipts WHERE source = ?1 AND key = ?2",
                )?;
                let found = statement
                    .query_row(params![source, key], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()?;
                Ok(found.map(|(received, response)| Receipt {
                    source,
                    key,
                    received: Timestamp::from_micros(received),
                    response,
                }))
            })
        })
        .await
    }

    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT id, received, source, reason, message, device, payload FROM dead_letters WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = statement.query_map(params![after, limit as i64], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, Vec<u8>>(6)?,
                    ))
                })?;
                let mut letters = Vec::new();
                for row in rows {
                    let (id, received, source, reason, message, device, payload) = row?;
                    let payload = crate::crypto::open_blob(shared.cipher.as_ref(), DEAD_LETTER_PAYLOAD, &payload)?;
                    let reason = RejectionReason::parse(&reason)
                        .ok_or_else(|| Error::Corrupt(format!("unknown rejection reason in dead letter {id}")))?;
                    letters.push(StoredDeadLetter {
                        id,
                        letter: DeadLetter { received: Timestamp::from_micros(received), source, reason, message, device, payload },
                    });
                }
                Ok(letters)
            })
        })
        .await
    }

    fn stats(&self) -> StoreStats {
        self.shared.counters.snapshot()
    }

    async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Close { reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// Groups sorted points into aligned buckets.
fn bucketize(points: &[(i64, f64)], bucket_micros: i64) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = Vec::new();
    let mut sum = 0.0;
    for (time, value) in points {
        let start = time.div_euclid(bucket_micros) * bucket_micros;
        match buckets.last_mut() {
            Some(bucket) if bucket.start.micros() == start => {
                bucket.count += 1;
                bucket.min = bucket.min.min(*value);
                bucket.max = bucket.max.max(*value);
                sum += value;
                bucket.mean = sum / bucket.count as f64;
            }
            _ => {
                sum = *value;
                buckets.push(Bucket {
                    start: Timestamp::from_micros(start),
                    count: 1,
                    min: *value,
                    max: *value,
                    mean: *value,
                });
            }
        }
    }
    buckets
}
