//! Policy versions: every stored version listed and readable, a note and an expected
//! version on a PUT, a roll back as a new version.

use reqwest::Method;
use serde_json::{Value, json};

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
