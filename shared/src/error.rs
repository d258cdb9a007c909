//! The one error type of every route, and how each route family renders it.

use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Response};
use serde_json::{json, Map, Value};

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

    /// `Err(ApiError::Validation)` when any error was added.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
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

    fn to_json(&self) -> Value {
        let fields: Map<String, Value> = self
            .0
            .iter()
            .map(|(field, messages)| (field.clone(), json!(messages)))
            .collect();
        Value::Object(fields)
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
    /// A token may not mint one that outlives it.
    #[error("A token cannot outlive the token that creates it: choose an expiry no later than {} (epoch seconds {limit}).", crate::http::timestamp_seconds(limit.saturating_mul(1000)))]
    OutlivesParent { limit: u64 },
    /// A resource of the route is absent (or in another tenant, which must look the same).
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{}", .0.summary())]
    Validation(FieldErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("The request body is larger than 16 KiB.")]
    PayloadTooLarge,
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
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::NotAdministrator
            | ApiError::AbilitiesExceeded
            | ApiError::CannotManageTokens => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Validation(_) | ApiError::OutlivesParent { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Coded { status, .. } => *status,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code of the customer-token route's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::NotAdministrator
            | ApiError::AbilitiesExceeded
            | ApiError::CannotManageTokens => "FORBIDDEN",
            ApiError::OutlivesParent { .. } => "EXPIRATION_EXCEEDS_TOKEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::RouteNotFound(_) => "ROUTE_NOT_FOUND",
            ApiError::Validation(_) | ApiError::BadRequest(_) => "INVALID_REQUEST",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Coded { code, .. } => code,
            ApiError::Unavailable => "SERVICE_UNAVAILABLE",
        }
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

/// The error body conventions of the seeds' route families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"message": ...}`, and `{"message", "errors"}` for validation (Laravel).
    Laravel,
    /// Laravel, but `{"error": ...}` for 403 and 404 (the white-label route's seed).
    WhiteLabel,
    /// `{"error": CODE, "message": ...}` (the customer-token route's seed).
    Coded,
    /// `{"success": false, "message", "data": null, "code": status}` (the get-user-token seed).
    Envelope,
}

/// Renders `error` in `style`.
pub fn error_response(style: ErrorStyle, error: &ApiError) -> Response<Body> {
    let status = error.status();
    let message = error.to_string();
    let body = match (style, error) {
        (ErrorStyle::Laravel | ErrorStyle::WhiteLabel, ApiError::Validation(fields)) => {
            json!({"message": message, "errors": fields.to_json()})
        }
        (ErrorStyle::WhiteLabel, ApiError::NotAdministrator | ApiError::NotFound(_)) => {
            json!({"error": message})
        }
        (ErrorStyle::Laravel | ErrorStyle::WhiteLabel, _) => json!({"message": message}),
        (ErrorStyle::Coded, _) => json!({"error": error.code(), "message": message}),
        (ErrorStyle::Envelope, _) => json!({
            "success": false,
            "message": message,
            "data": null,
            "code": status.as_u16(),
        }),
    };
    let mut response = json_response(status, &body);
    if let ApiError::MethodNotAllowed { allow, .. } = error {
        if let Ok(value) = allow.parse() {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    response
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response<Body>) -> Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn validation_matches_the_white_label_seed() {
        let mut errors = FieldErrors::new();
        errors.add(
            "user_id",
            "The user id field is required when email is not present.",
        );
        errors.add(
            "email",
            "The email field is required when user id is not present.",
        );
        let response = error_response(ErrorStyle::WhiteLabel, &ApiError::Validation(errors));
        assert_eq!(response.status(), 422);
        assert_eq!(
            body(&response),
            json!({
                "message": "The user id field is required when email is not present. (and 1 more error)",
                "errors": {
                    "user_id": ["The user id field is required when email is not present."],
                    "email": ["The email field is required when user id is not present."]
                }
            })
        );
    }

    #[test]
    fn summaries_count_the_other_messages() {
        let mut errors = FieldErrors::single("a", "A.");
        assert_eq!(errors.summary(), "A.");
        errors.add("a", "B.");
        errors.add("c", "C.");
        assert_eq!(errors.summary(), "A. (and 2 more errors)");
    }

    #[test]
    fn each_style_has_its_own_shape() {
        let not_admin = ApiError::NotAdministrator;
        assert_eq!(
            body(&error_response(ErrorStyle::WhiteLabel, &not_admin)),
            json!({"error": "You are not an administrator."})
        );
        assert_eq!(
            body(&error_response(
                ErrorStyle::Laravel,
                &ApiError::Unauthenticated
            )),
            json!({"message": "Unauthenticated."})
        );
        let coded = error_response(ErrorStyle::Coded, &ApiError::Unavailable);
        assert_eq!(coded.status(), 503);
        assert_eq!(body(&coded)["error"], "SERVICE_UNAVAILABLE");
        let envelope = error_response(ErrorStyle::Envelope, &ApiError::NotFound("User not found."));
        assert_eq!(
            body(&envelope),
            json!({"success": false, "message": "User not found.", "data": null, "code": 404})
        );
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let error = ApiError::MethodNotAllowed {
            method: "PUT".into(),
            path: "api/user/api-keys".into(),
            allow: "GET, POST".into(),
        };
        let response = error_response(ErrorStyle::Laravel, &error);
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET, POST");
    }
}
