//! Validated domain values: once you hold one, it is valid.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The ability that lets a token other than a full-access one manage its owner's tokens.
pub const MANAGE_TOKENS: &str = "tokens:manage";

/// A user id: allocated atomically by the store, or imported from the platform's own system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u64);

impl UserId {
    /// The service account of `platform`: the owner of its service keys, in a range of ids no
    /// user holds (the top bit set; user ids stay below 2^63), so it can never be addressed as
    /// a user.
    pub fn service_account(platform: PlatformId) -> UserId {
        UserId(SERVICE_ACCOUNT_BIT | platform.0)
    }

    /// Whether this id is a platform's service account ([`UserId::service_account`]).
    pub fn is_service_account(self) -> bool {
        self.0 & SERVICE_ACCOUNT_BIT != 0
    }
}

const SERVICE_ACCOUNT_BIT: u64 = 1 << 63;

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A platform (white-label or agency tenant) id, allocated atomically by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlatformId(pub u64);

impl fmt::Display for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 12-digit customer id, unique across the table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CustomerId(String);

impl CustomerId {
    /// Exactly twelve ASCII digits.
    pub fn parse(text: &str) -> Option<CustomerId> {
        (text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| CustomerId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id a platform's own system knows a user by: 1 to 128 characters, no control characters,
/// unique within the platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    pub const MAX_CHARS: usize = 128;

    /// `text` as given (no trimming: it is the platform's own key), if it is 1 to
    /// [`Self::MAX_CHARS`] characters without control characters.
    pub fn parse(text: &str) -> Option<ExternalId> {
        let chars = text.chars().count();
        ((1..=Self::MAX_CHARS).contains(&chars) && !text.chars().any(char::is_control))
            .then(|| ExternalId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A platform's own data on a user or a token: a JSON object of at most [`Meta::MAX_BYTES`]
/// bytes serialized. The service stores and returns it and never reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta(serde_json::Map<String, serde_json::Value>);

/// Why a value is no [`Meta`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaProblem {
    NotAnObject,
    TooLarge,
}

impl Meta {
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(value: &serde_json::Value) -> Result<Meta, MetaProblem> {
        let object = value.as_object().ok_or(MetaProblem::NotAnObject)?;
        let size = serde_json::to_string(object).map_or(usize::MAX, |text| text.len());
        if size > Self::MAX_BYTES {
            return Err(MetaProblem::TooLarge);
        }
        Ok(Meta(object.clone()))
    }

    /// The stored form: the object as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }

    /// The object (for responses).
    pub fn as_object(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

/// An email address as given, with the case-insensitive form that uniqueness is checked on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Longest address accepted (RFC 5321's path limit).
    pub const MAX_LEN: usize = 254;

    /// A plausible address: one `@` with text on both sides, a dot in the domain, no spaces or
    /// control characters, at most [`Self::MAX_LEN`] bytes.
    pub fn parse(text: &str) -> Option<Email> {
        let text = text.trim();
        let (local, domain) = text.split_once('@')?;
        let plausible = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && text.len() <= Self::MAX_LEN
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        plausible.then(|| Email(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness within a platform is checked on.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A token name (`name`, `token_name`): 1 to 255 characters after trimming, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenName(String);

/// Why a name was refused; each route words the message in its own style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    TooLong,
    ControlCharacters,
}

impl TokenName {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(text: &str) -> Result<TokenName, NameProblem> {
        let text = text.trim();
        if text.is_empty() {
            Err(NameProblem::Empty)
        } else if text.chars().count() > Self::MAX_CHARS {
            Err(NameProblem::TooLong)
        } else if text.chars().any(char::is_control) {
            Err(NameProblem::ControlCharacters)
        } else {
            Ok(TokenName(text.to_string()))
        }
    }

    /// A name read back from the store, where only parsed names are written.
    pub fn from_stored(name: String) -> TokenName {
        TokenName(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a token may do. `["*"]` is full access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Abilities(Vec<String>);

/// Why an abilities list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbilitiesProblem {
    Empty,
    TooMany,
    BadAbility,
}

impl Abilities {
    pub const MAX_COUNT: usize = 50;
    pub const MAX_LEN: usize = 64;

    /// Full access.
    pub fn full() -> Abilities {
        Abilities(vec!["*".to_string()])
    }

    /// 1 to 50 distinct abilities, each 1 to 64 characters from `A-Z a-z 0-9 : . _ - *`; `*`
    /// alone means all. No separator (`,`, space) can occur, so the authorizer's comma-joined
    /// context reads back exactly the list that was stored.
    pub fn parse(items: Vec<String>) -> Result<Abilities, AbilitiesProblem> {
        if items.is_empty() {
            return Err(AbilitiesProblem::Empty);
        }
        if items.len() > Self::MAX_COUNT {
            return Err(AbilitiesProblem::TooMany);
        }
        let valid = |a: &String| {
            !a.is_empty()
                && a.len() <= Self::MAX_LEN
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":._-*".contains(&b))
        };
        if !items.iter().all(valid) {
            return Err(AbilitiesProblem::BadAbility);
        }
        let mut unique: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            if !unique.contains(&item) {
                unique.push(item);
            }
        }
        if unique.iter().any(|a| a == "*") {
            return Ok(Abilities::full());
        }
        Ok(Abilities(unique))
    }

    /// Rebuilds abilities read back from the store, where they were validated on the way in.
    pub fn from_stored(items: Vec<String>) -> Abilities {
        Abilities(items)
    }

    pub fn is_full(&self) -> bool {
        self.0.iter().any(|a| a == "*")
    }

    /// Whether a token with these abilities may manage (so mint) tokens: `*` or
    /// [`MANAGE_TOKENS`]. Only such a token can have children.
    pub fn manage_tokens(&self) -> bool {
        self.is_full() || self.0.iter().any(|a| a == MANAGE_TOKENS)
    }

    /// True when every ability of `other` is one of ours: a token never mints a broader one.
    pub fn covers(&self, other: &Abilities) -> bool {
        self.is_full() || (!other.is_full() && other.0.iter().all(|a| self.0.contains(a)))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// What a platform's service key may do: each permission opens the platform-admin routes of
/// its name; `*` opens them all and creating service keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    UsersRead,
    UsersWrite,
    TokensRead,
    TokensWrite,
    LimitsWrite,
    AuditRead,
    Verify,
    All,
}

named!(Permission {
    UsersRead => "users:read",
    UsersWrite => "users:write",
    TokensRead => "tokens:read",
    TokensWrite => "tokens:write",
    LimitsWrite => "limits:write",
    AuditRead => "audit:read",
    Verify => "verify",
    All => "*",
});

impl Permission {
    /// Every permission, in the order the documentation lists them.
    pub const ALL: [Permission; 8] = [
        Permission::UsersRead,
        Permission::UsersWrite,
        Permission::TokensRead,
        Permission::TokensWrite,
        Permission::LimitsWrite,
        Permission::AuditRead,
        Permission::Verify,
        Permission::All,
    ];

    /// A service key's permissions: 1 to 8 names of [`Permission::ALL`], kept as the key's
    /// abilities (`*` alone when it is among them). `Err`: the first name that is none.
    pub fn parse_list(items: Vec<String>) -> Result<Abilities, Option<String>> {
        if let Some(unknown) = items.iter().find(|i| Permission::from_name(i).is_none()) {
            return Err(Some(unknown.clone()));
        }
        Abilities::parse(items).map_err(|_| None)
    }

    /// Whether a service key with `abilities` holds this permission.
    pub fn granted_by(self, abilities: &Abilities) -> bool {
        abilities.is_full() || abilities.0.iter().any(|a| a == self.as_str())
    }
}

/// A user's role inside its platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    /// A platform's service account: holds its service keys, is never a user of the directory.
    Service,
}

/// Whether a user may authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Blocked,
}

/// Whether a workspace counts for the customer-token route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceStatus {
    Active,
    Inactive,
}

/// A user's workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub name: String,
    pub status: WorkspaceStatus,
}

/// `as_str` (the name stored and shown) and `from_name` (its inverse) of an enum of names.
macro_rules! named {
    ($type:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            /// The name stored (and shown) for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $name,)+
                }
            }

            /// The one stored under `name`.
            pub fn from_name(name: &str) -> Option<$type> {
                match name {
                    $($name => Some($type::$variant),)+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use named;

named!(Role { Admin => "admin", User => "user", Service => "service" });
named!(UserStatus { Active => "active", Blocked => "blocked" });
named!(WorkspaceStatus { Active => "active", Inactive => "inactive" });

#[cfg(test)]
mod tests {

    #[test]
    fn external_ids_are_one_to_128_characters_without_controls() {
        assert!(ExternalId::parse("cus_42").is_some());
        assert!(ExternalId::parse(&"é".repeat(128)).is_some());
        assert!(ExternalId::parse(&"x".repeat(129)).is_none());
        assert!(ExternalId::parse("").is_none());
        assert!(ExternalId::parse("a\nb").is_none());
        assert_eq!(ExternalId::parse(" a ").unwrap().as_str(), " a ");
    }

    #[test]
    fn meta_is_an_object_of_at_most_a_kib() {
        let small = serde_json::json!({"plan": "pro", "seats": 3});
        assert_eq!(
            Meta::parse(&small).unwrap().to_json(),
            r#"{"plan":"pro","seats":3}"#
        );
        let at_limit = serde_json::json!({ "k": "x".repeat(1024 - 8) });
        assert_eq!(serde_json::to_string(&at_limit).unwrap().len(), 1024);
        assert!(Meta::parse(&at_limit).is_ok());
        let over = serde_json::json!({ "k": "x".repeat(1024 - 7) });
        assert_eq!(Meta::parse(&over), Err(MetaProblem::TooLarge));
        for bad in [
            serde_json::json!([1]),
            serde_json::json!("x"),
            serde_json::json!(null),
        ] {
            assert_eq!(Meta::parse(&bad), Err(MetaProblem::NotAnObject));
        }
    }
    use super::*;

    fn abilities(items: &[&str]) -> Abilities {
        Abilities::parse(items.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn customer_ids_are_exactly_twelve_digits() {
        assert!(CustomerId::parse("048372910564").is_some());
        for bad in [
            "04837291056",
            "0483729105641",
            "04837291056a",
            "",
            "٠٤٨٣٧٢٩١٠٥٦٤",
        ] {
            assert!(CustomerId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn emails_compare_case_insensitively() {
        let a = Email::parse("John@Example.com").unwrap();
        assert_eq!(a.normalized(), "john@example.com");
        assert_eq!(a.as_str(), "John@Example.com");
        for bad in [
            "",
            "john",
            "@x.com",
            "a@b",
            "a b@c.com",
            "a@b@c.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_are_one_to_255_characters() {
        assert_eq!(TokenName::parse("  CI  ").unwrap().as_str(), "CI");
        assert!(TokenName::parse(&"é".repeat(255)).is_ok());
        assert_eq!(
            TokenName::parse(&"a".repeat(256)),
            Err(NameProblem::TooLong)
        );
        assert_eq!(TokenName::parse("   "), Err(NameProblem::Empty));
        assert_eq!(
            TokenName::parse("a\u{0}b"),
            Err(NameProblem::ControlCharacters)
        );
    }

    #[test]
    fn abilities_never_widen() {
        let full = Abilities::full();
        let read = abilities(&["calls:read"]);
        let both = abilities(&["calls:read", "calls:write"]);
        assert!(full.covers(&both));
        assert!(both.covers(&read));
        assert!(!read.covers(&both));
        assert!(!read.covers(&full));
        assert!(!both.covers(&full));
        assert_eq!(abilities(&["a", "*"]), full);
        assert_eq!(abilities(&["a", "a"]).as_slice(), ["a"]);
        assert_eq!(Abilities::parse(vec![]), Err(AbilitiesProblem::Empty));
        assert_eq!(
            Abilities::parse(vec!["has space".into()]),
            Err(AbilitiesProblem::BadAbility)
        );
        // A separator would let `calls:read,*` read back as `*` from the authorizer's context.
        for bad in ["calls:read,*", "a;b", "é", "a/b", &"a".repeat(65)] {
            assert_eq!(
                Abilities::parse(vec![bad.to_string()]),
                Err(AbilitiesProblem::BadAbility),
                "{bad}"
            );
        }
        let names = ["calls:read", "Leads.Write_2-x", "calls:*", &"a".repeat(64)];
        assert!(Abilities::parse(names.iter().map(|a| a.to_string()).collect()).is_ok());
    }
}
