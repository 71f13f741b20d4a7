//! One place that prepares outgoing HTTP clients.

use std::sync::Once;

/// A reqwest builder with TLS ready. ring is the crypto provider: it builds far faster
/// than aws-lc, and an MCP relay does little TLS work of its own.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}
