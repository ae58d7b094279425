//! The API's error type: an HTTP status plus a JSON body `{"error": code, "message": text}`.
//!
//! Internal failures are logged with detail and answered with a generic message: storage errors
//! can carry SQL or paths, which are no business of the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(crate) fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

/// The answer to a request whose stored data failed its checksum or could not be decoded.
pub(crate) const CORRUPT_MESSAGE: &str = "stored data failed its integrity check and is not served; the server log names the damaged record, and `galen check` scans the store";

impl From<galen_store::Error> for ApiError {
    fn from(error: galen_store::Error) -> ApiError {
        use galen_store::Error as StoreError;
        match error {
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Invalid(message) => ApiError::bad_request(message),
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down; retry",
            ),
            StoreError::Corrupt(what) => {
                tracing::error!(target: "galen::integrity", %what, "stored data failed its integrity check; not served");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt",
                    CORRUPT_MESSAGE,
                )
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; nothing was stored, retry later",
                )
            }
        }
    }
}

impl From<galen_model::RegistryError> for ApiError {
    fn from(error: galen_model::RegistryError) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            error.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// Result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
