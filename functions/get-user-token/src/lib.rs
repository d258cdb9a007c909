//! `GET /ext/get-user-token?userId=` with `authtype: Key`: an agency admin reads the permanent
//! token of one of its users. The token is derived (HMAC of the server key, the user id and a
//! generation), so every call returns the same key without the plaintext ever being stored.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use shared::domain::{Abilities, UserId};
use shared::error::{error_response, json_response, ApiError, ErrorStyle};
use shared::http::{bearer_token, header, query_parameter, route_request, Route};
use shared::service::Service;
use shared::store::{now_ms, NewToken};

/// The routes this function serves.
pub const ROUTES: [Route<()>; 1] = [Route {
    method: "GET",
    pattern: "/ext/get-user-token",
    action: (),
}];

const USER_NOT_FOUND: &str = "User not found.";

/// The Lambda handler: always the seed's envelope, `success: false` with `code` on errors.
pub async fn handle(service: &Service, request: Request) -> Response<Body> {
    permanent_token(service, &request)
        .await
        .unwrap_or_else(|e| error_response(ErrorStyle::Envelope, &e))
}

/// Fails the cold start when `PERMANENT_TOKEN_KEY` is missing or short.
pub fn check_config(service: &Service) -> Result<(), lambda_http::Error> {
    service.config.permanent_key()?;
    Ok(())
}

async fn permanent_token(service: &Service, request: &Request) -> Result<Response<Body>, ApiError> {
    route_request(&ROUTES, request)?;
    let authtype = header(request.headers(), "authtype");
    if !authtype.is_some_and(|t| t.eq_ignore_ascii_case("key")) {
        return Err(ApiError::BadRequest(
            "The authtype header is required and must be set to 'Key'.".into(),
        ));
    }
    let now = now_ms();
    let store = service.store.as_ref();
    let caller = service
        .authenticate(bearer_token(request.headers()), now)
        .await?;
    caller.require_admin()?;
    let user_id = match query_parameter(request, "userId") {
        Some(text) if !text.trim().is_empty() => {
            text.trim().parse::<u64>().map(UserId).map_err(|_| {
                ApiError::BadRequest(
                    "The userId query parameter must be a user id (a whole number).".into(),
                )
            })?
        }
        _ => {
            return Err(ApiError::BadRequest(
                "The userId query parameter is required.".into(),
            ))
        }
    };
    // Users of other platforms are answered exactly as users that do not exist.
    let user = store
        .get_user(user_id)
        .await?
        .filter(|user| user.platform_id == caller.platform_id)
        .ok_or(ApiError::NotFound(USER_NOT_FOUND))?;
    let key = service.config.permanent_key().map_err(|e| {
        tracing::error!(error = %e, "permanent-token key missing");
        ApiError::Unavailable
    })?;
    // The generation whose key works: revoked records and keys made with an earlier server key
    // move the user on to the next generation (a blocked user's key answers `active: false`).
    let derive = |generation| {
        let issued = key.derive(user.id, generation);
        NewToken {
            parsed: issued.parsed,
            name: "permanent".into(),
            abilities: Abilities::full(),
            created_at_ms: now,
            expires_at: None,
            parent_id: None,
        }
    };
    let generation = store.issue_permanent_token(&user, &derive, now).await?;
    let issued = key.derive(user.id, generation);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": "",
            "data": {"permanentToken": {"key": issued.secret.expose(), "active": user.is_active()}},
            "code": 200,
        }),
    ))
}
