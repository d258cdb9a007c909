//! What a function holds for its lifetime, built once per cold start.

use std::sync::Arc;

use crate::audit::Change;
use crate::auth::{authenticate, authenticated, resolve, verify, Principal, Verification};
use crate::clock::EpochMs;
use crate::config::{dynamodb_client_for, Config};
use crate::domain::{Abilities, PlatformId};
use crate::error::ApiError;
use crate::limits::Usage;
use crate::mint::{mint, MintRequest, Minted};
use crate::store::{
    DynamoStore, Fault, NewToken, Owner, PermanentGeneration, Refusal, Store, StoreError, User,
};
use crate::token::{IssuedToken, ParsedToken, PermanentKey, Prefix};

/// The store and configuration every handler takes.
#[derive(Clone)]
pub struct Service {
    pub store: Arc<dyn Store>,
    pub config: Config,
}

impl Service {
    /// Reads the configuration and builds the DynamoDB client; a missing setting is an error
    /// here, at cold start, and never later in a request.
    pub async fn from_env() -> Result<Service, lambda_http::Error> {
        Service::with_target(Config::from_env()?, None, None).await
    }

    /// The service over `config`'s table, reaching DynamoDB at `endpoint` in `region` where
    /// given (else as the environment says).
    pub async fn with_target(
        config: Config,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Service, lambda_http::Error> {
        let store = DynamoStore::new(
            dynamodb_client_for(config.trust_roots, endpoint, region).await,
            config.table_name.clone(),
        )
        .with_audit_retention(config.audit_retention_days);
        Ok(Service {
            store: Arc::new(store),
            config,
        })
    }
}

impl Service {
    /// Mints `request` for `owner` within the cap of its family that this service is
    /// configured with.
    pub async fn mint(
        &self,
        owner: Owner,
        request: MintRequest,
        now: EpochMs,
    ) -> Result<Minted, StoreError> {
        let cap = self.config.cap(request.kind.family());
        let format = &self.config.token_format;
        mint(self.store.as_ref(), format, owner, request, cap, now).await
    }

    /// Mints a service key of `platform`, owned by its service account (written on first use;
    /// `PlatformNotFound` when there is no such platform).
    pub async fn mint_service_key(
        &self,
        platform: PlatformId,
        request: MintRequest,
        now: EpochMs,
    ) -> Result<Minted, StoreError> {
        let account = self.store.service_account(platform, now).await?;
        self.mint(Owner::from(&account), request, now).await
    }

    /// [`Self::mint`] for a route: each refusal answered as `refused` says (`None`: one the
    /// route never expects), a fault as a 503.
    pub async fn mint_answering(
        &self,
        owner: Owner,
        request: MintRequest,
        now: EpochMs,
        refused: impl FnOnce(&Refusal) -> Option<ApiError>,
    ) -> Result<Minted, ApiError> {
        self.mint(owner, request, now)
            .await
            .map_err(|e| ApiError::from_store(e, refused))
    }

    /// The user's permanent key of the generation `wanted`, derived from `key`: the one that
    /// works (the same on every call until it is revoked, rotated or the server key changes),
    /// or the next one, the previous revoked at once (see [`crate::store::PermanentKeys::issue_permanent_token`]).
    pub async fn permanent_token(
        &self,
        key: &PermanentKey,
        user: &User,
        wanted: PermanentGeneration,
        change: &Change,
        now: EpochMs,
    ) -> Result<IssuedToken, StoreError> {
        let prefixes = self.config.token_format.accepted();
        let derive = |generation| {
            prefixes
                .iter()
                .map(|prefix| permanent_record(key, prefix, user, generation, now))
                .collect()
        };
        let working = self
            .store
            .issue_permanent_token(user, &derive, wanted, change, now)
            .await?;
        Ok(key.derive(&prefixes[working.candidate], user.id, working.generation))
    }

    /// The token a presented string names, native or imported (see [`crate::auth::resolve`]):
    /// parsed offline, or found by its secret's hash in one GetItem.
    pub async fn resolve(&self, presented: &str) -> Result<Option<ParsedToken>, Fault> {
        resolve(self.store.as_ref(), &self.config.token_format, presented).await
    }

    /// What a presented token is and whether it works (see [`crate::auth::verify`]).
    pub async fn verify(&self, presented: &str, now: EpochMs) -> Result<Verification, Fault> {
        verify(
            self.store.as_ref(),
            &self.config.token_format,
            presented,
            now,
        )
        .await
    }

    /// Authenticates a request's token and, when its `last_used_at` is stale (unset or older
    /// than 5 minutes), records the use before answering: one conditional UpdateItem at most
    /// once per 5 minutes per token. It is awaited rather than left running after the response,
    /// since Lambda may freeze the environment as soon as the response is out (the write would
    /// then land at the next invocation, or never, and log under another request's id). A
    /// failure to record it is logged and does not fail the request.
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
        now: EpochMs,
    ) -> Result<Principal, ApiError> {
        let format = &self.config.token_format;
        let principal = authenticate(self.store.as_ref(), format, presented, now).await?;
        self.record_use(&principal, now).await;
        Ok(principal)
    }

    /// One unit of use of a token on a metered route (the authorizer; `GET /api/user/me` under
    /// `tokenctl serve`): authenticated as [`Service::authenticate`] does, then charged one unit
    /// of its limits and its owner's (an unmetered token: no write). Over a limit:
    /// [`ApiError::TooManyRequests`], charging nothing.
    pub async fn admit(
        &self,
        presented: Option<&str>,
        now: EpochMs,
    ) -> Result<(Principal, Usage), ApiError> {
        let format = &self.config.token_format;
        let (principal, verification) =
            authenticated(self.store.as_ref(), format, presented, now).await?;
        // A service key is the platform's credential for this service, never for its API.
        if principal.is_service_key() {
            return Err(ApiError::Unauthenticated);
        }
        let usage = verification
            .charge(self.store.as_ref(), now)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        if let Some(refusal) = usage.refusal {
            return Err(ApiError::TooManyRequests {
                refusal,
                retry_after: usage.retry_after,
            });
        }
        self.record_use(&principal, now).await;
        Ok((principal, usage))
    }

    /// Records a token's use when its `last_used_at` is stale (see [`Service::authenticate`]).
    async fn record_use(&self, principal: &Principal, now: EpochMs) {
        if principal.last_use_is_stale(now) {
            let (user, family, id) = (
                principal.user_id,
                principal.kind.family(),
                principal.token_id,
            );
            if let Err(error) = self.store.touch_token(user, family, id, now).await {
                tracing::warn!(error = %error, "could not record a token's last use");
            }
        }
    }
}

/// The record of `user`'s permanent token of `generation` under `prefix`.
fn permanent_record(
    key: &PermanentKey,
    prefix: &Prefix,
    user: &User,
    generation: u32,
    now: EpochMs,
) -> NewToken {
    NewToken {
        parsed: key.derive(prefix, user.id, generation).parsed,
        name: "permanent".into(),
        abilities: Abilities::full(),
        created_at_ms: now.0,
        expires_at: None,
        parent_id: None,
        meta: None,
        imported: false,
    }
}

/// Logs as JSON when Lambda's `AWS_LAMBDA_LOG_FORMAT` says so, as text otherwise; level from
/// `RUST_LOG` (default `info`). Metric events ([`crate::metrics`]) go to stdout as their bare EMF
/// lines, whatever the level.
pub fn init_tracing() {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time();
    let logs = if json {
        logs.json().boxed()
    } else {
        logs.with_ansi(false).boxed()
    };
    let not_metrics = filter_fn(|metadata| !crate::metrics::is_metric(metadata));
    tracing_subscriber::registry()
        .with(logs.with_filter(not_metrics).with_filter(filter))
        .with(crate::metrics::lines(std::io::stdout))
        .init();
}
