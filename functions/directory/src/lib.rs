//! The platform integration API: what a platform's backend calls, with a service key (or an
//! admin's `*` token), instead of holding table credentials.
//!
//! * Service keys: `POST/GET /api/v1/service-keys`, `DELETE /api/v1/service-keys/{id}`
//!   (permission `*`).
//! * The directory: `POST /api/v1/users` (`users:write`), `GET /api/v1/users` (a lookup by
//!   `external_id` or `email`, or a page of users: `users:read`), `GET /api/v1/users/{id}`
//!   (`users:read`), `PATCH /api/v1/users/{id}` (name, meta, status: `users:write`).
//! * A user's tokens: `GET /api/v1/users/{id}/tokens` (`tokens:read`), `POST` (mint an API key,
//!   `tokens:write`), `DELETE /api/v1/users/{id}/tokens/{token_id}` (`tokens:write`).
//! * Another system's tokens: `POST /api/v1/tokens/import` (`tokens:write`), up to 1000 a
//!   request, answered per entry (see [`shared::import`]).
//!
//! Bodies are Laravel's `{data}` and `{message[, errors]}`. Another platform's user, token or
//! key is answered exactly as an unknown one.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};

use shared::clock::{EpochMs, EpochSeconds, SecondsText};
use shared::domain::{
    Abilities, CustomerId, ExternalId, Meta, Role, UserId, UserStatus, Workspace, WorkspaceStatus,
};
use shared::error::{ApiError, FieldErrors};
use shared::http::query_parameter;
use shared::import;
use shared::limits::Limits;
use shared::mint::{MintRequest, Minted};
use shared::service::Service;
use shared::store::{
    live_token, NewUser, Owner, Refusal, Revocation, TokenRecord, User, UserChange,
};
use shared::token::{TokenFamily, TokenKind};
use shared::validate::{
    abilities_field, both, customer_id_field, email_field, external_id_field, future_date_field,
    integer_field, meta_field, name_field, permissions_field, required, string_field, Parsed,
};
use shared::web::{
    self, permission, Failure, Fields, Json, Laravel, Platform, Routes, TokenIdParam, UserIdParam,
};

type Answer = Result<Response, Failure<Laravel>>;

/// The routes this function serves.
pub fn routes() -> Routes<Laravel> {
    Routes::default()
        .post("/api/v1/service-keys", create_service_key)
        .get("/api/v1/service-keys", list_service_keys)
        .delete("/api/v1/service-keys/{id}", revoke_service_key)
        .post("/api/v1/users", create_user)
        .get("/api/v1/users", find_users)
        .get("/api/v1/users/{id}", get_user)
        .patch("/api/v1/users/{id}", update_user)
        .get("/api/v1/users/{id}/tokens", list_user_tokens)
        .post("/api/v1/users/{id}/tokens", mint_user_token)
        .delete("/api/v1/users/{id}/tokens/{token_id}", revoke_user_token)
        .post("/api/v1/tokens/import", import_tokens)
}

/// The function's router over `service`.
pub fn router(service: Service) -> Router {
    routes().into_router(service)
}

/// The latest expiry a key may be given at creation: 10 years ahead.
const MAX_LIFETIME_SECONDS: u64 = 3650 * 86_400;

/// The largest import body: 1000 entries of a few KiB each, within Lambda's 6 MB payload.
const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;

/// The most users a page holds, and how many without `limit`.
const MAX_USERS_PER_PAGE: u64 = 100;
const DEFAULT_USERS_PER_PAGE: u64 = 50;

const USER_NOT_FOUND: &str = "User not found.";
const TOKEN_NOT_FOUND: &str = "Token not found.";
const SERVICE_KEY_NOT_FOUND: &str = "Service key not found.";

#[derive(Serialize)]
struct Data<T> {
    data: T,
}

fn data<T: Serialize>(status: StatusCode, value: T) -> Answer {
    Ok(Json(status, Data { data: value }).into_response())
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

/// A user as the directory shows it.
#[derive(Serialize)]
struct UserView<'a> {
    id: UserId,
    email: &'a str,
    name: &'a str,
    role: &'static str,
    status: &'static str,
    external_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    meta: Option<&'a Map<String, Value>>,
    workspaces: &'a [Workspace],
    created_at: SecondsText,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> Self {
        UserView {
            id: user.id,
            email: &user.email,
            name: &user.name,
            role: user.role.as_str(),
            status: user.status.as_str(),
            external_id: user.external_id.as_ref().map(ExternalId::as_str),
            customer_id: user.customer_id.as_ref().map(CustomerId::as_str),
            meta: user.meta.as_ref().map(Meta::as_object),
            workspaces: &user.workspaces,
            created_at: SecondsText(EpochMs(user.created_at_ms)),
        }
    }
}

/// A token as a user's listing shows it (never its secret or hash).
#[derive(Serialize)]
struct TokenView<'a> {
    id: String,
    kind: &'static str,
    name: &'a str,
    abilities: &'a Abilities,
    created_at: SecondsText,
    expires_at: Option<SecondsText>,
    last_used_at: Option<SecondsText>,
    enabled: bool,
    meta: Option<&'a Map<String, Value>>,
    limits: Option<Limits>,
    /// Brought over from another system by an import.
    imported: bool,
}

impl<'a> From<&'a TokenRecord> for TokenView<'a> {
    fn from(token: &'a TokenRecord) -> Self {
        TokenView {
            id: token.public_id().to_string(),
            kind: token.kind.as_str(),
            name: &token.name,
            abilities: &token.abilities,
            created_at: SecondsText(EpochMs(token.created_at_ms)),
            expires_at: token
                .expires_at
                .map(|at| SecondsText::from(EpochSeconds(at))),
            last_used_at: token.last_used_at_ms.map(|at| SecondsText(EpochMs(at))),
            enabled: token.enabled,
            meta: token.meta.as_ref().map(Meta::as_object),
            limits: token.meter.map(|meter| meter.limits),
            imported: token.imported,
        }
    }
}

/// A new token with its secret, shown this once.
#[derive(Serialize)]
struct CreatedToken<'a> {
    id: String,
    kind: &'static str,
    name: &'a str,
    abilities: &'a Abilities,
    token: &'a str,
    created_at: SecondsText,
    expires_at: Option<SecondsText>,
    meta: Option<&'a Map<String, Value>>,
}

impl<'a> From<&'a Minted> for CreatedToken<'a> {
    fn from(minted: &'a Minted) -> Self {
        let record = &minted.record;
        CreatedToken {
            id: record.public_id().to_string(),
            kind: record.kind.as_str(),
            name: &record.name,
            abilities: &record.abilities,
            token: minted.secret.expose(),
            created_at: SecondsText(EpochMs(record.created_at_ms)),
            expires_at: record
                .expires_at
                .map(|at| SecondsText::from(EpochSeconds(at))),
            meta: record.meta.as_ref().map(Meta::as_object),
        }
    }
}

/// A service key as listed (never its secret).
#[derive(Serialize)]
struct ServiceKeyView<'a> {
    id: String,
    name: &'a str,
    permissions: &'a Abilities,
    created_at: SecondsText,
    expires_at: Option<SecondsText>,
    last_used_at: Option<SecondsText>,
}

impl<'a> From<&'a TokenRecord> for ServiceKeyView<'a> {
    fn from(key: &'a TokenRecord) -> Self {
        ServiceKeyView {
            id: key.public_id().to_string(),
            name: &key.name,
            permissions: &key.abilities,
            created_at: SecondsText(EpochMs(key.created_at_ms)),
            expires_at: key.expires_at.map(|at| SecondsText::from(EpochSeconds(at))),
            last_used_at: key.last_used_at_ms.map(|at| SecondsText(EpochMs(at))),
        }
    }
}

/// A new service key with its secret, shown this once.
#[derive(Serialize)]
struct CreatedServiceKey<'a> {
    id: String,
    name: &'a str,
    permissions: &'a Abilities,
    token: &'a str,
    created_at: SecondsText,
    expires_at: Option<SecondsText>,
}

/// `POST /api/v1/service-keys {name, permissions, expires_at?}`: a new service key of the
/// caller's platform, shown once (an admin's `*` token or a `*` service key).
async fn create_service_key(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::All>,
    body: Fields<Laravel>,
) -> Answer {
    let (name, (permissions, expires_at)) = both(
        required("name", name_field(&body, "name")),
        both(
            required("permissions", permissions_field(&body, "permissions")),
            expiry_field(&body, caller.now),
        ),
    )?;
    let request = MintRequest::by(
        &caller,
        caller.change(),
        TokenKind::ServiceKey,
        name,
        permissions,
        expires_at,
    )?;
    let minted = service
        .mint_service_key(caller.platform_id, request, caller.now)
        .await
        .map_err(|e| {
            ApiError::from_store(e, |refusal| match refusal {
                Refusal::TokenLimitReached { max } => Some(ApiError::Validation(FieldErrors::single(
                    "name",
                    format!("The platform already holds {max} service keys, the most allowed. Revoke one before creating another."),
                ))),
                _ => None,
            })
        })?;
    let record = &minted.record;
    let created = CreatedServiceKey {
        id: record.public_id().to_string(),
        name: &record.name,
        permissions: &record.abilities,
        token: minted.secret.expose(),
        created_at: SecondsText(EpochMs(record.created_at_ms)),
        expires_at: record
            .expires_at
            .map(|at| SecondsText::from(EpochSeconds(at))),
    };
    data(StatusCode::CREATED, created)
}

/// `expires_at`: ISO 8601, in the future, at most 10 years ahead.
fn expiry_field(body: &Map<String, Value>, now: EpochMs) -> Parsed<Option<u64>> {
    future_date_field(body, "expires_at", now.seconds().0, MAX_LIFETIME_SECONDS)
}

/// `GET /api/v1/service-keys`: the platform's live service keys, newest first.
async fn list_service_keys(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::All>,
) -> Answer {
    let keys = service
        .store
        .list_tokens(
            UserId::service_account(caller.platform_id),
            TokenFamily::Service,
            caller.now,
        )
        .await?;
    data(
        StatusCode::OK,
        keys.iter().map(ServiceKeyView::from).collect::<Vec<_>>(),
    )
}

/// `DELETE /api/v1/service-keys/{id}`: revokes one of the platform's service keys at once.
async fn revoke_service_key(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::All>,
    TokenIdParam(id): TokenIdParam,
) -> Answer {
    let account = UserId::service_account(caller.platform_id);
    let id = id
        .filter(|id| id.user_id == account)
        .ok_or(ApiError::NotFound(SERVICE_KEY_NOT_FOUND))?;
    let revoked = service
        .store
        .revoke_token(
            account,
            TokenFamily::Service,
            id.token_id,
            &caller.change(),
            caller.now,
        )
        .await?;
    if !revoked {
        return Err(ApiError::NotFound(SERVICE_KEY_NOT_FOUND).into());
    }
    Ok(Json(
        StatusCode::OK,
        Message {
            message: "Service key revoked successfully.",
        },
    )
    .into_response())
}

/// The roles a new user may be given (an agency admin is an admin: the permanent-token route
/// takes any admin).
fn role_field(body: &Map<String, Value>) -> Parsed<Option<Role>> {
    match string_field(body, "role")?.as_deref() {
        None => Ok(None),
        Some("user") => Ok(Some(Role::User)),
        Some("admin" | "agency_admin") => Ok(Some(Role::Admin)),
        Some(_) => Err(FieldErrors::single(
            "role",
            "The role field must be one of: user, admin, agency_admin.",
        )),
    }
}

/// `POST /api/v1/users {email, name, external_id?, customer_id?, workspace?, role?, meta?}`:
/// a new user of the caller's platform; a duplicate email, external id or customer id is 409.
async fn create_user(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::UsersWrite>,
    body: Fields<Laravel>,
) -> Answer {
    let ((email, name), ((external_id, customer_id), ((workspace, role), meta))) = both(
        both(
            required("email", email_field(&body, "email")),
            required("name", name_field(&body, "name")),
        ),
        both(
            both(
                external_id_field(&body, "external_id"),
                customer_id_field(&body, "customer_id"),
            ),
            both(
                both(name_field(&body, "workspace"), role_field(&body)),
                meta_field(&body, "meta"),
            ),
        ),
    )?;
    let new = NewUser {
        id: None,
        platform_id: caller.platform_id,
        name: name.as_str().to_string(),
        email,
        role: role.unwrap_or(Role::User),
        status: UserStatus::Active,
        customer_id,
        external_id,
        meta: meta.flatten(),
        workspaces: workspace
            .map(|name| Workspace {
                name: name.as_str().to_string(),
                status: WorkspaceStatus::Active,
            })
            .into_iter()
            .collect(),
    };
    let user = service
        .store
        .create_user(new, &caller.change(), caller.now)
        .await
        .map_err(|e| {
            ApiError::from_store(e, |refusal| match refusal {
                Refusal::EmailTaken => Some(ApiError::Conflict(
                    "A user with this email already exists in this platform.",
                )),
                Refusal::ExternalIdTaken => Some(ApiError::Conflict(
                    "A user with this external_id already exists in this platform.",
                )),
                Refusal::CustomerIdTaken => Some(ApiError::Conflict(
                    "A user with this customer_id already exists.",
                )),
                _ => None,
            })
        })?;
    data(StatusCode::CREATED, UserView::from(&user))
}

#[derive(Serialize)]
struct UsersPage<'a> {
    data: Vec<UserView<'a>>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/users?external_id=` or `?email=`: the one user (404 when none);
/// `GET /api/v1/users?limit=&cursor=`: a page of the platform's users by id.
async fn find_users(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::UsersRead>,
    uri: Uri,
) -> Answer {
    let query: Map<String, Value> = ["external_id", "email", "limit", "cursor"]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), Value::from(query_parameter(&uri, name)?))))
        .collect();
    let store = service.store.as_ref();
    if query.contains_key("external_id") || query.contains_key("email") {
        let (external, email) = both(
            external_id_field(&query, "external_id"),
            email_field(&query, "email"),
        )?;
        let found = match (external, email) {
            (Some(external), _) => {
                store
                    .find_user_by_external_id(caller.platform_id, &external)
                    .await?
            }
            (None, Some(email)) => store.find_user_by_email(caller.platform_id, &email).await?,
            (None, None) => None,
        };
        let user = found
            .filter(|user| caller.shares_platform(user))
            .ok_or(ApiError::NotFound(USER_NOT_FOUND))?;
        return data(StatusCode::OK, UserView::from(&user));
    }
    let cursor = match string_field(&query, "cursor") {
        Ok(Some(text)) => parse_cursor(&text).map(Some),
        Ok(None) => Ok(None),
        Err(errors) => Err(errors),
    };
    let (limit, cursor) = both(
        integer_field(&query, "limit", 1, MAX_USERS_PER_PAGE),
        cursor,
    )?;
    let limit = limit.unwrap_or(DEFAULT_USERS_PER_PAGE) as u32;
    let page = store.list_users(caller.platform_id, limit, cursor).await?;
    let page = UsersPage {
        data: page.users.iter().map(UserView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    };
    Ok(Json(StatusCode::OK, page).into_response())
}

/// A cursor this route gave out: a user id.
fn parse_cursor(text: &str) -> Parsed<UserId> {
    text.parse::<u64>()
        .ok()
        .map(UserId)
        .filter(|id| !id.is_service_account())
        .ok_or_else(|| FieldErrors::single("cursor", "The cursor is not one this route gave out."))
}

/// The user of the caller's platform a path names; the 404 otherwise.
async fn platform_user<R>(
    service: &Service,
    caller: &web::Caller<Laravel, R>,
    id: Option<UserId>,
) -> Result<User, ApiError> {
    let user = match id {
        Some(id) => service.store.get_user(id).await?,
        None => None,
    };
    user.filter(|user| caller.shares_platform(user))
        .ok_or(ApiError::NotFound(USER_NOT_FOUND))
}

/// `GET /api/v1/users/{id}`.
async fn get_user(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::UsersRead>,
    UserIdParam(id): UserIdParam,
) -> Answer {
    let user = platform_user(&service, &caller, id).await?;
    data(StatusCode::OK, UserView::from(&user))
}

/// `PATCH /api/v1/users/{id} {name?, meta?, status?}`: renames the user, replaces (or, with
/// `null`, removes) its meta, blocks or unblocks it (every token at once), each audited.
async fn update_user(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::UsersWrite>,
    UserIdParam(id): UserIdParam,
    body: Fields<Laravel>,
) -> Answer {
    let user = platform_user(&service, &caller, id).await?;
    let status = match string_field(&body, "status") {
        Ok(None) => Ok(None),
        Ok(Some(text)) => UserStatus::from_name(&text).map(Some).ok_or_else(|| {
            FieldErrors::single(
                "status",
                "The status field must be one of: active, blocked.",
            )
        }),
        Err(errors) => Err(errors),
    };
    let (name, (meta, status)) = both(
        name_field(&body, "name"),
        both(meta_field(&body, "meta"), status),
    )?;
    let change = UserChange {
        name: name.map(|name| name.as_str().to_string()),
        meta,
    };
    if change.is_empty() && status.is_none() {
        return Err(FieldErrors::single(
            "name",
            "The name field is required when none of meta / status are present.",
        )
        .into());
    }
    let audit = caller.change();
    let gone = || ApiError::NotFound(USER_NOT_FOUND);
    let mut user = user;
    if !change.is_empty() {
        user = service
            .store
            .update_user(user.id, &change, &audit)
            .await?
            .ok_or_else(gone)?;
    }
    if let Some(status) = status.filter(|status| *status != user.status) {
        service
            .store
            .set_user_status(user.id, status, &audit)
            .await
            .map_err(|e| {
                ApiError::from_store(e, |refusal| match refusal {
                    Refusal::UserNotFound => Some(gone()),
                    _ => None,
                })
            })?;
        user.status = status;
    }
    data(StatusCode::OK, UserView::from(&user))
}

/// `GET /api/v1/users/{id}/tokens`: every live token of the user, any kind.
async fn list_user_tokens(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::TokensRead>,
    UserIdParam(id): UserIdParam,
) -> Answer {
    let user = platform_user(&service, &caller, id).await?;
    let tokens = service.store.list_all_tokens(user.id, caller.now).await?;
    data(
        StatusCode::OK,
        tokens.iter().map(TokenView::from).collect::<Vec<_>>(),
    )
}

/// `POST /api/v1/users/{id}/tokens {name, abilities?, expires_at?, meta?}`: an API key for the
/// user, shown once; abilities default to `["*"]`; it counts toward the user's cap.
async fn mint_user_token(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::TokensWrite>,
    UserIdParam(id): UserIdParam,
    body: Fields<Laravel>,
) -> Answer {
    let user = platform_user(&service, &caller, id).await?;
    caller.require_unmetered()?;
    let (name, (abilities, (expires_at, meta))) = both(
        required("name", name_field(&body, "name")),
        both(
            abilities_field(&body, "abilities"),
            both(expiry_field(&body, caller.now), meta_field(&body, "meta")),
        ),
    )?;
    let mut request = MintRequest::by(
        &caller,
        caller.change(),
        TokenKind::ApiKey,
        name,
        abilities.unwrap_or_else(Abilities::full),
        expires_at,
    )?;
    request.meta = meta.flatten();
    let minted = service
        .mint_answering(Owner::from(&user), request, caller.now, |refusal| match refusal {
            Refusal::UserNotFound => Some(ApiError::NotFound(USER_NOT_FOUND)),
            Refusal::UserBlocked => Some(ApiError::Conflict(
                "The user is blocked: unblock it before minting it a key.",
            )),
            Refusal::TokenLimitReached { max } => Some(ApiError::Validation(FieldErrors::single(
                "name",
                format!("The user already holds {max} API keys and tokens, the most allowed. Revoke one before creating another."),
            ))),
            _ => None,
        })
        .await?;
    data(StatusCode::CREATED, CreatedToken::from(&minted))
}

/// `DELETE /api/v1/users/{id}/tokens/{token_id}`: revokes one live token of the user, any kind
/// (reason `admin_revoked`).
async fn revoke_user_token(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::TokensWrite>,
    UserIdParam(user): UserIdParam,
    TokenIdParam(id): TokenIdParam,
) -> Answer {
    let user = platform_user(&service, &caller, user).await?;
    let not_found = || ApiError::NotFound(TOKEN_NOT_FOUND);
    let id = id
        .filter(|id| id.user_id == user.id)
        .ok_or_else(not_found)?;
    let record = live_token(service.store.as_ref(), id, caller.now)
        .await?
        .ok_or_else(not_found)?;
    let revoked = service
        .store
        .revoke_token_if(
            record.address(),
            &Revocation::AdminRevoked,
            &caller.change(),
            caller.now,
            &|_| true,
        )
        .await?;
    if !revoked {
        return Err(not_found().into());
    }
    Ok(Json(
        StatusCode::OK,
        Message {
            message: "Token revoked successfully.",
        },
    )
    .into_response())
}

/// `POST /api/v1/tokens/import {"tokens": [...]}`: another system's tokens, up to 1000, each
/// an API key of its owner (a user of the caller's platform, by `user_id` or `external_id`)
/// that authenticates by its secret's hash; answered per entry, in order,
/// `{index, status: imported | existing | error, id?, error?}`. More than 1000: 422, nothing
/// imported.
async fn import_tokens(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::TokensWrite>,
    body: Fields<Laravel, MAX_IMPORT_BYTES>,
) -> Answer {
    caller.require_unmetered()?;
    let entries = match body.get("tokens") {
        Some(Value::Array(entries)) if entries.len() > import::MAX_ENTRIES => {
            return Err(invalid_tokens(format!(
                "The tokens field must not have more than {} items.",
                import::MAX_ENTRIES
            )))
        }
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        Some(Value::Array(_)) | Some(Value::Null) | None => {
            return Err(invalid_tokens("The tokens field is required.".into()))
        }
        Some(_) => return Err(invalid_tokens("The tokens field must be an array.".into())),
    };
    let entries = entries
        .iter()
        .map(|entry| import::Entry::parse(entry, &service, caller.now))
        .collect();
    let change = caller.change();
    let outcomes = import::import(
        &service,
        Some(caller.platform_id),
        entries,
        &change,
        caller.now,
    )
    .await?;
    data(StatusCode::OK, outcomes)
}

fn invalid_tokens(message: String) -> Failure<Laravel> {
    ApiError::Validation(FieldErrors::single("tokens", message)).into()
}
