//! Secrets never reach the logs: every route that mints, reads or refuses a token runs with
//! logging at TRACE (the AWS SDK's own included) into a buffer, which must hold no token.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lambda_http::http::Method;
use serde_json::Value;

use shared::demo;
use shared::service::Service;
use shared::store::now_ms;
use shared::test_support::exchange;
use shared::test_support::{request, service, unreachable_service};
use tokenctl::serve::router;

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn call(
    service: &Service,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Value {
    let (_, _, body) = exchange(router(service), request(method, path, headers, body)).await;
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn no_token_appears_in_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (service, store) = service().await;
    let demo = demo::seed(&store, 100, now_ms()).await.unwrap();
    let admin = format!("Bearer {}", demo.admin_key);
    let user = format!("Bearer {}", demo.user_key);
    let mut secrets = vec![demo.admin_key.clone(), demo.user_key.clone()];

    let minted = call(
        &service,
        Method::POST,
        "/api/white-label/token",
        &[("authorization", &admin)],
        r#"{"user_id":1002}"#,
    )
    .await;
    secrets.push(minted["token"].as_str().unwrap().to_string());
    let key = call(
        &service,
        Method::POST,
        "/api/user/api-keys",
        &[("authorization", &user)],
        r#"{"name":"k"}"#,
    )
    .await;
    secrets.push(key["api_key"]["token"].as_str().unwrap().to_string());
    let pat = call(
        &service,
        Method::POST,
        "/api/v1/user/api-tokens",
        &[("authorization", &user)],
        r#"{"name":"p"}"#,
    )
    .await;
    secrets.push(pat["data"]["token"].as_str().unwrap().to_string());
    let customer = call(
        &service,
        Method::POST,
        "/api/v1/global/users/gettokenbycustomerid",
        &[("token", &demo.admin_key)],
        r#"{"customer_id":"048372910564","expiration_days":1}"#,
    )
    .await;
    secrets.push(customer["customer_api_key"].as_str().unwrap().to_string());
    let permanent = call(
        &service,
        Method::GET,
        "/ext/get-user-token?userId=1002",
        &[("authorization", &admin), ("authtype", "Key")],
        "",
    )
    .await;
    secrets.push(
        permanent["data"]["permanentToken"]["key"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    // Each new token used once, a revoked one, a corrupted one.
    for token in secrets.clone() {
        let bearer = format!("Bearer {token}");
        call(
            &service,
            Method::GET,
            "/api/user/api-keys",
            &[("authorization", &bearer)],
            "",
        )
        .await;
    }
    let id = key["api_key"]["id"].as_str().unwrap();
    call(
        &service,
        Method::DELETE,
        &format!("/api/user/api-keys/{id}"),
        &[("authorization", &user)],
        "",
    )
    .await;
    let revoked = format!("Bearer {}", secrets[3]);
    call(
        &service,
        Method::GET,
        "/api/user/api-keys",
        &[("authorization", &revoked)],
        "",
    )
    .await;
    let corrupted = format!("Bearer {}x", &demo.user_key[..demo.user_key.len() - 1]);
    call(
        &service,
        Method::GET,
        "/api/user/api-keys",
        &[("authorization", &corrupted)],
        "",
    )
    .await;

    // And a database fault with a token in hand: the error is logged in full.
    let broken = unreachable_service().await;
    call(
        &broken,
        Method::GET,
        "/api/user/api-keys",
        &[("authorization", &user)],
        "",
    )
    .await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("store failure"), "the fault was logged");
    assert!(
        logs.len() > 10_000,
        "TRACE logging captured the SDK too ({} bytes)",
        logs.len()
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a token is in the logs");
        // Nor its secret part alone.
        assert!(
            !logs.contains(&secret[5..40]),
            "part of a token is in the logs"
        );
    }
    eprintln!(
        "{} bytes of logs, {} tokens checked",
        logs.len(),
        secrets.len()
    );
}
