//! Hostile input, every credential against every route, and concurrency, through the same
//! router `tokenctl serve` serves, against DynamoDB Local. No case may answer 5xx, and every
//! answer has its route's JSON shape.
//!
//! The credential matrix and the hostile input also run, as the same code, against `sam local
//! start-api` (template.yaml's API emulated by SAM, each function the arm64 bootstrap of `sam
//! build` in a Lambda container): `scripts/sam-local.sh suites` runs the `#[ignore]`d
//! `..._through_sam_local` tests with `SAM_API_URL` and `SAM_API_TABLE` set. There API Gateway
//! (as SAM emulates it) answers some cases before any function runs; [`Target::gateway_answer`]
//! says which and how.

use std::sync::Arc;

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::domain::{Abilities, CustomerId, Permission, Role, UserId, UserStatus};
use shared::mint::{mint, MintRequest};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Owner, User};
use shared::test_support::{
    add_user, disabled_token, new_user, request, service, service_with, tenant, token_for, Tenant,
};
use shared::token::{self, TokenFamily, TokenKind};
use shared::trust::TrustRoots;
use tokenctl::serve::{router, FUNCTIONS};

/// The load tests (200 concurrent requests, a second DynamoDB Local starting and stopping) take
/// turns, so none of them measures the others' load on a two-core machine.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a route words its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Laravel,
    WhiteLabel,
    Coded,
    Envelope,
}

/// Fails the test on a 5xx, or unless `body` has the shape `style` prescribes for `status`.
fn assert_shape(style: Style, status: u16, body: &Value, case: &str) {
    assert!(status < 500, "{case}: {status} {body}");
    assert_error_shape(style, status, body, case);
}

/// Fails the test unless `body` has the shape `style` prescribes for `status`.
fn assert_error_shape(style: Style, status: u16, body: &Value, case: &str) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{case}: not an object: {body}"));
    if status < 400 {
        return;
    }
    let message = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty())
    };
    let ok = match style {
        Style::Laravel => message("message") && (status != 422 || object["errors"].is_object()),
        Style::WhiteLabel if matches!(status, 403 | 404) && object.contains_key("error") => {
            message("error") && object.len() == 1
        }
        Style::WhiteLabel => message("message") && (status != 422 || object["errors"].is_object()),
        Style::Coded => message("error") && message("message") && object.len() == 2,
        Style::Envelope => {
            object["success"] == false
                && object["data"].is_null()
                && object["code"] == status
                && object["message"].is_string()
                && object.len() == 4
        }
    };
    assert!(ok, "{case}: {status} {body} is not a {style:?} error");
}

async fn send(service: &Service, request: Request) -> (u16, Value, Vec<u8>) {
    let (status, _, bytes) = shared::test_support::exchange(router(service), request).await;
    let status = status.as_u16();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, body, bytes)
}

/// Where the requests of a test go.
enum Target {
    /// The functions' routers, in-process, merged as `tokenctl serve` merges them.
    InProcess(Service),
    /// `sam local start-api` on 127.0.0.1:`port`.
    SamLocal { port: u16 },
}

/// SAM's answer when a method and path match no route of the template (API Gateway answers
/// MISSING_AUTHENTICATION_TOKEN, which the template maps to a JSON 404; SAM does not apply
/// gateway responses).
fn sam_no_route() -> (u16, Value) {
    (403, json!({"message": "Missing Authentication Token"}))
}

impl Target {
    async fn send(&self, request: Request) -> (u16, Value, Vec<u8>) {
        match self {
            Target::InProcess(service) => send(service, request).await,
            Target::SamLocal { port } => {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let headers: Vec<(String, String)> = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect();
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let (status, _, bytes) = shared::test_support::http_exchange(
                    *port,
                    request.method().as_str(),
                    &path,
                    &headers,
                    request.body().as_ref(),
                );
                let body = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
                (status, body, bytes)
            }
        }
    }

    /// What API Gateway, as SAM emulates it, answers itself instead of the function: a method and
    /// path that no route of the template has, and the authorizer's refusals on the route it
    /// protects (no token: SAM's 401; a token that does not authenticate: the authorizer's
    /// "Unauthorized" error, which SAM does not map as API Gateway does and answers 502 — on AWS
    /// the template's UNAUTHORIZED gateway response makes both the 401 JSON the functions
    /// give). `None`: the function answers.
    fn gateway_answer(&self, method: &Method, path: &str, token: Token) -> Option<(u16, Value)> {
        if matches!(self, Target::InProcess(_)) {
            return None;
        }
        let path = path.split('?').next().unwrap_or_default();
        match template_route(method, path) {
            None => Some(sam_no_route()),
            Some(template) if template != "/api/user/me" => None,
            Some(_) => match token {
                Token::Missing => Some((401, json!({"message": "Unauthorized"}))),
                Token::Refused => Some((502, json!({"message": "Internal server error"}))),
                Token::Valid => None,
            },
        }
    }
}

/// The route template (of any function) that serves `method` on `path`, as API Gateway matches
/// them: literal segments equal, `{name}` any one segment.
fn template_route(method: &Method, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    FUNCTIONS
        .iter()
        .flat_map(|function| (function.routes)())
        .filter(|(m, _)| m == method)
        .map(|(_, template)| template)
        .find(|template| {
            let wanted: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
            wanted.len() == segments.len()
                && wanted.iter().zip(&segments).all(|(want, have)| {
                    shared::http::path_parameter(want).is_some() || want == have
                })
        })
}

/// The token a request carries, as the authorizer judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Missing,
    Refused,
    Valid,
}

impl World {
    /// How the authorizer judges the bearer token of `headers`.
    async fn judge(&self, headers: &[(&str, &str)]) -> Token {
        let Some((_, value)) = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        else {
            return Token::Missing;
        };
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        match shared::auth::authenticate(
            &self.store,
            &shared::token::TokenFormat::default(),
            Some(token),
            now_ms(),
        )
        .await
        {
            Ok(_) => Token::Valid,
            Err(_) => Token::Refused,
        }
    }
}

/// Everything the matrix needs: two tenants, a customer, and tokens in every state.
struct World {
    target: Target,
    store: DynamoStore,
    a: Tenant,
    b: Tenant,
    customer: User,
    expired: String,
    revoked: String,
    leaked: String,
    blocked: String,
    disabled: String,
    limited_admin: String,
    unknown: String,
    bad_checksum: String,
    /// A's service keys, one per permission (in [`Permission::ALL`]'s order).
    service_keys: Vec<(Permission, String)>,
    /// B's `*` service key.
    other_service_key: String,
    /// A's `*` service key, revoked.
    revoked_service_key: String,
}

/// A service key of `platform` with `permission`, minted as `tokenctl service-key create` does.
async fn service_key(
    store: &DynamoStore,
    platform: &shared::store::Platform,
    permission: Permission,
) -> shared::mint::Minted {
    let now = now_ms();
    let account = store.service_account(platform.id, now).await.unwrap();
    let request = MintRequest {
        kind: TokenKind::ServiceKey,
        name: shared::domain::TokenName::parse("backend").unwrap(),
        abilities: Permission::parse_list(vec![permission.as_str().into()]).unwrap(),
        expires_at: None,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    };
    mint(
        store,
        &shared::token::TokenFormat::default(),
        Owner::from(&account),
        request,
        u32::MAX,
        now,
    )
    .await
    .unwrap()
}

async fn world() -> World {
    let (service, store) = service().await;
    world_on(Target::InProcess(service), store).await
}

/// [`world`] in the table `sam local start-api` serves (`SAM_API_TABLE`), sent to it
/// (`SAM_API_URL`).
async fn sam_world() -> World {
    let (url, table) = (std::env::var("SAM_API_URL"), std::env::var("SAM_API_TABLE"));
    let (Ok(url), Ok(table)) = (url, table) else {
        panic!("SAM_API_URL and SAM_API_TABLE are not set: run scripts/sam-local.sh suites");
    };
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("SAM_API_URL is http://127.0.0.1:PORT");
    let store = DynamoStore::new(
        shared::config::dynamodb_client(TrustRoots::default()).await,
        table,
    );
    world_on(Target::SamLocal { port }, store).await
}

/// [`world`] in `store`'s table, its requests sent to `target`.
async fn world_on(target: Target, store: DynamoStore) -> World {
    let a = tenant(&store).await;
    let b = tenant(&store).await;
    let mut customer = new_user(&a.platform, Role::User);
    customer.customer_id = CustomerId::parse(&format!("{:012}", 100_000_000_000u64 + a.user.id.0));
    let customer = add_user(&store, customer).await;
    let now = now_ms();
    let request = |expires_at| MintRequest {
        kind: TokenKind::ApiKey,
        name: shared::domain::TokenName::parse("state").unwrap(),
        abilities: Abilities::full(),
        expires_at,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    };
    let expired = mint(
        &store,
        &shared::token::TokenFormat::default(),
        Owner::from(&a.admin),
        request(Some(now.0 / 1000 - 60)),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    let revoked = mint(
        &store,
        &shared::token::TokenFormat::default(),
        Owner::from(&a.admin),
        request(None),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    assert!(store
        .revoke_token(
            a.admin.id,
            TokenFamily::ApiKeys,
            revoked.record.id,
            &shared::audit::Change::operator(),
            now
        )
        .await
        .unwrap());
    // A's admin's full key, reported leaked (revoked as a secret-scanning report does).
    let leaked = mint(
        &store,
        &shared::token::TokenFormat::default(),
        Owner::from(&a.admin),
        request(None),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    let why = shared::store::Revocation::Leaked(shared::store::Leak::new(
        Some("https://example.com/leak"),
        None,
    ));
    assert_eq!(
        store
            .revoke_tokens(
                &[(leaked.record.clone(), why)],
                &shared::audit::Change::operator(),
                now
            )
            .await
            .unwrap(),
        1
    );
    // A's admin's own full key, disabled.
    let disabled = disabled_token(&store, &a.admin).await;
    let blocked_admin = add_user(&store, new_user(&a.platform, Role::Admin)).await;
    let blocked = token_for(&store, &blocked_admin, TokenKind::ApiKey, Abilities::full()).await;
    store
        .set_user_status(
            blocked_admin.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let limited = Abilities::parse(vec!["calls:read".into()]).unwrap();
    let limited_admin = token_for(&store, &a.admin, TokenKind::Personal, limited).await;
    let unknown = shared::token::TokenFormat::default()
        .generate(TokenKind::ApiKey, UserId(999_999_999), now)
        .secret
        .expose()
        .to_string();
    let mut service_keys = Vec::new();
    for permission in Permission::ALL {
        let key = service_key(&store, &a.platform, permission).await;
        service_keys.push((permission, key.secret.expose().to_string()));
    }
    let other_service_key = service_key(&store, &b.platform, Permission::All)
        .await
        .secret
        .expose()
        .to_string();
    let revoked_key = service_key(&store, &a.platform, Permission::All).await;
    assert!(store
        .revoke_token(
            revoked_key.record.user_id,
            TokenFamily::Service,
            revoked_key.record.id,
            &shared::audit::Change::operator(),
            now
        )
        .await
        .unwrap());
    let mut bad_checksum = a.admin_token.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == '0' { '1' } else { '0' });
    World {
        target,
        store,
        a,
        b,
        customer,
        expired: expired.secret.expose().to_string(),
        revoked: revoked.secret.expose().to_string(),
        leaked: leaked.secret.expose().to_string(),
        blocked,
        disabled,
        limited_admin,
        unknown,
        bad_checksum,
        service_keys,
        other_service_key,
        revoked_service_key: revoked_key.secret.expose().to_string(),
    }
}

/// One route as the matrix calls it.
#[derive(Clone, Copy, Debug)]
enum Route {
    WhiteLabelToken,
    CustomerToken,
    RevokeCustomerToken,
    GetUserToken,
    RotateUserToken,
    CreateApiKey,
    ListApiKeys,
    DeleteApiKey,
    CreateApiToken,
    ListApiTokens,
    DeleteApiToken,
    UpdateApiKey,
    UpdateApiToken,
    RollApiKey,
    RollApiToken,
    VerifyToken,
    Me,
    /// Unsigned here (every caller 401): signed reports are the leak-response crate's tests.
    SecretScanningReport,
    /// No credential needed: always 202.
    RevokeOwnToken,
    AuditEvents,
    UserLimits,
    TokenLimits,
    CreateServiceKey,
    ListServiceKeys,
    RevokeServiceKey,
    CreateUser,
    FindUsers,
    GetUser,
    UpdateUser,
    ListUserTokens,
    MintUserToken,
    RevokeUserToken,
    ImportTokens,
}

/// Who calls, in the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Admin,
    User,
    LimitedAdmin,
    OtherPlatformAdmin,
    /// A's service key with this one permission.
    ServiceKey(Permission),
    /// B's `*` service key.
    OtherPlatformServiceKey,
}

impl Route {
    const ALL: [Route; 33] = [
        Route::WhiteLabelToken,
        Route::CustomerToken,
        Route::RevokeCustomerToken,
        Route::GetUserToken,
        Route::RotateUserToken,
        Route::CreateApiKey,
        Route::ListApiKeys,
        Route::DeleteApiKey,
        Route::CreateApiToken,
        Route::ListApiTokens,
        Route::DeleteApiToken,
        Route::UpdateApiKey,
        Route::UpdateApiToken,
        Route::RollApiKey,
        Route::RollApiToken,
        Route::VerifyToken,
        Route::Me,
        Route::SecretScanningReport,
        Route::RevokeOwnToken,
        Route::AuditEvents,
        Route::UserLimits,
        Route::TokenLimits,
        Route::CreateServiceKey,
        Route::ListServiceKeys,
        Route::RevokeServiceKey,
        Route::CreateUser,
        Route::FindUsers,
        Route::GetUser,
        Route::UpdateUser,
        Route::ListUserTokens,
        Route::MintUserToken,
        Route::RevokeUserToken,
        Route::ImportTokens,
    ];

    /// The permission a service key needs for this route; `None`: no service key may use it.
    fn permission(self) -> Option<Permission> {
        Some(match self {
            Route::CustomerToken
            | Route::RevokeCustomerToken
            | Route::MintUserToken
            | Route::RevokeUserToken
            | Route::ImportTokens => Permission::TokensWrite,
            Route::AuditEvents => Permission::AuditRead,
            Route::UserLimits | Route::TokenLimits => Permission::LimitsWrite,
            Route::VerifyToken => Permission::Verify,
            Route::CreateUser | Route::UpdateUser => Permission::UsersWrite,
            Route::FindUsers | Route::GetUser => Permission::UsersRead,
            Route::ListUserTokens => Permission::TokensRead,
            Route::CreateServiceKey | Route::ListServiceKeys | Route::RevokeServiceKey => {
                Permission::All
            }
            _ => return None,
        })
    }

    /// A platform route that acts on the caller's own platform as a whole: another platform's
    /// admin succeeds on its own (an import's entries for A's user are then each answered as
    /// not found).
    fn platform_wide(self) -> bool {
        matches!(
            self,
            Route::CreateServiceKey
                | Route::ListServiceKeys
                | Route::CreateUser
                | Route::ImportTokens
        )
    }

    fn style(self) -> Style {
        match self {
            Route::WhiteLabelToken => Style::WhiteLabel,
            Route::CustomerToken | Route::RevokeCustomerToken => Style::Coded,
            Route::GetUserToken | Route::RotateUserToken => Style::Envelope,
            _ => Style::Laravel,
        }
    }

    fn admin_only(self) -> bool {
        matches!(
            self,
            Route::WhiteLabelToken
                | Route::CustomerToken
                | Route::RevokeCustomerToken
                | Route::GetUserToken
                | Route::RotateUserToken
                | Route::AuditEvents
                | Route::UserLimits
                | Route::TokenLimits
        ) || (self.permission().is_some() && !matches!(self, Route::VerifyToken))
    }

    /// The status a refused token gets: 401, but on the routes that take no token.
    fn refused(self) -> u16 {
        match self {
            Route::RevokeOwnToken => 202,
            _ => 401,
        }
    }

    /// The status a valid caller gets.
    fn expected(self, caller: Caller) -> u16 {
        match (self, caller) {
            (Route::SecretScanningReport | Route::RevokeOwnToken, _) => self.refused(),
            // A service key never passes the authorizer, nor acts as a user.
            (Route::Me, Caller::ServiceKey(_) | Caller::OtherPlatformServiceKey) => 401,
            (_, Caller::ServiceKey(permission)) => match self.permission() {
                Some(needed) if permission == needed || permission == Permission::All => {
                    self.success()
                }
                _ => 403,
            },
            (_, Caller::OtherPlatformServiceKey) => match self.permission() {
                Some(_) => self.expected(Caller::OtherPlatformAdmin),
                None => 403,
            },
            (_, Caller::OtherPlatformAdmin) if self.platform_wide() => self.success(),
            (_, Caller::Admin) => self.success(),
            (Route::VerifyToken, Caller::User) => 200, // the token verifies itself
            (Route::VerifyToken, Caller::LimitedAdmin) => 403,
            (Route::VerifyToken, Caller::OtherPlatformAdmin) => 200, // NOT_FOUND in the body
            (_, Caller::User | Caller::LimitedAdmin) if self.admin_only() => 403,
            // Without `*` or tokens:manage a token manages no tokens, not even its owner's.
            (_, Caller::LimitedAdmin) if self.manages_tokens() => 403,
            (_, Caller::OtherPlatformAdmin) if self.admin_only() => 404,
            _ => self.success(),
        }
    }

    fn manages_tokens(self) -> bool {
        matches!(
            self,
            Route::CreateApiKey
                | Route::ListApiKeys
                | Route::DeleteApiKey
                | Route::CreateApiToken
                | Route::ListApiTokens
                | Route::DeleteApiToken
                | Route::UpdateApiKey
                | Route::UpdateApiToken
                | Route::RollApiKey
                | Route::RollApiToken
        )
    }

    fn success(self) -> u16 {
        match self {
            Route::CreateApiKey
            | Route::CreateApiToken
            | Route::RollApiKey
            | Route::RollApiToken
            | Route::CreateServiceKey
            | Route::CreateUser
            | Route::MintUserToken => 201,
            Route::RevokeOwnToken => 202,
            _ => 200,
        }
    }

    /// A request with `token` (if any) that succeeds for tenant A's admin.
    async fn request(self, w: &World, token: Option<&str>) -> Request {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        match (self, token) {
            (Route::CustomerToken | Route::RevokeCustomerToken, Some(token)) => {
                headers.push(("token", token))
            }
            (_, Some(_)) => headers.push(("authorization", bearer.as_deref().unwrap())),
            (_, None) => {}
        }
        let (method, path, body) = match self {
            Route::WhiteLabelToken => (
                Method::POST,
                "/api/white-label/token".to_string(),
                json!({"user_id": w.a.user.id.0}).to_string(),
            ),
            Route::CustomerToken => (
                Method::POST,
                "/api/v1/global/users/gettokenbycustomerid".to_string(),
                json!({"customer_id": w.customer.customer_id.as_ref().unwrap().as_str()})
                    .to_string(),
            ),
            Route::RevokeCustomerToken => {
                // A fresh customer token of A's customer each time.
                let text = token_for(
                    &w.store,
                    &w.customer,
                    TokenKind::Customer,
                    Abilities::full(),
                )
                .await;
                let parsed = token::parse_any_prefix(&text).unwrap();
                (
                    Method::DELETE,
                    format!(
                        "/api/v1/global/users/tokens/{}-{}",
                        w.customer.id, parsed.token_id
                    ),
                    String::new(),
                )
            }
            Route::GetUserToken => {
                headers.push(("authtype", "Key"));
                (
                    Method::GET,
                    format!("/ext/get-user-token?userId={}", w.a.user.id),
                    String::new(),
                )
            }
            Route::RotateUserToken => {
                headers.push(("authtype", "Key"));
                (
                    Method::POST,
                    format!("/ext/rotate-user-token?userId={}", w.a.user.id),
                    String::new(),
                )
            }
            Route::CreateApiKey => (
                Method::POST,
                "/api/user/api-keys".into(),
                r#"{"name":"m"}"#.into(),
            ),
            Route::ListApiKeys => (Method::GET, "/api/user/api-keys".into(), String::new()),
            Route::CreateApiToken => (
                Method::POST,
                "/api/v1/user/api-tokens".into(),
                r#"{"name":"m"}"#.into(),
            ),
            Route::ListApiTokens => (Method::GET, "/api/v1/user/api-tokens".into(), String::new()),
            Route::VerifyToken => (
                Method::POST,
                "/api/v1/tokens/verify".into(),
                json!({ "token": w.a.user_token }).to_string(),
            ),
            Route::Me => (Method::GET, "/api/user/me".into(), String::new()),
            Route::AuditEvents => (
                Method::GET,
                format!("/api/v1/audit-events?user_id={}&limit=5", w.a.user.id),
                String::new(),
            ),
            // No limits (null), so the rest of the matrix is never refused for them.
            Route::UserLimits => (
                Method::PUT,
                format!("/api/v1/users/{}/limits", w.a.user.id),
                json!({"credits": null, "rate_limit": null}).to_string(),
            ),
            Route::TokenLimits => {
                let parsed = token::parse_any_prefix(&w.a.user_token).unwrap();
                (
                    Method::PUT,
                    format!("/api/v1/tokens/{}-{}/limits", w.a.user.id, parsed.token_id),
                    json!({"credits": null, "rate_limit": null}).to_string(),
                )
            }
            Route::CreateServiceKey => (
                Method::POST,
                "/api/v1/service-keys".into(),
                r#"{"name":"m","permissions":["verify"]}"#.into(),
            ),
            Route::ListServiceKeys => (Method::GET, "/api/v1/service-keys".into(), String::new()),
            Route::RevokeServiceKey => {
                let key = service_key(&w.store, &w.a.platform, Permission::Verify).await;
                (
                    Method::DELETE,
                    format!("/api/v1/service-keys/{}", key.record.public_id()),
                    String::new(),
                )
            }
            Route::CreateUser => (
                Method::POST,
                "/api/v1/users".into(),
                json!({"email": format!("{}@example.com", shared::test_support::random_hex(8)), "name": "m"})
                    .to_string(),
            ),
            Route::FindUsers => (
                Method::GET,
                format!("/api/v1/users?email={}", w.a.user.email.replace('@', "%40")),
                String::new(),
            ),
            Route::GetUser => (
                Method::GET,
                format!("/api/v1/users/{}", w.a.user.id),
                String::new(),
            ),
            Route::UpdateUser => (
                Method::PATCH,
                format!("/api/v1/users/{}", w.a.user.id),
                r#"{"meta":{"k":1}}"#.into(),
            ),
            Route::ListUserTokens => (
                Method::GET,
                format!("/api/v1/users/{}/tokens", w.a.user.id),
                String::new(),
            ),
            Route::MintUserToken => (
                Method::POST,
                format!("/api/v1/users/{}/tokens", w.customer.id),
                r#"{"name":"m"}"#.into(),
            ),
            Route::ImportTokens => (
                Method::POST,
                "/api/v1/tokens/import".into(),
                json!({"tokens": [{"user_id": w.customer.id, "name": "i",
                    "token": format!("legacy-{}", shared::test_support::random_hex(8))}]})
                .to_string(),
            ),
            Route::RevokeUserToken => {
                let text =
                    token_for(&w.store, &w.a.admin, TokenKind::ApiKey, Abilities::full()).await;
                let parsed = token::parse_any_prefix(&text).unwrap();
                (
                    Method::DELETE,
                    format!("/api/v1/users/{}/tokens/{}-{}", w.a.admin.id, w.a.admin.id, parsed.token_id),
                    String::new(),
                )
            }
            Route::SecretScanningReport => (
                Method::POST,
                "/api/v1/secret-scanning/verify".into(),
                json!([{"token": w.a.user_token, "type": "t", "url": "u", "source": "content"}])
                    .to_string(),
            ),
            Route::RevokeOwnToken => {
                // A fresh key of A's admin each time, revoked by whoever sends it.
                let text =
                    token_for(&w.store, &w.a.admin, TokenKind::ApiKey, Abilities::full()).await;
                (
                    Method::POST,
                    "/api/v1/tokens/revoke".into(),
                    json!({ "token": text }).to_string(),
                )
            }
            Route::DeleteApiKey
            | Route::DeleteApiToken
            | Route::UpdateApiKey
            | Route::UpdateApiToken
            | Route::RollApiKey
            | Route::RollApiToken => {
                // A fresh token of the caller (when the caller is a real, active user), else of A's admin.
                let owner = match token.and_then(|t| token::parse_any_prefix(t).ok()) {
                    Some(parsed) => w.store.get_user(parsed.user_id).await.unwrap(),
                    None => None,
                }
                .filter(User::is_active)
                .unwrap_or_else(|| w.a.admin.clone());
                let (kind, base) = match self {
                    Route::DeleteApiKey | Route::UpdateApiKey | Route::RollApiKey => {
                        (TokenKind::ApiKey, "/api/user/api-keys")
                    }
                    _ => (TokenKind::Personal, "/api/v1/user/api-tokens"),
                };
                let (method, suffix, body) = match self {
                    Route::UpdateApiKey | Route::UpdateApiToken => {
                        (Method::PATCH, "", r#"{"name":"renamed"}"#)
                    }
                    Route::RollApiKey | Route::RollApiToken => {
                        (Method::POST, "/roll", r#"{"grace_seconds":60}"#)
                    }
                    _ => (Method::DELETE, "", ""),
                };
                let text = token_for(&w.store, &owner, kind, Abilities::full()).await;
                let parsed = token::parse_any_prefix(&text).unwrap();
                (
                    method,
                    format!("{base}/{}-{}{suffix}", owner.id, parsed.token_id),
                    body.to_string(),
                )
            }
        };
        request(method, &path, &headers, &body)
    }
}

#[tokio::test]
async fn every_credential_against_every_route() {
    credential_matrix(&world().await).await;
}

#[tokio::test]
#[ignore = "needs sam local start-api: scripts/sam-local.sh suites (make test) runs it"]
async fn every_credential_against_every_route_through_sam_local() {
    credential_matrix(&sam_world().await).await;
}

/// Every route against every credential: a token in each state that must be refused, and each
/// kind of caller; the status each must get, in its route's shape.
async fn credential_matrix(w: &World) {
    let rejected: [(&str, Option<&str>); 10] = [
        ("no token", None),
        ("garbage", Some("garbage")),
        ("well-formed unknown", Some(&w.unknown)),
        ("bad checksum", Some(&w.bad_checksum)),
        ("expired", Some(&w.expired)),
        ("revoked", Some(&w.revoked)),
        ("leaked", Some(&w.leaked)),
        ("blocked owner", Some(&w.blocked)),
        ("disabled", Some(&w.disabled)),
        ("revoked service key", Some(&w.revoked_service_key)),
    ];
    // The matrix covers exactly the routes the functions' routers declare.
    let mut covered = std::collections::BTreeSet::new();
    for route in Route::ALL {
        let request = route.request(w, None).await;
        let path = request.uri().path();
        let template = template_route(request.method(), path)
            .unwrap_or_else(|| panic!("{route:?}: {path} is no route of the routers"));
        covered.insert((request.method().clone(), template));
    }
    let declared = FUNCTIONS
        .iter()
        .flat_map(|function| (function.routes)())
        .collect();
    assert_eq!(
        covered, declared,
        "the matrix's routes and the routers' routes"
    );
    let mut cases = 0;
    for route in Route::ALL {
        for (state, token) in rejected {
            let request = route.request(w, token).await;
            let judged = token.map_or(Token::Missing, |_| Token::Refused);
            let gateway = w
                .target
                .gateway_answer(request.method(), request.uri().path(), judged);
            let (status, body, _) = w.target.send(request).await;
            let case = format!("{route:?} with {state}");
            match gateway {
                Some(answer) => assert_eq!((status, body), answer, "{case}"),
                None => {
                    assert_eq!(status, route.refused(), "{case}: {body}");
                    assert_shape(route.style(), status, &body, &case);
                }
            }
            cases += 1;
        }
        let mut callers = vec![
            (Caller::Admin, &w.a.admin_token),
            (Caller::User, &w.a.user_token),
            (Caller::LimitedAdmin, &w.limited_admin),
            (Caller::OtherPlatformAdmin, &w.b.admin_token),
            (Caller::OtherPlatformServiceKey, &w.other_service_key),
        ];
        callers.extend(
            w.service_keys
                .iter()
                .map(|(permission, key)| (Caller::ServiceKey(*permission), key)),
        );
        for (caller, token) in callers {
            let request = route.request(w, Some(token)).await;
            // A credential the route refuses as unauthenticated (a service key on the
            // authorizer's route) is the authorizer's refusal there.
            let expected = route.expected(caller);
            let judged = if expected == 401 {
                Token::Refused
            } else {
                Token::Valid
            };
            let gateway = w
                .target
                .gateway_answer(request.method(), request.uri().path(), judged);
            let (status, body, _) = w.target.send(request).await;
            let case = format!("{route:?} as {caller:?}");
            match gateway {
                Some(answer) => assert_eq!((status, body), answer, "{case}"),
                None => {
                    assert_eq!(status, expected, "{case}: {body}");
                    assert_shape(route.style(), status, &body, &case);
                }
            }
            cases += 1;
        }
    }
    assert_eq!(cases, Route::ALL.len() * (10 + 5 + Permission::ALL.len()));
}

#[tokio::test]
async fn cross_tenant_answers_are_byte_identical_to_unknown_users() {
    let w = world().await;
    let other_admin = format!("Bearer {}", w.b.admin_token);
    let auth = [("authorization", other_admin.as_str())];
    let pairs = [
        (
            request(
                Method::POST,
                "/api/white-label/token",
                &auth,
                &json!({"user_id": w.a.user.id.0}).to_string(),
            ),
            request(
                Method::POST,
                "/api/white-label/token",
                &auth,
                r#"{"user_id": 987654321}"#,
            ),
        ),
        (
            request(
                Method::POST,
                "/api/white-label/token",
                &auth,
                &json!({"email": w.a.user.email}).to_string(),
            ),
            request(
                Method::POST,
                "/api/white-label/token",
                &auth,
                r#"{"email": "nobody@nowhere.test"}"#,
            ),
        ),
        (
            request(
                Method::POST,
                "/api/v1/global/users/gettokenbycustomerid",
                &[("token", &w.b.admin_token)],
                &json!({"customer_id": w.customer.customer_id.as_ref().unwrap().as_str()})
                    .to_string(),
            ),
            request(
                Method::POST,
                "/api/v1/global/users/gettokenbycustomerid",
                &[("token", &w.b.admin_token)],
                r#"{"customer_id": "999999999999"}"#,
            ),
        ),
        (
            request(
                Method::GET,
                &format!("/ext/get-user-token?userId={}", w.a.user.id),
                &[auth[0], ("authtype", "Key")],
                "",
            ),
            request(
                Method::GET,
                "/ext/get-user-token?userId=987654321",
                &[auth[0], ("authtype", "Key")],
                "",
            ),
        ),
    ];
    for (foreign, missing) in pairs {
        let (foreign_status, _, foreign_bytes) = w.target.send(foreign).await;
        let (missing_status, _, missing_bytes) = w.target.send(missing).await;
        assert_eq!(foreign_status, 404);
        assert_eq!(
            (foreign_status, foreign_bytes),
            (missing_status, missing_bytes)
        );
    }
    // Another user's token ids are unknown ids too.
    let victim = token_for(&w.store, &w.a.user, TokenKind::ApiKey, Abilities::full()).await;
    let victim_id = format!(
        "{}-{}",
        w.a.user.id,
        token::parse_any_prefix(&victim).unwrap().token_id
    );
    let (status, body, _) = w
        .target
        .send(request(
            Method::DELETE,
            &format!("/api/user/api-keys/{victim_id}"),
            &auth,
            "",
        ))
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "API key not found."}))
    );
    assert!(shared::auth::authenticate(
        &w.store,
        &shared::token::TokenFormat::default(),
        Some(&victim),
        now_ms()
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn limited_tokens_never_mint_broader_ones() {
    let w = world().await;
    let manager = token_for(
        &w.store,
        &w.a.admin,
        TokenKind::Personal,
        Abilities::parse(vec!["calls:read".into(), "tokens:manage".into()]).unwrap(),
    )
    .await;
    let limited = format!("Bearer {manager}");
    let auth = [("authorization", limited.as_str())];
    for abilities in [
        json!(["*"]),
        json!(["calls:read", "calls:write"]),
        json!(["admin"]),
    ] {
        let body = json!({"name": "wider", "abilities": abilities}).to_string();
        let (status, response, _) = w
            .target
            .send(request(
                Method::POST,
                "/api/v1/user/api-tokens",
                &auth,
                &body,
            ))
            .await;
        assert_eq!(status, 403, "{abilities}: {response}");
    }
    let (status, response, _) = w
        .target
        .send(request(
            Method::POST,
            "/api/v1/user/api-tokens",
            &auth,
            r#"{"name":"narrower","abilities":["calls:read"]}"#,
        ))
        .await;
    assert_eq!(status, 201, "{response}");
    // Nor through the admin routes, which need full access.
    for route in [
        Route::WhiteLabelToken,
        Route::CustomerToken,
        Route::GetUserToken,
        Route::RotateUserToken,
    ] {
        for token in [&w.limited_admin, &manager] {
            let (status, _, _) = w.target.send(route.request(&w, Some(token)).await).await;
            assert_eq!(status, 403, "{route:?}");
        }
    }
}

/// (style, method, path, extra headers, body, expected status) of one hostile request.
type HostileCase = (
    Style,
    Method,
    String,
    Vec<(&'static str, String)>,
    String,
    u16,
);

fn hostile_cases(w: &World) -> Vec<HostileCase> {
    let admin = ("authorization", format!("Bearer {}", w.a.admin_token));
    let user = ("authorization", format!("Bearer {}", w.a.user_token));
    let customer_auth = ("token", w.a.admin_token.clone());
    let cid = w
        .customer
        .customer_id
        .as_ref()
        .unwrap()
        .as_str()
        .to_string();
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(16 * 1024));
    let mut cases = Vec::new();

    // Bodies every POST route must refuse as a body: malformed, not an object, too large.
    let posts = [
        (Style::WhiteLabel, "/api/white-label/token", admin.clone()),
        (Style::Laravel, "/api/user/api-keys", user.clone()),
        (Style::Laravel, "/api/v1/user/api-tokens", user.clone()),
        (
            Style::Coded,
            "/api/v1/global/users/gettokenbycustomerid",
            customer_auth.clone(),
        ),
        (Style::Laravel, "/api/v1/tokens/verify", admin.clone()),
        (Style::Laravel, "/api/v1/tokens/revoke", admin.clone()),
    ];
    for (style, path, auth) in &posts {
        for body in [
            "{",
            "{\"a\":",
            "nul",
            "{\"name\": \"x\",}",
            "\u{feff}{}",
            "[]",
            "\"text\"",
            "42",
            "null",
            "true",
            "[{}]",
        ] {
            cases.push((
                *style,
                Method::POST,
                path.to_string(),
                vec![auth.clone()],
                body.to_string(),
                400,
            ));
        }
        cases.push((
            *style,
            Method::POST,
            path.to_string(),
            vec![auth.clone()],
            huge.clone(),
            413,
        ));
        for method in [Method::PUT, Method::PATCH, Method::GET, Method::DELETE] {
            let listing = ["/api/user/api-keys", "/api/v1/user/api-tokens"].contains(path);
            if listing && method == Method::GET {
                continue;
            }
            cases.push((
                *style,
                method,
                path.to_string(),
                vec![auth.clone()],
                String::new(),
                405,
            ));
        }
        // No function owns it: the server's own (Laravel-shaped) 404, as API Gateway's is JSON too.
        cases.push((
            Style::Laravel,
            Method::POST,
            format!("{path}/extra/segments"),
            vec![auth.clone()],
            "{}".into(),
            404,
        ));
    }

    // The verify route: the token field.
    for (body, status) in [
        (json!({}), 422),
        (json!({"token": null}), 422),
        (json!({"token": ""}), 422),
        (json!({"token": 5}), 422),
        (json!({"token": ["x"]}), 422),
        (json!({"token": "garbage"}), 200),
        (json!({"token": "tkna_".to_string() + &"z".repeat(63)}), 200),
        (json!({"token": "é\u{0}🚀"}), 200),
        (json!({"token": w.a.user_token, "extra": true}), 200),
    ] {
        cases.push((
            Style::Laravel,
            Method::POST,
            "/api/v1/tokens/verify".into(),
            vec![admin.clone()],
            body.to_string(),
            status,
        ));
    }
    cases.push((
        Style::Laravel,
        Method::POST,
        "/api/user/me".into(),
        vec![user.clone()],
        String::new(),
        405,
    ));

    // The white-label route: every field null, wrong types, extra fields, unicode.
    let white = |body: Value, status: u16| {
        (
            Style::WhiteLabel,
            Method::POST,
            "/api/white-label/token".to_string(),
            vec![admin.clone()],
            body.to_string(),
            status,
        )
    };
    for body in [
        json!({}),
        json!({"user_id": null, "email": null, "token_name": null}),
        json!({"user_id": "", "email": "  "}),
    ] {
        cases.push(white(body, 422));
    }
    for value in [
        json!(1.5),
        json!("12a"),
        json!(true),
        json!([1]),
        json!({"id": 1}),
        json!("١٢٣"),
    ] {
        cases.push(white(json!({ "user_id": value }), 422));
    }
    for value in [
        json!(5),
        json!(true),
        json!(["a@b.co"]),
        json!("not-an-email"),
        json!("a@b"),
        json!("é@\u{0}.com"),
    ] {
        cases.push(white(json!({ "email": value }), 422));
    }
    for value in [
        json!(5),
        json!(["n"]),
        json!({}),
        json!("n".repeat(256)),
        json!("a\u{7}b"),
    ] {
        cases.push(white(
            json!({"user_id": w.a.user.id.0, "token_name": value}),
            422,
        ));
    }
    cases.push(white(
        json!({"user_id": w.a.user.id.0, "token_name": "é".repeat(255)}),
        200,
    ));
    cases.push(white(
        json!({"user_id": w.a.user.id.0, "unexpected": [1, {"deep": null}]}),
        200,
    ));
    cases.push(white(json!({"user_id": u64::MAX}), 404));
    cases.push(white(json!({"user_id": -1}), 404));
    cases.push(white(json!({"email": "NOBODY@example.com"}), 404));

    // API keys and personal tokens.
    for path in ["/api/user/api-keys", "/api/v1/user/api-tokens"] {
        let post = |body: Value, status: u16| {
            (
                Style::Laravel,
                Method::POST,
                path.to_string(),
                vec![user.clone()],
                body.to_string(),
                status,
            )
        };
        for value in [
            json!(null),
            json!(""),
            json!("   "),
            json!(5),
            json!(["x"]),
            json!({}),
            json!(true),
            json!("n".repeat(256)),
            json!("tab\tname"),
            json!("\u{202e}\u{0}"),
        ] {
            cases.push(post(json!({ "name": value }), 422));
        }
        for name in ["名前 🚀", "\u{202e}rtl", "a", "ÅngströmΩ"] {
            cases.push(post(json!({ "name": name }), 201));
        }
        cases.push(post(json!({"name": "n".repeat(255)}), 201));
        cases.push(post(json!({"name": "extra", "other": {"x": [1, 2]}}), 201));
        let delete = |id: &str, status: u16| {
            (
                Style::Laravel,
                Method::DELETE,
                format!("{path}/{id}"),
                vec![user.clone()],
                String::new(),
                status,
            )
        };
        for id in [
            "x",
            "1-",
            "-1",
            "999999999999999999999999-00000000000000000000",
            "1-0000000000000000000g",
            "%00",
            "1-%2e%2e",
        ] {
            cases.push(delete(id, 404));
        }
    }
    let tokens = |body: Value, status: u16| {
        (
            Style::Laravel,
            Method::POST,
            "/api/v1/user/api-tokens".to_string(),
            vec![user.clone()],
            body.to_string(),
            status,
        )
    };
    for abilities in [
        json!("*"),
        json!(5),
        json!({"a": 1}),
        json!([1]),
        json!([null]),
        json!([]),
        json!(["has space"]),
        json!([""]),
        json!(["é"]),
        json!(vec!["a"; 51]
            .iter()
            .enumerate()
            .map(|(i, _)| format!("a{i}"))
            .collect::<Vec<_>>()),
    ] {
        cases.push(tokens(json!({"name": "n", "abilities": abilities}), 422));
    }
    cases.push(tokens(json!({"name": "n", "abilities": null}), 201));
    cases.push(tokens(
        json!({"name": "n", "abilities": ["a", "a", "b"]}),
        201,
    ));

    // The customer-token route.
    let customer = |body: Value, status: u16| {
        (
            Style::Coded,
            Method::POST,
            "/api/v1/global/users/gettokenbycustomerid".to_string(),
            vec![customer_auth.clone()],
            body.to_string(),
            status,
        )
    };
    for days in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("30"),
        json!(1e12),
        json!(true),
        json!([30]),
        json!(3651),
        json!(u64::MAX),
    ] {
        cases.push(customer(
            json!({"customer_id": cid, "expiration_days": days}),
            400,
        ));
    }
    for id in [
        json!("12345678901"),
        json!("1234567890123"),
        json!("12345678901a"),
        json!("١٢٣٤٥٦٧٨٩٠١٢"),
        json!(12),
        json!(true),
        json!([cid]),
        json!({}),
    ] {
        cases.push(customer(json!({ "customer_id": id }), 400));
    }
    cases.push(customer(json!({}), 400));
    cases.push(customer(json!({"customer_id": null}), 400));
    cases.push(customer(json!({"customer_id": cid, "name": ""}), 400));
    cases.push(customer(json!({"customer_id": cid, "name": 5}), 400));
    cases.push(customer(
        json!({"customer_id": cid, "name": "n".repeat(256)}),
        400,
    ));
    cases.push(customer(
        json!({"customer_id": cid, "name": "名前", "expiration_days": 3650, "extra": 1}),
        200,
    ));
    cases.push(customer(json!({"customer_id": "000000000001"}), 404));

    // The get-user-token and rotate-user-token routes: query string and authtype.
    for (route_method, route) in [
        (Method::GET, "/ext/get-user-token"),
        (Method::POST, "/ext/rotate-user-token"),
    ] {
        let call = |query: &str, authtype: Option<&str>, status: u16| {
            let mut headers = vec![admin.clone()];
            if let Some(value) = authtype {
                headers.push(("authtype", value.to_string()));
            }
            (
                Style::Envelope,
                route_method.clone(),
                format!("{route}{query}"),
                headers,
                String::new(),
                status,
            )
        };
        for query in [
            "",
            "?",
            "?userId",
            "?userId=",
            "?userid=1",
            "?userId=abc",
            "?userId=-1",
            "?userId=1.5",
            "?userId=%F0%9F%9A%80",
            "?userId=99999999999999999999999",
        ] {
            cases.push(call(query, Some("Key"), 400));
        }
        let valid = format!("?userId={}", w.a.user.id);
        cases.push(call(&valid, None, 400));
        cases.push(call(&valid, Some("Bearer"), 400));
        cases.push(call(&valid, Some(""), 400));
        cases.push(call(&valid, Some("key"), 200));
        cases.push(call(&format!("{valid}&userId=1&extra=x"), Some("Key"), 200));
        cases.push(call("?userId=0", Some("Key"), 404));
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT] {
            if method != route_method {
                let mut case = call(&valid, Some("Key"), 405);
                case.1 = method;
                cases.push(case);
            }
        }
    }
    for path in [
        "/",
        "/api",
        "/api/user",
        "/ext",
        "/api/v1/user/api-tokens/1/2",
        "/%ff",
        "/api/white-label/token/",
    ] {
        if path == "/api/white-label/token/" {
            cases.push((
                Style::WhiteLabel,
                Method::POST,
                path.into(),
                vec![admin.clone()],
                json!({"user_id": w.a.user.id.0}).to_string(),
                200,
            ));
        } else {
            cases.push((
                Style::Laravel,
                Method::GET,
                path.into(),
                vec![admin.clone()],
                String::new(),
                404,
            ));
        }
    }
    // The partner endpoint: unsigned or wrongly signed, whatever the body, 401 before it is
    // read; over 1 MiB 413; other methods 405.
    let scanning = "/api/v1/secret-scanning/verify";
    for (headers, body) in [
        (vec![], "[]".to_string()),
        (vec![admin.clone()], "{".to_string()),
        (
            vec![
                ("github-public-key-identifier", "x".to_string()),
                ("github-public-key-signature", "MEUCIQ==".to_string()),
            ],
            json!([{"token": w.a.user_token, "type": "t"}]).to_string(),
        ),
        (
            vec![("github-public-key-signature", "%%%".to_string())],
            "\u{feff}[]".to_string(),
        ),
    ] {
        cases.push((
            Style::Laravel,
            Method::POST,
            scanning.into(),
            headers,
            body,
            401,
        ));
    }
    cases.push((
        Style::Laravel,
        Method::POST,
        scanning.into(),
        vec![],
        format!("[{}]", " ".repeat(1024 * 1024)),
        413,
    ));
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        cases.push((
            Style::Laravel,
            method,
            scanning.into(),
            vec![],
            String::new(),
            405,
        ));
    }
    cases
}

#[tokio::test]
async fn hostile_input_gets_the_routes_own_errors_and_never_a_5xx() {
    hostile_input(&world().await).await;
}

#[tokio::test]
#[ignore = "needs sam local start-api: scripts/sam-local.sh suites (make test) runs it"]
async fn hostile_input_through_sam_local() {
    hostile_input(&sam_world().await).await;
}

/// Every hostile case: its expected status, in its route's shape (or API Gateway's own answer
/// where the gateway answers first), never a 5xx.
async fn hostile_input(w: &World) {
    let cases = hostile_cases(w);
    let total = cases.len();
    for (style, method, path, headers, body, expected) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let case = format!(
            "{method} {path} {}",
            body.chars().take(80).collect::<String>()
        );
        let gateway = w
            .target
            .gateway_answer(&method, &path, w.judge(&headers).await);
        let (status, response, _) = w.target.send(request(method, &path, &headers, &body)).await;
        match gateway {
            Some(answer) => assert_eq!((status, response), answer, "{case}"),
            None => {
                assert_eq!(status, expected, "{case}: {response}");
                assert_shape(style, status, &response, &case);
            }
        }
    }
    eprintln!("{total} hostile cases");
    assert!(total > 150, "{total}");
}

#[tokio::test]
async fn two_hundred_parallel_creates_respect_a_cap_of_one_hundred() {
    let _turn = HEAVY.lock().await;
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (service, store) = service_with(100).await;
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    // The caller's own token is a customer token, which the cap does not count.
    let caller = token_for(&store, &user, TokenKind::Customer, Abilities::full()).await;
    let service = Arc::new(service);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let service = service.clone();
        let bearer = format!("Bearer {caller}");
        let path = if i % 2 == 0 {
            "/api/user/api-keys"
        } else {
            "/api/v1/user/api-tokens"
        };
        tasks.push(tokio::spawn(async move {
            let body = json!({ "name": format!("key {i}") }).to_string();
            let (status, body, _) = send(
                &service,
                request(Method::POST, path, &[("authorization", &bearer)], &body),
            )
            .await;
            (status, body)
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (201, _) => created += 1,
            (422, body) => {
                assert!(body["message"].as_str().unwrap().contains("100"), "{body}");
                refused += 1
            }
            (status, body) => panic!("{status}: {body}"),
        }
    }
    assert_eq!((created, refused), (100, 100));
    let keys = store
        .list_tokens(user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    let personal = store
        .list_tokens(user.id, TokenFamily::Personal, now_ms())
        .await
        .unwrap();
    assert_eq!(keys.len() + personal.len(), 100);
}

#[tokio::test]
async fn two_hundred_parallel_creates_across_users_all_land() {
    let _turn = HEAVY.lock().await;
    // A failure should show the cause the handler logged.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let mut callers = Vec::new();
    for _ in 0..200 {
        let user = add_user(&store, new_user(&t.platform, Role::User)).await;
        let token = token_for(&store, &user, TokenKind::Customer, Abilities::full()).await;
        callers.push((user, token));
    }
    let service = Arc::new(service);
    let mut tasks = Vec::new();
    for (user, token) in callers {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let bearer = format!("Bearer {token}");
            let (status, body, _) = send(
                &service,
                request(
                    Method::POST,
                    "/api/user/api-keys",
                    &[("authorization", &bearer)],
                    r#"{"name":"parallel"}"#,
                ),
            )
            .await;
            (user, status, body)
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        let (user, status, body) = task.await.unwrap();
        assert_eq!(status, 201, "{body}");
        let token = body["api_key"]["token"].as_str().unwrap().to_string();
        let principal = shared::auth::authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(&token),
            now_ms(),
        )
        .await
        .unwrap();
        assert_eq!(principal.user_id, user.id);
        assert!(tokens.insert(token));
        let listed = store
            .list_tokens(user.id, TokenFamily::ApiKeys, now_ms())
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
    }
    assert_eq!(tokens.len(), 200);
}

/// A DynamoDB Local of this test's own, on disk so its data outlives a restart.
struct OwnDynamoDb {
    child: std::process::Child,
    port: u16,
}

impl OwnDynamoDb {
    fn jar_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/dynamodb-local")
    }

    fn start(port: u16, dir: &std::path::Path) -> OwnDynamoDb {
        let child = std::process::Command::new("java")
            .args([
                "-Djava.library.path=DynamoDBLocal_lib",
                "-jar",
                "DynamoDBLocal.jar",
                "-sharedDb",
                "-dbPath",
            ])
            .arg(dir)
            .args(["-port", &port.to_string()])
            .current_dir(Self::jar_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("java runs DynamoDB Local (fetched by `make test` into .tools)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 60,
                "DynamoDB Local did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        OwnDynamoDb { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnDynamoDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request of A's admin on every route that reads the table (an unsigned report is refused
/// before any read: the leak-response crate's tests sign reports through an outage).
async fn admin_requests(w: &World) -> Vec<(Route, Request)> {
    let mut requests = Vec::new();
    for route in Route::ALL
        .into_iter()
        .filter(|r| !matches!(r, Route::SecretScanningReport))
    {
        requests.push((route, route.request(w, Some(&w.a.admin_token)).await));
    }
    requests
}

#[tokio::test]
async fn an_outage_answers_503_json_on_every_route_and_the_same_process_recovers() {
    let _turn = HEAVY.lock().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("outage-{}", shared::test_support::random_hex(4)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut dynamodb = OwnDynamoDb::start(port, &dir);
    let endpoint = format!("http://127.0.0.1:{}", dynamodb.port);
    let client = shared::config::dynamodb_client_at(TrustRoots::default(), Some(&endpoint)).await;
    shared::store::schema::create_table(&client, "outage")
        .await
        .unwrap();
    let store = DynamoStore::new(client, "outage");
    let config = shared::config::Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some("outage".into()),
        "PERMANENT_TOKEN_KEY" => Some("outage-key-0123456789abcdef0123456789".into()),
        _ => None,
    })
    .unwrap();
    let service = Service {
        store: Arc::new(store.clone()),
        config,
    };
    let w = world_on(Target::InProcess(service), store).await;
    for (route, request) in admin_requests(&w).await {
        assert_eq!(
            w.target.send(request).await.0,
            route.success(),
            "{route:?} before the outage"
        );
    }

    let requests = admin_requests(&w).await;
    dynamodb.stop();
    for (route, request) in requests {
        let started = std::time::Instant::now();
        let (status, body, _) = w.target.send(request).await;
        let waited = started.elapsed();
        assert_eq!(status, 503, "{route:?}: {body}");
        assert_error_shape(
            route.style(),
            status,
            &body,
            &format!("{route:?} during the outage"),
        );
        // The SDK's timeouts and retries bound the wait (4 s per operation, a few operations).
        assert!(waited.as_secs() < 15, "{route:?} took {waited:?}");
        eprintln!("{route:?}: 503 after {waited:?}");
    }
    let unavailable = "The service is temporarily unavailable. Please try again shortly.";
    let (_, body, _) = w
        .target
        .send(Route::ListApiKeys.request(&w, Some(&w.a.user_token)).await)
        .await;
    assert_eq!(body, json!({"message": unavailable}));

    // Back on the same port and data: the same service, same client, serves again.
    let _restarted = OwnDynamoDb::start(port, &dir);
    for (route, request) in admin_requests(&w).await {
        let (status, body, _) = w.target.send(request).await;
        assert_eq!(
            status,
            route.success(),
            "{route:?} after the outage: {body}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
