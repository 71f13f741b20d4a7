//! Counters for `/metrics`, in Prometheus text. Plain atomics: the data plane only
//! adds to them, and a scrape reads them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::Outcome;

/// Upper bounds of the decision latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000];

pub struct Metrics {
    decisions: [AtomicU64; 3],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    upstream_errors: BTreeMap<String, AtomicU64>,
    store_errors: AtomicU64,
}

fn index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Allow => 0,
        Outcome::Deny => 1,
        Outcome::Hold => 2,
    }
}

impl Metrics {
    pub fn new<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            decisions: Default::default(),
            latency_buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            upstream_errors: upstreams
                .into_iter()
                .map(|u| (u.to_owned(), AtomicU64::new(0)))
                .collect(),
            store_errors: AtomicU64::new(0),
        }
    }

    pub fn decided(&self, outcome: Outcome, decision_us: u64) {
        self.decisions[index(outcome)].fetch_add(1, Ordering::Relaxed);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|&b| decision_us <= b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us
            .fetch_add(decision_us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn decisions(&self, outcome: Outcome) -> u64 {
        self.decisions[index(outcome)].load(Ordering::Relaxed)
    }

    pub fn upstream_error(&self, upstream: &str) {
        if let Some(c) = self.upstream_errors.get(upstream) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the gauges a scrape samples now.
    pub fn render(
        &self,
        holds_waiting: usize,
        holds_pending: usize,
        subscribers: usize,
        shadow: &[(Outcome, Outcome, u64)],
    ) -> String {
        let mut out = String::new();
        if !shadow.is_empty() {
            let _ = writeln!(
                out,
                "# HELP toolgate_shadow_decisions_total The shadow policy's decisions, by the enforced outcome and its own."
            );
            let _ = writeln!(out, "# TYPE toolgate_shadow_decisions_total counter");
            for (enforced, theirs, n) in shadow {
                let _ = writeln!(
                    out,
                    "toolgate_shadow_decisions_total{{enforced=\"{}\",shadow=\"{}\"}} {n}",
                    enforced.as_str(),
                    theirs.as_str()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP toolgate_decisions_total Decisions on tools/call, by outcome."
        );
        let _ = writeln!(out, "# TYPE toolgate_decisions_total counter");
        for outcome in [Outcome::Allow, Outcome::Deny, Outcome::Hold] {
            let _ = writeln!(
                out,
                "toolgate_decisions_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                self.decisions(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP toolgate_decision_seconds Time to decide one call."
        );
        let _ = writeln!(out, "# TYPE toolgate_decision_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "toolgate_decision_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "toolgate_decision_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "toolgate_decision_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "toolgate_decision_seconds_count {count}");
        let _ = writeln!(out, "# HELP toolgate_holds Unresolved holds, by phase.");
        let _ = writeln!(out, "# TYPE toolgate_holds gauge");
        let _ = writeln!(out, "toolgate_holds{{phase=\"waiting\"}} {holds_waiting}");
        let _ = writeln!(out, "toolgate_holds{{phase=\"pending\"}} {holds_pending}");
        let _ = writeln!(
            out,
            "# HELP toolgate_event_subscribers Open event-stream subscribers."
        );
        let _ = writeln!(out, "# TYPE toolgate_event_subscribers gauge");
        let _ = writeln!(out, "toolgate_event_subscribers {subscribers}");
        let _ = writeln!(
            out,
            "# HELP toolgate_upstream_errors_total Requests that could not reach their upstream."
        );
        let _ = writeln!(out, "# TYPE toolgate_upstream_errors_total counter");
        for (name, c) in &self.upstream_errors {
            let _ = writeln!(
                out,
                "toolgate_upstream_errors_total{{upstream=\"{name}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP toolgate_store_errors_total Calls denied because their decision could not be stored."
        );
        let _ = writeln!(out, "# TYPE toolgate_store_errors_total counter");
        let _ = writeln!(
            out,
            "toolgate_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );
        out
    }
}
