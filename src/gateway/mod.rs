//! `toolgate gateway`: the MCP proxy that authenticates, reads and relays every call.

pub mod catalog;
pub mod identity;
pub mod mcp;
pub mod policy;
pub mod proxy;
pub mod store;
pub mod strict_json;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use catalog::Catalog;
use identity::Authenticator;
use proxy::Upstream;
use store::Store;

/// Everything a request handler needs, built once at start.
pub struct Gateway {
    pub config: Arc<Config>,
    pub upstreams: HashMap<String, Upstream>,
    pub auth: Arc<Authenticator>,
    pub catalog: Catalog,
    pub http: reqwest::Client,
}

impl Gateway {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let data_dir = config.data_dir();
        let store = Store::open(&data_dir)
            .await
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        let catalog = Catalog::load(store).await?;
        let auth = Arc::new(Authenticator::from_config(&config).await?);
        auth.spawn_jwks_refresh();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), Upstream::new(u)?)))
            .collect::<anyhow::Result<_>>()?;
        let http = crate::http::client_builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            config: Arc::new(config),
            upstreams,
            auth,
            catalog,
            http,
        })
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.gateway.listen;
    let gateway = Arc::new(Gateway::new(config).await?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    // One line per upstream on stdout: what to point an MCP client at (tests read it too).
    for name in gateway.config.upstreams.iter().map(|u| &u.name) {
        println!("toolgate gateway: MCP endpoint http://{local}/mcp/{name}");
    }
    tracing::info!(%local, data_dir = %gateway.config.data_dir().display(), "gateway ready");
    axum::serve(listener, proxy::router(gateway))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}
