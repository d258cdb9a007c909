#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::service::run_function(customer_token::handle, |_| Ok(())).await
}
