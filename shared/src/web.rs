//! The web layer of every function: its routes as an axum [`Router`] (run by lambda_http in
//! Lambda, merged with the others by `tokenctl serve`), the caller and body extractors, JSON
//! replies, and errors rendered in the shape of the seed a route reproduces.
//!
//! A handler reads as its route does: `async fn create(caller: Manager<Laravel>, body:
//! Fields<Laravel>) -> Result<Json<View>, Failure<Laravel>>`. The extractors run in argument
//! order, so authentication comes before the body is read, as the seeds answer.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use crate::audit::{Change, Source};
use crate::auth::Principal;
use crate::clock::{now_ms, EpochMs};
use crate::domain::{Permission, UserId};
use crate::error::{ApiError, FieldErrors};
use crate::http::{bearer_token, body_fields, header, routed_request, BodyFormat, MAX_BODY_BYTES};
use crate::service::{init_tracing, Service};
use crate::store::Fault;
use crate::token::PublicTokenId;
use crate::{deadline, http};

/// What every handler's state is: the service, built once per cold start.
pub type State = Arc<Service>;

/// The error-body conventions of one of the seeds' route families, and how its requests present
/// their token and body.
pub trait Style: Send + Sync + 'static {
    /// The JSON body of `error`.
    fn body(error: &ApiError) -> Value;

    /// The token a request presents: `Authorization: Bearer` unless the seed says otherwise.
    fn presented_token(headers: &HeaderMap) -> Option<&str> {
        bearer_token(headers)
    }

    /// The bodies the routes accept.
    fn body_format(headers: &HeaderMap) -> BodyFormat {
        let _ = headers;
        BodyFormat::Json
    }
}

/// `{"message": ...}`, and `{"message", "errors"}` for validation; JSON or form bodies
/// (Laravel).
pub enum Laravel {}

/// Laravel, but `{"error": ...}` for 403 and 404 (the white-label route's seed).
pub enum WhiteLabel {}

/// `{"error": CODE, "message": ...}`, the token in `token`, `Authorization` or `Authorization:
/// Bearer` (the customer-token route's seed).
pub enum Coded {}

/// `{"success": false, "message", "data": null, "code": status}` (the get-user-token seed).
pub enum Envelope {}

fn laravel_body(error: &ApiError) -> Value {
    match error {
        ApiError::Validation(fields) => json!({"message": error.to_string(), "errors": fields}),
        ApiError::TooManyRequests { .. } => {
            json!({"message": error.to_string(), "code": error.code()})
        }
        _ => json!({"message": error.to_string()}),
    }
}

/// Laravel reads `application/x-www-form-urlencoded` bodies as well as JSON ones.
fn laravel_body_format(headers: &HeaderMap) -> BodyFormat {
    let form = header(headers, "content-type").is_some_and(|value| {
        value.split(';').next().is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if form {
        BodyFormat::Form
    } else {
        BodyFormat::Json
    }
}

impl Style for Laravel {
    fn body(error: &ApiError) -> Value {
        laravel_body(error)
    }

    fn body_format(headers: &HeaderMap) -> BodyFormat {
        laravel_body_format(headers)
    }
}

impl Style for WhiteLabel {
    fn body(error: &ApiError) -> Value {
        match error {
            // The seed's 403 and 404 shape.
            ApiError::NotAdministrator | ApiError::MeteredMinting | ApiError::NotFound(_) => {
                json!({"error": error.to_string()})
            }
            _ => laravel_body(error),
        }
    }

    fn body_format(headers: &HeaderMap) -> BodyFormat {
        laravel_body_format(headers)
    }
}

impl Style for Coded {
    fn body(error: &ApiError) -> Value {
        json!({"error": error.code(), "message": error.to_string()})
    }

    fn presented_token(headers: &HeaderMap) -> Option<&str> {
        header(headers, "token")
            .filter(|t| !t.is_empty())
            .or_else(|| bearer_token(headers))
            .or_else(|| header(headers, "authorization").filter(|t| !t.contains(' ')))
    }
}

impl Style for Envelope {
    fn body(error: &ApiError) -> Value {
        json!({
            "success": false,
            "message": error.to_string(),
            "data": null,
            "code": error.status().as_u16(),
        })
    }
}

/// An error answered in style `S` (`Allow` too for a 405).
pub struct Failure<S>(pub ApiError, PhantomData<S>);

impl<S> Failure<S> {
    pub fn new(error: ApiError) -> Failure<S> {
        Failure(error, PhantomData)
    }
}

impl<S> std::fmt::Debug for Failure<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S> From<ApiError> for Failure<S> {
    fn from(error: ApiError) -> Failure<S> {
        Failure::new(error)
    }
}

impl<S> From<FieldErrors> for Failure<S> {
    fn from(errors: FieldErrors) -> Failure<S> {
        Failure::new(errors.into())
    }
}

impl<S> From<Fault> for Failure<S> {
    fn from(fault: Fault) -> Failure<S> {
        Failure::new(fault.into())
    }
}

impl<S: Style> IntoResponse for Failure<S> {
    fn into_response(self) -> Response {
        self.0.log_fault();
        let mut response = Json(self.0.status(), S::body(&self.0)).into_response();
        match &self.0 {
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
            }
            ApiError::TooManyRequests {
                retry_after: Some(seconds),
                ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            _ => {}
        }
        response
    }
}

/// A JSON body with its status.
pub struct Json<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.1) {
            Ok(bytes) => (
                self.0,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            Err(error) => {
                tracing::error!(error = %error, "a response could not be serialized");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// What a caller's token must allow before a route runs.
pub trait Requirement: Send + Sync + 'static {
    fn check(principal: &Principal) -> Result<(), ApiError>;
}

/// Any user's token that authenticates (a service key is refused: 403).
pub enum AnyToken {}

/// Any token that authenticates, a service key too: the route decides (verify).
pub enum AnyCredential {}

/// A platform-admin route that takes the permission `P`: a service key holding it, or an
/// admin's full token.
pub struct Permitted<P>(PhantomData<P>);

/// The permission a platform-admin route takes (see [`Permitted`]).
pub trait Needs: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// One marker type per [`Permission`], for [`Permitted`].
pub mod permission {
    use super::{Needs, Permission};

    macro_rules! needs {
        ($($name:ident),+) => {
            $(
                #[doc = concat!("[`Permission::", stringify!($name), "`].")]
                pub enum $name {}

                impl Needs for $name {
                    const PERMISSION: Permission = Permission::$name;
                }
            )+
        };
    }

    needs!(
        UsersRead,
        UsersWrite,
        TokensRead,
        TokensWrite,
        LimitsWrite,
        AuditRead,
        Verify,
        All
    );
}

/// An administrator's full token.
pub enum AdminToken {}

/// A token that may manage tokens (`*` or `tokens:manage`).
pub enum ManagingToken {}

impl Requirement for AnyToken {
    fn check(principal: &Principal) -> Result<(), ApiError> {
        principal.require_user()
    }
}

impl Requirement for AnyCredential {
    fn check(_: &Principal) -> Result<(), ApiError> {
        Ok(())
    }
}

impl<P: Needs> Requirement for Permitted<P> {
    fn check(principal: &Principal) -> Result<(), ApiError> {
        principal.require(P::PERMISSION)
    }
}

impl Requirement for AdminToken {
    fn check(principal: &Principal) -> Result<(), ApiError> {
        principal.require_admin()
    }
}

impl Requirement for ManagingToken {
    fn check(principal: &Principal) -> Result<(), ApiError> {
        principal.require_user()?;
        principal.require_token_management()
    }
}

/// The authenticated caller of a request, as its token allows for `R`, and the time the request
/// is served at. Errors answer in style `S`. The token's last use is recorded
/// when stale (see [`Service::authenticate`]).
pub struct Caller<S, R = AnyToken> {
    pub principal: Principal,
    pub now: EpochMs,
    /// Where the request came from (API Gateway's request context), for audit events.
    pub source: Option<Source>,
    marker: PhantomData<(S, R)>,
}

impl<S, R> Caller<S, R> {
    /// A change made by this caller: what the store's writes take for their audit events.
    pub fn change(&self) -> Change {
        let (token, source) = (self.principal.token(), self.source.clone());
        if self.principal.is_service_key() {
            Change::service_key(token, source)
        } else {
            Change::by(self.principal.user_id, token, source)
        }
    }
}

/// The caller of an admin route.
pub type Admin<S> = Caller<S, AdminToken>;

/// The caller of a platform-admin route that takes the permission `P` (a marker of
/// [`permission`]).
pub type Platform<S, P> = Caller<S, Permitted<P>>;

/// The caller of a route that manages the caller's own tokens.
pub type Manager<S> = Caller<S, ManagingToken>;

impl<S, R> Deref for Caller<S, R> {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<S: Style, R: Requirement> FromRequestParts<State> for Caller<S, R> {
    type Rejection = Failure<S>;

    async fn from_request_parts(parts: &mut Parts, service: &State) -> Result<Self, Failure<S>> {
        let now = now_ms();
        let principal = service
            .authenticate(S::presented_token(&parts.headers), now)
            .await?;
        R::check(&principal)?;
        Ok(Caller {
            principal,
            now,
            source: request_source(parts),
            marker: PhantomData,
        })
    }
}

/// Where a request came from, as API Gateway's request context says (REST or HTTP API); `None`
/// without one (the local server, a direct invocation).
pub fn request_source(parts: &Parts) -> Option<Source> {
    use lambda_http::request::RequestContext;
    let (ip, user_agent) = match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV1(context) => (
            context.identity.source_ip.clone(),
            context.identity.user_agent.clone(),
        ),
        RequestContext::ApiGatewayV2(context) => (
            context.http.source_ip.clone(),
            context.http.user_agent.clone(),
        ),
        _ => return None,
    };
    // A user agent is the client's to choose: kept to 256 characters.
    let user_agent = user_agent.unwrap_or_default().chars().take(256).collect();
    Some(Source {
        ip: ip.unwrap_or_default(),
        user_agent,
    })
}

/// The request's source ([`request_source`]), for routes without a caller.
pub struct RequestSource(pub Option<Source>);

impl<St: Send + Sync> FromRequestParts<St> for RequestSource {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Infallible> {
        Ok(RequestSource(request_source(parts)))
    }
}

/// The body's fields: a JSON object (or, where the style accepts them, a form). An empty body
/// is no fields (so the route reports the missing ones); more than `LIMIT` bytes (16 KiB unless
/// the route takes more) is 413; anything else that is not an object is 400.
pub struct Fields<S, const LIMIT: usize = MAX_BODY_BYTES>(Map<String, Value>, PhantomData<S>);

impl<S, const LIMIT: usize> Deref for Fields<S, LIMIT> {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl<S: Style, const LIMIT: usize> FromRequest<State> for Fields<S, LIMIT> {
    type Rejection = Failure<S>;

    async fn from_request(request: Request, state: &State) -> Result<Self, Failure<S>> {
        let format = S::body_format(request.headers());
        let RawBody(bytes, _) = RawBody::<S, LIMIT>::from_request(request, state).await?;
        Ok(Fields(body_fields(&bytes, format)?, PhantomData))
    }
}

/// The body's exact bytes, up to `LIMIT` (more is 413), for a route that must see them as sent
/// (a signed report).
pub struct RawBody<S, const LIMIT: usize>(pub Bytes, pub PhantomData<S>);

impl<S: Style, const LIMIT: usize> FromRequest<State> for RawBody<S, LIMIT> {
    type Rejection = Failure<S>;

    async fn from_request(request: Request, _: &State) -> Result<Self, Failure<S>> {
        let bytes = axum::body::to_bytes(request.into_body(), LIMIT)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(LIMIT))?;
        Ok(RawBody(bytes, PhantomData))
    }
}

/// The text of a route's first path parameter, or of its last.
async fn path_id<St: Send + Sync>(parts: &mut Parts, state: &St, last: bool) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, state).await.ok()?;
    let mut params = params.iter();
    let param = if last { params.last() } else { params.next() };
    param.map(|(_, value)| value.to_string())
}

/// The token id of a route's last path parameter (its only one, or the `{token_id}` of
/// `/users/{id}/tokens/{token_id}`); `None` when it names no token (any text, including
/// percent-escapes that decode to no UTF-8), which the route answers as its 404.
pub struct TokenIdParam(pub Option<PublicTokenId>);

impl<St: Send + Sync> FromRequestParts<St> for TokenIdParam {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Infallible> {
        let id = path_id(parts, state, true).await;
        Ok(TokenIdParam(id.as_deref().and_then(PublicTokenId::parse)))
    }
}

/// The user id of a route's first path parameter (digits); `None` when it names no user, which
/// the route answers as its 404.
pub struct UserIdParam(pub Option<UserId>);

impl<St: Send + Sync> FromRequestParts<St> for UserIdParam {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Infallible> {
        let id = path_id(parts, state, false).await.filter(|id| {
            !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
        });
        Ok(UserIdParam(id.and_then(|id| id.parse().ok()).map(UserId)))
    }
}

/// A function's routes, in style `S`: the axum router and the list of (method, path) it
/// serves, from the one declaration.
pub struct Routes<S> {
    paths: Vec<(&'static str, Vec<Method>, MethodRouter<State>)>,
    style: PhantomData<S>,
}

impl<S: Style> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            paths: Vec::new(),
            style: PhantomData,
        }
    }
}

impl<S: Style> Routes<S> {
    pub fn post<H: Handler<T, State>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::POST, MethodFilter::POST, path, handler)
    }

    pub fn get<H: Handler<T, State>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::GET, MethodFilter::GET, path, handler)
    }

    pub fn delete<H: Handler<T, State>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::DELETE, MethodFilter::DELETE, path, handler)
    }

    pub fn patch<H: Handler<T, State>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PATCH, MethodFilter::PATCH, path, handler)
    }

    pub fn put<H: Handler<T, State>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PUT, MethodFilter::PUT, path, handler)
    }

    fn on<H: Handler<T, State>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Self {
        match self.paths.iter_mut().find(|(p, _, _)| *p == path) {
            Some((_, methods, router)) => {
                methods.push(method);
                *router = std::mem::take(router).on(filter, handler);
            }
            None => self
                .paths
                .push((path, vec![method], MethodRouter::new().on(filter, handler))),
        }
        self
    }

    /// Every (method, path template) served, in declaration order.
    pub fn table(&self) -> Vec<(Method, &'static str)> {
        self.paths
            .iter()
            .flat_map(|(path, methods, _)| methods.iter().map(|m| (m.clone(), *path)))
            .collect()
    }

    /// The router: each path answers other methods 405 with `Allow` (HEAD too: it is not GET
    /// here), and paths it does not serve 404, in style `S`.
    pub fn into_router(self, service: Service) -> Router {
        let mut router = Router::new();
        for (path, methods, method_router) in self.paths {
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let refuse = move |method: Method, uri: Uri| async move {
                Failure::<S>::new(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    path: shown_path(&uri),
                    allow,
                })
            };
            router = router.route(
                path,
                method_router
                    .on(MethodFilter::HEAD, refuse.clone())
                    .fallback(refuse),
            );
        }
        router
            .fallback(route_not_found::<S>)
            .with_state(Arc::new(service))
    }
}

/// How an unserved path is named in a 404 or 405 message: without its outer slashes.
fn shown_path(uri: &Uri) -> String {
    uri.path().trim_matches('/').to_string()
}

/// The 404 of a path no route serves, in style `S`.
pub async fn route_not_found<S: Style>(uri: Uri) -> Failure<S> {
    Failure::new(ApiError::RouteNotFound(shown_path(&uri)))
}

/// The whole `main` of an HTTP function: tracing, the service built once (a missing setting
/// fails the cold start, see `check`), then lambda_http over the router. Each request is routed
/// as API Gateway matched it ([`routed_request`]) and runs within its invocation's deadline
/// (see [`crate::deadline`]); every answer is a response, never a Lambda error.
pub async fn run(
    router: fn(Service) -> Router,
    check: fn(&Service) -> Result<(), lambda_http::Error>,
) -> Result<(), lambda_http::Error> {
    init_tracing();
    let service = Service::from_env().await?;
    check(&service)?;
    lambda_http::run(serving(router(service))).await
}

/// `router` as a service that answers each request with [`respond`].
pub fn serving<B>(
    router: Router,
) -> impl tower::Service<
    axum::http::Request<B>,
    Response = Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send,
> + Clone
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    tower::service_fn(move |request: axum::http::Request<B>| {
        let response = respond(router.clone(), request);
        async move { Ok::<_, Infallible>(response.await) }
    })
}

/// One request through `router` as routed ([`routed_request`]), within its Lambda invocation's
/// deadline when it has one.
pub async fn respond<B>(router: Router, request: axum::http::Request<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let deadline = http::deadline_of(&request);
    let request = routed_request(request);
    match deadline::within(deadline, router.oneshot(request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer<S: Style>(error: ApiError) -> (StatusCode, HeaderMap, Value) {
        let response = Failure::<S>::new(error).into_response();
        let (parts, body) = response.into_parts();
        let bytes = futures_bytes(body);
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    fn futures_bytes(body: axum::body::Body) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(axum::body::to_bytes(body, usize::MAX))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn validation_matches_the_white_label_seed() {
        let mut errors = FieldErrors::new();
        errors.add(
            "user_id",
            "The user id field is required when email is not present.",
        );
        errors.add(
            "email",
            "The email field is required when user id is not present.",
        );
        let (status, headers, body) = answer::<WhiteLabel>(ApiError::Validation(errors));
        assert_eq!(status, 422);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body,
            json!({
                "message": "The user id field is required when email is not present. (and 1 more error)",
                "errors": {
                    "user_id": ["The user id field is required when email is not present."],
                    "email": ["The email field is required when user id is not present."]
                }
            })
        );
    }

    #[test]
    fn each_style_has_its_own_shape() {
        assert_eq!(
            answer::<WhiteLabel>(ApiError::NotAdministrator).2,
            json!({"error": "You are not an administrator."})
        );
        assert_eq!(
            answer::<Laravel>(ApiError::NotAdministrator).2,
            json!({"message": "You are not an administrator."})
        );
        let (status, _, coded) = answer::<Coded>(ApiError::unavailable("test"));
        assert_eq!(status, 503);
        assert_eq!(coded["error"], "SERVICE_UNAVAILABLE");
        assert_eq!(
            answer::<Envelope>(ApiError::NotFound("User not found.")).2,
            json!({"success": false, "message": "User not found.", "data": null, "code": 404})
        );
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let (status, headers, body) = answer::<Laravel>(ApiError::MethodNotAllowed {
            method: "PUT".into(),
            path: "api/user/api-keys".into(),
            allow: "GET, POST".into(),
        });
        assert_eq!(status, 405);
        assert_eq!(headers[header::ALLOW], "GET, POST");
        assert_eq!(
            body["message"],
            "The PUT method is not supported for route api/user/api-keys. Supported methods: GET, POST."
        );
    }

    #[test]
    fn the_seeds_token_headers() {
        for (name, value) in [
            ("token", "tkna_x"),
            ("authorization", "Bearer tkna_x"),
            ("authorization", "tkna_x"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.parse().unwrap());
            assert_eq!(Coded::presented_token(&headers), Some("tkna_x"));
        }
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(Coded::presented_token(&headers), None);
        headers.insert("authorization", "tkna_x".parse().unwrap());
        assert_eq!(Laravel::presented_token(&headers), None);
    }

    #[test]
    fn laravel_reads_forms_and_the_others_json() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(Laravel::body_format(&headers), BodyFormat::Form);
        assert_eq!(WhiteLabel::body_format(&headers), BodyFormat::Form);
        assert_eq!(Coded::body_format(&headers), BodyFormat::Json);
        headers.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(Laravel::body_format(&headers), BodyFormat::Json);
    }
}
