//! The conformance suite against the embedded (SQLite) store, with default tuning and with tiny
//! chunks and constant checkpoints so sealing and checkpoint paths run on small data.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use galen_store::Store;
use galen_store::conformance::{Backend, run_all};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

struct Embedded {
    directory: TempDir,
    options: SqliteOptions,
}

#[async_trait]
impl Backend for Embedded {
    async fn open(&self) -> Arc<dyn Store> {
        let store = SqliteStore::open(self.directory.path(), self.options.clone())
            .expect("open embedded store");
        Arc::new(store)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms_with_default_tuning() {
    run_all(&|| {
        Box::new(Embedded {
            directory: TempDir::new().expect("temp dir"),
            options: SqliteOptions::default(),
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms_with_small_chunks_and_frequent_checkpoints() {
    let options = SqliteOptions {
        chunk_points: 16,
        checkpoint_interval: Duration::from_millis(1),
        checkpoint_points: 100,
        max_group_measurements: 50,
        ..SqliteOptions::default()
    };
    run_all(&|| {
        Box::new(Embedded {
            directory: TempDir::new().expect("temp dir"),
            options: options.clone(),
        })
    })
    .await;
}

/// Receipts older than the retention (counted back from the newest) go at a checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_receipts_are_forgotten_at_checkpoints() {
    use galen_model::Timestamp;
    use galen_store::{IngestBatch, MeasurementStore, Receipt};
    let directory = TempDir::new().expect("temp dir");
    let options = SqliteOptions {
        checkpoint_interval: Duration::from_millis(1),
        receipt_retention: Duration::from_secs(3600),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(directory.path(), options).expect("open");
    let hour = 3_600_000_000;
    for (key, micros) in [("old", 0), ("kept", hour), ("new", 2 * hour)] {
        store
            .ingest(IngestBatch {
                receipt: Some(Receipt {
                    source: "mllp".into(),
                    key: key.into(),
                    received: Timestamp::from_micros(1_795_392_000_000_000 + micros),
                    response: key.as_bytes().to_vec(),
                }),
                ..IngestBatch::default()
            })
            .await
            .expect("ingest");
    }
    let mut waited = 0;
    while store.receipt("mllp", "old").await.expect("read").is_some() {
        assert!(waited < 100, "the old receipt was never purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(store.receipt("mllp", "kept").await.expect("read").is_some());
    assert!(store.receipt("mllp", "new").await.expect("read").is_some());
    store.close().await.expect("close");
}

/// The whole suite again with encryption at rest: sealed values behave like plain ones
/// (uniqueness of identifiers included, through the blind index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms_encrypted() {
    let key = galen_store::crypto::MasterKey::generate("test-key").expect("key");
    let options = SqliteOptions {
        data_key: Some(galen_store::crypto::MasterKey::parse(&key).expect("parse")),
        ..SqliteOptions::default()
    };
    run_all(&|| {
        Box::new(Embedded {
            directory: TempDir::new().expect("temp dir"),
            options: options.clone(),
        })
    })
    .await;
}
