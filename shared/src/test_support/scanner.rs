//! A secret-scanning key pair of a test's own, signing reports as GitHub does.

use lambda_http::http::Method;
use lambda_http::Request;

use super::request;

/// A secret-scanning key pair of a test's own, its public half trusted by a service as GitHub's
/// would be (`SECRET_SCANNING_KEYS`).
pub struct Scanner {
    signing: p256::ecdsa::SigningKey,
}

impl Scanner {
    /// The identifier a scanner's reports are signed under.
    pub const KEY_ID: &'static str =
        "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";

    /// A fresh key pair from the OS CSPRNG.
    pub fn new() -> Scanner {
        let mut secret = [0u8; 32];
        crate::token::fill_random(&mut secret);
        Scanner {
            signing: p256::ecdsa::SigningKey::from_slice(&secret)
                .expect("a scalar below the order"),
        }
    }

    /// GitHub's public-keys document, trusting this key as `id`.
    pub fn document(&self, id: &str) -> String {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let pem = self
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a PEM");
        serde_json::json!({"public_keys": [{"key_identifier": id, "key": pem, "is_current": true}]})
            .to_string()
    }

    /// The `Github-Public-Key-Signature` of `body`.
    pub fn sign(&self, body: &str) -> String {
        use base64::Engine;
        use p256::ecdsa::signature::Signer;
        let signature: p256::ecdsa::Signature = self.signing.sign(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// `body` as GitHub reports it: a POST to the partner endpoint signed under [`Self::KEY_ID`].
    pub fn report(&self, body: &str) -> Request {
        let signature = self.sign(body);
        request(
            Method::POST,
            "/api/v1/secret-scanning/verify",
            &[
                ("content-type", "application/json"),
                ("github-public-key-identifier", Scanner::KEY_ID),
                ("github-public-key-signature", signature.as_str()),
            ],
            body,
        )
    }
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner::new()
    }
}
