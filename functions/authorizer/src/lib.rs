//! Makes the tokens usable on a platform's own APIs:
//!
//! * an API Gateway REQUEST Lambda authorizer: one strongly consistent read of the token and its
//!   owner (BatchGetItem), an Allow policy for the calling method with the caller in the
//!   context, "Unauthorized" (API Gateway's 401) for anything invalid, expired, revoked or
//!   blocked; a metered token is charged one unit (one conditional write, or a two-item
//!   transaction when both it and its owner have limits), and over a limit gets a Deny whose
//!   context carries the code (the template's 429);
//! * `POST /api/v1/tokens/verify`: what a token is and whether it works;
//! * `GET /api/user/me`: the example protected route, answering from the authorizer's context.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lambda_http::request::RequestContext;
use serde::Serialize;
use serde_json::{json, Map, Value};

use shared::auth::{Principal, Verification, VerificationCode};
use shared::clock::{EpochMs, EpochSeconds, SecondsText};
use shared::domain::{Abilities, ExternalId, Meta, Permission, UserId};
use shared::error::ApiError;
use shared::error::FieldErrors;
use shared::http::{bearer_token, header, path_parameter, query_parameter};
use shared::limits::{Remaining, Usage, Window};
use shared::service::Service;
use shared::store::{now_ms, TokenRecord};
use shared::store::{EventCursor, EventScope};
use shared::validate::{boolean_field, both, integer_field, required, string_field};
use shared::web::{
    self, permission, AnyCredential, Caller, Failure, Fields, Json, Laravel, Platform, Routes,
};

type Answer = Result<Response, Failure<Laravel>>;

/// The HTTP routes this function serves (besides authorizer events).
pub fn routes() -> Routes<Laravel> {
    Routes::default()
        .post("/api/v1/tokens/verify", verify_route)
        .get("/api/user/me", me)
        .get("/api/v1/audit-events", audit_events)
}

/// The function's router over `service`.
pub fn router(service: Service) -> Router {
    routes().into_router(service)
}

/// Why an authorizer event got no policy: API Gateway answers its AUTHORIZER_FAILURE response
/// (a 503 JSON body in template.yaml) for these.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    #[error("the authorizer event has no methodArn")]
    NoMethodArn,
    /// The token does not authenticate: API Gateway answers its UNAUTHORIZED response (401)
    /// for exactly this error message.
    #[error("Unauthorized")]
    Unauthorized,
    #[error("the token store is unavailable")]
    Unavailable,
}

impl From<AuthorizerError> for lambda_http::lambda_runtime::Diagnostic {
    fn from(error: AuthorizerError) -> Self {
        lambda_http::lambda_runtime::Diagnostic {
            error_type: "AuthorizerError".into(),
            error_message: error.to_string(),
        }
    }
}

/// Every event the function receives: authorizer events get a policy (from `service`), HTTP
/// events a response (from `router`, over the same service).
pub async fn handle_event(
    service: &Service,
    router: &Router,
    event: Value,
) -> Result<Value, AuthorizerError> {
    if event.get("methodArn").is_some() {
        return authorize(service, &event).await;
    }
    let response = match lambda_http::request::from_str(&event.to_string()) {
        Ok(request) => web::respond(router.clone(), request).await,
        Err(_) => Failure::<Laravel>::new(ApiError::BadRequest(
            "The event is neither an API Gateway request nor an authorizer request.".into(),
        ))
        .into_response(),
    };
    Ok(proxy_response(response).await)
}

/// An HTTP response as API Gateway's proxy integrations (REST and HTTP APIs) expect it.
async fn proxy_response(response: Response) -> Value {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
        .collect();
    json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "isBase64Encoded": false,
    })
}

/// The token of an authorizer event: `Authorization: Bearer`, a bare `Authorization`, or `token`.
fn event_token(event: &Value) -> Option<String> {
    let headers = event.get("headers")?.as_object()?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_str())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let authorization = find("authorization").map(|value| match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value,
    });
    authorization.or_else(|| find("token")).map(str::to_string)
}

fn policy(principal: &str, effect: &str, resource: &str, context: Value) -> Value {
    json!({
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": context,
    })
}

/// The resource a policy covers: the calling method on the route's resource template, each path
/// parameter a wildcard (`.../GET/calls/{id}` -> `.../GET/calls/*`, `{proxy+}` -> `*`).
///
/// API Gateway caches a policy by the identity sources (token, method, resource template), so a
/// cached Allow is reused for `/calls/2` after `/calls/1`: an ARN naming `/calls/1` alone would
/// then deny a valid caller. Without a `resource` in the event, the exact `methodArn`.
fn policy_resource(method_arn: &str, resource: Option<&str>) -> String {
    // arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE/METHOD/path...
    let mut parts = method_arn.splitn(4, '/');
    let (Some(api), Some(stage), Some(method), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), resource)
    else {
        return method_arn.to_string();
    };
    let template: Vec<&str> = resource
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| path_parameter(segment).map_or(segment, |_| "*"))
        .collect();
    format!("{api}/{stage}/{method}/{}", template.join("/"))
}

/// The authorizer: Allow for the calling method on the calling route only (path parameters
/// wildcarded, see `policy_resource`), with the caller in the context, once a metered token
/// is charged its unit; "Unauthorized" for any token that does not authenticate; Deny, with
/// `code` (and `retry_after` seconds when waiting helps) in the context, for a metered token
/// over a limit.
pub async fn authorize(service: &Service, event: &Value) -> Result<Value, AuthorizerError> {
    let method_arn = event
        .get("methodArn")
        .and_then(Value::as_str)
        .ok_or(AuthorizerError::NoMethodArn)?;
    let resource = policy_resource(method_arn, event.get("resource").and_then(Value::as_str));
    let token = event_token(event);
    let (outcome, answer) = match service.admit(token.as_deref(), now_ms()).await {
        Ok((caller, usage)) => (
            "allowed",
            Ok(policy(
                &caller.user_id.to_string(),
                "Allow",
                &resource,
                caller_context(&caller, &usage),
            )),
        ),
        Err(ApiError::Unauthenticated) => ("unauthorized", Err(AuthorizerError::Unauthorized)),
        Err(ApiError::TooManyRequests {
            refusal,
            retry_after,
        }) => {
            let mut context = json!({"code": refusal.code()});
            if let Some(seconds) = retry_after {
                context["retry_after"] = json!(seconds);
            }
            (
                refusal.code(),
                Ok(policy("limited", "Deny", &resource, context)),
            )
        }
        Err(error) => {
            // The authorizer's answer is made here: its fault is logged here, once.
            error.log_fault();
            ("failed", Err(AuthorizerError::Unavailable))
        }
    };
    shared::metrics::authorized(outcome);
    answer
}

/// What the authorizer hands the protected integration (strings and numbers only, as API Gateway
/// requires): the caller, and for a metered token what is left after this unit
/// (`credits_remaining`, `ratelimit_remaining`, the tighter of the token's and its owner's).
fn caller_context(caller: &Principal, usage: &Usage) -> Value {
    let mut context = json!({
        "user_id": caller.user_id.0,
        "platform_id": caller.platform_id.0,
        "token_id": format!("{}-{}", caller.user_id, caller.token_id),
        "kind": caller.kind.as_str(),
        "role": caller.role.as_str(),
        "abilities": caller.abilities.as_slice().join(","),
    });
    if let Some(credits) = usage.credits {
        context["credits_remaining"] = json!(credits.remaining);
    }
    if let Some(window) = usage.ratelimit {
        context["ratelimit_remaining"] = json!(window.remaining);
    }
    // The owner's id and data in the platform's own system (API Gateway's context holds
    // strings and numbers only: the data as a JSON string).
    if let Some(external) = &caller.identity.external_id {
        context["externalId"] = json!(external.as_str());
    }
    if let Some(meta) = &caller.identity.meta {
        context["meta"] = json!(meta.to_json());
    }
    context
}

/// A token as verify describes it.
#[derive(Serialize)]
struct VerifiedToken<'a> {
    id: String,
    user_id: UserId,
    kind: &'static str,
    name: &'a str,
    abilities: &'a Abilities,
    expires_at: Option<SecondsText>,
    last_used_at: Option<SecondsText>,
    revoked_reason: Option<&'static str>,
    /// The platform's own data on the token.
    meta: Option<&'a Map<String, Value>>,
}

/// The token's owner as verify describes it: who it is in the platform's own system.
#[derive(Serialize)]
struct VerifiedUser<'a> {
    id: UserId,
    external_id: Option<&'a str>,
    meta: Option<&'a Map<String, Value>>,
}

impl<'a> VerifiedToken<'a> {
    fn new(record: &'a TokenRecord, revoked_reason: Option<&'static str>) -> Self {
        VerifiedToken {
            revoked_reason,
            meta: record.meta.as_ref().map(Meta::as_object),
            id: record.public_id().to_string(),
            user_id: record.user_id,
            kind: record.kind.as_str(),
            name: &record.name,
            abilities: &record.abilities,
            expires_at: record
                .expires_at
                .map(|at| SecondsText::from(EpochSeconds(at))),
            last_used_at: record.last_used_at_ms.map(|at| SecondsText(EpochMs(at))),
        }
    }
}

#[derive(Serialize)]
struct Verified<'a> {
    valid: bool,
    code: &'static str,
    token: Option<VerifiedToken<'a>>,
    user: Option<VerifiedUser<'a>>,
    /// The tighter of the token's and its owner's limits; `null` for an unmetered token.
    credits: Option<Remaining>,
    ratelimit: Option<Window>,
}

/// `POST /api/v1/tokens/verify {"token": ..., "consume"?: bool}`: for an admin of the token's
/// platform or one of its service keys with `verify`, or for the token itself. Another platform's token answers exactly like an unknown
/// one. With `consume: true` a valid metered token is charged one unit (as the authorizer
/// charges it); without, its limits are only reported. Over a limit: `valid: false` and
/// `USAGE_EXCEEDED` or `RATE_LIMITED`.
async fn verify_route(
    State(service): State<web::State>,
    caller: Caller<Laravel, AnyCredential>,
    body: Fields<Laravel>,
) -> Answer {
    let (token, consume) = both(
        required("token", string_field(&body, "token")),
        boolean_field(&body, "consume"),
    )?;
    let mut verification = service.verify(&token, caller.now).await?;
    let is_itself = verification
        .record
        .as_ref()
        .is_some_and(|r| r.user_id == caller.user_id && r.id == caller.token_id);
    if !is_itself && !caller.holds(Permission::Verify) {
        return Err(ApiError::NotAdministrator.into());
    }
    let visible_in = |verification: &Verification| {
        verification
            .record
            .as_ref()
            .is_some_and(|record| caller.shares_platform(record))
    };
    let mut charged = None;
    if consume == Some(true)
        && visible_in(&verification)
        && verification.code == VerificationCode::Valid
    {
        match verification
            .charge(service.store.as_ref(), caller.now)
            .await?
        {
            Some(usage) => charged = Some(usage),
            // It stopped being usable meanwhile (revoked, its successor gone, its owner
            // blocked): answered as it stands now, and charged nothing.
            None => verification = service.verify(&token, caller.now).await?,
        }
    }
    let visible = verification
        .record
        .as_ref()
        .filter(|record| caller.shares_platform(*record));
    let code = match visible {
        None => "NOT_FOUND",
        Some(_) => verification.code.as_str(),
    };
    let usage = match (charged, visible) {
        (Some(usage), _) => usage,
        (None, None) => Usage::default(),
        (None, Some(_)) => verification.usage(caller.now),
    };
    let code = match usage.refusal {
        Some(refusal) if code == "VALID" => refusal.code(),
        _ => code,
    };
    let identity = &verification.owner_identity;
    let verified = Verified {
        valid: code == "VALID",
        code,
        token: visible.map(|record| VerifiedToken::new(record, verification.revoked_reason)),
        user: visible.map(|record| VerifiedUser {
            id: record.user_id,
            external_id: identity.external_id.as_ref().map(ExternalId::as_str),
            meta: identity.meta.as_ref().map(Meta::as_object),
        }),
        credits: usage.credits,
        ratelimit: usage.ratelimit,
    };
    Ok(Json(StatusCode::OK, verified).into_response())
}

/// The most events a page holds, and how many without `limit`.
const MAX_EVENTS_PER_PAGE: u64 = 100;
const DEFAULT_EVENTS_PER_PAGE: u64 = 50;

#[derive(Serialize)]
struct EventsPage {
    data: Vec<Value>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/audit-events?user_id=&limit=&cursor=`: a platform admin (or a service key with
/// `audit:read`) reads its platform's
/// audit events (or one user's), newest first, one Query a page. Another platform's user is
/// answered as an unknown one.
async fn audit_events(
    State(service): State<web::State>,
    caller: Platform<Laravel, permission::AuditRead>,
    uri: axum::http::Uri,
) -> Answer {
    let query: serde_json::Map<String, Value> = ["user_id", "limit", "cursor"]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), Value::from(query_parameter(&uri, name)?))))
        .collect();
    let user = integer_field(&query, "user_id", 1, i64::MAX as u64);
    let limit = integer_field(&query, "limit", 1, MAX_EVENTS_PER_PAGE);
    let cursor = match string_field(&query, "cursor") {
        Ok(Some(text)) => EventCursor::parse(&text).map(Some).ok_or_else(|| {
            FieldErrors::single("cursor", "The cursor is not one this route gave out.")
        }),
        Ok(None) => Ok(None),
        Err(errors) => Err(errors),
    };
    let ((user, limit), cursor) = both(both(user, limit), cursor)?;
    let scope = match user {
        Some(id) => {
            let user = service
                .store
                .get_user(UserId(id))
                .await?
                .filter(|user| caller.shares_platform(user))
                .ok_or(ApiError::NotFound("User not found."))?;
            EventScope::User(user.id)
        }
        None => EventScope::Platform(caller.platform_id),
    };
    let limit = limit.unwrap_or(DEFAULT_EVENTS_PER_PAGE) as u32;
    let page = service
        .store
        .list_events(scope, limit, cursor.as_ref())
        .await?;
    let page = EventsPage {
        data: page.events,
        next_cursor: page.next.map(|cursor| cursor.to_string()),
    };
    Ok(Json(StatusCode::OK, page).into_response())
}

/// The authorizer's context of a request (REST APIs put it in `requestContext.authorizer`,
/// HTTP APIs under `requestContext.authorizer.lambda`).
fn authorizer_context(parts: &Parts) -> Option<HashMap<String, Value>> {
    let fields = match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV1(context) => context.authorizer.fields.clone(),
        RequestContext::ApiGatewayV2(context) => context.authorizer.as_ref()?.fields.clone(),
        _ => return None,
    };
    fields.contains_key("user_id").then_some(fields)
}

fn context_text(context: &HashMap<String, Value>, key: &str) -> String {
    match context.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[derive(Serialize)]
struct MeUser {
    id: u64,
    platform_id: u64,
    role: String,
}

#[derive(Serialize)]
struct MeToken {
    id: String,
    kind: String,
    abilities: Vec<String>,
}

#[derive(Serialize)]
struct Me {
    user: MeUser,
    token: MeToken,
}

impl Me {
    /// The caller as an authorizer context describes it; `None` without a user and platform.
    fn from_context(context: &HashMap<String, Value>) -> Option<Me> {
        let number = |key: &str| context_text(context, key).parse::<u64>().ok();
        let abilities = context_text(context, "abilities")
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some(Me {
            user: MeUser {
                id: number("user_id")?,
                platform_id: number("platform_id")?,
                role: context_text(context, "role"),
            },
            token: MeToken {
                id: context_text(context, "token_id"),
                kind: context_text(context, "kind"),
                abilities,
            },
        })
    }
}

/// `GET /api/user/me`: the caller as the authorizer described it. Without an authorizer in front
/// (the local server, a direct invocation), it authenticates the token itself and charges a
/// metered one its unit, as the authorizer does (over a limit: 429 with the code).
async fn me(State(service): State<web::State>, parts: Parts) -> Answer {
    let context = match authorizer_context(&parts) {
        Some(context) => context,
        None => {
            let (caller, usage) = service
                .admit(token_header(&parts.headers), now_ms())
                .await?;
            serde_json::from_value(caller_context(&caller, &usage)).unwrap_or_default()
        }
    };
    let me = Me::from_context(&context).ok_or(ApiError::Unauthenticated)?;
    Ok(Json(StatusCode::OK, me).into_response())
}

fn token_header(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers).or_else(|| header(headers, "token"))
}

#[cfg(test)]
mod tests {
    use super::policy_resource;

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/GET";

    #[test]
    fn path_parameters_become_wildcards_for_that_method_only() {
        assert_eq!(
            policy_resource(&format!("{ARN}/calls/1"), Some("/calls/{id}")),
            format!("{ARN}/calls/*")
        );
        assert_eq!(
            policy_resource(&format!("{ARN}/a/1/b/2"), Some("/a/{x}/b/{y}")),
            format!("{ARN}/a/*/b/*")
        );
        assert_eq!(
            policy_resource(&format!("{ARN}/x/y/z"), Some("/{proxy+}")),
            format!("{ARN}/*")
        );
        assert_eq!(
            policy_resource(&format!("{ARN}/api/user/me"), Some("/api/user/me")),
            format!("{ARN}/api/user/me")
        );
        assert_eq!(
            policy_resource(&format!("{ARN}/api/user/me"), None),
            format!("{ARN}/api/user/me")
        );
        assert_eq!(policy_resource("not-an-arn", Some("/x")), "not-an-arn");
    }
}
