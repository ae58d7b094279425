//! Storage errors.

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A uniqueness or interval rule would be broken; the message says which (no PHI).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced record does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request itself is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Stored data failed a consistency check; it is not served.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// The batch carried a receipt whose sender and message id were answered before: nothing of
    /// it was stored, and this is the answer given then (see [`crate::IngestBatch::receipt`]).
    #[error("the message was answered before")]
    AlreadyAnswered(Box<crate::Receipt>),
    /// The backend failed.
    #[error("backend: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::Backend(error.to_string())
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
