//! One running stdio server and who hears what it writes.
//!
//! Over stdio a server's own messages carry no mark of the request they belong to, so
//! the gateway routes them as an HTTP server would have sent them: a progress
//! notification to the request that asked for progress with its token; anything else to
//! the newest request still open on this child (for a pooled child, serving one request
//! at a time, the request); with no request open, to the session's GET stream. A server
//! request that nobody can carry is answered with an error at once, so the server never
//! waits on a client that will not hear it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::child::{ChildSpec, Incoming, StdioChild, StdioError};
use super::slots::Slot;

/// How many of the server's own messages may wait for a slow client on one request.
const ROUTE_BACKLOG: usize = 256;

/// A request waiting on the child, and where its related messages go.
struct Route {
    /// The request's id, as JSON.
    key: String,
    /// Its `_meta.progressToken`, as JSON.
    progress: Option<String>,
    tx: mpsc::Sender<Incoming>,
}

#[derive(Default)]
struct Routes {
    open: Vec<Route>,
    /// The session's GET stream, while one is open.
    listener: Option<mpsc::Sender<Incoming>>,
}

/// A running child, as the bridge uses it.
pub struct Conn {
    pub child: StdioChild,
    routes: Arc<Mutex<Routes>>,
    /// The child's `initialize` result.
    pub init: Mutex<Value>,
    /// When it was stopped on purpose (DELETE, idle, stop, or let go of): an end after
    /// that is not a failure.
    pub retired_at: Arc<Mutex<Option<Instant>>>,
    /// Its place among `max_processes`, given back when it ends or is stopped.
    pub slot: Arc<Mutex<Option<Slot>>>,
    /// Whose it is (as the relay names the principal).
    pub principal: String,
    pub last_used: Mutex<Instant>,
    /// A pooled child that speaks 2026-07-28 itself: requests and answers pass as they
    /// are, with no `initialize` and nothing completed.
    pub speaks_modern: AtomicBool,
}

impl Conn {
    /// Starts a child in the place `slot` holds, its own messages routed as the module
    /// says.
    pub fn spawn(spec: &ChildSpec, slot: Slot) -> Result<Arc<Self>, StdioError> {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let (refusals, mut refused) = mpsc::unbounded_channel::<Bytes>();
        let sink = {
            let routes = routes.clone();
            move |message: Incoming| route(&routes, &refusals, message)
        };
        let child = StdioChild::spawn(spec, sink)?;
        let conn = Arc::new(Self {
            child,
            routes,
            init: Mutex::new(Value::Null),
            retired_at: Arc::default(),
            principal: slot.principal().to_owned(),
            slot: Arc::new(Mutex::new(Some(slot))),
            last_used: Mutex::new(Instant::now()),
            speaks_modern: AtomicBool::new(false),
        });
        // The refusals are written by a task that holds the child only weakly: the
        // child stops when the bridge lets go of it.
        let weak = Arc::downgrade(&conn);
        tokio::spawn(async move {
            while let Some(answer) = refused.recv().await {
                let Some(conn) = weak.upgrade() else { return };
                let _ = conn.child.send(&answer).await;
            }
        });
        Ok(conn)
    }

    /// Opens a route for a request about to be sent; its related messages arrive on the
    /// receiver until `close_route`.
    pub fn open_route(&self, key: &str, progress: Option<String>) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(ROUTE_BACKLOG);
        self.routes.lock().expect("routes").open.push(Route {
            key: key.to_owned(),
            progress,
            tx,
        });
        rx
    }

    pub fn close_route(&self, key: &str) {
        self.routes
            .lock()
            .expect("routes")
            .open
            .retain(|r| r.key != key);
    }

    pub fn has_open_routes(&self) -> bool {
        !self.routes.lock().expect("routes").open.is_empty()
    }

    /// The session's GET stream: what no request carries. One at a time; a second
    /// replaces the first.
    pub fn listen(&self) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(ROUTE_BACKLOG);
        self.routes.lock().expect("routes").listener = Some(tx);
        rx
    }

    /// Ends the GET stream (the child ended, or the session did).
    pub fn stop_listening(&self) {
        self.routes.lock().expect("routes").listener = None;
    }

    pub fn touch(&self) {
        *self.last_used.lock().expect("last used") = Instant::now();
    }

    pub fn idle_for(&self) -> std::time::Duration {
        self.last_used.lock().expect("last used").elapsed()
    }

    /// Stops it on purpose, and gives its place back.
    pub fn retire(&self) {
        self.retired_at
            .lock()
            .expect("retired")
            .get_or_insert_with(Instant::now);
        self.stop_listening();
        self.child.kill();
        self.slot.lock().expect("slot").take();
    }

    pub fn speaks_modern(&self) -> bool {
        self.speaks_modern.load(Ordering::SeqCst)
    }

    pub fn is_alive(&self) -> bool {
        self.child.ended().is_none()
    }
}

impl Drop for Conn {
    /// Let go of, it is stopped on purpose (its child is killed as it drops).
    fn drop(&mut self) {
        self.retired_at
            .lock()
            .expect("retired")
            .get_or_insert_with(Instant::now);
    }
}

/// Where one of the child's own messages goes (called in the order the child wrote).
fn route(routes: &Mutex<Routes>, refusals: &mpsc::UnboundedSender<Bytes>, message: Incoming) {
    let is_request = message.value.get("id").is_some();
    let routes = routes.lock().expect("routes");
    let by_token = message
        .value
        .pointer("/params/progressToken")
        .filter(|_| message.value["method"] == "notifications/progress")
        .map(Value::to_string)
        .and_then(|token| {
            routes
                .open
                .iter()
                .find(|r| r.progress.as_deref() == Some(&token))
        });
    let route = by_token.or_else(|| routes.open.last());
    let refusal = match (route, &routes.listener) {
        (Some(route), _) => match route.tx.try_send(message.clone()) {
            Ok(()) => None,
            Err(_) if is_request => Some("toolgate: the client is not reading; not asked"),
            Err(_) => {
                tracing::debug!("stdio server notification dropped: its client is not reading");
                None
            }
        },
        (None, Some(listener)) => match listener.try_send(message.clone()) {
            Ok(()) => None,
            Err(_) if is_request => Some("toolgate: the client is not reading; not asked"),
            Err(_) => None,
        },
        (None, None) if is_request => Some(
            "toolgate: no client stream is open to carry this request (no call is in progress and no GET stream is open)",
        ),
        (None, None) => {
            tracing::debug!("stdio server notification dropped: no client stream is open");
            None
        }
    };
    if let Some(text) = refusal {
        let id = message.value.get("id").cloned().unwrap_or(Value::Null);
        let answer =
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": text}});
        let _ = refusals.send(Bytes::from(answer.to_string()));
    }
}
