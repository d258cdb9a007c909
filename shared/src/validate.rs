//! Laravel-style field validation shared by the routes whose seeds answer 422 `{message, errors}`.
//!
//! As in Laravel, `null` and blank strings count as absent, strings are trimmed, and messages
//! name the field with spaces for underscores ("The token name field ...").

use serde_json::{Map, Value};

use crate::domain::{Abilities, AbilitiesProblem, NameProblem, TokenName};
use crate::error::FieldErrors;

/// The field's value, or `None` when it is missing, `null` or a blank string.
pub fn present<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    match body.get(field)? {
        Value::Null => None,
        Value::String(text) if text.trim().is_empty() => None,
        value => Some(value),
    }
}

/// How a field is named in messages: `token_name` -> `token name`.
pub fn label(field: &str) -> String {
    field.replace('_', " ")
}

/// A field's parsed value, or every problem found with it.
pub type Parsed<T> = Result<T, FieldErrors>;

/// Two fields parsed, or the problems of both (`a`'s first).
pub fn both<A, B>(a: Parsed<A>, b: Parsed<B>) -> Parsed<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(a.merge(b)),
    }
}

/// An optional field made required: absent is "The {label} field is required.".
pub fn required<T>(field: &str, parsed: Parsed<Option<T>>) -> Parsed<T> {
    parsed?.ok_or_else(|| {
        FieldErrors::single(field, format!("The {} field is required.", label(field)))
    })
}

/// A name field (`name`, `token_name`): a string of 1 to 255 characters without control
/// characters; `None` when absent.
pub fn name_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<TokenName>> {
    let label = label(field);
    let Some(value) = present(body, field) else {
        return Ok(None);
    };
    let Value::String(text) = value else {
        return Err(FieldErrors::single(
            field,
            format!("The {label} field must be a string."),
        ));
    };
    let message = match TokenName::parse(text) {
        Ok(name) => return Ok(Some(name)),
        Err(NameProblem::TooLong) => format!(
            "The {label} field must not be greater than {} characters.",
            TokenName::MAX_CHARS
        ),
        Err(NameProblem::ControlCharacters) => {
            format!("The {label} field must not contain control characters.")
        }
        Err(NameProblem::Empty) => format!("The {label} field is required."),
    };
    Err(FieldErrors::single(field, message))
}

/// An optional abilities list: `None` when absent.
pub fn abilities_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<Abilities>> {
    let value = match body.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let Value::Array(items) = value else {
        return Err(FieldErrors::single(
            field,
            format!("The {field} field must be an array."),
        ));
    };
    let mut errors = FieldErrors::new();
    let mut strings = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(text) => strings.push(text.clone()),
            _ => errors.add(
                &format!("{field}.{i}"),
                format!("The {field}.{i} field must be a string."),
            ),
        }
    }
    errors.into_result()?;
    Abilities::parse(strings).map(Some).map_err(|problem| {
        let message = match problem {
            AbilitiesProblem::Empty => {
                format!("The {field} field must have at least 1 item; use [\"*\"] for full access.")
            }
            AbilitiesProblem::TooMany => format!(
                "The {field} field must not have more than {} items.",
                Abilities::MAX_COUNT
            ),
            AbilitiesProblem::BadAbility => format!(
                "Each of the {field} must be 1 to {} characters from A-Z a-z 0-9 : . _ - *.",
                Abilities::MAX_LEN
            ),
        };
        FieldErrors::single(field, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn summary<T>(parsed: Parsed<T>) -> String {
        parsed.err().map(|e| e.summary()).unwrap_or_default()
    }

    #[test]
    fn names_follow_laravel_wording() {
        let missing = required("name", name_field(&body(json!({})), "name"));
        let not_text = name_field(&body(json!({"token_name": 5})), "token_name");
        let long = name_field(&body(json!({"name": "a".repeat(256)})), "name");
        assert_eq!(
            summary(both(missing, both(not_text, long))),
            "The name field is required. (and 2 more errors)"
        );
        assert_eq!(
            summary(name_field(&body(json!({"token_name": 5})), "token_name")),
            "The token name field must be a string."
        );
        assert_eq!(
            name_field(&body(json!({"token_name": " "})), "token_name").unwrap(),
            None
        );
        let name = required("name", name_field(&body(json!({"name": " Prod "})), "name"));
        assert_eq!(name.unwrap().as_str(), "Prod");
    }

    fn any_field() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<String>().prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            prop::collection::vec(any::<String>().prop_map(Value::String), 0..60)
                .prop_map(Value::Array),
            prop::collection::vec(any::<i64>().prop_map(Value::from), 0..3).prop_map(Value::Array),
        ]
    }

    proptest! {
        /// Whatever the body, the field readers record errors or return valid values; never panic.
        #[test]
        fn any_body_yields_values_or_errors(
            body in prop::collection::btree_map("[a-z_]{1,10}|name|abilities", any_field(), 0..5)
        ) {
            let body: Map<String, Value> = body.into_iter().collect();
            match both(required("name", name_field(&body, "name")), abilities_field(&body, "abilities")) {
                Ok((name, abilities)) => {
                    prop_assert!((1..=TokenName::MAX_CHARS).contains(&name.as_str().chars().count()));
                    if let Some(abilities) = abilities {
                        prop_assert!((1..=Abilities::MAX_COUNT).contains(&abilities.as_slice().len()));
                    }
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }
    }

    #[test]
    fn abilities_must_be_a_list_of_strings() {
        let parse =
            |value: Value| abilities_field(&body(json!({ "abilities": value })), "abilities");
        let all = both(
            parse(json!("*")),
            both(parse(json!(["a", 1])), parse(json!([]))),
        );
        assert_eq!(
            summary(all),
            "The abilities field must be an array. (and 2 more errors)"
        );
        assert_eq!(
            parse(json!(["calls:read"])).unwrap().unwrap().as_slice(),
            ["calls:read"]
        );
        assert_eq!(parse(json!(null)).unwrap(), None);
    }
}
