//! Configuration, read once per cold start.
//!
//! The DynamoDB endpoint (`AWS_ENDPOINT_URL_DYNAMODB`) and region (`AWS_REGION`) go through
//! aws-config's standard handling; the rest is ours.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

use crate::token::{CapCounter, PermanentKey, Prefix, TokenFamily, TokenFormat};
use crate::trust::TrustRoots;

/// Default for `MAX_TOKENS_PER_USER`.
pub const DEFAULT_MAX_TOKENS_PER_USER: u32 = 100;

/// Default for `AUDIT_RETENTION_DAYS`.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 400;

/// Default for `MAX_CUSTOMER_TOKENS_PER_USER`.
pub const DEFAULT_MAX_CUSTOMER_TOKENS_PER_USER: u32 = 100;

/// What is wrong with the environment; stops the cold start with a message an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("TABLE_NAME is not set: set it to the DynamoDB table of this deployment")]
    MissingTableName,
    #[error("{0} must be a whole number from 1 to 100000, got {1:?}")]
    BadMaxTokens(&'static str, String),
    #[error("PERMANENT_TOKEN_KEY is not set: set it to a random secret of at least 32 bytes")]
    MissingPermanentKey,
    #[error(
        "PERMANENT_TOKEN_KEY must be at least {} bytes long",
        PermanentKey::MIN_LEN
    )]
    ShortPermanentKey,
    #[error("AUDIT_RETENTION_DAYS must be a whole number from 1 to 36500, got {0:?}")]
    BadAuditRetention(String),
    #[error("TLS_TRUST_ROOTS must be `amazon` (the default) or `system`, got {0:?}")]
    BadTrustRoots(String),
    #[error(
        "{0} must be 2 to 12 characters, a lowercase letter then lowercase letters or digits \
         (ACCEPTED_TOKEN_PREFIXES: such prefixes separated by commas), got {1:?}"
    )]
    BadTokenPrefix(&'static str, String),
    #[error(
        "ACCEPTED_TOKEN_PREFIXES must include TOKEN_PREFIX ({0}), or the tokens minted would not \
         be accepted"
    )]
    PrefixNotAccepted(String),
    #[error(
        "{0} is set but empty: the AWS SDK would take it as an endpoint and fail on the first \
         call; unset it (AWS's own endpoint) or give the endpoint"
    )]
    EmptyEndpoint(String),
}

/// Refuses an endpoint variable set to nothing, which the SDK reads as an endpoint URL and
/// panics on when it builds its first request.
fn endpoints_set(vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    match vars
        .filter(|(name, value)| name.starts_with("AWS_ENDPOINT_URL") && value.trim().is_empty())
        .map(|(name, _)| name)
        .next()
    {
        Some(name) => Err(ConfigError::EmptyEndpoint(name)),
        None => Ok(()),
    }
}

/// Settings every function shares.
#[derive(Clone, Debug)]
pub struct Config {
    pub table_name: String,
    pub max_tokens_per_user: u32,
    pub max_customer_tokens_per_user: u32,
    /// The roots the DynamoDB client trusts (`TLS_TRUST_ROOTS`).
    pub trust_roots: TrustRoots,
    /// Only the functions that derive permanent tokens need it; see [`Config::permanent_key`].
    permanent_key: Option<PermanentKey>,
    /// How long audit events are kept (`AUDIT_RETENTION_DAYS`, days).
    pub audit_retention_days: u64,
    /// `SECRET_SCANNING_KEYS` as set: the public keys that sign secret-scanning reports (read by
    /// the leak-response function, which parses them at its cold start).
    pub secret_scanning_keys: Option<String>,
    /// The prefix new tokens carry (`TOKEN_PREFIX`) and those verification accepts
    /// (`ACCEPTED_TOKEN_PREFIXES`).
    pub token_format: TokenFormat,
}

impl Config {
    /// Reads `TABLE_NAME`, `MAX_TOKENS_PER_USER`, `MAX_CUSTOMER_TOKENS_PER_USER`,
    /// `TLS_TRUST_ROOTS`, `TOKEN_PREFIX`, `ACCEPTED_TOKEN_PREFIXES` and (when present)
    /// `PERMANENT_TOKEN_KEY` and `SECRET_SCANNING_KEYS`.
    /// Every `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>` set is not empty (a template
    /// value left empty by a local runner, say).
    pub fn from_env() -> Result<Config, ConfigError> {
        endpoints_set(std::env::vars())?;
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] over any source of variables, so tests need not touch the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let table_name = lookup("TABLE_NAME")
            .filter(|t| !t.trim().is_empty())
            .ok_or(ConfigError::MissingTableName)?;
        let cap = |name: &'static str, default: u32| match lookup(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or(ConfigError::BadMaxTokens(name, text)),
        };
        let max_tokens_per_user = cap("MAX_TOKENS_PER_USER", DEFAULT_MAX_TOKENS_PER_USER)?;
        let max_customer_tokens_per_user = cap(
            "MAX_CUSTOMER_TOKENS_PER_USER",
            DEFAULT_MAX_CUSTOMER_TOKENS_PER_USER,
        )?;
        let trust_roots = TrustRoots::parse(lookup(TrustRoots::VARIABLE).as_deref())
            .map_err(ConfigError::BadTrustRoots)?;
        let audit_retention_days = match lookup("AUDIT_RETENTION_DAYS") {
            None => DEFAULT_AUDIT_RETENTION_DAYS,
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|days| (1..=36_500).contains(days))
                .ok_or(ConfigError::BadAuditRetention(text))?,
        };
        let permanent_key = match lookup("PERMANENT_TOKEN_KEY") {
            None => None,
            Some(key) => {
                Some(PermanentKey::new(key.as_bytes()).ok_or(ConfigError::ShortPermanentKey)?)
            }
        };
        let token_format = token_format(&lookup)?;
        Ok(Config {
            token_format,
            table_name,
            max_tokens_per_user,
            max_customer_tokens_per_user,
            trust_roots,
            audit_retention_days,
            permanent_key,
            secret_scanning_keys: lookup("SECRET_SCANNING_KEYS"),
        })
    }

    /// How many live tokens of `family` one user may hold.
    pub fn cap(&self, family: TokenFamily) -> u32 {
        match family.cap() {
            Some(CapCounter::Tokens) => self.max_tokens_per_user,
            Some(CapCounter::CustomerTokens) => self.max_customer_tokens_per_user,
            None => u32::MAX,
        }
    }

    /// The permanent-token key, required by the functions that derive permanent tokens.
    pub fn permanent_key(&self) -> Result<&PermanentKey, ConfigError> {
        self.permanent_key
            .as_ref()
            .ok_or(ConfigError::MissingPermanentKey)
    }
}

/// `TOKEN_PREFIX` (default `tkn`) and `ACCEPTED_TOKEN_PREFIXES` (default: the prefix alone), from
/// any source of variables.
pub fn token_format(lookup: &impl Fn(&str) -> Option<String>) -> Result<TokenFormat, ConfigError> {
    let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let prefix = match set("TOKEN_PREFIX") {
        None => Prefix::default(),
        Some(text) => {
            Prefix::parse(text.trim()).ok_or(ConfigError::BadTokenPrefix("TOKEN_PREFIX", text))?
        }
    };
    let Some(list) = set("ACCEPTED_TOKEN_PREFIXES") else {
        return Ok(TokenFormat::new(prefix, []));
    };
    let accepted = list
        .split(',')
        .map(|item| Prefix::parse(item.trim()))
        .collect::<Option<Vec<Prefix>>>()
        .ok_or_else(|| ConfigError::BadTokenPrefix("ACCEPTED_TOKEN_PREFIXES", list.clone()))?;
    if !accepted.contains(&prefix) {
        return Err(ConfigError::PrefixNotAccepted(prefix.to_string()));
    }
    Ok(TokenFormat::new(prefix, accepted))
}

/// Builds the DynamoDB client once per cold start, trusting `roots`, with deliberate timeouts
/// and retries so an outage answers 503 within a few seconds instead of hanging until the Lambda
/// times out.
pub async fn dynamodb_client(roots: TrustRoots) -> aws_sdk_dynamodb::Client {
    dynamodb_client_at(roots, None).await
}

/// [`dynamodb_client`] with an explicit endpoint instead of `AWS_ENDPOINT_URL_DYNAMODB`, for
/// tests that run a server of their own (a DynamoDB Local to stop and restart, a TLS server).
pub async fn dynamodb_client_at(
    roots: TrustRoots,
    endpoint: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    dynamodb_client_for(roots, endpoint, None).await
}

/// [`dynamodb_client`] with an explicit endpoint and region where given (an operator's flags),
/// else the environment's.
pub async fn dynamodb_client_for(
    roots: TrustRoots,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    let sdk = sdk_config(roots, region).await;
    let mut config = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

/// The settings every AWS client of the service is built from: the one HTTPS client over
/// `roots`, the credentials, bounded retries and timeouts, `region` where given. Endpoints
/// come from the environment (`AWS_ENDPOINT_URL_<SERVICE>`), as the SDK reads them.
pub async fn sdk_config(roots: TrustRoots, region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).http_client(roots.http_client());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    // Lambda gives a function its role's credentials in the environment. Reading them there is
    // what the default chain would do first; building the rest of that chain (profile files, web
    // identity with an STS client of its own, ECS, instance metadata) was a third of the init's
    // instructions (docs/PERFORMANCE.md). Without the variables, the default chain as usual.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    loader
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(500))
                .operation_attempt_timeout(Duration::from_millis(1500))
                .operation_timeout(Duration::from_secs(4))
                .build(),
        )
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn an_endpoint_set_to_nothing_is_refused_at_cold_start_by_name() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let empty = vars(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", ""),
        ]);
        let refused = endpoints_set(empty).unwrap_err();
        assert!(
            matches!(&refused, ConfigError::EmptyEndpoint(name) if name == "AWS_ENDPOINT_URL_EVENTBRIDGE")
        );
        assert!(refused
            .to_string()
            .starts_with("AWS_ENDPOINT_URL_EVENTBRIDGE is set but empty"));
        assert!(endpoints_set(vars(&[("AWS_ENDPOINT_URL", " ")])).is_err());
        let set = vars(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
            ("OTHER", ""),
        ]);
        assert!(endpoints_set(set).is_ok());
    }

    #[test]
    fn table_name_is_required() {
        assert!(matches!(config(&[]), Err(ConfigError::MissingTableName)));
        assert!(matches!(
            config(&[("TABLE_NAME", " ")]),
            Err(ConfigError::MissingTableName)
        ));
    }

    #[test]
    fn audit_retention_defaults_and_validates() {
        let c = config(&[("TABLE_NAME", "t")]).unwrap();
        assert_eq!(c.audit_retention_days, DEFAULT_AUDIT_RETENTION_DAYS);
        let c = config(&[("TABLE_NAME", "t"), ("AUDIT_RETENTION_DAYS", "30")]).unwrap();
        assert_eq!(c.audit_retention_days, 30);
        for bad in ["0", "x", "-3", "36501"] {
            assert!(matches!(
                config(&[("TABLE_NAME", "t"), ("AUDIT_RETENTION_DAYS", bad)]),
                Err(ConfigError::BadAuditRetention(_))
            ));
        }
    }

    #[test]
    fn max_tokens_defaults_and_validates() {
        let c = config(&[("TABLE_NAME", "t")]).unwrap();
        assert_eq!(c.max_tokens_per_user, 100);
        assert!(c.permanent_key().is_err());
        assert_eq!(c.max_customer_tokens_per_user, 100);
        let c = config(&[
            ("TABLE_NAME", "t"),
            ("MAX_TOKENS_PER_USER", "5"),
            ("MAX_CUSTOMER_TOKENS_PER_USER", "7"),
        ])
        .unwrap();
        assert_eq!(c.max_tokens_per_user, 5);
        assert_eq!(c.max_customer_tokens_per_user, 7);
        for variable in ["MAX_TOKENS_PER_USER", "MAX_CUSTOMER_TOKENS_PER_USER"] {
            for bad in ["0", "-1", "x", "100001"] {
                assert!(matches!(
                    config(&[("TABLE_NAME", "t"), (variable, bad)]),
                    Err(ConfigError::BadMaxTokens(name, _)) if name == variable
                ));
            }
        }
    }

    #[test]
    fn permanent_key_must_be_long_enough() {
        assert!(matches!(
            config(&[("TABLE_NAME", "t"), ("PERMANENT_TOKEN_KEY", "short")]),
            Err(ConfigError::ShortPermanentKey)
        ));
        let c = config(&[
            ("TABLE_NAME", "t"),
            ("PERMANENT_TOKEN_KEY", &"k".repeat(32)),
        ])
        .unwrap();
        assert!(c.permanent_key().is_ok());
    }

    #[test]
    fn token_prefixes_default_validate_and_must_accept_the_prefix() {
        let c = config(&[("TABLE_NAME", "t")]).unwrap();
        assert_eq!(c.token_format, TokenFormat::default());
        let prefixes = |c: &Config| -> Vec<String> {
            c.token_format
                .accepted()
                .iter()
                .map(|p| p.to_string())
                .collect()
        };
        let c = config(&[("TABLE_NAME", "t"), ("TOKEN_PREFIX", "acme")]).unwrap();
        assert_eq!(prefixes(&c), ["acme"]);
        let c = config(&[
            ("TABLE_NAME", "t"),
            ("TOKEN_PREFIX", "acme"),
            ("ACCEPTED_TOKEN_PREFIXES", "tkn, acme,tkn"),
        ])
        .unwrap();
        assert_eq!(prefixes(&c), ["acme", "tkn"]);
        for bad in ["A", "1x", "x", "tkn_", "abcdefghijklm"] {
            assert!(matches!(
                config(&[("TABLE_NAME", "t"), ("TOKEN_PREFIX", bad)]),
                Err(ConfigError::BadTokenPrefix("TOKEN_PREFIX", _))
            ));
        }
        for bad in ["tkn,", "tkn,,acme", "tkn;acme"] {
            assert!(matches!(
                config(&[("TABLE_NAME", "t"), ("ACCEPTED_TOKEN_PREFIXES", bad)]),
                Err(ConfigError::BadTokenPrefix("ACCEPTED_TOKEN_PREFIXES", _))
            ));
        }
        assert!(matches!(
            config(&[
                ("TABLE_NAME", "t"),
                ("TOKEN_PREFIX", "acme"),
                ("ACCEPTED_TOKEN_PREFIXES", "tkn")
            ]),
            Err(ConfigError::PrefixNotAccepted(prefix)) if prefix == "acme"
        ));
    }
}
