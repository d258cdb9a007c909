//! `POST /api/v1/global/users/gettokenbycustomerid`: a partner (platform admin) mints a new API
//! token for one of its customers, found by 12-digit customer id; optionally expiring. Each
//! customer holds at most `MAX_CUSTOMER_TOKENS_PER_USER` live ones, and
//! `DELETE /api/v1/global/users/tokens/{id}` revokes one by the `id` its creation answered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};

use shared::domain::{Abilities, CustomerId, TokenName};
use shared::error::ApiError;
use shared::mint::MintRequest;
use shared::service::Service;
use shared::store::{Owner, Refusal, Revocation, TokenAddress, TokenRecord};
use shared::token::{TokenFamily, TokenKind};
use shared::web::{self, permission, Coded, Failure, Fields, Json, Platform, Routes, TokenIdParam};

type Caller = Platform<Coded, permission::TokensWrite>;
type Answer = Result<Response, Failure<Coded>>;

/// The routes this function serves.
pub fn routes() -> Routes<Coded> {
    Routes::default()
        .post("/api/v1/global/users/gettokenbycustomerid", create_token)
        .delete("/api/v1/global/users/tokens/{id}", revoke_token)
}

/// The function's router over `service`.
pub fn router(service: Service) -> Router {
    routes().into_router(service)
}

/// Longest lifetime a customer token may be given.
pub const MAX_EXPIRATION_DAYS: u64 = 3650;

/// Name stored for tokens minted without one (the response still says `null`).
const UNNAMED: &str = "customer-api-token";

/// The aliases the seed accepts for the customer id, in order of preference.
const CUSTOMER_ID_FIELDS: [&str; 3] = ["customer_id", "customerid", "customer_salt"];

/// Revokes a live customer token of a user of the caller's platform; any other id (unknown,
/// another platform's, not a customer token, already revoked or expired) is the same 404.
async fn revoke_token(
    State(service): State<web::State>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
) -> Answer {
    let not_found = || {
        coded(
            StatusCode::NOT_FOUND,
            "TOKEN_NOT_FOUND",
            "No live customer API token has this id.",
        )
    };
    let id = id.ok_or_else(not_found)?;
    // Another platform's token is answered as an unknown one.
    let ours = |token: &TokenRecord| caller.shares_platform(token);
    if !service
        .store
        .revoke_token_if(
            TokenAddress {
                user_id: id.user_id,
                family: TokenFamily::Customer,
                id: id.token_id,
            },
            &Revocation::Deleted,
            &caller.change(),
            caller.now,
            &ours,
        )
        .await?
    {
        return Err(not_found().into());
    }
    let revoked = Revoked {
        message: "API token revoked successfully",
        id: id.to_string(),
    };
    Ok(Json(StatusCode::OK, revoked).into_response())
}

#[derive(Serialize)]
struct Revoked {
    message: &'static str,
    id: String,
}

/// A new customer token with its secret, shown this once.
#[derive(Serialize)]
struct Generated<'a> {
    message: &'static str,
    customerid: &'a str,
    customer_api_key: &'a str,
    name: Option<&'a str>,
    expires: Option<u64>,
    id: String,
}

fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Coded {
        status,
        code,
        message: message.into(),
    }
}

fn customer_not_found() -> ApiError {
    coded(
        StatusCode::NOT_FOUND,
        "CUSTOMER_ID_NOT_FOUND",
        "No active user found with the given customer ID.",
    )
}

/// The validated body.
#[derive(Debug, PartialEq, Eq)]
struct CustomerTokenRequest {
    customer_id: CustomerId,
    name: Option<TokenName>,
    expiration_days: Option<u64>,
}

impl CustomerTokenRequest {
    fn parse(body: &Map<String, Value>) -> Result<CustomerTokenRequest, ApiError> {
        let given: Vec<(&str, &Value)> = CUSTOMER_ID_FIELDS
            .iter()
            .filter_map(|field| match body.get(*field) {
                None | Some(Value::Null) => None,
                Some(value) => Some((*field, value)),
            })
            .collect();
        let Some((field, value)) = given.first() else {
            return Err(coded(
                StatusCode::BAD_REQUEST,
                "CUSTOMER_ID_REQUIRED",
                "customer_id is required (also accepted as customerid or customer_salt).",
            ));
        };
        // A string (trimmed) or a whole number; anything else matches no customer id.
        let as_text = |value: &Value| match value {
            Value::String(text) => text.trim().to_string(),
            Value::Number(number) if number.is_u64() => number.to_string(),
            _ => String::new(),
        };
        let customer_id = CustomerId::parse(&as_text(value)).ok_or_else(|| {
            coded(
                StatusCode::BAD_REQUEST,
                "INVALID_CUSTOMER_ID",
                format!("{field} must be a string of exactly 12 digits, such as \"048372910564\"."),
            )
        })?;
        if given
            .iter()
            .any(|(_, other)| as_text(other) != customer_id.as_str())
        {
            return Err(coded(
                StatusCode::BAD_REQUEST,
                "INVALID_CUSTOMER_ID",
                "customer_id, customerid and customer_salt name different customers; send one of them.",
            ));
        }
        let name = match body.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(TokenName::parse(text).map_err(|_| {
                coded(
                    StatusCode::BAD_REQUEST,
                    "INVALID_NAME",
                    "name must be 1 to 255 characters without control characters.",
                )
            })?),
            Some(_) => {
                return Err(coded(
                    StatusCode::BAD_REQUEST,
                    "INVALID_NAME",
                    "name must be a string.",
                ))
            }
        };
        let expiration_days = match body.get("expiration_days") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .filter(|days| (1..=MAX_EXPIRATION_DAYS).contains(days))
                    .ok_or_else(|| {
                        coded(
                            StatusCode::BAD_REQUEST,
                            "INVALID_EXPIRATION_DAYS",
                            format!(
                                "expiration_days must be a whole number from 1 to {MAX_EXPIRATION_DAYS}, or omitted for a token that does not expire."
                            ),
                        )
                    })?,
            ),
        };
        Ok(CustomerTokenRequest {
            customer_id,
            name,
            expiration_days,
        })
    }
}

async fn create_token(
    State(service): State<web::State>,
    caller: Caller,
    body: Fields<Coded>,
) -> Answer {
    caller.require_unmetered()?;
    let store = service.store.as_ref();
    let input = CustomerTokenRequest::parse(&body)?;

    // Unknown, blocked and other platforms' customers are one and the same answer.
    let user = store
        .find_user_by_customer_id(&input.customer_id)
        .await?
        .filter(|user| caller.shares_platform(user) && user.is_active())
        .ok_or_else(customer_not_found)?;
    if !user.has_active_workspace() {
        return Err(coded(
            StatusCode::NOT_FOUND,
            "WORKSPACE_NOT_FOUND",
            "The user does not have an active workspace.",
        )
        .into());
    }

    let expires = input
        .expiration_days
        .map(|days| caller.now.seconds().plus_days(days).0);
    let name = input
        .name
        .clone()
        .unwrap_or_else(|| TokenName::parse(UNNAMED).expect("default name is valid"));
    let mint_request = MintRequest::by(
        &caller,
        caller.change(),
        TokenKind::Customer,
        name,
        Abilities::full(),
        expires,
    )?;
    let minted = service
        .mint_answering(Owner::from(&user), mint_request, caller.now, |refusal| match refusal {
            Refusal::UserNotFound | Refusal::UserBlocked => Some(customer_not_found()),
            Refusal::TokenLimitReached { max } => Some(coded(
                StatusCode::UNPROCESSABLE_ENTITY,
                "TOO_MANY_TOKENS",
                format!(
                    "This customer already holds {max} live API tokens, the most allowed. Revoke one (DELETE /api/v1/global/users/tokens/{{id}}) before generating another."
                ),
            )),
            _ => None,
        })
        .await?;
    let generated = Generated {
        message: "API token generated successfully",
        customerid: input.customer_id.as_str(),
        customer_api_key: minted.secret.expose(),
        name: input.name.as_ref().map(TokenName::as_str),
        expires: minted.record.expires_at,
        id: minted.record.public_id().to_string(),
    };
    Ok(Json(StatusCode::OK, generated).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<CustomerTokenRequest, ApiError> {
        CustomerTokenRequest::parse(value.as_object().unwrap())
    }

    fn code(value: Value) -> &'static str {
        parse(value).unwrap_err().code()
    }

    #[test]
    fn every_alias_names_the_customer() {
        for field in CUSTOMER_ID_FIELDS {
            let input = parse(json!({ field: "048372910564" })).unwrap();
            assert_eq!(input.customer_id.as_str(), "048372910564");
        }
        let input = parse(json!({"customer_id": 483729105641u64, "customerid": "483729105641"}));
        assert_eq!(input.unwrap().customer_id.as_str(), "483729105641");
        assert_eq!(
            code(json!({"customer_id": "048372910564", "customerid": "048372910565"})),
            "INVALID_CUSTOMER_ID"
        );
        assert_eq!(code(json!({})), "CUSTOMER_ID_REQUIRED");
        for bad in [
            json!("04837291056"),
            json!("0483729105641"),
            json!("04837291056a"),
            json!(true),
        ] {
            assert_eq!(code(json!({ "customer_id": bad })), "INVALID_CUSTOMER_ID");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_body_parses_or_is_a_client_error(body in shared::test_support::arbitrary_body()) {
            match CustomerTokenRequest::parse(&body) {
                Ok(input) => proptest::prop_assert!(input.expiration_days.is_none_or(|d| (1..=MAX_EXPIRATION_DAYS).contains(&d))),
                Err(error) => proptest::prop_assert!(error.status().is_client_error(), "{error:?}"),
            }
        }
    }

    #[test]
    fn expiration_days_are_positive_whole_numbers() {
        let ok = parse(json!({"customer_id": "048372910564", "expiration_days": 30})).unwrap();
        assert_eq!(ok.expiration_days, Some(30));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("30"),
            json!(1e12),
            json!(3651),
        ] {
            assert_eq!(
                code(json!({"customer_id": "048372910564", "expiration_days": bad})),
                "INVALID_EXPIRATION_DAYS",
                "{bad}"
            );
        }
    }
}
