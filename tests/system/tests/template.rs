//! template.yaml against the code: one route table (template events, the functions' routing and
//! `tokenctl serve` agree), the table `tokenctl init` creates, and the deploy rules of the spec.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml::Value;

use shared::store::schema::{create_table, KEY_ATTRIBUTES, TTL_ATTRIBUTE};
use shared::test_support::random_hex;
use shared::trust::TrustRoots;

fn template() -> Value {
    serde_yaml::from_str(include_str!("../../../template.yaml")).expect("template.yaml parses")
}

fn resources_of_type(template: &Value, kind: &str) -> Vec<(String, Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (name.as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_string)
        .or_else(|| value.as_bool().map(|b| b.to_string()))
        .or_else(|| value.as_u64().map(|n| n.to_string()))
        .unwrap_or_else(|| panic!("not a scalar: {value:?}"))
}

/// A created key schema as (attribute, HASH | RANGE) pairs, in order.
fn key_pairs(schema: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> Vec<(String, String)> {
    schema
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect()
}

/// (function folder, METHOD, path) of every API event in the template.
fn template_routes(template: &Value) -> BTreeSet<(String, String, String)> {
    let mut routes = BTreeSet::new();
    for (_, function) in resources_of_type(template, "AWS::Serverless::Function") {
        let folder = text(&function["Properties"]["CodeUri"]);
        let folder = folder.strip_prefix("functions/").unwrap().to_string();
        for (_, event) in function["Properties"]["Events"].as_mapping().unwrap() {
            // The events function's stream and schedule are no routes.
            if folder == "events" {
                assert!(["DynamoDB", "ScheduleV2"].contains(&text(&event["Type"]).as_str()));
                continue;
            }
            assert_eq!(text(&event["Type"]), "Api");
            let properties = &event["Properties"];
            routes.insert((
                folder.clone(),
                text(&properties["Method"]).to_uppercase(),
                text(&properties["Path"]),
            ));
        }
    }
    routes
}

/// The same triples from `tokenctl routes`, the routes `tokenctl serve` merges.
fn served_routes() -> BTreeSet<(String, String, String)> {
    let output = Command::new(system_tests::tokenctl())
        .args(["routes", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let routes: Json = serde_json::from_slice(&output.stdout).unwrap();
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["function"].as_str().unwrap().to_string(),
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// And from the functions' routers: each route its router declares.
fn function_routes() -> BTreeSet<(String, String, String)> {
    tokenctl::serve::FUNCTIONS
        .iter()
        .flat_map(|function| {
            (function.routes)().into_iter().map(|(method, path)| {
                (
                    function.name.to_string(),
                    method.to_string(),
                    path.to_string(),
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn template_functions_and_local_server_share_one_route_table() {
    let template = template_routes(&template());
    // The sets below are the check: no count to keep in step with the routes.
    assert!(!template.is_empty(), "the template declares no route");
    assert_eq!(template, function_routes());
    assert_eq!(template, served_routes());
    // And each function's router routes them: no 404 or 405 of its own (no token, so no
    // database read: the 401 or 400 of the route).
    let service = shared::test_support::unreachable_service().await;
    for (folder, method, path) in &template {
        let function = tokenctl::serve::FUNCTIONS
            .iter()
            .find(|f| f.name == folder)
            .unwrap();
        let path = path.replace("{id}", "1-00");
        let request = shared::test_support::request(method.parse().unwrap(), &path, &[], "");
        let (status, body) = shared::test_support::call(function.router, &service, request).await;
        assert!(
            ![404, 405].contains(&status),
            "{folder} {method} {path}: {status} {body}"
        );
    }
}

#[test]
fn every_function_is_an_arm64_rust_lambda_of_its_own_crate() {
    let template = template();
    let globals = &template["Globals"]["Function"];
    assert_eq!(text(&globals["Runtime"]), "provided.al2023");
    assert_eq!(text(&globals["Architectures"][0]), "arm64");
    assert_eq!(text(&globals["Handler"]), "bootstrap");
    assert_eq!(text(&globals["LoggingConfig"]["LogFormat"]), "JSON");
    let functions = resources_of_type(&template, "AWS::Serverless::Function");
    let folders: BTreeSet<String> = functions
        .iter()
        .map(|(_, f)| text(&f["Properties"]["CodeUri"]))
        .collect();
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../functions"))
            .unwrap()
            .map(|entry| format!("functions/{}", entry.unwrap().file_name().to_string_lossy()))
            .collect();
    assert_eq!(folders, on_disk, "one function per folder under functions/");
    for (name, function) in &functions {
        assert_eq!(
            text(&function["Metadata"]["BuildMethod"]),
            "rust-cargolambda",
            "{name}"
        );
        let folder = text(&function["Properties"]["CodeUri"]);
        let manifest = std::fs::read_to_string(format!(
            "{}/../../{folder}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let package = folder.strip_prefix("functions/").unwrap();
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{folder}: package name"
        );
    }
}

#[test]
fn permissions_are_least_privilege() {
    let template = template();
    for (name, function) in resources_of_type(&template, "AWS::Serverless::Function") {
        let policies = function["Properties"]["Policies"].as_sequence().unwrap();
        for policy in policies {
            for statement in policy["Statement"].as_sequence().unwrap() {
                let actions = statement["Action"].as_sequence().unwrap();
                assert!(!actions.is_empty());
                let resource = format!("{:?}", statement["Resource"]);
                for action in actions {
                    let action = text(action);
                    assert!(!action.contains('*'), "{name}: {action}");
                    // The events function alone publishes (its bus) and dead-letters (its
                    // queue): tests/iam.rs checks the resources.
                    if name == "EventsFunction"
                        && ["events:PutEvents", "sqs:SendMessage"].contains(&action.as_str())
                    {
                        continue;
                    }
                    assert!(action.starts_with("dynamodb:"), "{name}: {action}");
                    assert!(resource.contains("TokensTable."), "{name}: {resource}");
                    assert!(
                        !["dynamodb:Scan", "dynamodb:DeleteTable"].contains(&action.as_str()),
                        "{name}: {action}"
                    );
                }
                // Never "*".
                assert!(!resource.contains("\"*\""), "{name}: {resource}");
            }
        }
    }
    let key = &template["Parameters"]["PermanentTokenKey"];
    assert_eq!(key["NoEcho"], Value::Bool(true));
    assert_eq!(key["MinLength"].as_u64(), Some(32));
    let outputs = template["Outputs"].as_mapping().unwrap();
    assert!(outputs.contains_key("ApiUrl") && outputs.contains_key("TableName"));
}

#[tokio::test]
async fn tokenctl_init_creates_the_table_template_yaml_declares() {
    let template = template();
    let table = &resources_of_type(&template, "AWS::DynamoDB::Table")[0].1;
    assert_eq!(text(&table["DeletionPolicy"]), "Retain");
    let declared = &table["Properties"];
    assert_eq!(text(&declared["BillingMode"]), "PAY_PER_REQUEST");
    assert_eq!(
        text(&declared["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]),
        "true"
    );
    assert_eq!(text(&declared["DeletionProtectionEnabled"]), "true");
    assert_eq!(
        text(&declared["TimeToLiveSpecification"]["AttributeName"]),
        TTL_ATTRIBUTE
    );
    let declared_keys: Vec<(String, String)> = declared["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| (text(&k["AttributeName"]), text(&k["KeyType"])))
        .collect();
    let code_keys: Vec<(String, String)> = KEY_ATTRIBUTES
        .iter()
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    assert_eq!(declared_keys, code_keys);
    let declared_types: BTreeSet<(String, String)> = declared["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (text(&a["AttributeName"]), text(&a["AttributeType"])))
        .collect();
    assert!(declared["LocalSecondaryIndexes"].is_null());
    let declared_indexes: Vec<(String, Vec<(String, String)>)> = declared["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|index| {
            assert_eq!(text(&index["Projection"]["ProjectionType"]), "ALL");
            let keys = index["KeySchema"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|k| (text(&k["AttributeName"]), text(&k["KeyType"])))
                .collect();
            (text(&index["IndexName"]), keys)
        })
        .collect();
    let code_indexes: Vec<(String, Vec<(String, String)>)> = shared::store::schema::INDEXES
        .iter()
        .map(|(name, keys)| {
            (
                name.to_string(),
                keys.iter()
                    .map(|(name, kind)| (name.to_string(), kind.to_string()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(declared_indexes, code_indexes);
    assert_eq!(
        text(&declared["StreamSpecification"]["StreamViewType"]),
        shared::store::schema::STREAM_VIEW
    );

    // The table tokenctl's definition actually creates on DynamoDB Local.
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "run with `make test`"
    );
    let client = shared::config::dynamodb_client(TrustRoots::default()).await;
    let name = format!("template-{}", random_hex(6));
    create_table(&client, &name).await.unwrap();
    let described = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    let described = described.table().unwrap();
    assert_eq!(key_pairs(described.key_schema()), declared_keys);
    let created_types: BTreeSet<(String, String)> = described
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_string(),
                a.attribute_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(created_types, declared_types);
    assert!(described.local_secondary_indexes().is_empty());
    let created_indexes: Vec<(String, Vec<(String, String)>)> = described
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            assert_eq!(
                index
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|t| t.as_str()),
                Some("ALL")
            );
            let keys = key_pairs(index.key_schema());
            (index.index_name().unwrap_or_default().to_string(), keys)
        })
        .collect();
    let mut created_indexes = created_indexes;
    created_indexes.sort();
    let mut code_indexes = code_indexes;
    code_indexes.sort();
    assert_eq!(created_indexes, code_indexes);
    let stream = described.stream_specification().unwrap();
    assert!(stream.stream_enabled());
    assert_eq!(
        stream.stream_view_type().map(|v| v.as_str()),
        Some(shared::store::schema::STREAM_VIEW)
    );
    assert_eq!(
        described
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));
}

#[test]
fn every_function_and_the_table_are_alarmed_and_every_alarm_notifies_the_topic() {
    let template = template();
    let alarms = resources_of_type(&template, "AWS::CloudWatch::Alarm");
    let shown = |value: &Value| serde_yaml::to_string(value).unwrap();
    let on_function = |metric: &str, function: &str| {
        alarms.iter().any(|(_, alarm)| {
            let p = &alarm["Properties"];
            p["Namespace"].as_str() == Some("AWS/Lambda")
                && p["MetricName"].as_str() == Some(metric)
                && shown(&p["Dimensions"]).contains(&format!("Ref {function}"))
        })
    };
    let functions = resources_of_type(&template, "AWS::Serverless::Function");
    // The route functions, and events.
    assert_eq!(functions.len(), tokenctl::serve::FUNCTIONS.len() + 1);
    for (function, _) in &functions {
        // The authorizer's Lambda errors count every refused token ("Unauthorized" is an
        // error): its failure alarm counts its own failed outcomes instead.
        if function != "AuthorizerFunction" {
            assert!(on_function("Errors", function), "{function} errors");
        }
        assert!(on_function("Throttles", function), "{function} throttles");
    }
    assert!(alarms.iter().any(|(_, alarm)| {
        let p = &alarm["Properties"];
        p["Namespace"].as_str() == Some(shared::metrics::NAMESPACE)
            && p["MetricName"].as_str() == Some("Authorizations")
            && shown(&p["Dimensions"]).contains("failed")
    }));
    let on = |namespace: &str, metric: &str| {
        alarms.iter().any(|(_, alarm)| {
            shown(&alarm["Properties"]).contains(namespace)
                && shown(&alarm["Properties"]).contains(metric)
        })
    };
    assert!(on("AWS/ApiGateway", "5XXError"));
    assert!(on_function("IteratorAge", "EventsFunction"));
    assert!(on("AWS/SQS", "ApproximateNumberOfMessagesVisible"));
    assert!(on("AWS/DynamoDB", "ReadThrottleEvents") && on("AWS/DynamoDB", "WriteThrottleEvents"));
    assert!(on("AWS/DynamoDB", "SystemErrors"));
    for (name, alarm) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            let shown = shown(&alarm["Properties"][actions]);
            assert!(
                shown.contains("NotifyAlarms") && shown.contains("AlarmTopicArn"),
                "{name} {actions}: {shown}"
            );
        }
    }
    assert_eq!(
        text(&template["Parameters"]["AlarmTopicArn"]["Default"]),
        ""
    );
}

#[test]
fn refused_tokens_are_401_and_usage_limits_429_through_an_uncached_authorizer() {
    let template = template();
    let api = &template["Resources"]["TokenApi"]["Properties"];
    let responses = &api["GatewayResponses"];
    assert_eq!(text(&responses["UNAUTHORIZED"]["StatusCode"]), "401");
    assert_eq!(
        text(&responses["UNAUTHORIZED"]["ResponseTemplates"]["application/json"]),
        r#"{"message":"Unauthenticated."}"#
    );
    assert_eq!(text(&responses["ACCESS_DENIED"]["StatusCode"]), "429");
    assert_eq!(
        text(&responses["ACCESS_DENIED"]["ResponseTemplates"]["application/json"]),
        r#"{"message":"Too Many Requests.","code":"$context.authorizer.code"}"#
    );
    let authorizers = &api["Auth"]["Authorizers"];
    assert_eq!(
        authorizers["MeteredAuthorizer"]["Identity"]["ReauthorizeEvery"].as_u64(),
        Some(0)
    );
    let me = &template["Resources"]["AuthorizerFunction"]["Properties"]["Events"]["Me"];
    assert_eq!(
        text(&me["Properties"]["Auth"]["Authorizer"]),
        "MeteredAuthorizer"
    );
}

/// `tokenctl serve` gives each request the time its function has on AWS, so that a stalled
/// table answers the same 503 locally: every API route's function's `Timeout` (its own, or the
/// Globals') is what `timeout_of` gives its paths.
#[test]
fn tokenctl_serve_gives_each_route_its_functions_timeout() {
    let template = template();
    let global = template["Globals"]["Function"]["Timeout"].as_u64().unwrap();
    for (name, function) in resources_of_type(&template, "AWS::Serverless::Function") {
        let timeout = function["Properties"]["Timeout"].as_u64().unwrap_or(global);
        for (_, event) in function["Properties"]["Events"].as_mapping().unwrap() {
            if event["Type"].as_str() != Some("Api") {
                continue;
            }
            let path = text(&event["Properties"]["Path"]);
            assert_eq!(
                tokenctl::serve::timeout_of(&path).as_secs(),
                timeout,
                "{name} {path}"
            );
        }
    }
}

#[test]
fn every_template_parameter_is_in_the_deploy_guide() {
    let guide = include_str!("../../../docs/DEPLOY.md");
    let template = template();
    let parameters: Vec<&str> = template["Parameters"]
        .as_mapping()
        .expect("template.yaml declares parameters")
        .keys()
        .map(|name| name.as_str().unwrap())
        .collect();
    assert!(!parameters.is_empty());
    for parameter in parameters {
        assert!(
            guide.contains(&format!("| `{parameter}` |")),
            "docs/DEPLOY.md's parameter table has no row for {parameter}"
        );
    }
}
