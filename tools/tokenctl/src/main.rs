//! `tokenctl`: the operator CLI. Creates the table, manages the directory, mints bootstrap keys
//! and serves every route locally. Reads `TABLE_NAME`, `AWS_ENDPOINT_URL_DYNAMODB` and
//! `AWS_REGION` like the functions do; `--json` prints one JSON object.

use tokenctl::serve;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use shared::audit::Change;
use shared::clock::{now_ms, EpochMs};
use shared::demo;
use shared::domain::{
    Abilities, CustomerId, Email, PlatformId, Role, TokenName, UserId, UserStatus, Workspace,
    WorkspaceStatus,
};
use shared::limits::Limits;
use shared::mint::MintRequest;
use shared::service::Service;
use shared::store::schema::{create_table, TableOutcome};
use shared::store::{live_token, set_token_limits, EventScope, Metered, PermanentGeneration};
use shared::store::{Fault, NewUser, Owner, Store, StoreError, User};
use shared::token::{PublicTokenId, TokenFamily, TokenKind};

#[derive(Parser)]
#[command(
    name = "tokenctl",
    version,
    about = "Operate the token service's table and directory"
)]
struct Cli {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local server's route table: function, method and path of every route.
    Routes,
    #[command(flatten)]
    Store(StoreCommand),
}

/// The commands that use the table.
#[derive(Subcommand)]
enum StoreCommand {
    /// Create the table (the definition template.yaml declares) if it is missing.
    Init,
    /// Platforms (white-label and agency tenants).
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Users of the directory.
    #[command(subcommand)]
    User(UserCommand),
    /// Tokens: bootstrap keys and revocation.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Audit events, newest first: one user's (`--user`) or a whole platform's (`--platform`).
    Audit {
        #[arg(
            long,
            conflicts_with = "platform",
            required_unless_present = "platform"
        )]
        user: Option<u64>,
        #[arg(long)]
        platform: Option<u64>,
        /// 1 to 100.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Usage limits of a user (shared by all its tokens) or of one token: what the flags say
    /// replaces what was set (`--unlimited`: none).
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// A demo platform with an admin and users; prints their keys.
    SeedDemo,
    /// Serve every route on 127.0.0.1.
    Serve {
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum PlatformCommand {
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    Create(CreateUser),
    Block {
        id: u64,
    },
    Unblock {
        id: u64,
    },
    /// Move the user's permanent token on: the previous key stops working at once, and
    /// `GET /ext/get-user-token` answers the new one (not printed here). Needs
    /// `PERMANENT_TOKEN_KEY`.
    RotatePermanent {
        id: u64,
    },
}

#[derive(Args)]
struct CreateUser {
    #[arg(long)]
    platform: u64,
    #[arg(long)]
    email: String,
    #[arg(long)]
    name: String,
    /// Import the id the user already has in the platform's own system.
    #[arg(long)]
    id: Option<u64>,
    #[arg(long)]
    admin: bool,
    /// 12 digits, unique.
    #[arg(long = "customer-id")]
    customer_id: Option<String>,
    #[arg(long = "workspace")]
    workspaces: Vec<String>,
    #[arg(long = "inactive-workspace")]
    inactive_workspaces: Vec<String>,
    #[arg(long)]
    blocked: bool,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// An API key for a user (an admin's first key, say).
    Mint {
        #[arg(long)]
        user: u64,
        #[arg(long)]
        name: String,
        /// Comma-separated; full access when omitted.
        #[arg(long, value_delimiter = ',')]
        abilities: Option<Vec<String>>,
        #[arg(long = "expires-in-days")]
        expires_in_days: Option<u64>,
    },
    /// Revoke a token by the id `token mint` and the listings show.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum LimitsCommand {
    /// A user's limits, shared by all its tokens.
    User {
        id: u64,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// One live token's own limits (the id `token mint` and the listings show).
    Token {
        id: String,
        #[command(flatten)]
        limits: LimitFlags,
    },
}

/// The limits as flags; checked as `PUT .../limits` checks its body.
#[derive(Args)]
struct LimitFlags {
    /// Credits left (0 to 1e9); each metered use takes one.
    #[arg(long)]
    credits: Option<u64>,
    /// Credits set back to this at the first use of each `--refill-interval`.
    #[arg(long = "refill-amount", requires = "credits")]
    refill_amount: Option<u64>,
    /// day or month (UTC).
    #[arg(long = "refill-interval", requires = "refill_amount")]
    refill_interval: Option<String>,
    /// Uses per window (1 to 1e6).
    #[arg(long = "rate-limit", requires = "window_seconds")]
    rate_limit: Option<u64>,
    /// The window's length (1 to 86400 seconds), aligned to the epoch.
    #[arg(long = "window-seconds", requires = "rate_limit")]
    window_seconds: Option<u64>,
    /// Remove every limit.
    #[arg(long, conflicts_with_all = ["credits", "rate_limit"])]
    unlimited: bool,
}

impl LimitFlags {
    /// The limits the flags describe, as the route's body would.
    fn limits(&self) -> Result<Limits, CliError> {
        if !self.unlimited && self.credits.is_none() && self.rate_limit.is_none() {
            return Err(CliError::Usage(
                "give --credits and/or --rate-limit with --window-seconds, or --unlimited".into(),
            ));
        }
        let refill = self.refill_amount.map(
            |amount| json!({"amount": amount, "interval": self.refill_interval.as_deref().unwrap_or("")}),
        );
        let body = json!({
            "credits": self.credits.map(|remaining| json!({"remaining": remaining, "refill": refill})),
            "rate_limit": self.rate_limit.map(|limit| json!({"limit": limit, "window_seconds": self.window_seconds})),
        });
        let body = body.as_object().cloned().unwrap_or_default();
        Limits::parse(&body).map_err(|errors| CliError::Usage(errors.summary()))
    }
}

/// A token id as `token mint` prints it.
fn token_id(id: &str) -> Result<PublicTokenId, CliError> {
    PublicTokenId::parse(id).ok_or_else(|| {
        CliError::Usage(format!(
            "{id:?} is not a token id (USER-HEX, as `token mint` prints)"
        ))
    })
}

/// A failure the operator can act on.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] Fault),
    #[error("{0}")]
    Setup(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Store(StoreCommand::Serve { .. })) {
        shared::service::init_tracing();
    }
    match run(cli.command).await {
        Ok(output) => {
            if cli.json {
                println!("{output}");
            } else {
                print_text(&output);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if cli.json {
                println!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("tokenctl: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_text(output: &Value) {
    if let Value::Object(fields) = output {
        for (key, value) in fields {
            match value {
                Value::String(text) => println!("{key}: {text}"),
                other => println!("{key}: {other}"),
            }
        }
    }
}

async fn service() -> Result<Service, CliError> {
    Service::from_env()
        .await
        .map_err(|e| CliError::Setup(e.to_string()))
}

/// Every function's routes, from their routers.
fn routes() -> Value {
    let routes: Vec<Value> = serve::FUNCTIONS
        .iter()
        .flat_map(|f| {
            (f.routes)().into_iter().map(move |(method, path)| {
                json!({"function": f.name, "method": method.as_str(), "path": path})
            })
        })
        .collect();
    json!({ "routes": routes })
}

async fn run(command: Command) -> Result<Value, CliError> {
    let command = match command {
        Command::Routes => return Ok(routes()),
        Command::Store(command) => command,
    };
    let service = service().await?;
    let now = now_ms();
    match command {
        StoreCommand::Init => init(&service).await,
        StoreCommand::Audit {
            user,
            platform,
            limit,
        } => audit(&service, user, platform, limit).await,
        StoreCommand::Platform(PlatformCommand::Create { name }) => {
            create_platform(&service, &name, now).await
        }
        StoreCommand::User(command) => user(&service, command, now).await,
        StoreCommand::Token(TokenCommand::Mint {
            user,
            name,
            abilities,
            expires_in_days,
        }) => mint_key(&service, user, &name, abilities, expires_in_days, now).await,
        StoreCommand::Token(TokenCommand::Revoke { id }) => revoke(&service, &id, now).await,
        StoreCommand::Limits(command) => limits(&service, command, now).await,
        StoreCommand::SeedDemo => seed_demo(&service, now).await,
        StoreCommand::Serve { port } => serve_locally(service, port).await,
    }
}

/// `init`: the table, created if missing.
async fn init(service: &Service) -> Result<Value, CliError> {
    let client = shared::config::dynamodb_client(service.config.trust_roots).await;
    let outcome = create_table(&client, &service.config.table_name).await?;
    Ok(json!({
        "table": service.config.table_name,
        "created": outcome == TableOutcome::Created,
    }))
}

/// `audit`: one page of a user's or a platform's events.
async fn audit(
    service: &Service,
    user: Option<u64>,
    platform: Option<u64>,
    limit: u32,
) -> Result<Value, CliError> {
    let scope = match (user, platform) {
        (Some(user), _) => EventScope::User(UserId(user)),
        (None, Some(platform)) => EventScope::Platform(PlatformId(platform)),
        (None, None) => return Err(CliError::Usage("--user or --platform".into())),
    };
    let page = service.store.list_events(scope, limit, None).await?;
    Ok(json!({ "data": page.events }))
}

/// `platform create`.
async fn create_platform(service: &Service, name: &str, now: EpochMs) -> Result<Value, CliError> {
    let name = display_name(name)?;
    let platform = service.store.create_platform(&name, now).await?;
    Ok(json!({"id": platform.id, "name": platform.name}))
}

/// `user create|block|unblock|rotate-permanent`.
async fn user(service: &Service, command: UserCommand, now: EpochMs) -> Result<Value, CliError> {
    let store = service.store.as_ref();
    match command {
        UserCommand::Create(args) => {
            let user = store
                .create_user(new_user(args)?, &Change::operator(), now)
                .await
                .map_err(explain)?;
            Ok(json!({
                "id": user.id,
                "customer_id": user.customer_id.as_ref().map(CustomerId::as_str),
                "platform_id": user.platform_id,
                "email": user.email,
                "role": user.role.as_str(),
                "status": user.status.as_str(),
            }))
        }
        UserCommand::Block { id } => set_status(store, id, UserStatus::Blocked).await,
        UserCommand::Unblock { id } => set_status(store, id, UserStatus::Active).await,
        UserCommand::RotatePermanent { id } => {
            let key = service
                .config
                .permanent_key()
                .map_err(|e| CliError::Setup(e.to_string()))?;
            let user = existing_user(store, id).await?;
            service
                .permanent_token(
                    key,
                    &user,
                    PermanentGeneration::Next,
                    &Change::operator(),
                    now,
                )
                .await
                .map_err(explain)?;
            Ok(json!({"id": id, "rotated": true}))
        }
    }
}

/// The user `id`, or a usage error naming it.
async fn existing_user(store: &dyn Store, id: u64) -> Result<User, CliError> {
    store
        .get_user(UserId(id))
        .await?
        .ok_or_else(|| CliError::Usage(format!("no user with id {id}")))
}

/// `token mint`: an API key for a user, shown once.
async fn mint_key(
    service: &Service,
    user: u64,
    name: &str,
    abilities: Option<Vec<String>>,
    expires_in_days: Option<u64>,
    now: EpochMs,
) -> Result<Value, CliError> {
    let owner = existing_user(service.store.as_ref(), user).await?;
    let abilities = match abilities {
        None => Abilities::full(),
        Some(list) => Abilities::parse(list).map_err(|_| {
            CliError::Usage(
                "--abilities takes 1 to 50 comma-separated abilities without spaces".into(),
            )
        })?,
    };
    let expires_at = match expires_in_days {
        None => None,
        Some(days @ 1..=3650) => Some(now.seconds().plus_days(days).0),
        Some(_) => {
            return Err(CliError::Usage(
                "--expires-in-days must be from 1 to 3650".into(),
            ))
        }
    };
    let name = TokenName::parse(name)
        .map_err(|_| CliError::Usage("--name must be 1 to 255 characters".into()))?;
    let request = MintRequest {
        kind: TokenKind::ApiKey,
        name,
        abilities,
        expires_at,
        parent_id: None,
        change: Change::operator(),
    };
    let minted = service
        .mint(Owner::from(&owner), request, now)
        .await
        .map_err(explain)?;
    Ok(json!({
        "id": minted.record.public_id().to_string(),
        "token": minted.secret.expose(),
        "user_id": owner.id,
        "kind": minted.record.kind.as_str(),
        "abilities": minted.record.abilities,
        "expires_at": minted.record.expires_at,
    }))
}

/// `token revoke`: whatever its family.
async fn revoke(service: &Service, id: &str, now: EpochMs) -> Result<Value, CliError> {
    let id = token_id(id)?;
    for family in TokenFamily::ALL {
        if service
            .store
            .revoke_token(id.user_id, family, id.token_id, &Change::operator(), now)
            .await?
        {
            return Ok(json!({"id": id.to_string(), "revoked": true}));
        }
    }
    Err(CliError::Usage(format!("no live token with id {id}")))
}

/// `limits user|token`.
async fn limits(
    service: &Service,
    command: LimitsCommand,
    now: EpochMs,
) -> Result<Value, CliError> {
    let store = service.store.as_ref();
    let (target, flags) = match &command {
        LimitsCommand::User { id, limits } => (format!("user {id}"), limits),
        LimitsCommand::Token { id, limits } => (format!("token {id}"), limits),
    };
    let limits = flags.limits()?;
    let missing = || CliError::Usage(format!("no {target}"));
    let stored = match command {
        LimitsCommand::User { id, .. } => {
            let user = store.get_user(UserId(id)).await?.ok_or_else(missing)?;
            store
                .set_limits(Metered::User(&user), &limits, &Change::operator(), now)
                .await?
        }
        LimitsCommand::Token { id, .. } => {
            let id = token_id(&id)?;
            let record = live_token(store, id, now).await?.ok_or_else(missing)?;
            set_token_limits(store, &record, &limits, &Change::operator(), now).await?
        }
    };
    if !stored {
        return Err(missing());
    }
    Ok(json!({ "data": limits }))
}

/// `serve`: every route on 127.0.0.1, until stopped.
async fn serve_locally(service: Service, port: u16) -> Result<Value, CliError> {
    if service.config.permanent_key().is_err() {
        eprintln!("warning: PERMANENT_TOKEN_KEY is not set; /ext/get-user-token will answer 503");
    }
    serve::serve(service, port)
        .await
        .map_err(|e| CliError::Setup(format!("cannot serve on 127.0.0.1:{port}: {e}")))?;
    Ok(json!({}))
}

/// A refusal is the operator's to act on; a fault is the table's.
fn explain(error: StoreError) -> CliError {
    match error.refusal() {
        Ok(refusal) => CliError::Usage(refusal.to_string()),
        Err(fault) => CliError::Store(fault),
    }
}

/// A platform's or user's name: 1 to 255 characters after trimming.
fn display_name(name: &str) -> Result<String, CliError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(CliError::Usage("--name must be 1 to 255 characters".into()));
    }
    Ok(name.to_string())
}

fn new_user(args: CreateUser) -> Result<NewUser, CliError> {
    let email = Email::parse(&args.email)
        .ok_or_else(|| CliError::Usage(format!("{:?} is not an email address", args.email)))?;
    let customer_id = args
        .customer_id
        .map(|c| {
            CustomerId::parse(&c)
                .ok_or_else(|| CliError::Usage("--customer-id must be exactly 12 digits".into()))
        })
        .transpose()?;
    let name = display_name(&args.name)?;
    if args.id == Some(0) {
        return Err(CliError::Usage("--id must be a positive integer".into()));
    }
    let workspace = |status| move |name: String| Workspace { name, status };
    let workspaces = args
        .workspaces
        .into_iter()
        .map(workspace(WorkspaceStatus::Active))
        .chain(
            args.inactive_workspaces
                .into_iter()
                .map(workspace(WorkspaceStatus::Inactive)),
        )
        .collect();
    Ok(NewUser {
        id: args.id.map(UserId),
        platform_id: PlatformId(args.platform),
        name,
        email,
        role: if args.admin { Role::Admin } else { Role::User },
        status: if args.blocked {
            UserStatus::Blocked
        } else {
            UserStatus::Active
        },
        customer_id,
        workspaces,
    })
}

async fn set_status(store: &dyn Store, id: u64, status: UserStatus) -> Result<Value, CliError> {
    store
        .set_user_status(UserId(id), status, &Change::operator())
        .await
        .map_err(explain)?;
    Ok(json!({"id": id, "status": status.as_str()}))
}

async fn seed_demo(service: &Service, now: EpochMs) -> Result<Value, CliError> {
    let cap = service.config.max_tokens_per_user;
    let demo = demo::seed(service.store.as_ref(), cap, now)
        .await
        .map_err(explain)?;
    Ok(json!({
        "platform_id": demo.admin.platform_id,
        "admin_id": demo.admin.id,
        "admin_email": demo.admin.email,
        "admin_key": demo.admin_key,
        "user_id": demo.user.id,
        "user_email": demo.user.email,
        "user_customer_id": demo::CUSTOMER_ID,
        "user_key": demo.user_key,
        "blocked_user_id": demo::BLOCKED_ID,
    }))
}
