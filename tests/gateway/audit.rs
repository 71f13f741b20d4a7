//! The audit log's evidence: after real traffic, `toolgate audit verify` finds the hash
//! chain intact and every checkpoint signed; an edit, a deleted row, two swapped rows, a
//! tail cut after a signed checkpoint or a forged signature, each made with `sqlite3` on
//! a copy of the store, makes it exit 1 and name the first bad seq; an export verifies on
//! its own.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::decisions::call_tool;
use crate::support::*;

/// `toolgate audit ARGS`: exit code, stdout, stderr.
fn audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A copy of the data dir (database and key), with `sql` run on it by `sqlite3`.
fn tampered_copy(data: &Path, sql: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let out = Command::new("sqlite3")
        .arg(copy.path().join("toolgate.db"))
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    copy
}

#[tokio::test]
async fn the_chain_verifies_after_traffic_and_every_kind_of_tampering_names_its_first_seq() {
    let upstream = PyUpstream::start().await;
    let mut gw = start_gateway(&format!(
        "checkpoint_every_events = 5\n{}{}",
        upstream.config("trust_annotations = true"),
        crate::holds::operators()
    ))
    .await;
    prime_catalog(&gw).await;
    for n in 0..12 {
        let reply = call_tool(
            &gw,
            AGENT_TOKEN,
            "read_page",
            json!({"page_id": format!("A-{n}")}),
        )
        .await;
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let status = gw.control_get(crate::holds::VIEWER, "/api/v1/status").await;
    let key = status["audit_public_key"].as_str().unwrap().to_owned();
    // Stopped, as an auditor would find it (verify also reads a running store).
    let (exit, _) = gw.proc.terminate().await;
    assert!(exit.success());
    let data = gw.db_path().parent().unwrap().to_owned();
    let data_arg = data.to_str().unwrap();

    // The key beside the store is the one the gateway reported.
    let (code, printed, _) = audit(&["pubkey", "--data-dir", data_arg]);
    assert_eq!((code, printed.trim()), (0, key.as_str()));

    let (code, said, err) = audit(&["verify", "--data-dir", data_arg, "--pubkey", &key]);
    assert_eq!(code, 0, "{said}{err}");
    assert!(said.contains("intact"), "{said}");
    assert!(said.contains("every event is chained"), "{said}");
    let rows = query_rows(
        &gw.db_path(),
        "SELECT CAST(max(seq) AS TEXT) FROM checkpoints",
    )
    .await;
    let signed: u64 = rows[0][0].as_deref().unwrap().parse().unwrap();
    assert!(signed >= 10, "signed up to {signed}");
    assert!(
        said.contains(&format!("signed up to seq {signed}")),
        "{said}"
    );

    // An export verifies on its own, and holds every event with its hashes.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let (code, _, err) = audit(&[
        "export",
        "--data-dir",
        data_arg,
        "-o",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["toolgate_audit_export"], 1);
    assert!(lines[1]["hash"].is_string() && lines[1]["prev_hash"].is_string());
    assert!(lines.iter().any(|l| l["checkpoint"]["seq"] == signed));
    let (code, said, err) = audit(&[
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert_eq!(code, 0, "{said}{err}");
    // An export edited by hand is caught too.
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, text.replacen("A-2", "A-9", 1)).unwrap();
    let (code, _, err) = audit(&["verify", "--export", edited.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");

    let cases = [
        (
            "an edited event",
            "UPDATE events SET body = replace(body, 'A-3', 'A-7') WHERE body LIKE '%\"A-3\"%' AND kind = 'decision'",
            None,
        ),
        ("a deleted row", "DELETE FROM events WHERE seq = 6", Some(6)),
        (
            "two swapped rows",
            "UPDATE events SET body = CASE seq WHEN 4 THEN (SELECT body FROM events WHERE seq = 5) ELSE (SELECT body FROM events WHERE seq = 4) END WHERE seq IN (4, 5)",
            Some(4),
        ),
        (
            "a tail cut after a signed checkpoint",
            "DELETE FROM events WHERE seq >= (SELECT max(seq) FROM checkpoints)",
            None,
        ),
        (
            "a forged checkpoint signature",
            "UPDATE checkpoints SET signature = replace(signature, substr(signature, 1, 2), CASE substr(signature, 1, 2) WHEN 'aa' THEN 'bb' ELSE 'aa' END) WHERE seq = (SELECT max(seq) FROM checkpoints)",
            Some(signed),
        ),
    ];
    for (what, sql, at) in cases {
        let copy = tampered_copy(&data, sql);
        let (code, said, err) = audit(&[
            "verify",
            "--data-dir",
            copy.path().to_str().unwrap(),
            "--pubkey",
            &key,
        ]);
        assert_eq!(code, 1, "{what}: {said}{err}");
        assert!(
            err.contains("tampered: the first bad seq is "),
            "{what}: {err}"
        );
        if let Some(seq) = at {
            assert!(
                err.contains(&format!("the first bad seq is {seq}:")),
                "{what}: {err}"
            );
        }
    }
    // The edited event is named: the decision of A-3.
    let edited_seq = query_rows(
        &gw.db_path(),
        "SELECT CAST(seq AS TEXT) FROM events WHERE body LIKE '%\"A-3\"%' AND kind = 'decision'",
    )
    .await[0][0]
        .clone()
        .unwrap();
    let copy = tampered_copy(
        &data,
        "UPDATE events SET body = replace(body, 'A-3', 'A-7') WHERE body LIKE '%\"A-3\"%' AND kind = 'decision'",
    );
    let (_, _, err) = audit(&["verify", "--data-dir", copy.path().to_str().unwrap()]);
    assert!(
        err.contains(&format!("the first bad seq is {edited_seq}:")),
        "{err}"
    );
    // Every checkpoint deleted (after rewriting, say): with the key pinned, nothing signed
    // is left, which is no proof; with an earlier export as the anchor, its checkpoints
    // are held against the log.
    let copy = tampered_copy(&data, "DELETE FROM checkpoints");
    let dir_arg = copy.path().to_str().unwrap().to_owned();
    let (code, _, err) = audit(&["verify", "--data-dir", &dir_arg, "--pubkey", &key]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no checkpoint signed by the given key"),
        "{err}"
    );
    let rewritten = tampered_copy(
        &data,
        "DELETE FROM checkpoints; DELETE FROM events WHERE seq > 3",
    );
    let (code, _, err) = audit(&[
        "verify",
        "--data-dir",
        rewritten.path().to_str().unwrap(),
        "--pubkey",
        &key,
        "--anchor",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tail was dropped"), "{err}");
    // The untouched store holds to its earlier export.
    let (code, said, err) = audit(&[
        "verify",
        "--data-dir",
        data_arg,
        "--pubkey",
        &key,
        "--anchor",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{said}{err}");

    // An export from the middle starts on its signed base, and is checked from there; one
    // made up without that base proves nothing.
    let part = dir.path().join("part.jsonl");
    let (code, _, err) = audit(&[
        "export",
        "--data-dir",
        data_arg,
        "--since",
        "7",
        "-o",
        part.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&part).unwrap();
    assert!(
        text.lines().nth(1).unwrap().starts_with("{\"base\""),
        "{text}"
    );
    let (code, said, err) = audit(&[
        "verify",
        "--export",
        part.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert_eq!(code, 0, "{said}{err}");
    let forged = dir.path().join("forged.jsonl");
    let without_base: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("{\"base\""))
        .collect();
    std::fs::write(&forged, without_base.join("\n")).unwrap();
    let (code, _, err) = audit(&[
        "verify",
        "--export",
        forged.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert_eq!(code, 1, "{err}");

    // Another key than the deployment's: every checkpoint is refused.
    let other = "00".repeat(32);
    let (code, _, err) = audit(&["verify", "--data-dir", data_arg, "--pubkey", &other]);
    assert_eq!(code, 1, "{err}");
    // A store that is not there cannot be read.
    let (code, _, err) = audit(&["verify", "--data-dir", "/nonexistent/toolgate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the audit log"), "{err}");
}
