//! The keys that sign secret-scanning reports, and the check of a report's signature.
//!
//! GitHub signs each report's raw body with ECDSA P-256 / SHA-256 and names the key in
//! `Github-Public-Key-Identifier`; the signature, base64 of its ASN.1 DER form, comes in
//! `Github-Public-Key-Signature`. The trusted keys are GitHub's `/meta/public_keys/secret_scanning`
//! document, set as `SECRET_SCANNING_KEYS`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

/// The header naming the key that signed a report.
pub const KEY_IDENTIFIER_HEADER: &str = "github-public-key-identifier";

/// The header carrying a report's signature.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// What is wrong with `SECRET_SCANNING_KEYS`; stops the function's cold start.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(
        "SECRET_SCANNING_KEYS must be a JSON document {{\"public_keys\": [{{\"key_identifier\": ..., \"key\": \"-----BEGIN PUBLIC KEY-----...\"}}]}}: {0}"
    )]
    Document(String),
    #[error("SECRET_SCANNING_KEYS: the key {0:?} is not a PEM P-256 public key")]
    Key(String),
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<PublicKey>,
}

#[derive(Deserialize)]
struct PublicKey {
    key_identifier: String,
    key: String,
}

/// The public keys whose signatures the partner endpoint accepts, by identifier.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys(Vec<(String, VerifyingKey)>);

impl TrustedKeys {
    /// Every key of the document, current or not (a report may be signed by a key GitHub is
    /// retiring). Unset or blank: none, so every report is refused.
    pub fn parse(document: Option<&str>) -> Result<TrustedKeys, KeysError> {
        let Some(document) = document.filter(|d| !d.trim().is_empty()) else {
            return Ok(TrustedKeys::default());
        };
        let document: Document =
            serde_json::from_str(document).map_err(|e| KeysError::Document(e.to_string()))?;
        document
            .public_keys
            .into_iter()
            .map(|key| {
                VerifyingKey::from_public_key_pem(key.key.trim())
                    .map(|verifying| (key.key_identifier.clone(), verifying))
                    .map_err(|_| KeysError::Key(key.key_identifier))
            })
            .collect::<Result<_, _>>()
            .map(TrustedKeys)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `signature` (base64 DER) over `body` is valid for the trusted key named
    /// `identifier`. Anything missing, malformed or unknown is `false`.
    pub fn verify(&self, identifier: Option<&str>, signature: Option<&str>, body: &[u8]) -> bool {
        let (Some(identifier), Some(signature)) = (identifier, signature) else {
            return false;
        };
        let Some((_, key)) = self.0.iter().find(|(id, _)| id == identifier.trim()) else {
            return false;
        };
        let Ok(der) = STANDARD.decode(signature.trim()) else {
            return false;
        };
        let Ok(signature) = Signature::from_der(&der) else {
            return false;
        };
        key.verify(body, &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn key_pair(seed: u8) -> (SigningKey, String) {
        let signing = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (signing, pem)
    }

    fn document(keys: &[(&str, &str)]) -> String {
        let keys: Vec<_> = keys
            .iter()
            .map(|(id, pem)| serde_json::json!({"key_identifier": id, "key": pem, "is_current": true}))
            .collect();
        serde_json::json!({ "public_keys": keys }).to_string()
    }

    fn sign(key: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = key.sign(body);
        STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_trusted_signature_verifies_and_nothing_else_does() {
        let (signing, pem) = key_pair(7);
        let (other, other_pem) = key_pair(8);
        let keys = TrustedKeys::parse(Some(&document(&[("a", &pem), ("b", &other_pem)]))).unwrap();
        assert_eq!(keys.len(), 2);
        let body = br#"[{"token":"x","type":"t","url":"u","source":"content"}]"#;
        let good = sign(&signing, body);
        assert!(keys.verify(Some("a"), Some(&good), body));
        assert!(
            !keys.verify(Some("b"), Some(&good), body),
            "another key's id"
        );
        assert!(!keys.verify(Some("c"), Some(&good), body), "an unknown id");
        assert!(!keys.verify(None, Some(&good), body));
        assert!(!keys.verify(Some("a"), None, body));
        assert!(!keys.verify(Some("a"), Some("not base64!"), body));
        assert!(!keys.verify(Some("a"), Some(&STANDARD.encode(b"not DER")), body));
        let mut tampered = body.to_vec();
        tampered[12] = b'y';
        assert!(!keys.verify(Some("a"), Some(&good), &tampered));
        assert!(keys.verify(Some("b"), Some(&sign(&other, body)), body));
    }

    #[test]
    fn a_high_s_signature_verifies_as_go_makes_them() {
        // Go's crypto/ecdsa does not normalise s; (r, n - s) is as valid as (r, s).
        let (signing, pem) = key_pair(9);
        let keys = TrustedKeys::parse(Some(&document(&[("k", &pem)]))).unwrap();
        let body = b"[]";
        let signature: Signature = signing.sign(body);
        let (r, s) = signature.split_scalars();
        let flipped = Signature::from_scalars(r, -*s).unwrap();
        assert_ne!(flipped, signature);
        let encoded = STANDARD.encode(flipped.to_der().as_bytes());
        assert!(keys.verify(Some("k"), Some(&encoded), body));
    }

    #[test]
    fn documents_are_checked_at_cold_start() {
        assert!(TrustedKeys::parse(None).unwrap().is_empty());
        assert!(TrustedKeys::parse(Some("  ")).unwrap().is_empty());
        assert!(TrustedKeys::parse(Some(r#"{"public_keys": []}"#))
            .unwrap()
            .is_empty());
        assert!(matches!(
            TrustedKeys::parse(Some("[]")),
            Err(KeysError::Document(_))
        ));
        let bad = document(&[(
            "broken",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        )]);
        assert!(matches!(
            TrustedKeys::parse(Some(&bad)),
            Err(KeysError::Key(id)) if id == "broken"
        ));
    }
}
