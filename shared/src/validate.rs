//! Laravel-style field validation shared by the routes whose seeds answer 422 `{message, errors}`.
//!
//! As in Laravel, `null` and blank strings count as absent, strings are trimmed, and messages
//! name the field with spaces for underscores ("The token name field ...").

use serde_json::{Map, Value};

use crate::domain::{
    Abilities, AbilitiesProblem, CustomerId, Email, ExternalId, Meta, MetaProblem, NameProblem,
    Permission, TokenName,
};
use serde::ser::{Serialize, SerializeMap, Serializer};

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

/// A string field, trimmed; `None` when absent.
pub fn string_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<String>> {
    match present(body, field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim().to_string())),
        Some(_) => Err(FieldErrors::single(
            field,
            format!("The {} field must be a string.", label(field)),
        )),
    }
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

/// A string field made into a value by `parse` (`None`: not one, said as `must`); `None` when
/// absent.
fn parsed_string<T>(
    body: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    must: &str,
) -> Parsed<Option<T>> {
    let Some(text) = string_field(body, field)? else {
        return Ok(None);
    };
    parse(&text)
        .map(Some)
        .ok_or_else(|| FieldErrors::single(field, format!("The {} field {must}.", label(field))))
}

/// An email address; `None` when absent.
pub fn email_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<Email>> {
    parsed_string(body, field, Email::parse, "must be a valid email address")
}

/// A 12-digit customer id; `None` when absent.
pub fn customer_id_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<CustomerId>> {
    parsed_string(body, field, CustomerId::parse, "must be exactly 12 digits")
}

/// The platform's own id of a user (1 to 128 characters, no control characters, kept as sent
/// but for surrounding blanks); `None` when absent.
pub fn external_id_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<ExternalId>> {
    let must = format!(
        "must be 1 to {} characters without control characters",
        ExternalId::MAX_CHARS
    );
    parsed_string(body, field, ExternalId::parse, &must)
}

/// A platform's own data: a JSON object of at most 1 KiB serialized. `None` when absent,
/// `Some(None)` when `null` (a request to remove it).
pub fn meta_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<Option<Meta>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => Meta::parse(value)
            .map(|meta| Some(Some(meta)))
            .map_err(|problem| {
                let message = match problem {
                    MetaProblem::NotAnObject => format!("The {field} field must be a JSON object."),
                    MetaProblem::TooLarge => format!(
                        "The {field} field must not be larger than {} bytes as JSON.",
                        Meta::MAX_BYTES
                    ),
                };
                FieldErrors::single(field, message)
            }),
    }
}

/// A service key's permissions: a list of [`Permission`] names; `None` when absent.
pub fn permissions_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<Abilities>> {
    let Some(Value::Array(items)) = body.get(field) else {
        return match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(FieldErrors::single(
                field,
                format!("The {field} field must be an array."),
            )),
        };
    };
    let names: Option<Vec<String>> = items
        .iter()
        .map(|item| item.as_str().map(str::to_string))
        .collect();
    let known = Permission::ALL.map(Permission::as_str).join(", ");
    let names = names.ok_or_else(|| {
        FieldErrors::single(field, format!("Each of the {field} must be a string."))
    })?;
    Permission::parse_list(names).map(Some).map_err(|unknown| {
        let message = match unknown {
            Some(name) => format!("The permission {name:?} is none of: {known}."),
            None => format!("The {field} field must have 1 to 8 of: {known}."),
        };
        FieldErrors::single(field, message)
    })
}

/// Laravel's `boolean`: `true`, `false`, `1`, `0`, `"1"`, `"0"` (and, from forms, `"true"` and
/// `"false"`); `None` when absent.
pub fn boolean_field(body: &Map<String, Value>, field: &str) -> Parsed<Option<bool>> {
    let Some(value) = present(body, field) else {
        return Ok(None);
    };
    match value {
        Value::Bool(flag) => Ok(Some(*flag)),
        Value::Number(number) if number.as_u64() == Some(1) => Ok(Some(true)),
        Value::Number(number) if number.as_u64() == Some(0) => Ok(Some(false)),
        Value::String(text) if matches!(text.trim(), "1" | "true") => Ok(Some(true)),
        Value::String(text) if matches!(text.trim(), "0" | "false") => Ok(Some(false)),
        _ => Err(FieldErrors::single(
            field,
            format!("The {} field must be true or false.", label(field)),
        )),
    }
}

/// A whole number from `min` to `max` (a number, or digits from a form); `None` when absent.
pub fn integer_field(
    body: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Parsed<Option<u64>> {
    let Some(value) = present(body, field) else {
        return Ok(None);
    };
    let number = match value {
        Value::Number(number) => number.as_i64().map(i128::from),
        Value::String(text) => text.trim().parse::<i128>().ok(),
        _ => None,
    };
    let label = label(field);
    match number {
        None => Err(FieldErrors::single(
            field,
            format!("The {label} field must be an integer."),
        )),
        Some(n) if n < i128::from(min) || n > i128::from(max) => Err(FieldErrors::single(
            field,
            format!("The {label} field must be between {min} and {max}."),
        )),
        Some(n) => Ok(u64::try_from(n).ok()),
    }
}

/// A moment after `now_s` and at most `max_ahead_s` later, as ISO 8601 (`2026-12-31T23:59:59Z`,
/// with an offset, or a date alone: its midnight UTC); epoch seconds, `None` when absent.
pub fn future_date_field(
    body: &Map<String, Value>,
    field: &str,
    now_s: u64,
    max_ahead_s: u64,
) -> Parsed<Option<u64>> {
    let Some(value) = present(body, field) else {
        return Ok(None);
    };
    let label = label(field);
    let at = value.as_str().and_then(|text| parse_date(text.trim()));
    match at {
        None => Err(FieldErrors::single(
            field,
            format!("The {label} field must be a valid date (ISO 8601)."),
        )),
        Some(at) if at <= now_s as i64 => Err(FieldErrors::single(
            field,
            format!("The {label} field must be a date after now."),
        )),
        Some(at) if at > now_s.saturating_add(max_ahead_s) as i64 => Err(FieldErrors::single(
            field,
            format!(
                "The {label} field must be a date at most {} days from now.",
                max_ahead_s / 86_400
            ),
        )),
        Some(at) => Ok(Some(at as u64)),
    }
}

/// A moment no later than `now_s`, as [`future_date_field`] reads dates; epoch seconds, `None`
/// when absent.
pub fn past_date_field(body: &Map<String, Value>, field: &str, now_s: u64) -> Parsed<Option<u64>> {
    let Some(value) = present(body, field) else {
        return Ok(None);
    };
    let label = label(field);
    match value.as_str().and_then(|text| parse_date(text.trim())) {
        Some(at) if (0..=now_s as i64).contains(&at) => Ok(Some(at as u64)),
        Some(_) => Err(FieldErrors::single(
            field,
            format!("The {label} field must be a date before now."),
        )),
        None => Err(FieldErrors::single(
            field,
            format!("The {label} field must be a valid date (ISO 8601)."),
        )),
    }
}

/// Epoch seconds of an RFC 3339 date-time, an SQL `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC, as
/// Laravel's tables and MySQL's JSON write them) or a `YYYY-MM-DD` date (midnight UTC).
fn parse_date(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at.unix_timestamp());
    }
    let sql = time::PrimitiveDateTime::parse(
        text,
        time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        ),
    );
    if let Ok(at) = sql {
        return Some(at.assume_utc().unix_timestamp());
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    );
    date.ok()
        .map(|date| date.midnight().assume_utc().unix_timestamp())
}

/// Laravel-style field errors: field -> messages, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<(String, Vec<String>)>);

impl FieldErrors {
    pub fn new() -> FieldErrors {
        FieldErrors::default()
    }

    /// A single error on a single field.
    pub fn single(field: &str, message: impl Into<String>) -> FieldErrors {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let message = message.into();
        match self.0.iter_mut().find(|(f, _)| f == field) {
            Some((_, messages)) => messages.push(message),
            None => self.0.push((field.to_string(), vec![message])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err` when any error was added.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The first message, with Laravel's `(and N more error(s))` suffix.
    pub fn summary(&self) -> String {
        let mut messages = self.0.iter().flat_map(|(_, m)| m);
        let first = messages.next().cloned().unwrap_or_default();
        match messages.count() {
            0 => first,
            1 => format!("{first} (and 1 more error)"),
            more => format!("{first} (and {more} more errors)"),
        }
    }

    /// Both sets of errors, `self`'s fields first.
    pub fn merge(mut self, other: FieldErrors) -> FieldErrors {
        for (field, messages) in other.0 {
            for message in messages {
                self.add(&field, message);
            }
        }
        self
    }
}

/// `{"field": ["message", ...], ...}`, fields in the order they were found.
impl Serialize for FieldErrors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (field, messages) in &self.0 {
            map.serialize_entry(field, messages)?;
        }
        map.end()
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

    #[test]
    fn booleans_integers_and_dates_follow_laravel() {
        let field = |value: Value| body(json!({ "f": value }));
        assert_eq!(
            boolean_field(&field(json!(false)), "f").unwrap(),
            Some(false)
        );
        assert_eq!(boolean_field(&field(json!("1")), "f").unwrap(), Some(true));
        assert_eq!(boolean_field(&field(json!(0)), "f").unwrap(), Some(false));
        assert_eq!(boolean_field(&body(json!({})), "f").unwrap(), None);
        assert_eq!(
            summary(boolean_field(&field(json!("yes")), "f")),
            "The f field must be true or false."
        );
        assert_eq!(
            integer_field(&field(json!(30)), "f", 1, 3650).unwrap(),
            Some(30)
        );
        assert_eq!(
            integer_field(&field(json!("30")), "f", 1, 3650).unwrap(),
            Some(30)
        );
        for bad in [json!(0), json!(-1), json!(3651), json!(99_999_999_999u64)] {
            assert_eq!(
                summary(integer_field(&field(bad), "f", 1, 3650)),
                "The f field must be between 1 and 3650."
            );
        }
        assert_eq!(
            summary(integer_field(&field(json!(1.5)), "f", 1, 3650)),
            "The f field must be an integer."
        );
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        let year = 365 * 86_400;
        let date = |text: &str| future_date_field(&field(json!(text)), "f", now, 10 * year);
        assert_eq!(date("2026-01-02T00:00:00Z").unwrap(), Some(now + 86_400));
        assert_eq!(
            date("2026-01-02T02:00:00+02:00").unwrap(),
            Some(now + 86_400)
        );
        assert_eq!(date("2026-01-02").unwrap(), Some(now + 86_400));
        assert_eq!(
            summary(date("2025-12-31T23:59:59Z")),
            "The f field must be a date after now."
        );
        assert_eq!(
            summary(date("2040-01-01")),
            "The f field must be a date at most 3650 days from now."
        );
        assert_eq!(
            summary(date("tomorrow")),
            "The f field must be a valid date (ISO 8601)."
        );
        assert_eq!(date("2026-01-02 00:00:00").unwrap(), Some(now + 86_400));
        let past = |text: &str| past_date_field(&field(json!(text)), "f", now);
        assert_eq!(past("2025-12-31 00:00:00").unwrap(), Some(now - 86_400));
        assert_eq!(
            past("2025-12-31 00:00:00.000000").unwrap(),
            Some(now - 86_400)
        );
        assert_eq!(past("2026-01-01T00:00:00Z").unwrap(), Some(now));
        assert_eq!(
            summary(past("2026-01-01T00:00:01Z")),
            "The f field must be a date before now."
        );
        assert_eq!(
            summary(past("1969-12-31")),
            "The f field must be a date before now."
        );
        assert_eq!(
            summary(past("yesterday")),
            "The f field must be a valid date (ISO 8601)."
        );
    }
}
