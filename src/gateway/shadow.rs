//! Shadow mode (live what-if): a candidate policy that decides every call beside the
//! enforced one and enforces nothing. Where the two disagree, the decision event says
//! what the shadow decided; every comparison is counted for the API and the metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::policy::PolicyEngine;
use crate::api::{Outcome, ShadowView, Transitions};

pub struct Shadow {
    pub engine: PolicyEngine,
    pub text: String,
    pub sha256: String,
    pub by: String,
    pub since: String,
    /// Comparisons by (enforced, shadow) outcome.
    compared: Mutex<BTreeMap<(Outcome, Outcome), u64>>,
}

impl Shadow {
    pub fn new(engine: PolicyEngine, text: String, sha256: String, by: String) -> Shadow {
        Shadow {
            engine,
            text,
            sha256,
            by,
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            compared: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn count(&self, enforced: Outcome, shadow: Outcome) {
        *self
            .compared
            .lock()
            .expect("shadow counts lock")
            .entry((enforced, shadow))
            .or_default() += 1;
    }

    /// The comparisons so far: `agree`, and `allow→hold` and the like.
    pub fn compared(&self) -> Transitions {
        let mut out = Transitions::new();
        for ((enforced, shadow), n) in self.compared.lock().expect("shadow counts lock").iter() {
            let key = if enforced == shadow {
                "agree".to_owned()
            } else {
                format!("{}→{}", enforced.as_str(), shadow.as_str())
            };
            *out.entry(key).or_default() += n;
        }
        out
    }

    /// Starts the comparisons over: the policy in force changed, so the old counts
    /// compared the shadow with a policy no longer in force.
    pub fn reset(&self) {
        self.compared.lock().expect("shadow counts lock").clear();
    }

    /// Each (enforced, shadow) pair with its count, for the metrics.
    pub fn pairs(&self) -> Vec<(Outcome, Outcome, u64)> {
        self.compared
            .lock()
            .expect("shadow counts lock")
            .iter()
            .map(|((e, s), n)| (*e, *s, *n))
            .collect()
    }

    pub fn view(&self) -> ShadowView {
        ShadowView {
            sha256: self.sha256.clone(),
            by: self.by.clone(),
            since: self.since.clone(),
            compared: self.compared(),
            text: self.text.clone(),
        }
    }
}
