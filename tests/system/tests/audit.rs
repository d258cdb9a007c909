//! The audit trail against DynamoDB Local: an event for every change, written with it, read
//! back through `GET /api/v1/audit-events` page by page.

use lambda_http::http::Method;
use serde_json::{json, Value};

use shared::audit::Change;
use shared::clock::EpochMs;
use shared::domain::UserStatus;
use shared::service::Service;
use shared::store::traits::*;
use shared::test_support::{request, service, tenant, token_for};
use shared::token::{self, hex, TokenKind};

mod common;
use common::{call, key_lifecycle, keys, sample, Lifecycle};

/// The audit event items of the table, as stored (a Scan: test code only).
async fn stored_events(
    store: &shared::store::DynamoStore,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let scanned = store
        .direct()
        .client
        .scan()
        .table_name(store.direct().table)
        .send()
        .await
        .unwrap();
    scanned
        .items()
        .iter()
        .filter(|item| {
            item.get("type")
                .and_then(|t| t.as_s().ok())
                .is_some_and(|t| t == "audit")
        })
        .cloned()
        .collect()
}

async fn events_of(service: &Service, admin: &str, query: &str) -> (u16, Value) {
    let bearer = format!("Bearer {admin}");
    let path = format!("/api/v1/audit-events{query}");
    call(
        service,
        request(
            Method::GET,
            &path,
            &[("authorization", bearer.as_str())],
            "",
        ),
    )
    .await
}

/// Every page of `query`, `limit` a page: the events, newest first.
async fn all_pages(service: &Service, admin: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_query = format!("{query}&limit={limit}");
        if let Some(cursor) = &cursor {
            page_query.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = events_of(service, admin, &page_query).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        events.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(data.len(), limit as usize, "a full page before a cursor");
                cursor = Some(next.to_string());
            }
            None => return events,
        }
    }
}

#[tokio::test]
async fn every_change_writes_one_event_and_reads_write_none() {
    let (service, store) = service().await;
    let t = tenant(&store).await; // operator: 2 users created, 2 keys created
    let user = t.user.id.to_string();
    let values = keys(&t);
    // Through the routes, with API Gateway's request context.
    let Lifecycle {
        key_id,
        key_token: new_token,
        successor_id: successor,
        successor_token,
    } = key_lifecycle(&service, &t).await;
    // Reads and refused changes write nothing.
    assert_eq!(call(&service, sample("api-keys-get", &values)).await.0, 200);
    let refused = request(
        Method::POST,
        "/api/user/api-keys",
        &[("authorization", &format!("Bearer {}", t.user_token))],
        "{}",
    );
    assert_eq!(call(&service, refused).await.0, 422);
    // The operator blocks and unblocks; the holder of a key revokes it.
    let change = Change::operator();
    store
        .set_user_status(t.user.id, UserStatus::Blocked, &change)
        .await
        .unwrap();
    store
        .set_user_status(t.user.id, UserStatus::Active, &change)
        .await
        .unwrap();
    let held = token_for(
        &store,
        &t.user,
        TokenKind::Personal,
        shared::domain::Abilities::full(),
    )
    .await;
    let body = json!({ "token": held }).to_string();
    let revoke = request(Method::POST, "/api/v1/tokens/revoke", &[], &body);
    assert_eq!(call(&service, revoke).await.0, 202);
    // The agency admin: the user's permanent token, first issued, then rotated.
    let admin = format!("Bearer {}", t.admin_token);
    for (method, route) in [
        (Method::GET, "/ext/get-user-token"),
        (Method::POST, "/ext/rotate-user-token"),
    ] {
        let path = format!("{route}?userId={user}");
        let headers = [("authorization", admin.as_str()), ("authtype", "Key")];
        assert_eq!(
            call(&service, request(method, &path, &headers, "")).await.0,
            200
        );
    }

    let events = all_pages(&service, &t.admin_token, &format!("?user_id={user}"), 3).await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "permanent_token.rotated",
            "permanent_token.issued",
            "token.revoked",
            "token.created",
            "user.unblocked",
            "user.blocked",
            "token.revoked",
            "token.revoked",
            "token.rolled",
            "token.updated",
            "token.created",
            "token.created",
            "user.created",
        ]
    );
    // Newest first, no repeats.
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len());
    // The route's changes: the user's key as actor, API Gateway's source.
    let updated = &events[9];
    assert_eq!(updated["actor"]["type"], "user");
    assert_eq!(updated["actor"]["user_id"], t.user.id.0);
    let caller = token::parse_any_prefix(&t.user_token).unwrap();
    assert_eq!(
        updated["actor"]["token_id"],
        format!("{}-{}", t.user.id, caller.token_id)
    );
    assert_eq!(
        updated["source"],
        json!({"ip": "203.0.113.10", "user_agent": "curl/8.5.0"})
    );
    assert_eq!(updated["target"]["token_id"], key_id);
    assert_eq!(updated["target"]["kind"], "api_key");
    assert_eq!(updated["details"]["name"], "Production API Key (renamed)");
    assert_eq!(updated["platform_id"], t.platform.id.0);
    // The successor's deletion takes its predecessor, still in its grace period, with it: one
    // event for each (written in the same transaction, so in either order).
    let mut revoked_by_delete: Vec<&str> = events[6..8]
        .iter()
        .map(|event| {
            assert_eq!(event["details"]["reason"], "deleted");
            event["target"]["token_id"].as_str().unwrap()
        })
        .collect();
    revoked_by_delete.sort();
    let mut deleted = vec![successor.as_str(), key_id.as_str()];
    deleted.sort();
    assert_eq!(revoked_by_delete, deleted);
    assert_eq!(events[8]["details"]["successor_id"], successor);
    // tokenctl's: the operator, no source; the holder's: the token it revoked.
    assert_eq!(events[4]["actor"], json!({"type": "operator"}));
    assert_eq!(events[4]["source"], Value::Null);
    assert_eq!(events[2]["actor"]["type"], "token_holder");
    assert_eq!(events[2]["details"]["reason"], "self_revoked");
    // The admin's: the admin as the actor, the user's permanent token as the target.
    for (event, generation) in [(&events[1], 1), (&events[0], 2)] {
        assert_eq!(event["actor"]["user_id"], t.admin.id.0);
        assert_eq!(event["target"]["user_id"], t.user.id.0);
        assert_eq!(event["target"]["kind"], "permanent");
        assert_eq!(event["details"]["generation"], generation);
    }
    // Never a secret, nor a hash of one, in an event or in the stored items.
    let all = serde_json::to_string(&events).unwrap();
    // Only the events: token items hold their hash, as they must.
    let audit_items = stored_events(&store).await;
    assert_eq!(
        audit_items.len(),
        13 + 2,
        "the user's thirteen and the admin's two"
    );
    let stored = format!("{audit_items:?}");
    let secrets = [
        &t.user_token,
        &t.admin_token,
        &new_token,
        &successor_token,
        &held,
    ];
    for secret in secrets {
        let hash = hex(&token::hash_token(secret).0);
        assert!(!all.contains(secret.as_str()) && !all.contains(&hash));
        assert!(!stored.contains(secret.as_str()) && !stored.contains(&hash));
    }
}

#[tokio::test]
async fn the_platform_listing_pages_every_event_once_and_tenants_stay_apart() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    for _ in 0..4 {
        token_for(
            &store,
            &t.admin,
            TokenKind::ApiKey,
            shared::domain::Abilities::full(),
        )
        .await;
    }
    // This platform: 2 users created, 2 + 4 keys; the other platform's events not among them.
    let events = all_pages(&service, &t.admin_token, "?", 2).await;
    assert_eq!(events.len(), 8);
    assert!(events.iter().all(|e| e["platform_id"] == t.platform.id.0));
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 8);
    // Another platform's user: as an unknown one; a non-admin: 403.
    let not_found = (404, json!({"message": "User not found."}));
    let query = format!("?user_id={}", t.user.id);
    assert_eq!(
        events_of(&service, &other.admin_token, &query).await,
        not_found
    );
    assert_eq!(
        events_of(&service, &t.admin_token, "?user_id=999999999").await,
        not_found
    );
    assert_eq!(
        events_of(&service, &t.user_token, "").await,
        (403, json!({"message": "You are not an administrator."}))
    );
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?user_id=-1",
        "?user_id=a",
        "?cursor=nope",
    ] {
        let (status, body) = events_of(&service, &t.admin_token, query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["errors"].is_object(), "{query}: {body}");
    }
    // A cursor of another user's listing starts nothing in this one.
    let first = events_of(
        &service,
        &t.admin_token,
        &format!("?user_id={}&limit=1", t.admin.id),
    )
    .await
    .1;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, page) = events_of(
        &service,
        &t.admin_token,
        &format!("?user_id={}&cursor={cursor}", t.user.id),
    )
    .await;
    assert_eq!(
        (status, page),
        (200, json!({"data": [], "next_cursor": null}))
    );
}

#[tokio::test]
async fn events_expire_after_the_retention_and_a_failed_change_leaves_none() {
    let (_, store) = service().await;
    let store = store.with_audit_retention(30);
    let t = tenant(&store).await;
    let now_s = shared::store::now_ms().seconds().0;
    let events = stored_events(&store).await;
    for item in &events {
        let ttl: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert!(ttl.abs_diff(now_s + 30 * 86_400) < 60, "{ttl}");
    }
    assert_eq!(events.len(), 4, "two users and two keys created");
    // A creation refused at the cap writes no event, nor does a revocation of nothing.
    let owner = shared::store::Owner::from(&t.user);
    let request = shared::mint::MintRequest {
        kind: TokenKind::ApiKey,
        name: shared::domain::TokenName::parse("over").unwrap(),
        abilities: shared::domain::Abilities::full(),
        expires_at: None,
        parent_id: None,
        change: Change::operator(),
        meta: None,
    };
    let capped = shared::mint::mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner,
        request,
        1,
        shared::store::now_ms(),
    )
    .await;
    assert!(matches!(
        capped,
        Err(shared::store::StoreError::Refused(
            shared::store::Refusal::TokenLimitReached { .. }
        ))
    ));
    let missing = token::TokenId::generate(EpochMs(1));
    assert!(!store
        .revoke_token(
            t.user.id,
            shared::token::TokenFamily::ApiKeys,
            missing,
            &Change::operator(),
            shared::store::now_ms()
        )
        .await
        .unwrap());
    let page = store
        .list_events(shared::store::EventScope::User(t.user.id), 100, None)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2, "{:?}", page.events);
}
