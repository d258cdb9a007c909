#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::service::run_function(admin_token::handle, |_| Ok(())).await
}
