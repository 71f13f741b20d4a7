//! The gateway's TOML configuration: types, defaults, loading and validation.
//!
//! Every table rejects unknown keys, so a typo is an error naming the key and its line
//! rather than a setting that silently does nothing. Keys used by later features are
//! parsed and validated now, so a config written today keeps working.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::api::Risk;
use crate::gateway::hosts::split_host;
use crate::gateway::identity::normalize_principal;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewaySection,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default, rename = "identity")]
    pub identities: Vec<IdentityConfig>,
    #[serde(default)]
    pub oauth: Option<OauthConfig>,
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorConfig>,
    #[serde(default, rename = "resource")]
    pub resources: Vec<ResourceConfig>,
    #[serde(default, rename = "risk")]
    pub risks: Vec<RiskSeed>,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub redact: RedactSection,
    #[serde(default, rename = "notify")]
    pub notifies: Vec<NotifyConfig>,
    #[serde(default)]
    pub store: StoreSection,
}

/// `[store]`: where decisions, holds, the catalog and policy versions live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://DIR` (the directory holding `toolgate.db`; empty means `data_dir`), or
    /// `postgres://USER@HOST:PORT/DB` for a database several replicas share. Unset:
    /// SQLite in `data_dir`.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable that holds the PostgreSQL password: never the file.
    #[serde(default = "default_password_env")]
    pub password_env: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: None,
            password_env: default_password_env(),
        }
    }
}

fn default_password_env() -> String {
    "PGPASSWORD".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_control_listen")]
    pub control_listen: SocketAddr,
    /// Where the SQLite store lives. Relative paths are resolved against the config
    /// file's directory; the default is the platform data dir (XDG on Linux).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The deployment secret (`toolgate keygen -o FILE`), shared by every replica. Unset,
    /// the gateway makes `data_dir/toolgate.key` on first start.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_hold_timeout_secs")]
    pub hold_timeout_secs: u64,
    #[serde(default = "default_approval_ttl_secs")]
    pub approval_ttl_secs: u64,
    /// The most one extend of a pending hold may add (`POST .../extend`).
    #[serde(default = "default_max_extend_secs")]
    pub max_extend_secs: u64,
    /// The longest grant an approval may make (`{"grant": {"for_secs": N}}`).
    #[serde(default = "default_max_grant_secs")]
    pub max_grant_secs: u64,
    /// Where people reach the control API (`https://toolgate.example.com`), for the links
    /// in pages; unset, `http://` and `control_listen`.
    #[serde(default)]
    pub public_control_url: Option<String>,
    /// The audit chain is signed every this many events, and every this many seconds
    /// when any event is unsigned.
    #[serde(default = "default_checkpoint_every_events")]
    pub checkpoint_every_events: u64,
    #[serde(default = "default_checkpoint_every_secs")]
    pub checkpoint_every_secs: u64,
    /// The token report's flags (`GET /api/v1/tokens`): a token issued more than this many
    /// days ago is `old`; one the policy lets reach this many more tools than it used is
    /// `broad`; one that touched targets in more than this many projects is
    /// `cross_project`.
    #[serde(default = "default_token_max_age_days")]
    pub token_max_age_days: u64,
    #[serde(default = "default_token_broad_unused_tools")]
    pub token_broad_unused_tools: usize,
    #[serde(default = "default_token_cross_project_max")]
    pub token_cross_project_max: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The most of an upstream answer the gateway reads whole (a filtered tools/list,
    /// one SSE event whose progress it renumbers). Answers relayed as they stream, an
    /// approved call's included, are not limited.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default = "default_store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// Held calls stay in memory until resolved: how many one identity may have, how
    /// many in all, and how big one's request may be.
    #[serde(default = "default_max_holds_per_identity")]
    pub max_holds_per_identity: usize,
    #[serde(default = "default_max_holds")]
    pub max_holds: usize,
    #[serde(default = "default_max_held_call_bytes")]
    pub max_held_call_bytes: usize,
    #[serde(default = "default_true")]
    pub metrics_auth: bool,
    /// `Host` names the MCP endpoint also answers to, besides its listen address and
    /// localhost on the listen port: `name` (any port) or `name:port`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The most MCP sessions whose owner the gateway remembers at once.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session unused this long is forgotten, and its id then refused.
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// A Streamable HTTP server; or else `command`.
    #[serde(default)]
    pub url: Option<String>,
    /// A stdio server: the program and its arguments, run without a shell.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The stdio server's whole environment (nothing else is inherited); values may
    /// name the gateway's variables as `${VAR}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The stdio server's working directory (relative to the config file).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The most stdio server processes this upstream runs at once.
    #[serde(default)]
    pub max_processes: Option<usize>,
    /// The most of them one identity's sessions and requests may take.
    #[serde(default)]
    pub max_processes_per_identity: Option<usize>,
    /// A stdio server unused this long is stopped.
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// A stdio server that has not answered `initialize` within this is killed.
    #[serde(default)]
    pub initialize_timeout_secs: Option<u64>,
    /// Static headers sent upstream, typically the upstream's own credentials.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub trust_annotations: bool,
    #[serde(default)]
    pub hide_denied_tools: bool,
    #[serde(default)]
    pub on_tool_change: OnToolChange,
    #[serde(default)]
    pub hold_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnToolChange {
    #[default]
    Reset,
    Keep,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub name: String,
    pub kind: IdentityConfigKind,
    pub token_sha256: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(deserialize_with = "de_timestamp")]
    pub issued: DateTime<Utc>,
    #[serde(default, deserialize_with = "de_opt_timestamp")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default)]
    pub owner: Option<String>,
}

/// Only long-lived API tokens are configured here; OAuth identities come from JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityConfigKind {
    ApiToken,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthConfig {
    pub issuer: String,
    pub audience: String,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    pub name: String,
    pub role: OperatorRole,
    pub token_sha256: String,
    #[serde(default)]
    pub principals: Vec<String>,
    /// The holds this operator may resolve, as `upstream/tool` globs
    /// (`"atlassian/jira_*"`); unset, every hold.
    #[serde(default)]
    pub approves: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    Viewer,
    Approver,
    Admin,
}

/// Where to find the target resource in a tool's arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// A glob over tool names, such as `jira_*`.
    pub tool: String,
    /// An RFC 6901 JSON pointer into the arguments, such as `/projectKey`.
    pub pointer: String,
    /// The resource kind reported in decisions, such as `jira_project`.
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSeed {
    pub upstream: String,
    pub tool: String,
    pub risk: Risk,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactSection {
    #[serde(default = "default_redact_keys")]
    pub keys: Vec<String>,
    #[serde(default)]
    pub pointers: Vec<String>,
}

impl Default for RedactSection {
    fn default() -> Self {
        Self {
            keys: default_redact_keys(),
            pointers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub url: String,
    /// The payload: toolgate's own JSON, a Slack incoming-webhook message, or a
    /// PagerDuty Events API v2 event (a trigger per hold, a resolve when it ends).
    #[serde(default)]
    pub format: NotifyFormat,
    /// PagerDuty's integration (routing) key; required with `format = "pagerduty"`.
    #[serde(default)]
    pub routing_key: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    #[default]
    Generic,
    Slack,
    Pagerduty,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7800))
}
fn default_control_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7801))
}
fn default_hold_timeout_secs() -> u64 {
    50
}
fn default_approval_ttl_secs() -> u64 {
    900
}
/// The longest one extend may be: a week.
const MAX_EXTEND_SECS: u64 = 7 * 24 * 3600;

fn default_max_extend_secs() -> u64 {
    3600
}
/// The longest grant may be: a week, like an extend.
const MAX_GRANT_SECS: u64 = 7 * 24 * 3600;

fn default_max_grant_secs() -> u64 {
    3600
}
fn default_checkpoint_every_events() -> u64 {
    1000
}
fn default_checkpoint_every_secs() -> u64 {
    60
}
fn default_token_max_age_days() -> u64 {
    90
}
fn default_token_broad_unused_tools() -> usize {
    10
}
fn default_token_cross_project_max() -> usize {
    3
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_holds_per_identity() -> usize {
    100
}
fn default_max_holds() -> usize {
    10_000
}
fn default_max_held_call_bytes() -> usize {
    256 * 1024
}
fn default_max_response_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_store_timeout_ms() -> u64 {
    200
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_session_idle_secs() -> u64 {
    24 * 60 * 60
}
fn default_true() -> bool {
    true
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_redact_keys() -> Vec<String> {
    ["password", "token", "secret", "authorization", "api_key"]
        .map(String::from)
        .to_vec()
}

/// A timestamp written either as a TOML datetime (`2026-01-01T00:00:00Z`) or as an
/// RFC 3339 string; a bare date means midnight UTC.
#[derive(Deserialize)]
#[serde(untagged)]
enum TimestampInput {
    Toml(toml::value::Datetime),
    Text(String),
}

fn parse_timestamp(input: TimestampInput) -> Result<DateTime<Utc>, String> {
    let text = match input {
        TimestampInput::Toml(dt) => dt.to_string(),
        TimestampInput::Text(s) => s,
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "invalid timestamp {text:?}: expected RFC 3339 such as 2026-01-31T09:00:00Z, or a date such as 2026-01-31"
    ))
}

fn de_timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    parse_timestamp(TimestampInput::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_timestamp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    de_timestamp(d).map(Some)
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are resolved
    /// against the file's directory, so the gateway behaves the same from any cwd.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|e| match e {
            ParseOrInvalid::Parse(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseOrInvalid::Invalid(message) => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
        })
    }

    fn from_toml(text: &str, base: &Path) -> Result<Self, ParseOrInvalid> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ParseOrInvalid::Parse(describe_toml_error(&e, text)))?;
        config.validate().map_err(ParseOrInvalid::Invalid)?;
        config.resolve_paths(base);
        config.normalize_principals();
        Ok(config)
    }

    /// Principals are compared with `Identity::principal()`, so they are kept in its form.
    fn normalize_principals(&mut self) {
        for p in self.operators.iter_mut().flat_map(|op| &mut op.principals) {
            if let Some(normal) = normalize_principal(p) {
                *p = normal;
            }
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = self.gateway.data_dir.as_mut() {
            resolve(d);
        }
        if let Some(f) = self.policy.file.as_mut() {
            resolve(f);
        }
        if let Some(f) = self.gateway.key_file.as_mut() {
            resolve(f);
        }
        if let Some(url) = self.store.url.as_mut()
            && let Some(dir) = url.strip_prefix("sqlite://")
            && !dir.is_empty()
            && Path::new(dir).is_relative()
        {
            *url = format!("sqlite://{}", base.join(dir).display());
        }
        if let Some(f) = self.oauth.as_mut().and_then(|o| o.jwks_file.as_mut()) {
            resolve(f);
        }
        for cwd in self.upstreams.iter_mut().filter_map(|u| u.cwd.as_mut()) {
            resolve(cwd);
        }
    }

    /// The directory holding the store: the configured one, or the platform data dir.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.gateway.data_dir {
            return dir.clone();
        }
        directories::ProjectDirs::from("", "", "toolgate")
            .map(|d| d.data_dir().to_owned())
            .unwrap_or_else(|| PathBuf::from("toolgate-data"))
    }

    /// Where the store lives, from `[store] url` (SQLite in `data_dir` by default).
    pub fn store_location(&self) -> Result<crate::gateway::store::Location, String> {
        use crate::gateway::store::Location;
        let Some(url) = self.store.url.as_deref() else {
            return Ok(Location::Sqlite(self.data_dir()));
        };
        if let Some(dir) = url.strip_prefix("sqlite://") {
            return Ok(Location::Sqlite(if dir.is_empty() {
                self.data_dir()
            } else {
                PathBuf::from(dir)
            }));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url).map_err(|e| format!("[store] url: {e}"))?;
            if parsed.password().is_some()
                || parsed
                    .query_pairs()
                    .any(|(k, _)| k.to_ascii_lowercase().contains("password"))
            {
                return Err(format!(
                    "[store] url must not carry a password: set the environment variable {} (`[store] password_env`) instead",
                    self.store.password_env
                ));
            }
            return Ok(Location::Postgres {
                url: url.to_owned(),
                password_env: self.store.password_env.clone(),
            });
        }
        Err(format!(
            "[store] url must start with sqlite:// or postgres://, not {:?}",
            url.split("://").next().unwrap_or(url)
        ))
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        for n in &self.notifies {
            if n.format == NotifyFormat::Pagerduty
                && n.routing_key.as_deref().is_none_or(str::is_empty)
            {
                return Err(format!(
                    "[[notify]] {}: format = \"pagerduty\" needs routing_key (the integration key of a PagerDuty service)",
                    n.url
                ));
            }
        }
        for op in &self.operators {
            for scope in op.approves.iter().flatten() {
                if scope
                    .split_once('/')
                    .is_none_or(|(u, t)| u.is_empty() || t.is_empty())
                {
                    return Err(format!(
                        "[[operator]] {}: approves entry {scope:?} must be upstream/tool (globs allowed, such as \"atlassian/jira_*\")",
                        op.name
                    ));
                }
            }
        }
        let g = &self.gateway;
        if g.max_body_bytes == 0 {
            return Err("[gateway] max_body_bytes must be greater than 0".into());
        }
        if g.hold_timeout_secs == 0 {
            return Err("[gateway] hold_timeout_secs must be greater than 0".into());
        }
        if g.store_timeout_ms == 0 {
            return Err("[gateway] store_timeout_ms must be greater than 0".into());
        }
        if g.max_extend_secs == 0 || g.max_extend_secs > MAX_EXTEND_SECS {
            return Err(format!(
                "[gateway] max_extend_secs must be from 1 to {MAX_EXTEND_SECS} (a week)"
            ));
        }
        if let Some(url) = &g.public_control_url {
            check_http_url(url)
                .map_err(|e| format!("[gateway] public_control_url {url:?}: {e}"))?;
        }
        if g.checkpoint_every_events == 0 || g.checkpoint_every_secs == 0 {
            return Err(
                "[gateway] checkpoint_every_events and checkpoint_every_secs must be greater than 0"
                    .into(),
            );
        }
        if g.max_grant_secs == 0 || g.max_grant_secs > MAX_GRANT_SECS {
            return Err(format!(
                "[gateway] max_grant_secs must be from 1 to {MAX_GRANT_SECS} (a week)"
            ));
        }
        let location = self.store_location()?;
        if matches!(location, crate::gateway::store::Location::Postgres { .. })
            && g.key_file.is_none()
        {
            return Err("[gateway] key_file is required with a PostgreSQL store: every replica needs the same deployment secret (toolgate keygen -o FILE)".into());
        }
        if g.max_sessions == 0 {
            return Err("[gateway] max_sessions must be greater than 0".into());
        }
        if g.session_idle_secs == 0 {
            return Err("[gateway] session_idle_secs must be greater than 0".into());
        }
        for h in &g.allowed_hosts {
            if split_host(h).is_none() {
                return Err(format!(
                    "[gateway] allowed_hosts: {h:?} is not a host name or address, with an optional :port (IPv6 in brackets)"
                ));
            }
        }
        if self.upstreams.is_empty() {
            return Err("at least one [[upstream]] is required".into());
        }
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("[[upstream]] #{} ({:?})", i + 1, u.name);
            if u.name.is_empty()
                || !u
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "{at}: name must be non-empty and use only letters, digits, '-' and '_' (it is part of the URL /mcp/{{name}})"
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(format!("{at}: duplicate upstream name"));
            }
            u.check_transport().map_err(|e| format!("{at}: {e}"))?;
            for (k, v) in &u.headers {
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    format!("{at}: header name {k:?} is not a valid HTTP header name")
                })?;
                reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                    format!("{at}: header {k:?} has a value that is not valid in HTTP")
                })?;
            }
            if u.hold_timeout_secs == Some(0) {
                return Err(format!("{at}: hold_timeout_secs must be greater than 0"));
            }
            // A hold stays approvable at least as long as its client waits on it.
            let wait = u.hold_timeout_secs.unwrap_or(g.hold_timeout_secs);
            if g.approval_ttl_secs < wait {
                return Err(format!(
                    "{at}: its hold_timeout_secs ({wait}) is longer than [gateway] approval_ttl_secs ({})",
                    g.approval_ttl_secs
                ));
            }
            // A session's server outlives the wait of a call held in that session, so
            // the approved call finds it.
            if u.command.is_some() && u.idle_timeout().as_secs() < wait {
                return Err(format!(
                    "{at}: its idle_timeout_secs ({}) is shorter than its hold_timeout_secs ({wait}): a session's server would stop while its call is held",
                    u.idle_timeout().as_secs()
                ));
            }
        }
        let mut token_hashes = HashSet::new();
        let mut identity_names = HashSet::new();
        for (i, id) in self.identities.iter().enumerate() {
            let at = format!("[[identity]] #{} ({:?})", i + 1, id.name);
            if id.name.is_empty() {
                return Err(format!("{at}: name must not be empty"));
            }
            if !identity_names.insert(id.name.as_str()) {
                return Err(format!("{at}: duplicate identity name"));
            }
            check_sha256_hex(&id.token_sha256).map_err(|e| format!("{at}: token_sha256 {e}"))?;
            if !token_hashes.insert(id.token_sha256.as_str()) {
                return Err(format!(
                    "{at}: token_sha256 is already used by another token"
                ));
            }
            if let Some(expires) = id.expires
                && expires <= id.issued
            {
                return Err(format!("{at}: expires must be after issued"));
            }
        }
        for (i, op) in self.operators.iter().enumerate() {
            let at = format!("[[operator]] #{} ({:?})", i + 1, op.name);
            if op.name.is_empty() {
                return Err(format!("{at}: name must not be empty"));
            }
            check_sha256_hex(&op.token_sha256).map_err(|e| format!("{at}: token_sha256 {e}"))?;
            if !token_hashes.insert(op.token_sha256.as_str()) {
                return Err(format!(
                    "{at}: token_sha256 is already used by another token"
                ));
            }
            for p in &op.principals {
                if normalize_principal(p).is_none() {
                    return Err(format!(
                        "{at}: principal {p:?} must look like \"oauth:NAME\" or \"api_token:NAME\""
                    ));
                }
            }
        }
        if let Some(o) = &self.oauth {
            match (&o.jwks_file, &o.jwks_url) {
                (Some(_), Some(_)) => {
                    return Err("[oauth]: set jwks_file or jwks_url, not both".into());
                }
                (None, None) => return Err("[oauth]: jwks_file or jwks_url is required".into()),
                (None, Some(url)) => {
                    check_http_url(url).map_err(|e| format!("[oauth] jwks_url {url:?}: {e}"))?
                }
                (Some(_), None) => {}
            }
            if o.issuer.is_empty() || o.audience.is_empty() {
                return Err("[oauth]: issuer and audience must not be empty".into());
            }
        }
        for (i, r) in self.resources.iter().enumerate() {
            if !r.pointer.starts_with('/') {
                return Err(format!(
                    "[[resource]] #{}: pointer {:?} must be a JSON pointer starting with '/'",
                    i + 1,
                    r.pointer
                ));
            }
            if r.kind.is_empty() || r.tool.is_empty() {
                return Err(format!(
                    "[[resource]] #{}: tool and kind must not be empty",
                    i + 1
                ));
            }
        }
        for (i, r) in self.risks.iter().enumerate() {
            if self.upstream(&r.upstream).is_none() {
                return Err(format!(
                    "[[risk]] #{}: upstream {:?} is not a configured [[upstream]]",
                    i + 1,
                    r.upstream
                ));
            }
        }
        for p in &self.redact.pointers {
            if !p.starts_with('/') {
                return Err(format!(
                    "[redact] pointers: {p:?} must be a JSON pointer starting with '/'"
                ));
            }
        }
        for (i, n) in self.notifies.iter().enumerate() {
            check_http_url(&n.url)
                .map_err(|e| format!("[[notify]] #{}: url {:?}: {e}", i + 1, n.url))?;
        }
        Ok(())
    }
}

enum ParseOrInvalid {
    Parse(String),
    Invalid(String),
}

/// toml's own message carries the line, column and a caret; we keep it and make sure
/// an unknown key is named plainly on the first line.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let line = e.span().map(|s| line_at(text, s.start));
    let msg = e.message();
    match line {
        Some(line) => format!("line {line}: {msg}\n{e}"),
        None => e.to_string(),
    }
}

/// The 1-based line of a byte offset, for errors that point into a file.
pub fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl UpstreamConfig {
    /// How the gateway reaches it.
    pub fn transport(&self) -> Transport<'_> {
        match (&self.url, &self.command) {
            (Some(url), _) => Transport::Http(url),
            (None, Some(command)) => Transport::Stdio(command),
            // `check_transport` refuses a config with neither.
            (None, None) => Transport::Http(""),
        }
    }

    /// What `GET /status` and the console show for where it is.
    pub fn location(&self) -> String {
        match self.transport() {
            Transport::Http(url) => url.to_owned(),
            // Only the program: its arguments may be long, or carry what is not ours to show.
            Transport::Stdio(command) => format!("stdio: {}", command[0]),
        }
    }

    pub fn max_processes(&self) -> usize {
        self.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES)
    }

    /// Half of `max_processes` unless set, so that one identity cannot take them all.
    pub fn max_processes_per_identity(&self) -> usize {
        self.max_processes_per_identity
            .unwrap_or_else(|| (self.max_processes() / 2).max(1))
    }

    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS))
    }

    pub fn initialize_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.initialize_timeout_secs
                .unwrap_or(DEFAULT_INITIALIZE_TIMEOUT_SECS),
        )
    }

    /// `url` xor `command`, and the keys that belong to the one chosen.
    fn check_transport(&self) -> Result<(), String> {
        let stdio_keys = [
            ("env", !self.env.is_empty()),
            ("cwd", self.cwd.is_some()),
            ("max_processes", self.max_processes.is_some()),
            (
                "max_processes_per_identity",
                self.max_processes_per_identity.is_some(),
            ),
            ("idle_timeout_secs", self.idle_timeout_secs.is_some()),
            (
                "initialize_timeout_secs",
                self.initialize_timeout_secs.is_some(),
            ),
        ];
        match (&self.url, &self.command) {
            (Some(_), Some(_)) => Err(
                "url and command are exclusive: url for a Streamable HTTP server, command for a stdio server"
                    .into(),
            ),
            (None, None) => Err(
                "needs url (a Streamable HTTP server) or command (a stdio server, such as [\"npx\", \"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv/docs\"])"
                    .into(),
            ),
            (Some(url), None) => {
                check_http_url(url).map_err(|e| format!("url {url:?}: {e}"))?;
                match stdio_keys.iter().find(|(_, set)| *set) {
                    Some((key, _)) => Err(format!(
                        "{key} is for a stdio server (command), not for url"
                    )),
                    None => Ok(()),
                }
            }
            (None, Some(command)) => {
                if command.first().is_none_or(|p| p.is_empty()) {
                    return Err("command must name a program: [\"program\", \"arg\", …]".into());
                }
                if !self.headers.is_empty() {
                    return Err(
                        "headers are sent to a url; a stdio server (command) takes env instead"
                            .into(),
                    );
                }
                for name in self.env.keys() {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(format!("env: {name:?} is not an environment variable name"));
                    }
                }
                if self.max_processes == Some(0) || self.max_processes_per_identity == Some(0) {
                    return Err(
                        "max_processes and max_processes_per_identity must be at least 1".into(),
                    );
                }
                if self.max_processes_per_identity() > self.max_processes() {
                    return Err(format!(
                        "max_processes_per_identity ({}) is more than max_processes ({})",
                        self.max_processes_per_identity(),
                        self.max_processes()
                    ));
                }
                if self.idle_timeout_secs == Some(0) || self.initialize_timeout_secs == Some(0) {
                    return Err(
                        "idle_timeout_secs and initialize_timeout_secs must be greater than 0"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }
}

/// How an upstream is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Http(&'a str),
    /// The command that starts it.
    Stdio(&'a [String]),
}

pub const DEFAULT_MAX_PROCESSES: usize = 16;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_INITIALIZE_TIMEOUT_SECS: u64 = 30;

fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn check_sha256_hex(s: &str) -> Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(
            "must be 64 lowercase hex digits (the SHA-256 of the token; see `toolgate token new`)"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[gateway]
[[upstream]]
name = "docs"
url = "http://127.0.0.1:9000/mcp"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("/etc/toolgate")).map_err(|e| match e {
            ParseOrInvalid::Parse(m) | ParseOrInvalid::Invalid(m) => m,
        })
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:7800");
        assert_eq!(c.gateway.control_listen.to_string(), "127.0.0.1:7801");
        assert_eq!(c.gateway.hold_timeout_secs, 50);
        assert_eq!(c.gateway.approval_ttl_secs, 900);
        assert_eq!(c.gateway.max_body_bytes, 4_194_304);
        assert_eq!(c.gateway.store_timeout_ms, 200);
        assert!(c.gateway.metrics_auth);
        assert!(c.gateway.allowed_hosts.is_empty());
        assert_eq!(c.gateway.max_sessions, 10_000);
        assert_eq!(c.gateway.session_idle_secs, 86_400);
        let u = &c.upstreams[0];
        assert!(!u.trust_annotations && !u.hide_denied_tools);
        assert_eq!(u.on_tool_change, OnToolChange::Reset);
        assert_eq!(
            c.redact.keys,
            ["password", "token", "secret", "authorization", "api_key"]
        );
    }

    #[test]
    fn an_upstream_is_a_url_or_a_command_and_takes_only_its_own_keys() {
        const STDIO: &str = "[gateway]\n[[upstream]]\nname = \"files\"\ncommand = [\"npx\", \"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv/docs\"]\n";
        let c = parse(&format!(
            "{STDIO}env = {{ TOKEN = \"${{FILES_TOKEN}}\" }}\ncwd = \"work\"\n"
        ))
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(
            u.transport(),
            Transport::Stdio(&[
                "npx".to_owned(),
                "-y".to_owned(),
                "@modelcontextprotocol/server-filesystem".to_owned(),
                "/srv/docs".to_owned()
            ])
        );
        assert_eq!(u.location(), "stdio: npx");
        assert_eq!(u.cwd.as_deref(), Some(Path::new("/etc/toolgate/work")));
        assert_eq!(u.max_processes(), DEFAULT_MAX_PROCESSES);
        assert_eq!(u.idle_timeout().as_secs(), DEFAULT_IDLE_TIMEOUT_SECS);
        let cases = [
            (
                format!("{MINIMAL}command = [\"x\"]\n"),
                "[[upstream]] #1 (\"docs\"): url and command are exclusive",
            ),
            (
                "[gateway]\n[[upstream]]\nname = \"docs\"\n".to_owned(),
                "[[upstream]] #1 (\"docs\"): needs url (a Streamable HTTP server) or command",
            ),
            (
                format!("{MINIMAL}max_processes = 3\n"),
                "max_processes is for a stdio server (command), not for url",
            ),
            (
                format!("{STDIO}headers = {{ Authorization = \"x\" }}\n"),
                "headers are sent to a url; a stdio server (command) takes env instead",
            ),
            (
                "[gateway]\n[[upstream]]\nname = \"x\"\ncommand = []\n".to_owned(),
                "command must name a program",
            ),
            (
                format!("{STDIO}max_processes = 0\n"),
                "max_processes and max_processes_per_identity must be at least 1",
            ),
            (
                format!("{STDIO}max_processes = 4\nmax_processes_per_identity = 5\n"),
                "max_processes_per_identity (5) is more than max_processes (4)",
            ),
            (
                format!("{STDIO}idle_timeout_secs = 30\n"),
                "its idle_timeout_secs (30) is shorter than its hold_timeout_secs (50)",
            ),
            (
                format!("{STDIO}idle_timeout_secs = 0\n"),
                "idle_timeout_secs and initialize_timeout_secs must be greater than 0",
            ),
            (
                format!("{STDIO}env = {{ \"A=B\" = \"x\" }}\n"),
                "env: \"A=B\" is not an environment variable name",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{text}\n{err}");
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}trust_anotations = true\n");
        let err = parse(&text).unwrap_err();
        assert!(
            err.starts_with("line 6: unknown field `trust_anotations`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_in_gateway_section_is_named() {
        let err = parse("[gateway]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(
            err.starts_with("line 2: unknown field `listen_addr`"),
            "{err}"
        );
    }

    #[test]
    fn approval_time_must_cover_each_upstreams_wait() {
        let text = MINIMAL.replace("[gateway]\n", "[gateway]\napproval_ttl_secs = 10\n");
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("hold_timeout_secs (50) is longer than [gateway] approval_ttl_secs (10)"),
            "{err}"
        );
        let text = format!("{text}hold_timeout_secs = 5\n");
        parse(&text).unwrap();
    }

    #[test]
    fn allowed_hosts_must_be_hosts() {
        let with = |hosts: &str| {
            MINIMAL.replace(
                "[gateway]\n",
                &format!("[gateway]\nallowed_hosts = {hosts}\n"),
            )
        };
        parse(&with(
            r#"["toolgate.internal", "gw.corp.example:8443", "[fd00::1]:7800"]"#,
        ))
        .unwrap();
        for bad in [
            r#"["http://toolgate.internal"]"#,
            r#"["a@b"]"#,
            r#"[""]"#,
            r#"["fd00::1"]"#,
        ] {
            let err = parse(&with(bad)).unwrap_err();
            assert!(err.starts_with("[gateway] allowed_hosts: "), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_upstream_is_an_error() {
        let err = parse("[gateway]\n").unwrap_err();
        assert_eq!(err, "at least one [[upstream]] is required");
    }

    #[test]
    fn identity_timestamps_accept_toml_datetimes_and_strings() {
        let text = format!(
            "{MINIMAL}[[identity]]\nname = \"ci\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = 2026-01-02T03:04:05Z\nexpires = \"2027-01-01\"\n",
            "a".repeat(64)
        );
        let c = parse(&text).unwrap();
        let id = &c.identities[0];
        assert_eq!(id.issued.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(
            id.expires.unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn bad_token_hash_is_explained() {
        let text = format!(
            "{MINIMAL}[[identity]]\nname = \"ci\"\nkind = \"api_token\"\ntoken_sha256 = \"ABC\"\nissued = 2026-01-02T03:04:05Z\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("[[identity]] #1 (\"ci\"): token_sha256 must be 64 lowercase hex"),
            "{err}"
        );
    }

    #[test]
    fn invalid_risk_seed_names_valid_classes() {
        let text =
            format!("{MINIMAL}[[risk]]\nupstream = \"docs\"\ntool = \"x\"\nrisk = \"danger\"\n");
        let err = parse(&text).unwrap_err();
        assert!(err.contains("unknown variant `danger`"), "{err}");
        assert!(
            err.contains("read") && err.contains("unclassified"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let text = format!("{MINIMAL}[policy]\nfile = \"policy.cedar\"\n")
            .replace("[gateway]\n", "[gateway]\ndata_dir = \"data\"\n");
        let c = parse(&text).unwrap();
        assert_eq!(c.data_dir(), PathBuf::from("/etc/toolgate/data"));
        assert_eq!(
            c.policy.file.unwrap(),
            PathBuf::from("/etc/toolgate/policy.cedar")
        );
    }

    #[test]
    fn operator_principals_are_kept_in_the_form_identities_are_matched_in() {
        let text = format!(
            "{MINIMAL}[[operator]]\nname = \"alice\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\nprincipals = [\"OAuth:Alice@Corp.Example\", \"api_token:Nightly\"]\n",
            "b".repeat(64)
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.operators[0].principals,
            ["oauth:alice@corp.example", "api_token:Nightly"]
        );
        let err = parse(&text.replace("api_token:Nightly", "user:bob")).unwrap_err();
        assert!(
            err.contains("principal \"user:bob\" must look like \"oauth:NAME\""),
            "{err}"
        );
    }

    #[test]
    fn a_pagerduty_notify_needs_its_routing_key() {
        let text = format!(
            "{MINIMAL}[[notify]]\nurl = \"https://events.pagerduty.com/v2/enqueue\"\nformat = \"pagerduty\"\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(err.contains("needs routing_key"), "{err}");
        let c = parse(&format!("{text}routing_key = \"R1\"\n")).unwrap();
        assert_eq!(c.notifies[0].format, NotifyFormat::Pagerduty);
        let err = parse(&format!(
            "{MINIMAL}[[notify]]\nurl = \"x\"\nformat = \"teams\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("unknown variant `teams`"), "{err}");
    }

    #[test]
    fn an_operators_approves_must_name_upstream_and_tool() {
        let text = format!(
            "{MINIMAL}[[operator]]\nname = \"jo\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\napproves = [\"jira_*\"]\n",
            "ab".repeat(32)
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("[[operator]] jo: approves entry \"jira_*\" must be upstream/tool"),
            "{err}"
        );
        let ok = text.replace("[\"jira_*\"]", "[\"docs/jira_*\"]");
        let c = parse(&ok).unwrap();
        assert_eq!(
            c.operators[0].approves,
            Some(vec!["docs/jira_*".to_owned()])
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn the_compose_examples_replicas_share_a_postgresql_store_and_a_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compose/gateway.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c.store_location().unwrap(),
            crate::gateway::store::Location::Postgres {
                url: "postgres://toolgate@postgres:5432/toolgate".into(),
                password_env: "PGPASSWORD".into()
            }
        );
        assert!(c.gateway.key_file.is_some());
    }

    #[test]
    fn the_store_is_sqlite_by_default_and_postgresql_needs_a_key_and_no_password_in_the_url() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.store_location().unwrap(),
            crate::gateway::store::Location::Sqlite(c.data_dir())
        );
        let with = |store: &str, gateway: &str| {
            let text = format!(
                "{}\n[store]\n{store}\n",
                MINIMAL.replace("[gateway]\n", &format!("[gateway]\n{gateway}"))
            );
            parse(&text)
        };
        let c = with("url = \"sqlite://db\"", "").unwrap();
        assert_eq!(
            c.store_location().unwrap(),
            crate::gateway::store::Location::Sqlite(PathBuf::from("/etc/toolgate/db")),
            "relative to the config's directory"
        );
        let err = with("url = \"postgres://tg@db/toolgate\"", "").unwrap_err();
        assert!(
            err.contains("key_file is required with a PostgreSQL store"),
            "{err}"
        );
        let err = with(
            "url = \"postgres://tg:hunter2@db/toolgate\"",
            "key_file = \"k\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("must not carry a password")
                && err.contains("PGPASSWORD")
                && !err.contains("hunter2"),
            "{err}"
        );
        let err = with(
            "url = \"postgres://tg@db/toolgate?sslmode=require&sslpassword=hunter2\"",
            "key_file = \"k\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("must not carry a password") && !err.contains("hunter2"),
            "{err}"
        );
        let err = with("url = \"mysql://db\"", "").unwrap_err();
        assert!(
            err.contains("must start with sqlite:// or postgres://"),
            "{err}"
        );
        let c = with(
            "url = \"postgresql://tg@db/toolgate\"\npassword_env = \"TG_DB_PASSWORD\"",
            "key_file = \"k\"\n",
        )
        .unwrap();
        assert_eq!(
            c.store_location().unwrap(),
            crate::gateway::store::Location::Postgres {
                url: "postgresql://tg@db/toolgate".into(),
                password_env: "TG_DB_PASSWORD".into()
            }
        );
    }
}
