//! `toolgate audit`: the audit chain checked, exported and its signing key shown, with no
//! gateway running.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Config;
use crate::gateway::audit::{ChainCheck, ChainRow, Checkpoint, Verdict};
use crate::gateway::keys::DeploymentKey;
use crate::gateway::store::{AuditReader, Location};

/// How many events are read at a time.
const PAGE: u32 = 1000;

/// Exit codes of `verify`.
pub const INTACT: i32 = 0;
pub const TAMPERED: i32 = 1;
pub const UNREADABLE: i32 = 2;

/// Where the log is read from.
#[derive(Debug, Clone)]
pub enum Source {
    DataDir(PathBuf),
    Config(PathBuf),
    Export(PathBuf),
}

/// The first line of an export: what it holds.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    toolgate_audit_export: u32,
    /// Events after this seq (0: from the first).
    since: u64,
}

/// One event of an export: its JSON exactly as stored, and its place in the chain.
#[derive(Debug, Serialize, Deserialize)]
struct Exported {
    seq: u64,
    prev_hash: Option<String>,
    hash: Option<String>,
    event: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointLine {
    checkpoint: Checkpoint,
}

/// The signed checkpoint an export from the middle of the log starts after.
#[derive(Debug, Serialize, Deserialize)]
struct BaseLine {
    base: Checkpoint,
}

/// The checkpoints of an export (or an anchor file): its base, and the others.
fn checkpoint_lines(file: &Path) -> anyhow::Result<(Option<Checkpoint>, Vec<Checkpoint>)> {
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let (mut base, mut all) = (None, Vec::new());
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.starts_with("{\"checkpoint\"") {
            let c: CheckpointLine = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), n + 1))?;
            all.push(c.checkpoint);
        } else if line.starts_with("{\"base\"") {
            let b: BaseLine = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), n + 1))?;
            base = Some(b.base);
        }
    }
    Ok((base, all))
}

/// The log's checkpoints with the anchor's (kept elsewhere, from an earlier export):
/// an anchor the log lost is put back, so a log whose checkpoints were deleted is still
/// held to them; one the log has otherwise is a tampered checkpoint.
fn with_anchors(
    mut own: Vec<Checkpoint>,
    anchors: Vec<Checkpoint>,
) -> Result<Vec<Checkpoint>, Verdict> {
    for anchor in anchors {
        match own.iter().find(|c| c.seq == anchor.seq) {
            Some(c) if *c == anchor => {}
            Some(_) => {
                return Err(Verdict::Tampered {
                    seq: anchor.seq,
                    why: format!(
                        "the checkpoint at seq {} is not the one the anchor holds",
                        anchor.seq
                    ),
                });
            }
            None => own.push(anchor),
        }
    }
    own.sort_by_key(|c| c.seq);
    Ok(own)
}

/// The store a `--data-dir` or `--config` names, and the deployment key beside it when
/// there is one (its public key is what checkpoints are checked against by default).
fn store_of(source: &Source) -> anyhow::Result<(Location, Option<DeploymentKey>)> {
    let (location, key_file) = match source {
        Source::DataDir(dir) => (
            Location::Sqlite(dir.clone()),
            dir.join(crate::gateway::keys::DEFAULT_KEY_FILE),
        ),
        Source::Config(file) => {
            let config = Config::load(file)?;
            let key_file = config.gateway.key_file.clone().unwrap_or_else(|| {
                config
                    .data_dir()
                    .join(crate::gateway::keys::DEFAULT_KEY_FILE)
            });
            (
                config.store_location().map_err(anyhow::Error::msg)?,
                key_file,
            )
        }
        Source::Export(_) => anyhow::bail!("an export has no store"),
    };
    let key = key_file
        .is_file()
        .then(|| DeploymentKey::read(&key_file))
        .transpose()?;
    Ok((location, key))
}

/// `toolgate audit pubkey`: the hex of the key that signs checkpoints.
pub fn pubkey(
    config: Option<&Path>,
    data_dir: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<String> {
    let key = match (key_file, config, data_dir) {
        (Some(file), _, _) => DeploymentKey::read(file)?,
        (None, Some(config), _) => match store_of(&Source::Config(config.to_owned()))?.1 {
            Some(key) => key,
            None => anyhow::bail!(
                "the config names no deployment key that exists (key_file, or toolgate.key in its data_dir)"
            ),
        },
        (None, None, Some(dir)) => {
            DeploymentKey::read(&dir.join(crate::gateway::keys::DEFAULT_KEY_FILE))?
        }
        (None, None, None) => anyhow::bail!("give --config, --data-dir or --key-file"),
    };
    Ok(key.audit_signer().public_key())
}

/// `toolgate audit verify`: the verdict, and the exit code to end with. `pubkeys`: the
/// keys checkpoints may be signed with (several across a key rotation); `anchors`:
/// exports kept elsewhere whose checkpoints the log must still hold.
pub async fn verify(source: &Source, pubkeys: &[String], anchors: &[PathBuf]) -> (String, i32) {
    match check(source, pubkeys, anchors).await {
        Ok((verdict, key_note)) => match verdict {
            Verdict::Intact {
                last_seq,
                signed_up_to,
                chained_from,
                checkpoints,
            } => {
                let chained = match chained_from {
                    Some(1) => "every event is chained".to_owned(),
                    Some(seq) => format!(
                        "events before seq {seq} predate the chain; from it on every event is chained"
                    ),
                    None if last_seq == 0 => "the log is empty".to_owned(),
                    None => "no event is chained yet (every one predates the chain)".to_owned(),
                };
                let signed = match signed_up_to {
                    Some(seq) => format!(
                        "signed up to seq {seq} ({checkpoints} checkpoints{key_note}); events after it are chained but not signed yet"
                    ),
                    None => "no checkpoint signs it yet".to_owned(),
                };
                (
                    format!("intact: events up to seq {last_seq}; {chained}; {signed}"),
                    INTACT,
                )
            }
            Verdict::Tampered { seq, why } => (
                format!("tampered: the first bad seq is {seq}: {why}"),
                TAMPERED,
            ),
        },
        Err(e) => (format!("cannot read the audit log: {e:#}"), UNREADABLE),
    }
}

/// The verdict, and a note on which key the checkpoints were checked against.
async fn check(
    source: &Source,
    pubkeys: &[String],
    anchor_files: &[PathBuf],
) -> anyhow::Result<(Verdict, String)> {
    let mut anchors = Vec::new();
    for file in anchor_files {
        let (base, all) = checkpoint_lines(file)?;
        anchors.extend(base.into_iter().chain(all));
    }
    if let Source::Export(file) = source {
        return check_export(file, pubkeys, anchors);
    }
    let (location, key) = store_of(source)?;
    let beside = key.map(|k| k.audit_signer().public_key());
    let (keys, note) = keys_to_use(pubkeys, beside.as_deref());
    let reader = AuditReader::open(&location).await?;
    let checkpoints = match with_anchors(reader.checkpoints().await?, anchors) {
        Ok(c) => c,
        Err(v) => return Ok((v, note)),
    };
    let mut chain = match ChainCheck::new(&checkpoints, &keys, None) {
        Ok(c) => c,
        Err(v) => return Ok((v, note)),
    };
    let mut after = 0;
    loop {
        let rows = reader.chain_rows(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in rows {
            if let Err(v) = chain.row(row) {
                return Ok((v, note));
            }
        }
    }
    Ok((chain.finish(), note))
}

/// Which keys checkpoints are checked against: the ones given, else the deployment key
/// beside the store, else each checkpoint's own (said in the verdict).
fn keys_to_use(given: &[String], beside: Option<&str>) -> (Vec<String>, String) {
    match (given, beside) {
        ([], Some(k)) => (
            vec![k.to_owned()],
            format!(", by the deployment key beside the store, {k}; pin it with --pubkey"),
        ),
        ([], None) => (
            Vec::new(),
            ", each by the key it names; pass --pubkey to check them against yours".to_owned(),
        ),
        (keys, _) => (keys.to_vec(), format!(", by key {}", keys.join(" or "))),
    }
}

fn check_export(
    file: &Path,
    pubkeys: &[String],
    anchors: Vec<Checkpoint>,
) -> anyhow::Result<(Verdict, String)> {
    let (keys, note) = keys_to_use(pubkeys, None);
    // The checkpoints first (they come last in the file), then the events streamed.
    let (base, own) = checkpoint_lines(file)?;
    let checkpoints = match with_anchors(own, anchors) {
        Ok(c) => c,
        Err(v) => return Ok((v, note)),
    };
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let mut lines = reader.lines();
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line?)
            .map_err(|e| anyhow::anyhow!("line 1 is not an export's header: {e}"))?,
        None => anyhow::bail!("the file is empty"),
    };
    // An export from the middle starts on a signed checkpoint, or proves nothing.
    let base = match (header.since, base) {
        (0, _) => None,
        (since, Some(b)) if b.seq == since => Some(b),
        (since, _) => {
            return Ok((
                Verdict::Tampered {
                    seq: since + 1,
                    why: format!(
                        "the export starts after seq {since} without the signed checkpoint there"
                    ),
                },
                note,
            ));
        }
    };
    let mut chain = match ChainCheck::new(&checkpoints, &keys, base.as_ref()) {
        Ok(c) => c,
        Err(v) => return Ok((v, note)),
    };
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.starts_with("{\"checkpoint\"") || line.starts_with("{\"base\"") {
            continue;
        }
        let e: Exported =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 2))?;
        let row = ChainRow {
            seq: e.seq,
            body: e.event.get().to_owned(),
            prev_hash: e.prev_hash,
            hash: e.hash,
        };
        if let Err(v) = chain.row(row) {
            return Ok((v, note));
        }
    }
    Ok((chain.finish(), note))
}

/// `toolgate audit export`: events after `since` (up to `until`) as JSON lines, then the
/// checkpoints that fall among them. How many events were written.
pub async fn export(
    source: &Source,
    since: u64,
    until: Option<u64>,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let (location, _) = store_of(source)?;
    let reader = AuditReader::open(&location).await?;
    // The checkpoints first, so that events written meanwhile do not outrun them.
    let checkpoints = reader.checkpoints().await?;
    // From the middle: from the newest signed checkpoint at or before `since`, which the
    // export carries as its base, so that what follows can be checked on its own.
    let base = checkpoints
        .iter()
        .filter(|c| c.seq <= since)
        .max_by_key(|c| c.seq);
    let since = if since == 0 {
        0
    } else {
        base.map_or(0, |b| b.seq)
    };
    let header = Header {
        toolgate_audit_export: 1,
        since,
    };
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    if let Some(base) = base.filter(|_| since > 0) {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&BaseLine { base: base.clone() })?
        )?;
    }
    let mut after = since;
    let mut written = 0u64;
    let mut last = since;
    'pages: loop {
        let rows = reader.chain_rows(after, PAGE).await?;
        let Some(page_last) = rows.last() else { break };
        after = page_last.seq;
        for row in rows {
            if until.is_some_and(|u| row.seq > u) {
                break 'pages;
            }
            let line = Exported {
                seq: row.seq,
                prev_hash: row.prev_hash,
                hash: row.hash,
                event: RawValue::from_string(row.body)?,
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
            written += 1;
            last = row.seq;
        }
    }
    for checkpoint in checkpoints
        .into_iter()
        .filter(|c| c.seq > since && c.seq <= last)
    {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&CheckpointLine { checkpoint })?
        )?;
    }
    out.flush()?;
    Ok(written)
}
