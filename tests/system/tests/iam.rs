//! Every function's IAM policy in template.yaml against the DynamoDB calls it really makes.
//!
//! DynamoDB Local checks no permissions, so a missing action would only show as AccessDenied on
//! AWS, and a surplus one never. Here each function's routes run (success, cap and error paths,
//! and the background last-use write) through a client whose interceptor records every action
//! IAM evaluates — each item of a TransactWriteItems counts as its own PutItem, UpdateItem or
//! ConditionCheckItem — and the attributes an UpdateItem touches. The recorded actions must be
//! exactly the template's, and a statement limited by `dynamodb:Attributes` must cover every
//! attribute its calls touch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::interceptors::context::Input;
use lambda_http::http::Method;
use serde_json::json;
use serde_yaml::Value;

use shared::domain::{Abilities, CustomerId, Role};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, User};
use shared::test_support::{
    add_user, bearer, new_user, request, service_with, tenant, token_expiring, token_for, Tenant,
};
use shared::test_support::{exchange, Scanner};
use shared::token::{self, TokenFamily, TokenKind};
use tokenctl::serve::router;

/// One action as IAM evaluates it, with the top-level attributes an update names.
#[derive(Clone, Debug)]
struct Call {
    action: String,
    attributes: BTreeSet<String>,
    /// What a single UpdateItem asks back (`NONE` when it asks nothing).
    return_values: Option<String>,
}

/// Records every call a client makes.
#[derive(Clone, Debug, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

const KEYWORDS: [&str; 16] = [
    "SET",
    "ADD",
    "REMOVE",
    "DELETE",
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
    "if_not_exists",
];

/// The attribute names an update names: its key and every name in its expressions.
fn update_attributes(
    key: Option<&std::collections::HashMap<String, AttributeValue>>,
    expressions: &[Option<&str>],
    names: Option<&std::collections::HashMap<String, String>>,
) -> BTreeSet<String> {
    let mut attributes: BTreeSet<String> =
        key.into_iter().flat_map(|k| k.keys().cloned()).collect();
    for expression in expressions.iter().flatten() {
        let words = expression.split(|c: char| !(c.is_ascii_alphanumeric() || "_#:".contains(c)));
        for word in words.filter(|w| !w.is_empty()) {
            if word.starts_with(':') || KEYWORDS.contains(&word) || word.parse::<f64>().is_ok() {
                continue;
            }
            let name = match word.strip_prefix('#') {
                Some(_) => names
                    .and_then(|n| n.get(word))
                    .cloned()
                    .unwrap_or_else(|| panic!("{word} is not in the expression's names")),
                None => word.to_string(),
            };
            attributes.insert(name);
        }
    }
    attributes
}

/// The IAM action of an operation other than an update or a transaction.
fn other_action(input: &Input) -> &'static str {
    use aws_sdk_dynamodb::operation as op;
    macro_rules! action_of {
        ($($input:ty => $action:literal),* $(,)?) => {
            $(if input.downcast_ref::<$input>().is_some() { return $action; })*
        };
    }
    action_of!(
        op::get_item::GetItemInput => "GetItem",
        op::batch_get_item::BatchGetItemInput => "BatchGetItem",
        op::query::QueryInput => "Query",
        op::scan::ScanInput => "Scan",
        op::put_item::PutItemInput => "PutItem",
        op::delete_item::DeleteItemInput => "DeleteItem",
        op::batch_write_item::BatchWriteItemInput => "BatchWriteItem",
        op::transact_get_items::TransactGetItemsInput => "GetItem",
        op::describe_table::DescribeTableInput => "DescribeTable",
    );
    panic!("an operation this test does not know: {input:?}")
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let mut calls = Vec::new();
        if let Some(transaction) = input.downcast_ref::<TransactWriteItemsInput>() {
            for item in transaction.transact_items() {
                let (action, attributes) = if let Some(put) = item.put() {
                    ("PutItem", put.item().keys().cloned().collect())
                } else if let Some(update) = item.update() {
                    let attributes = update_attributes(
                        Some(update.key()),
                        &[
                            Some(update.update_expression()),
                            update.condition_expression(),
                        ],
                        update.expression_attribute_names(),
                    );
                    ("UpdateItem", attributes)
                } else if item.condition_check().is_some() {
                    ("ConditionCheckItem", BTreeSet::new())
                } else {
                    ("DeleteItem", BTreeSet::new())
                };
                calls.push(Call {
                    action: action.into(),
                    attributes,
                    return_values: None,
                });
            }
        } else if let Some(update) = input.downcast_ref::<UpdateItemInput>() {
            calls.push(Call {
                action: "UpdateItem".into(),
                attributes: update_attributes(
                    update.key(),
                    &[update.update_expression(), update.condition_expression()],
                    update.expression_attribute_names(),
                ),
                return_values: Some(
                    update
                        .return_values()
                        .map_or("NONE", |r| r.as_str())
                        .to_string(),
                ),
            });
        } else {
            calls.push(Call {
                action: other_action(input).to_string(),
                attributes: BTreeSet::new(),
                return_values: None,
            });
        }
        self.0.lock().unwrap().extend(calls);
        Ok(())
    }
}

/// What template.yaml grants one function: its actions, and the attributes a conditional
/// statement limits an action to.
#[derive(Debug, Default)]
struct Granted {
    actions: BTreeSet<String>,
    /// Action -> allowed attributes, for actions granted only under `dynamodb:Attributes`.
    limited: BTreeMap<String, BTreeSet<String>>,
    /// Action -> what it may ask back, for actions granted only under `dynamodb:ReturnValues`.
    returning: BTreeMap<String, BTreeSet<String>>,
}

fn granted() -> BTreeMap<String, Granted> {
    let template: Value =
        serde_yaml::from_str(include_str!("../../../template.yaml")).expect("template.yaml");
    let mut functions = BTreeMap::new();
    for (_, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let folder = resource["Properties"]["CodeUri"].as_str().unwrap();
        let mut grant = Granted::default();
        for policy in resource["Properties"]["Policies"].as_sequence().unwrap() {
            for statement in policy["Statement"].as_sequence().unwrap() {
                let attributes =
                    &statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"];
                let returning =
                    &statement["Condition"]["StringEqualsIfExists"]["dynamodb:ReturnValues"];
                for action in statement["Action"].as_sequence().unwrap() {
                    let action = action.as_str().unwrap();
                    // The event source mapping's reads of the stream, PutEvents, the DLQ: checked
                    // by `the_events_function_reads_the_stream_and_puts_on_its_one_bus_only`.
                    let Some(action) = action
                        .strip_prefix("dynamodb:")
                        .filter(|_| !STREAM_ACTIONS.contains(&action))
                    else {
                        continue;
                    };
                    grant.actions.insert(action.to_string());
                    if let Some(list) = returning.as_sequence() {
                        grant.returning.insert(
                            action.to_string(),
                            list.iter()
                                .map(|a| a.as_str().unwrap().to_string())
                                .collect(),
                        );
                    }
                    if let Some(list) = attributes.as_sequence() {
                        grant.limited.insert(
                            action.to_string(),
                            list.iter()
                                .map(|a| a.as_str().unwrap().to_string())
                                .collect(),
                        );
                    }
                }
            }
        }
        functions.insert(
            folder.strip_prefix("functions/").unwrap().to_string(),
            grant,
        );
    }
    functions
}

/// What the event source mapping does with the events function's role.
const STREAM_ACTIONS: [&str; 4] = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

/// A sink that takes every entry (what the events function publishes is no DynamoDB call).
struct Accepting;

#[async_trait::async_trait]
impl shared::events::Sink for Accepting {
    async fn put(&self, _: &[shared::events::Entry]) -> Result<(), shared::events::Unpublished> {
        Ok(())
    }
}

/// The table every function works on, and one recording service per function of the template
/// over it.
struct Harness {
    store: DynamoStore,
    recorders: BTreeMap<String, (Service, Recorder)>,
}

impl Harness {
    async fn new(cap: u32, functions: impl Iterator<Item = String>) -> Harness {
        let (plain, store) = service_with(cap).await;
        let mut recorders = BTreeMap::new();
        for function in functions {
            let recorder = Recorder::default();
            let client = aws_sdk_dynamodb::Client::from_conf(
                store
                    .direct()
                    .client
                    .config()
                    .to_builder()
                    .interceptor(recorder.clone())
                    .build(),
            );
            let service = Service {
                store: Arc::new(DynamoStore::new(client, store.direct().table)),
                config: plain.config.clone(),
            };
            recorders.insert(function, (service, recorder));
        }
        Harness { store, recorders }
    }

    /// The store as `function` holds it, recorded.
    fn dynamo(&self, function: &str) -> DynamoStore {
        let client = aws_sdk_dynamodb::Client::from_conf(
            self.store
                .direct()
                .client
                .config()
                .to_builder()
                .interceptor(self.recorders[function].1.clone())
                .build(),
        );
        DynamoStore::new(client, self.store.direct().table)
    }

    fn service(&self, function: &str) -> &Service {
        &self.recorders[function].0
    }

    /// [`Self::send`], with the body of the answer.
    async fn send_json(
        &self,
        function: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, serde_json::Value) {
        let request = request(method, path, headers, body);
        shared::test_support::call(|service| router(&service), self.service(function), request)
            .await
    }

    /// Sends a request as `function` receives it; returns the status.
    async fn send(
        &self,
        function: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> u16 {
        self.send_json(function, method, path, headers, body)
            .await
            .0
    }
}

/// The per-user caps of the test: room for what the tenant's user is given below.
const CAP: u32 = 5;

/// A user whose API keys and customer tokens are both at the cap, one of each expired.
async fn user_at_cap(store: &DynamoStore, t: &Tenant, customer_id: &str) -> User {
    let mut user = new_user(&t.platform, Role::User);
    user.customer_id = CustomerId::parse(customer_id);
    let user = add_user(store, user).await;
    for kind in [TokenKind::ApiKey, TokenKind::Customer] {
        token_expiring(store, &user, kind, now_ms().seconds().0 - 60).await;
        for _ in 1..CAP {
            token_for(store, &user, kind, Abilities::full()).await;
        }
    }
    user
}

fn customer_id() -> String {
    let digits = u64::from_str_radix(&shared::test_support::random_hex(5), 16).unwrap();
    format!("{:012}", digits % 1_000_000_000_000)
}

/// Runs every route's paths of every function.
async fn exercise(h: &Harness) {
    let store = &h.store;
    let t = tenant(store).await;
    let admin = bearer(&t.admin_token);
    let admin = [(admin.0, admin.1.as_str())];
    let user = bearer(&t.user_token);
    let user = [(user.0, user.1.as_str())];

    // admin-token: by id, by email, and for a user at the cap (expired slots given back).
    let crowded_id = customer_id();
    let crowded = user_at_cap(store, &t, &crowded_id).await;
    for body in [
        json!({"user_id": t.user.id.0}),
        json!({"email": t.user.email}),
        json!({"user_id": crowded.id.0}),
    ] {
        let status = h
            .send(
                "admin-token",
                Method::POST,
                "/api/white-label/token",
                &admin,
                &body.to_string(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // customer-token: mint (also at the cap), revoke by id.
    let mut customer = new_user(&t.platform, Role::User);
    let customer_id_text = customer_id();
    customer.customer_id = CustomerId::parse(&customer_id_text);
    let customer = add_user(store, customer).await;
    let token_header = [("token", t.admin_token.as_str())];
    for id in [&customer_id_text, &crowded_id] {
        let body = json!({"customer_id": id}).to_string();
        let status = h
            .send(
                "customer-token",
                Method::POST,
                "/api/v1/global/users/gettokenbycustomerid",
                &token_header,
                &body,
            )
            .await;
        assert_eq!(status, 200, "{id}");
    }
    let victim = token_for(store, &customer, TokenKind::Customer, Abilities::full()).await;
    let victim = token::parse_any_prefix(&victim).unwrap();
    let path = format!(
        "/api/v1/global/users/tokens/{}-{}",
        customer.id, victim.token_id
    );
    let status = h
        .send("customer-token", Method::DELETE, &path, &token_header, "")
        .await;
    assert_eq!(status, 200);

    // api-keys: create, list, update, roll, delete (as a full and as a tokens:manage token),
    // and at the cap.
    for (path, body) in [
        ("/api/user/api-keys", r#"{"name":"k"}"#),
        ("/api/v1/user/api-tokens", r#"{"name":"t"}"#),
    ] {
        assert_eq!(
            h.send("api-keys", Method::POST, path, &user, body).await,
            201
        );
        assert_eq!(h.send("api-keys", Method::GET, path, &user, "").await, 200);
    }
    let doomed = token_for(store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    let doomed = token::parse_any_prefix(&doomed).unwrap();
    let path = format!("/api/user/api-keys/{}-{}", t.user.id, doomed.token_id);
    // Renamed and disabled, enabled again (the enabled attribute set, then removed), then deleted.
    for body in [
        r#"{"name":"renamed","enabled":false}"#,
        r#"{"enabled":true}"#,
    ] {
        assert_eq!(
            h.send("api-keys", Method::PATCH, &path, &user, body).await,
            200
        );
    }
    // Rolled with a grace period: the successor takes the slot, the predecessor is marked.
    let rolled = format!("{path}/roll");
    assert_eq!(
        h.send(
            "api-keys",
            Method::POST,
            &rolled,
            &user,
            r#"{"grace_seconds":60}"#
        )
        .await,
        201
    );
    assert_eq!(
        h.send("api-keys", Method::DELETE, &path, &user, "").await,
        200
    );
    let manages = Abilities::parse(vec!["tokens:manage".into()]).unwrap();
    let manager = token_for(store, &t.user, TokenKind::Personal, manages.clone()).await;
    let weak = token_for(store, &t.user, TokenKind::Personal, manages).await;
    let weak = token::parse_any_prefix(&weak).unwrap();
    let manager = bearer(&manager);
    let path = format!("/api/v1/user/api-tokens/{}-{}", t.user.id, weak.token_id);
    let status = h
        .send(
            "api-keys",
            Method::DELETE,
            &path,
            &[(manager.0, &manager.1)],
            "",
        )
        .await;
    assert_eq!(status, 200);
    let crowded_key = token_for(store, &crowded, TokenKind::Personal, Abilities::full()).await;
    let crowded_key = bearer(&crowded_key);
    let status = h
        .send(
            "api-keys",
            Method::POST,
            "/api/user/api-keys",
            &[(crowded_key.0, &crowded_key.1)],
            r#"{"name":"after the cap"}"#,
        )
        .await;
    // The white-label token above took the slot the expired key gave back.
    assert_eq!(status, 422);
    // Usage limits: a token's own, then its owner's (the metered authorizations below).
    let metered = token_for(store, &t.admin, TokenKind::ApiKey, Abilities::full()).await;
    let metered_id = token::parse_any_prefix(&metered).unwrap();
    let limits = json!({"credits": {"remaining": 5, "refill": {"amount": 5, "interval": "day"}},
        "rate_limit": {"limit": 5, "window_seconds": 60}})
    .to_string();
    let path = format!(
        "/api/v1/tokens/{}-{}/limits",
        t.admin.id, metered_id.token_id
    );
    assert_eq!(
        h.send("api-keys", Method::PUT, &path, &admin, &limits)
            .await,
        200
    );

    // get-user-token: first call, the same key again, a new generation after revocation, after
    // a new server key, and by rotation.
    let mut headers = admin.to_vec();
    headers.push(("authtype", "Key"));
    let path = format!("/ext/get-user-token?userId={}", t.user.id);
    for _ in 0..2 {
        assert_eq!(
            h.send("get-user-token", Method::GET, &path, &headers, "")
                .await,
            200
        );
    }
    let profile = store.get_user(t.user.id).await.unwrap().unwrap();
    let permanent = token::TokenId::permanent(profile.permanent_generation);
    assert!(store
        .revoke_token(
            t.user.id,
            TokenFamily::Permanent,
            permanent,
            &shared::audit::Change::operator(),
            now_ms()
        )
        .await
        .unwrap());
    assert_eq!(
        h.send("get-user-token", Method::GET, &path, &headers, "")
            .await,
        200
    );
    // A new server key: the key made with the old one is retired as the user moves on.
    let rotated = Service {
        store: h.service("get-user-token").store.clone(),
        config: shared::config::Config::from_lookup(|name| match name {
            "TABLE_NAME" => Some(store.direct().table.to_string()),
            "PERMANENT_TOKEN_KEY" => Some(shared::test_support::random_hex(32)),
            _ => None,
        })
        .unwrap(),
    };
    let request = request(Method::GET, &path, &headers, "");
    assert_eq!(exchange(router(&rotated), request).await.0, 200);
    // A rotation: the next generation, the live record of the current one retired with it.
    let rotate = format!("/ext/rotate-user-token?userId={}", t.user.id);
    assert_eq!(
        h.send("get-user-token", Method::POST, &rotate, &headers, "")
            .await,
        200
    );

    // leak-response: a signed report of a live key and the user's permanent key (batched reads,
    // one revocation transaction, the user moved on to the next generation), and a holder's
    // self-revocation.
    let scanner = Scanner::new();
    let mut scanning = h.service("leak-response").clone();
    scanning.config.secret_scanning_keys = Some(scanner.document(Scanner::KEY_ID));
    let plain = Service {
        store: Arc::new(store.clone()),
        config: scanning.config.clone(),
    };
    let owner = store.get_user(t.user.id).await.unwrap().unwrap();
    let permanent = plain
        .permanent_token(
            plain.config.permanent_key().unwrap(),
            &owner,
            shared::store::PermanentGeneration::Working,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    let leaked = token_for(store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    let report = json!([
        {"token": leaked, "type": "api_key", "url": "https://example.com/a", "source": "content"},
        {"token": permanent.secret.expose(), "type": "permanent", "url": null, "source": null},
    ])
    .to_string();
    let signed = scanner.report(&report);
    assert_eq!(exchange(router(&scanning), signed).await.0, 200);
    let held = token_for(store, &t.user, TokenKind::Personal, Abilities::full()).await;
    let body = json!({ "token": held }).to_string();
    assert_eq!(
        h.send(
            "leak-response",
            Method::POST,
            "/api/v1/tokens/revoke",
            &[],
            &body
        )
        .await,
        202
    );

    // authorizer: an authorizer event (with a key not used yet, so it records the use), verify,
    // and the protected route without a context.
    let fresh = token_for(store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    let authorizer = h.service("authorizer");
    let event = json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/api/user/me",
        "resource": "/api/user/me",
        "headers": {"Authorization": format!("Bearer {fresh}")},
    });
    let policy = authorizer::authorize(authorizer, &event).await.unwrap();
    assert_eq!(policy["policyDocument"]["Statement"][0]["Effect"], "Allow");
    // A metered token: its own limits (one UpdateItem), then its owner's too (a transaction).
    let mut event = event.clone();
    event["headers"] = json!({"Authorization": format!("Bearer {metered}")});
    let policy = authorizer::authorize(authorizer, &event).await.unwrap();
    assert_eq!(policy["context"]["credits_remaining"], json!(4));
    let path = format!("/api/v1/users/{}/limits", t.admin.id);
    assert_eq!(
        h.send("api-keys", Method::PUT, &path, &admin, &limits)
            .await,
        200
    );
    let policy = authorizer::authorize(authorizer, &event).await.unwrap();
    assert_eq!(policy["context"]["credits_remaining"], json!(3));
    let body = json!({"token": t.user_token}).to_string();
    let status = h
        .send(
            "authorizer",
            Method::POST,
            "/api/v1/tokens/verify",
            &admin,
            &body,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.send("authorizer", Method::GET, "/api/user/me", &admin, "")
            .await,
        200
    );
    // The audit trail: one user's events (its partition), the platform's (the index).
    for query in [
        format!("?user_id={}&limit=2", t.user.id),
        "?limit=2".to_string(),
    ] {
        let path = format!("/api/v1/audit-events{query}");
        assert_eq!(
            h.send("authorizer", Method::GET, &path, &admin, "").await,
            200
        );
    }

    // directory: a service key made, listed and used; a user created, found, listed, read,
    // changed and blocked; a key minted for it, its tokens listed, one revoked; the service key
    // revoked.
    let created = h
        .send_json(
            "directory",
            Method::POST,
            "/api/v1/service-keys",
            &admin,
            &json!({"name": "backend", "permissions": ["*"]}).to_string(),
        )
        .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let service_key = created.1["data"]["token"].as_str().unwrap().to_string();
    let service_key_id = created.1["data"]["id"].as_str().unwrap().to_string();
    let key = bearer(&service_key);
    let key = [(key.0, key.1.as_str())];
    assert_eq!(
        h.send("directory", Method::GET, "/api/v1/service-keys", &admin, "")
            .await,
        200
    );
    let email = format!("{}@example.com", shared::test_support::random_hex(6));
    let body = json!({"email": email, "name": "D", "external_id": email, "meta": {"a": 1}});
    let made = h
        .send_json(
            "directory",
            Method::POST,
            "/api/v1/users",
            &key,
            &body.to_string(),
        )
        .await;
    assert_eq!(made.0, 201, "{}", made.1);
    let id = made.1["data"]["id"].as_u64().unwrap();
    for path in [
        format!("/api/v1/users?external_id={email}"),
        format!("/api/v1/users?email={email}"),
        "/api/v1/users?limit=2".to_string(),
        format!("/api/v1/users/{id}"),
        format!("/api/v1/users/{id}/tokens"),
    ] {
        assert_eq!(
            h.send("directory", Method::GET, &path, &key, "").await,
            200,
            "{path}"
        );
    }
    let path = format!("/api/v1/users/{id}/tokens");
    let minted = h
        .send_json("directory", Method::POST, &path, &key, r#"{"name":"m"}"#)
        .await;
    assert_eq!(minted.0, 201, "{}", minted.1);
    let token_path = format!("{path}/{}", minted.1["data"]["id"].as_str().unwrap());
    assert_eq!(
        h.send("directory", Method::DELETE, &token_path, &key, "")
            .await,
        200
    );
    // Another system's key imported for the user, twice (its pointer read, then refused).
    let import = format!(
        r#"{{"tokens":[{{"user_id":{id},"name":"legacy","token":"7|iam-legacy-secret-0001"}}]}}"#
    );
    for status in ["imported", "existing"] {
        let imported = h
            .send_json(
                "directory",
                Method::POST,
                "/api/v1/tokens/import",
                &key,
                &import,
            )
            .await;
        assert_eq!(imported.1["data"][0]["status"], status, "{}", imported.1);
    }
    let path = format!("/api/v1/users/{id}");
    let body = r#"{"name":"E","meta":null,"status":"blocked"}"#;
    assert_eq!(
        h.send("directory", Method::PATCH, &path, &key, body).await,
        200
    );
    let path = format!("/api/v1/service-keys/{service_key_id}");
    assert_eq!(
        h.send("directory", Method::DELETE, &path, &admin, "").await,
        200
    );

    // events: the daily run over the index of expiry days marks each token it notifies. (Its
    // stream batches read no table: the records carry the items.)
    let now = now_ms();
    let expiring = token_expiring(
        store,
        &t.user,
        shared::token::TokenKind::ApiKey,
        now.seconds().0 + 10 * 86_400,
    )
    .await;
    let events = h.dynamo("events");
    let later = shared::clock::EpochMs(now.0 + 7 * 43_200_000);
    let run = shared::events::notify_expiring(&events, &Accepting, later)
        .await
        .unwrap();
    assert_eq!(run.notified, 1, "{:?}", expiring.record.id);

    // Each function's first use of a key records its last use in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn every_function_is_granted_exactly_the_dynamodb_actions_it_uses() {
    let granted = granted();
    let h = Harness::new(CAP, granted.keys().cloned()).await;
    exercise(&h).await;
    let mut problems = Vec::new();
    for (function, (_, recorder)) in &h.recorders {
        let calls = recorder.0.lock().unwrap().clone();
        let used: BTreeSet<String> = calls.iter().map(|c| c.action.clone()).collect();
        let grant = &granted[function.as_str()];
        for missing in used.difference(&grant.actions) {
            problems.push(format!(
                "{function}: uses {missing}, which template.yaml does not grant"
            ));
        }
        for surplus in grant.actions.difference(&used) {
            problems.push(format!(
                "{function}: granted {surplus}, which it never uses"
            ));
        }
        for call in &calls {
            let returning = grant.returning.get(&call.action);
            if let (Some(allowed), Some(asked)) = (returning, &call.return_values) {
                if !allowed.contains(asked) {
                    problems.push(format!(
                        "{function}: {} asks for {asked}, beyond its dynamodb:ReturnValues",
                        call.action
                    ));
                }
            }
            if let Some(allowed) = grant.limited.get(&call.action) {
                let beyond: Vec<&String> = call.attributes.difference(allowed).collect();
                if !beyond.is_empty() {
                    problems.push(format!(
                        "{function}: {} touches {beyond:?}, beyond its dynamodb:Attributes",
                        call.action
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn update_attributes_resolve_names_and_skip_values_and_functions() {
    let names = std::collections::HashMap::from([("#status".to_string(), "status".to_string())]);
    let key = std::collections::HashMap::from([
        ("pk".to_string(), AttributeValue::S("USER#1".into())),
        ("sk".to_string(), AttributeValue::S("PROFILE".into())),
    ]);
    let attributes = update_attributes(
        Some(&key),
        &[
            Some("SET #status = :s, expires_at = valid_until ADD live_tokens :one"),
            Some("attribute_exists(pk) AND (attribute_not_exists(x) OR y < :cap)"),
        ],
        Some(&names),
    );
    let expected = [
        "expires_at",
        "live_tokens",
        "pk",
        "sk",
        "status",
        "valid_until",
        "x",
        "y",
    ];
    assert_eq!(
        attributes,
        expected
            .iter()
            .map(|a| a.to_string())
            .collect::<BTreeSet<_>>()
    );
}

#[test]
fn the_events_function_reads_the_stream_and_puts_on_its_one_bus_only() {
    let template: Value =
        serde_yaml::from_str(include_str!("../../../template.yaml")).expect("template.yaml");
    let function = &template["Resources"]["EventsFunction"]["Properties"];
    let mut beyond_table = BTreeMap::new();
    for statement in function["Policies"][0]["Statement"].as_sequence().unwrap() {
        for action in statement["Action"].as_sequence().unwrap() {
            let action = action.as_str().unwrap();
            if action.starts_with("dynamodb:") && !STREAM_ACTIONS.contains(&action) {
                continue;
            }
            beyond_table.insert(
                action.to_string(),
                serde_yaml::to_string(&statement["Resource"]).unwrap(),
            );
        }
    }
    let keys: Vec<&str> = beyond_table.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
            "events:PutEvents",
            "sqs:SendMessage",
        ]
    );
    for action in STREAM_ACTIONS {
        assert!(
            beyond_table[action].contains("StreamArn"),
            "{action}: {}",
            beyond_table[action]
        );
    }
    // PutEvents: the bus the stack made, or the one named; never "*".
    let bus = &beyond_table["events:PutEvents"];
    assert!(
        bus.contains("EventBus.Arn") && bus.contains("event-bus/${EventBusName}"),
        "{bus}"
    );
    assert!(!bus.contains('*'));
    assert!(beyond_table["sqs:SendMessage"].contains("EventsDeadLetterQueue.Arn"));
    // The mapping: filtered, partial failures reported, bisected, retries bounded, a DLQ.
    let mapping = &function["Events"]["TableStream"]["Properties"];
    assert_eq!(
        mapping["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert_eq!(mapping["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert_eq!(
        mapping["MaximumRetryAttempts"].as_u64(),
        Some(u64::from(events::local::RETRIES))
    );
    assert_eq!(
        mapping["BatchSize"].as_i64(),
        Some(i64::from(events::local::BATCH))
    );
    assert_eq!(
        mapping["DestinationConfig"]["OnFailure"]["Type"].as_str(),
        Some("SQS")
    );
    assert_eq!(
        mapping["FilterCriteria"]["Filters"]
            .as_sequence()
            .unwrap()
            .len(),
        2
    );
}
