//! A user's own tokens: `/api/user/api-keys` (API keys) and `/api/v1/user/api-tokens` (personal
//! access tokens with abilities). Create (optionally expiring), list (newest first, never a
//! secret), update (rename, disable or enable, narrow abilities) and delete (at once). Bodies are
//! JSON or forms; errors are Laravel's `{message[, errors]}`.
//!
//! And what only the platform may change about them: the usage limits of a user (shared by all
//! its tokens) and of a token (`PUT /api/v1/users/{id}/limits`, `PUT /api/v1/tokens/{id}/limits`,
//! a platform admin's `*` token).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};

use shared::clock::{EpochMs, EpochSeconds, MicrosText, SecondsText};
use shared::domain::{Abilities, TokenName};
use shared::error::{ApiError, FieldErrors};
use shared::limits::Limits;
use shared::mint::{MintRequest, Minted, Roll};
use shared::service::Service;
use shared::store::{
    live_token, set_token_limits, Metered, Refusal, Revocation, TokenAddress, TokenChange,
    TokenRecord, TokenState,
};
use shared::token::{PublicTokenId, TokenFamily, TokenKind};
use shared::validate::{
    abilities_field, boolean_field, both, future_date_field, integer_field, meta_field, name_field,
    required, Parsed,
};
use shared::web::{
    self, permission, Failure, Fields, Json, Laravel, Manager, Platform, Routes, TokenIdParam,
    UserIdParam,
};

type Caller = Manager<Laravel>;
type Answer = Result<Response, Failure<Laravel>>;

/// The routes this function serves.
pub fn routes() -> Routes<Laravel> {
    Routes::default()
        .post("/api/user/api-keys", create_key)
        .get("/api/user/api-keys", list::<ApiKeys>)
        .delete("/api/user/api-keys/{id}", delete::<ApiKeys>)
        .patch("/api/user/api-keys/{id}", update::<ApiKeys>)
        .post("/api/user/api-keys/{id}/roll", roll::<ApiKeys>)
        .post("/api/v1/user/api-tokens", create_token)
        .get("/api/v1/user/api-tokens", list::<PersonalTokens>)
        .delete("/api/v1/user/api-tokens/{id}", delete::<PersonalTokens>)
        .patch("/api/v1/user/api-tokens/{id}", update::<PersonalTokens>)
        .post("/api/v1/user/api-tokens/{id}/roll", roll::<PersonalTokens>)
        .put("/api/v1/users/{id}/limits", user_limits)
        .put("/api/v1/tokens/{id}/limits", token_limits)
}

/// Fields of an update that would change usage limits: never a token owner's to send.
const LIMIT_FIELDS: [&str; 4] = ["credits", "rate_limit", "ratelimit", "limits"];

#[derive(Serialize)]
struct LimitsSet {
    data: Limits,
}

/// `PUT /api/v1/users/{id}/limits`: a platform admin sets the limits every token of one of its
/// users shares. Another platform's user is answered as an unknown one.
async fn user_limits(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::LimitsWrite>,
    UserIdParam(id): UserIdParam,
    body: Fields<Laravel>,
) -> Answer {
    let limits = Limits::parse(&body);
    let not_found = || ApiError::NotFound("User not found.");
    let user = match id {
        Some(id) => service.store.get_user(id).await?,
        None => None,
    }
    .filter(|user| caller.shares_platform(user))
    .ok_or_else(not_found)?;
    let limits = limits?;
    let stored = service
        .store
        .set_limits(Metered::User(&user), &limits, &caller.change(), caller.now)
        .await?;
    limits_set(stored, limits, not_found)
}

/// `PUT /api/v1/tokens/{id}/limits`: a platform admin sets one live token's own limits (any
/// kind; the public `<user>-<record>` id). Another platform's token is answered as an unknown
/// one.
async fn token_limits(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::LimitsWrite>,
    TokenIdParam(id): TokenIdParam,
    body: Fields<Laravel>,
) -> Answer {
    let limits = Limits::parse(&body);
    let not_found = || ApiError::NotFound("Token not found.");
    let record = match id {
        Some(id) => live_token(service.store.as_ref(), id, caller.now).await?,
        None => None,
    }
    .filter(|record| caller.shares_platform(record))
    .ok_or_else(not_found)?;
    let limits = limits?;
    let stored = set_token_limits(
        service.store.as_ref(),
        &record,
        &limits,
        &caller.change(),
        caller.now,
    )
    .await?;
    limits_set(stored, limits, not_found)
}

/// The answer to a limits change: the limits as stored, or the 404 when the record went.
fn limits_set(stored: bool, limits: Limits, not_found: impl Fn() -> ApiError) -> Answer {
    if !stored {
        return Err(not_found().into());
    }
    Ok(Json(StatusCode::OK, LimitsSet { data: limits }).into_response())
}

/// The longest grace period of a roll: a week.
const MAX_GRACE_SECONDS: u64 = 604_800;

/// The latest expiry a token may be given at creation: 10 years ahead.
const MAX_LIFETIME_DAYS: u64 = 3650;

/// What the two route families differ in.
trait Family: Send + Sync + 'static {
    const KIND: TokenKind;
    const FAMILY: TokenFamily;
    const NOT_FOUND: &'static str;
    const DELETED: &'static str;
    const ROLLED_ALREADY: &'static str;
    /// The 409 of a roll of a token whose predecessor still works.
    const PREDECESSOR_WORKS: &'static str;

    /// The listing's body.
    fn listing(tokens: &[TokenRecord]) -> Response;

    /// The fields an update may change, from its body; an empty update is 422.
    fn change(body: &Map<String, Value>) -> Parsed<TokenChange>;

    /// The answer to an update.
    fn updated(token: &TokenRecord) -> Response;

    /// The answer to a roll: the successor, shown once, and when the predecessor stops working.
    fn rolled(successor: &Minted, previous: &TokenRecord, previous_expires_at: u64) -> Response;
}

/// `/api/user/api-keys`: the api-keys seed.
enum ApiKeys {}

/// `/api/v1/user/api-tokens`: the api-tokens seed.
enum PersonalTokens {}

impl Family for ApiKeys {
    const KIND: TokenKind = TokenKind::ApiKey;
    const FAMILY: TokenFamily = TokenFamily::ApiKeys;
    const NOT_FOUND: &'static str = "API key not found.";
    const DELETED: &'static str = "API key deleted successfully.";
    const ROLLED_ALREADY: &'static str = "This API key has already been rolled.";
    const PREDECESSOR_WORKS: &'static str = "This API key replaced one that still works: it can be rolled once that key's grace period has ended.";

    fn listing(tokens: &[TokenRecord]) -> Response {
        let list = KeyList {
            api_keys: tokens.iter().map(ApiKeyView::from).collect(),
        };
        Json(StatusCode::OK, list).into_response()
    }

    /// `name`, `enabled`, `meta`.
    fn change(body: &Map<String, Value>) -> Parsed<TokenChange> {
        let (name, (enabled, meta)) = both(
            name_field(body, "name"),
            both(boolean_field(body, "enabled"), meta_field(body, "meta")),
        )?;
        if name.is_none() && enabled.is_none() && meta.is_none() {
            return Err(FieldErrors::single(
                "name",
                "The name field is required when enabled is not present.",
            ));
        }
        Ok(TokenChange {
            name,
            abilities: None,
            enabled,
            meta,
        })
    }

    fn updated(token: &TokenRecord) -> Response {
        let updated = KeyUpdated {
            message: "API key updated successfully.",
            api_key: ApiKeyView::from(token),
        };
        Json(StatusCode::OK, updated).into_response()
    }

    fn rolled(successor: &Minted, previous: &TokenRecord, previous_expires_at: u64) -> Response {
        let rolled = KeyRolled {
            message: "API key rolled successfully.",
            api_key: CreatedApiKey::from(successor),
            previous: Previous {
                id: previous.public_id().to_string(),
                expires_at: MicrosText::from(EpochSeconds(previous_expires_at)),
            },
        };
        Json(StatusCode::CREATED, rolled).into_response()
    }
}

impl Family for PersonalTokens {
    const KIND: TokenKind = TokenKind::Personal;
    const FAMILY: TokenFamily = TokenFamily::Personal;
    const NOT_FOUND: &'static str = "API token not found.";
    const DELETED: &'static str = "API token deleted successfully.";
    const ROLLED_ALREADY: &'static str = "This API token has already been rolled.";
    const PREDECESSOR_WORKS: &'static str = "This API token replaced one that still works: it can be rolled once that token's grace period has ended.";

    fn listing(tokens: &[TokenRecord]) -> Response {
        let list = TokenList {
            data: tokens.iter().map(PersonalTokenView::from).collect(),
        };
        Json(StatusCode::OK, list).into_response()
    }

    /// `name`, `abilities`, `enabled`, `meta`.
    fn change(body: &Map<String, Value>) -> Parsed<TokenChange> {
        let ((name, meta), (abilities, enabled)) = both(
            both(name_field(body, "name"), meta_field(body, "meta")),
            both(
                abilities_field(body, "abilities"),
                boolean_field(body, "enabled"),
            ),
        )?;
        if name.is_none() && abilities.is_none() && enabled.is_none() && meta.is_none() {
            return Err(FieldErrors::single(
                "name",
                "The name field is required when none of abilities / enabled are present.",
            ));
        }
        Ok(TokenChange {
            name,
            abilities,
            enabled,
            meta,
        })
    }

    fn updated(token: &TokenRecord) -> Response {
        let updated = TokenUpdated {
            data: PersonalTokenView::from(token),
        };
        Json(StatusCode::OK, updated).into_response()
    }

    fn rolled(successor: &Minted, previous: &TokenRecord, previous_expires_at: u64) -> Response {
        let rolled = TokenRolled {
            data: CreatedPersonalToken::from(successor),
            previous: Previous {
                id: previous.public_id().to_string(),
                expires_at: SecondsText::from(EpochSeconds(previous_expires_at)),
            },
        };
        Json(StatusCode::CREATED, rolled).into_response()
    }
}

/// The function's router over `service`.
pub fn router(service: Service) -> Router {
    routes().into_router(service)
}

/// An API key as listed (never its secret).
#[derive(Serialize)]
struct ApiKeyView<'a> {
    id: String,
    name: &'a str,
    created_at: MicrosText,
    last_used_at: Option<MicrosText>,
    expires_at: Option<MicrosText>,
    enabled: bool,
    /// `true` for a key brought over from another system; absent otherwise, so the seed's
    /// shape of every other key is unchanged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    imported: bool,
}

impl<'a> From<&'a TokenRecord> for ApiKeyView<'a> {
    fn from(key: &'a TokenRecord) -> Self {
        ApiKeyView {
            id: key.public_id().to_string(),
            name: &key.name,
            created_at: MicrosText(EpochMs(key.created_at_ms)),
            last_used_at: key.last_used_at_ms.map(|at| MicrosText(EpochMs(at))),
            expires_at: key.expires_at.map(|at| MicrosText::from(EpochSeconds(at))),
            enabled: key.enabled,
            imported: key.imported,
        }
    }
}

/// A personal access token as listed (never its secret).
#[derive(Serialize)]
struct PersonalTokenView<'a> {
    id: String,
    name: &'a str,
    abilities: &'a Abilities,
    created_at: SecondsText,
    last_used_at: Option<SecondsText>,
    expires_at: Option<SecondsText>,
    enabled: bool,
}

impl<'a> From<&'a TokenRecord> for PersonalTokenView<'a> {
    fn from(token: &'a TokenRecord) -> Self {
        PersonalTokenView {
            id: token.public_id().to_string(),
            name: &token.name,
            abilities: &token.abilities,
            created_at: SecondsText(EpochMs(token.created_at_ms)),
            last_used_at: token.last_used_at_ms.map(|at| SecondsText(EpochMs(at))),
            expires_at: token
                .expires_at
                .map(|at| SecondsText::from(EpochSeconds(at))),
            enabled: token.enabled,
        }
    }
}

/// A new API key with its secret, shown this once.
#[derive(Serialize)]
struct CreatedApiKey<'a> {
    id: String,
    name: &'a str,
    token: &'a str,
    created_at: MicrosText,
    expires_at: Option<MicrosText>,
}

impl<'a> From<&'a Minted> for CreatedApiKey<'a> {
    fn from(minted: &'a Minted) -> Self {
        CreatedApiKey {
            id: minted.record.public_id().to_string(),
            name: &minted.record.name,
            token: minted.secret.expose(),
            created_at: MicrosText(EpochMs(minted.record.created_at_ms)),
            expires_at: minted
                .record
                .expires_at
                .map(|at| MicrosText::from(EpochSeconds(at))),
        }
    }
}

/// A new personal access token with its secret, shown this once.
#[derive(Serialize)]
struct CreatedPersonalToken<'a> {
    id: String,
    name: &'a str,
    abilities: &'a Abilities,
    token: &'a str,
    created_at: SecondsText,
    expires_at: Option<SecondsText>,
}

impl<'a> From<&'a Minted> for CreatedPersonalToken<'a> {
    fn from(minted: &'a Minted) -> Self {
        CreatedPersonalToken {
            id: minted.record.public_id().to_string(),
            name: &minted.record.name,
            abilities: &minted.record.abilities,
            token: minted.secret.expose(),
            created_at: SecondsText(EpochMs(minted.record.created_at_ms)),
            expires_at: minted
                .record
                .expires_at
                .map(|at| SecondsText::from(EpochSeconds(at))),
        }
    }
}

#[derive(Serialize)]
struct KeyCreated<'a> {
    message: &'static str,
    api_key: CreatedApiKey<'a>,
}

#[derive(Serialize)]
struct TokenCreated<'a> {
    data: CreatedPersonalToken<'a>,
}

/// The rolled token: when it stops working.
#[derive(Serialize)]
struct Previous<T> {
    id: String,
    expires_at: T,
}

#[derive(Serialize)]
struct KeyRolled<'a> {
    message: &'static str,
    api_key: CreatedApiKey<'a>,
    previous: Previous<MicrosText>,
}

#[derive(Serialize)]
struct TokenRolled<'a> {
    data: CreatedPersonalToken<'a>,
    previous: Previous<SecondsText>,
}

#[derive(Serialize)]
struct KeyUpdated<'a> {
    message: &'static str,
    api_key: ApiKeyView<'a>,
}

#[derive(Serialize)]
struct TokenUpdated<'a> {
    data: PersonalTokenView<'a>,
}

#[derive(Serialize)]
struct KeyList<'a> {
    api_keys: Vec<ApiKeyView<'a>>,
}

#[derive(Serialize)]
struct TokenList<'a> {
    data: Vec<PersonalTokenView<'a>>,
}

#[derive(Serialize)]
struct Deleted {
    message: &'static str,
}

async fn create_key(
    State(service): State<web::State>,
    caller: Caller,
    body: Fields<Laravel>,
) -> Answer {
    let (name, days) = both(
        required("name", name_field(&body, "name")),
        integer_field(&body, "expires_in_days", 1, MAX_LIFETIME_DAYS),
    )
    .map_err(ApiError::from)?;
    let expires_at = days.map(|days| caller.now.seconds().plus_days(days).0);
    let minted = create(&service, &caller, TokenKind::ApiKey, name, None, expires_at).await?;
    let created = KeyCreated {
        message: "API key created successfully.",
        api_key: CreatedApiKey::from(&minted),
    };
    Ok(Json(StatusCode::CREATED, created).into_response())
}

async fn create_token(
    State(service): State<web::State>,
    caller: Caller,
    body: Fields<Laravel>,
) -> Answer {
    let (name, (abilities, expires_at)) = both(
        required("name", name_field(&body, "name")),
        both(
            abilities_field(&body, "abilities"),
            future_date_field(
                &body,
                "expires_at",
                caller.now.seconds().0,
                MAX_LIFETIME_DAYS * 86_400,
            ),
        ),
    )
    .map_err(ApiError::from)?;
    let minted = create(
        &service,
        &caller,
        TokenKind::Personal,
        name,
        abilities,
        expires_at,
    )
    .await?;
    let created = TokenCreated {
        data: CreatedPersonalToken::from(&minted),
    };
    Ok(Json(StatusCode::CREATED, created).into_response())
}

/// Mints an API key or a personal access token for the caller. Abilities default to the
/// caller's own and may never exceed them; nor may the expiry exceed the caller's.
async fn create(
    service: &Service,
    caller: &Caller,
    kind: TokenKind,
    name: TokenName,
    abilities: Option<Abilities>,
    expires_at: Option<u64>,
) -> Result<Minted, ApiError> {
    caller.require_unmetered()?;
    let abilities = abilities.unwrap_or_else(|| caller.abilities.clone());
    caller.require_abilities(&abilities)?;
    let request = MintRequest::by(caller, caller.change(), kind, name, abilities, expires_at)?;
    service
        .mint_answering(caller.owner(), request, caller.now, |refusal| match refusal {
            Refusal::UserNotFound | Refusal::UserBlocked => Some(ApiError::Unauthenticated),
            Refusal::TokenLimitReached { max } => Some(ApiError::Validation(FieldErrors::single(
                "name",
                format!(
                    "You already hold {max} API keys and tokens, the most allowed. Delete one you no longer use before creating another."
                ),
            ))),
            _ => None,
        })
        .await
}

/// The caller's live tokens of the family that it may manage (all of them for a `*` token).
async fn list<F: Family>(State(service): State<web::State>, caller: Caller) -> Answer {
    let mut tokens = service
        .store
        .list_tokens(caller.user_id, F::FAMILY, caller.now)
        .await?;
    tokens.retain(|token| caller.may_manage(&token.abilities));
    Ok(F::listing(&tokens))
}

/// Updates one of the caller's own live tokens: renames it, disables or enables it, narrows its
/// abilities. Another user's id, an unknown one, or one with abilities beyond the caller's is
/// 404 (before the body is looked at); widening abilities is 403.
async fn update<F: Family>(
    State(service): State<web::State>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
    body: Fields<Laravel>,
) -> Answer {
    if LIMIT_FIELDS.iter().any(|field| body.contains_key(*field)) {
        return Err(ApiError::LimitsNotYours.into());
    }
    let change = F::change(&body);
    // Written only while the abilities are still the ones read: a concurrent update is read
    // again, and the checks run on what it left.
    for _ in 0..3 {
        let record = own_live_token::<F>(&service, &caller, id).await?;
        let change = change.clone().map_err(ApiError::from)?;
        if let Some(abilities) = &change.abilities {
            if !record.abilities.covers(abilities) {
                return Err(ApiError::AbilitiesWidened.into());
            }
        }
        let updated = service
            .store
            .update_token(&record, &change, &caller.change(), caller.now)
            .await?;
        if let Some(updated) = updated {
            return Ok(F::updated(&updated));
        }
    }
    Err(ApiError::unavailable("a token update kept losing races to other updates").into())
}

/// Rolls one of the caller's own live tokens: a successor with the same name, abilities and
/// expiry (a new secret, shown once) takes its place and its cap slot, and the old one works
/// for `grace_seconds` more (0 to a week; default 0, at once). A token is rolled once (409).
async fn roll<F: Family>(
    State(service): State<web::State>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
    body: Fields<Laravel>,
) -> Answer {
    let grace = integer_field(&body, "grace_seconds", 0, MAX_GRACE_SECONDS);
    let record = own_token::<F>(&service, &caller, id)
        .await?
        .filter(|token| token.revoked_at_ms.is_none())
        .ok_or(ApiError::NotFound(F::NOT_FOUND))?;
    // Rolled is rolled, also once a grace period of 0 has ended it.
    if record.rolled_to.is_some() {
        return Err(ApiError::Conflict(F::ROLLED_ALREADY).into());
    }
    if record.state(caller.now) != TokenState::Live {
        return Err(ApiError::NotFound(F::NOT_FOUND).into());
    }
    let grace = grace.map_err(ApiError::from)?.unwrap_or(0);
    let request = MintRequest::by(
        &caller,
        caller.change(),
        F::KIND,
        TokenName::from_stored(record.name.clone()),
        record.abilities.clone(),
        record.expires_at,
    )?;
    let grace_end = caller.now.seconds().plus(grace);
    let rolled = shared::mint::roll(
        service.store.as_ref(),
        &service.config.token_format,
        caller.owner(),
        &record,
        request,
        grace_end,
        caller.now,
    )
    .await
    .map_err(|e| {
        ApiError::from_store(e, |refusal| match refusal {
            Refusal::UserNotFound | Refusal::UserBlocked => Some(ApiError::Unauthenticated),
            _ => None,
        })
    })?;
    match rolled {
        Roll::Rolled {
            minted,
            previous_expires_at,
        } => Ok(F::rolled(&minted, &record, previous_expires_at)),
        Roll::AlreadyRolled => Err(ApiError::Conflict(F::ROLLED_ALREADY).into()),
        Roll::PredecessorWorks => Err(ApiError::Conflict(F::PREDECESSOR_WORKS).into()),
        Roll::Gone => Err(ApiError::NotFound(F::NOT_FOUND).into()),
    }
}

/// The caller's own live token `id` of the family, if the caller may manage it; else the
/// family's 404 (another user's id, an unknown one, one with abilities beyond the caller's).
async fn own_live_token<F: Family>(
    service: &Service,
    caller: &Caller,
    id: Option<PublicTokenId>,
) -> Result<TokenRecord, ApiError> {
    let id = id
        .filter(|id| id.user_id == caller.user_id)
        .ok_or(ApiError::NotFound(F::NOT_FOUND))?;
    service
        .store
        .get_token(caller.user_id, F::FAMILY, id.token_id)
        .await?
        .filter(|token| token.state(caller.now) == TokenState::Live)
        .filter(|token| caller.may_manage(&token.abilities))
        .ok_or(ApiError::NotFound(F::NOT_FOUND))
}

/// The caller's own token `id` of the family as stored, live or not (its retired copy once
/// revoked or released), if the caller may manage it; the family's 404 for another user's id.
async fn own_token<F: Family>(
    service: &Service,
    caller: &Caller,
    id: Option<PublicTokenId>,
) -> Result<Option<TokenRecord>, ApiError> {
    let id = id
        .filter(|id| id.user_id == caller.user_id)
        .ok_or(ApiError::NotFound(F::NOT_FOUND))?;
    let address = TokenAddress {
        user_id: caller.user_id,
        family: F::FAMILY,
        id: id.token_id,
    };
    Ok(service
        .store
        .find_tokens(&[address], &[])
        .await?
        .tokens
        .remove(&address)
        .filter(|token| caller.may_manage(&token.abilities)))
}

/// Revokes one of the caller's own tokens; another user's id, an unknown one, or one with
/// abilities beyond the caller's is 404.
async fn delete<F: Family>(
    State(service): State<web::State>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
) -> Answer {
    let id = id
        .filter(|id| id.user_id == caller.user_id)
        .ok_or(ApiError::NotFound(F::NOT_FOUND))?;
    let revoked = service
        .store
        .revoke_token_if(
            TokenAddress {
                user_id: caller.user_id,
                family: F::FAMILY,
                id: id.token_id,
            },
            &Revocation::Deleted,
            &caller.change(),
            caller.now,
            &|token| caller.may_manage(&token.abilities),
        )
        .await?;
    if !revoked {
        return Err(ApiError::NotFound(F::NOT_FOUND).into());
    }
    let deleted = Deleted {
        message: F::DELETED,
    };
    Ok(Json(StatusCode::OK, deleted).into_response())
}
