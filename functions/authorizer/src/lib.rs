//! Makes the tokens usable on a platform's own APIs:
//!
//! * an API Gateway REQUEST Lambda authorizer: one strongly consistent GetItem per token, an
//!   Allow policy for the calling method with the caller in the context, Deny for anything
//!   invalid, expired, revoked or blocked;
//! * `POST /api/v1/tokens/verify`: what a token is and whether it works;
//! * `GET /api/user/me`: the example protected route, answering from the authorizer's context.

use std::collections::HashMap;

use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};

use shared::auth::{verify, Principal};
use shared::domain::Role;
use shared::error::{error_response, json_response, ApiError, ErrorStyle, FieldErrors};
use shared::http::{
    bearer_token, header, json_object, path_parameter, route_request, timestamp_seconds, Route,
};
use shared::service::Service;
use shared::store::now_ms;
use shared::validate::present;

/// What an HTTP route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Verify,
    Me,
}

/// The HTTP routes this function serves (besides authorizer events).
pub const ROUTES: [Route<Action>; 2] = [
    Route {
        method: "POST",
        pattern: "/api/v1/tokens/verify",
        action: Action::Verify,
    },
    Route {
        method: "GET",
        pattern: "/api/user/me",
        action: Action::Me,
    },
];

/// Why an authorizer event got no policy: API Gateway answers its AUTHORIZER_FAILURE response
/// (a 503 JSON body in template.yaml) for these.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    #[error("the authorizer event has no methodArn")]
    NoMethodArn,
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

/// Every event the function receives: authorizer events get a policy, HTTP events a response.
pub async fn handle_event(service: &Service, event: Value) -> Result<Value, AuthorizerError> {
    if event.get("methodArn").is_some() {
        return authorize(service, &event).await;
    }
    let response = match lambda_http::request::from_str(&event.to_string()) {
        Ok(request) => handle(service, request).await,
        Err(_) => error_response(
            ErrorStyle::Laravel,
            &ApiError::BadRequest(
                "The event is neither an API Gateway request nor an authorizer request.".into(),
            ),
        ),
    };
    Ok(proxy_response(response))
}

/// An HTTP response as API Gateway's proxy integrations (REST and HTTP APIs) expect it.
fn proxy_response(response: Response<Body>) -> Value {
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
        .collect();
    json!({
        "statusCode": response.status().as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(response.body().as_ref()),
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
/// wildcarded, see [`policy_resource`]), with the caller in the context; Deny for any token that
/// does not authenticate.
pub async fn authorize(service: &Service, event: &Value) -> Result<Value, AuthorizerError> {
    let method_arn = event
        .get("methodArn")
        .and_then(Value::as_str)
        .ok_or(AuthorizerError::NoMethodArn)?;
    let resource = policy_resource(method_arn, event.get("resource").and_then(Value::as_str));
    let token = event_token(event);
    match service.authenticate(token.as_deref(), now_ms()).await {
        Ok(caller) => Ok(policy(
            &caller.user_id.to_string(),
            "Allow",
            &resource,
            caller_context(&caller),
        )),
        Err(ApiError::Unauthenticated) => Ok(policy("anonymous", "Deny", &resource, json!({}))),
        Err(_) => Err(AuthorizerError::Unavailable),
    }
}

/// What the authorizer hands the protected integration (strings and numbers only, as API Gateway
/// requires).
fn caller_context(caller: &Principal) -> Value {
    json!({
        "user_id": caller.user_id.0,
        "platform_id": caller.platform_id.0,
        "token_id": format!("{}-{}", caller.user_id, caller.token_id),
        "kind": caller.kind.as_str(),
        "role": caller.role.as_str(),
        "abilities": caller.abilities.as_slice().join(","),
    })
}

/// The HTTP routes; always a response, errors in Laravel's `{message[, errors]}` shape.
pub async fn handle(service: &Service, request: Request) -> Response<Body> {
    dispatch(service, &request)
        .await
        .unwrap_or_else(|e| error_response(ErrorStyle::Laravel, &e))
}

async fn dispatch(service: &Service, request: &Request) -> Result<Response<Body>, ApiError> {
    let (action, _) = route_request(&ROUTES, request)?;
    match action {
        Action::Verify => verify_route(service, request).await,
        Action::Me => me(service, request).await,
    }
}

/// `POST /api/v1/tokens/verify {"token": ...}`: for an admin of the token's platform, or for the
/// token itself. Another platform's token answers exactly like an unknown one.
async fn verify_route(service: &Service, request: &Request) -> Result<Response<Body>, ApiError> {
    let now = now_ms();
    let caller = service
        .authenticate(bearer_token(request.headers()), now)
        .await?;
    let body = json_object(request)?;
    let token = match present(&body, "token") {
        Some(Value::String(token)) => token.trim().to_string(),
        Some(_) => {
            return Err(ApiError::Validation(FieldErrors::single(
                "token",
                "The token field must be a string.",
            )))
        }
        None => {
            return Err(ApiError::Validation(FieldErrors::single(
                "token",
                "The token field is required.",
            )))
        }
    };
    let verification = verify(service.store.as_ref(), &token, now)
        .await
        .map_err(ApiError::from)?;
    let is_itself = verification
        .record
        .as_ref()
        .is_some_and(|r| r.user_id == caller.user_id && r.id == caller.token_id);
    let is_admin = caller.role == Role::Admin && caller.abilities.is_full();
    if !is_itself && !is_admin {
        return Err(ApiError::NotAdministrator);
    }
    let visible = verification
        .record
        .filter(|record| record.platform_id == caller.platform_id);
    let (code, token) = match visible {
        None => ("NOT_FOUND", Value::Null),
        Some(record) => (
            verification.code.as_str(),
            json!({
                "id": record.public_id().to_string(),
                "user_id": record.user_id,
                "kind": record.kind.as_str(),
                "name": record.name,
                "abilities": record.abilities,
                "expires_at": record.expires_at.map(|s| timestamp_seconds(s * 1000)),
                "last_used_at": record.last_used_at_ms.map(timestamp_seconds),
            }),
        ),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"valid": code == "VALID", "code": code, "token": token}),
    ))
}

/// The authorizer's context of a request (REST APIs put it in `requestContext.authorizer`,
/// HTTP APIs under `requestContext.authorizer.lambda`).
fn authorizer_context(request: &Request) -> Option<HashMap<String, Value>> {
    let fields = match request.request_context_ref()? {
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

/// `GET /api/user/me`: the caller as the authorizer described it. Without an authorizer in front
/// (the local server, a direct invocation), it authenticates the token itself.
async fn me(service: &Service, request: &Request) -> Result<Response<Body>, ApiError> {
    let context = match authorizer_context(request) {
        Some(context) => context,
        None => {
            let caller = service
                .authenticate(token_header(request.headers()), now_ms())
                .await?;
            serde_json::from_value(caller_context(&caller)).unwrap_or_default()
        }
    };
    let number = |key: &str| context_text(&context, key).parse::<u64>().ok();
    let (Some(user_id), Some(platform_id)) = (number("user_id"), number("platform_id")) else {
        return Err(ApiError::Unauthenticated);
    };
    let abilities: Vec<String> = context_text(&context, "abilities")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "user": {"id": user_id, "platform_id": platform_id, "role": context_text(&context, "role")},
            "token": {
                "id": context_text(&context, "token_id"),
                "kind": context_text(&context, "kind"),
                "abilities": abilities,
            },
        }),
    ))
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
