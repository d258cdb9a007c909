//! Features that compose: a key's meter, cap slot and leak response follow it through rolls,
//! children and rotations, against DynamoDB Local, with races as real parallel requests
//! through the routes (every route of `tokenctl serve`, in-process, on a multi-threaded
//! runtime).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lambda_http::http::Method;
use serde_json::{json, Value};

use shared::clock::{EpochMs, EpochSeconds};
use shared::domain::{Abilities, Role, UserId};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, TokenRecord};
use shared::test_support::{
    add_user, exchange, new_user, request, service, status_and_json, tenant, token_for, Scanner,
    Tenant,
};
use shared::token::{self, CapCounter, TokenFamily, TokenKind};

/// `method path` with `body`, as the holder of `token` (none: no credential).
async fn send(
    service: &Service,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let request = request(method, path, &headers, &body.to_string());
    let (status, headers, body) = exchange(tokenctl::serve::router(service), request).await;
    status_and_json(status, &headers, &body)
}

/// A new API key of the holder of `token`: its public id and secret.
async fn create_key(service: &Service, token: &str) -> (String, String) {
    let (status, body) = send(
        service,
        Method::POST,
        "/api/user/api-keys",
        Some(token),
        json!({"name": "lineage"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let key = &body["api_key"];
    (
        key["id"].as_str().unwrap().to_string(),
        key["token"].as_str().unwrap().to_string(),
    )
}

/// Rolls the key `id` of the holder of `token` with `grace` seconds.
async fn roll(service: &Service, token: &str, id: &str, grace: u64) -> (u16, Value) {
    send(
        service,
        Method::POST,
        &format!("/api/user/api-keys/{id}/roll"),
        Some(token),
        json!({"grace_seconds": grace}),
    )
    .await
}

/// The successor's id and secret in a roll's answer.
fn successor(rolled: &Value) -> (String, String) {
    let key = &rolled["api_key"];
    (
        key["id"].as_str().unwrap().to_string(),
        key["token"].as_str().unwrap().to_string(),
    )
}

/// The platform admin sets the limits of the token `id`.
async fn set_limits(service: &Service, admin: &str, id: &str, limits: Value) {
    let path = format!("/api/v1/tokens/{id}/limits");
    let (status, body) = send(service, Method::PUT, &path, Some(admin), limits).await;
    assert_eq!(status, 200, "{body}");
}

/// `POST /api/v1/tokens/verify` of `token` by the platform admin, consuming a unit or not.
async fn verify(service: &Service, admin: &str, token: &str, consume: bool) -> Value {
    let body = json!({"token": token, "consume": consume});
    let (status, answer) = send(
        service,
        Method::POST,
        "/api/v1/tokens/verify",
        Some(admin),
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The user's cap counter of API keys and personal tokens, as stored on its profile.
async fn counter(store: &DynamoStore, user: UserId) -> i64 {
    store
        .direct()
        .cap_count(user, CapCounter::Tokens)
        .await
        .unwrap()
}

/// The user's live API keys and personal tokens that hold a cap slot (all but rolled ones).
async fn slot_holders(store: &DynamoStore, user: UserId) -> Vec<TokenRecord> {
    let mut holders = Vec::new();
    for family in [TokenFamily::ApiKeys, TokenFamily::Personal] {
        let live = store.list_tokens(user, family, now_ms()).await.unwrap();
        holders.extend(live.into_iter().filter(|t| t.rolled_to.is_none()));
    }
    holders
}

/// The stored record a secret names (the live item, else its retired copy).
async fn record_of(store: &DynamoStore, secret: &str) -> TokenRecord {
    let parsed = token::parse_any_prefix(secret).unwrap();
    let address = shared::store::TokenAddress::from(&parsed);
    store
        .find_tokens(&[address], &[])
        .await
        .unwrap()
        .tokens
        .remove(&address)
        .unwrap()
}

fn authenticates(answer: &Value) -> bool {
    answer["valid"] == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_roll_racing_charges_spends_no_credit_twice() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    for trial in 0..3 {
        let (id, old) = create_key(&service, &t.user_token).await;
        set_limits(
            &service,
            &t.admin_token,
            &id,
            json!({"credits": {"remaining": 30}}),
        )
        .await;
        // 12 clients spend the key (and, once it exists, its successor) while it is rolled.
        let successor_secret: Arc<Mutex<Option<String>>> = Arc::default();
        let allowed = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for client in 0..12 {
            let (service, admin, old) = (service.clone(), t.admin_token.clone(), old.clone());
            let (successor_secret, allowed) = (successor_secret.clone(), allowed.clone());
            clients.push(tokio::spawn(async move {
                let mut refused = 0;
                for unit in 0..20 {
                    let known = successor_secret.lock().unwrap().clone();
                    let key = match known {
                        Some(new) if (client + unit) % 2 == 0 => new,
                        _ => old.clone(),
                    };
                    let answer = verify(&service, &admin, &key, true).await;
                    if authenticates(&answer) {
                        allowed.fetch_add(1, Ordering::SeqCst);
                    } else {
                        assert_eq!(answer["code"], "USAGE_EXCEEDED", "{answer}");
                        refused += 1;
                        if refused == 3 {
                            break;
                        }
                    }
                }
            }));
        }
        let (status, rolled) = roll(&service, &t.user_token, &id, 600).await;
        assert_eq!(status, 201, "{rolled}");
        let (_, new) = successor(&rolled);
        *successor_secret.lock().unwrap() = Some(new.clone());
        for client in clients {
            client.await.unwrap();
        }
        // Whatever is left is spent through the successor: exactly 30 units in all.
        while authenticates(&verify(&service, &t.admin_token, &new, true).await) {
            allowed.fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(allowed.load(Ordering::SeqCst), 30, "trial {trial}");
        for key in [&old, &new] {
            let answer = verify(&service, &t.admin_token, key, false).await;
            assert_eq!(answer["code"], "USAGE_EXCEEDED", "{answer}");
            assert_eq!(answer["credits"], json!({"remaining": 0}));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limits_change_racing_a_roll_lands_on_the_lineage() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    for round in 0..8u64 {
        let (id, old) = create_key(&service, &t.user_token).await;
        set_limits(
            &service,
            &t.admin_token,
            &id,
            json!({"credits": {"remaining": 5}}),
        )
        .await;
        let wanted = 100 + round;
        let change = {
            let (service, admin, id) = (service.clone(), t.admin_token.clone(), id.clone());
            tokio::spawn(async move {
                set_limits(
                    &service,
                    &admin,
                    &id,
                    json!({"credits": {"remaining": wanted}}),
                )
                .await
            })
        };
        let (status, rolled) = roll(&service, &t.user_token, &id, 600).await;
        assert_eq!(status, 201, "{rolled}");
        change.await.unwrap();
        let (_, new) = successor(&rolled);
        // Before the roll or after it, the change is the lineage's: never lost, never split.
        for key in [&old, &new] {
            let answer = verify(&service, &t.admin_token, key, false).await;
            assert_eq!(
                answer["credits"],
                json!({"remaining": wanted}),
                "round {round}"
            );
        }
        assert!(record_of(&store, &old).await.meter.is_none());
    }
}

#[tokio::test]
async fn a_roll_with_grace_never_multiplies_a_rate_limit_nor_refills() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (id, old) = create_key(&service, &t.user_token).await;
    set_limits(
        &service,
        &t.admin_token,
        &id,
        json!({"rate_limit": {"limit": 5, "window_seconds": 86400}, "credits": {"remaining": 3, "refill": {"amount": 3, "interval": "day"}}}),
    )
    .await;
    let (status, rolled) = roll(&service, &t.user_token, &id, 604_800).await;
    assert_eq!(status, 201, "{rolled}");
    let (new_id, new) = successor(&rolled);
    // Credits: 3 units in all, whichever key spends them.
    let mut allowed = 0;
    for unit in 0..8 {
        let key = if unit % 2 == 0 { &old } else { &new };
        if service.admit(Some(key), now_ms()).await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    // The next day: one refill for the lineage, never one of the predecessor's own.
    let tomorrow = now_ms().0 + 86_400_000;
    let mut allowed = 0;
    for unit in 0..8 {
        let key = if unit % 2 == 0 { &old } else { &new };
        if service.admit(Some(key), EpochMs(tomorrow)).await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    // The rate limit: the successor's window counted every unit of both keys.
    let window = verify(&service, &t.admin_token, &old, false).await;
    assert!(window["ratelimit"]["remaining"].as_u64().unwrap() <= 2);
    // A chain is refused while the predecessor works: never more than one predecessor.
    let (status, answer) = roll(&service, &t.user_token, &new_id, 60).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer,
        json!({"message": "This API key replaced one that still works: it can be rolled once that key's grace period has ended."})
    );
    // Rate window alone: limit 5 per window, one roll, at most 5 units in the window.
    let (id, old) = create_key(&service, &t.user_token).await;
    set_limits(
        &service,
        &t.admin_token,
        &id,
        json!({"rate_limit": {"limit": 5, "window_seconds": 86400}}),
    )
    .await;
    let (_, rolled) = roll(&service, &t.user_token, &id, 600).await;
    let (_, new) = successor(&rolled);
    let mut allowed = 0;
    for unit in 0..12 {
        let key = if unit % 2 == 0 { &old } else { &new };
        if verify(&service, &t.admin_token, key, true).await["valid"] == json!(true) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}

#[tokio::test]
async fn chained_rolls_keep_one_predecessor_and_a_grace_0_roll_is_409_after() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (first_id, first) = create_key(&service, &t.user_token).await;
    let (_, rolled) = roll(&service, &t.user_token, &first_id, 3600).await;
    let (second_id, second) = successor(&rolled);
    let mut working = vec![first.clone(), second.clone()];
    for _ in 0..3 {
        let (status, _) = roll(&service, &t.user_token, &second_id, 3600).await;
        assert_eq!(status, 409);
    }
    // Still two keys for one slot, and both work; the third never came.
    for key in &working {
        assert!(service.authenticate(Some(key), now_ms()).await.is_ok());
    }
    assert_eq!(
        counter(&store, t.user.id).await,
        slot_holders(&store, t.user.id).await.len() as i64
    );
    // Once the first is deleted, the second rolls (grace 0) and then is 409, not 404.
    let (status, _) = send(
        &service,
        Method::DELETE,
        &format!("/api/user/api-keys/{first_id}"),
        Some(&t.user_token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, rolled) = roll(&service, &t.user_token, &second_id, 0).await;
    assert_eq!(status, 201, "{rolled}");
    let (status, answer) = roll(&service, &t.user_token, &second_id, 0).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer,
        json!({"message": "This API key has already been rolled."})
    );
    working = vec![successor(&rolled).1];
    for key in [&first, &second] {
        assert!(service.authenticate(Some(key), now_ms()).await.is_err());
    }
    assert!(service
        .authenticate(Some(&working[0]), now_ms())
        .await
        .is_ok());
}

#[tokio::test]
async fn rolling_a_disabled_key_gives_a_disabled_successor() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (id, old) = create_key(&service, &t.user_token).await;
    let (status, _) = send(
        &service,
        Method::PATCH,
        &format!("/api/user/api-keys/{id}"),
        Some(&t.user_token),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, rolled) = roll(&service, &t.user_token, &id, 600).await;
    assert_eq!(status, 201, "{rolled}");
    let (new_id, new) = successor(&rolled);
    for key in [&old, &new] {
        let answer = verify(&service, &t.admin_token, key, false).await;
        assert_eq!(answer["code"], "DISABLED", "{answer}");
    }
    // Enabled again, the successor works; the old key stays as it was, disabled.
    let path = format!("/api/user/api-keys/{new_id}");
    let enable = json!({"enabled": true});
    let (status, _) = send(&service, Method::PATCH, &path, Some(&t.user_token), enable).await;
    assert_eq!(status, 200);
    assert!(service.authenticate(Some(&new), now_ms()).await.is_ok());
    assert!(service.authenticate(Some(&old), now_ms()).await.is_err());
    // And a predecessor in its grace period stops while its successor is disabled.
    let (id, old) = create_key(&service, &t.user_token).await;
    let (_, rolled) = roll(&service, &t.user_token, &id, 600).await;
    let (new_id, new) = successor(&rolled);
    assert!(service.authenticate(Some(&old), now_ms()).await.is_ok());
    let path = format!("/api/user/api-keys/{new_id}");
    let disable = json!({"enabled": false});
    let (status, _) = send(&service, Method::PATCH, &path, Some(&t.user_token), disable).await;
    assert_eq!(status, 200);
    for key in [&old, &new] {
        let answer = verify(&service, &t.admin_token, key, false).await;
        assert_eq!(answer["code"], "DISABLED", "{answer}");
    }
}

#[tokio::test]
async fn a_token_with_limits_of_its_own_mints_nothing() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let customer = {
        let mut user = new_user(&t.platform, Role::User);
        user.customer_id = shared::domain::CustomerId::parse("048372910599");
        add_user(&store, user).await
    };
    // An exhausted user key, and a limited admin key.
    let (id, limited) = create_key(&service, &t.user_token).await;
    set_limits(
        &service,
        &t.admin_token,
        &id,
        json!({"credits": {"remaining": 1}}),
    )
    .await;
    assert!(authenticates(
        &verify(&service, &t.admin_token, &limited, true).await
    ));
    let admin_key = token_for(&store, &t.admin, TokenKind::ApiKey, Abilities::full()).await;
    let admin_id = {
        let parsed = token::parse_any_prefix(&admin_key).unwrap();
        format!("{}-{}", parsed.user_id, parsed.token_id)
    };
    set_limits(
        &service,
        &t.admin_token,
        &admin_id,
        json!({"rate_limit": {"limit": 100, "window_seconds": 60}}),
    )
    .await;
    let message = "This token has usage limits of its own and cannot create tokens: a new token would not be bound by them. Use a token without limits.";
    let before = slot_holders(&store, t.user.id).await.len();
    for (path, body) in [
        ("/api/user/api-keys", json!({"name": "escape"})),
        ("/api/v1/user/api-tokens", json!({"name": "escape"})),
    ] {
        let answer = send(&service, Method::POST, path, Some(&limited), body).await;
        assert_eq!(answer, (403, json!({"message": message})), "{path}");
    }
    assert_eq!(slot_holders(&store, t.user.id).await.len(), before);
    let white_label = send(
        &service,
        Method::POST,
        "/api/white-label/token",
        Some(&admin_key),
        json!({"user_id": t.user.id.0}),
    )
    .await;
    assert_eq!(white_label, (403, json!({"error": message})));
    let (status, answer) = send(
        &service,
        Method::POST,
        "/api/v1/global/users/gettokenbycustomerid",
        Some(&admin_key),
        json!({"customer_id": "048372910599"}),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["message"], message);
    let permanent = exchange(
        tokenctl::serve::router(&service),
        request(
            Method::GET,
            &format!("/ext/get-user-token?userId={}", t.user.id),
            &[
                ("authorization", &format!("Bearer {admin_key}")),
                ("authtype", "Key"),
            ],
            "",
        ),
    )
    .await;
    let (status, answer) = status_and_json(permanent.0, &permanent.1, &permanent.2);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["success"], false);
    // Nothing was minted for anyone.
    for user in [t.user.id, customer.id] {
        for family in TokenFamily::ALL {
            let live = store.list_tokens(user, family, now_ms()).await.unwrap();
            assert!(
                live.iter().all(|token| token.parent_id.is_none()
                    || token.parent_id.unwrap().to_string() != admin_id),
                "{live:?}"
            );
        }
    }
    // A roll is no escape: the successor carries the limits.
    let (_, rolled) = roll(&service, &t.user_token, &id, 0).await;
    let (_, new) = successor(&rolled);
    assert_eq!(
        verify(&service, &t.admin_token, &new, true).await["code"],
        "USAGE_EXCEEDED"
    );
}

#[tokio::test]
async fn a_permanent_keys_limits_survive_rotation_leak_and_reissue() {
    let (mut service, store) = service().await;
    let scanner = Scanner::new();
    service.config.secret_scanning_keys = Some(scanner.document(Scanner::KEY_ID));
    let t = tenant(&store).await;
    let permanent = |service: Service, method: Method, route: &'static str| {
        let admin = format!("Bearer {}", t.admin_token);
        let path = format!("{route}?userId={}", t.user.id);
        async move {
            let request = request(
                method,
                &path,
                &[("authorization", admin.as_str()), ("authtype", "Key")],
                "",
            );
            let (status, headers, body) =
                exchange(tokenctl::serve::router(&service), request).await;
            let (status, body) = status_and_json(status, &headers, &body);
            assert_eq!(status, 200, "{body}");
            body["data"]["permanentToken"]["key"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let key = permanent(service.clone(), Method::GET, "/ext/get-user-token").await;
    let parsed = token::parse_any_prefix(&key).unwrap();
    let id = format!("{}-{}", parsed.user_id, parsed.token_id);
    set_limits(
        &service,
        &t.admin_token,
        &id,
        json!({"credits": {"remaining": 10}}),
    )
    .await;
    assert!(authenticates(
        &verify(&service, &t.admin_token, &key, true).await
    ));
    // Rotation: 9 left on the next generation.
    let rotated = permanent(service.clone(), Method::POST, "/ext/rotate-user-token").await;
    assert_ne!(rotated, key);
    let answer = verify(&service, &t.admin_token, &rotated, true).await;
    assert_eq!(answer["credits"], json!({"remaining": 8}), "{answer}");
    // Self-revocation, then the next call issues the next generation: still 8.
    let (status, _) = send(
        &service,
        Method::POST,
        "/api/v1/tokens/revoke",
        None,
        json!({"token": rotated}),
    )
    .await;
    assert_eq!(status, 202);
    let reissued = permanent(service.clone(), Method::GET, "/ext/get-user-token").await;
    assert_ne!(reissued, rotated);
    let answer = verify(&service, &t.admin_token, &reissued, false).await;
    assert_eq!(answer["credits"], json!({"remaining": 8}), "{answer}");
    // A leak: the user moves on, the limits with it.
    let body = json!([{"token": reissued, "type": "t", "url": null, "source": null}]).to_string();
    let (status, headers, answer) =
        exchange(tokenctl::serve::router(&service), scanner.report(&body)).await;
    assert_eq!(status_and_json(status, &headers, &answer).0, 200);
    let after_leak = permanent(service.clone(), Method::GET, "/ext/get-user-token").await;
    assert_ne!(after_leak, reissued);
    let answer = verify(&service, &t.admin_token, &after_leak, false).await;
    assert_eq!(answer["credits"], json!({"remaining": 8}), "{answer}");
}

#[tokio::test]
async fn a_leaked_tokens_descendants_are_revoked_with_it() {
    let (mut service, store) = service().await;
    let scanner = Scanner::new();
    service.config.secret_scanning_keys = Some(scanner.document(Scanner::KEY_ID));
    let t = tenant(&store).await;
    // The finder of the key mints with it, rolls it away at once (grace 0), and mints again
    // with what it minted; an admin key mints a customer's key; an unrelated key stays.
    let (leaked_id, leaked) = create_key(&service, &t.user_token).await;
    let (_, child) = create_key(&service, &leaked).await;
    let (_, grandchild) = create_key(&service, &child).await;
    let (status, rolled) = roll(&service, &leaked, &leaked_id, 0).await;
    assert_eq!(status, 201, "{rolled}");
    let (_, rolled_to) = successor(&rolled);
    let (_, of_successor) = create_key(&service, &rolled_to).await;
    let (_, unrelated) = create_key(&service, &t.user_token).await;
    let white_label = send(
        &service,
        Method::POST,
        "/api/white-label/token",
        Some(&t.admin_token),
        json!({"user_id": t.user.id.0}),
    )
    .await;
    assert_eq!(white_label.0, 200, "{}", white_label.1);
    let for_user = white_label.1["token"].as_str().unwrap().to_string();
    assert!(service.authenticate(Some(&leaked), now_ms()).await.is_err());

    let body = json!([{"token": leaked, "type": "t", "url": "https://example.com/leak", "source": "commit"}]).to_string();
    let (status, headers, answer) =
        exchange(tokenctl::serve::router(&service), scanner.report(&body)).await;
    let (status, answer) = status_and_json(status, &headers, &answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["label"], "true_positive");
    for descendant in [&child, &grandchild, &rolled_to, &of_successor] {
        let answer = verify(&service, &t.admin_token, descendant, false).await;
        assert_eq!(answer["code"], "REVOKED", "{answer}");
        assert_eq!(answer["token"]["revoked_reason"], "leaked");
        let record = record_of(&store, descendant).await;
        match record.revocation {
            Some(shared::store::Revocation::Leaked(leak)) => {
                assert_eq!(leak.parent.unwrap().to_string(), leaked_id);
                assert_eq!(leak.url.as_deref(), Some("https://example.com/leak"));
            }
            other => panic!("{other:?}"),
        }
    }
    for kept in [&t.user_token, &unrelated, &for_user] {
        assert!(service.authenticate(Some(kept), now_ms()).await.is_ok());
    }
    // Reported again: the same answer, nothing more revoked.
    let (status, headers, again) =
        exchange(tokenctl::serve::router(&service), scanner.report(&body)).await;
    assert_eq!(status_and_json(status, &headers, &again), (200, answer));
    assert_eq!(
        counter(&store, t.user.id).await,
        slot_holders(&store, t.user.id).await.len() as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_a_roll_keeps_the_cap_counter_exact() {
    let (mut service, store) = service().await;
    let scanner = Scanner::new();
    service.config.secret_scanning_keys = Some(scanner.document(Scanner::KEY_ID));
    let t = tenant(&store).await;
    for race in 0..40 {
        let (id, secret) = create_key(&service, &t.user_token).await;
        let rolling = {
            let (service, token, id) = (service.clone(), t.user_token.clone(), id.clone());
            tokio::spawn(async move { roll(&service, &token, &id, 60).await.0 })
        };
        let revoking = {
            let (service, token, id) = (service.clone(), t.user_token.clone(), id.clone());
            let scanner_body =
                json!([{"token": secret, "type": "t", "url": null, "source": null}]).to_string();
            let report = scanner.report(&scanner_body);
            tokio::spawn(async move {
                match race % 3 {
                    // The owner deletes it.
                    0 => {
                        send(
                            &service,
                            Method::DELETE,
                            &format!("/api/user/api-keys/{id}"),
                            Some(&token),
                            json!({}),
                        )
                        .await
                        .0
                    }
                    // Its holder revokes it.
                    1 => {
                        send(
                            &service,
                            Method::POST,
                            "/api/v1/tokens/revoke",
                            None,
                            json!({"token": secret}),
                        )
                        .await
                        .0
                    }
                    // Secret scanning reports it.
                    _ => exchange(tokenctl::serve::router(&service), report)
                        .await
                        .0
                        .as_u16(),
                }
            })
        };
        let (rolled, revoked) = (rolling.await.unwrap(), revoking.await.unwrap());
        assert!([201, 404].contains(&rolled), "{rolled}");
        assert!([200, 202, 404].contains(&revoked), "{revoked}");
    }
    let holders = slot_holders(&store, t.user.id).await;
    assert_eq!(counter(&store, t.user.id).await, holders.len() as i64);
}

/// One user's tokens under random interleavings of every change that touches them: creations,
/// deletions, rolls, self-revocations, leak reports and metered units, in parallel. After each
/// round the cap counter equals the tokens holding a slot, and no lineage spent more than it
/// was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_keep_the_counter_and_the_credits_exact() {
    const CREDITS: u64 = 6;
    let (mut service, store) = service().await;
    let scanner = Arc::new(Scanner::new());
    service.config.secret_scanning_keys = Some(scanner.document(Scanner::KEY_ID));
    let t: Arc<Tenant> = Arc::new(tenant(&store).await);
    // Every key ever made, with the lineage it belongs to.
    let keys: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let lineages = Arc::new(AtomicUsize::new(0));
    let allowed: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let mut seed = [0u8; 8];
    shared::token::fill_random(&mut seed);
    let seed = u64::from_le_bytes(seed);
    println!("seed {seed}");
    for round in 0..6u64 {
        let mut tasks = Vec::new();
        for worker in 0..12u64 {
            let (service, t, scanner) = (service.clone(), t.clone(), scanner.clone());
            let (keys, lineages, allowed) = (keys.clone(), lineages.clone(), allowed.clone());
            let mut state = seed ^ (round * 1000 + worker + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tasks.push(tokio::spawn(async move {
                for _ in 0..8 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // The newest few keys: the changes pile up on the same records.
                    let known = keys.lock().unwrap().clone();
                    let newest = known.len().saturating_sub(3);
                    let pick = known[newest..]
                        .get((state >> 8) as usize % (known.len() - newest).max(1))
                        .cloned();
                    match (state % 8, pick) {
                        (0, _) | (_, None) => {
                            let (id, secret) = create_key(&service, &t.user_token).await;
                            set_limits(
                                &service,
                                &t.admin_token,
                                &id,
                                json!({"credits": {"remaining": CREDITS}}),
                            )
                            .await;
                            let lineage = lineages.fetch_add(1, Ordering::SeqCst);
                            keys.lock().unwrap().push((id, secret, lineage));
                        }
                        (1, Some((id, _, _))) => {
                            let path = format!("/api/user/api-keys/{id}");
                            let (status, _) = send(
                                &service,
                                Method::DELETE,
                                &path,
                                Some(&t.user_token),
                                json!({}),
                            )
                            .await;
                            assert!([200, 404].contains(&status));
                        }
                        (2, Some((id, _, lineage))) => {
                            let grace = (state >> 20) % 2 * 600;
                            let (status, rolled) = roll(&service, &t.user_token, &id, grace).await;
                            assert!([201, 404, 409].contains(&status), "{rolled}");
                            if status == 201 {
                                let (new_id, new) = successor(&rolled);
                                keys.lock().unwrap().push((new_id, new, lineage));
                            }
                        }
                        (3, Some((_, secret, _))) => {
                            let body = json!({"token": secret});
                            let (status, _) =
                                send(&service, Method::POST, "/api/v1/tokens/revoke", None, body)
                                    .await;
                            assert_eq!(status, 202);
                        }
                        (4, Some((_, secret, _))) if (state >> 30) % 3 == 0 => {
                            let body =
                                json!([{"token": secret, "type": "t", "url": null, "source": null}])
                                    .to_string();
                            let (status, _, _) =
                                exchange(tokenctl::serve::router(&service), scanner.report(&body))
                                    .await;
                            assert_eq!(status.as_u16(), 200);
                        }
                        (_, Some((_, secret, lineage))) => {
                            for _ in 0..3 {
                                let answer = verify(&service, &t.admin_token, &secret, true).await;
                                if authenticates(&answer) {
                                    *allowed.lock().unwrap().entry(lineage).or_default() += 1;
                                }
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let holders = slot_holders(&store, t.user.id).await;
        assert_eq!(
            counter(&store, t.user.id).await,
            holders.len() as i64,
            "round {round}, seed {seed}"
        );
        for (lineage, spent) in allowed.lock().unwrap().iter() {
            assert!(
                *spent <= CREDITS,
                "lineage {lineage}: {spent} units, seed {seed}"
            );
        }
    }
    let spent: u64 = allowed.lock().unwrap().values().sum();
    let lineages = lineages.load(Ordering::SeqCst) as u64;
    assert!(spent <= CREDITS * lineages);
    let distinct: BTreeSet<usize> = keys.lock().unwrap().iter().map(|k| k.2).collect();
    assert_eq!(distinct.len() as u64, lineages);
}

/// A roll decided on a record read before an update (a rename, a narrowing of abilities) is
/// sent back for a fresh read: the successor never brings back what the update took away.
#[tokio::test]
async fn a_roll_racing_an_update_hands_on_what_the_update_left() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        "/api/v1/user/api-tokens",
        Some(&t.user_token),
        json!({"name": "wide", "abilities": ["calls:read", "leads:write"]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["data"]["token"].as_str().unwrap();
    let stale = record_of(&store, secret).await;
    let narrow = shared::store::TokenChange {
        name: Some(shared::domain::TokenName::parse("narrow").unwrap()),
        abilities: Some(Abilities::parse(vec!["calls:read".into()]).unwrap()),
        enabled: None,
        meta: None,
    };
    let change = shared::audit::Change::operator();
    let updated = store.update_token(&stale, &narrow, &change, now_ms()).await;
    assert!(updated.unwrap().is_some());
    // The roll as the route would make it from the stale read.
    let request = shared::mint::MintRequest {
        kind: stale.kind,
        name: shared::domain::TokenName::from_stored(stale.name.clone()),
        abilities: stale.abilities.clone(),
        expires_at: stale.expires_at,
        parent_id: None,
        change,
        meta: None,
    };
    let owner = shared::store::Owner::from(&t.user);
    let grace = now_ms().seconds().0 + 600;
    let rolled = shared::mint::roll(
        &store,
        &shared::token::TokenFormat::default(),
        owner,
        &stale,
        request,
        EpochSeconds(grace),
        now_ms(),
    )
    .await
    .unwrap();
    let shared::mint::Roll::Rolled { minted, .. } = rolled else {
        panic!("{rolled:?}");
    };
    assert_eq!(minted.record.abilities.as_slice(), ["calls:read"]);
    assert_eq!(minted.record.name, "narrow");
    let stored = record_of(&store, minted.secret.expose()).await;
    assert_eq!(stored, minted.record);
}
