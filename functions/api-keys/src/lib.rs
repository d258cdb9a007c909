//! A user's own tokens: `/api/user/api-keys` (API keys) and `/api/v1/user/api-tokens` (personal
//! access tokens with abilities). Create, list (newest first, never a secret) and delete (at once).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

use shared::auth::Principal;
use shared::error::{error_response, json_response, ApiError, ErrorStyle, FieldErrors};
use shared::http::{
    bearer_token, json_object, route_request, timestamp_micros, timestamp_seconds, Route,
};
use shared::mint::{mint, MintRequest};
use shared::service::Service;
use shared::store::{now_ms, StoreError, TokenRecord};
use shared::token::{PublicTokenId, TokenFamily, TokenKind};
use shared::validate::{abilities_field, name_field};

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    CreateKey,
    ListKeys,
    DeleteKey,
    CreateToken,
    ListTokens,
    DeleteToken,
}

/// The routes this function serves.
pub const ROUTES: [Route<Action>; 6] = [
    Route {
        method: "POST",
        pattern: "/api/user/api-keys",
        action: Action::CreateKey,
    },
    Route {
        method: "GET",
        pattern: "/api/user/api-keys",
        action: Action::ListKeys,
    },
    Route {
        method: "DELETE",
        pattern: "/api/user/api-keys/{id}",
        action: Action::DeleteKey,
    },
    Route {
        method: "POST",
        pattern: "/api/v1/user/api-tokens",
        action: Action::CreateToken,
    },
    Route {
        method: "GET",
        pattern: "/api/v1/user/api-tokens",
        action: Action::ListTokens,
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/user/api-tokens/{id}",
        action: Action::DeleteToken,
    },
];

/// The Lambda handler: always a response, errors in Laravel's `{message[, errors]}` shape.
pub async fn handle(service: &Service, request: Request) -> Response<Body> {
    dispatch(service, &request)
        .await
        .unwrap_or_else(|e| error_response(ErrorStyle::Laravel, &e))
}

async fn dispatch(service: &Service, request: &Request) -> Result<Response<Body>, ApiError> {
    let (action, params) = route_request(&ROUTES, request)?;
    let now = now_ms();
    let caller = service
        .authenticate(bearer_token(request.headers()), now)
        .await?;
    caller.require_token_management()?;
    let id = params.first().map(String::as_str).unwrap_or_default();
    match action {
        Action::CreateKey => create(service, request, &caller, TokenKind::ApiKey, now).await,
        Action::CreateToken => create(service, request, &caller, TokenKind::Personal, now).await,
        Action::ListKeys => {
            let keys = list(service, &caller, TokenFamily::ApiKeys, now).await?;
            let keys: Vec<Value> = keys
                .iter()
                .map(|k| {
                    json!({
                        "id": k.public_id().to_string(),
                        "name": k.name,
                        "created_at": timestamp_micros(k.created_at_ms),
                        "last_used_at": k.last_used_at_ms.map(timestamp_micros),
                    })
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "api_keys": keys })))
        }
        Action::ListTokens => {
            let tokens = list(service, &caller, TokenFamily::Personal, now).await?;
            let tokens: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    json!({
                        "id": t.public_id().to_string(),
                        "name": t.name,
                        "abilities": t.abilities,
                        "created_at": timestamp_seconds(t.created_at_ms),
                        "last_used_at": t.last_used_at_ms.map(timestamp_seconds),
                        "expires_at": t.expires_at.map(|s| timestamp_seconds(s * 1000)),
                    })
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "data": tokens })))
        }
        Action::DeleteKey => {
            revoke(
                service,
                &caller,
                TokenFamily::ApiKeys,
                id,
                "API key not found.",
                now,
            )
            .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"message": "API key deleted successfully."}),
            ))
        }
        Action::DeleteToken => {
            revoke(
                service,
                &caller,
                TokenFamily::Personal,
                id,
                "API token not found.",
                now,
            )
            .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"message": "API token deleted successfully."}),
            ))
        }
    }
}

/// Creates an API key (`name`) or a personal access token (`name`, `abilities`). Abilities
/// default to the caller's own and may never exceed them.
async fn create(
    service: &Service,
    request: &Request,
    caller: &Principal,
    kind: TokenKind,
    now: u64,
) -> Result<Response<Body>, ApiError> {
    let body = json_object(request)?;
    let mut errors = FieldErrors::new();
    let name = name_field(&body, "name", true, &mut errors);
    let abilities = match kind {
        TokenKind::Personal => abilities_field(&body, "abilities", &mut errors),
        _ => None,
    };
    errors.into_result()?;
    let (Some(name), abilities) = (name, abilities.unwrap_or_else(|| caller.abilities.clone()))
    else {
        unreachable!("a missing name is a validation error");
    };
    caller.require_abilities(&abilities)?;

    let store = service.store.as_ref();
    let cap = service.config.cap(kind.family());
    let mint_request = MintRequest::by(caller, kind, name, abilities, None)?;
    let minted = mint(store, caller.owner(), mint_request, cap, now)
        .await
        .map_err(|e| match e {
            StoreError::UserNotFound | StoreError::UserBlocked => ApiError::Unauthenticated,
            StoreError::TokenLimitReached { max } => ApiError::Validation(FieldErrors::single(
                "name",
                format!(
                    "You already hold {max} API keys and tokens, the most allowed. Delete one you no longer use before creating another."
                ),
            )),
            other => other.into(),
        })?;
    let record = &minted.record;
    let body = match kind {
        TokenKind::Personal => json!({
            "data": {
                "id": record.public_id().to_string(),
                "name": record.name,
                "abilities": record.abilities,
                "token": minted.secret.expose(),
                "created_at": timestamp_seconds(record.created_at_ms),
            }
        }),
        _ => json!({
            "message": "API key created successfully.",
            "api_key": {
                "id": record.public_id().to_string(),
                "name": record.name,
                "token": minted.secret.expose(),
                "created_at": timestamp_micros(record.created_at_ms),
            }
        }),
    };
    Ok(json_response(StatusCode::CREATED, &body))
}

/// The caller's live tokens of `family` that it may manage (all of them for a `*` token).
async fn list(
    service: &Service,
    caller: &Principal,
    family: TokenFamily,
    now: u64,
) -> Result<Vec<TokenRecord>, ApiError> {
    let mut tokens = service
        .store
        .list_tokens(caller.user_id, family, now)
        .await?;
    tokens.retain(|token| caller.may_manage(&token.abilities));
    Ok(tokens)
}

/// Revokes one of the caller's own tokens; another user's id, an unknown one, or one with
/// abilities beyond the caller's is 404.
async fn revoke(
    service: &Service,
    caller: &Principal,
    family: TokenFamily,
    id: &str,
    not_found: &'static str,
    now: u64,
) -> Result<(), ApiError> {
    let id = PublicTokenId::parse(id)
        .filter(|id| id.user_id == caller.user_id)
        .ok_or(ApiError::NotFound(not_found))?;
    let revoked = service
        .store
        .revoke_token_if(caller.user_id, family, id.token_id, now, &|token| {
            caller.may_manage(&token.abilities)
        })
        .await?;
    if revoked {
        Ok(())
    } else {
        Err(ApiError::NotFound(not_found))
    }
}
