// Lambda sends an environment one invocation at a time: one thread serves it, and a worker
// pool would only cost start-up (docs/PERFORMANCE.md, "Where the init time goes").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::web::run(directory::router, |_| Ok(())).await
}
