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

/// A name field (`name`, `token_name`): a string of 1 to 255 characters without control
/// characters. `None` (with an error recorded) when it is present but invalid, or when it is
/// absent and `required`.
pub fn name_field(
    body: &Map<String, Value>,
    field: &str,
    required: bool,
    errors: &mut FieldErrors,
) -> Option<TokenName> {
    let label = label(field);
    let Some(value) = present(body, field) else {
        if required {
            errors.add(field, format!("The {label} field is required."));
        }
        return None;
    };
    let Value::String(text) = value else {
        errors.add(field, format!("The {label} field must be a string."));
        return None;
    };
    match TokenName::parse(text) {
        Ok(name) => Some(name),
        Err(NameProblem::TooLong) => {
            errors.add(
                field,
                format!(
                    "The {label} field must not be greater than {} characters.",
                    TokenName::MAX_CHARS
                ),
            );
            None
        }
        Err(NameProblem::ControlCharacters) => {
            errors.add(
                field,
                format!("The {label} field must not contain control characters."),
            );
            None
        }
        Err(NameProblem::Empty) => {
            errors.add(field, format!("The {label} field is required."));
            None
        }
    }
}

/// An optional abilities list: `None` when absent (or invalid, with an error recorded).
pub fn abilities_field(
    body: &Map<String, Value>,
    field: &str,
    errors: &mut FieldErrors,
) -> Option<Abilities> {
    let value = match body.get(field) {
        None | Some(Value::Null) => return None,
        Some(value) => value,
    };
    let Value::Array(items) = value else {
        errors.add(field, format!("The {field} field must be an array."));
        return None;
    };
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
    if strings.len() != items.len() {
        return None;
    }
    match Abilities::parse(strings) {
        Ok(abilities) => Some(abilities),
        Err(problem) => {
            let message = match problem {
                AbilitiesProblem::Empty => {
                    format!(
                        "The {field} field must have at least 1 item; use [\"*\"] for full access."
                    )
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
            errors.add(field, message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn names_follow_laravel_wording() {
        let mut errors = FieldErrors::new();
        assert!(name_field(&body(json!({})), "name", true, &mut errors).is_none());
        assert!(name_field(
            &body(json!({"token_name": 5})),
            "token_name",
            false,
            &mut errors
        )
        .is_none());
        let long = "a".repeat(256);
        assert!(name_field(&body(json!({"name": long})), "name", true, &mut errors).is_none());
        assert_eq!(
            errors.summary(),
            "The name field is required. (and 2 more errors)"
        );
        let mut errors = FieldErrors::new();
        assert!(name_field(
            &body(json!({"token_name": " "})),
            "token_name",
            false,
            &mut errors
        )
        .is_none());
        assert!(errors.is_empty());
        let name = name_field(&body(json!({"name": " Prod "})), "name", true, &mut errors);
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
            let mut errors = FieldErrors::new();
            let name = name_field(&body, "name", true, &mut errors);
            let abilities = abilities_field(&body, "abilities", &mut errors);
            prop_assert!(name.is_some() || !errors.is_empty());
            if let Some(name) = name {
                prop_assert!((1..=TokenName::MAX_CHARS).contains(&name.as_str().chars().count()));
            }
            if let Some(abilities) = abilities {
                prop_assert!((1..=Abilities::MAX_COUNT).contains(&abilities.as_slice().len()));
            }
        }
    }

    #[test]
    fn abilities_must_be_a_list_of_strings() {
        let mut errors = FieldErrors::new();
        assert!(
            abilities_field(&body(json!({"abilities": "*"})), "abilities", &mut errors).is_none()
        );
        assert!(abilities_field(
            &body(json!({"abilities": ["a", 1]})),
            "abilities",
            &mut errors
        )
        .is_none());
        assert!(
            abilities_field(&body(json!({"abilities": []})), "abilities", &mut errors).is_none()
        );
        assert_eq!(
            errors.summary(),
            "The abilities field must be an array. (and 2 more errors)"
        );
        let mut errors = FieldErrors::new();
        let parsed = abilities_field(
            &body(json!({"abilities": ["calls:read"]})),
            "abilities",
            &mut errors,
        );
        assert_eq!(parsed.unwrap().as_slice(), ["calls:read"]);
        assert!(
            abilities_field(&body(json!({"abilities": null})), "abilities", &mut errors).is_none()
        );
        assert!(errors.is_empty());
    }
}
