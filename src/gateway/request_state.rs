//! The `requestState` of a held call's long wait (MCP 2026-07-28).
//!
//! When a 2026-07-28 client's wait on a hold ends before anyone decided, the gateway
//! answers `input_required` with only a `requestState`; the client's SDK retries the same
//! request carrying it, and the wait goes on. The state is the gateway's word that this
//! identity's this call is held as that hold, until a time: an HMAC-SHA-256 under a key
//! derived from the deployment secret seals the hold's `call_id`, the call's keyed hash
//! (identity, upstream, tool and exact canonical arguments), the identity and an expiry,
//! so any replica verifies a state another made, and nobody can forge or alter one.
//!
//! `tg1.<key id>.<payload>.<seal>`, both base64url without padding; the payload is JSON.
//! The payload is not secret (the client knows all of it); the seal is what counts. The
//! key id (from the key, not the key) tells this deployment's states from another
//! toolgate's in front of it or behind it, which are left alone as an upstream's are.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every state a toolgate makes starts so, then its deployment's key id; a state without
/// this deployment's is not its own (an upstream's, another toolgate's), and is passed on
/// untouched.
pub const PREFIX: &str = "tg1.";

/// How many retries the MCP SDKs make by default (`DEFAULT_INPUT_REQUIRED_MAX_ROUNDS` of
/// the Python and TypeScript SDKs): legs 0 to this. The last leg that ends undecided says
/// how to pick the approval up later, instead of a state the SDK would not send back.
pub const LAST_LEG: u32 = 10;

/// The longest a state stays good after it was made: the SDKs retry within a moment,
/// so a state much older than this is a replay.
pub const STATE_TTL: chrono::Duration = chrono::Duration::minutes(5);

/// What a state says, once its seal verifies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldState {
    /// The hold's call id.
    #[serde(rename = "c")]
    pub call_id: String,
    /// The keyed hash of the exact call (see `holds::CallKey`).
    #[serde(rename = "h")]
    pub call_hash: String,
    /// Whose call it is (`Identity::principal`).
    #[serde(rename = "p")]
    pub principal: String,
    /// Until when the state is good, in Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// The leg the state starts (the first wait is leg 0).
    #[serde(rename = "n", default)]
    pub leg: u32,
}

/// Why a state was refused. The client hears `-32602` with the reason; nothing runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the requestState is not one toolgate made (malformed)")]
    Malformed,
    #[error(
        "the requestState's seal does not verify: it was altered, or made by another deployment"
    )]
    Forged,
    #[error("the requestState expired at {0}; make the call again")]
    Expired(String),
    #[error("the requestState belongs to another identity")]
    OtherIdentity,
    #[error("the requestState belongs to another call (the tool or its arguments differ)")]
    OtherCall,
}

#[derive(Clone)]
pub struct StateSeal {
    key: [u8; 32],
    /// `tg1.<key id>.`: what this deployment's states start with.
    prefix: String,
}

impl std::fmt::Debug for StateSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateSeal(..)")
    }
}

impl StateSeal {
    pub fn new(key: [u8; 32]) -> Self {
        let id = Hmac::<Sha256>::new_from_slice(&key)
            .expect("HMAC takes any key")
            .chain_update(b"toolgate request-state key id")
            .finalize()
            .into_bytes();
        Self {
            key,
            prefix: format!("{PREFIX}{}.", hex::encode(&id[..4])),
        }
    }

    fn mac(&self, signed: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(signed);
        mac
    }

    /// The `requestState` a request carries, when this deployment made it (by its
    /// prefix: whether it is genuine, `open` says).
    pub fn ours<'b>(&self, body: &'b serde_json::Value) -> Option<&'b str> {
        body.pointer("/params/requestState")
            .and_then(serde_json::Value::as_str)
            .filter(|s| s.starts_with(&self.prefix))
    }

    /// A state for `held`.
    pub fn seal(&self, held: &HeldState) -> String {
        let payload = serde_json::to_vec(held).expect("a state serializes");
        let signed = format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(payload));
        let seal = self.mac(signed.as_bytes()).finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(seal))
    }

    /// What a state says, if this deployment sealed it and it has not expired.
    pub fn open(&self, state: &str, now: DateTime<Utc>) -> Result<HeldState, StateError> {
        let (signed, seal) = state.rsplit_once('.').ok_or(StateError::Malformed)?;
        let payload = signed
            .strip_prefix(&self.prefix)
            .ok_or(StateError::Malformed)?;
        let seal = URL_SAFE_NO_PAD
            .decode(seal)
            .map_err(|_| StateError::Malformed)?;
        // Constant time: a guess learns nothing from how long the refusal took.
        self.mac(signed.as_bytes())
            .verify_slice(&seal)
            .map_err(|_| StateError::Forged)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| StateError::Malformed)?;
        let held: HeldState =
            serde_json::from_slice(&payload).map_err(|_| StateError::Malformed)?;
        if held.expires <= now.timestamp() {
            let at = DateTime::from_timestamp(held.expires, 0)
                .map(crate::time::rfc3339)
                .unwrap_or_default();
            return Err(StateError::Expired(at));
        }
        Ok(held)
    }
}

/// The request's bytes without `params.requestState`, the rest of it exactly as sent:
/// what goes upstream when the held call runs (the upstream never made that state).
pub fn without_state(bytes: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    use serde_json::value::RawValue;
    let mut message: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(bytes)?;
    if let Some(params) = message.get("params") {
        let mut params: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(params.get())?;
        params.remove("requestState");
        message.insert("params".into(), serde_json::value::to_raw_value(&params)?);
    }
    serde_json::to_vec(&message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> HeldState {
        HeldState {
            call_id: "01900000-0000-7000-8000-000000000001".into(),
            call_hash: "ab".repeat(32),
            principal: "api_token:ci-bot".into(),
            expires: Utc::now().timestamp() + 60,
            leg: 1,
        }
    }

    #[test]
    fn a_state_opens_only_unaltered_unexpired_and_under_the_same_key() {
        let seal = StateSeal::new([1; 32]);
        let state = seal.seal(&held());
        assert!(state.starts_with(PREFIX));
        assert_eq!(seal.open(&state, Utc::now()), Ok(held()));
        let body = |s: &str| serde_json::json!({"params": {"requestState": s}});
        assert_eq!(seal.ours(&body(&state)), Some(state.as_str()));
        // Another deployment's (another toolgate's, in front or behind): not ours at all,
        // and it does not open here.
        let theirs = StateSeal::new([2; 32]);
        assert_eq!(theirs.ours(&body(&state)), None);
        assert_eq!(theirs.open(&state, Utc::now()), Err(StateError::Malformed));
        assert_eq!(seal.ours(&body("upstream-state")), None);
        // One character of the payload changed (another call id, say).
        let (signed, mac) = state.rsplit_once('.').unwrap();
        let mut bytes = signed.as_bytes().to_vec();
        let at = seal.prefix.len() + 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let altered = format!("{}.{mac}", String::from_utf8(bytes).unwrap());
        assert_eq!(seal.open(&altered, Utc::now()), Err(StateError::Forged));
        // A payload re-signed by nobody: the seal of another state.
        let mut other = held();
        other.principal = "api_token:intruder".into();
        let theirs = seal.seal(&other);
        let spliced = format!("{}.{}", theirs.rsplit_once('.').unwrap().0, mac);
        assert_eq!(seal.open(&spliced, Utc::now()), Err(StateError::Forged));
        assert_eq!(
            seal.open("tg1.nonsense", Utc::now()),
            Err(StateError::Malformed)
        );
        assert_eq!(seal.open("", Utc::now()), Err(StateError::Malformed));
        // Past its time.
        let later = Utc::now() + chrono::Duration::seconds(61);
        assert!(matches!(
            seal.open(&state, later),
            Err(StateError::Expired(_))
        ));
    }

    #[test]
    fn the_state_comes_off_and_the_rest_of_the_request_stays_as_sent() {
        let sent = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"n":1.50,"big":123456789012345678901234567890},"requestState":"tg1.x.y","_meta":{"k":"v"}}}"#;
        let out = String::from_utf8(without_state(sent).unwrap()).unwrap();
        assert!(!out.contains("requestState"), "{out}");
        // Numbers keep their exact text.
        assert!(
            out.contains(r#""arguments":{"n":1.50,"big":123456789012345678901234567890}"#),
            "{out}"
        );
        assert!(out.contains(r#""_meta":{"k":"v"}"#), "{out}");
        assert!(out.contains(r#""id":7"#), "{out}");
    }
}
