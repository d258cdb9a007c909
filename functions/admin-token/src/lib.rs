//! `POST /api/white-label/token`: a white-label admin mints a never-expiring API token for a user
//! of its own platform, found by `user_id` or `email`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{Map, Value};

use shared::domain::{Abilities, Email, TokenName, UserId};
use shared::error::{ApiError, FieldErrors};
use shared::mint::MintRequest;
use shared::service::Service;
use shared::store::{Owner, Refusal, User};
use shared::token::TokenKind;
use shared::validate::{both, name_field, present, Parsed};
use shared::web::{self, Admin, Failure, Fields, Json, Routes, WhiteLabel};

/// The routes this function serves.
pub fn routes() -> Routes<WhiteLabel> {
    Routes::default().post("/api/white-label/token", create_token)
}

/// The function's router over `service`.
pub fn router(service: Service) -> Router {
    routes().into_router(service)
}

/// `token_name` when none is given.
pub const DEFAULT_TOKEN_NAME: &str = "api-token";

const USER_NOT_FOUND: &str = "User not found.";

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
        let (target, token_name) = both(target(body), name_field(body, "token_name"))?;
        let token_name = match token_name {
            Some(name) => name,
            None => TokenName::parse(DEFAULT_TOKEN_NAME).expect("default name is valid"),
        };
        Ok(WhiteLabelTokenRequest { target, token_name })
    }
}

/// `user_id` or `email` (or both).
fn target(body: &Map<String, Value>) -> Parsed<Target> {
    let id = present(body, "user_id")
        .map(|value| {
            parse_user_id(value).map_err(|()| {
                FieldErrors::single("user_id", "The user id field must be an integer.")
            })
        })
        .transpose();
    let email = present(body, "email")
        .map(|value| {
            value.as_str().and_then(Email::parse).ok_or_else(|| {
                FieldErrors::single("email", "The email field must be a valid email address.")
            })
        })
        .transpose();
    match both(id, email)? {
        (Some(id), email) => Ok(Target::Id(id, email)),
        (None, Some(email)) => Ok(Target::Email(email)),
        (None, None) => {
            let mut errors = FieldErrors::single(
                "user_id",
                "The user id field is required when email is not present.",
            );
            errors.add(
                "email",
                "The email field is required when user id is not present.",
            );
            Err(errors)
        }
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

/// The user a token was made for.
#[derive(Serialize)]
struct UserView<'a> {
    id: UserId,
    name: &'a str,
    email: &'a str,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> Self {
        UserView {
            id: user.id,
            name: &user.name,
            email: &user.email,
        }
    }
}

#[derive(Serialize)]
struct TokenCreated<'a> {
    message: &'static str,
    user: UserView<'a>,
    token: &'a str,
    token_name: &'a str,
}

async fn create_token(
    State(service): State<web::State>,
    caller: Admin<WhiteLabel>,
    body: Fields<WhiteLabel>,
) -> Result<Response, Failure<WhiteLabel>> {
    caller.require_unmetered()?;
    let input = WhiteLabelTokenRequest::parse(&body)?;
    let store = service.store.as_ref();
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
        .filter(|user| caller.shares_platform(user))
        .ok_or(ApiError::NotFound(USER_NOT_FOUND))?;

    // Never expires, unless the admin's own token does: then no later than it.
    let mint_request = MintRequest::by(
        &caller,
        caller.change(),
        TokenKind::WhiteLabel,
        input.token_name,
        Abilities::full(),
        None,
    )?;
    let minted = service
        .mint_answering(Owner::from(&user), mint_request, caller.now, |refusal| {
            let message = match refusal {
                Refusal::UserNotFound => return Some(ApiError::NotFound(USER_NOT_FOUND)),
                Refusal::UserBlocked => "The selected user is blocked.".to_string(),
                Refusal::TokenLimitReached { max } => format!(
                    "The user already holds {max} API tokens, the most allowed. Delete one before creating another."
                ),
                _ => return None,
            };
            Some(ApiError::Validation(FieldErrors::single(field, message)))
        })
        .await?;
    let created = TokenCreated {
        message: "Token created successfully.",
        user: UserView::from(&user),
        token: minted.secret.expose(),
        token_name: &minted.record.name,
    };
    Ok(Json(StatusCode::OK, created).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
