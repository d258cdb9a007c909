//! What the audit and events suites share: a request through every function's router, the
//! sample events of `events/`, and one API key taken through its whole lifecycle by the routes.

use lambda_http::Request;
use serde_json::Value;

use shared::service::Service;
use shared::test_support::{event, Tenant};

/// A request through `tokenctl`'s router of every function: the status and the JSON body.
pub async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(|s| tokenctl::serve::router(&s), service, request).await
}

/// A sample event (API Gateway's request context: source 203.0.113.10, curl/8.5.0) with its
/// placeholders filled.
pub fn sample(name: &str, values: &[(&str, &str)]) -> Request {
    let path = format!("{}/../../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    event(&std::fs::read_to_string(path).unwrap(), values)
}

/// The `USER_KEY` and `ADMIN_KEY` placeholders of the sample events, filled with `t`'s keys.
pub fn keys(t: &Tenant) -> [(&str, &str); 2] {
    [
        ("USER_KEY", t.user_token.as_str()),
        ("ADMIN_KEY", t.admin_token.as_str()),
    ]
}

/// An API key of `t`'s user, and its successor, as [`key_lifecycle`] left them.
pub struct Lifecycle {
    pub key_id: String,
    pub key_token: String,
    pub successor_id: String,
    pub successor_token: String,
}

/// Through the sample events of the routes: an API key created, updated, rolled, and its
/// successor deleted (which takes the key, still in its grace period, with it).
pub async fn key_lifecycle(service: &Service, t: &Tenant) -> Lifecycle {
    let values = keys(t);
    let (status, created) = call(service, sample("api-keys-post", &values)).await;
    assert_eq!(status, 201, "{created}");
    let key_id = created["api_key"]["id"].as_str().unwrap().to_string();
    let key_token = created["api_key"]["token"].as_str().unwrap().to_string();
    let with_key = [values[0], values[1], ("KEY_ID", key_id.as_str())];
    assert_eq!(
        call(service, sample("api-keys-patch", &with_key)).await.0,
        200
    );
    let (status, rolled) = call(service, sample("api-keys-roll", &with_key)).await;
    assert_eq!(status, 201, "{rolled}");
    let successor_id = rolled["api_key"]["id"].as_str().unwrap().to_string();
    let successor_token = rolled["api_key"]["token"].as_str().unwrap().to_string();
    let with_successor = [values[0], values[1], ("KEY_ID", successor_id.as_str())];
    assert_eq!(
        call(service, sample("api-keys-delete", &with_successor))
            .await
            .0,
        200
    );
    Lifecycle {
        key_id,
        key_token,
        successor_id,
        successor_token,
    }
}
