//! Timestamps as toolgate writes them everywhere: RFC 3339, UTC, milliseconds.

use chrono::{SecondsFormat, Utc};

pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

pub fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
