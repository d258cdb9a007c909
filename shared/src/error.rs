//! The one error type of every route, and how each route family renders it.

use lambda_http::http::StatusCode;

use crate::store::{Fault, Refusal, StoreError};
pub use crate::validate::FieldErrors;

/// Everything a route can answer other than success. 4xx messages tell the client what to fix;
/// 5xx messages are generic and the cause goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthenticated.")]
    Unauthenticated,
    #[error("You are not an administrator.")]
    NotAdministrator,
    /// A service key on a route that acts for the calling user.
    #[error(
        "A service key acts for its platform, not as a user: this route takes a user's token."
    )]
    ServiceKeyNotAUser,
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
    #[error("A token cannot outlive the token that creates it: choose an expiry no later than {} (epoch seconds {limit}).", crate::clock::timestamp_seconds(limit.saturating_mul(1000)))]
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
    /// A fault of the service: its cause is logged where the response is made, once.
    #[error("The service is temporarily unavailable. Please try again shortly.")]
    Unavailable(Cause),
}

/// Why a request got a 503, for the log (never for the client).
#[derive(Debug)]
pub enum Cause {
    /// DynamoDB failed, or holds what this version cannot read.
    Store(Fault),
    /// The service is missing something it needs (a key, a trust setting).
    Service(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidSignature => StatusCode::UNAUTHORIZED,
            ApiError::NotAdministrator
            | ApiError::ServiceKeyNotAUser
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
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code of the customer-token route's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::InvalidSignature => "INVALID_SIGNATURE",
            ApiError::NotAdministrator
            | ApiError::ServiceKeyNotAUser
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
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> ApiError {
        ApiError::Validation(errors)
    }
}

impl From<Fault> for ApiError {
    /// A store fault is ours: a generic 503, its cause kept for the log.
    fn from(fault: Fault) -> ApiError {
        ApiError::Unavailable(Cause::Store(fault))
    }
}

impl ApiError {
    /// A 503 for something the service lacks (`why` goes to the log).
    pub fn unavailable(why: impl Into<String>) -> ApiError {
        ApiError::Unavailable(Cause::Service(why.into()))
    }

    /// The answer to a store operation that failed: a refusal as `answer` says, a fault as a
    /// 503. `answer` gives `None` for a refusal the route never expects there (the operation
    /// does not refuse so): that is a fault of the service too, never a guess at a 4xx.
    pub fn from_store(
        error: StoreError,
        answer: impl FnOnce(&Refusal) -> Option<ApiError>,
    ) -> ApiError {
        match error {
            StoreError::Fault(fault) => fault.into(),
            StoreError::Refused(refusal) => {
                answer(&refusal).unwrap_or_else(|| Fault::Unexpected(refusal).into())
            }
        }
    }

    /// Logs the cause of a 5xx; nothing for any other answer. Called once, where the response
    /// is made.
    pub fn log_fault(&self) {
        match self {
            ApiError::Unavailable(Cause::Store(fault)) => {
                tracing::error!(error = %fault, cause = ?std::error::Error::source(fault), "store failure")
            }
            ApiError::Unavailable(Cause::Service(why)) => {
                tracing::error!(error = %why, "service failure")
            }
            _ => {}
        }
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
