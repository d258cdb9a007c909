// The SDK clients' futures nest deeply enough to pass the default limit.
#![recursion_limit = "256"]

use lambda_http::lambda_runtime::{self, service_fn, LambdaEvent};
use serde_json::Value;

// One invocation at a time, as every function here (docs/PERFORMANCE.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::service::init_tracing();
    let function = events::Function::from_env().await?;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::deadline::instant_of(event.context.deadline());
        shared::deadline::within(deadline, function.handle(event.payload))
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
