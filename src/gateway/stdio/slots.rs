//! How many processes a stdio upstream runs, in all and for each identity.
//!
//! A place is taken before a child is started and given back when it ends, whoever ends
//! it: the place is a guard, so a request dropped half-way (its client went away during
//! a back-off or an `initialize`) gives its place back too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The places of one upstream.
pub struct Slots {
    max: usize,
    per_identity: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_principal: HashMap<String, usize>,
}

/// Why no place was free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_processes` are running.
    Upstream,
    /// This identity runs `max_processes_per_identity`.
    Identity,
}

/// One taken place, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    principal: String,
}

impl Slots {
    pub fn new(max: usize, per_identity: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_identity,
            counts: Mutex::default(),
        })
    }

    pub fn take(self: &Arc<Self>, principal: &str) -> Result<Slot, Full> {
        let mut counts = self.counts.lock().expect("slots");
        let mine = counts.by_principal.get(principal).copied().unwrap_or(0);
        if mine >= self.per_identity {
            return Err(Full::Identity);
        }
        if counts.total >= self.max {
            return Err(Full::Upstream);
        }
        counts.total += 1;
        *counts.by_principal.entry(principal.to_owned()).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            principal: principal.to_owned(),
        })
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.counts.lock().expect("slots").total
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn per_identity(&self) -> usize {
        self.per_identity
    }
}

impl Slot {
    pub fn principal(&self) -> &str {
        &self.principal
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().expect("slots");
        counts.total -= 1;
        if let Some(n) = counts.by_principal.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                counts.by_principal.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_identity_and_given_back_on_drop() {
        let slots = Slots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert_eq!(slots.take("a").err(), Some(Full::Identity));
        let _b1 = slots.take("b").unwrap();
        assert_eq!(slots.take("b").err(), Some(Full::Upstream));
        assert_eq!(slots.taken(), 3);
        drop(a1);
        assert_eq!(slots.taken(), 2);
        let _b2 = slots.take("b").unwrap();
        assert_eq!(slots.take("c").err(), Some(Full::Upstream));
    }
}
