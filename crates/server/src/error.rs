//! Why the service refused or failed an operation: a kind (the HTTP layer gives each its
//! status, see `http::error`), a stable code, a message, and the field at fault if any.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (a bad field, a value beyond the largest allowed).
    BadRequest,
    /// No valid credential.
    Unauthorized,
    /// The caller's role or accounts do not allow it.
    Forbidden,
    NotFound,
    /// Not in the state it would need (a key revoking itself, governance not configured).
    Conflict,
    /// Well formed but refused on its merits.
    Unprocessable,
    /// Throttled or rate-limited: retry later.
    TooManyRequests,
    /// The service cannot take it now (a full queue, a storage failure): retry later.
    Unavailable,
    /// A bug or a broken environment.
    Internal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds after which a retry may pass (a throttled or rate-limited request).
    pub retry_after: Option<u64>,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn with_retry_after(mut self, seconds: u64) -> ServiceError {
        self.retry_after = Some(seconds);
        self
    }
    pub fn with_field(mut self, field: impl Into<String>) -> ServiceError {
        self.field = Some(field.into());
        self
    }
    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> ServiceError {
        ServiceError::new(ErrorKind::TooManyRequests, "too_many_requests", message)
            .with_retry_after(retry_after)
    }
    pub fn unauthorized(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Unauthorized, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Forbidden, "forbidden", message)
    }
    pub fn bad_request(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::BadRequest, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::NotFound, "not_found", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Unprocessable, "unprocessable", message)
    }
    pub fn conflict(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Conflict, "conflict", message)
    }
    pub fn unavailable(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Unavailable, "unavailable", message)
    }
    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Internal, "internal", message)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.kind, self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}
