//! `tokenctl serve`: every function's router, merged, on 127.0.0.1; each request answered
//! in-process by the function that owns its route in AWS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::Method;
use axum::Router;
use futures_util::FutureExt;
use tokio::net::TcpListener;

use shared::service::Service;
use shared::web::{route_not_found, Laravel};

/// One function of template.yaml: its folder and crate name (`functions/<name>`, the template's
/// `CodeUri`), the routes its router declares, and the router itself.
pub struct Function {
    pub name: &'static str,
    pub routes: fn() -> Vec<(Method, &'static str)>,
    pub router: fn(Service) -> Router,
}

/// One [`Function`] per crate: `function!("admin-token", admin_token)`.
macro_rules! function {
    ($name:literal, $krate:ident) => {
        Function {
            name: $name,
            routes: || $krate::routes().table(),
            router: $krate::router,
        }
    };
}

/// The functions of template.yaml.
pub const FUNCTIONS: [Function; 7] = [
    function!("admin-token", admin_token),
    function!("customer-token", customer_token),
    function!("api-keys", api_keys),
    function!("get-user-token", get_user_token),
    function!("leak-response", leak_response),
    function!("authorizer", authorizer),
    function!("directory", directory),
];

/// Every function's routes as one router; a path none serves is a Laravel-shaped 404, as API
/// Gateway's own answer is JSON too.
pub fn router(service: &Service) -> Router {
    FUNCTIONS
        .iter()
        .fold(Router::new(), |merged, function| {
            merged.merge((function.router)(service.clone()).reset_fallback())
        })
        .fallback(route_not_found::<Laravel>)
}

/// Serves until the process is stopped.
pub async fn serve(service: Service, port: u16) -> std::io::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(address).await?;
    eprintln!("serving every route on http://{address}");
    for function in &FUNCTIONS {
        for (method, path) in (function.routes)() {
            eprintln!("  {method:<6} {path:<45} {}", function.name);
        }
    }
    let router = router(&service);
    let timed = tower::service_fn(move |request: axum::extract::Request| {
        answer(router.clone(), request).map(Ok::<_, std::convert::Infallible>)
    });
    axum::serve(listener, axum::ServiceExt::into_make_service(timed)).await
}

/// One request as the functions answer it in Lambda: routed and answered by
/// [`shared::web::respond`], within the time Lambda would give it ([`timeout_of`]).
pub async fn answer(router: Router, request: axum::extract::Request) -> axum::response::Response {
    let deadline = Instant::now() + timeout_of(request.uri().path());
    shared::deadline::within(Some(deadline), shared::web::respond(router, request)).await
}

/// The time a request may take: its function's `Timeout` in template.yaml (the leak-response
/// function's 25 s, which a secret-scanning report of 1000 tokens needs, for its routes; the
/// Globals' 10 s for every other route), so that a slow or unreachable DynamoDB answers 503
/// locally as it does on AWS.
pub fn timeout_of(path: &str) -> Duration {
    let leak_response = leak_response::routes().table();
    if leak_response.iter().any(|(_, route)| path.ends_with(route)) {
        Duration::from_secs(25)
    } else {
        Duration::from_secs(10)
    }
}
