//! The wire contract shared by the gateway and its clients (the console among them).
//! Nothing else is shared between the two halves.

use serde::{Deserialize, Serialize};

/// A tool's risk class. Operators set it; the policy decides from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Read,
    Write,
    Destructive,
    Unclassified,
}

impl Risk {
    pub const ALL: [Risk; 4] = [
        Risk::Read,
        Risk::Write,
        Risk::Destructive,
        Risk::Unclassified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
            Risk::Unclassified => "unclassified",
        }
    }

    pub fn parse(s: &str) -> Option<Risk> {
        Risk::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    Oauth,
    ApiToken,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Oauth => "oauth",
            IdentityKind::ApiToken => "api_token",
        }
    }
}

/// The identity on whose behalf an agent calls a tool, as events and APIs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRef {
    pub kind: IdentityKind,
    pub name: String,
    pub groups: Vec<String>,
}
