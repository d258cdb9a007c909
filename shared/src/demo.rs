//! The demo directory `tokenctl seed-demo` (and so `make dev`) creates, and the sample events in
//! `events/` refer to: a platform with an admin (1001), a customer (1002, customer id
//! 048372910564, one active workspace) and a blocked user (1003).

use crate::audit::Change;
use crate::clock::EpochMs;
use crate::domain::{
    Abilities, CustomerId, Email, ExternalId, Meta, Role, TokenName, UserId, UserStatus, Workspace,
    WorkspaceStatus,
};
use crate::mint::mint_plaintext;
use crate::store::{NewUser, Owner, Refusal, Store, StoreError, User};
use crate::token::{TokenFormat, TokenKind};

pub const ADMIN_ID: UserId = UserId(1001);
pub const USER_ID: UserId = UserId(1002);
pub const BLOCKED_ID: UserId = UserId(1003);
/// John Doe's id in the demo platform's own system.
pub const EXTERNAL_ID: &str = "crm-1002";
pub const CUSTOMER_ID: &str = "048372910564";

/// The demo users and a fresh full-access API key for the admin and the user.
#[derive(Debug)]
pub struct Demo {
    pub admin: User,
    pub user: User,
    pub admin_key: String,
    pub user_key: String,
}

/// Creates the demo directory unless its admin exists (so it is safe on a persistent table),
/// then mints fresh keys.
pub async fn seed(
    store: &dyn Store,
    format: &TokenFormat,
    cap: u32,
    now: EpochMs,
) -> Result<Demo, StoreError> {
    let admin = match store.get_user(ADMIN_ID).await? {
        Some(admin) => admin,
        None => {
            let platform = store.create_platform("Demo Platform", now).await?;
            let users = [
                (
                    ADMIN_ID,
                    "admin@demo.test",
                    "Demo Admin",
                    Role::Admin,
                    UserStatus::Active,
                ),
                (
                    USER_ID,
                    "john@example.com",
                    "John Doe",
                    Role::User,
                    UserStatus::Active,
                ),
                (
                    BLOCKED_ID,
                    "blocked@example.com",
                    "Blocked Bob",
                    Role::User,
                    UserStatus::Blocked,
                ),
            ];
            let mut created = Vec::new();
            for (id, email, name, role, status) in users {
                let user = NewUser {
                    id: Some(id),
                    platform_id: platform.id,
                    name: name.to_string(),
                    email: Email::parse(email).expect("demo email"),
                    role,
                    status,
                    customer_id: (id == USER_ID)
                        .then(|| CustomerId::parse(CUSTOMER_ID).expect("demo customer id")),
                    workspaces: vec![Workspace {
                        name: "Main".into(),
                        status: WorkspaceStatus::Active,
                    }],
                    // John Doe as the platform's own system knows him.
                    external_id: (id == USER_ID)
                        .then(|| ExternalId::parse(EXTERNAL_ID).expect("demo external id")),
                    meta: (id == USER_ID).then(|| {
                        Meta::parse(&serde_json::json!({"plan": "pro"})).expect("demo meta")
                    }),
                };
                created.push(store.create_user(user, &Change::operator(), now).await?);
            }
            created.swap_remove(0)
        }
    };
    let user = store
        .get_user(USER_ID)
        .await?
        .ok_or(Refusal::UserNotFound)?;
    let admin_key = api_key(store, format, &admin, cap).await?;
    let user_key = api_key(store, format, &user, cap).await?;
    Ok(Demo {
        admin,
        user,
        admin_key,
        user_key,
    })
}

/// A full-access API key for `owner` (named `demo`), as plaintext.
pub async fn api_key(
    store: &dyn Store,
    format: &TokenFormat,
    owner: &User,
    cap: u32,
) -> Result<String, StoreError> {
    mint_plaintext(
        store,
        format,
        Owner::from(owner),
        TokenKind::ApiKey,
        TokenName::parse("demo").expect("a valid name"),
        Abilities::full(),
        cap,
    )
    .await
}
