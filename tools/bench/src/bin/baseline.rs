//! The cold-start baseline: a bare lambda_http function that builds a DynamoDB client the same
//! way and answers 200, so `make bench` can set the functions' start-up against it.

use lambda_http::{service_fn, Body, Error, Request, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let client = shared::config::dynamodb_client().await;
    let client = &client;
    lambda_http::run(service_fn(move |_: Request| async move {
        let _ = client;
        Ok::<_, Error>(Response::new(Body::Text("{}".into())))
    }))
    .await
}
