//! The DynamoDB client's roots of trust (`shared::trust`): exactly the Amazon Trust Services
//! roots are compiled in, a server whose certificate chains to any other root is refused, and
//! `TLS_TRUST_ROOTS=system` trusts the system's roots instead (here a CA this test generates,
//! named by `SSL_CERT_FILE`); requests are signed with the credentials of the environment.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use shared::config::{dynamodb_client_at, Config};
use shared::token::hex;
use shared::trust::{TrustRoots, AMAZON_TRUST_SERVICES_PEM};

/// SHA-256 of Amazon Root CA 1, 2, 3, 4 and Starfield Services Root Certificate Authority - G2,
/// as Amazon Trust Services publishes them.
const AMAZON_TRUST_SERVICES_FINGERPRINTS: [&str; 5] = [
    "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
    "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
    "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
    "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
    "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
];

#[test]
fn the_compiled_store_holds_exactly_the_amazon_trust_services_roots() {
    let fingerprints: Vec<String> = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES_PEM)
        .map(|der| hex(&Sha256::digest(der.expect("a well-formed certificate"))))
        .collect();
    assert_eq!(fingerprints, AMAZON_TRUST_SERVICES_FINGERPRINTS);
}

/// A root CA of the test's own and a `localhost` certificate it signed.
struct TestPki {
    root_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn test_pki() -> TestPki {
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.distinguished_name
        .push(DnType::CommonName, "tokens test root");
    let root = CertifiedIssuer::self_signed(root, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &root)
        .unwrap();
    TestPki {
        root_pem: root.pem(),
        chain: vec![server.der().clone(), root.der().clone()],
        key: PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
    }
}

/// A TLS server on loopback that answers every request as DynamoDB's ListTables would; keeps
/// the `authorization` header of each request that got through the handshake.
async fn tls_server(pki: &TestPki) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(pki.chain.clone(), pki.key.clone_key())
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let authorization = request.headers().get("authorization");
                    counted.lock().unwrap().push(
                        authorization
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                    );
                    async {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-amz-json-1.0")
                                .body(Full::new(Bytes::from_static(br#"{"TableNames":[]}"#)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, requests)
}

#[test]
fn only_the_opt_in_setting_trusts_a_root_outside_amazon_trust_services() {
    let pki = test_pki();
    let bundle = std::env::temp_dir().join(format!("tokens-test-root-{}.pem", std::process::id()));
    std::fs::write(&bundle, &pki.root_pem).unwrap();
    // Set before any thread of this test reads the environment: the system's roots are now
    // exactly the test's root, and the client needs a region and credentials of its own.
    std::env::set_var("SSL_CERT_FILE", &bundle);
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDTRUSTTEST");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (address, requests) = tls_server(&pki).await;
        let endpoint = format!("https://localhost:{}", address.port());
        // The roots a deployment with this `TLS_TRUST_ROOTS` trusts, and a ListTables through them.
        let list_tables = |setting: Option<&'static str>| {
            let endpoint = endpoint.clone();
            async move {
                let roots = Config::from_lookup(|name| match name {
                    "TABLE_NAME" => Some("t".to_string()),
                    "TLS_TRUST_ROOTS" => setting.map(str::to_string),
                    _ => None,
                })
                .unwrap()
                .trust_roots;
                let client = dynamodb_client_at(roots, Some(&endpoint)).await;
                (roots, client.list_tables().send().await)
            }
        };

        // The default: the compiled-in roots, so the test's root is unknown.
        let (roots, answer) = list_tables(None).await;
        assert_eq!(roots, TrustRoots::AmazonTrustServices);
        let error = answer.expect_err("a certificate of another root is refused");
        let described = format!("{error:?}");
        assert!(
            described.contains("DispatchFailure") && described.contains("UnknownIssuer"),
            "{described}"
        );
        assert!(
            requests.lock().unwrap().is_empty(),
            "no request got through"
        );

        // The opt-in: the system's roots, which here are the test's root.
        let (roots, answer) = list_tables(Some("system")).await;
        assert_eq!(roots, TrustRoots::System);
        let tables = answer.expect("the system's roots trust the test's root");
        assert!(tables.table_names().is_empty());
        // One request, signed with the credentials the environment gives (as Lambda does).
        let requests = requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].starts_with("AWS4-HMAC-SHA256 Credential=AKIDTRUSTTEST/"),
            "{requests:?}"
        );
    });
    std::fs::remove_file(&bundle).unwrap();
}
