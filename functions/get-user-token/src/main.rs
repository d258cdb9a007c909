#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::service::run_function(get_user_token::handle, get_user_token::check_config).await
}
