//! The one error type of every route, and how each route family renders it.

use lambda_http::http::StatusCode;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::store::StoreError;

/// Laravel-style field errors: field -> messages, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<(String, Vec<String>)>);

impl FieldErrors {
    pub fn new() -> FieldErrors {
        FieldErrors::default()
    }

    /// A single error on a single field.
    pub fn single(field: &str, message: impl Into<String>) -> FieldErrors {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let message = message.into();
        match self.0.iter_mut().find(|(f, _)| f == field) {
            Some((_, messages)) => messages.push(message),
            None => self.0.push((field.to_string(), vec![message])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err` when any error was added.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The first message, with Laravel's `(and N more error(s))` suffix.
    pub fn summary(&self) -> String {
        let mut messages = self.0.iter().flat_map(|(_, m)| m);
        let first = messages.next().cloned().unwrap_or_default();
        match messages.count() {
            0 => first,
            1 => format!("{first} (and 1 more error)"),
            more => format!("{first} (and {more} more errors)"),
        }
    }

    /// Both sets of errors, `self`'s fields first.
    pub fn merge(mut self, other: FieldErrors) -> FieldErrors {
        for (field, messages) in other.0 {
            for message in messages {
                self.add(&field, message);
            }
        }
        self
    }
}

/// `{"field": ["message", ...], ...}`, fields in the order they were found.
impl Serialize for FieldErrors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (field, messages) in &self.0 {
            map.serialize_entry(field, messages)?;
        }
        map.end()
    }
}

/// Everything a route can answer other than success. 4xx messages tell the client what to fix;
/// 5xx messages are generic and the cause goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthenticated.")]
    Unauthenticated,
    #[error("You are not an administrator.")]
    NotAdministrator,
    #[error("This token cannot grant abilities it does not have itself.")]
    AbilitiesExceeded,
    #[error("This token cannot manage tokens: that takes the ability tokens:manage or *.")]
    CannotManageTokens,
    #[error("A token's abilities may only be narrowed: send a subset of its current abilities.")]
    AbilitiesWidened,
    /// A token with usage limits of its own may not mint tokens that would escape them.
    #[error("This token has usage limits of its own and cannot create tokens: a new token would not be bound by them. Use a token without limits.")]
    MeteredMinting,
    /// Usage limits are the platform's to set, never a token owner's.
    #[error("Only a platform admin can change usage limits.")]
    LimitsNotYours,
    /// A metered token over one of its usage limits (or its owner's).
    #[error("Too Many Requests.")]
    TooManyRequests {
        refusal: crate::limits::Refusal,
        retry_after: Option<u64>,
    },
    /// A token may not mint one that outlives it.
    #[error("A token cannot outlive the token that creates it: choose an expiry no later than {} (epoch seconds {limit}).", crate::http::timestamp_seconds(limit.saturating_mul(1000)))]
    OutlivesParent { limit: u64 },
    /// A resource of the route is absent (or in another tenant, which must look the same).
    #[error("{0}")]
    NotFound(&'static str),
    /// The resource is not in a state the request can apply to (a token rolled already).
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{}", .0.summary())]
    Validation(FieldErrors),
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the route's limit (bytes, a whole number of KiB).
    #[error("The request body is larger than {} KiB.", .0 / 1024)]
    PayloadTooLarge(usize),
    /// A secret-scanning report whose signature does not verify.
    #[error("Invalid signature.")]
    InvalidSignature,
    /// A body that parsed but is not what the route takes, said in one message.
    #[error("{0}")]
    Unprocessable(String),
    #[error("The {method} method is not supported for route {path}. Supported methods: {allow}.")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: String,
    },
    #[error("The route {0} could not be found.")]
    RouteNotFound(String),
    /// A failure with the route's own machine-readable code (the customer-token route).
    #[error("{message}")]
    Coded {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("The service is temporarily unavailable. Please try again shortly.")]
    Unavailable,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidSignature => StatusCode::UNAUTHORIZED,
            ApiError::NotAdministrator
            | ApiError::AbilitiesExceeded
            | ApiError::AbilitiesWidened
            | ApiError::LimitsNotYours
            | ApiError::MeteredMinting
            | ApiError::CannotManageTokens => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation(_)
            | ApiError::Unprocessable(_)
            | ApiError::OutlivesParent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Coded { status, .. } => *status,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code of the customer-token route's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::InvalidSignature => "INVALID_SIGNATURE",
            ApiError::NotAdministrator
            | ApiError::AbilitiesExceeded
            | ApiError::AbilitiesWidened
            | ApiError::LimitsNotYours
            | ApiError::MeteredMinting
            | ApiError::CannotManageTokens => "FORBIDDEN",
            ApiError::TooManyRequests { refusal, .. } => refusal.code(),
            ApiError::OutlivesParent { .. } => "EXPIRATION_EXCEEDS_TOKEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RouteNotFound(_) => "ROUTE_NOT_FOUND",
            ApiError::Validation(_) | ApiError::BadRequest(_) | ApiError::Unprocessable(_) => {
                "INVALID_REQUEST"
            }
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Coded { code, .. } => code,
            ApiError::Unavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> ApiError {
        ApiError::Validation(errors)
    }
}

impl From<StoreError> for ApiError {
    /// Store failures that reach a client are faults of ours: logged in full here, answered
    /// with a generic 503.
    fn from(error: StoreError) -> ApiError {
        tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "store failure");
        ApiError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_the_other_messages() {
        let mut errors = FieldErrors::single("a", "A.");
        assert_eq!(errors.summary(), "A.");
        errors.add("a", "B.");
        errors.add("c", "C.");
        assert_eq!(errors.summary(), "A. (and 2 more errors)");
        let merged = FieldErrors::single("c", "D.").merge(errors);
        assert_eq!(
            serde_json::to_string(&merged).unwrap(),
            r#"{"c":["D.","C."],"a":["A.","B."]}"#
        );
    }
}
