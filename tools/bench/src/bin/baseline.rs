//! The cold-start floor: a bare lambda_http function that builds a DynamoDB client as a typical
//! Rust Lambda does (aws-config's defaults: the default credentials chain, the system's root
//! certificates) and answers 200, so `make bench` can set the functions' start-up against it.
//! The SDK's own default HTTPS client is not compiled into this workspace; the system-roots
//! client of `shared::trust` is that same client.

use aws_config::BehaviorVersion;
use lambda_http::{service_fn, Body, Error, Request, Response};
use shared::trust::TrustRoots;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(TrustRoots::System.http_client())
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let client = &client;
    lambda_http::run(service_fn(move |_: Request| async move {
        let _ = client;
        Ok::<_, Error>(Response::new(Body::Text("{}".into())))
    }))
    .await
}
