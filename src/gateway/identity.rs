//! Bearer token → identity: long-lived API tokens from the config, or OAuth JWTs.
//!
//! Tokens are never stored or compared in the clear: the config holds their SHA-256,
//! and the token a client presents is hashed before lookup. Only the identity, never
//! the token, travels further into the gateway (and nothing of it goes upstream).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{IdentityKind, IdentityRef};
use crate::config::{Config, OauthConfig};

/// Who is calling, as decided from their bearer token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub name: String,
    pub groups: Vec<String>,
    /// API tokens only: when the token was issued, when it expires, and the operator
    /// who owns it (an owner may not approve their own token's calls).
    pub issued: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub owner: Option<String>,
}

impl Identity {
    /// A configured API token's identity.
    pub fn of_token(id: &crate::config::IdentityConfig) -> Self {
        Identity {
            kind: IdentityKind::ApiToken,
            name: id.name.clone(),
            groups: id.groups.clone(),
            issued: Some(id.issued),
            expires: id.expires,
            owner: id.owner.clone(),
        }
    }

    /// `kind:name`, as operator `principals` name identities, in the matching form of
    /// [`normalize_principal`].
    pub fn principal(&self) -> String {
        format!("{}:{}", self.kind.as_str(), normalize_name(&self.name))
    }

    pub fn to_wire(&self) -> IdentityRef {
        IdentityRef {
            kind: self.kind,
            name: self.name.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// The form in which an identity's name is matched. A name that looks like an e-mail
/// address (it has an `@`) has its ASCII letters lowercased: identity providers differ in
/// the case they put in `sub` or `email`, and mail domains ignore case, so
/// `Alice@corp.example` and `alice@corp.example` are one person. Any other name (an opaque
/// subject id, a token name) is matched exactly, as opaque ids can differ by case alone.
pub fn normalize_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('@') && name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// A configured principal (`kind:name`) in the form [`Identity::principal`] produces: the
/// kind lowercased, the name as [`normalize_name`] has it. `None` when the kind is not
/// `oauth` or `api_token`.
pub fn normalize_principal(principal: &str) -> Option<String> {
    let (kind, name) = principal.split_once(':')?;
    let kind = kind.to_ascii_lowercase();
    [IdentityKind::Oauth, IdentityKind::ApiToken]
        .iter()
        .any(|k| k.as_str() == kind)
        .then(|| format!("{kind}:{}", normalize_name(name)))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the Authorization header must be \"Bearer <token>\"")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("token {name:?} expired at {expired}")]
    Expired { name: String, expired: String },
    #[error("invalid OAuth token: {0}")]
    InvalidJwt(String),
}

/// The lowercase hex SHA-256 of a token, as the config stores it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub struct Authenticator {
    /// Keyed by the token's SHA-256. A hash-map probe leaks nothing useful about a
    /// secret an attacker cannot reverse, so no constant-time scan is needed here.
    tokens: HashMap<[u8; 32], Arc<Identity>>,
    oauth: Option<OauthVerifier>,
}

impl Authenticator {
    pub async fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mut tokens = HashMap::new();
        for id in &config.identities {
            let mut key = [0u8; 32];
            hex::decode_to_slice(&id.token_sha256, &mut key)?;
            tokens.insert(key, Arc::new(Identity::of_token(id)));
        }
        let oauth = match &config.oauth {
            Some(o) => Some(OauthVerifier::new(o).await?),
            None => None,
        };
        Ok(Self { tokens, oauth })
    }

    /// Identifies the caller from an `Authorization` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Identity>, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(identity) = self.tokens.get(&digest) {
            if let Some(expires) = identity.expires
                && expires <= now
            {
                return Err(AuthError::Expired {
                    name: identity.name.clone(),
                    expired: expires.to_rfc3339(),
                });
            }
            return Ok(identity.clone());
        }
        match &self.oauth {
            Some(oauth) if looks_like_jwt(token) => oauth.verify(token).map(Arc::new),
            _ => Err(AuthError::Unknown),
        }
    }

    /// Keeps a remote JWKS fresh, so an issuer's key rotation needs no restart.
    pub fn spawn_jwks_refresh(self: &Arc<Self>) {
        let Some(url) = self.oauth.as_ref().and_then(|o| o.jwks_url.clone()) else {
            return;
        };
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(JWKS_REFRESH).await;
                let Some(this) = this.upgrade() else { return };
                let Some(oauth) = this.oauth.as_ref() else {
                    return;
                };
                match fetch_jwks(&url).await {
                    Ok(set) => *oauth.keys.write().expect("jwks lock") = Arc::new(set),
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "JWKS refresh failed; keeping the previous keys")
                    }
                }
            }
        });
    }
}

const JWKS_REFRESH: Duration = Duration::from_secs(600);

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

struct OauthVerifier {
    issuer: String,
    audience: String,
    subject_claim: String,
    groups_claim: String,
    jwks_url: Option<String>,
    keys: RwLock<Arc<JwkSet>>,
}

impl OauthVerifier {
    async fn new(config: &OauthConfig) -> anyhow::Result<Self> {
        let keys = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("[oauth] cannot read jwks_file {}: {e}", path.display())
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("[oauth] jwks_file {} is not a JWK set: {e}", path.display())
                })?
            }
            (None, Some(url)) => fetch_jwks(url)
                .await
                .map_err(|e| anyhow::anyhow!("[oauth] cannot load jwks_url {url}: {e}"))?,
            (None, None) => anyhow::bail!("[oauth] needs jwks_file or jwks_url"),
        };
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            subject_claim: config.subject_claim.clone(),
            groups_claim: config.groups_claim.clone(),
            jwks_url: config.jwks_url.clone(),
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let invalid = |m: String| AuthError::InvalidJwt(m);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid("symmetric algorithms are not accepted".into()));
        }
        let keys = self.keys.read().expect("jwks lock").clone();
        let jwk = match &header.kid {
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| invalid("no key in the JWKS matches the token's kid".into()))?;
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(invalid("symmetric keys are not accepted".into()));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // An `nbf` is optional, but when present it binds like `exp`, with the same leeway.
        validation.validate_nbf = true;
        validation.leeway = JWT_LEEWAY_SECS;
        let claims =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
                .map_err(|e| invalid(describe_jwt_error(&e)))?
                .claims;
        let name = claims
            .get(&self.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("claim {:?} is missing", self.subject_claim)))?;
        let groups = match claims.get(&self.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            Some(Value::String(g)) => g.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            kind: IdentityKind::Oauth,
            // One person is one identity, for the policy, holds and self-approval alike.
            name: normalize_name(name).into_owned(),
            groups,
            issued: None,
            expires: None,
            owner: None,
        })
    }
}

/// Clock skew tolerated between the issuer and the gateway, for `exp` and `nbf` alike.
const JWT_LEEWAY_SECS: u64 = 30;

/// jsonwebtoken names its errors tersely (`ImmatureSignature`); the ones a client can fix
/// by waiting or re-authenticating get a plain explanation after the name.
fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ImmatureSignature => format!(
            "{e}: the token is not valid yet (its nbf is more than {JWT_LEEWAY_SECS} s in the future)"
        ),
        ErrorKind::ExpiredSignature => {
            format!("{e}: the token expired (its exp is more than {JWT_LEEWAY_SECS} s in the past)")
        }
        _ => e.to_string(),
    }
}

async fn fetch_jwks(url: &str) -> anyhow::Result<JwkSet> {
    let client = crate::http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = client.get(url).send().await?.error_for_status()?;
    let bytes = resp.bytes().await?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_lowercase_hex_sha256() {
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_token_past_its_expiry_is_refused_before_any_policy_runs() {
        let expires = "2026-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut key = [0u8; 32];
        hex::decode_to_slice(token_sha256("tg_old"), &mut key).unwrap();
        let identity = Identity {
            kind: IdentityKind::ApiToken,
            name: "old-support".into(),
            groups: vec![],
            issued: Some("2025-01-01T00:00:00Z".parse().unwrap()),
            expires: Some(expires),
            owner: None,
        };
        let auth = Authenticator {
            tokens: HashMap::from([(key, Arc::new(identity))]),
            oauth: None,
        };
        let before = expires - chrono::Duration::seconds(1);
        assert_eq!(
            auth.authenticate(Some(b"Bearer tg_old"), before)
                .unwrap()
                .name,
            "old-support"
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer tg_old"), expires),
            Err(AuthError::Expired {
                name: "old-support".into(),
                expired: expires.to_rfc3339()
            })
        );
    }

    #[test]
    fn e_mail_like_names_and_kinds_match_whatever_their_case() {
        assert_eq!(normalize_name("Alice@Corp.Example"), "alice@corp.example");
        // An opaque subject id keeps its case: "AbC" and "abc" may be two users.
        assert_eq!(normalize_name("00uAbC"), "00uAbC");
        assert_eq!(
            normalize_principal("OAuth:Alice@corp.example").as_deref(),
            Some("oauth:alice@corp.example")
        );
        assert_eq!(
            normalize_principal("API_TOKEN:Nightly-CI").as_deref(),
            Some("api_token:Nightly-CI")
        );
        assert_eq!(normalize_principal("user:alice"), None);
        assert_eq!(normalize_principal("alice"), None);
        let alice = Identity {
            kind: IdentityKind::Oauth,
            name: "Alice@corp.example".into(),
            groups: vec![],
            issued: None,
            expires: None,
            owner: None,
        };
        assert_eq!(alice.principal(), "oauth:alice@corp.example");
    }

    #[test]
    fn malformed_headers_are_told_apart_from_unknown_tokens() {
        let auth = Authenticator {
            tokens: HashMap::new(),
            oauth: None,
        };
        let now = Utc::now();
        assert_eq!(auth.authenticate(None, now), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Basic abc"), now),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer "), now),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer abc"), now),
            Err(AuthError::Unknown)
        );
    }
}
