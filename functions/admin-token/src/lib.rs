//! `POST /api/white-label/token`: a white-label admin mints a never-expiring API token for a user
//! of its own platform, found by `user_id` or `email`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Map, Value};

use shared::domain::{Abilities, Email, TokenName, UserId};
use shared::error::{error_response, json_response, ApiError, ErrorStyle, FieldErrors};
use shared::http::{bearer_token, json_object, route_request, Route};
use shared::mint::{mint, MintRequest};
use shared::service::Service;
use shared::store::{now_ms, Owner, StoreError, User};
use shared::token::TokenKind;
use shared::validate::{name_field, present};

/// The routes this function serves.
pub const ROUTES: [Route<()>; 1] = [Route {
    method: "POST",
    pattern: "/api/white-label/token",
    action: (),
}];

/// `token_name` when none is given.
pub const DEFAULT_TOKEN_NAME: &str = "api-token";

const USER_NOT_FOUND: &str = "User not found.";

/// The Lambda handler: always a response in the seed's shapes.
pub async fn handle(service: &Service, request: Request) -> Response<Body> {
    create_token(service, &request)
        .await
        .unwrap_or_else(|e| error_response(ErrorStyle::WhiteLabel, &e))
}

/// Who the token is for, as the request names them.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `user_id`, and `email` too when both were given (they must name the same user).
    Id(Option<UserId>, Option<Email>),
    Email(Email),
}

/// The validated body.
#[derive(Debug)]
struct WhiteLabelTokenRequest {
    target: Target,
    token_name: TokenName,
}

impl WhiteLabelTokenRequest {
    /// Laravel's rules: `user_id` required_without:email|integer, `email`
    /// required_without:user_id|email, `token_name` nullable|string|max:255.
    fn parse(body: &Map<String, Value>) -> Result<WhiteLabelTokenRequest, ApiError> {
        let mut errors = FieldErrors::new();
        let user_id = present(body, "user_id");
        let email = present(body, "email");
        if user_id.is_none() && email.is_none() {
            errors.add(
                "user_id",
                "The user id field is required when email is not present.",
            );
            errors.add(
                "email",
                "The email field is required when user id is not present.",
            );
        }
        let id = user_id.and_then(|value| match parse_user_id(value) {
            Ok(id) => Some(id),
            Err(()) => {
                errors.add("user_id", "The user id field must be an integer.");
                None
            }
        });
        let email = email.and_then(|value| {
            let parsed = value.as_str().and_then(Email::parse);
            if parsed.is_none() {
                errors.add("email", "The email field must be a valid email address.");
            }
            parsed
        });
        let token_name = name_field(body, "token_name", false, &mut errors);
        errors.into_result()?;
        let target = match (id, email) {
            (Some(id), email) => Target::Id(id, email),
            (None, Some(email)) => Target::Email(email),
            (None, None) => unreachable!("validation requires one of them"),
        };
        let token_name = match token_name {
            Some(name) => name,
            None => TokenName::parse(DEFAULT_TOKEN_NAME).expect("default name is valid"),
        };
        Ok(WhiteLabelTokenRequest { target, token_name })
    }
}

/// An integer, or a string of digits. `Ok(None)` for integers no user can have (zero, negative,
/// too large), which then answer 404 like any unknown id.
fn parse_user_id(value: &Value) -> Result<Option<UserId>, ()> {
    match value {
        Value::Number(number) if number.is_u64() => Ok(number.as_u64().map(UserId)),
        Value::Number(number) if number.is_i64() => Ok(None),
        Value::String(text) => {
            let digits = text.trim().strip_prefix('-').unwrap_or(text.trim());
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            Ok(text.trim().parse().ok().filter(|id| *id > 0).map(UserId))
        }
        _ => Err(()),
    }
}

async fn create_token(service: &Service, request: &Request) -> Result<Response<Body>, ApiError> {
    route_request(&ROUTES, request)?;
    let now = now_ms();
    let store = service.store.as_ref();
    let caller = service
        .authenticate(bearer_token(request.headers()), now)
        .await?;
    caller.require_admin()?;
    let input = WhiteLabelTokenRequest::parse(&json_object(request)?)?;

    let (found, field) = match &input.target {
        Target::Id(Some(id), email) => {
            let user = store.get_user(*id).await?.filter(|user| {
                email
                    .as_ref()
                    .is_none_or(|e| e.normalized() == user.email.to_lowercase())
            });
            (user, "user_id")
        }
        Target::Id(None, _) => (None, "user_id"),
        Target::Email(email) => (
            store.find_user_by_email(caller.platform_id, email).await?,
            "email",
        ),
    };
    // Users of other platforms are answered exactly as users that do not exist.
    let user: User = found
        .filter(|user| user.platform_id == caller.platform_id)
        .ok_or(ApiError::NotFound(USER_NOT_FOUND))?;

    // Never expires, unless the admin's own token does: then no later than it.
    let mint_request = MintRequest::by(
        &caller,
        TokenKind::WhiteLabel,
        input.token_name,
        Abilities::full(),
        None,
    )?;
    let cap = service.config.cap(TokenKind::WhiteLabel.family());
    let minted = mint(store, Owner::from(&user), mint_request, cap, now)
        .await
        .map_err(|e| match e {
            StoreError::UserNotFound => ApiError::NotFound(USER_NOT_FOUND),
            StoreError::UserBlocked => {
                ApiError::Validation(FieldErrors::single(field, "The selected user is blocked."))
            }
            StoreError::TokenLimitReached { max } => ApiError::Validation(FieldErrors::single(
                field,
                format!(
                    "The user already holds {max} API tokens, the most allowed. Delete one before creating another."
                ),
            )),
            other => other.into(),
        })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "message": "Token created successfully.",
            "user": {"id": user.id, "name": user.name, "email": user.email},
            "token": minted.secret.expose(),
            "token_name": minted.record.name,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<WhiteLabelTokenRequest, ApiError> {
        WhiteLabelTokenRequest::parse(value.as_object().unwrap())
    }

    #[test]
    fn user_ids_may_be_numbers_or_digit_strings() {
        for (value, expected) in [
            (json!(123), Some(UserId(123))),
            (json!("123"), Some(UserId(123))),
            (json!(" 7 "), Some(UserId(7))),
            (json!(-4), None),
            (json!("0"), None),
            (json!("-4"), None),
            (json!("99999999999999999999999"), None),
        ] {
            let input = parse(json!({ "user_id": value })).unwrap();
            assert_eq!(input.target, Target::Id(expected, None), "{value}");
        }
        for bad in [
            json!(1.5),
            json!("12a"),
            json!(true),
            json!([1]),
            json!({}),
            json!("-"),
        ] {
            match parse(json!({ "user_id": bad })) {
                Err(ApiError::Validation(errors)) => {
                    assert_eq!(errors.summary(), "The user id field must be an integer.")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_body_parses_or_is_a_client_error(body in shared::test_support::arbitrary_body()) {
            if let Err(error) = WhiteLabelTokenRequest::parse(&body) {
                proptest::prop_assert!(error.status().is_client_error(), "{error:?}");
            }
        }
    }

    #[test]
    fn token_name_defaults_when_absent_or_blank() {
        for body in [
            json!({"email": "a@b.co"}),
            json!({"email": "a@b.co", "token_name": ""}),
        ] {
            assert_eq!(parse(body).unwrap().token_name.as_str(), DEFAULT_TOKEN_NAME);
        }
    }
}
