//! Grants in the console: approving with one from the approve dialog, the `:grants`
//! view with time left and uses (live from the stream), and revoking from it.

use crossterm::event::KeyCode;
use serde_json::{Value, json};

use super::oncall::screen;
use super::tests::{ch, connected_app, decision, feed, key, one_hold, render, typed};
use super::*;
use crate::api::{GrantRequest, GrantScope};

const CALL: &str = "01900000000000000000000000000001";

fn grant(id: &str, scope: &str, expires_at: &str, uses: u64) -> Value {
    json!({
        "id": id, "scope": scope,
        "identity": {"kind": "api_token", "name": "ci-bot", "groups": ["ci"]},
        "upstream": "atlassian", "tool": "create_issue", "risk": "write", "call_id": CALL,
        "approvers": ["bob"], "for_secs": 900,
        "created_at": "2026-11-26T09:55:00.000Z", "expires_at": expires_at, "uses": uses
    })
}

fn held_view(app: &mut App) {
    app.on_key(ch(':'));
    typed(app, "held");
    app.on_key(key(KeyCode::Enter));
}

/// Opens the approve dialog on the held view's first hold, and shows the 120x40 screen.
fn approve_dialog(app: &mut App) -> String {
    held_view(app);
    app.on_key(ch('a'));
    screen(&render(app, 120, 40)).join("\n")
}

fn grants_view(app: &mut App) -> Vec<Command> {
    app.on_key(ch(':'));
    typed(app, "grants");
    app.on_key(key(KeyCode::Enter))
}

#[test]
fn the_approve_dialog_steps_through_grants_and_the_approval_carries_the_one_shown() {
    let mut app = connected_app();
    app.resize(120, 40);
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    let shown = approve_dialog(&mut app);
    assert!(
        shown.contains("grant:  none: this call runs once"),
        "{shown}"
    );
    assert!(
        shown.contains("g grant"),
        "the dialog offers the key:\n{shown}"
    );
    // g, g: the tool for 15 minutes.
    app.on_key(ch('g'));
    app.on_key(ch('g'));
    let terminal = render(&app, 120, 40);
    let shown = screen(&terminal).join("\n");
    assert!(
        shown.contains("grant:  any call of this tool the policy holds for 15 min"),
        "{shown}"
    );
    insta::assert_snapshot!("confirm_with_grant_120x40", terminal.backend());
    assert_eq!(
        app.on_key(ch('y')),
        vec![Command::Resolve {
            call_id: CALL.into(),
            approve: true,
            reason: None,
            grant: Some(GrantRequest {
                for_secs: 900,
                scope: GrantScope::Tool
            }),
        }]
    );
    // Five steps come back to none.
    app.on_key(ch('a'));
    for _ in 0..5 {
        app.on_key(ch('g'));
    }
    match app.on_key(ch('y')).as_slice() {
        [Command::Resolve { grant: None, .. }] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deny_and_a_bulk_approval_offer_no_grant() {
    let mut app = connected_app();
    app.resize(120, 40);
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    held_view(&mut app);
    app.on_key(ch('d'));
    app.on_key(key(KeyCode::Enter)); // the reason is typed first; done
    app.on_key(ch('g'));
    let shown = screen(&render(&app, 120, 40)).join("\n");
    assert!(!shown.contains("grant:"), "{shown}");
    match app.on_key(ch('y')).as_slice() {
        [
            Command::Resolve {
                approve: false,
                grant: None,
                ..
            },
        ] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_grants_view_shows_time_left_and_uses_live_and_revokes_after_asking() {
    let mut app = connected_app();
    assert_eq!(grants_view(&mut app), vec![Command::FetchGrants]);
    app.on_net(NetEvent::Grants(vec![
        serde_json::from_value(grant(
            "01900000-0000-7000-8000-0000000000a1",
            "identical",
            "2099-01-01T00:00:00.000Z",
            3,
        ))
        .unwrap(),
    ]));
    // Made on the stream: a tool grant of 15 minutes, soonest to end, so first.
    feed(
        &mut app,
        [json!({"seq": 5, "kind": "grant.created",
                "id": "01900000-0000-7000-8000-0000000000b2", "scope": "tool",
                "identity": {"kind": "api_token", "name": "ci-bot", "groups": ["ci"]},
                "upstream": "atlassian", "tool": "create_issue", "risk": "write", "call_id": CALL,
                "approvers": ["bob", "carol"], "for_secs": 900,
                "created_at": "2026-11-26T10:00:00.000Z",
                "expires_at": "2026-11-26T10:15:00.000Z", "uses": 0})],
    );
    assert!(
        app.flash
            .as_ref()
            .is_some_and(|(m, _)| m.starts_with("bob and carol granted token:ci-bot tool calls")),
        "{:?}",
        app.flash
    );
    // Each use arrives as a decision naming the grant.
    for seq in [6, 7] {
        let mut d = decision(seq, "allow", "create_issue");
        d["grant"] = json!("01900000-0000-7000-8000-0000000000b2");
        feed(&mut app, [d]);
    }
    for (w, h) in [(120, 30), (80, 24)] {
        app.resize(w, h);
        let terminal = render(&app, w, h);
        let shown = screen(&terminal).join("\n");
        assert!(shown.contains("grants · 2 active"), "{shown}");
        assert!(shown.contains("000000b2"), "{shown}");
        assert!(shown.contains("15:00"), "time left, by the clock:\n{shown}");
        insta::assert_snapshot!(format!("grants_{w}x{h}"), terminal.backend());
    }
    let first = &app.model.grants[0];
    assert_eq!(
        (first.uses, first.id.as_str()),
        (2, "01900000-0000-7000-8000-0000000000b2")
    );

    // d asks first (the later-ending identical grant is selected), n keeps it.
    app.on_key(ch('j'));
    assert!(app.on_key(ch('d')).is_empty());
    let shown = screen(&render(&app, 120, 30)).join("\n");
    assert!(shown.contains("Revoke grant 000000a1?"), "{shown}");
    assert!(shown.contains("used 3 times"), "{shown}");
    assert!(app.on_key(ch('n')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    app.on_key(ch('d'));
    assert_eq!(
        app.on_key(ch('y')),
        vec![Command::RevokeGrant(
            "01900000-0000-7000-8000-0000000000a1".into()
        )]
    );
    // The stream says so: the row goes.
    feed(
        &mut app,
        [json!({"seq": 8, "kind": "grant.revoked",
                "id": "01900000-0000-7000-8000-0000000000a1", "by": "bob"})],
    );
    assert_eq!(app.model.grants.len(), 1);
    // Read-only consoles do not revoke.
    app.read_only = true;
    assert!(app.on_key(ch('d')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn a_second_approver_sees_the_grant_the_first_asked_for_and_starts_from_it() {
    let mut app = connected_app();
    app.resize(120, 40);
    let mut d = decision(1, "hold", "create_issue");
    d["approvals_required"] = json!(2);
    feed(
        &mut app,
        [
            d,
            super::tests::hold_created(2, 1, "2099-01-01T00:00:00.000Z"),
            json!({"seq": 3, "kind": "hold.approval", "call_id": CALL, "by": "bob",
                   "approvals": 1, "required": 2,
                   "grant": {"for_secs": 900, "scope": "identical"}}),
        ],
    );
    let shown = approve_dialog(&mut app);
    assert!(
        shown.contains("approvals 1 of 2 (by bob asking grant: identical calls for 15 min)"),
        "{shown}"
    );
    assert!(
        shown.contains("grant:  identical calls for 15 min"),
        "{shown}"
    );
    match app.on_key(ch('y')).as_slice() {
        [
            Command::Resolve {
                grant:
                    Some(GrantRequest {
                        for_secs: 900,
                        scope: GrantScope::Identical,
                    }),
                ..
            },
        ] => {}
        other => panic!("{other:?}"),
    }
}
