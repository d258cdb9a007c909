//! `GET /ext/get-user-token?userId=` with `authtype: Key`: an agency admin reads the permanent
//! token of one of its users. The token is derived (HMAC of the server key, the user id and a
//! generation), so every call returns the same key without the plaintext ever being stored.
//! `POST /ext/rotate-user-token?userId=` moves the user on to the next generation: the previous
//! key stops working at once.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;

use shared::domain::UserId;
use shared::error::ApiError;
use shared::http::{header, query_parameter};
use shared::service::Service;
use shared::store::{PermanentGeneration, Refusal};
use shared::web::{self, Admin, Envelope, Failure, Json, Routes};

/// The routes this function serves.
pub fn routes() -> Routes<Envelope> {
    Routes::default()
        .get("/ext/get-user-token", permanent_token)
        .post("/ext/rotate-user-token", rotate_token)
}

/// The function's router over `service`.
pub fn router(service: Service) -> Router {
    routes().into_router(service)
}

const USER_NOT_FOUND: &str = "User not found.";

/// The seed's `authtype: Key` header, checked before the token is.
struct KeyAuthType;

impl FromRequestParts<web::State> for KeyAuthType {
    type Rejection = Failure<Envelope>;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &web::State,
    ) -> Result<Self, Self::Rejection> {
        match header(&parts.headers, "authtype") {
            Some(authtype) if authtype.eq_ignore_ascii_case("key") => Ok(KeyAuthType),
            _ => Err(ApiError::BadRequest(
                "The authtype header is required and must be set to 'Key'.".into(),
            )
            .into()),
        }
    }
}

/// The `userId` query parameter: a whole number.
fn user_id(uri: &Uri) -> Result<UserId, ApiError> {
    match query_parameter(uri, "userId") {
        Some(text) if !text.trim().is_empty() => {
            text.trim().parse::<u64>().map(UserId).map_err(|_| {
                ApiError::BadRequest(
                    "The userId query parameter must be a user id (a whole number).".into(),
                )
            })
        }
        _ => Err(ApiError::BadRequest(
            "The userId query parameter is required.".into(),
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PermanentTokenView<'a> {
    key: &'a str,
    active: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PermanentTokenData<'a> {
    permanent_token: PermanentTokenView<'a>,
}

/// The seed's success envelope.
#[derive(Serialize)]
struct Success<T> {
    success: bool,
    message: &'static str,
    data: T,
    code: u16,
}

/// Fails the cold start when `PERMANENT_TOKEN_KEY` is missing or short.
pub fn check_config(service: &Service) -> Result<(), lambda_http::Error> {
    service.config.permanent_key()?;
    Ok(())
}

/// `GET /ext/get-user-token`: the user's permanent key, the same on every call.
async fn permanent_token(
    State(service): State<web::State>,
    _: KeyAuthType,
    caller: Admin<Envelope>,
    uri: Uri,
) -> Result<Response, Failure<Envelope>> {
    answer(&service, &caller, &uri, PermanentGeneration::Working).await
}

/// `POST /ext/rotate-user-token`: the user's next permanent key; the previous one is 401 at
/// once.
async fn rotate_token(
    State(service): State<web::State>,
    _: KeyAuthType,
    caller: Admin<Envelope>,
    uri: Uri,
) -> Result<Response, Failure<Envelope>> {
    answer(&service, &caller, &uri, PermanentGeneration::Next).await
}

/// The permanent key of the `userId` user of the caller's platform, in the seed's envelope (a
/// blocked user's key answers `active: false`).
async fn answer(
    service: &Service,
    caller: &Admin<Envelope>,
    uri: &Uri,
    wanted: PermanentGeneration,
) -> Result<Response, Failure<Envelope>> {
    // A permanent key has no limits of the caller's token: handing it out would escape them.
    caller.require_unmetered()?;
    let user_id = user_id(uri)?;
    // Users of other platforms are answered exactly as users that do not exist.
    let user = service
        .store
        .get_user(user_id)
        .await?
        .filter(|user| caller.shares_platform(user))
        .ok_or(ApiError::NotFound(USER_NOT_FOUND))?;
    let key = service
        .config
        .permanent_key()
        .map_err(|e| ApiError::unavailable(format!("permanent-token key missing: {e}")))?;
    let issued = service
        .permanent_token(key, &user, wanted, &caller.change(), caller.now)
        .await
        .map_err(|e| {
            ApiError::from_store(e, |refusal| {
                (*refusal == Refusal::UserNotFound).then_some(ApiError::NotFound(USER_NOT_FOUND))
            })
        })?;
    let answer = Success {
        success: true,
        message: "",
        data: PermanentTokenData {
            permanent_token: PermanentTokenView {
                key: issued.secret.expose(),
                active: user.is_active(),
            },
        },
        code: StatusCode::OK.as_u16(),
    };
    Ok(Json(StatusCode::OK, answer).into_response())
}
