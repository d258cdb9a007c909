//! The roots of trust of the SDK's TLS connections.
//!
//! The service only ever speaks TLS to AWS endpoints, and every AWS endpoint chains to one of the
//! five roots of Amazon Trust Services, so those five are compiled into the binary
//! (`certs/amazon-trust-services.pem`) and nothing is read from the system at start. Parsing the
//! system's few hundred roots was more than half of a cold start (docs/PERFORMANCE.md). A
//! deployment behind a private CA sets `TLS_TRUST_ROOTS=system` to go back to the system's roots
//! (which honour `SSL_CERT_FILE` and `SSL_CERT_DIR`).

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// The root CAs of Amazon Trust Services, in PEM.
pub const AMAZON_TRUST_SERVICES_PEM: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// Which roots the DynamoDB client trusts (`TLS_TRUST_ROOTS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrustRoots {
    /// The compiled-in Amazon Trust Services roots (`amazon`, the default).
    #[default]
    AmazonTrustServices,
    /// The system's roots, read at cold start (`system`).
    System,
}

impl TrustRoots {
    /// The variable that chooses the roots.
    pub const VARIABLE: &'static str = "TLS_TRUST_ROOTS";

    /// Reads the setting's value; unset is the default. `Err`: the value, which names no roots.
    pub fn parse(value: Option<&str>) -> Result<TrustRoots, String> {
        match value.map(str::trim) {
            None | Some("") | Some("amazon") => Ok(TrustRoots::AmazonTrustServices),
            Some("system") => Ok(TrustRoots::System),
            Some(other) => Err(other.to_string()),
        }
    }

    fn store(self) -> TrustStore {
        match self {
            TrustRoots::AmazonTrustServices => {
                TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_PEM)
            }
            TrustRoots::System => TrustStore::default(),
        }
    }

    /// The SDK's HTTPS client trusting these roots: the SDK's own default client (rustls with
    /// aws-lc, proxies from the environment) in every other respect.
    pub fn http_client(self) -> SharedHttpClient {
        let context = TlsContext::builder()
            .with_trust_store(self.store())
            .build()
            .expect("a TLS context of a trust store always builds");
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut connector = ConnectorBuilder::default()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(context.clone());
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_takes_amazon_or_system_and_nothing_else() {
        assert_eq!(
            TrustRoots::parse(None).unwrap(),
            TrustRoots::AmazonTrustServices
        );
        assert_eq!(
            TrustRoots::parse(Some("amazon")).unwrap(),
            TrustRoots::AmazonTrustServices
        );
        assert_eq!(
            TrustRoots::parse(Some(" system ")).unwrap(),
            TrustRoots::System
        );
        for bad in ["System", "all", "none", "/etc/ssl/certs"] {
            assert!(matches!(
                TrustRoots::parse(Some(bad)),
                Err(value) if value == bad
            ));
        }
    }
}
