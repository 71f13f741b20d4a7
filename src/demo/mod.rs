//! `toolgate demo`: the gateway, an Atlassian-style upstream and simulated agents in one
//! process, offline, with the console attached.
//!
//! Everything the demo makes up (tokens, the OAuth signing key, the config) is written to
//! its data dir, so a newcomer can read how it was set up. The tokens and the key are made
//! on the first run in a data dir and kept there (`demo-secrets.json`, mode 600), so a
//! demo restarted with the same `--data-dir` takes the same operator token and a console
//! reconnects to it; without `--data-dir` the dir is temporary and they are new each run.

pub mod agents;
pub mod upstream;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

use crate::gateway::identity::token_sha256;

/// The upstream's name: agents call `/mcp/atlassian`.
pub const UPSTREAM: &str = "atlassian";
const ISSUER: &str = "https://login.demo.toolgate.invalid/";
const AUDIENCE: &str = "toolgate";
/// How long a held call's client waits on its stream, and how long it stays approvable.
const HOLD_WAIT_SECS: u64 = 60;
const APPROVAL_TTL_SECS: u64 = 600;

pub struct DemoOptions {
    /// 0 lets the system choose.
    pub port: u16,
    pub control_port: u16,
    pub upstream_port: u16,
    pub data_dir: Option<PathBuf>,
    pub no_console: bool,
    pub no_agents: bool,
    /// What the console takes from its own flags.
    pub console: crate::console::Options,
}

/// The file in the data dir that keeps the demo's tokens and OAuth key between runs.
pub const SECRETS_FILE: &str = "demo-secrets.json";

/// The secrets of one demo run.
struct Secrets {
    operator: String,
    ci_bot: String,
    support: String,
    user_jwt: String,
    /// The JWK set that verifies `user_jwt`.
    jwks: String,
}

/// What `SECRETS_FILE` keeps: the tokens, and the seed of the Ed25519 key that signs the
/// OAuth user's JWT (the JWT itself is minted anew each run, so it never expires for a
/// demo that is restarted).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptSecrets {
    operator: String,
    ci_bot: String,
    support: String,
    /// 64 hexadecimal digits.
    oauth_seed: String,
}

impl KeptSecrets {
    fn fresh() -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        Ok(Self {
            operator: crate::token::new_token(),
            ci_bot: crate::token::new_token(),
            support: crate::token::new_token(),
            oauth_seed: hex::encode(seed),
        })
    }

    /// The secrets kept in `dir`, made and written there first if it has none. A file
    /// that others can read, or that is not as this function wrote it, is refused; its
    /// content is never quoted, since it is secret.
    fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(SECRETS_FILE);
        if !path.exists() {
            let kept = Self::fresh()?;
            let text = serde_json::to_string_pretty(&kept)? + "\n";
            match crate::private_file::write_new(&path, text.as_bytes()) {
                Ok(()) => return Ok(kept),
                // Another demo in this dir made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(anyhow::anyhow!("cannot write {}: {e}", path.display()));
                }
            }
        }
        let shown = path.display();
        match crate::private_file::exposed_mode(&path) {
            Ok(None) => {}
            Ok(Some(mode)) => anyhow::bail!(
                "the demo's secrets {shown} can be read by other users (mode {mode:o}); run `chmod 600 {shown}`"
            ),
            Err(e) => anyhow::bail!("cannot read {shown}: {e}"),
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
        let not_ours = |at: String| {
            anyhow::anyhow!(
                "{shown}{at} is not as `toolgate demo` writes it; remove it to start with new tokens"
            )
        };
        let kept: Self = serde_json::from_str(&text)
            .map_err(|e| not_ours(format!(":{}:{}", e.line(), e.column())))?;
        let seed_ok = kept.seed().is_some();
        let tokens_ok = [&kept.operator, &kept.ci_bot, &kept.support]
            .iter()
            .all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()));
        if !(seed_ok && tokens_ok) {
            return Err(not_ours(String::new()));
        }
        Ok(kept)
    }

    fn seed(&self) -> Option<[u8; 32]> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(&self.oauth_seed, &mut seed).ok()?;
        Some(seed)
    }
}

impl Secrets {
    fn from_kept(kept: KeptSecrets) -> anyhow::Result<Secrets> {
        let seed = kept
            .seed()
            .ok_or_else(|| anyhow::anyhow!("the demo's OAuth seed is not 64 hexadecimal digits"))?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
            "use": "sig", "kid": "demo", "x": b64.encode(public)}]})
        .to_string();
        // PKCS#8 for an Ed25519 seed is a fixed 16-byte prefix and the seed (RFC 8410).
        let mut der = hex::decode("302e020100300506032b657004220420").expect("hex");
        der.extend_from_slice(&seed);
        let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("demo".into());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com",
            "groups": ["eng", "oncall"], "iat": now, "exp": now + 12 * 3600});
        let user_jwt = jsonwebtoken::encode(&header, &claims, &key)?;
        Ok(Secrets {
            operator: kept.operator,
            ci_bot: kept.ci_bot,
            support: kept.support,
            user_jwt,
            jwks,
        })
    }
}

/// The demo's gateway config: one trusted upstream, no seeded classes, the default
/// policy, and targets for every Jira, Confluence and Bitbucket resource.
fn gateway_config(secrets: &Secrets, port: u16, control_port: u16, upstream: SocketAddr) -> String {
    let now = chrono::Utc::now();
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    format!(
        r#"# Written by `toolgate demo` at each start. Its tokens and OAuth key are made on the
# first run in this data dir and kept in demo-secrets.json (mode 600) beside it.
[gateway]
listen = "127.0.0.1:{port}"
control_listen = "127.0.0.1:{control_port}"
data_dir = "."
hold_timeout_secs = {HOLD_WAIT_SECS}
approval_ttl_secs = {APPROVAL_TTL_SECS}

[[upstream]]
name = "{UPSTREAM}"
url = "http://{upstream}/mcp"
trust_annotations = true

[oauth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "jwks.json"

[[identity]]
name = "ci-bot"
kind = "api_token"
token_sha256 = "{ci}"
groups = ["ci"]
issued = "{ci_issued}"

# Old and broad: issued years ago for support, and about to expire.
[[identity]]
name = "support-legacy"
kind = "api_token"
token_sha256 = "{support}"
groups = ["support", "all-projects"]
issued = "2021-03-01T00:00:00Z"
expires = "{support_expires}"

[[operator]]
name = "operator"
role = "admin"
token_sha256 = "{operator}"

[[resource]]
tool = "jira_*"
pointer = "/issueKey"
kind = "jira_issue"

[[resource]]
tool = "jira_*"
pointer = "/projectKey"
kind = "jira_project"

[[resource]]
tool = "confluence_*"
pointer = "/pageId"
kind = "confluence_page"

[[resource]]
tool = "confluence_*"
pointer = "/spaceKey"
kind = "confluence_space"

[[resource]]
tool = "bitbucket_*"
pointer = "/repoSlug"
kind = "bitbucket_repo"

[redact]
keys = ["password", "token", "secret", "authorization", "api_key"]
"#,
        ci = token_sha256(&secrets.ci_bot),
        support = token_sha256(&secrets.support),
        operator = token_sha256(&secrets.operator),
        ci_issued = rfc(now - chrono::Duration::days(30)),
        support_expires = rfc(now + chrono::Duration::days(3)),
    )
}

/// The ports the last demo in a data dir listened on, so that a restarted demo comes back
/// where its console and agents look for it.
const PORTS_FILE: &str = "demo-ports.json";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct KeptPorts {
    mcp: u16,
    control: u16,
}

impl KeptPorts {
    fn load(dir: &Path) -> KeptPorts {
        std::fs::read(dir.join(PORTS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// `asked` when given; otherwise the kept port if it is free now; otherwise 0.
    fn pick(asked: u16, kept: u16) -> u16 {
        if asked != 0 || kept == 0 {
            return asked;
        }
        // Freed at once; a process that takes it meanwhile just means a new port.
        match std::net::TcpListener::bind(("127.0.0.1", kept)) {
            Ok(_) => kept,
            Err(_) => 0,
        }
    }
}

/// Runs the demo until the console quits, or SIGINT or SIGTERM.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let temp;
    let data_dir: PathBuf = match &options.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --data-dir {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("toolgate-demo-")
                .tempdir()
                .context("cannot create a temporary data dir")?;
            temp.path().to_owned()
        }
    };
    let secrets = Secrets::from_kept(KeptSecrets::load_or_create(&data_dir)?)?;
    std::fs::write(data_dir.join("jwks.json"), &secrets.jwks)?;

    // The upstream first, so the gateway's first tools/list finds it.
    let upstream_stop = CancellationToken::new();
    let upstream_listener = tokio::net::TcpListener::bind(("127.0.0.1", options.upstream_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.upstream_port))?;
    let upstream_addr = upstream_listener.local_addr()?;
    let data = Arc::new(Mutex::new(upstream::Data::sample()));
    let router = axum::Router::new()
        .nest_service("/mcp", upstream::service(data, upstream_stop.child_token()));
    let upstream_task = tokio::spawn({
        let stop = upstream_stop.clone();
        async move {
            let listener = axum::serve::ListenerExt::tap_io(upstream_listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });

    // With a data dir of its own, the demo comes back on the ports it had.
    let kept = match &options.data_dir {
        Some(_) => KeptPorts::load(&data_dir),
        None => KeptPorts::default(),
    };
    let port = KeptPorts::pick(options.port, kept.mcp);
    let control_port = KeptPorts::pick(options.control_port, kept.control);
    let config_path = data_dir.join("gateway.toml");
    std::fs::write(
        &config_path,
        gateway_config(&secrets, port, control_port, upstream_addr),
    )?;
    let config = crate::config::Config::load(&config_path)?;
    let gateway_stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let gateway_task = tokio::spawn({
        let stop = gateway_stop.clone();
        crate::gateway::serve(config, async move { stop.cancelled().await }, move |at| {
            let _ = ready_tx.send(at);
        })
    });
    let at = match ready_rx.await {
        Ok(at) => at,
        // The gateway stopped before it listened; its error says why.
        Err(_) => {
            return Err(gateway_task
                .await?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the gateway did not start")));
        }
    };
    let endpoint = format!("http://{}/mcp/{UPSTREAM}", at.mcp);
    let control = format!("http://{}", at.control);
    if options.data_dir.is_some() {
        let ports = KeptPorts {
            mcp: at.mcp.port(),
            control: at.control.port(),
        };
        if let Err(e) = std::fs::write(
            data_dir.join(PORTS_FILE),
            serde_json::to_vec(&ports).unwrap_or_default(),
        ) {
            tracing::warn!(error = %e, "cannot keep the demo's ports; a restart picks new ones");
        }
    }

    let agents_stop = CancellationToken::new();
    let agents = if options.no_agents {
        Vec::new()
    } else {
        agents::agents(
            secrets.user_jwt.clone(),
            secrets.ci_bot.clone(),
            secrets.support.clone(),
        )
    };
    let agents_task = tokio::spawn(agents::run(endpoint.clone(), agents, agents_stop.clone()));
    let upstream_url = format!("http://{upstream_addr}/mcp");

    let outcome = if options.no_console {
        print_headless(
            &[&endpoint, &control, &upstream_url],
            &secrets,
            &data_dir,
            &config_path,
        );
        crate::shutdown_signal().await;
        Ok(())
    } else {
        let console = crate::console::Options {
            gateway: Some(control.clone()),
            token: Some(secrets.operator.clone()),
            context: None,
            greeting: Some(format!(
                "toolgate demo · press : for views, ? for help · agents call {endpoint}"
            )),
            ..options.console
        };
        // It ends on `q`, SIGINT or SIGTERM, and gives the terminal back either way.
        crate::console::run(console).await
    };

    // Stop in order: the gateway first, so held clients hear a deny rather than a reset.
    gateway_stop.cancel();
    let stopped = tokio::time::timeout(
        crate::gateway::STOP_GRACE + Duration::from_secs(1),
        gateway_task,
    )
    .await;
    agents_stop.cancel();
    upstream_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), agents_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), upstream_task).await;
    if let Ok(Ok(Err(e))) = stopped {
        tracing::error!(error = %e, "the gateway stopped with an error");
    }
    outcome
}

fn print_headless(
    [endpoint, control, upstream]: &[&str; 3],
    secrets: &Secrets,
    data_dir: &Path,
    config_path: &Path,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "toolgate demo: MCP endpoint {endpoint}\n\
         toolgate demo: control API {control}\n\
         toolgate demo: sample upstream {upstream} (direct, without the gateway)\n\
         toolgate demo: operator token {operator}\n\
         toolgate demo: agent tokens ci-bot {ci} · support-legacy {support}\n\
         toolgate demo: OAuth user alice@example.com: Bearer {jwt}\n\
         toolgate demo: data dir {dir} (config {config})\n\
         \n\
         Watch and approve from another terminal:\n  \
         toolgate console --gateway {control} --token {operator}\n\
         Stop with Ctrl-C.",
        operator = secrets.operator,
        ci = secrets.ci_bot,
        support = secrets.support,
        jwt = secrets.user_jwt,
        dir = data_dir.display(),
        config = config_path.display(),
    );
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_are_made_once_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeptSecrets::load_or_create(dir.path()).unwrap();
        let again = KeptSecrets::load_or_create(dir.path()).unwrap();
        assert_eq!(
            (
                &first.operator,
                &first.ci_bot,
                &first.support,
                &first.oauth_seed
            ),
            (
                &again.operator,
                &again.ci_bot,
                &again.support,
                &again.oauth_seed
            )
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            KeptSecrets::load_or_create(other.path()).unwrap().operator,
            first.operator
        );
        let path = dir.path().join(SECRETS_FILE);
        assert_eq!(crate::private_file::exposed_mode(&path).unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // The same key verifies this run's JWT and the last one's.
        let (a, b) = (
            Secrets::from_kept(first).unwrap(),
            Secrets::from_kept(again).unwrap(),
        );
        assert_eq!(a.jwks, b.jwks);
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_or_altered_secrets_file_is_refused_without_quoting_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let kept = KeptSecrets::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SECRETS_FILE);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeptSecrets::load_or_create(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the demo's secrets {0} can be read by other users (mode 640); run `chmod 600 {0}`",
                path.display()
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        for altered in [
            text.replace(&kept.oauth_seed, &kept.oauth_seed[..60]),
            text.replace("\"support\"", "\"supp0rt\""),
            text.replace(&kept.operator, ""),
        ] {
            std::fs::write(&path, &altered).unwrap();
            let err = KeptSecrets::load_or_create(dir.path())
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("is not as `toolgate demo` writes it"), "{err}");
            for secret in [&kept.operator, &kept.ci_bot, &kept.support] {
                assert!(!err.contains(secret.as_str()), "{err}");
            }
            assert!(!err.contains(&kept.oauth_seed[..60]), "{err}");
        }
    }
}
