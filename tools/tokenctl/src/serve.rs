//! `tokenctl serve`: every function's router, merged, on 127.0.0.1; each request answered
//! in-process by the function that owns its route in AWS.

use std::net::SocketAddr;

use axum::http::Method;
use axum::Router;
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

/// The five functions.
pub const FUNCTIONS: [Function; 5] = [
    Function {
        name: "admin-token",
        routes: || admin_token::routes().table(),
        router: admin_token::router,
    },
    Function {
        name: "customer-token",
        routes: || customer_token::routes().table(),
        router: customer_token::router,
    },
    Function {
        name: "api-keys",
        routes: || api_keys::routes().table(),
        router: api_keys::router,
    },
    Function {
        name: "get-user-token",
        routes: || get_user_token::routes().table(),
        router: get_user_token::router,
    },
    Function {
        name: "authorizer",
        routes: || authorizer::routes().table(),
        router: authorizer::router,
    },
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
    // Each request as the functions answer it in Lambda: routed and answered by `respond`.
    let serving = shared::web::serving(router(&service));
    axum::serve(listener, axum::ServiceExt::into_make_service(serving)).await
}
