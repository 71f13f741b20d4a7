//! The deployment secret, and every key the gateway derives from it.
//!
//! One 32-byte secret, kept outside the database, is all a deployment distributes: every
//! replica reads the same file, and each purpose gets its own key through HKDF-SHA-256
//! with a purpose label, so a key for one job can never be replayed for another. Someone
//! who reads the database but not this file cannot test guesses of a redacted value
//! against a stored call hash, because the hash is an HMAC under a key they lack.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The file made beside the store when `[gateway] key_file` is not set.
pub const DEFAULT_KEY_FILE: &str = "toolgate.key";
/// Labels for derived keys. Changing one changes every value keyed with it.
const PURPOSE_CALL_HASH: &[u8] = b"toolgate/v1/identical-call";
const PURPOSE_REQUEST_STATE: &[u8] = b"toolgate/v1/request-state";
const PURPOSE_AUDIT: &[u8] = b"toolgate/v1/audit-checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the deployment key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the deployment key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the deployment key {path} is not 64 hexadecimal characters (a 32-byte key); make one with `toolgate keygen -o FILE`"
    )]
    Malformed { path: PathBuf },
    #[error(
        "the deployment key {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

/// The deployment secret. Its bytes never leave this module.
pub struct DeploymentKey([u8; 32]);

impl std::fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentKey(..)")
    }
}

impl DeploymentKey {
    /// A key from known bytes: for tests and benchmarks that need a fixed key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Self(bytes)
    }

    /// Reads a key file: 64 hex digits, surrounding whitespace allowed, readable by its
    /// owner only.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        check_private(path)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| KeyError::Malformed {
            path: path.to_owned(),
        })?;
        Ok(Self(bytes))
    }

    /// Writes a new key to a file that must not exist yet, readable by its owner only.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let text = format!("{}\n", hex::encode(self.0));
        crate::private_file::write_new(path, text.as_bytes()).map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// The key a gateway runs with: `key_file` when set (it must exist), or else
    /// `data_dir/toolgate.key`, made on first start.
    pub fn load_or_create(key_file: Option<&Path>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(path) = key_file {
            return Self::read(path);
        }
        let path = data_dir.join(DEFAULT_KEY_FILE);
        if path.exists() {
            return Self::read(&path);
        }
        let key = Self::generate();
        match key.write_new(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "deployment key created; replicas of this gateway need the same file ([gateway] key_file)");
                Ok(key)
            }
            // Another process made it first: use theirs.
            Err(KeyError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Self::read(&path)
            }
            Err(e) => Err(e),
        }
    }

    fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, &self.0)
            .expand(purpose, &mut out)
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        out
    }

    /// The key of the identical-call hash.
    pub fn call_mac(&self) -> CallMac {
        CallMac(self.derive(PURPOSE_CALL_HASH))
    }

    /// The Ed25519 key that signs the audit chain's checkpoints.
    pub fn audit_signer(&self) -> super::audit::AuditSigner {
        super::audit::AuditSigner::from_seed(self.derive(PURPOSE_AUDIT))
    }

    /// The key that seals a held call's `requestState` (2026-07-28 clients), so that any
    /// replica of the deployment can verify a state another made.
    pub fn state_seal(&self) -> super::request_state::StateSeal {
        super::request_state::StateSeal::new(self.derive(PURPOSE_REQUEST_STATE))
    }
}

fn check_private(path: &Path) -> Result<(), KeyError> {
    match crate::private_file::exposed_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        }),
        Err(source) => Err(KeyError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// HMAC-SHA-256 for identical-call hashes.
#[derive(Clone)]
pub struct CallMac([u8; 32]);

impl CallMac {
    /// The hex HMAC of `bytes`.
    pub fn hex(&self, bytes: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let first = DeploymentKey::load_or_create(None, dir.path()).unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = DeploymentKey::load_or_create(None, dir.path()).unwrap();
        assert_eq!(first.call_mac().hex(b"x"), again.call_mac().hex(b"x"));
        assert_ne!(
            first.call_mac().hex(b"x"),
            DeploymentKey::generate().call_mac().hex(b"x")
        );
    }

    #[test]
    fn a_configured_key_file_must_exist_be_private_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let err = DeploymentKey::load_or_create(Some(&path), dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }), "{err}");
        DeploymentKey::generate().write_new(&path).unwrap();
        assert!(DeploymentKey::read(&path).is_ok());
        let err = DeploymentKey::generate().write_new(&path).unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = DeploymentKey::read(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "not hex\n").unwrap();
        let err = DeploymentKey::read(&path).unwrap_err();
        assert!(err.to_string().contains("64 hexadecimal"), "{err}");
    }

    #[test]
    fn derived_keys_differ_from_the_secret_and_by_purpose() {
        let key = DeploymentKey([7u8; 32]);
        let call = key.derive(PURPOSE_CALL_HASH);
        assert_ne!(call, [7u8; 32]);
        assert_ne!(call, key.derive(b"toolgate/v1/other"));
    }
}
