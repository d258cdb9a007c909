//! The token format: generation, parsing, hashing and derivation.
//!
//! A token looks like `tkna_<57 base62 characters><6 base62 characters>`:
//!
//! * `tkn` is the deployment's prefix (`TOKEN_PREFIX`, see [`TokenFormat`]), which secret
//!   scanners look for; the letter after it is the kind (`a` API key, `p` personal access
//!   token, `w` white-label token, `c` customer token, `u` permanent user token, `s` service
//!   key), then `_`;
//! * 57 base62 characters encode 42 bytes, read as one big-endian number: the secret (24 bytes,
//!   192 bits from the OS CSPRNG), the owner's user id (8 bytes) and the token record id
//!   (10 bytes: 48 bits of milliseconds since the epoch then 32 random bits);
//! * the last 6 base62 characters are the CRC-32 of everything before them, so a mistyped or
//!   truncated token is rejected before any database read (as GitHub's tokens are).
//!
//! The user id and record id name the DynamoDB item, so verification is one strongly consistent
//! GetItem. Only the SHA-256 of the whole token is stored; comparison is in constant time.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::EpochMs;
use crate::domain::UserId;

const PAYLOAD_BYTES: usize = 8 + TokenId::LEN + SECRET_BYTES;
const SECRET_BYTES: usize = 24;
const PAYLOAD_CHARS: usize = 57;
const CHECKSUM_CHARS: usize = 6;
/// What follows the prefix: the kind letter, `_`, the payload and the checksum.
const AFTER_PREFIX: usize = 2 + PAYLOAD_CHARS + CHECKSUM_CHARS;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A deployment's token prefix (`TOKEN_PREFIX`): 2 to 12 characters, a lowercase letter then
/// lowercase letters and digits, so a token's length says where its prefix ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// The prefix of a deployment that sets none.
    pub const DEFAULT: &'static str = "tkn";

    /// `text` when it is a valid prefix.
    pub fn parse(text: &str) -> Option<Prefix> {
        let mut chars = text.bytes();
        let valid = (2..=12).contains(&text.len())
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        valid.then(|| Prefix(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Prefix {
        Prefix(Prefix::DEFAULT.into())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tokens a deployment mints (its prefix) and accepts (`ACCEPTED_TOKEN_PREFIXES`, which
/// always holds the prefix): an operator who changes the prefix keeps the old one accepted, so
/// the tokens already out keep working while every new one carries the new prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFormat {
    /// The minting prefix first, then the others accepted, each once.
    accepted: Vec<Prefix>,
}

/// One regular expression of a deployment's tokens, as a secret-scanning partner program takes
/// them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScanningPattern {
    pub name: String,
    pub regex: String,
}

impl TokenFormat {
    /// Mints with `prefix`; accepts it and `also`.
    pub fn new(prefix: Prefix, also: impl IntoIterator<Item = Prefix>) -> TokenFormat {
        let mut accepted = vec![prefix];
        for other in also {
            if !accepted.contains(&other) {
                accepted.push(other);
            }
        }
        TokenFormat { accepted }
    }

    /// The prefix new tokens carry.
    pub fn prefix(&self) -> &Prefix {
        &self.accepted[0]
    }

    /// Every prefix verification accepts, the minting one first.
    pub fn accepted(&self) -> &[Prefix] {
        &self.accepted
    }

    /// Mints a random token of `kind` for `user_id`, created at `now`, with this prefix.
    pub fn generate(&self, kind: TokenKind, user_id: UserId, now: EpochMs) -> IssuedToken {
        let mut secret = [0u8; SECRET_BYTES];
        fill_random(&mut secret);
        assemble(
            self.prefix(),
            kind,
            user_id,
            TokenId::generate(now),
            &secret,
        )
    }

    /// Parses a presented token of an accepted prefix without touching the database.
    pub fn parse(&self, text: &str) -> Result<ParsedToken, MalformedToken> {
        let parsed = parse_any_prefix(text)?;
        let prefix = &text[..text.len() - AFTER_PREFIX];
        match self.accepted.iter().any(|p| p.as_str() == prefix) {
            true => Ok(parsed),
            false => Err(MalformedToken),
        }
    }

    /// Whether `text` begins as a token of an accepted prefix does (the prefix, a kind letter
    /// and `_`), whatever its length or checksum: such a string (a mistyped or truncated token
    /// of ours) is never looked up as another system's imported token.
    pub fn looks_native(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        self.accepted.iter().any(|prefix| {
            let at = prefix.as_str().len();
            text.starts_with(prefix.as_str())
                && bytes
                    .get(at)
                    .is_some_and(|&b| TokenKind::from_letter(b).is_some())
                && bytes.get(at + 1) == Some(&b'_')
        })
    }

    /// The regular expression of each accepted prefix's tokens, for a secret-scanning partner
    /// program (one pattern a prefix, so each can be retired apart).
    pub fn scanning_patterns(&self) -> Vec<ScanningPattern> {
        let letters: String = TokenKind::ALL
            .iter()
            .map(|kind| kind.letter() as char)
            .collect();
        self.accepted
            .iter()
            .map(|prefix| ScanningPattern {
                name: format!("{prefix} token"),
                regex: format!(
                    r"\b{prefix}[{letters}]_[0-9A-Za-z]{{{}}}\b",
                    PAYLOAD_CHARS + CHECKSUM_CHARS
                ),
            })
            .collect()
    }

    /// The token format as a secret-scanning partner program asks it to be described.
    pub fn scanning_description(&self) -> String {
        let prefixes = match self.accepted.as_slice() {
            [only] => format!("the prefix {only}"),
            [current, older @ ..] => {
                let older: Vec<&str> = older.iter().map(Prefix::as_str).collect();
                format!(
                    "the prefix {current} (tokens issued before it may carry {})",
                    older.join(" or ")
                )
            }
            [] => unreachable!("a token format has a minting prefix"),
        };
        format!(
            "API tokens of this deployment's token service. A token starts with {prefixes}, then \
             one letter for its kind (a: API key, p: personal access token, w: white-label token, \
             c: customer token, u: permanent user token, s: service key), an underscore, then \
             {} base62 characters: {} of payload (192 random bits, the owner and the record) \
             and a {}-character CRC-32 checksum of everything before it, so a candidate is \
             checked offline before it is reported. Every match is a live credential until \
             revoked: report it to the deployment's secret-scanning route, which revokes it.",
            PAYLOAD_CHARS + CHECKSUM_CHARS,
            PAYLOAD_CHARS,
            CHECKSUM_CHARS
        )
    }
}

impl Default for TokenFormat {
    fn default() -> TokenFormat {
        TokenFormat::new(Prefix::default(), [])
    }
}

/// What a token is for; fixes its prefix letter, the listing it shows in and whether it is capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    ApiKey,
    Personal,
    WhiteLabel,
    Customer,
    Permanent,
    /// A platform's machine credential, held by its backend (not by a user).
    ServiceKey,
}

/// The listings tokens are grouped in; each is one DynamoDB Query on the owner's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenFamily {
    /// `/api/user/api-keys`: keys a user made and white-label tokens an admin made for them.
    ApiKeys,
    /// `/api/v1/user/api-tokens`: personal access tokens with abilities.
    Personal,
    Customer,
    Permanent,
    /// A platform's service keys (kept under its service account, see
    /// [`crate::domain::UserId::service_account`]).
    Service,
}

// The name stored in the `kind` attribute.
crate::domain::named!(TokenKind {
    ApiKey => "api_key",
    Personal => "personal",
    WhiteLabel => "white_label",
    Customer => "customer",
    Permanent => "permanent",
    ServiceKey => "service_key",
});

impl TokenKind {
    /// Every kind, for exhaustive tests and parsing.
    pub const ALL: [TokenKind; 6] = [
        TokenKind::ApiKey,
        TokenKind::Personal,
        TokenKind::WhiteLabel,
        TokenKind::Customer,
        TokenKind::Permanent,
        TokenKind::ServiceKey,
    ];

    fn letter(self) -> u8 {
        match self {
            TokenKind::ApiKey => b'a',
            TokenKind::Personal => b'p',
            TokenKind::WhiteLabel => b'w',
            TokenKind::Customer => b'c',
            TokenKind::Permanent => b'u',
            TokenKind::ServiceKey => b's',
        }
    }

    fn from_letter(letter: u8) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| k.letter() == letter)
    }

    /// The listing this kind belongs to.
    pub fn family(self) -> TokenFamily {
        match self {
            TokenKind::ApiKey | TokenKind::WhiteLabel => TokenFamily::ApiKeys,
            TokenKind::Personal => TokenFamily::Personal,
            TokenKind::Customer => TokenFamily::Customer,
            TokenKind::Permanent => TokenFamily::Permanent,
            TokenKind::ServiceKey => TokenFamily::Service,
        }
    }
}

impl TokenFamily {
    /// Sort-key segment of the family, so one Query lists one family.
    pub fn key_segment(self) -> &'static str {
        match self {
            TokenFamily::ApiKeys => "k",
            TokenFamily::Personal => "p",
            TokenFamily::Customer => "c",
            TokenFamily::Permanent => "u",
            TokenFamily::Service => "s",
        }
    }

    /// Every family, in a fixed order.
    pub const ALL: [TokenFamily; 5] = [
        TokenFamily::ApiKeys,
        TokenFamily::Personal,
        TokenFamily::Customer,
        TokenFamily::Permanent,
        TokenFamily::Service,
    ];

    /// The per-user cap the family counts against; permanent tokens (one a user) count against
    /// none.
    pub fn cap(self) -> Option<CapCounter> {
        match self {
            TokenFamily::ApiKeys | TokenFamily::Personal | TokenFamily::Service => {
                Some(CapCounter::Tokens)
            }
            TokenFamily::Customer => Some(CapCounter::CustomerTokens),
            TokenFamily::Permanent => None,
        }
    }
}

/// A per-user count of live tokens, kept on the user's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapCounter {
    /// API keys and personal tokens (`MAX_TOKENS_PER_USER`); a platform's service keys, on its
    /// service account.
    Tokens,
    /// Customer tokens (`MAX_CUSTOMER_TOKENS_PER_USER`).
    CustomerTokens,
}

impl CapCounter {
    /// The profile attribute holding the count.
    pub fn attribute(self) -> &'static str {
        match self {
            CapCounter::Tokens => "live_tokens",
            CapCounter::CustomerTokens => "live_customer_tokens",
        }
    }

    /// The families whose tokens this counter counts.
    pub fn families(self) -> impl Iterator<Item = TokenFamily> {
        TokenFamily::ALL
            .into_iter()
            .filter(move |family| family.cap() == Some(self))
    }
}

/// A token record id: 48 bits of creation milliseconds then 32 random bits, so ids sort by age.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; TokenId::LEN]);

impl TokenId {
    const LEN: usize = 10;

    /// A new id for a token created at `now`.
    pub fn generate(now: EpochMs) -> TokenId {
        let mut bytes = [0u8; TokenId::LEN];
        bytes[..6].copy_from_slice(&now.0.to_be_bytes()[2..]);
        fill_random(&mut bytes[6..]);
        TokenId(bytes)
    }

    /// The fixed id of a user's permanent token of one generation.
    pub fn permanent(generation: u32) -> TokenId {
        let mut bytes = [0u8; TokenId::LEN];
        bytes[6..].copy_from_slice(&generation.to_be_bytes());
        TokenId(bytes)
    }

    /// The generation of a permanent token's record id ([`TokenId::permanent`]); `None` for
    /// any other id.
    pub fn permanent_generation(&self) -> Option<u32> {
        let (time, generation) = self.0.split_at(6);
        time.iter()
            .all(|&b| b == 0)
            .then(|| u32::from_be_bytes(generation.try_into().expect("4 bytes after the first 6")))
    }

    /// Parses the 20 lowercase hex characters of [`fmt::Display`] (path parameters).
    pub fn parse(text: &str) -> Option<TokenId> {
        if text.len() != TokenId::LEN * 2 {
            return None;
        }
        let mut bytes = [0u8; TokenId::LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = text.get(i * 2..i * 2 + 2)?;
            if !pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(TokenId(bytes))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// The id a token is known by in responses and to `tokenctl`: `<owner user id>-<record id>`.
/// Like the token itself it names its owner, so it locates the record without an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicTokenId {
    pub user_id: UserId,
    pub token_id: TokenId,
}

impl PublicTokenId {
    pub fn parse(text: &str) -> Option<PublicTokenId> {
        let (user, id) = text.split_once('-')?;
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(PublicTokenId {
            user_id: UserId(user.parse().ok()?),
            token_id: TokenId::parse(id)?,
        })
    }
}

impl fmt::Display for PublicTokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.user_id, self.token_id)
    }
}

/// The SHA-256 of a token, the only form in which it is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Constant-time comparison, so response timing says nothing about the stored hash.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A plaintext token, returned to its owner once. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// The plaintext, for the one response that hands it out.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// A syntactically valid token: what it names, and the hash to compare with the stored one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedToken {
    pub kind: TokenKind,
    pub user_id: UserId,
    pub token_id: TokenId,
    pub hash: TokenHash,
}

/// A new token: the plaintext for the caller and the parsed form for the store.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub secret: TokenSecret,
    pub parsed: ParsedToken,
}

/// Why a string is not a token; kept coarse so responses reveal nothing useful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed token")]
pub struct MalformedToken;

/// The server key permanent tokens are derived from (`PERMANENT_TOKEN_KEY`).
#[derive(Clone)]
pub struct PermanentKey(Vec<u8>);

impl PermanentKey {
    /// At least 32 bytes, so the derived tokens carry the full 192 bits of the secret.
    pub const MIN_LEN: usize = 32;

    /// Accepts a key of at least [`Self::MIN_LEN`] bytes.
    pub fn new(key: &[u8]) -> Option<PermanentKey> {
        (key.len() >= Self::MIN_LEN).then(|| PermanentKey(key.to_vec()))
    }

    /// The permanent token of `user_id` for `generation` with `prefix`: HMAC-SHA256 of the key,
    /// the user id and the generation, so it is the same on every call and never stored in
    /// plaintext (the prefix is outside the HMAC: one generation's secret is the same under
    /// every prefix, and only the token that carries the stored hash authenticates).
    pub fn derive(&self, prefix: &Prefix, user_id: UserId, generation: u32) -> IssuedToken {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"permanent-token/v1");
        mac.update(&user_id.0.to_be_bytes());
        mac.update(&generation.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let mut secret = [0u8; SECRET_BYTES];
        secret.copy_from_slice(&digest[..SECRET_BYTES]);
        assemble(
            prefix,
            TokenKind::Permanent,
            user_id,
            TokenId::permanent(generation),
            &secret,
        )
    }
}

impl fmt::Debug for PermanentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PermanentKey(..)")
    }
}

fn assemble(
    prefix: &Prefix,
    kind: TokenKind,
    user_id: UserId,
    token_id: TokenId,
    secret: &[u8; SECRET_BYTES],
) -> IssuedToken {
    let mut payload = [0u8; PAYLOAD_BYTES];
    payload[..SECRET_BYTES].copy_from_slice(secret);
    payload[SECRET_BYTES..SECRET_BYTES + 8].copy_from_slice(&user_id.0.to_be_bytes());
    payload[SECRET_BYTES + 8..].copy_from_slice(&token_id.0);
    let mut text = String::with_capacity(prefix.as_str().len() + AFTER_PREFIX);
    text.push_str(prefix.as_str());
    text.push(kind.letter() as char);
    text.push('_');
    text.push_str(&encode_base62(&payload, PAYLOAD_CHARS));
    let checksum = crc32fast::hash(text.as_bytes());
    text.push_str(&encode_base62(&checksum.to_be_bytes(), CHECKSUM_CHARS));
    let hash = hash_token(&text);
    IssuedToken {
        secret: TokenSecret(text),
        parsed: ParsedToken {
            kind,
            user_id,
            token_id,
            hash,
        },
    }
}

/// Parses and checks a token of any well-formed prefix without touching the database. What a
/// deployment accepts is [`TokenFormat::parse`]; this is for what holds under every prefix
/// (tests, tools that read a token's owner and id).
pub fn parse_any_prefix(text: &str) -> Result<ParsedToken, MalformedToken> {
    let bytes = text.as_bytes();
    let Some(at) = text.len().checked_sub(AFTER_PREFIX) else {
        return Err(MalformedToken);
    };
    if !text.is_ascii() || Prefix::parse(&text[..at]).is_none() || bytes[at + 1] != b'_' {
        return Err(MalformedToken);
    }
    let kind = TokenKind::from_letter(bytes[at]).ok_or(MalformedToken)?;
    let (body, checksum) = text.split_at(text.len() - CHECKSUM_CHARS);
    let checksum: [u8; 4] = decode_base62(checksum)
        .ok_or(MalformedToken)?
        .try_into()
        .map_err(|_| MalformedToken)?;
    if crc32fast::hash(body.as_bytes()) != u32::from_be_bytes(checksum) {
        return Err(MalformedToken);
    }
    let payload: [u8; PAYLOAD_BYTES] = decode_base62(&body[at + 2..])
        .ok_or(MalformedToken)?
        .try_into()
        .map_err(|_| MalformedToken)?;
    let mut user = [0u8; 8];
    user.copy_from_slice(&payload[SECRET_BYTES..SECRET_BYTES + 8]);
    let mut token_id = [0u8; TokenId::LEN];
    token_id.copy_from_slice(&payload[SECRET_BYTES + 8..]);
    Ok(ParsedToken {
        kind,
        user_id: UserId(u64::from_be_bytes(user)),
        token_id: TokenId(token_id),
        hash: hash_token(text),
    })
}

/// The hash another system's token is imported and looked up by: the SHA-256 of the secret, which
/// for Laravel Sanctum's `<id>|<secret>` form is the part after `|` (Sanctum stores
/// `sha256(<secret>)`), of the whole string otherwise. `None` for a string no system issues as
/// a token (fewer than 8 or more than 1024 characters, or one outside visible ASCII), which is
/// then never looked up.
pub fn foreign_hash(text: &str) -> Option<TokenHash> {
    let plausible = (8..=1024).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    if !plausible {
        return None;
    }
    let secret = match text.split_once('|') {
        Some((id, secret))
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !secret.is_empty() =>
        {
            secret
        }
        _ => text,
    };
    Some(hash_token(secret))
}

/// The SHA-256 of a string as a token would be hashed, whether or not it is one.
pub fn hash_token(text: &str) -> TokenHash {
    TokenHash(Sha256::digest(text.as_bytes()).into())
}

/// `bytes` bytes from the OS CSPRNG as lowercase hex (idempotency tokens, unique names).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    hex(&buf)
}

/// Lowercase hex of `bytes` (token ids, random names, certificate fingerprints in tests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // A machine whose kernel cannot provide randomness must not mint tokens at all.
    getrandom::fill(buf).expect("the OS random number generator is unavailable");
}

/// Big-endian base62 of `bytes`, left-padded with `0` to exactly `width` characters.
fn encode_base62(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        *slot = ALPHABET[remainder as usize];
    }
    debug_assert!(number.iter().all(|&b| b == 0), "width too small");
    String::from_utf8(digits).expect("alphabet is ASCII")
}

/// Inverse of [`encode_base62`] for the byte length its width implies; `None` on a character
/// outside the alphabet or a value that does not fit (so every token has one spelling).
fn decode_base62(text: &str) -> Option<Vec<u8>> {
    let len = match text.len() {
        PAYLOAD_CHARS => PAYLOAD_BYTES,
        CHECKSUM_CHARS => 4,
        _ => return None,
    };
    let mut number = vec![0u8; len];
    for c in text.bytes() {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return None,
        };
        let mut carry = u32::from(digit);
        for byte in number.iter_mut().rev() {
            let value = u32::from(*byte) * 62 + carry;
            *byte = value as u8;
            carry = value >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The length of a token of the default prefix.
    const TOKEN_LEN: usize = Prefix::DEFAULT.len() + AFTER_PREFIX;

    fn generate(kind: TokenKind, user: UserId, now: EpochMs) -> IssuedToken {
        TokenFormat::default().generate(kind, user, now)
    }

    fn parse(text: &str) -> Result<ParsedToken, MalformedToken> {
        TokenFormat::default().parse(text)
    }

    fn any_kind() -> impl Strategy<Value = TokenKind> {
        prop::sample::select(TokenKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn generated_tokens_round_trip(kind in any_kind(), user in any::<u64>(), ms in 0u64..(1 << 48)) {
            let issued = generate(kind, UserId(user), EpochMs(ms));
            let text = issued.secret.expose();
            prop_assert_eq!(text.len(), TOKEN_LEN);
            prop_assert!(text.starts_with("tkn"));
            prop_assert_eq!(parse(text), Ok(issued.parsed.clone()));
            prop_assert_eq!(issued.parsed.user_id, UserId(user));
            prop_assert_eq!(issued.parsed.kind, kind);
        }

        #[test]
        fn every_single_character_corruption_is_rejected(
            kind in any_kind(),
            user in any::<u64>(),
            position in 0usize..TOKEN_LEN,
            replacement in prop::char::range('!', '~'),
        ) {
            let issued = generate(kind, UserId(user), EpochMs(1_700_000_000_000));
            let text = issued.secret.expose();
            let original = text.as_bytes()[position] as char;
            prop_assume!(replacement != original);
            let mut corrupted = text.to_string();
            corrupted.replace_range(position..position + 1, &replacement.to_string());
            prop_assert_eq!(parse(&corrupted), Err(MalformedToken));
        }

        #[test]
        fn arbitrary_strings_never_panic(text in ".{0,90}") {
            let _ = parse(&text);
        }

        #[test]
        fn base62_round_trips(bytes in prop::array::uniform32(any::<u8>())) {
            let mut payload = [0u8; PAYLOAD_BYTES];
            payload[..32].copy_from_slice(&bytes);
            let text = encode_base62(&payload, PAYLOAD_CHARS);
            prop_assert_eq!(decode_base62(&text), Some(payload.to_vec()));
        }
    }

    #[test]
    fn the_largest_payload_fits_and_one_more_digit_overflows() {
        let max = encode_base62(&[0xff; PAYLOAD_BYTES], PAYLOAD_CHARS);
        assert_eq!(decode_base62(&max), Some(vec![0xff; PAYLOAD_BYTES]));
        assert_eq!(decode_base62(&"z".repeat(PAYLOAD_CHARS)), None);
    }

    #[test]
    fn generations_are_unique() {
        // Secrets: 192 random bits, unique even when minted in the same millisecond.
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let issued = generate(TokenKind::ApiKey, UserId(7), EpochMs(1_700_000_000_000));
            assert!(seen.insert(issued.secret.expose().to_string()));
        }
        // Record ids: unique across milliseconds by construction; within one millisecond 32
        // random bits make a clash rare, and the store refuses one (the mint is retried).
        let mut ids = HashSet::new();
        for ms in 0..20_000 {
            assert!(ids.insert(TokenId::generate(EpochMs(1_700_000_000_000 + ms))));
        }
    }

    #[test]
    fn every_checksum_flip_is_rejected_without_state() {
        let issued = generate(TokenKind::Customer, UserId(42), EpochMs(1));
        let text = issued.secret.expose();
        let last = text.len() - 1;
        for c in ALPHABET.iter().map(|&b| b as char) {
            if c == text.as_bytes()[last] as char {
                continue;
            }
            let flipped = format!("{}{}", &text[..last], c);
            assert_eq!(parse(&flipped), Err(MalformedToken), "{c}");
        }
    }

    #[test]
    fn foreign_shapes_are_rejected() {
        for text in ["", "tkna_", "2|abc123xyz789", "Bearer tkna_x", "tknz_aaa"] {
            assert_eq!(parse(text), Err(MalformedToken), "{text}");
        }
        let issued = generate(TokenKind::ApiKey, UserId(1), EpochMs(1));
        let text = issued.secret.expose();
        assert_eq!(parse(&text[..TOKEN_LEN - 1]), Err(MalformedToken));
        assert_eq!(parse(&format!("{text}0")), Err(MalformedToken));
        assert_eq!(parse(&format!(" {}", &text[1..])), Err(MalformedToken));
    }

    #[test]
    fn permanent_tokens_are_stable_per_user_and_generation() {
        let key = PermanentKey::new(&[9u8; 32]).unwrap();
        let a = key.derive(&Prefix::default(), UserId(5), 1);
        assert_eq!(
            a.secret,
            key.derive(&Prefix::default(), UserId(5), 1).secret
        );
        assert_ne!(
            a.secret,
            key.derive(&Prefix::default(), UserId(5), 2).secret
        );
        assert_ne!(
            a.secret,
            key.derive(&Prefix::default(), UserId(6), 1).secret
        );
        let other = PermanentKey::new(&[8u8; 32]).unwrap();
        assert_ne!(
            a.secret,
            other.derive(&Prefix::default(), UserId(5), 1).secret
        );
        assert_eq!(parse(a.secret.expose()), Ok(a.parsed.clone()));
        assert_eq!(a.parsed.token_id, TokenId::permanent(1));
        assert_eq!(a.parsed.token_id.permanent_generation(), Some(1));
        assert_eq!(
            TokenId::permanent(u32::MAX).permanent_generation(),
            Some(u32::MAX)
        );
        assert_eq!(TokenId::generate(EpochMs(1)).permanent_generation(), None);
        assert!(PermanentKey::new(&[1u8; 31]).is_none());
    }

    #[test]
    fn prefixes_are_two_to_twelve_lowercase_letters_and_digits_from_a_letter() {
        for good in ["tk", "tkn", "acme", "a1b2c3d4e5f6", "x9"] {
            assert_eq!(
                Prefix::parse(good).map(|p| p.to_string()),
                Some(good.into())
            );
        }
        for bad in [
            "",
            "t",
            "1tk",
            "Tkn",
            "tk_n",
            "tkn-",
            "abcdefghijklm",
            "tkn ",
            "äbc",
        ] {
            assert_eq!(Prefix::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_changed_prefix_mints_the_new_one_and_accepts_both() {
        let old = TokenFormat::default();
        let acme = Prefix::parse("acme").unwrap();
        let changed = TokenFormat::new(acme.clone(), [Prefix::default(), acme.clone()]);
        assert_eq!(changed.accepted(), [acme.clone(), Prefix::default()]);
        let before = old.generate(TokenKind::ApiKey, UserId(3), EpochMs(5));
        let after = changed.generate(TokenKind::ServiceKey, UserId(3), EpochMs(5));
        let after_text = after.secret.expose();
        assert!(after_text.starts_with("acmes_"), "{after_text}");
        assert_eq!(after_text.len(), 4 + AFTER_PREFIX);
        assert_eq!(
            changed.parse(before.secret.expose()),
            Ok(before.parsed.clone())
        );
        assert_eq!(changed.parse(after_text), Ok(after.parsed.clone()));
        // The old format never accepted the new prefix; one without the old prefix retires it.
        assert_eq!(old.parse(after_text), Err(MalformedToken));
        let retired = TokenFormat::new(acme, []);
        assert_eq!(retired.parse(before.secret.expose()), Err(MalformedToken));
        assert!(!retired.looks_native(before.secret.expose()));
        assert!(retired.looks_native(after_text));
        // A prefix swapped on a valid token breaks its checksum.
        let swapped = format!("tkns_{}", &after_text[6..]);
        assert_eq!(changed.parse(&swapped), Err(MalformedToken));
        assert!(changed.looks_native(&swapped));
        assert!(
            changed.looks_native(&after_text[..20]),
            "truncated: still ours"
        );
        assert!(!changed.looks_native("acme"));
        assert!(!changed.looks_native("acmex_0123456789"), "no such kind");
    }

    #[test]
    fn scanning_patterns_match_every_accepted_prefix_and_nothing_else() {
        let format = TokenFormat::new(Prefix::parse("acme").unwrap(), [Prefix::default()]);
        let patterns = format.scanning_patterns();
        assert_eq!(patterns.len(), 2);
        assert_eq!(patterns[0].regex, r"\bacme[apwcus]_[0-9A-Za-z]{63}\b");
        assert_eq!(patterns[1].regex, r"\btkn[apwcus]_[0-9A-Za-z]{63}\b");
        let description = format.scanning_description();
        assert!(
            description.contains("the prefix acme (tokens issued before it may carry tkn)"),
            "{description}"
        );
        let single = TokenFormat::default().scanning_description();
        assert!(
            single.contains("A token starts with the prefix tkn, then one letter"),
            "{single}"
        );
    }

    #[test]
    fn permanent_tokens_keep_their_secret_under_every_prefix() {
        let key = PermanentKey::new(&[9u8; 32]).unwrap();
        let acme = Prefix::parse("acme").unwrap();
        let old = key.derive(&Prefix::default(), UserId(5), 1);
        let new = key.derive(&acme, UserId(5), 1);
        let payload = |issued: &IssuedToken, at: usize| {
            issued.secret.expose()[at + 2..at + 2 + PAYLOAD_CHARS].to_string()
        };
        assert_eq!(payload(&old, 3), payload(&new, 4));
        assert_ne!(old.parsed.hash, new.parsed.hash);
        assert_eq!(old.parsed.token_id, new.parsed.token_id);
    }

    #[test]
    fn foreign_tokens_hash_their_secret_and_sanctums_the_part_after_the_bar() {
        let sanctum = "42|Zt9xQ2kLmN4pR7sV1wY3aB6cD8eF0gH2iJ5kL7mN";
        let secret = &sanctum[3..];
        assert_eq!(foreign_hash(sanctum), Some(hash_token(secret)));
        // Sanctum's own export holds sha256(secret): the same hash, whichever form comes in.
        assert_eq!(foreign_hash(secret), Some(hash_token(secret)));
        assert_eq!(
            foreign_hash("sk_live_abc123XYZ"),
            Some(hash_token("sk_live_abc123XYZ"))
        );
        for not_sanctum in ["x1|abcdefgh", "|abcdefghij", "12345678|"] {
            assert_eq!(
                foreign_hash(not_sanctum),
                Some(hash_token(not_sanctum)),
                "{not_sanctum}"
            );
        }
        for implausible in [
            "",
            "short",
            "has space in it",
            "tab\there!",
            "é-accented-key",
        ] {
            assert_eq!(foreign_hash(implausible), None, "{implausible}");
        }
        assert_eq!(foreign_hash(&"a".repeat(1025)), None);
        assert!(foreign_hash(&"a".repeat(1024)).is_some());
    }

    #[test]
    fn token_ids_sort_by_creation_time_and_parse_back() {
        let older = TokenId::generate(EpochMs(1_000));
        let newer = TokenId::generate(EpochMs(1_001));
        assert!(older.to_string() < newer.to_string());
        assert_eq!(TokenId::parse(&older.to_string()), Some(older));
        assert_eq!(TokenId::parse("zz"), None);
        assert_eq!(TokenId::parse(&older.to_string().to_uppercase()), None);
        assert_eq!(TokenId::parse("+1234567890abcdef012"), None);
    }

    #[test]
    fn public_ids_name_owner_and_record() {
        let id = PublicTokenId {
            user_id: UserId(42),
            token_id: TokenId::generate(EpochMs(5)),
        };
        let text = id.to_string();
        assert!(text.starts_with("42-"));
        assert_eq!(PublicTokenId::parse(&text), Some(id));
        for bad in [
            "",
            "42",
            "-abc",
            "x-0000",
            "42-",
            &text[..text.len() - 1],
            &format!("+{text}"),
        ] {
            assert_eq!(PublicTokenId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let issued = generate(TokenKind::ApiKey, UserId(1), EpochMs(1));
        let shown = format!("{issued:?}");
        assert!(!shown.contains(issued.secret.expose()));
        assert!(!shown.contains(&issued.secret.expose()[5..20]));
    }
}
