//! toolgate: runtime authorization for AI agents' MCP tool calls.

pub mod api;
pub mod audit_cli;
pub mod cli;
pub mod cli_output;
pub mod client;
pub mod config;
pub mod console;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod private_file;
pub mod time;
pub mod token;

/// Resolves on SIGINT or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
