//! The one error type of the HTTP API.
//!
//! Every error response has the same body, `{"error": {code, message,
//! request_id}}`. Client errors say what to do; server errors say only that
//! something failed and carry the request id, while the details go to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_proto::api::{ErrorBody, ErrorDetail};

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "none".into())
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Logged, never sent.
    internal: Option<String>,
    /// Column of an expression error, sent as `position`.
    pub position: Option<u32>,
    /// Seconds sent as `retry-after` (429s).
    pub retry_after: Option<u64>,
    /// JSON path of the refused part of a document, sent as `path`.
    pub path: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            internal: None,
            position: None,
            retry_after: None,
            path: None,
        }
    }
    /// A 400 for an expression that does not parse, naming the column.
    pub fn at_position(code: &'static str, message: impl Into<String>, position: usize) -> Self {
        ApiError {
            position: Some(u32::try_from(position).unwrap_or(u32::MAX)),
            ..Self::bad_request(code, message)
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found: check the id and the tenant domain"),
        )
    }
    /// A 429 with `retry-after: secs`.
    pub fn too_many(code: &'static str, message: impl Into<String>, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// A server-side failure: the client sees a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error: retry later, and report the request id if it persists".into(),
            internal: Some(detail.to_string()),
            position: None,
            retry_after: None,
            path: None,
        }
    }
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "service temporarily unavailable: retry later".into(),
            internal: Some(detail.to_string()),
            position: None,
            retry_after: None,
            path: None,
        }
    }
}

impl From<rampart_store::StoreError> for ApiError {
    fn from(e: rampart_store::StoreError) -> Self {
        use rampart_store::StoreError as E;
        match e {
            E::Conflict(what) => {
                ApiError::conflict(format!("{what} already exists: choose another"))
            }
            E::NotFound(what) => ApiError::not_found(what),
            e if e.is_unavailable() => ApiError::unavailable(e),
            e => ApiError::internal(e),
        }
    }
}

impl From<crate::service::ServiceError> for ApiError {
    fn from(e: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as S;
        match e {
            S::Store(s) => s.into(),
            S::Invalid(m) => ApiError::bad_request("invalid", m),
            S::InvalidConfig(c) => ApiError {
                path: Some(c.path.clone()),
                ..ApiError::bad_request(
                    "invalid_config",
                    format!("{}: {}: fix the document and save again", c.path, c.reason),
                )
            },
            S::NotFound(what) => ApiError::not_found(what),
            S::Conflict(m) => ApiError::conflict(m),
            S::Enrollment(r) => {
                let code = match r {
                    rampart_store::TokenRejection::Unknown => "token_unknown",
                    rampart_store::TokenRejection::Expired => "token_expired",
                    rampart_store::TokenRejection::UsedUp => "token_used_up",
                    rampart_store::TokenRejection::Revoked => "token_revoked",
                    rampart_store::TokenRejection::DeviceLimit(_) => "device_limit",
                };
                ApiError::forbidden(code, e.to_string())
            }
            S::NotInPlan(_) => ApiError::forbidden("feature_not_in_plan", e.to_string()),
            S::WrongRegion { .. } => ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "wrong_region",
                e.to_string(),
            ),
            S::Crypto(_) | S::Tls(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        if self.status.is_server_error() {
            tracing::error!(
                request_id = %request_id,
                status = self.status.as_u16(),
                detail = self.internal.as_deref().unwrap_or(""),
                "request failed"
            );
        }
        let mut resp = (
            self.status,
            axum::Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.into(),
                    message: self.message,
                    request_id,
                    position: self.position,
                    path: self.path,
                },
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(secs));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}
