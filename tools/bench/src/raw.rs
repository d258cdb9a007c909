//! The DynamoDB operations each route cannot avoid, issued directly with the same client against
//! the same items: what a handler's time is compared with.

use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use shared::clock::EpochMs;
use shared::store::traits::*;
use shared::store::{token_sort_prefix, Key, LAST_USED_RESOLUTION_MS};
use shared::token::{self, TokenFamily};

use crate::{Job, Raw, World};

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn token_key(token: &str) -> Key {
    let parsed = token::parse_any_prefix(token).expect("a bench token");
    Key::token(parsed.user_id, parsed.kind.family(), parsed.token_id)
}

/// One strongly consistent GetItem.
pub(crate) async fn get(client: &Client, table: &str, key: Key) {
    client
        .get_item()
        .table_name(table)
        .set_key(Some(key.to_item()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
}

/// Authentication: the token and its owner's profile in one strongly consistent BatchGetItem.
pub(crate) async fn authenticate(client: &Client, table: &str, token: &str) -> usize {
    let parsed = token::parse_any_prefix(token).expect("a bench token");
    let keys = [token_key(token), Key::user(parsed.user_id)];
    let request = KeysAndAttributes::builder()
        .set_keys(Some(keys.iter().map(Key::to_item).collect()))
        .consistent_read(true)
        .build()
        .unwrap();
    let output = client
        .batch_get_item()
        .request_items(table, request)
        .send()
        .await
        .expect("BatchGetItem");
    output
        .responses()
        .and_then(|r| r.get(table))
        .map_or(0, Vec::len)
}

async fn query(client: &Client, table: &str, pk: &str, prefix: &str) {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":prefix", s(prefix))
        .scan_index_forward(false)
        .consistent_read(true)
        .send()
        .await
        .expect("Query");
}

/// A token-sized item, like the ones the routes write.
fn token_like(pk: &str, i: usize) -> std::collections::HashMap<String, AttributeValue> {
    let mut item = std::collections::HashMap::new();
    item.insert("pk".to_string(), s(pk));
    item.insert(
        "sk".to_string(),
        s(format!("RAW#{i}#{}", shared::store::now_ms())),
    );
    item.insert("type".to_string(), s("token"));
    item.insert("name".to_string(), s("bench"));
    item.insert("kind".to_string(), s("api_key"));
    item.insert("abilities".to_string(), AttributeValue::L(vec![s("*")]));
    item.insert("hash".to_string(), AttributeValue::B(vec![7u8; 32].into()));
    item.insert("created_at".to_string(), n(shared::store::now_ms()));
    item
}

/// A change's audit event: an item of about an event's size, in the user's partition, with the
/// platform attribute the audit index keys on.
pub(crate) fn event_put(table: &str, user_pk: &str, i: usize) -> TransactWriteItem {
    let mut item = std::collections::HashMap::new();
    item.insert("pk".to_string(), s(user_pk));
    item.insert(
        "sk".to_string(),
        s(format!(
            "AUDIT#{:016x}{i:08x}",
            shared::store::now_ms().0 * 1000
        )),
    );
    item.insert("audit_platform".to_string(), s("1"));
    item.insert("event".to_string(), s("e".repeat(450)));
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .unwrap();
    TransactWriteItem::builder().put(put).build()
}

/// The owner update, the new item of a token creation and its audit event, in one transaction.
/// A creation by a token (every route's) also writes the child item under its parent, left out
/// here so that the ratio shows what it costs.
async fn create_transaction(client: &Client, table: &str, user: &Key, i: usize) {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(user.to_item()))
        .update_expression("ADD live_tokens :one")
        .condition_expression("attribute_exists(pk) AND #status = :active AND live_tokens < :cap")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":active", s("active"))
        .expression_attribute_values(":cap", n(1_000_000_000))
        .build()
        .unwrap();
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(token_like(&user.pk, i)))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .unwrap();
    client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(update).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .transact_items(event_put(table, &user.pk, i))
        .send()
        .await
        .expect("TransactWriteItems");
}

macro_rules! raw {
    ($w:ident, $i:ident, $body:expr) => {{
        let $w = $w.clone();
        Arc::new(move |$i: usize| -> Job {
            let $w = $w.clone();
            Box::pin(async move {
                $body;
                200
            })
        }) as Raw
    }};
}

/// Verification: the token and its owner's profile, one BatchGetItem.
pub fn verify(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let key = &w.users[i % w.users.len()].1;
        authenticate(w.store.direct().client, w.store.direct().table, key).await
    })
}

/// What verification read before a block was checked on the profile: the token alone, one
/// GetItem (printed beside [`verify`] to show what the profile read costs).
pub fn token_only(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let key = &w.users[i % w.users.len()].1;
        get(
            w.store.direct().client,
            w.store.direct().table,
            token_key(key),
        )
        .await
    })
}

/// The last-use write an authentication awaits when `last_used_at` is stale (at most once per
/// 5 minutes per token): one conditional UpdateItem, made to write every time here.
pub fn touch(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let key = &w.users[i % w.users.len()].1;
        let parsed = token::parse_any_prefix(key).expect("a bench token");
        let later = shared::store::now_ms().0 + (i as u64 + 1) * LAST_USED_RESOLUTION_MS;
        w.store
            .touch_token(
                parsed.user_id,
                parsed.kind.family(),
                parsed.token_id,
                EpochMs(later),
            )
            .await
            .expect("UpdateItem")
    })
}

/// A listing: the caller's token, then one Query of the family.
pub fn list(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let (user, key) = &w.users[i % w.users.len()];
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, key).await;
        let pk = Key::user(user.id).pk;
        query(client, table, &pk, &token_sort_prefix(TokenFamily::ApiKeys)).await
    })
}

/// A creation: the caller's token, then the counted transaction.
pub fn create(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let (user, key) = &w.users[i % w.users.len()];
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, key).await;
        create_transaction(client, table, &Key::user(user.id), i).await
    })
}

/// A revocation: the caller's token, the token to revoke (to copy it), then a transaction of
/// four writes: the live item (here marked, not deleted, so the bench keys stay), its `GONE#`
/// copy, the owner's counter and the audit event. A roll is set beside the same operations: the
/// caller's token, the token to roll, and a transaction of four writes. What key lineages add
/// to a roll is left out of this side on purpose, so that the ratio shows their cost: the token
/// read as a BatchGetItem of its live and retired items (a grace-0 roll then a second one is
/// 409), the successor's child item (a fifth write) and the condition that pins the meter and
/// `enabled` as read.
pub fn revoke(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let (user, key) = &w.users[i % w.users.len()];
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, key).await;
        get(client, table, token_key(key)).await;
        let mark = Update::builder()
            .table_name(table)
            .set_key(Some(token_key(key).to_item()))
            .update_expression("SET raw_mark = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(i))
            .build()
            .unwrap();
        let copy = Put::builder()
            .table_name(table)
            .set_item(Some(token_like(&Key::user(user.id).pk, i)))
            .build()
            .unwrap();
        let count = Update::builder()
            .table_name(table)
            .set_key(Some(Key::user(user.id).to_item()))
            .update_expression("ADD raw_count :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1))
            .build()
            .unwrap();
        client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(mark).build())
            .transact_items(TransactWriteItem::builder().put(copy).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .transact_items(event_put(table, &Key::user(user.id).pk, i))
            .send()
            .await
            .expect("TransactWriteItems")
    })
}

/// The white-label route: the admin's token, the user, the counted transaction.
pub fn white_label(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let user = &w.users[i % w.users.len()].0;
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, &w.demo.admin_key).await;
        get(client, table, Key::user(user.id)).await;
        create_transaction(client, table, &Key::user(user.id), i).await
    })
}

/// The customer route: the admin's token, the customer pointer, the user, the counted
/// transaction (customer tokens have a cap of their own).
pub fn customer(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, &w.demo.admin_key).await;
        let customer = w.demo.user.customer_id.clone().expect("demo customer");
        get(client, table, Key::customer(&customer)).await;
        get(client, table, Key::user(w.demo.user.id)).await;
        create_transaction(client, table, &Key::user(w.demo.user.id), i).await
    })
}

/// The permanent token, once issued: the admin's token, the user, and the record of the
/// user's generation (to hand out only a key that works).
pub fn permanent(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let user = &w.users[i % w.users.len()].0;
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, &w.demo.admin_key).await;
        get(client, table, Key::user(user.id)).await;
        let record = Key::token(
            user.id,
            TokenFamily::Permanent,
            shared::token::TokenId::permanent(1),
        );
        get(client, table, record).await
    })
}

/// The verify route: the caller's token and the verified one.
pub fn verify_route(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let key = &w.users[i % w.users.len()].1;
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, &w.demo.admin_key).await;
        get(client, table, token_key(key)).await
    })
}

/// A directory lookup by external id: the caller's token and owner (one BatchGetItem), the
/// external id's pointer and the user's profile (two GetItems).
pub fn lookup(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let index = i % w.users.len();
        let user = &w.users[index].0;
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, &w.demo.admin_key).await;
        let external = shared::domain::ExternalId::parse(&format!("bench-{index}")).expect("id");
        get(client, table, Key::external(user.platform_id, &external)).await;
        get(client, table, Key::user(user.id)).await
    })
}

/// One user read with a service key: the key and its service account (one BatchGetItem), then
/// the user's profile (one GetItem), as with a user's token.
pub fn get_user(w: Arc<World>) -> Raw {
    raw!(w, i, {
        let user = &w.users[i % w.users.len()].0;
        let (client, table) = (w.store.direct().client, w.store.direct().table);
        authenticate(client, table, &w.service_key).await;
        get(client, table, Key::user(user.id)).await
    })
}
