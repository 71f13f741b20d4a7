//! Several gateway replicas on one PostgreSQL database, as behind a load balancer: a
//! hold waits on one replica while approvers click on others, identical retries land
//! anywhere, and every replica's subscribers see one stream.
//!
//! The database is a fresh one in the test cluster `TOOLGATE_TEST_PG` names (`.ci/run`
//! starts it); without that variable these tests say so and pass, except under CI.

use std::time::Duration;

use serde_json::{Value, json};

use crate::decisions::{answer_of, call_tool, is_held, result_text};
use crate::events::{next_frame, subscribe_as};
use crate::holds::{
    ALICE, BOB, VIEWER, answer, held_call, open_holds, operators, owned_identities, resolve,
    runs_of,
};
use crate::support::*;

/// `n` replicas in front of one upstream, on one fresh database, with one deployment key.
struct Cluster {
    upstream: PyUpstream,
    replicas: Vec<GatewayProc>,
    /// The database's URL, for reading what is stored.
    url: String,
    _key: tempfile::TempDir,
}

impl Cluster {
    async fn start(n: usize, hold_timeout_secs: u64) -> Option<Cluster> {
        Cluster::start_with(n, hold_timeout_secs, "", false).await
    }

    /// As `start`, with `gateway_keys` in `[gateway]`, and ci-bot's token alice's when
    /// `owned`.
    async fn start_with(
        n: usize,
        hold_timeout_secs: u64,
        gateway_keys: &str,
        owned: bool,
    ) -> Option<Cluster> {
        let identities = if owned {
            owned_identities()
        } else {
            test_identities()
        };
        let toolgate::gateway::store::Location::Postgres { url, .. } =
            toolgate::gateway::store::testing::fresh_postgres().await?
        else {
            unreachable!("a PostgreSQL location")
        };
        let key = tempfile::tempdir().unwrap();
        let key_file = key.path().join("toolgate.key");
        toolgate::gateway::keys::DeploymentKey::generate()
            .write_new(&key_file)
            .unwrap();
        let upstream = PyUpstream::start().await;
        let body = format!(
            "key_file = \"{}\"\n{gateway_keys}{}{}\n[store]\nurl = \"{url}\"\n",
            key_file.display(),
            upstream
                .config(&format!(
                    "trust_annotations = true\nhold_timeout_secs = {hold_timeout_secs}"
                ))
                .replace(&test_identities(), &identities),
            operators()
        );
        let mut replicas = Vec::new();
        for _ in 0..n {
            let gw = start_gateway(&body).await;
            prime(&gw).await;
            replicas.push(gw);
        }
        Some(Cluster {
            upstream,
            replicas,
            url,
            _key: key,
        })
    }
}

impl Cluster {
    /// The stored events of `kind`, oldest first, as JSON.
    async fn stored(&self, kind: &str) -> Vec<Value> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body FROM events WHERE kind = $1 ORDER BY seq")
                .bind(kind)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }
}

/// Lists py's tools through `gw` and waits until its catalog (read through the control
/// API: the store is not a file here) has them, so calls get their real classes.
async fn prime(gw: &GatewayProc) {
    list_tools(&gw.url("py"), AGENT_TOKEN).await;
    eventually("the catalog to learn py's tools", || async {
        let tools: Value = http()
            .get(gw.control_url("/api/v1/tools"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let listed = tools["tools"]
            .as_array()?
            .iter()
            .filter(|t| t["upstream"] == "py" && t["definition_sha256"].is_string())
            .count();
        (listed >= 5).then_some(())
    })
    .await;
}

/// A control API client of `gw` as bob, the admin.
fn admin(gw: &GatewayProc) -> toolgate::client::ControlClient {
    toolgate::client::ControlClient::new(&format!("http://{}", gw.control), BOB).unwrap()
}

/// The open hold whose call wrote `page`, once `gw` knows of it.
async fn hold_for(gw: &GatewayProc, page: &str) -> Value {
    eventually(
        &format!("{} to know the hold of {page}", gw.control),
        || async {
            open_holds(gw)
                .await
                .into_iter()
                .find(|h| h["call"]["target"]["id"] == page)
        },
    )
    .await
}

#[tokio::test]
async fn two_approvers_on_two_replicas_racing_on_a_hold_waiting_on_a_third_resolve_it_once() {
    let Some(cluster) = Cluster::start(3, 60).await else {
        return;
    };
    let [a, b, waiting] = &cluster.replicas[..] else {
        unreachable!()
    };
    let mut approved = 0;
    for round in 0..50 {
        let page = format!("RACE-{round}");
        let client = spawn_write_page(waiting, AGENT_TOKEN, &page, "x", json!({}));
        let call_id = hold_for(a, &page).await["call_id"]
            .as_str()
            .unwrap()
            .to_owned();
        hold_for(b, &page).await;
        // One approver on A and one on B, at the same instant; whose click lands first
        // alternates.
        let (on_a, on_b) = if round % 2 == 0 {
            tokio::join!(
                resolve(a, ALICE, &call_id, "approve", None),
                resolve(b, BOB, &call_id, "deny", Some("race"))
            )
        } else {
            let (d, ap) = tokio::join!(
                resolve(b, BOB, &call_id, "deny", Some("race")),
                resolve(a, ALICE, &call_id, "approve", None)
            );
            (ap, d)
        };
        let (won, lost, approve_won) = match (on_a.0, on_b.0) {
            (200, 409) => (on_a.1, on_b.1, true),
            (409, 200) => (on_b.1, on_a.1, false),
            other => {
                panic!("round {round}: one winner and one 409, got {other:?}: {on_a:?} {on_b:?}")
            }
        };
        assert_eq!(lost["error"]["code"], "already_resolved", "round {round}");
        assert_eq!(
            won["resolution"],
            if approve_won { "approved" } else { "denied" },
            "round {round}: {won}"
        );
        // The loser learns how the hold ended: the winner's resolution, or (an approval
        // the waiting replica ran at once) its run.
        let seen = lost["hold"]["resolution"].as_str().unwrap_or_default();
        if approve_won {
            assert!(
                matches!(seen, "approved" | "consumed"),
                "round {round}: {lost}"
            );
        } else {
            assert_eq!(seen, "denied", "round {round}: {lost}");
            assert_eq!(lost["hold"]["resolved_by"], "bob", "round {round}: {lost}");
        }
        let text = tokio::time::timeout(Duration::from_secs(15), client)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the waiting client gets an answer"))
            .unwrap();
        let reply = answer_of(&text).unwrap();
        if approve_won {
            approved += 1;
            assert_eq!(
                result_text(&reply),
                format!("wrote {page} (1 bytes)"),
                "round {round}"
            );
            assert_eq!(
                runs_of(&cluster.upstream, &page),
                1,
                "round {round}: run once"
            );
        } else {
            assert_eq!(reply["result"]["isError"], true, "round {round}: {reply}");
            assert!(
                result_text(&reply).contains("race"),
                "round {round}: {reply}"
            );
            assert_eq!(
                runs_of(&cluster.upstream, &page),
                0,
                "round {round}: never run"
            );
        }
    }
    eprintln!("approve won {approved} of 50 rounds");
}

#[tokio::test]
async fn an_identical_retry_at_another_replica_runs_the_approval_once() {
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let [first, approver, retries] = &cluster.replicas[..] else {
        unreachable!()
    };
    // The client's wait ends before anyone approves: the call is pending.
    let held = answer(held_call(first, AGENT_TOKEN, "MARK-ELSEWHERE", "v1").await).await;
    assert!(is_held(&held), "{held}");
    let call_id = hold_for(approver, "MARK-ELSEWHERE").await["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = resolve(approver, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    // The retry lands on a third replica, which runs the approval given on the second.
    let retry = eventually("the retry to run the approval", || async {
        let reply = answer(held_call(retries, AGENT_TOKEN, "MARK-ELSEWHERE", "v1").await).await;
        (result_text(&reply) == "wrote MARK-ELSEWHERE (2 bytes)").then_some(reply)
    })
    .await;
    assert_eq!(retry["result"]["isError"], false);
    assert_eq!(runs_of(&cluster.upstream, "MARK-ELSEWHERE"), 1);
    // A second retry, on any replica, is decided afresh: held again.
    for gw in [first, approver, retries] {
        let again = answer(held_call(gw, AGENT_TOKEN, "MARK-ELSEWHERE", "v1").await).await;
        assert!(is_held(&again), "{again}");
    }
    assert_eq!(
        runs_of(&cluster.upstream, "MARK-ELSEWHERE"),
        1,
        "the approval ran once"
    );
}

#[tokio::test]
async fn a_subscriber_on_one_replica_sees_the_dense_seq_of_every_replica_and_resumes_without_a_gap()
{
    let Some(cluster) = Cluster::start(3, 60).await else {
        return;
    };
    let [a, b, c] = &cluster.replicas[..] else {
        unreachable!()
    };
    let mut socket = subscribe_as(a, VIEWER, "?since=0").await;
    // Calls decided on B and C while A's subscriber watches.
    for i in 0..10 {
        let gw = if i % 2 == 0 { b } else { c };
        call_tool(
            gw,
            AGENT_TOKEN,
            "read_page",
            json!({"page_id": format!("SEQ-{i}")}),
        )
        .await;
    }
    let mut seqs = Vec::new();
    let mut pages = Vec::new();
    while pages.len() < 10 {
        let frame = next_frame(&mut socket).await.expect("a frame");
        let Some(seq) = frame["seq"].as_u64() else {
            continue;
        };
        if frame["kind"] == "decision" {
            pages.push(
                frame["target"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        seqs.push(seq);
    }
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense, in order, from 1"
    );
    assert_eq!(
        pages,
        (0..10).map(|i| format!("SEQ-{i}")).collect::<Vec<_>>()
    );
    // Resuming on A from the middle: the rest, each once, then what comes next.
    let middle = seqs[seqs.len() / 2];
    drop(socket);
    call_tool(c, AGENT_TOKEN, "read_page", json!({"page_id": "SEQ-after"})).await;
    let mut resumed = subscribe_as(a, VIEWER, &format!("?since={middle}")).await;
    let mut after = Vec::new();
    loop {
        let frame = next_frame(&mut resumed).await.expect("a frame");
        if let Some(seq) = frame["seq"].as_u64() {
            after.push(seq);
            if frame["target"]["id"] == "SEQ-after" {
                break;
            }
        }
    }
    let last = *after.last().unwrap();
    assert_eq!(
        after,
        (middle + 1..=last).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
}

#[tokio::test]
async fn a_class_edit_and_a_policy_push_on_one_replica_are_in_force_on_the_others_within_a_second()
{
    // Held calls answer after 1 s, so a call still held shows at once.
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let [a, b, c] = &cluster.replicas[..] else {
        unreachable!()
    };
    // write_page is a write, held for an API token; set to read on A.
    let tools = admin(a).tools().await.unwrap();
    let row = tools
        .rows
        .iter()
        .find(|t| t.tool.upstream == "py" && t.tool.name == "write_page")
        .unwrap();
    admin(a)
        .set_risk(
            "py",
            "write_page",
            toolgate::api::Risk::Read,
            row.tool.version,
            Some("replicated".into()),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (gw, page) in [(b, "CLASS-B"), (c, "CLASS-C")] {
        let reply = call_tool(
            gw,
            AGENT_TOKEN,
            "write_page",
            json!({"page_id": page, "body": "x"}),
        )
        .await;
        assert_eq!(
            result_text(&reply),
            format!("wrote {page} (1 bytes)"),
            "{}: {reply}",
            gw.control
        );
    }

    // A policy pushed on A: a second later, B and C report it and decide by it.
    let text = format!(
        "{}\n@id(\"replicated-deny\")\n@reason(\"pages are closed on every replica\")\nforbid (principal == Token::\"ci-bot\", action == Action::\"call_tool\", resource == Tool::\"py/read_page\");\n",
        admin(a).policy().await.unwrap().text
    );
    let pushed = admin(a).put_policy(&text, None, None).await.unwrap();
    let toolgate::api::EventBody::PolicyChanged { version, .. } = pushed.body else {
        panic!("{pushed:?}")
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    for gw in [b, c] {
        let in_force = admin(gw).policy().await.unwrap();
        assert_eq!(in_force.stored.version, version, "{}", gw.control);
        let reply = call_tool(gw, AGENT_TOKEN, "read_page", json!({"page_id": "CLOSED"})).await;
        assert!(
            reply
                .to_string()
                .contains("pages are closed on every replica"),
            "{}: {reply}",
            gw.control
        );
    }
    assert_eq!(runs_of(&cluster.upstream, "CLOSED"), 0);
}

/// A PostgreSQL cluster of this test's own (`.ci/postgres`), to stop and start again
/// without disturbing the other tests' cluster.
struct OwnCluster {
    dir: tempfile::TempDir,
}

impl OwnCluster {
    fn script(&self, command: &str) -> String {
        let out = std::process::Command::new(repo_root().join(".ci/postgres"))
            .arg(command)
            .arg(self.dir.path())
            .output()
            .expect(".ci/postgres runs");
        assert!(
            out.status.success(),
            ".ci/postgres {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_root().join(".ci/postgres"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn while_postgresql_is_down_calls_are_denied_readyz_is_503_and_both_recover_without_a_restart()
 {
    // Only where the tests have a cluster: the same programs start this one.
    if toolgate::gateway::store::testing::fresh_postgres()
        .await
        .is_none()
    {
        return;
    }
    let own = OwnCluster {
        dir: tempfile::tempdir().unwrap(),
    };
    let url = own.script("start");
    let key = tempfile::tempdir().unwrap();
    let key_file = key.path().join("toolgate.key");
    toolgate::gateway::keys::DeploymentKey::generate()
        .write_new(&key_file)
        .unwrap();
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "key_file = \"{}\"\nstore_timeout_ms = 300\n{}{}\n[store]\nurl = \"{url}\"\n",
        key_file.display(),
        upstream.config("trust_annotations = true"),
        operators()
    ))
    .await;
    prime(&gw).await;
    let before = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "UP"})).await;
    assert_eq!(result_text(&before), "no page UP");

    own.script("halt");
    let denied = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "DOWN"})).await;
    assert_eq!(
        result_text(&denied),
        "toolgate: audit store unavailable",
        "{denied}"
    );
    assert_eq!(crate::store::readyz(&gw).await, 503);
    assert_eq!(runs_of(&upstream, "DOWN"), 0, "nothing runs undecided");
    tokio::time::sleep(Duration::from_secs(2)).await;

    own.script("start");
    // No call arrives: the gateway finds the database again by itself.
    eventually("/readyz to be 200 again", || async {
        (crate::store::readyz(&gw).await == 200).then_some(())
    })
    .await;
    let after = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "BACK"})).await;
    assert_eq!(result_text(&after), "no page BACK");
    // The audit log says how many calls were denied unlogged meanwhile.
    let events: Value = gw.control_get(VIEWER, "/api/v1/decisions?limit=10").await;
    let pages: Vec<&str> = events["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["target"]["id"].as_str())
        .collect();
    assert_eq!(pages, ["BACK", "UP"], "the denied call is not in the log");
    let mut stream = subscribe_as(&gw, VIEWER, "?since=0").await;
    let recovered = loop {
        let frame = next_frame(&mut stream).await.expect("a frame");
        if frame["kind"] == "store.recovered" {
            break frame;
        }
    };
    assert!(
        recovered["denied_unlogged"].as_u64().unwrap() >= 1,
        "{recovered}"
    );
}

#[tokio::test]
async fn a_replica_killed_mid_approval_runs_nothing_twice_or_on_its_own_and_every_hold_ends_once() {
    // Clients wait 3 s: the approvals and the kill land while they wait.
    let Some(mut cluster) = Cluster::start(3, 3).await else {
        return;
    };
    let waiting = cluster.replicas.pop().unwrap();
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let pages: Vec<String> = (0..4).map(|i| format!("KILL-{i}")).collect();
    let clients: Vec<_> = pages
        .iter()
        .map(|p| spawn_write_page(&waiting, AGENT_TOKEN, p, "x", json!({})))
        .collect();
    let mut ids = Vec::new();
    for page in &pages {
        ids.push(
            hold_for(a, page).await["call_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Two approvals on A, and at the same instant the replica the clients wait on dies.
    let (first, second, ()) = tokio::join!(
        resolve(a, BOB, &ids[0], "approve", None),
        resolve(a, BOB, &ids[1], "approve", None),
        waiting.proc.stop()
    );
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    // What the killed replica's clients saw, if anything.
    let mut seen = Vec::new();
    for client in clients {
        seen.push(client.await.ok().and_then(|text| answer_of(&text)));
    }

    // Identical retries at B: an approval not yet run runs now, once; one the killed
    // replica ran is decided afresh (held). Pending holds stay pending.
    for page in &pages[..2] {
        let reply = answer(held_call(b, AGENT_TOKEN, page, "x").await).await;
        let text = result_text(&reply).to_owned();
        assert!(
            text == format!("wrote {page} (1 bytes)") || is_held(&reply),
            "{page}: {reply}"
        );
    }
    for (page, id) in pages.iter().zip(&ids) {
        let runs = runs_of(&cluster.upstream, page);
        let approved = page == "KILL-0" || page == "KILL-1";
        assert_eq!(
            runs,
            usize::from(approved),
            "{page} ({id}): runs once if approved, else never"
        );
    }
    // Everything still open is denied, on B: every hold then ends, each once.
    for hold in open_holds(b).await {
        let id = hold["call_id"].as_str().unwrap();
        let (status, body) = resolve(b, BOB, id, "deny", Some("cleanup")).await;
        assert!(matches!(status, 200 | 409), "{body}");
    }
    let resolved = cluster.stored("hold.resolved").await;
    let created = cluster.stored("hold.created").await;
    for hold in &created {
        let id = hold["call_id"].as_str().unwrap();
        let ends: Vec<&str> = resolved
            .iter()
            .filter(|r| r["call_id"] == id)
            .map(|r| r["resolution"].as_str().unwrap())
            .collect();
        let decisive = ends.iter().filter(|r| **r != "consumed").count();
        assert_eq!(
            decisive, 1,
            "{id}: one approval, denial or expiry: {ends:?}"
        );
        if ends.contains(&"consumed") {
            assert_eq!(
                ends,
                ["approved", "consumed"],
                "{id}: run once, after its approval"
            );
        }
    }
    // Every answer a client saw is backed by the store: a run by its `consumed`.
    let consumed: Vec<&str> = resolved
        .iter()
        .filter(|r| r["resolution"] == "consumed")
        .map(|r| r["call_id"].as_str().unwrap())
        .collect();
    for ((page, id), answer) in pages.iter().zip(&ids).zip(&seen) {
        if let Some(answer) = answer
            && result_text(answer).starts_with("wrote ")
        {
            assert!(
                consumed.contains(&id.as_str()),
                "{page}: ran, and the store says so"
            );
        }
    }
    let decisions = cluster.stored("decision").await;
    for id in &ids {
        assert!(
            decisions.iter().any(|d| d["call_id"] == id.as_str()),
            "{id}"
        );
    }
}

#[tokio::test]
async fn hold_caps_and_self_approval_hold_across_replicas() {
    let Some(cluster) = Cluster::start_with(2, 1, "max_holds_per_identity = 2\n", true).await
    else {
        return;
    };
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    // ci-bot's two holds, on A.
    for page in ["CAP-1", "CAP-2"] {
        let held = answer(held_call(a, AGENT_TOKEN, page, "x").await).await;
        assert!(is_held(&held), "{held}");
    }
    hold_for(b, "CAP-1").await;
    hold_for(b, "CAP-2").await;
    // A third, on B, is over ci-bot's share: B counts A's holds.
    let third = answer(held_call(b, AGENT_TOKEN, "CAP-3", "x").await).await;
    assert!(
        result_text(&third).contains("max_holds_per_identity"),
        "{third}"
    );
    // alice owns ci-bot's token: she may approve its calls on no replica.
    let id = hold_for(b, "CAP-1").await["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for gw in [a, b] {
        let (status, body) = resolve(gw, ALICE, &id, "approve", None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("self_approval")),
            "{}: {body}",
            gw.control
        );
    }
    assert_eq!(runs_of(&cluster.upstream, "CAP-"), 0);
}

/// Stores policy version `text` as the next version straight into the database, with its
/// `policy.changed` event, as another replica (of another build, say) would commit it.
async fn store_policy_behind_the_gateways(url: &str, text: &str) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let seq: i64 = sqlx::query_scalar("SELECT value + 1 FROM seq_counter WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("SELECT max(version) + 1 FROM policies")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let sha = sha256_hex(text);
    let ts = "2026-11-27T00:00:00.000Z";
    sqlx::query("INSERT INTO policies (version, text, sha256, \"by\", created_at) VALUES ($1, $2, $3, 'elsewhere', $4)")
        .bind(version)
        .bind(text)
        .bind(&sha)
        .bind(ts)
        .execute(&mut *tx)
        .await
        .unwrap();
    let body = json!({"seq": seq, "ts": ts, "kind": "policy.changed", "version": version,
                      "sha256": sha, "by": "elsewhere"});
    sqlx::query("INSERT INTO events (seq, ts, kind, body) VALUES ($1, $2, 'policy.changed', $3)")
        .bind(seq)
        .bind(ts)
        .bind(body.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE seq_counter SET value = $1 WHERE id = 1")
        .bind(seq)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('toolgate_events', $1)")
        .bind(seq.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    version as u64
}

#[tokio::test]
async fn a_replica_that_cannot_apply_a_change_denies_until_it_has_and_then_tells_its_waiting_client()
 {
    let Some(cluster) = Cluster::start(2, 60).await else {
        return;
    };
    let [a, waiting] = &cluster.replicas[..] else {
        unreachable!()
    };
    let client = spawn_write_page(waiting, AGENT_TOKEN, "STEP-1", "x", json!({}));
    let call_id = hold_for(a, "STEP-1").await["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A policy version this build cannot compile lands in the store.
    store_policy_behind_the_gateways(
        &cluster.url,
        "permit (principal, action, resource) when { nonsense };",
    )
    .await;
    for gw in [a, waiting] {
        eventually("the replica to say it is out of step", || async {
            let resp = http().get(gw.control_url("/readyz")).send().await.ok()?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.ok()?;
            (status == 503 && body["reason"].as_str()?.contains("out of step")).then_some(())
        })
        .await;
    }
    // It decides nothing with what it has.
    let refused = call_tool(
        waiting,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "STEP-2"}),
    )
    .await;
    assert_eq!(
        result_text(&refused),
        "toolgate: this gateway replica is catching up with the others; try again"
    );
    assert_eq!(runs_of(&cluster.upstream, "STEP-2"), 0);
    // Meanwhile the hold is denied elsewhere; the waiting replica misses that event.
    let (status, body) = resolve(a, BOB, &call_id, "deny", Some("while out of step")).await;
    assert_eq!(status, 200, "{body}");
    // A version it can compile: both replicas step back in, and the client hears the deny.
    let current = admin(a).policy_version(1).await.unwrap().text;
    store_policy_behind_the_gateways(&cluster.url, &current).await;
    let text = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .expect("the waiting client hears the denial")
        .unwrap();
    let reply = answer_of(&text).unwrap();
    assert!(result_text(&reply).contains("while out of step"), "{reply}");
    for gw in [a, waiting] {
        eventually("the replica to be ready again", || async {
            (crate::store::readyz(gw).await == 200).then_some(())
        })
        .await;
    }
    let allowed = call_tool(
        waiting,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "STEP-3"}),
    )
    .await;
    assert_eq!(result_text(&allowed), "no page STEP-3");
}

#[tokio::test]
async fn a_subscriber_resuming_on_another_replica_with_the_seq_it_just_saw_is_never_told_to_reload()
{
    let Some(cluster) = Cluster::start(2, 60).await else {
        return;
    };
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let mut on_a = subscribe_as(a, VIEWER, "?since=0").await;
    for i in 0..30 {
        call_tool(
            a,
            AGENT_TOKEN,
            "read_page",
            json!({"page_id": format!("HOP-{i}")}),
        )
        .await;
        // The newest seq A's subscriber has seen, then straight to B with it.
        let seen = loop {
            let frame = next_frame(&mut on_a).await.expect("a frame");
            if frame["kind"] == "decision" && frame["target"]["id"] == format!("HOP-{i}") {
                break frame["seq"].as_u64().unwrap();
            }
        };
        let mut on_b = subscribe_as(b, VIEWER, &format!("?since={seen}")).await;
        let first = next_frame(&mut on_b).await.expect("a frame");
        assert_eq!(first["kind"], "hello", "round {i}: {first}");
        assert!(
            first["last_seq"].as_u64().unwrap() >= seen,
            "round {i}: {first}"
        );
    }
}

#[tokio::test]
async fn a_session_made_through_one_replica_is_usable_through_another_by_its_creator_only() {
    use crate::relay::{legacy_post, legacy_session};
    let Some(cluster) = Cluster::start(2, 60).await else {
        return;
    };
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let client = http();
    let session = legacy_session(&client, &a.url("py"), AGENT_TOKEN).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    // The load balancer sends the next request to B: the session is its creator's there.
    let on_b = legacy_post(&client, &b.url("py"), AGENT_TOKEN, Some(&session), &list)
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 200);
    assert!(on_b.text().await.unwrap().contains("read_page"));
    // And nobody else's, on either replica.
    for gw in [a, b] {
        let stranger = legacy_post(
            &client,
            &gw.url("py"),
            crate::holds::OTHER_AGENT,
            Some(&session),
            &list,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(stranger.status(), 404, "{}", gw.control);
    }
}

/// A load balancer of the test's own: each request goes to the next replica in turn,
/// its answer streamed back. It binds first, so the replicas can be told its address.
struct RoundRobin {
    addr: std::net::SocketAddr,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RoundRobin {
    async fn start() -> RoundRobin {
        use axum::body::Body;
        use axum::extract::Request;
        use futures_util::TryStreamExt;
        let targets: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sent: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (t, s) = (targets.clone(), sent.clone());
        let app = axum::Router::new().fallback(move |request: Request| {
            let (targets, sent, next) = (t.clone(), s.clone(), next.clone());
            async move {
                let target = {
                    let targets = targets.lock().unwrap();
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    targets[i % targets.len()].clone()
                };
                sent.lock().unwrap().push(target.clone());
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let mut forward = http().request(
                    parts.method.clone(),
                    format!("http://{target}{}", parts.uri),
                );
                for (name, value) in &parts.headers {
                    forward = forward.header(name, value);
                }
                let answer = forward.body(body).send().await.unwrap();
                let mut response = axum::response::Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    response = response.header(name, value);
                }
                response
                    .body(Body::from_stream(
                        answer.bytes_stream().map_err(std::io::Error::other),
                    ))
                    .unwrap()
            }
        });
        let addr = serve_local(app).await;
        RoundRobin {
            addr,
            targets,
            sent,
        }
    }
}

#[tokio::test]
async fn the_python_sdk_through_a_round_robin_balancer_keeps_its_session_across_replicas() {
    let balancer = RoundRobin::start().await;
    let Some(cluster) = Cluster::start_with(
        2,
        60,
        &format!("allowed_hosts = [\"{}\"]\n", balancer.addr),
        false,
    )
    .await
    else {
        return;
    };
    *balancer.targets.lock().unwrap() = cluster.replicas.iter().map(|gw| gw.addr.clone()).collect();
    let url = format!("http://{}/mcp/py", balancer.addr);
    // The 2025-11-25 era: initialize, then every request in that session.
    for mode in ["legacy", "auto"] {
        let seen = run_py_client(
            &url,
            AGENT_TOKEN,
            "read_page",
            &json!({"page_id": "SDK"}),
            mode,
        )
        .await;
        assert_eq!(
            seen["result"]["content"][0]["text"], "no page SDK",
            "{mode}: {seen}"
        );
        assert!(
            seen["tools"].as_array().unwrap().len() >= 5,
            "{mode}: {seen}"
        );
    }
    let sent = balancer.sent.lock().unwrap().clone();
    for gw in &cluster.replicas {
        assert!(
            sent.iter().filter(|t| **t == gw.addr).count() >= 2,
            "every replica served some of it: {sent:?}"
        );
    }
    // Both calls are in the one store, however they were spread.
    let calls = cluster
        .stored("decision")
        .await
        .into_iter()
        .filter(|d| d["target"]["id"] == "SDK")
        .count();
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn a_two_person_hold_takes_its_approvals_on_different_replicas() {
    let Some(cluster) = Cluster::start(3, 60).await else {
        return;
    };
    let [a, b, waiting] = &cluster.replicas[..] else {
        unreachable!()
    };
    admin(a)
        .put_policy(&crate::two_person::two_for_token_writes(), None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = spawn_write_page(waiting, AGENT_TOKEN, "TWO-REPLICAS", "x", json!({}));
    let hold = hold_for(a, "TWO-REPLICAS").await;
    assert_eq!(hold["call"]["approvals_required"], 2);
    let call_id = hold["call_id"].as_str().unwrap().to_owned();
    // The first on A; B learns of it, and bob cannot approve again there.
    let (status, body) = resolve(a, BOB, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["approvals"][0]["by"].as_str()),
        (200, Some("bob")),
        "{body}"
    );
    eventually("B to know bob's approval", || async {
        let h = hold_for(b, "TWO-REPLICAS").await;
        (h["approvals"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    let (status, body) = resolve(b, BOB, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_approved")),
        "{body}"
    );
    assert_eq!(runs_of(&cluster.upstream, "TWO-REPLICAS"), 0);
    // The second on B: the client waiting on the third replica gets the result, once.
    let (status, body) = resolve(b, ALICE, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let text = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .expect("the waiting client gets an answer")
        .unwrap();
    assert_eq!(
        result_text(&answer_of(&text).unwrap()),
        "wrote TWO-REPLICAS (1 bytes)"
    );
    assert_eq!(runs_of(&cluster.upstream, "TWO-REPLICAS"), 1);
    let resolved = cluster.stored("hold.resolved").await;
    let last = resolved
        .iter()
        .find(|r| r["call_id"] == call_id.as_str())
        .unwrap();
    assert_eq!(last["approvers"], json!(["bob", "alice"]));
}

#[tokio::test]
async fn two_first_approvals_on_two_replicas_at_once_complete_a_two_person_hold() {
    let Some(cluster) = Cluster::start(3, 60).await else {
        return;
    };
    let [a, b, waiting] = &cluster.replicas[..] else {
        unreachable!()
    };
    admin(a)
        .put_policy(&crate::two_person::two_for_token_writes(), None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 0..5 {
        let page = format!("TWO-AT-ONCE-{round}");
        let client = spawn_write_page(waiting, AGENT_TOKEN, &page, "x", json!({}));
        let call_id = hold_for(a, &page).await["call_id"]
            .as_str()
            .unwrap()
            .to_owned();
        hold_for(b, &page).await;
        // bob on A and alice on B, neither having heard of the other.
        let (on_a, on_b) = tokio::join!(
            resolve(a, BOB, &call_id, "approve", None),
            resolve(b, ALICE, &call_id, "approve", None)
        );
        assert_eq!(
            (on_a.0, on_b.0),
            (200, 200),
            "round {round}: {on_a:?} {on_b:?}"
        );
        let text = tokio::time::timeout(Duration::from_secs(15), client)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the two approvals run it"))
            .unwrap();
        assert_eq!(
            result_text(&answer_of(&text).unwrap()),
            format!("wrote {page} (1 bytes)"),
            "round {round}"
        );
        assert_eq!(runs_of(&cluster.upstream, &page), 1, "round {round}");
        let resolved = cluster.stored("hold.resolved").await;
        let this = resolved
            .iter()
            .find(|r| r["call_id"] == call_id.as_str())
            .unwrap();
        let mut approvers: Vec<&str> = this["approvers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        approvers.sort();
        assert_eq!(approvers, ["alice", "bob"], "round {round}: {this}");
    }
}

#[tokio::test]
async fn a_request_state_made_on_one_replica_waits_on_another_and_runs_there_once() {
    use crate::long_wait::{call, refused, spawn_call, state_of};
    let Some(cluster) = Cluster::start(2, 1).await else {
        return;
    };
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let state = state_of(&call(a, AGENT_TOKEN, "HOP-1", None).await);
    // The SDK's retry lands on the other replica: it verifies the state, takes the hold
    // from the store, and waits on it; an approval given on the first reaches it there.
    let retry = spawn_call(b, "HOP-1", &state);
    let hold = eventually("the retry to wait on b", || async {
        open_holds(b)
            .await
            .into_iter()
            .find(|h| h["call"]["target"]["id"] == "HOP-1" && h["phase"] == "waiting")
    })
    .await;
    let call_id = hold["call_id"].as_str().unwrap().to_owned();
    assert_eq!(resolve(a, BOB, &call_id, "approve", None).await.0, 200);
    let ran = tokio::time::timeout(Duration::from_secs(10), retry)
        .await
        .unwrap()
        .unwrap();
    // Approved in time for this leg, or between two legs (then its answer is a fresh
    // state, and the next retry runs it).
    let ran = if ran["result"]["resultType"] == "input_required" {
        call(b, AGENT_TOKEN, "HOP-1", Some(&state_of(&ran))).await
    } else {
        ran
    };
    assert_eq!(result_text(&ran), "wrote HOP-1 (1 bytes)", "{ran}");
    assert_eq!(runs_of(&cluster.upstream, "HOP-1"), 1);
    // Spent, on either replica.
    for gw in [a, b] {
        let answer = call(gw, AGENT_TOKEN, "HOP-1", Some(&state)).await;
        assert!(refused(&answer).contains("already run"), "{answer}");
    }
    assert_eq!(runs_of(&cluster.upstream, "HOP-1"), 1);
}

#[tokio::test]
async fn a_grant_made_on_one_replica_is_used_on_another_and_a_revocation_anywhere_stops_it() {
    use crate::grants::{approve_with, revoke};
    let Some(cluster) = Cluster::start(2, 30).await else {
        return;
    };
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let client = spawn_write_page(a, AGENT_TOKEN, "GR-1", "x", json!({}));
    let call_id = hold_for(a, "GR-1").await["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, approved) =
        approve_with(a, BOB, &call_id, json!({"for_secs": 600, "scope": "tool"})).await;
    assert_eq!(status, 200, "{approved}");
    let id = approved["grant"]["id"].as_str().unwrap().to_owned();
    let _ = client.await;
    // At once on the other replica, whether or not its memory has heard yet.
    let reply = call_tool(
        b,
        AGENT_TOKEN,
        "write_page",
        json!({"page_id": "GR-2", "body": "x"}),
    )
    .await;
    assert_eq!(result_text(&reply), "wrote GR-2 (1 bytes)", "{reply}");
    // Revoked on b: the next call on a is held, at once.
    assert_eq!(revoke(b, BOB, &id).await.0, 200);
    let held = spawn_write_page(a, AGENT_TOKEN, "GR-3", "x", json!({}));
    let hold = hold_for(a, "GR-3").await;
    let id3 = hold["call_id"].as_str().unwrap();
    assert_eq!(resolve(a, BOB, id3, "deny", None).await.0, 200);
    let _ = held.await;
    assert_eq!(runs_of(&cluster.upstream, "GR-3"), 0);
    let granted: Vec<Value> = cluster
        .stored("decision")
        .await
        .into_iter()
        .filter(|d| d["grant"] == id.as_str())
        .collect();
    assert_eq!(granted.len(), 1, "{granted:?}");
}

#[tokio::test]
async fn replicas_on_one_database_write_one_chain_that_verifies_from_the_config() {
    let Some(cluster) = Cluster::start_with(2, 30, "checkpoint_every_events = 3\n", false).await
    else {
        return;
    };
    for (n, gw) in cluster.replicas.iter().cycle().take(6).enumerate() {
        let reply = call_tool(
            gw,
            AGENT_TOKEN,
            "read_page",
            json!({"page_id": format!("CH-{n}")}),
        )
        .await;
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let status = cluster.replicas[0]
        .control_get(VIEWER, "/api/v1/status")
        .await;
    let key = status["audit_public_key"].as_str().unwrap().to_owned();
    let other = cluster.replicas[1]
        .control_get(VIEWER, "/api/v1/status")
        .await;
    assert_eq!(
        other["audit_public_key"],
        key.as_str(),
        "one deployment key, one signer"
    );
    // Both replicas' events, one chain: checked from a replica's config, PostgreSQL and
    // all (each replica chains on from the hash the other left beside the seq).
    let config = cluster.replicas[1].dir.path().join("gateway.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .args(["--pubkey", &key])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("every event is chained"), "{said}");
    assert!(
        said.contains("signed up to seq"),
        "both replicas sign with one key: {said}"
    );
}
