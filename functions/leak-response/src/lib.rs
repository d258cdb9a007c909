//! What the service does about tokens that got out:
//!
//! * `POST /api/v1/secret-scanning/verify`, the partner endpoint of GitHub's secret scanning:
//!   a signed report of strings that look like this service's tokens; each is labelled a true or
//!   false positive, and every live one is revoked at once (reason `leaked`, with where it was
//!   found);
//! * `POST /api/v1/tokens/revoke`: whoever holds a token may revoke it, and the answer says
//!   nothing about whether it existed.
//!
//! A function of its own: it revokes tokens and rotates permanent ones (so it holds write rights
//! and the permanent-token key, which the authorizer, on every request's path, does not).

pub mod signature;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Serialize;
use serde_json::Value;

use shared::audit::Change;
use shared::domain::UserId;
use shared::error::ApiError;
use shared::http::header;
use shared::service::Service;
use shared::store::{
    descendants, now_ms, Found, Leak, PermanentGeneration, Revocation, TokenAddress, TokenRecord,
    TokenState,
};
use shared::token::{
    hash_token, hex, ParsedToken, PermanentKey, PublicTokenId, TokenFormat, TokenKind,
};
use shared::validate::{required, string_field};
use shared::web::{self, Failure, Fields, Json, Laravel, RawBody, RequestSource, Routes};

use signature::{TrustedKeys, KEY_IDENTIFIER_HEADER, SIGNATURE_HEADER};

type Answer = Result<Response, Failure<Laravel>>;

/// The largest report body taken (a full report of 1000 tokens is about 150 KB).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

/// The most tokens one report may name.
pub const MAX_REPORTED_TOKENS: usize = 1000;

/// The routes this function serves.
pub fn routes() -> Routes<Laravel> {
    Routes::default()
        .post("/api/v1/secret-scanning/verify", report)
        .post("/api/v1/tokens/revoke", self_revoke)
}

/// The function's router over `service`, with the trusted keys of its configuration (a
/// document [`check_config`] refuses is no key at all: every report is then refused).
pub fn router(service: Service) -> Router {
    let keys = TrustedKeys::parse(service.config.secret_scanning_keys.as_deref()).unwrap_or_else(
        |error| {
            tracing::error!(error = %error, "no secret-scanning key is trusted");
            TrustedKeys::default()
        },
    );
    routes()
        .into_router(service)
        .layer(Extension(Arc::new(keys)))
}

/// Stops a cold start without the permanent-token key or with keys that do not parse.
pub fn check_config(service: &Service) -> Result<(), lambda_http::Error> {
    service.config.permanent_key()?;
    let keys = TrustedKeys::parse(service.config.secret_scanning_keys.as_deref())?;
    if keys.is_empty() {
        tracing::warn!(
            "SECRET_SCANNING_KEYS names no key: every secret-scanning report is refused"
        );
    }
    Ok(())
}

/// One reported string.
struct Reported {
    token: String,
    kind: String,
    leak: Leak,
}

/// One entry of the answer.
#[derive(Serialize)]
struct Labelled<'a> {
    token_hash: String,
    token_type: &'a str,
    label: &'static str,
}

/// `POST /api/v1/secret-scanning/verify`: the signature first (nothing is read before it
/// verifies), then the report; every live token of this service in it is revoked.
async fn report(
    State(service): State<web::State>,
    Extension(keys): Extension<Arc<TrustedKeys>>,
    RequestSource(source): RequestSource,
    headers: HeaderMap,
    RawBody(body, _): RawBody<Laravel, MAX_REPORT_BYTES>,
) -> Answer {
    let signed = keys.verify(
        header(&headers, KEY_IDENTIFIER_HEADER),
        header(&headers, SIGNATURE_HEADER),
        &body,
    );
    if !signed {
        return Err(ApiError::InvalidSignature.into());
    }
    let reported = parse_report(&body)?;
    let now = now_ms();
    let key = service.config.permanent_key().map_err(|error| {
        ApiError::unavailable(format!(
            "the leak-response function has no permanent-token key: {error}"
        ))
    })?;
    let parsed: Vec<Option<ParsedToken>> = reported
        .iter()
        .map(|r| service.config.token_format.parse(&r.token).ok())
        .collect();
    let addresses: Vec<TokenAddress> = parsed.iter().flatten().map(TokenAddress::from).collect();
    let permanent_owners: Vec<UserId> = parsed
        .iter()
        .flatten()
        .filter(|p| p.kind == TokenKind::Permanent)
        .map(|p| p.user_id)
        .collect();
    let found = service
        .store
        .find_tokens(&addresses, &permanent_owners)
        .await?;

    let mut labels = Vec::with_capacity(reported.len());
    let mut leaked: Vec<(TokenRecord, Leak)> = Vec::new();
    let mut seen = HashSet::new();
    let mut rotating = HashSet::new();
    for (entry, parsed) in reported.iter().zip(&parsed) {
        let ours = parsed
            .as_ref()
            .filter(|p| issued_here(p, &found, key, &service.config.token_format));
        labels.push(Labelled {
            token_hash: hex(&hash_token(&entry.token).0),
            token_type: &entry.kind,
            label: if ours.is_some() {
                "true_positive"
            } else {
                "false_positive"
            },
        });
        let Some(parsed) = ours else { continue };
        let address = TokenAddress::from(parsed);
        if let Some(record) = found.tokens.get(&address) {
            if seen.insert(address) {
                leaked.push((record.clone(), entry.leak.clone()));
            }
        }
        if is_current_permanent(parsed, &found) {
            rotating.insert(parsed.user_id);
        }
    }
    // Whoever found the key may have rolled it or minted with it first (even rolled it with no
    // grace, so that it no longer works itself): every live token that descends from a
    // reported one goes with it.
    let roots: Vec<TokenRecord> = leaked.iter().map(|(record, _)| record.clone()).collect();
    let leaks: HashMap<PublicTokenId, Leak> = leaked
        .iter()
        .map(|(record, leak)| (record.public_id(), leak.clone()))
        .collect();
    let descending = descendants(service.store.as_ref(), &roots).await?;
    let revoking: Vec<(TokenRecord, Revocation)> = leaked
        .into_iter()
        .chain(
            descending
                .into_iter()
                .map(|(record, root)| (record, leaks[&root].descending_from(root))),
        )
        .filter(|(record, _)| record.state(now) == TokenState::Live)
        .map(|(record, leak)| (record, Revocation::Leaked(leak)))
        .collect();
    let change = Change::secret_scanning(source);
    let revoked = service.store.revoke_tokens(&revoking, &change, now).await?;
    for user in &rotating {
        // The leaked key's record is revoked: the user moves on to the next generation now.
        if let Some(user) = found.users.get(user).filter(|u| u.is_active()) {
            service
                .permanent_token(key, user, PermanentGeneration::Working, &change, now)
                .await
                // Its profile was just read: a refusal here is no answer of the report's.
                .map_err(|e| ApiError::from_store(e, |_| None))?;
        }
    }
    let true_positives = labels.iter().filter(|l| l.label == "true_positive").count();
    tracing::info!(
        reported = reported.len(),
        true_positives,
        revoked,
        permanent_rotated = rotating.len(),
        "secret-scanning report"
    );
    Ok(Json(StatusCode::OK, labels).into_response())
}

/// Whether `parsed` is a token this service issued: its record (live or not) holds its hash,
/// or it is a permanent key the server key derives, under an accepted prefix, for a generation
/// its owner has had.
fn issued_here(
    parsed: &ParsedToken,
    found: &Found,
    key: &PermanentKey,
    format: &TokenFormat,
) -> bool {
    let recorded = found
        .tokens
        .get(&TokenAddress::from(parsed))
        .is_some_and(|record| record.kind == parsed.kind && record.hash.matches(&parsed.hash));
    recorded
        || permanent_generation_had(parsed, found).is_some_and(|generation| {
            format.accepted().iter().any(|prefix| {
                key.derive(prefix, parsed.user_id, generation)
                    .parsed
                    .hash
                    .matches(&parsed.hash)
            })
        })
}

/// The generation of a permanent key whose owner has had it issued (the current one once
/// issued, or any earlier one).
fn permanent_generation_had(parsed: &ParsedToken, found: &Found) -> Option<u32> {
    if parsed.kind != TokenKind::Permanent {
        return None;
    }
    let generation = parsed.token_id.permanent_generation()?;
    let owner = found.users.get(&parsed.user_id)?;
    let had = generation < owner.permanent_generation
        || (generation == owner.permanent_generation && owner.permanent_issued);
    had.then_some(generation)
}

/// Whether `parsed` (issued here) is its owner's current permanent key.
fn is_current_permanent(parsed: &ParsedToken, found: &Found) -> bool {
    permanent_generation_had(parsed, found).is_some_and(|generation| {
        found
            .users
            .get(&parsed.user_id)
            .is_some_and(|owner| owner.permanent_generation == generation)
    })
}

/// The report: a JSON array of 1 to [`MAX_REPORTED_TOKENS`] objects with a string `token` and
/// `type`, and `url` and `source` strings (or null, or absent).
fn parse_report(body: &[u8]) -> Result<Vec<Reported>, ApiError> {
    let shape = || {
        ApiError::Unprocessable(format!(
            "The body must be a JSON array of 1 to {MAX_REPORTED_TOKENS} objects {{\"token\", \"type\", \"url\", \"source\"}}."
        ))
    };
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(body) else {
        return Err(shape());
    };
    if entries.is_empty() || entries.len() > MAX_REPORTED_TOKENS {
        return Err(shape());
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let field = |name: &str, needed: bool| match entry.get(name) {
                Some(Value::String(text)) => Ok(Some(text.as_str())),
                None | Some(Value::Null) if !needed => Ok(None),
                _ => Err(ApiError::Unprocessable(format!(
                    "Entry {index} of the report: {name} must be a string."
                ))),
            };
            if !entry.is_object() {
                return Err(ApiError::Unprocessable(format!(
                    "Entry {index} of the report must be an object."
                )));
            }
            Ok(Reported {
                token: field("token", true)?.unwrap_or_default().to_string(),
                kind: field("type", true)?.unwrap_or_default().to_string(),
                leak: Leak::new(field("url", false)?, field("source", false)?),
            })
        })
        .collect()
}

/// `POST /api/v1/tokens/revoke {"token"}`: revokes the token if it is a live one of this
/// service (an imported key too). The same 202 whatever the token, so the route tells nothing about tokens.
async fn self_revoke(
    State(service): State<web::State>,
    RequestSource(source): RequestSource,
    body: Fields<Laravel>,
) -> Answer {
    let presented = required("token", string_field(&body, "token"))?;
    if let Some(parsed) = service.resolve(&presented).await? {
        let (kind, hash) = (parsed.kind, parsed.hash);
        let holds_it =
            move |record: &TokenRecord| record.kind == kind && record.hash.matches(&hash);
        let holder = Change::token_holder(
            PublicTokenId {
                user_id: parsed.user_id,
                token_id: parsed.token_id,
            },
            source,
        );
        service
            .store
            .revoke_token_if(
                TokenAddress::from(&parsed),
                &Revocation::SelfRevoked,
                &holder,
                now_ms(),
                &holds_it,
            )
            .await?;
    }
    Ok(Json(
        StatusCode::ACCEPTED,
        Accepted {
            message: "Accepted.",
        },
    )
    .into_response())
}

#[derive(Serialize)]
struct Accepted {
    message: &'static str,
}
