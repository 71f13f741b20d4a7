//! `toolgate gateway`: the MCP proxy that authenticates, reads and relays every call.

pub mod audit;
pub mod catalog;
pub mod control;
pub mod decide;
pub mod escape;
pub mod exact;
pub mod follow;
pub mod grants;
pub mod holds;
pub mod hosts;
pub mod identity;
pub mod keys;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod pointer;
pub mod policy;
pub mod redact;
pub mod relay;
pub mod replay;
pub mod request_state;
pub mod sessions;
pub mod shadow;
pub mod stdio;
pub mod store;
pub mod strict_json;
pub mod tokens;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::config::{Config, OperatorConfig};
use catalog::Catalog;
use decide::TargetFinder;
use holds::Holds;
use identity::Authenticator;
use notify::Notifier;
use policy::PolicyEngine;
use redact::Redactor;
use relay::upstream::Upstream;
use store::{Store, WriteOp};

/// Everything a request handler needs, built once at start.
pub struct Gateway {
    pub config: Arc<Config>,
    pub upstreams: HashMap<String, Upstream>,
    pub auth: Arc<Authenticator>,
    pub catalog: Catalog,
    pub store: Store,
    /// Identifies this store: a subscriber that saw another id must reload.
    pub store_id: String,
    pub targets: TargetFinder,
    pub holds: Holds,
    pub metrics: metrics::Metrics,
    pub started: std::time::Instant,
    pub notifier: Notifier,
    /// Operators by the SHA-256 of their token.
    pub operators: Vec<([u8; 32], OperatorConfig)>,
    pub redactor: Redactor,
    /// Keys the identical-call hash; derived from the deployment secret.
    pub call_mac: keys::CallMac,
    /// Signs the audit chain's checkpoints; its public key is in `GET /status`.
    pub audit_signer: Arc<audit::AuditSigner>,
    /// Seals the `requestState` of a held call's long wait (2026-07-28 clients).
    pub state_seal: request_state::StateSeal,
    /// The policy in force. Swapped whole on change; never held across an await.
    policy: RwLock<Arc<PolicyEngine>>,
    /// The stored version of the policy in force here.
    policy_version: std::sync::atomic::AtomicU64,
    /// Set while this replica could not apply a change another replica made (on a
    /// shared store), and why: its copies may be out of date, so calls are denied and
    /// `/readyz` is 503 until it has.
    out_of_step: std::sync::Mutex<Option<String>>,
    /// A candidate deciding every call beside the policy in force, enforcing nothing.
    shadow: RwLock<Option<Arc<shadow::Shadow>>>,
    /// Held from a policy's commit to its swap, so two concurrent edits cannot leave in
    /// force a policy other than the last one stored.
    pub policy_edits: tokio::sync::Mutex<()>,
    pub http: reqwest::Client,
    /// The `Host` names the MCP endpoint answers to.
    pub served_hosts: hosts::ServedHosts,
    /// Which identity each MCP session belongs to.
    pub sessions: sessions::Sessions,
    /// Turns true once when the gateway starts to stop: held streams answer with a deny
    /// and event streams close, so shutdown never waits on a person.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let data_dir = config.data_dir();
        let location = config.store_location().map_err(anyhow::Error::msg)?;
        // The deployment secret first: it signs the audit chain's checkpoints.
        if config.gateway.key_file.is_none() {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        }
        let key =
            keys::DeploymentKey::load_or_create(config.gateway.key_file.as_deref(), &data_dir)?;
        let audit_signer = Arc::new(key.audit_signer());
        let store = Store::open_with(
            &location,
            Duration::from_millis(config.gateway.store_timeout_ms),
            Some(store::Checkpointing {
                signer: audit_signer.clone(),
                every_events: config.gateway.checkpoint_every_events,
            }),
        )
        .await
        .with_context(|| format!("cannot open the store ({})", location.describe()))?;
        let store_id = store.store_id().await?;
        let catalog = Catalog::load(store.clone()).await?;
        catalog.seed(&config.risks).await?;
        if store.is_shared() && config.policy.file.is_some() {
            tracing::warn!(
                "[policy] file beside other replicas: a replica that starts with a file whose content differs from the last loaded puts it in force on every replica; give every replica the same file, or manage the policy through the control API"
            );
        }
        let (policy, policy_version) = load_policy(&store, config.policy.file.as_deref()).await?;
        let holds = Holds::load(store.clone())
            .await?
            .with_limits(holds::HoldLimits::from_config(&config.gateway));
        let auth = Arc::new(Authenticator::from_config(&config).await?);
        auth.spawn_jwks_refresh();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), Upstream::new(u)?)))
            .collect::<anyhow::Result<_>>()?;
        let http = crate::http::client_builder()
            .connect_timeout(Duration::from_secs(10))
            // Below the 5 s after which Node and uvicorn close an idle keep-alive
            // connection: a call sent on one they are closing fails, and a tools/call
            // that may have been received cannot be sent again.
            .pool_idle_timeout(UPSTREAM_IDLE)
            .tcp_nodelay(true)
            // A redirect would carry the upstream's configured credentials to wherever
            // it points; an upstream that answers 3xx is reported as failing instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let control_base = match &config.gateway.public_control_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", config.gateway.control_listen),
        };
        let notifier = Notifier::new(config.notifies.clone(), &control_base, http.clone());
        let operators = config
            .operators
            .iter()
            .map(|op| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&op.token_sha256, &mut hash)?;
                Ok((hash, op.clone()))
            })
            .collect::<anyhow::Result<_>>()?;
        let served_hosts =
            hosts::ServedHosts::new(config.gateway.listen, &config.gateway.allowed_hosts);
        let sessions = sessions::Sessions::new(
            config.gateway.max_sessions,
            Duration::from_secs(config.gateway.session_idle_secs),
        );
        let redactor = Redactor::new(&config.redact);
        for resource in config
            .resources
            .iter()
            .filter(|r| redactor.hides(&r.pointer))
        {
            tracing::warn!(tool = %resource.tool, pointer = %resource.pointer,
                "this [[resource]] pointer is also redacted: its target shows as [REDACTED] in the log and to policies (rules that need the value can read context.args)");
        }
        Ok(Self {
            served_hosts,
            sessions,
            targets: TargetFinder::new(&config.resources),
            holds,
            metrics: metrics::Metrics::new(config.upstreams.iter().map(|u| u.name.as_str())),
            started: std::time::Instant::now(),
            notifier,
            operators,
            redactor,
            call_mac: key.call_mac(),
            state_seal: key.state_seal(),
            audit_signer,
            config: Arc::new(config),
            upstreams,
            auth,
            catalog,
            store,
            store_id,
            policy: RwLock::new(Arc::new(policy)),
            policy_version: std::sync::atomic::AtomicU64::new(policy_version),
            out_of_step: std::sync::Mutex::new(None),
            shadow: RwLock::new(None),
            policy_edits: tokio::sync::Mutex::new(()),
            http,
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Resolves once the gateway has started to stop.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    pub fn policy(&self) -> Arc<PolicyEngine> {
        self.policy.read().expect("policy lock").clone()
    }

    /// Why this replica is out of step with the shared store, if it is.
    pub fn out_of_step(&self) -> Option<String> {
        self.out_of_step.lock().expect("out_of_step lock").clone()
    }

    pub fn set_out_of_step(&self, why: Option<String>) {
        *self.out_of_step.lock().expect("out_of_step lock") = why;
    }

    /// The stored version of the policy in force here.
    pub fn policy_version(&self) -> u64 {
        self.policy_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn shadow(&self) -> Option<Arc<shadow::Shadow>> {
        self.shadow.read().expect("shadow lock").clone()
    }

    /// Removes `shadow` if it is still the one installed (not one put in its place).
    pub fn remove_shadow_if(&self, shadow: &Arc<shadow::Shadow>) {
        let mut installed = self.shadow.write().expect("shadow lock");
        if installed.as_ref().is_some_and(|s| Arc::ptr_eq(s, shadow)) {
            *installed = None;
        }
    }

    /// Installs a shadow policy, or (`None`) removes it; returns the one it replaced.
    pub fn set_shadow(&self, shadow: Option<shadow::Shadow>) -> Option<Arc<shadow::Shadow>> {
        std::mem::replace(
            &mut *self.shadow.write().expect("shadow lock"),
            shadow.map(Arc::new),
        )
    }

    /// Puts stored version `version` in force; pending holds are not re-decided until
    /// approval.
    pub fn replace_policy(&self, engine: PolicyEngine, version: u64) {
        let mut in_force = self.policy.write().expect("policy lock");
        *in_force = Arc::new(engine);
        self.policy_version
            .store(version, std::sync::atomic::Ordering::Release);
        drop(in_force);
        if let Some(shadow) = self.shadow() {
            shadow.reset();
        }
    }
}

/// Runs `work` to its end even if the caller stops waiting for it.
///
/// axum drops a handler's future when its client disconnects. A commit followed by the
/// in-memory change it stands for (a policy swap, a hold's state) must not stop between
/// the two, or the store and what is in force disagree; such steps run on a task of
/// their own, and the handler only awaits their outcome.
pub async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(work).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a detached step was cancelled: {e}"),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The policy in force at start, and its stored version. After the first start the
/// store is the source of truth: `[policy] file` is loaded only when its content
/// differs from its last load.
async fn load_policy(store: &Store, file: Option<&Path>) -> anyhow::Result<(PolicyEngine, u64)> {
    let current = store.current_policy().await?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read [policy] file {}", path.display()))?;
        let sha256 = sha256_hex(text.as_bytes());
        let last_loaded = store.meta("policy_file_sha256").await?;
        if current.is_none() || last_loaded.as_deref() != Some(sha256.as_str()) {
            let engine = PolicyEngine::compile(&text)
                .map_err(|e| anyhow::anyhow!("[policy] file {}: {e}", path.display()))?;
            let committed = store
                .write(WriteOp::Policy {
                    text,
                    sha256: sha256.clone(),
                    by: format!("config:{}", path.display()),
                    note: None,
                    expected_version: None,
                    file_sha256: Some(sha256),
                })
                .await?;
            tracing::info!(file = %path.display(), policies = engine.policy_count(), "policy loaded from file");
            return Ok((engine, policy_version_of(&committed)));
        }
    }
    match current {
        Some(stored) => PolicyEngine::compile(&stored.text)
            .map(|engine| (engine, stored.stored.version))
            .map_err(|e| {
                anyhow::anyhow!(
                    "the stored policy version {} no longer compiles: {e}",
                    stored.stored.version
                )
            }),
        None => {
            let engine = PolicyEngine::compile(policy::DEFAULT_POLICY)
                .expect("the shipped default policy is valid");
            let committed = store
                .write(WriteOp::Policy {
                    text: policy::DEFAULT_POLICY.to_owned(),
                    sha256: sha256_hex(policy::DEFAULT_POLICY.as_bytes()),
                    by: "default".into(),
                    note: None,
                    expected_version: None,
                    file_sha256: None,
                })
                .await?;
            Ok((engine, policy_version_of(&committed)))
        }
    }
}

/// The version a committed policy write stored.
pub fn policy_version_of(committed: &store::Committed) -> u64 {
    committed
        .events
        .iter()
        .find_map(|e| match &e.body {
            crate::api::EventBody::PolicyChanged { version, .. } => Some(*version),
            _ => None,
        })
        .unwrap_or(0)
}

/// The kernel send buffer of each control-API connection.
const CONTROL_SEND_BUFFER: usize = 64 * 1024;

/// How long open connections get to finish after a stop, before they are dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long an idle connection to an upstream is kept for the next call.
const UPSTREAM_IDLE: Duration = Duration::from_secs(4);

/// Where a running gateway listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub mcp: std::net::SocketAddr,
    pub control: std::net::SocketAddr,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
    serve(config, crate::shutdown_signal(), move |at| {
        // What to point clients at, on stdout (tests read these lines too). A closed
        // stdout is no reason to stop serving, so write errors are ignored.
        let mut out = std::io::stdout().lock();
        for name in &names {
            let _ = writeln!(
                out,
                "toolgate gateway: MCP endpoint http://{}/mcp/{name}",
                at.mcp
            );
        }
        let _ = writeln!(out, "toolgate gateway: control API http://{}", at.control);
        let _ = out.flush();
    })
    .await
}

/// Runs the gateway until `stop` resolves. `ready` is told where it listens (ports may
/// be 0 in the config, for the system to choose). On stop, held clients get a deny and
/// event streams close at once; other connections get `STOP_GRACE` to finish.
pub async fn serve(
    mut config: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Addresses),
) -> anyhow::Result<()> {
    let (listen, control_listen) = (config.gateway.listen, config.gateway.control_listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let control = tokio::net::TcpListener::bind(control_listen)
        .await
        .with_context(|| format!("cannot listen on {control_listen} (control_listen)"))?;
    let local = listener.local_addr()?;
    // Bound first, so the `Host` check knows the port the system chose for port 0.
    config.gateway.listen = local;
    let gateway = Arc::new(Gateway::new(config).await?);
    ready(Addresses {
        mcp: local,
        control: control.local_addr()?,
    });
    tracing::info!(%local, data_dir = %gateway.config.data_dir().display(), "gateway ready");
    // Beside other replicas on a shared store, what they commit is put in force here.
    if gateway.store.is_shared() {
        follow::spawn(gateway.clone());
    }
    tokio::spawn(expire_holds(Arc::downgrade(&gateway)));
    tokio::spawn(checkpoint_chain(Arc::downgrade(&gateway)));
    tokio::spawn(probe_store(Arc::downgrade(&gateway)));
    // Pages opened for holds are closed when the holds end, whatever ended them.
    if gateway.notifier.closes_pages() {
        tokio::spawn(notify::close_pages(gateway.clone()));
    }
    {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            stop.await;
            tracing::info!(
                "stopping: clients waiting on held calls are answered with a deny and streams closed; the holds stay pending for an identical retry after a restart"
            );
            gateway.stopping.send_replace(true);
        });
    }
    let stopped = |gw: Arc<Gateway>| async move { gw.stopped().await };
    // Answers are relayed in pieces as they arrive; with Nagle's algorithm on, the last
    // small piece would wait for the client's delayed ACK, 40 ms on Linux.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let data_plane = axum::serve(listener, relay::router(gateway.clone()))
        .with_graceful_shutdown(stopped(gateway.clone()));
    // A subscriber that stops reading must stall its own stream soon, not park
    // megabytes in the kernel: small send buffers make the lag visible.
    let control = axum::serve::ListenerExt::tap_io(control, |tcp| {
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(CONTROL_SEND_BUFFER);
    });
    let control_plane = axum::serve(control, control::router(gateway.clone()))
        .with_graceful_shutdown(stopped(gateway.clone()));
    let planes = async { tokio::try_join!(data_plane.into_future(), control_plane.into_future()) };
    tokio::select! {
        served = planes => { served?; }
        () = async { gateway.stopped().await; tokio::time::sleep(STOP_GRACE).await } => {
            tracing::warn!(grace = ?STOP_GRACE, "connections still open after the grace period; dropping them");
        }
    }
    // Stdio servers stop with the gateway (they run in process groups of their own,
    // which a signal to the gateway does not reach).
    for stdio in gateway.upstreams.values().filter_map(|u| u.stdio.as_ref()) {
        stdio.shutdown();
    }
    // How the last calls ended may still be waiting to share a commit.
    if let Err(e) = gateway.store.flush().await {
        tracing::error!(error = %e, "the last records were not stored at stop");
    }
    Ok(())
}

/// Resolves holds whose time ran out, once a second.
async fn expire_holds(gateway: std::sync::Weak<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(gw) = gateway.upgrade() else { return };
        if let Err(e) = gw.holds.expire_due(chrono::Utc::now()).await {
            tracing::error!(error = %e, "expiring holds failed; will retry");
        }
    }
}

/// Signs where the audit chain stands every `checkpoint_every_secs`, if any event since
/// the last checkpoint is unsigned (the writer also signs every `checkpoint_every_events`).
async fn checkpoint_chain(gateway: std::sync::Weak<Gateway>) {
    let every = match gateway.upgrade() {
        Some(gw) => Duration::from_secs(gw.config.gateway.checkpoint_every_secs),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(gw) = gateway.upgrade() else { return };
        gw.store.record(store::WriteOp::Checkpoint);
    }
}

/// How often a failing store is tried again when no traffic is doing so.
const STORE_PROBE: Duration = Duration::from_millis(250);

/// While the store is failing, commits an empty write now and then: the first that
/// succeeds marks it ready again (and records `store.recovered`), so `/readyz` comes
/// back by itself even when no call arrives to try the store, and a load balancer that
/// drained this gateway on 503 sends it traffic again.
async fn probe_store(gateway: std::sync::Weak<Gateway>) {
    let mut tick = tokio::time::interval(STORE_PROBE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gw) = gateway.upgrade() else { return };
        if gw.store.health().is_ready() {
            continue;
        }
        match gw.store.flush().await {
            Ok(()) => tracing::info!("audit store answers again; ready"),
            Err(e) => tracing::debug!(error = %e, "audit store still failing"),
        }
    }
}
