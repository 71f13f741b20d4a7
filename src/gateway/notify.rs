//! Webhooks for new holds, so on-call can be paged. Delivery runs on its own tasks
//! with retries; a slow or dead webhook never delays a call.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

/// How many notifications may wait for delivery; past it, new ones are dropped (and
/// logged) rather than slowing the data plane.
const QUEUE: usize = 1024;
/// How many deliveries may be in flight at once.
const IN_FLIGHT: usize = 32;
const ATTEMPTS: u32 = 5;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub struct Notifier {
    tx: Option<mpsc::Sender<Value>>,
}

impl Notifier {
    pub fn new(urls: Vec<String>, http: reqwest::Client) -> Self {
        if urls.is_empty() {
            return Self { tx: None };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(rx, Arc::new(urls), http));
        Self { tx: Some(tx) }
    }

    /// Queues a notification without waiting.
    pub fn send(&self, body: Value) {
        if let Some(tx) = &self.tx
            && tx.try_send(body).is_err()
        {
            tracing::warn!("webhook queue full; a hold notification was dropped");
        }
    }
}

async fn dispatch(mut rx: mpsc::Receiver<Value>, urls: Arc<Vec<String>>, http: reqwest::Client) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(body) = rx.recv().await {
        for url in urls.iter() {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                deliver(&http, &url, &body).await;
                drop(slot);
            });
        }
    }
}

async fn deliver(http: &reqwest::Client, url: &str, body: &Value) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(url)
            .timeout(ATTEMPT_TIMEOUT)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => {
                tracing::warn!(%url, attempt, status = %resp.status(), "webhook refused a hold notification")
            }
            Err(e) => tracing::warn!(%url, attempt, error = %e, "webhook unreachable"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(%url, "hold notification not delivered after {ATTEMPTS} attempts");
}
