//! `tokenctl serve`: every route on 127.0.0.1, each request handed to the handler of the
//! function that owns it in AWS, in-process.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::{Body, Request, Response};
use tokio::net::TcpListener;

use shared::error::{error_response, ApiError, ErrorStyle};
use shared::http::{serves, Route, MAX_BODY_BYTES};
use shared::service::Service;

/// The functions of template.yaml, as the local server dispatches to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    AdminToken,
    CustomerToken,
    ApiKeys,
    GetUserToken,
    Authorizer,
}

impl Function {
    pub const ALL: [Function; 5] = [
        Function::AdminToken,
        Function::CustomerToken,
        Function::ApiKeys,
        Function::GetUserToken,
        Function::Authorizer,
    ];

    /// The crate and folder name (`functions/<name>`, template.yaml's `CodeUri`).
    pub fn name(self) -> &'static str {
        match self {
            Function::AdminToken => "admin-token",
            Function::CustomerToken => "customer-token",
            Function::ApiKeys => "api-keys",
            Function::GetUserToken => "get-user-token",
            Function::Authorizer => "authorizer",
        }
    }

    /// (method, path pattern) of every route the function serves.
    pub fn routes(self) -> Vec<(&'static str, &'static str)> {
        fn pairs<R>(routes: &[Route<R>]) -> Vec<(&'static str, &'static str)> {
            routes.iter().map(|r| (r.method, r.pattern)).collect()
        }
        match self {
            Function::AdminToken => pairs(&admin_token::ROUTES),
            Function::CustomerToken => pairs(&customer_token::ROUTES),
            Function::ApiKeys => pairs(&api_keys::ROUTES),
            Function::GetUserToken => pairs(&get_user_token::ROUTES),
            Function::Authorizer => pairs(&authorizer::ROUTES),
        }
    }

    /// Whether one of its routes matches `path`, whatever the method (it answers 405 itself).
    fn serves(self, path: &str) -> bool {
        match self {
            Function::AdminToken => serves(&admin_token::ROUTES, path),
            Function::CustomerToken => serves(&customer_token::ROUTES, path),
            Function::ApiKeys => serves(&api_keys::ROUTES, path),
            Function::GetUserToken => serves(&get_user_token::ROUTES, path),
            Function::Authorizer => serves(&authorizer::ROUTES, path),
        }
    }

    async fn handle(self, service: &Service, request: Request) -> Response<Body> {
        match self {
            Function::AdminToken => admin_token::handle(service, request).await,
            Function::CustomerToken => customer_token::handle(service, request).await,
            Function::ApiKeys => api_keys::handle(service, request).await,
            Function::GetUserToken => get_user_token::handle(service, request).await,
            Function::Authorizer => authorizer::handle(service, request).await,
        }
    }
}

/// Answers one request as API Gateway and the functions would.
pub async fn dispatch(service: &Service, request: Request) -> Response<Body> {
    let path = request.uri().path().to_string();
    match Function::ALL.into_iter().find(|f| f.serves(&path)) {
        Some(function) => function.handle(service, request).await,
        None => {
            let shown = path.trim_matches('/').to_string();
            error_response(ErrorStyle::Laravel, &ApiError::RouteNotFound(shown))
        }
    }
}

/// Reads at most one byte more than the limit, so the function still answers 413 itself
/// without the server buffering an unbounded body.
async fn into_lambda_request(request: hyper::Request<Incoming>) -> Request {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => vec![b' '; MAX_BODY_BYTES + 1],
    };
    let body = if bytes.is_empty() {
        Body::Empty
    } else {
        match String::from_utf8(bytes) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    };
    Request::from_parts(parts, body)
}

fn into_hyper_response(response: Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Serves until the process is stopped.
pub async fn serve(service: &'static Service, port: u16) -> std::io::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(address).await?;
    eprintln!("serving every route on http://{address}");
    for function in Function::ALL {
        for (method, pattern) in function.routes() {
            eprintln!("  {method:<6} {pattern:<45} {}", function.name());
        }
    }
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let handler = service_fn(move |request| async move {
                let response = dispatch(service, into_lambda_request(request).await).await;
                Ok::<_, Infallible>(into_hyper_response(response))
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
}
