//! Secrets never reach the logs: every route that mints, reads or refuses a token runs with
//! logging at TRACE (the AWS SDK's own included) into a buffer, which must hold no token. And
//! the metric lines (CloudWatch's embedded metric format) count what happened, exactly.

use lambda_http::http::Method;
use serde_json::Value;

use shared::demo;
use shared::service::Service;
use shared::store::now_ms;
use shared::store::traits::*;
use shared::test_support::{exchange, request, service, tenant, unreachable_service, Captured};
use tokenctl::serve::router;

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
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (service, store) = service().await;
    let demo = demo::seed(
        &store,
        &shared::token::TokenFormat::default(),
        100,
        now_ms(),
    )
    .await
    .unwrap();
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

    let logs = captured.text();
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

/// The metric lines captured, summed: (metric, dimension value) -> count.
fn metric_counts(captured: &Captured) -> std::collections::BTreeMap<(String, String), u64> {
    let mut counts = std::collections::BTreeMap::new();
    for line in captured.text().lines() {
        let line: Value = serde_json::from_str(line).expect("each metric line is JSON");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], shared::metrics::NAMESPACE);
        let metric = directive["Metrics"][0]["Name"]
            .as_str()
            .unwrap()
            .to_string();
        let dimension = directive["Dimensions"][0][0].as_str().unwrap();
        let value = line[dimension].as_str().unwrap().to_string();
        *counts.entry((metric.clone(), value)).or_default() += line[&metric].as_u64().unwrap();
    }
    counts
}

#[tokio::test]
async fn mints_verifications_and_revocations_emit_embedded_metric_lines() {
    use tracing_subscriber::prelude::*;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(shared::metrics::lines(captured.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let (service, store) = service().await;
    let t = tenant(&store).await; // two API keys minted
    let user = format!("Bearer {}", t.user_token);
    let admin = format!("Bearer {}", t.admin_token);
    let key = call(
        &service,
        Method::POST,
        "/api/user/api-keys",
        &[("authorization", &user)],
        r#"{"name":"k"}"#,
    )
    .await;
    let id = key["api_key"]["id"].as_str().unwrap();
    call(
        &service,
        Method::DELETE,
        &format!("/api/user/api-keys/{id}"),
        &[("authorization", &user)],
        "",
    )
    .await;
    call(
        &service,
        Method::POST,
        "/api/v1/tokens/verify",
        &[("authorization", &admin)],
        r#"{"token":"garbage"}"#,
    )
    .await;
    let body = serde_json::json!({ "token": t.user_token }).to_string();
    call(&service, Method::POST, "/api/v1/tokens/revoke", &[], &body).await;
    call(
        &service,
        Method::GET,
        "/api/user/api-keys",
        &[("authorization", &user)],
        "",
    )
    .await;

    // The authorizer: an allowed token, a refused one, and one over its usage limits.
    let event = |token: &str| {
        serde_json::json!({"type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:1:a/prod/GET/api/user/me",
            "headers": {"Authorization": format!("Bearer {token}")}})
    };
    assert!(authorizer::authorize(&service, &event(&t.admin_token))
        .await
        .is_ok());
    assert!(authorizer::authorize(&service, &event("garbage"))
        .await
        .is_err());
    let admin_user = store.get_user(t.admin.id).await.unwrap().unwrap();
    let no_credits = serde_json::json!({"credits": {"remaining": 0}});
    let no_credits = shared::limits::Limits::parse(no_credits.as_object().unwrap()).unwrap();
    store
        .set_limits(
            shared::store::Metered::User(&admin_user),
            &no_credits,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    let denied = authorizer::authorize(&service, &event(&t.admin_token))
        .await
        .unwrap();
    assert_eq!(denied["context"]["code"], "USAGE_EXCEEDED");

    let counts = metric_counts(&captured);
    let count = |metric: &str, value: &str| counts.get(&(metric.into(), value.into())).copied();
    assert_eq!(count("TokensMinted", "api_key"), Some(3), "{counts:?}");
    assert_eq!(count("Verifications", "VALID"), Some(5), "{counts:?}");
    assert_eq!(count("Verifications", "NOT_FOUND"), Some(2), "{counts:?}");
    assert_eq!(count("Authorizations", "allowed"), Some(1), "{counts:?}");
    assert_eq!(
        count("Authorizations", "unauthorized"),
        Some(1),
        "{counts:?}"
    );
    assert_eq!(
        count("Authorizations", "USAGE_EXCEEDED"),
        Some(1),
        "{counts:?}"
    );
    assert_eq!(count("Verifications", "REVOKED"), Some(1), "{counts:?}");
    assert_eq!(count("TokensRevoked", "deleted"), Some(1), "{counts:?}");
    assert_eq!(
        count("TokensRevoked", "self_revoked"),
        Some(1),
        "{counts:?}"
    );
    assert_eq!(counts.len(), 9, "nothing else: {counts:?}");
}

/// A 503's cause is logged once, where the answer is made: by the routes' error response and by
/// the authorizer's outcome, never by the conversion that carries it there.
#[tokio::test]
async fn a_fault_is_logged_once_where_the_answer_is_made() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let broken = unreachable_service().await;
    let failures = |captured: &Captured| captured.text().matches("store failure").count();

    let bearer = format!("Bearer {}", t.user_token);
    let (status, _, _) = exchange(
        router(&broken),
        request(
            Method::GET,
            "/api/user/api-keys",
            &[("authorization", &bearer)],
            "",
        ),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(failures(&captured), 1, "{}", captured.text());

    let event = serde_json::json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/api/user/me",
        "resource": "/api/user/me",
        "headers": {"Authorization": bearer},
    });
    assert!(authorizer::authorize(&broken, &event).await.is_err());
    assert_eq!(failures(&captured), 2, "{}", captured.text());
}
