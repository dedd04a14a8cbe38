//! Every refusal is a JSON body `{"error": {"status", "code", "message", "field"?}}`: the
//! service's errors ([`ServiceError`]) and governance's ([`GovError`]) mapped to HTTP statuses.

use crate::error::{ErrorKind, ServiceError};
use crate::service::committee::GovFailure;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pmargin_governance::GovError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (a throttled or rate-limited request).
    pub retry_after: Option<u64>,
}

/// The status of each kind of refusal.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        ApiError {
            status: status_of(e.kind),
            code: e.code,
            message: e.message,
            field: e.field,
            retry_after: e.retry_after,
        }
    }
}

/// A governance refusal: an unknown proposal is 404, a step out of order 409, a signature
/// that does not verify (or a signer outside the committee) 403, anything else 422.
impl From<GovError> for ApiError {
    fn from(e: GovError) -> ApiError {
        let field = e.field().map(str::to_string);
        let err = match &e {
            GovError::UnknownProposal(_) => ApiError::not_found(e.to_string()),
            GovError::NoQuorum { .. }
            | GovError::Timelocked { .. }
            | GovError::NotPending { .. }
            | GovError::DuplicateApproval { .. }
            | GovError::DuplicateProposal(_)
            | GovError::NoPendingEmergency
            | GovError::EmergencyExpired { .. } => ApiError::conflict(e.to_string()),
            GovError::BadSignature { .. }
            | GovError::BadGuardianSignature
            | GovError::BadActSignature { .. }
            | GovError::NotEnoughSignatures { .. }
            | GovError::UnknownMember(_)
            | GovError::NoGuardian => ApiError::forbidden(e.to_string()),
            _ => ApiError::unprocessable(e.to_string()),
        };
        match field {
            Some(f) => err.with_field(f),
            None => err,
        }
    }
}

impl From<GovFailure> for ApiError {
    fn from(e: GovFailure) -> ApiError {
        match e {
            GovFailure::Rule(e) => e.into(),
            GovFailure::Service(e) => e.into(),
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ServiceError::unauthorized(message).into()
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ServiceError::bad_request(message).into()
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ServiceError::forbidden(message).into()
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ServiceError::not_found(message).into()
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ServiceError::unprocessable(message).into()
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ServiceError::conflict(message).into()
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ServiceError::unavailable(message).into()
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ServiceError::internal(message).into()
    }
    pub fn body(&self) -> serde_json::Value {
        let mut e =
            json!({ "status": self.status.as_u16(), "code": self.code, "message": self.message });
        if let Some(f) = &self.field {
            e["field"] = json!(f);
        }
        json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// A JSON parse error as a 400 naming the field: the path of the bad value, or for an unknown
/// or missing field, that field's name appended to the path of its object.
pub fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.inner();
    let message = inner.to_string();
    let named = ["unknown field `", "missing field `"].iter().find_map(|p| {
        message
            .split_once(p)
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_string())
    });
    let variant = message.starts_with("unknown variant");
    let field = match (&named, path.as_str()) {
        (Some(n), "." | "") => Some(n.clone()),
        (Some(n), p) if p == n || p.ends_with(&format!(".{n}")) => Some(p.to_string()),
        (Some(n), p) => Some(format!("{p}.{n}")),
        (None, "." | "") if variant => Some("type".to_string()),
        (None, "." | "") => None,
        (None, p) => Some(p.to_string()),
    };
    let what = match field.as_deref() {
        Some(f) => format!("invalid request body at `{f}`: {message}"),
        None => format!("invalid request body: {message}"),
    };
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", what);
    e.field = field;
    e
}
