//! Editing the policy from `:policy`: `e` hands the text to the editor, a save opens a
//! draft that is replayed before anything goes live, and `y`, `s`, `e` or Cancel decide
//! what becomes of it. Keys are pressed on the `App`; the draft is read from a rendered
//! buffer.

use serde_json::json;

use super::oncall::screen;
use super::tests::{ch, connected_app, key, render, typed};
use super::*;
use crossterm::event::KeyCode;

const IN_FORCE: &str = "@id(\"reads-allowed\")\npermit (principal, action, resource)\nwhen { resource.risk == \"read\" };\n";
const DRAFT: &str = "@id(\"reads-allowed\")\npermit (principal, action, resource)\nwhen { resource.risk == \"read\" };\n\n@id(\"ci-reads-held\")\n@outcome(\"hold\")\npermit (principal == Token::\"ci-bot\", action, resource);\n";

fn version(v: u64, by: &str) -> crate::api::PolicyVersion {
    serde_json::from_value(
        json!({"version": v, "sha256": format!("{v:064x}"), "by": by,
        "at": format!("2026-11-26T09:0{v}:00.000Z")}),
    )
    .unwrap()
}

fn text_of(v: u64, text: &str) -> crate::api::PolicyText {
    crate::api::PolicyText {
        stored: version(v, "ada"),
        text: text.to_owned(),
    }
}

/// The policy view of a gateway at v5, its text shown.
fn policy_app() -> App {
    let mut app = connected_app();
    app.resize(120, 40);
    app.on_key(ch(':'));
    typed(&mut app, "policy");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Command::FetchPolicy]);
    app.on_net(NetEvent::Policy {
        versions: vec![version(5, "ada"), version(4, "bob")],
        shadow: None,
    });
    app.on_net(NetEvent::PolicyText(Box::new(text_of(5, IN_FORCE))));
    app
}

/// Presses `e` and answers the editor request it makes.
fn edit(app: &mut App) -> EditRequest {
    match app.on_key(ch('e')).as_slice() {
        [Command::Edit(request)] => (**request).clone(),
        other => panic!("e asked for {other:?}"),
    }
}

fn report() -> Box<crate::api::ReplayReport> {
    Box::new(
        serde_json::from_value(json!({
            "first_seq": 1, "last_seq": 100, "decisions": 100, "upto": 100, "took_ms": 4,
            "transitions": {"allow→hold": 3, "unchanged": 97},
            "by_tool": [{"key": "py/read_page", "transitions": {"allow→hold": 3}}],
            "by_identity": [{"key": "token:ci-bot", "transitions": {"allow→hold": 3}}],
            "changed": [{"seq": 7, "ts": "2026-11-26T09:58:00.000Z",
                "call_id": "01900000000000000000000000000007", "upstream": "py",
                "tool": "read_page", "identity": {"kind": "api_token", "name": "ci-bot", "groups": []},
                "target": {"kind": "page", "id": "P-7"}, "from": "allow",
                "from_policy_ids": ["reads-allowed"], "to": "hold",
                "to_policy_ids": ["ci-reads-held"], "reason": "held"}],
            "next_after": null
        }))
        .unwrap(),
    )
}

fn shown(app: &App) -> String {
    screen(&render(app, 120, 40)).join("\n")
}

fn replayed_draft(app: &mut App) -> u64 {
    let request = edit(app);
    let commands = app.on_edited(request, Ok(DRAFT.to_owned()));
    let [Command::ReplayDraft { id, text }] = commands.as_slice() else {
        panic!("{commands:?}");
    };
    assert_eq!(text, DRAFT);
    let id = *id;
    assert!(
        shown(app).contains("validating and replaying the last 10000 decisions"),
        "{}",
        shown(app)
    );
    app.on_net(NetEvent::DraftReplayed {
        id,
        outcome: Ok(report()),
    });
    id
}

#[test]
fn e_opens_the_text_in_force_and_an_unchanged_save_changes_nothing() {
    let mut app = policy_app();
    let request = edit(&mut app);
    assert_eq!(request.text, IN_FORCE);
    assert_eq!(
        request.base,
        Base {
            version: 5,
            from: 5,
            original: IN_FORCE.to_owned(),
            store_id: Some("s1".into()),
        }
    );
    // An editor that saves without a change (and adds nothing but a newline).
    assert_eq!(
        app.on_edited(request.clone(), Ok(format!("{IN_FORCE}\n"))),
        vec![]
    );
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "no change: v5 stays in force"
    );
    // An editor that failed changes nothing either, and says why.
    assert!(
        app.on_edited(
            request,
            Err("the editor (vi) exit status: 1: nothing changed".into())
        )
        .is_empty()
    );
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.flash.as_ref().unwrap().0.contains("exit status: 1"));
}

#[test]
fn a_saved_draft_shows_its_replay_and_y_pushes_it_at_the_version_it_began_from() {
    let mut app = policy_app();
    let id = replayed_draft(&mut app);
    let screen = shown(&app);
    for expected in [
        "Policy draft",
        "an edit of v5 (in force)",
        "valid · replayed the last 100 decisions in 4 ms:",
        "allow→hold 3",
        "unchanged 97",
        "tools       py/read_page allow→hold 3",
        "identities  token:ci-bot allow→hold 3",
        "changed calls (oldest first, 1 of 3):",
        "py/read_page token:ci-bot page:P-7 allow→hold ci-reads-held",
        "y push over v5 · s install as shadow · r note · e edit again · esc/n discard",
    ] {
        assert!(screen.contains(expected), "{expected:?}:\n{screen}");
    }
    // A stray Enter (the second one after `:wq`) does nothing to a draft.
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert!(matches!(app.mode, Mode::Draft(_)));
    // Esc closes it, nothing sent, and its text is kept for the next `e`.
    assert!(app.on_key(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "draft closed, nothing pushed; e in :policy opens it again"
    );
    let again = edit(&mut app);
    assert_eq!((again.text.as_str(), again.base.version), (DRAFT, 5));
    assert_eq!(app.on_edited(again, Ok(DRAFT.to_owned())).len(), 1);
    app.on_key(key(KeyCode::Esc));
    // The text kept is gone once a new draft is made from it.
    app.kept = None;

    let id2 = replayed_draft(&mut app);
    assert_ne!(id, id2, "each draft has its own id");
    // A late answer for the discarded draft finds nothing.
    app.on_net(NetEvent::DraftReplayed {
        id,
        outcome: Err(DraftFailure::Other("late".into())),
    });
    assert!(matches!(&app.mode, Mode::Draft(d) if matches!(d.state, DraftState::Ready(_))));
    // A note (Esc leaves the note field, not the draft), then y.
    app.on_key(ch('r'));
    typed(&mut app, "hold ci reads");
    app.on_key(key(KeyCode::Esc));
    assert!(matches!(&app.mode, Mode::Draft(d) if !d.ask.editing));
    assert_eq!(
        app.on_key(ch('y')),
        vec![Command::PushDraft {
            id: id2,
            text: DRAFT.to_owned(),
            note: Some("hold ci reads".into()),
            expected_version: 5,
        }]
    );
    assert!(shown(&app).contains("pushing… (q quits; what was sent may still take effect)"));
    // While it is sent, keys wait for the answer, but quit works.
    assert!(app.on_key(ch('y')).is_empty());
    assert!(app.on_key(key(KeyCode::Esc)).is_empty());
    assert!(matches!(app.mode, Mode::Draft(_)));
    assert_eq!(app.on_key(ch('q')), vec![Command::Quit]);
    let changed: Event = serde_json::from_value(
        json!({"seq": 101, "ts": "2026-11-26T10:00:01.000Z", "kind": "policy.changed",
        "version": 6, "sha256": "ab", "by": "ada", "note": "hold ci reads"}),
    )
    .unwrap();
    app.on_net(NetEvent::DraftPushed {
        id: id2,
        outcome: Ok(Box::new(changed)),
    });
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "policy v6 is in force (was v5): the next calls are decided by it"
    );
    assert!(app.want_policy, "the view fetches the new version");
}

#[test]
fn an_invalid_draft_reopens_the_editor_at_its_line_with_the_error_written_above() {
    let mut app = policy_app();
    let request = edit(&mut app);
    let broken = "permit (principal, action, resource);\nforbid (principal action, resource);\n";
    let [Command::ReplayDraft { id, .. }] = app.on_edited(request, Ok(broken.into()))[..] else {
        panic!()
    };
    app.on_net(NetEvent::DraftReplayed {
        id,
        outcome: Err(DraftFailure::Invalid {
            message: "unexpected token `action`".into(),
            line: Some(2),
            column: Some(19),
        }),
    });
    let screen = shown(&app);
    for expected in [
        "the draft is not valid Cedar: line 2, column 19",
        "unexpected token `action`",
        "Nothing was pushed.",
        "e edit again · esc/n discard",
    ] {
        assert!(screen.contains(expected), "{expected:?}:\n{screen}");
    }
    // Neither y nor s does anything to an invalid draft.
    assert!(app.on_key(ch('y')).is_empty());
    assert!(app.on_key(ch('s')).is_empty());
    let again = edit(&mut app);
    assert_eq!(again.line, Some(3), "the cursor goes to the bad line");
    assert_eq!(
        again.text.lines().nth(1),
        Some("// ✗ unexpected token `action` (line 2, column 19; toolgate removes these lines)")
    );
    assert_eq!(again.draft, Some(id));
    // The operator fixes the line and leaves the note: it is taken out.
    let fixed = again.text.replace("principal action", "principal, action");
    let commands = app.on_edited(again, Ok(fixed));
    assert_eq!(
        commands,
        vec![Command::ReplayDraft {
            id: id + 1,
            text: "permit (principal, action, resource);\nforbid (principal, action, resource);\n"
                .into()
        }]
    );
    // An empty save discards.
    let again = edit(&mut app);
    assert!(app.on_edited(again, Ok("\n".into())).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "the file was saved empty: the draft is discarded and nothing was pushed"
    );
}

#[test]
fn a_push_refused_as_stale_says_who_changed_it_and_edit_again_moves_the_base() {
    let mut app = policy_app();
    let id = replayed_draft(&mut app);
    app.on_key(ch('y'));
    let mut bob = version(6, "bob");
    bob.note = Some("deny deletes".into());
    app.on_net(NetEvent::DraftPushed {
        id,
        outcome: Err(DraftFailure::Stale(Box::new(bob))),
    });
    let screen = shown(&app);
    assert!(
        screen.contains(
            "not pushed: bob stored v6 at 09:06:00 (deny deletes) after this edit began from v5"
        ),
        "{screen}"
    );
    assert!(
        app.on_key(ch('y')).is_empty(),
        "no push over a version not seen"
    );
    // What bob changed arrives, and goes into the file above the draft.
    app.on_net(NetEvent::DraftConflictDiff {
        id,
        diff: "--- v5\n+++ v6\n@@ -1 +1 @@\n-a\n+b\n".into(),
    });
    let again = edit(&mut app);
    assert_eq!(again.base.version, 6);
    assert!(
        again.text.starts_with("// ✗ bob stored v6 at 2026-11-26T09:06:00.000Z after this edit began from v5: merge their change"),
        "{}",
        again.text
    );
    assert!(again.text.contains("// ✗ -a\n// ✗ +b\n"), "{}", again.text);
    // Saved unchanged, it merged nothing: it stays refused.
    assert!(
        app.on_edited(again.clone(), Ok(again.text.clone()))
            .is_empty()
    );
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .starts_with("nothing merged: the draft is as it was when bob stored v6"),
        "{:?}",
        app.flash
    );
    assert!(matches!(&app.mode, Mode::Draft(d) if matches!(d.state, DraftState::Stale(_))));
    // Merged, it is replayed and pushed over v6, and says whose version it goes over.
    let merged = format!("{}// and bob's change\n", again.text);
    let [Command::ReplayDraft { id, .. }] = app.on_edited(again, Ok(merged))[..] else {
        panic!()
    };
    app.on_net(NetEvent::DraftReplayed {
        id,
        outcome: Ok(report()),
    });
    assert!(
        shown(&app)
            .contains("your edit, over v6 by bob (their change is in it only if you merged it)"),
        "{}",
        shown(&app)
    );
    assert!(matches!(
        app.on_key(ch('y')).as_slice(),
        [Command::PushDraft {
            expected_version: 6,
            ..
        }]
    ));
    // No answer at all: it may be in force, and the view asks.
    app.want_policy = false;
    app.on_net(NetEvent::DraftPushed {
        id,
        outcome: Err(DraftFailure::Unknown(
            "connection closed before message completed".into(),
        )),
    });
    assert!(app.want_policy);
    assert!(
        shown(&app).contains("no answer (connection closed before message completed): it may"),
        "{}",
        shown(&app)
    );
}

#[test]
fn s_installs_the_draft_as_the_shadow_instead() {
    let mut app = policy_app();
    let id = replayed_draft(&mut app);
    assert_eq!(
        app.on_key(ch('s')),
        vec![Command::ShadowDraft {
            id,
            text: DRAFT.to_owned()
        }]
    );
    let view: crate::api::ShadowView = serde_json::from_value(json!({"sha256": "cd".repeat(32),
        "by": "ada", "since": "2026-11-26T10:00:00.000Z", "compared": {}, "text": DRAFT}))
    .unwrap();
    app.on_net(NetEvent::DraftShadowed {
        id,
        outcome: Ok(Box::new(view)),
    });
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .starts_with("installed as the shadow (cdcdcdcdcdcd)"),
        "{:?}",
        app.flash
    );
}

#[test]
fn an_older_version_opened_and_saved_as_it_is_is_a_rollback_draft() {
    let mut app = policy_app();
    app.on_key(ch('j'));
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        vec![Command::FetchPolicyVersion(4)]
    );
    app.on_net(NetEvent::PolicyText(Box::new(text_of(
        4,
        "forbid (principal, action, resource);\n",
    ))));
    let request = edit(&mut app);
    assert_eq!((request.base.version, request.base.from), (5, 4));
    let commands = app.on_edited(request.clone(), Ok(request.text.clone()));
    assert!(matches!(commands.as_slice(), [Command::ReplayDraft { .. }]));
    assert!(
        shown(&app).contains("v4's text, to replace v5 in force"),
        "{}",
        shown(&app)
    );
}

#[test]
fn a_store_change_closes_a_draft_and_e_opens_its_text_over_the_new_stores_policy() {
    let mut app = policy_app();
    replayed_draft(&mut app);
    app.on_net(NetEvent::Reset);
    assert_eq!(app.mode, Mode::Normal, "nothing is pushed to another store");
    assert!(app.want_policy);
    app.on_net(NetEvent::Policy {
        versions: vec![version(2, "default")],
        shadow: None,
    });
    app.on_net(NetEvent::PolicyText(Box::new(text_of(2, IN_FORCE))));
    let request = edit(&mut app);
    assert_eq!(request.base.version, 2);
    assert!(
        request
            .text
            .starts_with("// ✗ your closed draft, begun from v5; v2"),
        "{}",
        request.text
    );
    assert!(request.text.contains("ci-reads-held"));
}

#[test]
fn e_edits_the_selected_versions_text_only_once_it_has_arrived() {
    let mut app = policy_app();
    // v6 is listed in force, but the text shown is still v5's.
    app.on_net(NetEvent::Policy {
        versions: vec![version(6, "bob"), version(5, "ada"), version(4, "bob")],
        shadow: None,
    });
    assert_eq!(app.on_key(ch('e')), vec![Command::FetchPolicyVersion(6)]);
    assert_eq!(app.flash.as_ref().unwrap().0, "loading v6's text first");
}

#[test]
fn e_is_refused_read_only_unreachable_or_before_the_policy_has_loaded() {
    let mut app = policy_app();
    app.read_only = true;
    assert!(app.on_key(ch('e')).is_empty());
    assert!(app.flash.as_ref().unwrap().0.starts_with("read-only"));

    let mut app = connected_app();
    app.on_key(ch(':'));
    typed(&mut app, "policy");
    app.on_key(key(KeyCode::Enter));
    assert!(app.on_key(ch('e')).is_empty());
    assert_eq!(app.flash.as_ref().unwrap().0, "the policy is still loading");

    let mut app = policy_app();
    app.on_net(NetEvent::Connection(Connection::Disconnected {
        since: app.now(),
    }));
    assert!(app.on_key(ch('e')).is_empty());
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .starts_with("the gateway is unreachable"),
        "{:?}",
        app.flash
    );
}
