use lambda_http::lambda_runtime::{self, service_fn, LambdaEvent};
use serde_json::Value;

// Lambda sends an environment one invocation at a time: one thread serves it, and a worker
// pool would only cost start-up (docs/PERFORMANCE.md, "Where the init time goes").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::service::init_tracing();
    let service = shared::service::Service::from_env().await?;
    let router = authorizer::router(service.clone());
    let (service, router) = (&service, &router);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::deadline::instant_of(event.context.deadline());
        shared::deadline::within(
            deadline,
            authorizer::handle_event(service, router, event.payload),
        )
        .await
    }))
    .await
}
