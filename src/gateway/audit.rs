//! Evidence that the audit log was not edited: the hash chain every event carries, and
//! checkpoints that sign where the chain stood.
//!
//! Each event's `hash` is SHA-256 over the previous event's hash and the event's JSON as
//! stored (`store::chain_hash`), so changing, dropping, inserting or reordering an event
//! breaks every hash after it. Anyone who can write the database can also recompute the
//! hashes; a checkpoint, signed with an Ed25519 key derived from the deployment secret
//! (kept outside the database), pins the chain up to its seq. `verify` checks both, with
//! no gateway running, from a store or from an export.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::store::{GENESIS_HASH, chain_hash};

/// Signs checkpoints; every replica sharing the deployment secret signs alike.
pub struct AuditSigner(SigningKey);

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner({})", self.public_key())
    }
}

impl AuditSigner {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public key, in hex: what `toolgate audit pubkey` prints and `verify` takes.
    pub fn public_key(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    pub fn checkpoint(&self, seq: u64, hash: &str, at: &str) -> Checkpoint {
        let signature = self.0.sign(&checkpoint_message(seq, hash, at));
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at: at.to_owned(),
            public_key: self.public_key(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// What a checkpoint's signature covers: where the chain stood, and when.
pub fn checkpoint_message(seq: u64, hash: &str, at: &str) -> Vec<u8> {
    format!("toolgate audit checkpoint v1\nseq {seq}\nhash {hash}\nat {at}\n").into_bytes()
}

/// A signed statement that the chain's event `seq` had hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub at: String,
    /// Hex of the Ed25519 public key that signed it.
    pub public_key: String,
    /// Hex of the signature of `checkpoint_message(seq, hash, at)`.
    pub signature: String,
}

impl Checkpoint {
    /// Whether `public_key` (hex) signed it.
    pub fn signed_by(&self, public_key: &str) -> bool {
        let Ok(key) = hex::decode(public_key) else {
            return false;
        };
        let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_bytes(&key) else {
            return false;
        };
        let Ok(signature) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&signature) else {
            return false;
        };
        key.verify(
            &checkpoint_message(self.seq, &self.hash, &self.at),
            &signature,
        )
        .is_ok()
    }
}

/// One stored event as the chain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    pub seq: u64,
    /// The event's JSON, exactly as stored.
    pub body: String,
    /// `None` for an event stored before the log was chained.
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event is in its place and chained, and every checkpoint signed and matching.
    Intact {
        /// The newest event read.
        last_seq: u64,
        /// The newest checkpoint: everything up to it is signed.
        signed_up_to: Option<u64>,
        /// The first chained event (events before it predate the chain).
        chained_from: Option<u64>,
        checkpoints: usize,
    },
    /// The first place where the log differs from what was written.
    Tampered { seq: u64, why: String },
}

/// Checks the chain and the checkpoints. `rows` in seq order; `public_key` (hex): the key
/// every checkpoint must be signed with, or `None` to take each checkpoint's own key
/// (which proves only that the one who wrote it had the key it names).
pub fn verify(
    rows: impl IntoIterator<Item = ChainRow>,
    checkpoints: &[Checkpoint],
    public_key: Option<&str>,
) -> Verdict {
    let keys: Vec<String> = public_key.map(str::to_owned).into_iter().collect();
    let mut check = match ChainCheck::new(checkpoints, &keys, None) {
        Ok(check) => check,
        Err(v) => return v,
    };
    for row in rows {
        if let Err(v) = check.row(row) {
            return v;
        }
    }
    check.finish()
}

/// The chain checked one row at a time, so that a log of any length is read in pages.
pub struct ChainCheck<'c> {
    checkpoints: &'c [Checkpoint],
    /// For a part of the log (an export from the middle): the signed checkpoint it
    /// starts after, whose hash its first event must chain on.
    base: Option<&'c Checkpoint>,
    /// The auditor named the keys: a chained log must be signed by one of them, or
    /// nothing shows it unedited (its checkpoints may have been deleted).
    require_signed: bool,
    expected_seq: Option<u64>,
    last_hash: Option<String>,
    chained_from: Option<u64>,
    wanted: std::collections::HashSet<u64>,
    hashes_at_checkpoints: std::collections::HashMap<u64, Option<String>>,
    last_seq: u64,
}

impl<'c> ChainCheck<'c> {
    /// Checks the checkpoints' signatures first: a bad one is found whatever the events
    /// say. `keys` (hex): the keys a checkpoint may be signed with (several across a
    /// rotation); none, each checkpoint's own.
    pub fn new(
        checkpoints: &'c [Checkpoint],
        keys: &[String],
        base: Option<&'c Checkpoint>,
    ) -> Result<Self, Verdict> {
        for c in checkpoints.iter().chain(base) {
            let key = match keys.iter().find(|k| k.eq_ignore_ascii_case(&c.public_key)) {
                Some(k) => k.as_str(),
                None if keys.is_empty() => c.public_key.as_str(),
                None => {
                    return Err(Verdict::Tampered {
                        seq: c.seq,
                        why: format!(
                            "the checkpoint at seq {} names another key ({})",
                            c.seq, c.public_key
                        ),
                    });
                }
            };
            if !c.signed_by(key) {
                return Err(Verdict::Tampered {
                    seq: c.seq,
                    why: format!(
                        "the checkpoint at seq {} has a signature that does not verify",
                        c.seq
                    ),
                });
            }
        }
        Ok(Self {
            checkpoints,
            base,
            require_signed: !keys.is_empty(),
            expected_seq: None,
            last_hash: None,
            chained_from: None,
            wanted: checkpoints.iter().map(|c| c.seq).collect(),
            hashes_at_checkpoints: Default::default(),
            last_seq: 0,
        })
    }

    /// The next row, in seq order.
    pub fn row(&mut self, row: ChainRow) -> Result<(), Verdict> {
        let tampered = |seq: u64, why: String| Verdict::Tampered { seq, why };
        let first = self.expected_seq.is_none();
        if let Some(expected) = self.expected_seq
            && row.seq != expected
        {
            let why = if row.seq > expected {
                format!("events {expected} to {} are missing (dropped)", row.seq - 1)
            } else {
                format!(
                    "seq {} comes after seq {} (inserted or reordered)",
                    row.seq,
                    expected - 1
                )
            };
            return Err(tampered(expected.min(row.seq), why));
        }
        let first_seq = self.base.map_or(1, |b| b.seq + 1);
        if first && row.seq != first_seq {
            return Err(tampered(
                first_seq,
                format!(
                    "the log starts at seq {} instead of {first_seq} (events before it dropped)",
                    row.seq
                ),
            ));
        }
        // The stored JSON must say the seq it is stored under: a row moved elsewhere.
        let says = serde_json::from_str::<serde_json::Value>(&row.body)
            .ok()
            .and_then(|v| v["seq"].as_u64());
        if says != Some(row.seq) {
            return Err(tampered(
                row.seq,
                format!("the event stored as seq {} reads as {says:?}", row.seq),
            ));
        }
        match (&row.prev_hash, &row.hash) {
            // Before the chain began: only ever before the first chained event.
            (None, None) if self.last_hash.is_none() => {}
            (Some(prev), Some(hash)) => {
                let expected_prev = match &self.last_hash {
                    Some(h) => h.as_str(),
                    // A part of the log starts on its signed base.
                    None => self.base.map_or(GENESIS_HASH, |b| b.hash.as_str()),
                };
                if prev != expected_prev {
                    let why = match self.last_hash {
                        Some(_) => {
                            "its prev_hash is not the hash of the event before it (an event before it was changed, dropped or inserted)"
                        }
                        None => {
                            "the chain does not start at the genesis hash (events before it were dropped)"
                        }
                    };
                    return Err(tampered(row.seq, why.into()));
                }
                if chain_hash(prev, &row.body) != *hash {
                    return Err(tampered(
                        row.seq,
                        "its content is not what its hash was made from (edited)".into(),
                    ));
                }
                self.chained_from.get_or_insert(row.seq);
                self.last_hash = Some(hash.clone());
            }
            _ => {
                return Err(tampered(
                    row.seq,
                    "the event has lost its place in the chain (no hash)".into(),
                ));
            }
        }
        if self.wanted.contains(&row.seq) {
            self.hashes_at_checkpoints.insert(row.seq, row.hash.clone());
        }
        self.last_seq = row.seq;
        self.expected_seq = Some(row.seq + 1);
        Ok(())
    }

    /// After the last row: every checkpoint must name an event read, as it was.
    pub fn finish(self) -> Verdict {
        let last_seq = self.last_seq;
        for c in self.checkpoints {
            match self.hashes_at_checkpoints.get(&c.seq) {
                Some(Some(hash)) if *hash == c.hash => {}
                Some(_) => {
                    return Verdict::Tampered {
                        seq: c.seq,
                        why: format!(
                            "the event at seq {} is not the one its signed checkpoint names",
                            c.seq
                        ),
                    };
                }
                None => {
                    return Verdict::Tampered {
                        seq: last_seq + 1,
                        why: format!(
                            "a signed checkpoint covers seq {}, but the log ends at {last_seq} (its tail was dropped)",
                            c.seq
                        ),
                    };
                }
            }
        }
        let signed_up_to = self
            .checkpoints
            .iter()
            .chain(self.base)
            .map(|c| c.seq)
            .max();
        if self.require_signed
            && signed_up_to.is_none()
            && let Some(from) = self.chained_from
        {
            return Verdict::Tampered {
                seq: from,
                why: "no checkpoint signed by the given key is left: nothing shows the log was not rewritten (were its checkpoints deleted?)".into(),
            };
        }
        Verdict::Intact {
            last_seq,
            signed_up_to,
            chained_from: self.chained_from,
            checkpoints: self.checkpoints.len() + usize::from(self.base.is_some()),
        }
    }
}

#[cfg(test)]
mod tests;
