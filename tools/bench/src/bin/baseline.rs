//! The cold-start baseline: a bare lambda_http function that builds a DynamoDB client the same
//! way but trusting the system's roots (what the SDK's default client does, as in a typical Rust
//! Lambda) and answers 200, so `make bench` can set the functions' start-up against that floor.

use lambda_http::{service_fn, Body, Error, Request, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let client = shared::config::dynamodb_client(shared::trust::TrustRoots::System).await;
    let client = &client;
    lambda_http::run(service_fn(move |_: Request| async move {
        let _ = client;
        Ok::<_, Error>(Response::new(Body::Text("{}".into())))
    }))
    .await
}
