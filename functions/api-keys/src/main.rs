#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::service::run_function(api_keys::handle, |_| Ok(())).await
}
