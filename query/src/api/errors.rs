//! The one place where query errors become HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::engine::QueryError;

/// Errors of the HTTP query API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("could not encode the result: {0}")]
    Encode(#[from] arrow::error::ArrowError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BodyTimedOut(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Query(QueryError::Sql(_)) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            // A query DataFusion panics on failed while running, as far as
            // its client can tell: DESIGN.md's query errors are 400.
            ApiError::Query(
                QueryError::TooManyRows(_) | QueryError::TooManyBytes(_) | QueryError::Panicked(_),
            ) => StatusCode::BAD_REQUEST,
            ApiError::Query(QueryError::Timeout(_)) | ApiError::BodyTimedOut(_) => {
                StatusCode::REQUEST_TIMEOUT
            }
            ApiError::Encode(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
