// Lambda sends an environment one invocation at a time: one thread serves it, and a worker
// pool would only cost start-up (docs/PERFORMANCE.md, "Where the init time goes").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::web::run(leak_response::router, leak_response::check_config).await
}
