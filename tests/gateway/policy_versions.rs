//! Policy versions: every stored version listed and readable, a note and an expected
//! version on a PUT, a roll back as a new version; and `toolgate policy pull | push |
//! log | diff` doing the same from a shell.

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::run_control_cli;
use crate::control::{ADMIN, APPROVER, VIEWER, api, code, setup};
use crate::decisions::{call_tool, result_text};
use crate::support::*;

const LOCKDOWN: &str =
    "@id(\"lockdown\") @reason(\"maintenance\") forbid (principal, action, resource);\n";

/// `PUT /api/v1/policy` with a JSON body (a `PolicyEdit`), as `token`.
async fn put_edit(gw: &GatewayProc, token: &str, edit: Value) -> (u16, Value) {
    let resp = http()
        .put(gw.control_url("/api/v1/policy"))
        .bearer_auth(token)
        .json(&edit)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// `GET path` as a viewer, which must answer 200.
async fn read(gw: &GatewayProc, path: &str) -> Value {
    let (s, b) = api(gw, Method::GET, path, Some(VIEWER), None).await;
    assert_eq!(s, 200, "{path}: {b}");
    b
}

/// The versions `GET /policy/versions` lists.
async fn versions(gw: &GatewayProc) -> Vec<Value> {
    read(gw, "/api/v1/policy/versions").await["versions"]
        .as_array()
        .unwrap()
        .clone()
}

/// Version `v` with its text.
async fn version(gw: &GatewayProc, v: u64) -> Value {
    read(gw, &format!("/api/v1/policy/versions/{v}")).await
}

/// `version, note` of every row of the `policies` table, oldest first.
async fn stored_rows(gw: &GatewayProc) -> Vec<Vec<Option<String>>> {
    query_rows(
        &gw.db_path(),
        "SELECT CAST(version AS TEXT), note FROM policies ORDER BY version",
    )
    .await
}

fn at_of(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

#[tokio::test]
async fn versions_are_listed_with_their_notes_read_back_and_a_roll_back_is_a_new_version() {
    let (_upstream, gw) = setup().await;
    let first = versions(&gw).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        first[0],
        json!({"version": 1, "sha256": sha256_hex(DEFAULT_POLICY), "by": "default",
            "at": first[0]["at"], "note": null})
    );
    at_of(&first[0]);

    let (s, b) = put_edit(
        &gw,
        ADMIN,
        json!({"text": LOCKDOWN, "note": "maintenance window", "expected_version": 1}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["kind"], &b["version"], &b["by"], &b["note"]),
        (
            &json!("policy.changed"),
            &json!(2),
            &json!("ada"),
            &json!("maintenance window")
        )
    );
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert_eq!(
        result_text(&answer),
        "Denied by toolgate policy lockdown: maintenance"
    );

    let listed = versions(&gw).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed[0],
        json!({"version": 2, "sha256": sha256_hex(LOCKDOWN), "by": "ada",
            "at": listed[0]["at"], "note": "maintenance window"}),
        "newest first"
    );
    assert_eq!(listed[1], first[0], "an old version is listed as it was");
    assert!(at_of(&listed[0]) >= at_of(&listed[1]));

    // Each version's text, byte for byte, with what the list says of it.
    let v1 = version(&gw, 1).await;
    assert_eq!(v1["text"], DEFAULT_POLICY);
    let v2 = version(&gw, 2).await;
    assert_eq!(v2["text"], LOCKDOWN);
    let mut listed_v2 = listed[0].clone();
    listed_v2["text"] = json!(LOCKDOWN);
    assert_eq!(v2, listed_v2);

    // Roll back: v1's text, PUT as plain Cedar text (as curl --data-binary sends it).
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/policy",
        Some(ADMIN),
        Some(v1["text"].as_str().unwrap().to_owned()),
    )
    .await;
    assert_eq!((s, &b["version"]), (200, &json!(3)), "{b}");
    assert!(b.get("note").is_none(), "no note, no key: {b}");
    let v3 = version(&gw, 3).await;
    assert_eq!((&v3["text"], &v3["sha256"]), (&v1["text"], &v1["sha256"]));
    assert_eq!((&v3["by"], &v3["note"]), (&json!("ada"), &json!(null)));
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert_eq!(
        result_text(&answer),
        "no page x",
        "v1's policy is in force again"
    );
    assert_eq!(read(&gw, "/api/v1/policy").await, v3);

    assert_eq!(
        stored_rows(&gw).await,
        [
            vec![Some("1".into()), None],
            vec![Some("2".into()), Some("maintenance window".into())],
            vec![Some("3".into()), None],
        ]
    );
    let events = query_rows(
        &gw.db_path(),
        "SELECT body FROM events WHERE kind = 'policy.changed' ORDER BY seq",
    )
    .await;
    let notes: Vec<Value> = events
        .iter()
        .map(|r| serde_json::from_str::<Value>(r[0].as_deref().unwrap()).unwrap()["note"].clone())
        .collect();
    assert_eq!(
        notes,
        [json!(null), json!("maintenance window"), json!(null)]
    );

    let (s, b) = api(
        &gw,
        Method::GET,
        "/api/v1/policy/versions/4",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (404, "not_found"), "{b}");
    for bad in ["0", "two", "-1"] {
        let path = format!("/api/v1/policy/versions/{bad}");
        let (s, b) = api(&gw, Method::GET, &path, Some(VIEWER), None).await;
        assert_eq!((s, code(&b)), (400, "invalid_request"), "{bad}: {b}");
    }
}

#[tokio::test]
async fn a_stale_edit_gets_409_with_the_version_in_force_and_only_an_admin_may_put() {
    let (_upstream, gw) = setup().await;
    let (s, b) = put_edit(
        &gw,
        ADMIN,
        json!({"text": LOCKDOWN, "note": "first", "expected_version": 1}),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // An edit made from v1, now that v2 is in force.
    let (s, b) = put_edit(
        &gw,
        ADMIN,
        json!({"text": DEFAULT_POLICY, "expected_version": 1}),
    )
    .await;
    assert_eq!((s, code(&b)), (409, "stale_version"), "{b}");
    let current = &b["policy"];
    assert_eq!(
        (&current["version"], &current["by"], &current["note"]),
        (&json!(2), &json!("ada"), &json!("first"))
    );
    assert_eq!(current["sha256"], sha256_hex(LOCKDOWN));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 2 (by ada), not 1"),
        "{b}"
    );
    assert_eq!(stored_rows(&gw).await.len(), 2, "nothing stored");
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert_eq!(
        result_text(&answer),
        "Denied by toolgate policy lockdown: maintenance",
        "v2 stays in force"
    );

    // A viewer (and an approver) reads every version, and may not put one.
    assert_eq!(versions(&gw).await.len(), 2);
    assert_eq!(version(&gw, 1).await["text"], DEFAULT_POLICY);
    for token in [VIEWER, APPROVER] {
        let (s, b) = put_edit(&gw, token, json!({"text": DEFAULT_POLICY})).await;
        assert_eq!((s, code(&b)), (403, "forbidden_role"), "{b}");
        let (s, b) = api(
            &gw,
            Method::PUT,
            "/api/v1/policy",
            Some(token),
            Some(DEFAULT_POLICY.into()),
        )
        .await;
        assert_eq!((s, code(&b)), (403, "forbidden_role"), "{b}");
    }
    let (s, _) = api(&gw, Method::GET, "/api/v1/policy/versions", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = api(&gw, Method::GET, "/api/v1/policy/versions/1", None, None).await;
    assert_eq!(s, 401);

    // A JSON edit is read strictly, and its text is placed as a plain one is.
    let (s, b) = put_edit(&gw, ADMIN, json!({"text": LOCKDOWN, "expected": 2})).await;
    assert_eq!((s, code(&b)), (400, "invalid_request"), "{b}");
    let (s, b) = put_edit(
        &gw,
        ADMIN,
        json!({"text": "forbid (principal, action, resource)\nwhen { resource.nope };",
            "expected_version": 2}),
    )
    .await;
    assert_eq!(
        (s, code(&b), b["error"]["line"].as_u64()),
        (400, "invalid_policy", Some(2)),
        "{b}"
    );
    assert!(b["error"]["column"].as_u64().is_some(), "{b}");
    assert_eq!(stored_rows(&gw).await.len(), 2, "nothing stored");

    // The version it was made from is in force: the edit goes through.
    let (s, b) = put_edit(
        &gw,
        ADMIN,
        json!({"text": DEFAULT_POLICY, "expected_version": 2}),
    )
    .await;
    assert_eq!((s, &b["version"]), (200, &json!(3)), "{b}");
}

/// Added to the default in a policy file: a rule that denies the ci group's reads.
const NO_CI_READS: &str = r#"
@id("no-ci-reads")
@reason("ci reads are off")
forbid (principal in Group::"ci", action == Action::"call_tool", resource)
when { resource.risk == "read" };
"#;

#[tokio::test]
async fn pull_push_log_and_diff_from_a_shell_with_exit_codes() {
    let (_upstream, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.cedar");
    let path = file.to_str().unwrap();

    // pull: the text in force, byte for byte, to stdout or to a new file.
    let (status, stdout, stderr) = run_control_cli(&gw, VIEWER, &["policy", "pull"]).await;
    assert_eq!(
        (status.code(), stdout.as_str()),
        (Some(0), DEFAULT_POLICY),
        "{stderr}"
    );
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "pull", "-o", path]).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), DEFAULT_POLICY);
    let sha1 = sha256_hex(DEFAULT_POLICY);
    assert_eq!(stdout, format!("{path}: policy v1 ({})\n", &sha1[..12]));

    // An edit in the file is never overwritten by a pull, unless --force.
    let edited = format!("{DEFAULT_POLICY}{NO_CI_READS}");
    std::fs::write(&file, &edited).unwrap();
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "pull", "-o", path]).await;
    assert_eq!((status.code(), stdout.as_str()), (Some(1), ""));
    assert!(
        stderr.contains("exists; it is kept (--force overwrites it)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited);
    let forced = dir.path().join("forced.cedar");
    std::fs::write(&forced, "old").unwrap();
    let (status, _, stderr) = run_control_cli(
        &gw,
        VIEWER,
        &["policy", "pull", "-o", forced.to_str().unwrap(), "--force"],
    )
    .await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&forced).unwrap(), DEFAULT_POLICY);

    // push: a viewer is refused, an admin puts the file in force with its note.
    let push = [
        "policy",
        "push",
        path,
        "--note",
        "deny ci reads",
        "--expected-version",
        "1",
    ];
    let (status, _, stderr) = run_control_cli(&gw, VIEWER, &push).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("forbidden_role"), "{stderr}");
    let (status, stdout, stderr) = run_control_cli(&gw, ADMIN, &push).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    let sha2 = sha256_hex(&edited);
    assert_eq!(
        stdout,
        format!("{path}: v2 is in force ({})\n", &sha2[..12])
    );
    let v2 = version(&gw, 2).await;
    assert_eq!(
        (&v2["text"], &v2["note"], &v2["by"]),
        (&json!(edited), &json!("deny ci reads"), &json!("ada"))
    );
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert_eq!(
        result_text(&answer),
        "Denied by toolgate policy no-ci-reads: ci reads are off",
        "the pushed file is in force"
    );

    // The same push again was made from v1: refused, saying who changed it since.
    let (status, stdout, stderr) = run_control_cli(&gw, ADMIN, &push).await;
    assert_eq!((status.code(), stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}: not pushed: the policy in force is v2 (")),
        "{stderr}"
    );
    assert!(
        stderr.contains(" by ada: deny ci reads), not v1; pull it, merge your change and push with --expected-version 2"),
        "{stderr}"
    );
    // An invalid file: placed by line and column, and nothing stored.
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let (status, _, stderr) =
        run_control_cli(&gw, ADMIN, &["policy", "push", bad.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:8: invalid policy", bad.display())),
        "{stderr}"
    );
    assert_eq!(versions(&gw).await.len(), 2, "nothing stored");

    // log: JSON lines into a pipe or when asked, newest first, as the API lists them.
    let listed = versions(&gw).await;
    for args in [
        &["policy", "log"][..],
        &["policy", "log", "--output", "json"],
    ] {
        let (status, stdout, stderr) = run_control_cli(&gw, VIEWER, args).await;
        assert_eq!(status.code(), Some(0), "{stderr}");
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON version a line"))
            .collect();
        assert_eq!(lines, listed, "{args:?}");
    }
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "log", "--output", "table"]).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(
        rows[0],
        ["version", "stored", "(UTC)", "by", "sha256", "note"]
    );
    assert_eq!(
        (rows[1][0], rows[1][3], rows[1][4], &rows[1][5..]),
        ("2", "ada", &sha2[..12], &["deny", "ci", "reads"][..])
    );
    assert_eq!(
        (rows[2][0], rows[2][3], rows[2][4], rows[2].len()),
        ("1", "default", &sha1[..12], 5)
    );

    // diff: the added rule, line for line, and the reverse.
    let added: Vec<String> = NO_CI_READS.lines().map(|l| format!("+{l}")).collect();
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "diff", "1", "2"]).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("--- v1 (") && lines[0].ends_with(" by default)"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("+++ v2 (") && lines[1].ends_with(" by ada: deny ci reads)"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("@@ "), "{stdout}");
    let changed: Vec<&str> = lines[3..]
        .iter()
        .copied()
        .filter(|l| l.starts_with(['+', '-']))
        .collect();
    assert_eq!(changed, added, "{stdout}");
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "diff", "2", "1"]).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    let removed: Vec<String> = NO_CI_READS.lines().map(|l| format!("-{l}")).collect();
    let changed: Vec<&str> = stdout
        .lines()
        .skip(3)
        .filter(|l| l.starts_with(['+', '-']))
        .collect();
    assert_eq!(changed, removed, "{stdout}");
    // The same text: no diff, and a word on stderr.
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "diff", "2", "2"]).await;
    assert_eq!((status.code(), stdout.as_str()), (Some(0), ""));
    assert!(stderr.contains("v2 and v2 have the same text"), "{stderr}");

    // An old version can be pulled, and pushed back: the roll back is v3.
    let old = dir.path().join("v1.cedar");
    let (status, _, stderr) = run_control_cli(
        &gw,
        VIEWER,
        &[
            "policy",
            "pull",
            "--version",
            "1",
            "-o",
            old.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&old).unwrap(), DEFAULT_POLICY);
    let (status, stdout, stderr) = run_control_cli(
        &gw,
        ADMIN,
        &[
            "policy",
            "push",
            old.to_str().unwrap(),
            "--expected-version",
            "2",
        ],
    )
    .await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.ends_with(&format!(": v3 is in force ({})\n", &sha1[..12])),
        "{stdout}"
    );

    // Refusals and usage errors.
    let (status, _, stderr) = run_control_cli(&gw, VIEWER, &["policy", "diff", "1", "9"]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not_found: no policy version 9 is stored"),
        "{stderr}"
    );
    let (status, _, stderr) =
        run_control_cli(&gw, VIEWER, &["policy", "pull", "--version", "9"]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    for usage in [
        &["policy", "diff", "1", "two"][..],
        &["policy", "diff", "1"],
        &["policy", "push"],
        &["policy", "push", path, "--expected-version", "latest"],
        &["policy", "log", "--output", "yaml"],
        &["policy", "pull", "--force"],
    ] {
        let (status, stdout, stderr) = run_control_cli(&gw, VIEWER, usage).await;
        assert_eq!(
            (status.code(), stdout.as_str()),
            (Some(2), ""),
            "{usage:?}: {stderr}"
        );
    }
    assert_eq!(
        versions(&gw).await.len(),
        3,
        "no usage error stored anything"
    );
}
