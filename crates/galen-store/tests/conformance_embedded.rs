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
