use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::{Value, json};

use super::*;
use crate::api::{HoldPhase, Risk};
use crate::console::ui::{self, Theme};

pub(super) fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub(super) fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

pub(super) fn decision(seq: u64, outcome: &str, tool: &str) -> Value {
    json!({
        "seq": seq, "ts": format!("2026-11-26T10:00:{:02}.000Z", seq % 60), "kind": "decision",
        "call_id": format!("0190000000000000000000000000{seq:04}"),
        "upstream": "atlassian", "tool": tool, "risk": match outcome { "allow" => "read", "hold" => "write", _ => "destructive" },
        "identity": {"kind": "api_token", "name": "ci-bot", "groups": ["ci"]},
        "target": {"kind": "jira_project", "id": "OPS"}, "workflow": null,
        "outcome": outcome, "policy_ids": [format!("{outcome}-policy")], "reason": format!("because {outcome}"),
        "decision_us": 42, "args": {"projectKey": "OPS", "summary": "Restart the pager", "password": "[REDACTED]"}
    })
}

pub(super) fn hold_created(seq: u64, of: u64, expires_at: &str) -> Value {
    json!({"seq": seq, "ts": "2026-11-26T10:00:00.000Z", "kind": "hold.created",
           "call_id": format!("0190000000000000000000000000{of:04}"), "expires_at": expires_at, "ttl_ms": 900000, "phase": "waiting"})
}

/// Whether the commands are the one a class change starts with: a replay for its dialog.
pub(super) fn previews(commands: Vec<Command>) -> bool {
    matches!(commands.as_slice(), [Command::Preview { .. }])
}

/// One held create_issue call (seq 1, its hold seq 2) that expires at `expires_at`.
pub(super) fn one_hold(app: &mut App, expires_at: &str) {
    feed(
        app,
        [
            decision(1, "hold", "create_issue"),
            hold_created(2, 1, expires_at),
        ],
    );
}

pub(super) fn feed(app: &mut App, events: impl IntoIterator<Item = Value>) {
    for mut e in events {
        // Events written by hand leave out the time when the test does not need it.
        if e["ts"].is_null() {
            e["ts"] = json!("2026-11-26T10:00:00.000Z");
        }
        app.on_net(NetEvent::Event(Box::new(
            serde_json::from_value(e).unwrap(),
        )));
    }
}

/// The catalog as `GET /tools` would send these rows.
pub(super) fn catalog(rows: Vec<Value>) -> NetEvent {
    NetEvent::Tools(
        rows.into_iter()
            .map(|r| serde_json::from_value(r).unwrap())
            .collect(),
    )
}

pub(super) fn connected_app() -> App {
    let mut app = App::new(100, false);
    app.on_net(NetEvent::Connected {
        store_id: "s1".into(),
    });
    app
}

#[test]
fn it_follows_until_scrolled_then_counts_new_rows_until_resumed() {
    let mut app = connected_app();
    feed(&mut app, (1..=5).map(|s| decision(s, "allow", "get_issue")));
    assert!(app.live.follow);
    assert_eq!(app.selected_row().unwrap().seq, 5);
    app.on_key(ch('j'));
    assert!(!app.live.follow, "scrolling pauses");
    assert_eq!(app.selected_row().unwrap().seq, 4);
    feed(&mut app, (6..=8).map(|s| decision(s, "allow", "get_issue")));
    assert_eq!(app.live.new_while_paused, 3);
    assert_eq!(
        app.selected_row().unwrap().seq,
        4,
        "the paused row stays put"
    );
    app.on_key(ch('g'));
    assert!(app.live.follow);
    assert_eq!(app.live.new_while_paused, 0);
    assert_eq!(app.selected_row().unwrap().seq, 8);
}

#[test]
fn the_ring_is_bounded() {
    let mut app = App::new(10, false);
    feed(&mut app, (1..=25).map(|s| decision(s, "allow", "t")));
    assert_eq!(app.row_count(), 10);
    assert_eq!(app.rows().next().unwrap().seq, 25);
    assert_eq!(app.rows().last().unwrap().seq, 16);
}

#[test]
fn the_seam_after_a_reconnect_has_no_gap_and_no_duplicate() {
    let mut app = connected_app();
    // The backfill comes newest first; the stream then replays from its highest seq,
    // and may repeat what the backfill brought.
    app.on_net(NetEvent::Backfill(
        (1..=4)
            .rev()
            .map(|s| serde_json::from_value(decision(s, "allow", "t")).unwrap())
            .collect(),
    ));
    feed(&mut app, (3..=6).map(|s| decision(s, "allow", "t")));
    app.on_net(NetEvent::Connection(Connection::Disconnected {
        since: Utc::now(),
    }));
    feed(&mut app, (5..=8).map(|s| decision(s, "deny", "t")));
    let seqs: Vec<u64> = app.rows().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        app.rows().find(|r| r.seq == 5).unwrap().call.outcome,
        crate::api::Outcome::Allow,
        "the first copy wins"
    );
}

#[test]
fn a_conflict_on_approve_says_who_won_and_is_not_an_error() {
    let mut app = connected_app();
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    let mut hold = app.model.holds[0].clone();
    hold.resolution = Some(Resolution::Denied);
    hold.resolved_by = Some("bob".into());
    app.on_net(NetEvent::Resolved {
        call_id: hold.call_id.clone(),
        outcome: Err(ResolveFailure::AlreadyResolved(Box::new(hold))),
    });
    assert_eq!(app.flash.as_ref().unwrap().0, "already denied by bob");
    assert_eq!(app.model.holds[0].resolution, Some(Resolution::Denied));
    assert_eq!(
        app.model.fates[app.model.holds[0].call_id.as_str()].by,
        "bob"
    );
}

#[test]
fn read_only_refuses_approve_and_deny() {
    let mut app = App::new(100, true);
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    app.view = View::Held;
    assert!(app.on_key(ch('a')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.flash.as_ref().unwrap().0.starts_with("read-only"));
    assert!(app.keymap.entries(true).iter().all(|(_, a)| !a.mutates()));
}

#[test]
fn enter_on_the_confirm_dialog_cancels_and_y_confirms() {
    let mut app = connected_app();
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    app.view = View::Held;
    app.on_key(ch('a'));
    assert!(matches!(app.mode, Mode::Confirm(_)));
    assert!(
        app.on_key(key(KeyCode::Enter)).is_empty(),
        "Enter takes the default: Cancel"
    );
    assert_eq!(app.mode, Mode::Normal);

    app.on_key(ch('a'));
    let commands = app.on_key(ch('y'));
    assert_eq!(
        commands,
        vec![Command::Resolve {
            call_id: app.model.holds[0].call_id.clone(),
            approve: true,
            reason: None,
            grant: None
        }]
    );

    // A deny asks for a reason first; Enter ends it, y confirms.
    app.on_key(ch('d'));
    for c in "not today".chars() {
        app.on_key(ch(c));
    }
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    let commands = app.on_key(ch('y'));
    assert_eq!(
        commands,
        vec![Command::Resolve {
            call_id: app.model.holds[0].call_id.clone(),
            approve: false,
            reason: Some("not today".into()),
            grant: None
        }]
    );
}

#[test]
fn a_resolved_hold_lingers_with_its_fate_then_goes() {
    let mut app = connected_app();
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    let call_id = app.model.holds[0].call_id.clone();
    feed(
        &mut app,
        [
            json!({"seq": 3, "kind": "hold.resolved", "call_id": call_id, "resolution": "approved", "by": "alice", "reason": null}),
        ],
    );
    assert!(!app.expire_fates(Instant::now()), "still on screen");
    assert_eq!(app.model.holds.len(), 1);
    assert!(app.expire_fates(Instant::now() + FATE_LINGER));
    assert!(app.model.holds.is_empty());
    assert_eq!(app.pending_count(), 0);
}

#[test]
fn commands_switch_views_and_quit() {
    let mut app = connected_app();
    for c in ":held".chars() {
        app.on_key(ch(c));
    }
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Held);
    app.on_key(ch(':'));
    app.on_key(ch('l'));
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.command_text(), Some("live"));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Live);
    app.on_key(ch(':'));
    app.on_key(ch('q'));
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Command::Quit]);
}

// Snapshots: the whole screen on a TestBackend, fed through `on_net` like the network.

pub(super) fn sample_app() -> App {
    let mut app = connected_app();
    feed(
        &mut app,
        [
            decision(1, "allow", "get_issue"),
            json!({"seq": 1, "kind": "call.completed", "call_id": "01900000000000000000000000000001",
                   "result": "ok", "upstream_status": 200, "duration_ms": 12}),
            decision(2, "deny", "delete_page"),
            decision(3, "hold", "create_issue"),
            hold_created(4, 3, "2026-11-26T10:14:30.000Z"),
            decision(5, "hold", "force_push"),
            hold_created(6, 5, "2026-11-26T10:00:40.000Z"),
        ],
    );
    app.model
        .holds
        .iter_mut()
        .for_each(|h| h.phase = HoldPhase::Pending);
    app
}

pub(super) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub(super) fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| ui::draw(f, app, &Theme::default(), now()))
        .unwrap();
    terminal
}

pub(super) fn cell_style_of(terminal: &Terminal<TestBackend>, text: &str) -> ratatui::style::Style {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    let content: Vec<String> = buffer
        .content()
        .iter()
        .map(|c| c.symbol().to_owned())
        .collect();
    let joined = content.concat();
    let at = joined
        .find(text)
        .unwrap_or_else(|| panic!("{text:?} is not on screen"));
    let index = joined[..at].chars().count();
    let _ = width;
    buffer.content()[index].style()
}

#[test]
fn snapshot_live_view() {
    let app = sample_app();
    for (w, h) in [(80, 24), (120, 40)] {
        let terminal = render(&app, w, h);
        insta::assert_snapshot!(format!("live_{w}x{h}"), terminal.backend());
    }
    let terminal = render(&app, 120, 40);
    assert_eq!(
        cell_style_of(&terminal, "deny ").fg,
        Some(ratatui::style::Color::Red),
        "deny is red"
    );
    assert_eq!(
        cell_style_of(&terminal, "hold ").fg,
        Some(ratatui::style::Color::Yellow),
        "hold is yellow"
    );
}

#[test]
fn snapshot_held_view_with_countdowns() {
    let mut app = sample_app();
    app.view = View::Held;
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("held_{w}x{h}"), render(&app, w, h).backend());
    }
    let terminal = render(&app, 120, 40);
    assert_eq!(
        cell_style_of(&terminal, "00:40").fg,
        Some(ratatui::style::Color::Red),
        "near expiry is red"
    );
}

#[test]
fn snapshot_detail_confirm_and_help() {
    let mut app = sample_app();
    for _ in 0..3 {
        app.on_key(ch('j'));
    }
    app.on_key(key(KeyCode::Enter));
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("detail_{w}x{h}"), render(&app, w, h).backend());
    }
    app.on_key(key(KeyCode::Esc));
    app.view = View::Held;
    app.on_key(ch('a'));
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("confirm_{w}x{h}"), render(&app, w, h).backend());
    }
    app.on_key(key(KeyCode::Esc));
    app.on_key(ch('?'));
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("help_{w}x{h}"), render(&app, w, h).backend());
    }
}

#[test]
fn a_small_terminal_gets_a_message() {
    let terminal = render(&sample_app(), 60, 20);
    let text: String = terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(text.contains("terminal too small: 60x20"), "{text}");
}

#[test]
fn an_approval_then_its_consumption_keeps_the_row_with_its_fate() {
    let mut app = connected_app();
    feed(
        &mut app,
        [
            decision(1, "hold", "write_page"),
            hold_created(2, 1, "2099-01-01T00:00:00.000Z"),
        ],
    );
    let mut approved = app.model.holds[0].clone();
    approved.resolution = Some(Resolution::Approved);
    approved.resolved_by = Some("olga".into());
    let call_id = approved.call_id.clone();
    app.on_net(NetEvent::Resolved {
        call_id: call_id.clone(),
        outcome: Ok(Box::new(approved)),
    });
    feed(
        &mut app,
        [
            json!({"seq": 3, "kind": "hold.resolved", "call_id": call_id, "resolution": "approved", "by": "olga", "reason": null}),
            json!({"seq": 4, "kind": "hold.resolved", "call_id": call_id, "resolution": "consumed", "by": "client", "reason": null}),
            decision(5, "allow", "read_page"),
        ],
    );
    app.expire_fates(Instant::now());
    assert_eq!(app.model.holds.len(), 1, "{:?}", app.model.holds);
    assert_eq!(
        app.model.holds[0].resolved_by.as_deref(),
        Some("olga"),
        "the operator's fate, not the consumption"
    );
}

pub(super) fn tool_row(name: &str, risk: &str, version: u64) -> Value {
    json!({"upstream": "atlassian", "name": name, "title": null, "annotations": {"readOnlyHint": false, "destructiveHint": true},
           "definition_sha256": "ab", "suggested_risk": "write", "risk": risk, "source": "annotations",
           "version": version, "updated_by": "toolgate", "updated_at": "2026-11-26T10:00:00.000Z", "note": null,
           "calls": {"allow": 3, "deny": 1, "hold": 2}})
}

#[test]
fn a_risk_edit_shows_at_once_and_is_rolled_back_on_409() {
    let mut app = connected_app();
    app.on_net(catalog(vec![
        tool_row("create_issue", "write", 3),
        tool_row("delete_page", "destructive", 1),
    ]));
    app.view = View::Tools;
    // Every change asks first, after a replay of what it would have done.
    assert!(previews(app.on_key(ch('r'))));
    assert!(matches!(app.mode, Mode::Reclassify(_)));
    let commands = app.on_key(ch('y'));
    assert_eq!(
        commands,
        vec![Command::SetRisk {
            upstream: "atlassian".into(),
            tool: "create_issue".into(),
            risk: crate::api::Risk::Read,
            expected_version: 3,
            note: None,
        }]
    );
    assert_eq!(
        app.model.tools[0].tool.risk,
        Risk::Read,
        "the change shows at once"
    );
    // Someone else changed it first: the row is what the gateway says it is now.
    let mut current = tool_row("create_issue", "destructive", 4);
    current["updated_by"] = json!("bob");
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "create_issue".into(),
        outcome: Err(RiskFailure::Stale(Box::new(
            serde_json::from_value(current).unwrap(),
        ))),
    });
    assert_eq!(
        (
            app.model.tools[0].tool.risk,
            app.model.tools[0].tool.version
        ),
        (Risk::Destructive, 4)
    );
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "not changed: bob set create_issue to destructive first; try again"
    );
    // Any other failure restores the row as it was.
    app.on_key(ch('u'));
    app.on_key(ch('y'));
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "create_issue".into(),
        outcome: Err(RiskFailure::Other("store_unavailable".into())),
    });
    assert_eq!(app.model.tools[0].tool.risk, Risk::Destructive);
    // And a success keeps it, at the new version.
    app.on_key(ch('w'));
    app.on_key(ch('y'));
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "create_issue".into(),
        outcome: Ok(Box::new(
            serde_json::from_value(json!({"seq": 9, "ts": "2026-11-26T10:00:09.000Z",
                "kind": "risk.changed", "upstream": "atlassian", "tool": "create_issue",
                "from": "destructive", "to": "write", "version": 5, "by": "olga", "note": null}))
            .unwrap(),
        )),
    });
    assert_eq!(
        (
            app.model.tools[0].tool.risk,
            app.model.tools[0].tool.version
        ),
        (Risk::Write, 5)
    );
    let read_only = &mut App::new(10, true);
    read_only.on_net(catalog(vec![tool_row("create_issue", "write", 3)]));
    read_only.view = View::Tools;
    assert!(
        read_only.on_key(ch('r')).is_empty(),
        "read-only refuses risk edits"
    );
}

#[test]
fn snapshot_tools_view() {
    let mut app = connected_app();
    app.on_net(catalog(vec![
        tool_row("create_issue", "write", 3),
        tool_row("delete_page", "destructive", 1),
    ]));
    app.view = View::Tools;
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("tools_{w}x{h}"), render(&app, w, h).backend());
    }
}

pub(super) fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.on_key(ch(c));
    }
}

#[test]
fn a_filter_applies_as_typed_per_view_and_esc_puts_the_old_one_back() {
    let mut app = sample_app();
    app.on_key(ch('/'));
    typed(&mut app, "outcome:hold");
    let tools: Vec<&str> = app.visible_rows().map(|r| r.call.tool.as_str()).collect();
    assert_eq!(
        tools,
        ["force_push", "create_issue"],
        "it filters while typing"
    );
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.filter_text(View::Live), Some("outcome:hold"));

    // Selection moves within what is shown: one step older is create_issue, not delete_page.
    app.on_key(ch('j'));
    assert_eq!(app.selected_row().unwrap().call.tool, "create_issue");

    // A half-typed field keeps the last good filter and says why; Esc restores it.
    app.on_key(ch('/'));
    typed(&mut app, " !tol:x");
    assert!(app.filter_error().unwrap().contains("unknown field `tol:`"));
    assert_eq!(app.visible_rows().count(), 2);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.filter_text(View::Live), Some("outcome:hold"));

    // Inversion, and each view keeps its own filter.
    app.on_key(ch('/'));
    for _ in 0.."outcome:hold".len() {
        app.on_key(key(KeyCode::Backspace));
    }
    typed(&mut app, "!outcome:hold !risk:read");
    app.on_key(key(KeyCode::Enter));
    let tools: Vec<&str> = app.visible_rows().map(|r| r.call.tool.as_str()).collect();
    assert_eq!(tools, ["delete_page"]);
    app.view = View::Held;
    assert_eq!(app.filter_text(View::Held), None);
    assert_eq!(app.visible_holds().len(), 2);
    app.on_key(ch('/'));
    typed(&mut app, "tool:create");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.visible_holds().len(), 1);
    assert_eq!(app.selected_hold().unwrap().call.tool, "create_issue");

    // A new row that the filter hides does not move a paused selection.
    app.view = View::Live;
    app.on_key(ch('j'));
    let paused_at = app.selected_row().unwrap().seq;
    feed(&mut app, [decision(7, "allow", "get_issue")]);
    assert_eq!(
        (app.selected_row().unwrap().seq, app.live.new_while_paused),
        (paused_at, 0)
    );
    feed(&mut app, [decision(8, "deny", "purge")]);
    assert_eq!(
        (app.selected_row().unwrap().seq, app.live.new_while_paused),
        (paused_at, 1)
    );
}

#[test]
fn the_tools_filter_and_class_picker_edit_the_tool_that_is_shown() {
    let mut app = connected_app();
    app.on_net(catalog(vec![
        tool_row("create_issue", "write", 3),
        tool_row("delete_page", "destructive", 1),
    ]));
    app.view = View::Tools;
    app.on_key(ch('/'));
    typed(&mut app, "risk:dest");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.visible_tools(), [1]);
    app.on_key(ch('/'));
    for _ in 0.."risk:dest".len() {
        app.on_key(key(KeyCode::Backspace));
    }
    typed(&mut app, "upstream:atl !create");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.visible_tools(), [1]);
    // `e` opens the picker on the current class; up twice is write, Enter sets it.
    app.on_key(ch('e'));
    assert!(matches!(&app.mode, Mode::ClassPicker(p) if p.index == 2));
    app.on_key(ch('k'));
    // A confirmation, with a note.
    assert!(previews(app.on_key(key(KeyCode::Enter))));
    app.on_key(ch('r'));
    typed(&mut app, "vendor confirms");
    app.on_key(key(KeyCode::Enter));
    let commands = app.on_key(ch('y'));
    assert_eq!(
        commands,
        vec![Command::SetRisk {
            upstream: "atlassian".into(),
            tool: "delete_page".into(),
            risk: Risk::Write,
            expected_version: 1,
            note: Some("vendor confirms".into()),
        }]
    );
    // While that change is being saved, the tool takes no other.
    app.on_key(ch('e'));
    assert!(app.on_key(ch('u')).is_empty());
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "delete_page: the last change is still being saved; try again"
    );
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "delete_page".into(),
        outcome: Ok(Box::new(
            serde_json::from_value(json!({"seq": 9, "ts": "2026-11-26T10:00:09.000Z",
                "kind": "risk.changed", "upstream": "atlassian", "tool": "delete_page",
                "from": "destructive", "to": "write", "version": 2, "by": "ada", "note": "vendor confirms"}))
            .unwrap(),
        )),
    });
    // A letter in the picker sets that class at once; Esc cancels.
    app.on_key(ch('e'));
    assert!(app.on_key(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    app.on_key(ch('e'));
    assert!(previews(app.on_key(ch('u'))));
    assert!(matches!(
        app.on_key(ch('y')).as_slice(),
        [Command::SetRisk {
            risk: Risk::Unclassified,
            ..
        }]
    ));
}

#[test]
fn marked_holds_get_one_confirm_and_one_summary() {
    let mut app = sample_app();
    feed(
        &mut app,
        [
            decision(7, "hold", "merge_pr"),
            hold_created(8, 7, "2026-11-26T10:20:00.000Z"),
        ],
    );
    app.view = View::Held;
    app.select_hold(0);
    // Mark the first and the third; space moves down after marking.
    app.on_key(key(KeyCode::Char(' ')));
    app.on_key(ch('j'));
    app.on_key(key(KeyCode::Char(' ')));
    assert_eq!(app.held.marked.len(), 2);
    let marked: Vec<String> = app.held.marked.iter().cloned().collect();
    app.on_key(ch('d'));
    let Mode::Confirm(confirm) = &app.mode else {
        panic!("a confirm opens")
    };
    assert_eq!(confirm.holds.len(), 2, "one dialog for every marked hold");
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(
            format!("bulk_confirm_{w}x{h}"),
            render(&app, w, h).backend()
        );
    }
    typed(&mut app, "batch cleanup");
    app.on_key(key(KeyCode::Enter));
    let commands = app.on_key(ch('y'));
    let mut resolved: Vec<String> = commands
        .iter()
        .map(|c| match c {
            Command::Resolve {
                call_id,
                approve: false,
                reason: Some(r),
                ..
            } if r == "batch cleanup" => call_id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    resolved.sort();
    assert_eq!(resolved, marked);
    assert!(app.held.marked.is_empty(), "marks are spent");

    // Two answers, one lost to another operator: one line sums them up.
    let mut first = app
        .model
        .holds
        .iter()
        .find(|h| h.call_id == marked[0])
        .unwrap()
        .clone();
    first.resolution = Some(Resolution::Denied);
    first.resolved_by = Some("olga".into());
    app.on_net(NetEvent::Resolved {
        call_id: marked[0].clone(),
        outcome: Ok(Box::new(first)),
    });
    assert_eq!(app.flash.as_ref().unwrap().0, "denying 2 held calls…");
    let mut second = app
        .model
        .holds
        .iter()
        .find(|h| h.call_id == marked[1])
        .unwrap()
        .clone();
    second.resolution = Some(Resolution::Approved);
    second.resolved_by = Some("bob".into());
    app.on_net(NetEvent::Resolved {
        call_id: marked[1].clone(),
        outcome: Err(ResolveFailure::AlreadyResolved(Box::new(second))),
    });
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "denied 1 of 2; already approved by bob"
    );

    // Marks on holds that are resolved elsewhere fall away.
    let last = app
        .model
        .holds
        .iter()
        .position(|h| h.resolution.is_none())
        .unwrap();
    app.select_hold(last);
    app.on_key(key(KeyCode::Char(' ')));
    let id = app.held.marked.iter().next().unwrap().clone();
    feed(
        &mut app,
        [
            json!({"seq": 9, "kind": "hold.resolved", "call_id": id, "resolution": "expired", "by": "toolgate", "reason": null}),
        ],
    );
    app.expire_fates(Instant::now());
    assert!(app.held.marked.is_empty());
}

#[test]
fn switching_context_while_disconnected_starts_clean() {
    let mut app = sample_app();
    app.context = Some("staging".into());
    app.context_names = vec!["staging".into(), "prod".into()];
    app.on_net(NetEvent::Connection(Connection::Disconnected {
        since: Utc::now(),
    }));
    app.view = View::Held;
    app.on_key(key(KeyCode::Char(' ')));
    app.on_key(ch('/'));
    typed(&mut app, "tool:force");
    app.on_key(key(KeyCode::Enter));

    app.on_key(ch(':'));
    typed(&mut app, "ctx pr");
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.command_text(), Some("ctx prod"), "the name completes");
    let commands = app.on_key(key(KeyCode::Enter));
    assert_eq!(commands, vec![Command::SwitchContext("prod".into())]);
    assert_eq!(
        app.context.as_deref(),
        Some("staging"),
        "nothing changes until it is made"
    );

    app.enter_context("prod", true);
    assert_eq!(app.context.as_deref(), Some("prod"));
    assert_eq!(
        app.connection,
        Connection::Connecting,
        "not the old context's state"
    );
    assert!(app.read_only);
    assert_eq!(
        (
            app.row_count(),
            app.model.holds.len(),
            app.held.marked.len(),
            app.model.max_seq
        ),
        (0, 0, 0, 0),
        "nothing from staging shows as prod's"
    );
    assert!(app.model.store_id.is_none());
    assert_eq!(app.view, View::Held, "the view stays");
    assert_eq!(
        app.filter_text(View::Held),
        Some("tool:force"),
        "so do the filters"
    );
    assert_eq!(app.context_names, ["staging", "prod"]);
    // Rows stream in from prod from seq 1, even though staging was further along.
    feed(&mut app, [decision(1, "allow", "get_issue")]);
    assert_eq!(app.row_count(), 1);

    app.on_key(ch(':'));
    typed(&mut app, "ctx dev");
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "no context is named \"dev\" (the contexts: staging, prod)"
    );
}

#[test]
fn commands_complete_names_and_themes() {
    let ctx = [
        "staging".to_owned(),
        "prod".to_owned(),
        "prod-eu".to_owned(),
    ];
    let themes = [
        "default".to_owned(),
        "light".to_owned(),
        "high-contrast".to_owned(),
    ];
    assert_eq!(
        complete("t", &ctx, &themes).0,
        "t",
        "tools and theme share a t"
    );
    assert_eq!(complete("to", &ctx, &themes).0, "to", "tools and tokens");
    assert_eq!(complete("too", &ctx, &themes).0, "tools");
    assert_eq!(complete("tok", &ctx, &themes).0, "tokens");
    assert_eq!(complete("th", &ctx, &themes).0, "theme ");
    assert_eq!(complete("theme l", &ctx, &themes).0, "theme light");
    let (text, candidates) = complete("ctx p", &ctx, &themes);
    assert_eq!((text.as_str(), candidates.len()), ("ctx prod", 2));
    assert_eq!(complete("ctx x", &ctx, &themes).0, "ctx x");
    // Names that differ inside a multi-byte character complete to the shared part.
    let wide = [
        "生产".to_owned(),
        "生活".to_owned(),
        "prodé".to_owned(),
        "prodè".to_owned(),
    ];
    assert_eq!(complete("ctx 生", &wide, &themes).0, "ctx 生");
    assert_eq!(complete("ctx p", &wide, &themes).0, "ctx prod");

    let mut app = connected_app();
    app.on_key(ch(':'));
    typed(&mut app, "theme neon");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        vec![Command::SetTheme("neon".into())],
        "the main loop loads it and reports a failure"
    );
}

#[test]
fn c_and_shift_c_copy_the_id_and_the_json() {
    let mut app = sample_app();
    app.on_key(ch('j'));
    let id = app.selected_row().unwrap().call_id().to_owned();
    assert_eq!(app.on_key(ch('c')), vec![Command::Copy(id.clone())]);
    let commands = app.on_key(KeyEvent::new(KeyCode::Char('C'), KeyModifiers::SHIFT));
    let [Command::Copy(json)] = commands.as_slice() else {
        panic!("{commands:?}")
    };
    let copied: Value = serde_json::from_str(json).unwrap();
    assert_eq!(copied["call_id"], id.as_str());
    assert_eq!(
        copied["args"]["password"], "[REDACTED]",
        "what is copied is what was stored"
    );
    // The held view's selection is a call: the first hold that arrived stays selected
    // when a hold that expires sooner sorts above it.
    app.view = View::Held;
    let selected = app.selected_hold().unwrap().clone();
    assert_eq!(selected.call.tool, "create_issue");
    assert_eq!(
        app.on_key(ch('c')),
        vec![Command::Copy(selected.call_id.clone())]
    );
}

#[test]
fn snapshot_filter_and_command_line() {
    let mut app = sample_app();
    app.on_key(ch('/'));
    typed(&mut app, "!outcome:allow risk:w");
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("filter_{w}x{h}"), render(&app, w, h).backend());
    }
    app.on_key(key(KeyCode::Enter));
    app.on_key(ch(':'));
    typed(&mut app, "tools");
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("command_{w}x{h}"), render(&app, w, h).backend());
    }
    app.on_key(key(KeyCode::Enter));
    app.on_net(catalog(vec![
        tool_row("create_issue", "write", 3),
        tool_row("delete_page", "destructive", 1),
    ]));
    app.on_key(ch('e'));
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(
            format!("class_picker_{w}x{h}"),
            render(&app, w, h).backend()
        );
    }
}
