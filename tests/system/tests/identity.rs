//! Who a user is in the platform's own system (issue 28, first part): `external_id` (unique per
//! platform) and `meta` on users, `meta` on tokens, carried by verify and the authorizer.

use serde_json::{json, Value};

use shared::audit::Change;
use shared::clock::now_ms;
use shared::domain::{ExternalId, Meta, Role};
use shared::store::traits::*;
use shared::store::{Key, Refusal, StoreError};
use shared::test_support::{add_user, call, new_user, request, service, tenant};

fn external(text: &str) -> ExternalId {
    ExternalId::parse(text).expect("an external id")
}

fn meta(value: Value) -> Meta {
    Meta::parse(&value).expect("meta")
}

#[tokio::test]
async fn external_ids_are_unique_per_platform_and_found_by_lookup() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let mut first = new_user(&t.platform, Role::User);
    first.external_id = Some(external("crm 42 #a"));
    first.meta = Some(meta(json!({"plan": "pro", "seats": 3})));
    let created = add_user(&store, first).await;
    // Stored and read back as given.
    let read = store.get_user(created.id).await.unwrap().unwrap();
    assert_eq!(read, created);
    assert_eq!(read.external_id, Some(external("crm 42 #a")));
    assert_eq!(read.meta, Some(meta(json!({"plan": "pro", "seats": 3}))));
    let found = store
        .find_user_by_external_id(t.platform.id, &external("crm 42 #a"))
        .await
        .unwrap();
    assert_eq!(found.map(|u| u.id), Some(created.id));
    // Not across platforms, and not under another id.
    for (platform, id) in [(other.platform.id, "crm 42 #a"), (t.platform.id, "crm 42")] {
        let found = store
            .find_user_by_external_id(platform, &external(id))
            .await;
        assert_eq!(found.unwrap(), None, "{id}");
    }
    // The same id again on the platform is refused, and nothing of the second user is written.
    let mut second = new_user(&t.platform, Role::User);
    second.external_id = Some(external("crm 42 #a"));
    let email = second.email.clone();
    let refused = store
        .create_user(second, &Change::operator(), now_ms())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused(Refusal::ExternalIdTaken))),
        "{refused:?}"
    );
    assert_eq!(
        store
            .find_user_by_email(t.platform.id, &email)
            .await
            .unwrap(),
        None
    );
    let pointer = store
        .direct()
        .item(&Key::email(t.platform.id, &email.normalized()))
        .await
        .unwrap();
    assert_eq!(pointer, None);
    // Another platform may use it.
    let mut elsewhere = new_user(&other.platform, Role::User);
    elsewhere.external_id = Some(external("crm 42 #a"));
    let elsewhere = add_user(&store, elsewhere).await;
    let found = store
        .find_user_by_external_id(other.platform.id, &external("crm 42 #a"))
        .await
        .unwrap();
    assert_eq!(found.map(|u| u.id), Some(elsewhere.id));
}

#[tokio::test]
async fn verify_and_the_authorizer_carry_the_owners_identity() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let mut user = new_user(&t.platform, Role::User);
    user.external_id = Some(external("cus_0001"));
    user.meta = Some(meta(json!({"tier": "gold"})));
    let user = add_user(&store, user).await;
    let token = shared::test_support::token_for(
        &store,
        &user,
        shared::token::TokenKind::ApiKey,
        shared::domain::Abilities::full(),
    )
    .await;
    let body = json!({ "token": token }).to_string();
    let bearer = format!("Bearer {}", t.admin_token);
    let (status, verified) = call(
        authorizer::router,
        &service,
        request(
            lambda_http::http::Method::POST,
            "/api/v1/tokens/verify",
            &[("authorization", &bearer)],
            &body,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        verified["user"],
        json!({"id": user.id.0, "external_id": "cus_0001", "meta": {"tier": "gold"}})
    );
    assert_eq!(verified["token"]["meta"], json!(null));
    // The authorizer hands the protected API the same, as strings.
    let event = json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/api/user/me",
        "resource": "/api/user/me",
        "headers": {"Authorization": format!("Bearer {token}")},
    });
    let answer = authorizer::authorize(&service, &event)
        .await
        .expect("a policy");
    assert_eq!(answer["context"]["externalId"], json!("cus_0001"));
    assert_eq!(answer["context"]["meta"], json!(r#"{"tier":"gold"}"#));
    // A user without them: neither key is in the context.
    let answer = authorizer::authorize(
        &service,
        &json!({
            "type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/api/user/me",
            "resource": "/api/user/me",
            "headers": {"Authorization": format!("Bearer {}", t.user_token)},
        }),
    )
    .await
    .expect("a policy");
    assert!(answer["context"].get("externalId").is_none());
    assert!(answer["context"].get("meta").is_none());
}
