//! Which identity each MCP session belongs to.
//!
//! An upstream knows its sessions only by id, and every client reaches it as the gateway,
//! so without this an identity that learned another's `Mcp-Session-Id` (from a log, say)
//! could read that session's stream or act inside it. A session belongs to the identity
//! whose `initialize` answer carried its id; any other identity is told it does not exist.
//!
//! A session id the gateway never saw created (it was created before a restart, or was
//! forgotten) is refused as well, rather than given to whoever uses it first: that could
//! be the wrong identity. The MCP spec tells a client that gets 404 for its session to
//! start a new one, so a restart costs each client one `initialize`.
//!
//! Memory is bounded: an idle session is forgotten after `session_idle_secs`, a session is
//! forgotten when its owner ends it (DELETE) or the upstream no longer knows it (404), and
//! at `max_sessions` the least recently used one makes room.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Sessions {
    max: usize,
    idle: Duration,
    /// Keyed by upstream name, then session id: ids are the upstream's own.
    owners: Mutex<HashMap<(String, String), Owner>>,
}

struct Owner {
    /// `Identity::principal()` of the creator.
    principal: String,
    last_used: Instant,
}

/// What binding an `initialize` answer's session id did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bound {
    /// The session is now this identity's.
    New,
    /// The upstream handed out an id that another identity holds; nobody gets it twice.
    Taken,
}

impl Sessions {
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            max,
            idle,
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `principal` created session `id` on `upstream`.
    pub fn bind(&self, upstream: &str, id: &str, principal: &str, now: Instant) -> Bound {
        let mut owners = self.owners.lock().expect("sessions lock");
        let key = (upstream.to_owned(), id.to_owned());
        if let Some(owner) = owners.get_mut(&key)
            && !self.expired(owner, now)
        {
            if owner.principal != principal {
                return Bound::Taken;
            }
            owner.last_used = now;
            return Bound::New;
        }
        if owners.len() >= self.max && !owners.contains_key(&key) {
            owners.retain(|_, o| !self.expired(o, now));
            if owners.len() >= self.max
                && let Some(oldest) = owners
                    .iter()
                    .min_by_key(|(_, o)| o.last_used)
                    .map(|(k, _)| k.clone())
            {
                owners.remove(&oldest);
            }
        }
        owners.insert(
            key,
            Owner {
                principal: principal.to_owned(),
                last_used: now,
            },
        );
        Bound::New
    }

    /// Whether `principal` may use session `id` on `upstream`: only its creator may, and
    /// only while the gateway remembers it.
    pub fn admits(&self, upstream: &str, id: &str, principal: &str, now: Instant) -> bool {
        let mut owners = self.owners.lock().expect("sessions lock");
        let key = (upstream.to_owned(), id.to_owned());
        match owners.get_mut(&key) {
            Some(owner) if self.expired(owner, now) => {
                owners.remove(&key);
                false
            }
            Some(owner) if owner.principal == principal => {
                owner.last_used = now;
                true
            }
            _ => false,
        }
    }

    /// Forgets a session that was ended or that its upstream no longer knows.
    pub fn forget(&self, upstream: &str, id: &str) {
        let mut owners = self.owners.lock().expect("sessions lock");
        owners.remove(&(upstream.to_owned(), id.to_owned()));
    }

    pub fn len(&self) -> usize {
        self.owners.lock().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expired(&self, owner: &Owner, now: Instant) -> bool {
        now.saturating_duration_since(owner.last_used) >= self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_session_admits_only_the_identity_that_created_it() {
        let sessions = Sessions::new(10, IDLE);
        let now = Instant::now();
        assert_eq!(sessions.bind("docs", "s1", "api_token:a", now), Bound::New);
        assert!(sessions.admits("docs", "s1", "api_token:a", now));
        assert!(!sessions.admits("docs", "s1", "api_token:b", now));
        // Ids are the upstream's own: the same id elsewhere is another session.
        assert!(!sessions.admits("wiki", "s1", "api_token:a", now));
        // Never seen created (say, before a restart): nobody's.
        assert!(!sessions.admits("docs", "s2", "api_token:a", now));
        assert_eq!(
            sessions.bind("docs", "s1", "api_token:b", now),
            Bound::Taken
        );
        assert!(sessions.admits("docs", "s1", "api_token:a", now));
    }

    #[test]
    fn ended_and_idle_sessions_are_forgotten() {
        let sessions = Sessions::new(10, IDLE);
        let start = Instant::now();
        sessions.bind("docs", "s1", "a", start);
        sessions.bind("docs", "s2", "a", start);
        sessions.forget("docs", "s1");
        assert!(!sessions.admits("docs", "s1", "a", start));
        // Use keeps a session alive; idleness ends it.
        assert!(sessions.admits("docs", "s2", "a", start + IDLE / 2));
        assert!(sessions.admits("docs", "s2", "a", start + IDLE));
        assert!(!sessions.admits("docs", "s2", "a", start + IDLE * 2 + IDLE / 2));
        assert!(sessions.is_empty());
        // An expired id may be handed out again, to anyone.
        assert_eq!(
            sessions.bind("docs", "s2", "b", start + IDLE * 3),
            Bound::New
        );
    }

    #[test]
    fn at_the_cap_the_least_recently_used_session_makes_room() {
        let sessions = Sessions::new(3, IDLE);
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        sessions.bind("docs", "s1", "a", at(0));
        sessions.bind("docs", "s2", "a", at(1));
        sessions.bind("docs", "s3", "a", at(2));
        assert!(sessions.admits("docs", "s1", "a", at(3)));
        sessions.bind("docs", "s4", "a", at(4));
        assert_eq!(sessions.len(), 3);
        assert!(
            !sessions.admits("docs", "s2", "a", at(5)),
            "s2 was idle longest"
        );
        for s in ["s1", "s3", "s4"] {
            assert!(sessions.admits("docs", s, "a", at(5)), "{s}");
        }
    }
}
