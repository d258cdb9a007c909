//! `tokenctl`: the operator CLI. Creates the table, manages the directory, mints bootstrap keys
//! and serves every route locally. Reads `TABLE_NAME`, `AWS_ENDPOINT_URL_DYNAMODB` and
//! `AWS_REGION` like the functions do; `--json` prints one JSON object.

use tokenctl::serve;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use shared::config::Config;

use shared::audit::Change;
use shared::clock::{now_ms, EpochMs};
use shared::demo;
use shared::domain::{
    Abilities, CustomerId, Email, ExternalId, Meta, MetaProblem, Permission, PlatformId, Role,
    TokenName, UserId, UserStatus, Workspace, WorkspaceStatus,
};
use shared::import;
use shared::limits::Limits;
use shared::mint::MintRequest;
use shared::service::Service;
use shared::store::schema::{create_table, TableOutcome};
use shared::store::{live_token, set_token_limits, EventScope, Metered, PermanentGeneration};
use shared::store::{
    Fault, NewUser, Owner, Revocation, Store, StoreError, TokenAddress, TokenRecord, TokenState,
    User,
};
use shared::token::{PublicTokenId, TokenFamily, TokenKind};

#[derive(Parser)]
#[command(
    name = "tokenctl",
    version,
    about = "Operate the token service's table and directory"
)]
struct Cli {
    /// Print one JSON object instead of text; every error, usage errors too, is then one JSON
    /// object `{"error": ...}` on stderr. Exit codes: 0 done, 1 failed, 2 usage.
    #[arg(long, global = true)]
    json: bool,
    /// The DynamoDB table.
    #[arg(long, global = true, env = "TABLE_NAME")]
    table: Option<String>,
    /// The AWS region.
    #[arg(long, global = true, env = "AWS_REGION")]
    region: Option<String>,
    /// The DynamoDB endpoint (DynamoDB Local, say); AWS's own when unset.
    #[arg(
        long = "endpoint-url",
        global = true,
        env = "AWS_ENDPOINT_URL_DYNAMODB"
    )]
    endpoint_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local server's route table: function, method and path of every route.
    Routes,
    /// The regular expression of the deployment's tokens, one an accepted prefix, and the
    /// format's description: what a platform submits to a secret-scanning partner program.
    #[command(name = "scanning-pattern")]
    ScanningPattern {
        /// The prefix new tokens carry.
        #[arg(long, env = "TOKEN_PREFIX")]
        prefix: Option<String>,
        /// Every prefix verification accepts, comma-separated (the prefix among them).
        #[arg(long, env = "ACCEPTED_TOKEN_PREFIXES")]
        accepted: Option<String>,
    },
    #[command(flatten)]
    Store(StoreCommand),
}

/// The commands that use the table.
#[derive(Subcommand)]
enum StoreCommand {
    /// Create the table (the definition template.yaml declares) if it is missing.
    Init,
    /// Write onto records made before events out what its notices read: the expiry day of
    /// live tokens that expire (expiry notices), the full credits of meters (low-credit
    /// notices). Safe while the service runs; run again, it writes nothing.
    Backfill,
    /// Platforms (white-label and agency tenants).
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Users of the directory.
    #[command(subcommand)]
    User(UserCommand),
    /// Tokens: bootstrap keys and revocation.
    #[command(subcommand)]
    Token(TokenCommand),
    /// A platform's service keys: machine credentials of its backend, with permissions.
    #[command(subcommand, name = "service-key")]
    ServiceKey(ServiceKeyCommand),
    /// Audit events, newest first: one user's (`--user`) or a whole platform's (`--platform`).
    Audit {
        /// One user's events.
        #[arg(
            long,
            conflicts_with = "platform",
            required_unless_present = "platform"
        )]
        user: Option<u64>,
        /// A whole platform's events.
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
    /// Events out: what the table's stream publishes on the EventBridge bus.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Serve every route on 127.0.0.1.
    Serve {
        /// The port on 127.0.0.1.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print, one JSON line each, the entries the table's changes publish (audit events,
    /// credits.low), as they happen, until stopped.
    Tail {
        /// From the oldest record the stream keeps, not from now.
        #[arg(long)]
        from_start: bool,
    },
}

#[derive(Subcommand)]
enum PlatformCommand {
    /// A new platform; prints its id.
    Create {
        /// 1 to 255 characters.
        #[arg(long)]
        name: String,
    },
    /// One platform.
    Show {
        /// The platform's id.
        id: u64,
    },
    /// Every platform, by id.
    List,
}

#[derive(Subcommand)]
enum ServiceKeyCommand {
    /// A new service key of a platform; prints it, its secret shown this once.
    Create {
        /// The platform's id.
        #[arg(long)]
        platform: u64,
        /// 1 to 255 characters.
        #[arg(long)]
        name: String,
        /// Comma-separated, of: users:read, users:write, tokens:read, tokens:write,
        /// limits:write, audit:read, verify, * (all, and creating service keys).
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// 1 to 3650; never expires when omitted.
        #[arg(long = "expires-in-days")]
        expires_in_days: Option<u64>,
    },
    /// A platform's live service keys, newest first (never a secret or its hash).
    List {
        /// The platform's id.
        #[arg(long)]
        platform: u64,
    },
    /// Revoke a service key at once.
    Revoke {
        /// USER-HEX, as `service-key create` and `list` print it.
        id: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// A new user of a platform; prints it.
    Create(CreateUser),
    /// One user.
    Show {
        /// The user's id.
        id: u64,
    },
    /// A page of a platform's users, by id (`next_cursor` continues it).
    List {
        /// The platform's id.
        #[arg(long)]
        platform: u64,
        /// 1 to 100.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Where the page starts: the `next_cursor` of the previous one.
        #[arg(long)]
        cursor: Option<u64>,
    },
    /// The user of a platform with this email or external id.
    Find {
        /// The platform's id.
        #[arg(long)]
        platform: u64,
        /// The user's email (case-insensitively).
        #[arg(
            long,
            required_unless_present = "external_id",
            conflicts_with = "external_id"
        )]
        email: Option<String>,
        /// The user's id in the platform's own system.
        #[arg(long = "external-id")]
        external_id: Option<String>,
    },
    /// Block a user: every token of theirs stops working at once.
    Block {
        /// The user's id.
        id: u64,
    },
    /// Unblock a user: their live tokens work again.
    Unblock {
        /// The user's id.
        id: u64,
    },
    /// Move the user's permanent token on: the previous key stops working at once, and
    /// `GET /ext/get-user-token` answers the new one (not printed here). Needs
    /// `PERMANENT_TOKEN_KEY`.
    RotatePermanent {
        /// The user's id.
        id: u64,
    },
}

#[derive(Args)]
struct CreateUser {
    /// The platform's id.
    #[arg(long)]
    platform: u64,
    /// Unique in the platform, case-insensitively.
    #[arg(long)]
    email: String,
    /// 1 to 255 characters.
    #[arg(long)]
    name: String,
    /// Import the id the user already has in the platform's own system.
    #[arg(long)]
    id: Option<u64>,
    /// A platform admin (may mint for other users, set limits, read the platform's audit).
    #[arg(long)]
    admin: bool,
    /// 12 digits, unique.
    #[arg(long = "customer-id")]
    customer_id: Option<String>,
    /// The id your own system knows the user by: 1 to 128 characters, unique in the platform.
    #[arg(long = "external-id")]
    external_id: Option<String>,
    /// Your own data on the user: a JSON object of at most 1 KiB.
    #[arg(long)]
    meta: Option<String>,
    /// An active workspace of the user (repeatable).
    #[arg(long = "workspace")]
    workspaces: Vec<String>,
    /// An inactive workspace of the user (repeatable).
    #[arg(long = "inactive-workspace")]
    inactive_workspaces: Vec<String>,
    /// Create the user blocked.
    #[arg(long)]
    blocked: bool,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// An API key for a user (an admin's first key, say).
    Mint {
        /// The owner's user id.
        #[arg(long)]
        user: u64,
        /// 1 to 255 characters.
        #[arg(long)]
        name: String,
        /// Comma-separated; full access when omitted.
        #[arg(long, value_delimiter = ',')]
        abilities: Option<Vec<String>>,
        /// 1 to 3650; never expires when omitted.
        #[arg(long = "expires-in-days")]
        expires_in_days: Option<u64>,
    },
    /// A user's live tokens, every kind, newest first (never a secret or its hash).
    List {
        /// The owner's user id.
        #[arg(long)]
        user: u64,
    },
    /// One token, live or not (never its secret or hash).
    Show {
        /// USER-HEX, as `token mint` prints it.
        id: String,
    },
    /// Revoke a token by the id `token mint` and the listings show.
    Revoke {
        /// USER-HEX, as `token mint` prints it.
        id: String,
    },
    /// Another system's tokens from a JSON Lines file (one entry a line, as
    /// `POST /api/v1/tokens/import` takes them; any number), with a progress line on stderr.
    /// Prints the counts and every entry not imported, by line.
    Import {
        /// The JSON Lines file.
        file: std::path::PathBuf,
        /// Import only for users of this platform (required for entries by `external_id`).
        #[arg(long)]
        platform: Option<u64>,
    },
}

#[derive(Subcommand)]
enum LimitsCommand {
    /// A user's limits, shared by all its tokens.
    User {
        /// The user's id.
        id: u64,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// One live token's own limits (the id `token mint` and the listings show).
    Token {
        /// USER-HEX, as `token mint` prints it.
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

impl CliError {
    /// 2 for a command line to correct, 1 for a failure.
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Store(_) | CliError::Setup(_) => ExitCode::FAILURE,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return parse_failure(error),
    };
    if matches!(cli.command, Command::Store(StoreCommand::Serve { .. })) {
        shared::service::init_tracing();
    }
    let target = Target {
        table: cli.table,
        region: cli.region,
        endpoint_url: cli.endpoint_url,
    };
    match run(cli.command, target, !cli.json).await {
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
                eprintln!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("tokenctl: {e}");
            }
            e.exit_code()
        }
    }
}

/// What a command line clap refused answers: help and the version as clap prints them; a usage
/// error as one JSON object on stderr under `--json` (clap's text otherwise), exit code 2.
fn parse_failure(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || !std::env::args().any(|arg| arg == "--json")
    {
        let _ = error.print();
        return ExitCode::from(error.exit_code() as u8);
    }
    let text = error.render().to_string();
    let message = text.lines().next().unwrap_or_default();
    eprintln!(
        "{}",
        json!({ "error": message.trim_start_matches("error: ") })
    );
    ExitCode::from(2)
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

/// Where the table is: the flags, each falling back to its variable (clap reads those).
struct Target {
    table: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

async fn service(target: &Target) -> Result<Service, CliError> {
    let config = Config::from_lookup(|name| match name {
        "TABLE_NAME" => target.table.clone(),
        _ => std::env::var(name).ok(),
    })
    .map_err(|e| CliError::Usage(e.to_string()))?;
    Service::with_target(
        config,
        target.endpoint_url.as_deref(),
        target.region.as_deref(),
    )
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

/// `scanning-pattern`: the patterns and description of the deployment's token format.
fn scanning_pattern(prefix: Option<String>, accepted: Option<String>) -> Result<Value, CliError> {
    let format = shared::config::token_format(&|name: &str| match name {
        "TOKEN_PREFIX" => prefix.clone(),
        "ACCEPTED_TOKEN_PREFIXES" => accepted.clone(),
        _ => None,
    })
    .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(json!({
        "patterns": format.scanning_patterns(),
        "description": format.scanning_description(),
    }))
}

/// Runs `command` on `target`; `progress`: long commands say how far they are on stderr.
async fn run(command: Command, target: Target, progress: bool) -> Result<Value, CliError> {
    let command = match command {
        Command::Routes => return Ok(routes()),
        Command::ScanningPattern { prefix, accepted } => return scanning_pattern(prefix, accepted),
        Command::Store(command) => command,
    };
    let service = service(&target).await?;
    let now = now_ms();
    match command {
        StoreCommand::Init => init(&service).await,
        StoreCommand::Backfill => backfill(&service, &target, now).await,
        StoreCommand::Audit {
            user,
            platform,
            limit,
        } => audit(&service, user, platform, limit).await,
        StoreCommand::Platform(PlatformCommand::Create { name }) => {
            create_platform(&service, &name, now).await
        }
        StoreCommand::Platform(PlatformCommand::Show { id }) => show_platform(&service, id).await,
        StoreCommand::Platform(PlatformCommand::List) => list_platforms(&service).await,
        StoreCommand::ServiceKey(command) => service_key(&service, command, now).await,
        StoreCommand::User(command) => user(&service, command, now).await,
        StoreCommand::Token(TokenCommand::Mint {
            user,
            name,
            abilities,
            expires_in_days,
        }) => mint_key(&service, user, &name, abilities, expires_in_days, now).await,
        StoreCommand::Token(TokenCommand::Revoke { id }) => revoke(&service, &id, now).await,
        StoreCommand::Token(TokenCommand::List { user }) => list_tokens(&service, user, now).await,
        StoreCommand::Token(TokenCommand::Show { id }) => show_token(&service, &id, now).await,
        StoreCommand::Token(TokenCommand::Import { file, platform }) => {
            import_file(&service, &file, platform.map(PlatformId), progress, now).await
        }
        StoreCommand::Limits(command) => limits(&service, command, now).await,
        StoreCommand::SeedDemo => seed_demo(&service, now).await,
        StoreCommand::Serve { port } => serve_locally(service, &target, port).await,
        StoreCommand::Events(EventsCommand::Tail { from_start }) => {
            tail(&service, &target, from_start).await
        }
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

/// `backfill`: what records made before events out lack, written.
async fn backfill(service: &Service, target: &Target, now: EpochMs) -> Result<Value, CliError> {
    let client = shared::config::dynamodb_client_for(
        service.config.trust_roots,
        target.endpoint_url.as_deref(),
        target.region.as_deref(),
    )
    .await;
    let store = shared::store::DynamoStore::new(client, service.config.table_name.clone());
    let done = store.backfill(now).await?;
    Ok(json!({
        "table": service.config.table_name,
        "found": done.found,
        "expiry_days": done.expiry_days,
        "credits_full": done.credits_full,
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
            Ok(user_view(&user))
        }
        UserCommand::Show { id } => Ok(user_view(&existing_user(store, id).await?)),
        UserCommand::List {
            platform,
            limit,
            cursor,
        } => {
            let page = store
                .list_users(PlatformId(platform), limit, cursor.map(UserId))
                .await?;
            Ok(json!({
                "data": page.users.iter().map(user_view).collect::<Vec<_>>(),
                "next_cursor": page.next,
            }))
        }
        UserCommand::Find {
            platform,
            email,
            external_id,
        } => {
            let platform = PlatformId(platform);
            let found = match (email, external_id) {
                (Some(email), _) => {
                    let email = Email::parse(&email).ok_or_else(|| {
                        CliError::Usage(format!("{email:?} is not an email address"))
                    })?;
                    store.find_user_by_email(platform, &email).await?
                }
                (None, Some(external)) => {
                    let external = ExternalId::parse(&external).ok_or_else(|| {
                        CliError::Usage("--external-id must be 1 to 128 characters".into())
                    })?;
                    store.find_user_by_external_id(platform, &external).await?
                }
                (None, None) => return Err(CliError::Usage("--email or --external-id".into())),
            };
            found
                .map(|user| user_view(&user))
                .ok_or_else(|| CliError::Usage(format!("no such user on platform {platform}")))
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

/// A user as the commands print it.
fn user_view(user: &User) -> Value {
    json!({
        "id": user.id,
        "customer_id": user.customer_id.as_ref().map(CustomerId::as_str),
        "external_id": user.external_id.as_ref().map(ExternalId::as_str),
        "meta": user.meta.as_ref().map(Meta::as_object),
        "platform_id": user.platform_id,
        "email": user.email,
        "name": user.name,
        "role": user.role.as_str(),
        "status": user.status.as_str(),
    })
}

/// A token as the commands print it: never its secret or hash.
fn token_view(record: &TokenRecord, now: EpochMs) -> Value {
    json!({
        "id": record.public_id().to_string(),
        "user_id": record.user_id,
        "kind": record.kind.as_str(),
        "name": record.name,
        "abilities": record.abilities,
        "created_at": record.created_at_ms,
        "expires_at": record.expires_at,
        "last_used_at": record.last_used_at_ms,
        "enabled": record.enabled,
        "state": match record.state(now) {
            TokenState::Live => "live",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        },
        "revoked_reason": record.revocation.as_ref().map(Revocation::name),
        "meta": record.meta.as_ref().map(Meta::as_object),
        "limits": record.meter.map(|meter| meter.limits),
        "imported": record.imported,
    })
}

/// `platform show`.
async fn show_platform(service: &Service, id: u64) -> Result<Value, CliError> {
    let platform = service
        .store
        .get_platform(PlatformId(id))
        .await?
        .ok_or_else(|| CliError::Usage(format!("no platform with id {id}")))?;
    Ok(json!({"id": platform.id, "name": platform.name, "created_at": platform.created_at_ms}))
}

/// `platform list`.
async fn list_platforms(service: &Service) -> Result<Value, CliError> {
    let platforms = service.store.list_platforms().await?;
    let shown: Vec<Value> = platforms
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "created_at": p.created_at_ms}))
        .collect();
    Ok(json!({ "data": shown }))
}

/// `service-key create|list|revoke`.
async fn service_key(
    service: &Service,
    command: ServiceKeyCommand,
    now: EpochMs,
) -> Result<Value, CliError> {
    match command {
        ServiceKeyCommand::Create {
            platform,
            name,
            permissions,
            expires_in_days,
        } => {
            let permissions = Permission::parse_list(permissions).map_err(|_| {
                CliError::Usage(format!(
                    "--permissions takes 1 to 8 of: {}",
                    Permission::ALL.map(Permission::as_str).join(", ")
                ))
            })?;
            let request = operator_request(
                TokenKind::ServiceKey,
                &name,
                permissions,
                expiry(expires_in_days, now)?,
            )?;
            let minted = service
                .mint_service_key(PlatformId(platform), request, now)
                .await
                .map_err(explain)?;
            Ok(json!({
                "id": minted.record.public_id().to_string(),
                "token": minted.secret.expose(),
                "platform_id": platform,
                "name": minted.record.name,
                "permissions": minted.record.abilities,
                "expires_at": minted.record.expires_at,
            }))
        }
        ServiceKeyCommand::List { platform } => {
            let account = UserId::service_account(PlatformId(platform));
            let keys = service
                .store
                .list_tokens(account, TokenFamily::Service, now)
                .await?;
            Ok(json!({"data": keys.iter().map(|k| token_view(k, now)).collect::<Vec<_>>()}))
        }
        ServiceKeyCommand::Revoke { id } => {
            let id = token_id(&id)?;
            let revoked = id.user_id.is_service_account()
                && service
                    .store
                    .revoke_token(
                        id.user_id,
                        TokenFamily::Service,
                        id.token_id,
                        &Change::operator(),
                        now,
                    )
                    .await?;
            if !revoked {
                return Err(CliError::Usage(format!("no live service key with id {id}")));
            }
            Ok(json!({"id": id.to_string(), "revoked": true}))
        }
    }
}

/// `token list`: every family's live tokens of the user (one Query).
async fn list_tokens(service: &Service, user: u64, now: EpochMs) -> Result<Value, CliError> {
    let owner = existing_user(service.store.as_ref(), user).await?;
    let mut tokens = service.store.list_all_tokens(owner.id, now).await?;
    tokens.sort_by_key(|t| std::cmp::Reverse(t.id));
    Ok(json!({"data": tokens.iter().map(|t| token_view(t, now)).collect::<Vec<_>>()}))
}

/// `token show`: the live token, or else its retired copy.
async fn show_token(service: &Service, id: &str, now: EpochMs) -> Result<Value, CliError> {
    let id = token_id(id)?;
    let addresses = TokenFamily::ALL.map(|family| TokenAddress {
        user_id: id.user_id,
        family,
        id: id.token_id,
    });
    let found = service.store.find_tokens(&addresses, &[]).await?;
    let record = found
        .tokens
        .values()
        .next()
        .ok_or_else(|| CliError::Usage(format!("no token with id {id}")))?;
    Ok(token_view(record, now))
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
    let request = operator_request(
        TokenKind::ApiKey,
        name,
        abilities,
        expiry(expires_in_days, now)?,
    )?;
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

/// What the operator mints: no parent, audited as the operator.
fn operator_request(
    kind: TokenKind,
    name: &str,
    abilities: Abilities,
    expires_at: Option<u64>,
) -> Result<MintRequest, CliError> {
    let name = TokenName::parse(name)
        .map_err(|_| CliError::Usage("--name must be 1 to 255 characters".into()))?;
    Ok(MintRequest {
        kind,
        name,
        abilities,
        expires_at,
        parent_id: None,
        change: Change::operator(),
        meta: None,
    })
}

/// `--expires-in-days`: 1 to 3650 days from now; `None` never expires.
fn expiry(days: Option<u64>, now: EpochMs) -> Result<Option<u64>, CliError> {
    match days {
        None => Ok(None),
        Some(days @ 1..=3650) => Ok(Some(now.seconds().plus_days(days).0)),
        Some(_) => Err(CliError::Usage(
            "--expires-in-days must be from 1 to 3650".into(),
        )),
    }
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

/// `serve`: every route on 127.0.0.1, until stopped; the table's events published to
/// `AWS_ENDPOINT_URL_EVENTBRIDGE` when it is set.
async fn serve_locally(service: Service, target: &Target, port: u16) -> Result<Value, CliError> {
    if service.config.permanent_key().is_err() {
        eprintln!("warning: PERMANENT_TOKEN_KEY is not set; /ext/get-user-token will answer 503");
    }
    tokenctl::stream::publish_while_serving(
        &service,
        target.endpoint_url.as_deref(),
        target.region.as_deref(),
    )
    .await
    .map_err(CliError::Setup)?;
    serve::serve(service, port)
        .await
        .map_err(|e| CliError::Setup(format!("cannot serve on 127.0.0.1:{port}: {e}")))?;
    Ok(json!({}))
}

/// `events tail`: what the table's changes publish, printed as they happen, until stopped.
async fn tail(service: &Service, target: &Target, from_start: bool) -> Result<Value, CliError> {
    use events::local::Start;
    let thresholds = tokenctl::stream::thresholds().map_err(CliError::Usage)?;
    let start = if from_start {
        Start::Oldest
    } else {
        Start::Latest
    };
    let mut poller = tokenctl::stream::poller(
        service,
        target.endpoint_url.as_deref(),
        target.region.as_deref(),
        start,
    )
    .await
    .map_err(|e| CliError::Setup(format!("cannot read the table's stream: {e}")))?;
    poller
        .run(
            &tokenctl::stream::Printer,
            &thresholds,
            tokenctl::stream::IDLE,
        )
        .await;
    Ok(json!({}))
}

/// A refusal is the operator's to act on; a fault is the table's.
fn explain(error: StoreError) -> CliError {
    match error.refusal() {
        Ok(refusal) => CliError::Usage(refusal.to_string()),
        Err(fault) => CliError::Store(fault),
    }
}

/// `--meta`: a JSON object of at most 1 KiB.
fn meta_flag(text: &str) -> Result<Meta, CliError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|_| CliError::Usage("--meta must be a JSON object".into()))?;
    Meta::parse(&value).map_err(|problem| {
        CliError::Usage(match problem {
            MetaProblem::NotAnObject => "--meta must be a JSON object".into(),
            MetaProblem::TooLarge => format!("--meta must be at most {} bytes", Meta::MAX_BYTES),
        })
    })
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
    let external_id = args
        .external_id
        .map(|x| {
            ExternalId::parse(&x).ok_or_else(|| {
                CliError::Usage(
                    "--external-id must be 1 to 128 characters without control characters".into(),
                )
            })
        })
        .transpose()?;
    let meta = args.meta.as_deref().map(meta_flag).transpose()?;
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
        external_id,
        meta,
    })
}

async fn set_status(store: &dyn Store, id: u64, status: UserStatus) -> Result<Value, CliError> {
    store
        .set_user_status(UserId(id), status, &Change::operator())
        .await
        .map_err(explain)?;
    Ok(json!({"id": id, "status": status.as_str()}))
}

/// `token import FILE`: the file's entries in batches of [`import::MAX_ENTRIES`], each line
/// answered as the route answers an entry (a line that is not JSON is an error of its own).
async fn import_file(
    service: &Service,
    file: &std::path::Path,
    platform: Option<PlatformId>,
    progress: bool,
    now: EpochMs,
) -> Result<Value, CliError> {
    use std::io::BufRead;
    let open = || {
        std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))
    };
    let total = open()?
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .count();
    let (mut done, mut counts) = (0usize, [0usize; 3]);
    let mut errors = Vec::new();
    let mut batch: Vec<(usize, Result<import::Entry, String>)> = Vec::new();
    let mut lines = open()?.lines().enumerate().peekable();
    let change = Change::operator();
    while let Some((number, line)) = lines.next() {
        let line =
            line.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
        if !line.trim().is_empty() {
            let entry = serde_json::from_str::<Value>(&line)
                .map_err(|e| format!("The line is not JSON: {e}."))
                .and_then(|value| import::Entry::parse(&value, service, now));
            batch.push((number + 1, entry));
        }
        if batch.len() < import::MAX_ENTRIES && lines.peek().is_some() {
            continue;
        }
        let (numbers, entries): (Vec<usize>, Vec<_>) =
            std::mem::take(&mut batch).into_iter().unzip();
        let outcomes = import::import(service, platform, entries, &change, now).await?;
        for outcome in outcomes {
            counts[outcome.status as usize] += 1;
            if let Some(error) = outcome.error {
                errors.push(json!({"line": numbers[outcome.index], "error": error}));
            }
            done += 1;
        }
        if progress {
            eprintln!(
                "tokenctl: {done}/{total} entries: {} imported, {} existing, {} errors",
                counts[import::Status::Imported as usize],
                counts[import::Status::Existing as usize],
                counts[import::Status::Error as usize]
            );
        }
    }
    Ok(json!({
        "entries": done,
        "imported": counts[import::Status::Imported as usize],
        "existing": counts[import::Status::Existing as usize],
        "errors": errors,
    }))
}

async fn seed_demo(service: &Service, now: EpochMs) -> Result<Value, CliError> {
    let cap = service.config.max_tokens_per_user;
    let demo = demo::seed(
        service.store.as_ref(),
        &service.config.token_format,
        cap,
        now,
    )
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
