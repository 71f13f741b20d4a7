//! The on-call defects of issue 14, each as the operator meets it: keys pressed on the
//! `App`, the screen read from a rendered buffer.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::json;

use super::tests::{
    ch, connected_app, decision, feed, hold_created, key, now, one_hold, render, sample_app, typed,
};
use super::*;
use crate::api::Risk;
use crate::console::ui::{self, Theme};

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

/// The screen as lines of text.
pub(super) fn screen(terminal: &Terminal<TestBackend>) -> Vec<String> {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    buffer
        .content()
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect())
        .collect()
}

/// The table rows (below the header, title and column names) drawn in the selection's
/// style.
fn highlighted(terminal: &Terminal<TestBackend>) -> Vec<String> {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    let selection = Theme::default().selection;
    assert!(
        !selection.add_modifier.is_empty(),
        "the default theme reverses the selection"
    );
    buffer
        .content()
        .chunks(width)
        .skip(3)
        .filter(|row| row[2].style().add_modifier.contains(selection.add_modifier))
        .map(|row| row.iter().map(|c| c.symbol()).collect())
        .collect()
}

fn sized(width: u16, height: u16) -> App {
    let mut app = connected_app();
    app.resize(width, height);
    app
}

/// `n` held calls, each with its own target `T-<i>` so a row names its call.
fn held_queue(app: &mut App, n: u64) {
    for i in 1..=n {
        let mut d = decision(i * 2 - 1, "hold", "write_page");
        d["target"] = json!({"kind": "page", "id": format!("T-{i}")});
        // Later calls expire later, so expiry order is arrival order.
        feed(
            app,
            [
                d,
                hold_created(
                    i * 2,
                    i * 2 - 1,
                    &format!("2099-01-01T00:{:02}:{:02}.000Z", i / 60, i % 60),
                ),
            ],
        );
    }
}

#[test]
fn a_hundred_holds_at_80x24_keep_the_selection_on_screen_and_the_dialog_names_it() {
    let mut app = sized(80, 24);
    held_queue(&mut app, 100);
    app.on_key(ch(':'));
    typed(&mut app, "held");
    app.on_key(key(KeyCode::Enter));
    let keys: Vec<KeyEvent> = std::iter::repeat_n(ch('j'), 60)
        .chain([key(KeyCode::PageDown), key(KeyCode::PageDown)])
        .chain(std::iter::repeat_n(ch('k'), 5))
        .chain([key(KeyCode::PageUp), ch('G'), ch('g'), key(KeyCode::End)])
        .chain(std::iter::repeat_n(ch('k'), 70))
        .collect();
    for (n, k) in keys.into_iter().enumerate() {
        app.on_key(k);
        let selected = app.selected_hold().unwrap();
        let target = format!(
            "T-{} ",
            selected
                .call
                .target
                .as_ref()
                .unwrap()
                .id
                .trim_start_matches("T-")
        );
        let terminal = render(&app, 80, 24);
        let lines = highlighted(&terminal);
        assert_eq!(lines.len(), 1, "key {n}: one highlighted row: {lines:?}");
        assert!(
            lines[0].contains(&format!("page:{}", target.trim())),
            "key {n}: the highlighted row is the selected hold {target}: {lines:?}"
        );
    }
    // 100 - 70 = the 30th hold is selected; the dialog names exactly it.
    let selected = app.selected_hold().unwrap().clone();
    assert_eq!(selected.call.target.as_ref().unwrap().id, "T-30");
    app.on_key(ch('a'));
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(
        text.contains(&format!("Approve held call {}?", short(&selected.call_id))),
        "{text}"
    );
    assert!(text.contains("target    page:T-30"), "{text}");
    assert_eq!(
        app.on_key(ch('y')),
        vec![Command::Resolve {
            call_id: selected.call_id,
            approve: true,
            reason: None,
            grant: None
        }]
    );
}

#[test]
fn a_held_call_turns_pending_when_its_wait_ends_without_a_refetch() {
    let mut app = connected_app();
    one_hold(&mut app, "2026-11-26T10:05:00.000Z");
    app.view = View::Held;
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(text.contains("waiting"), "{text}");
    app.on_key(ch('a'));
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(
        text.contains("expires in 05:00 · the agent is waiting on the line"),
        "{text}"
    );
    // The stream says the client stopped waiting; the open dialog and the row both show it.
    let call_id = app.model.holds[0].call_id.clone();
    feed(
        &mut app,
        [json!({"seq": 3, "kind": "hold.phase", "call_id": call_id, "phase": "pending"})],
    );
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(text.contains("the agent left"), "{text}");
    app.on_key(key(KeyCode::Esc));
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(
        text.contains("pending") && !text.contains("waiting"),
        "{text}"
    );
}

#[test]
fn no_key_but_quit_acts_on_a_screen_too_small_to_show_it() {
    let mut app = connected_app();
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    app.view = View::Held;
    app.resize(60, 20);
    for k in [
        ch('a'),
        ch('y'),
        ch('d'),
        key(KeyCode::Enter),
        ch(':'),
        ch('/'),
    ] {
        assert!(app.on_key(k).is_empty());
        assert_eq!(app.mode, Mode::Normal, "nothing opens unseen");
    }
    assert_eq!(app.model.holds[0].resolution, None);
    assert_eq!(app.on_key(ch('q')), vec![Command::Quit]);
    // Bigger again: keys act.
    app.resize(80, 24);
    app.on_key(ch('a'));
    assert!(matches!(app.mode, Mode::Confirm(_)));
}

#[test]
fn a_rejected_token_says_so_in_the_header_and_is_not_an_outage() {
    let mut app = connected_app();
    app.on_net(NetEvent::Connection(Connection::Rejected {
        status: 401,
        gateway: "http://127.0.0.1:7801".into(),
        since: now(),
    }));
    let text = screen(&render(&app, 120, 40));
    assert!(
        text[0].contains("✕ token rejected by http://127.0.0.1:7801 (401)"),
        "{}",
        text[0]
    );
    assert!(!text[0].contains("reconnecting"));
    assert!(
        app.flash.as_ref().unwrap().0.contains(":reconnect"),
        "the operator is told what to do"
    );
    app.on_key(ch(':'));
    typed(&mut app, "reconnect");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Command::Reconnect]);
}

#[test]
fn while_disconnected_rows_are_stale_clocks_stop_and_approving_says_why_not() {
    let mut app = sample_app();
    app.view = View::Held;
    let lost = now() + chrono::Duration::seconds(10);
    app.on_net(NetEvent::Connection(Connection::Disconnected {
        since: lost,
    }));
    // Drawn a minute later, the countdowns show the time left when the link was lost.
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    terminal
        .draw(|f| {
            ui::draw(
                f,
                &app,
                &Theme::default(),
                now() + chrono::Duration::seconds(70),
            )
        })
        .unwrap();
    let text = screen(&terminal);
    assert!(
        text[0].contains("✕ disconnected since 10:00:10"),
        "{}",
        text[0]
    );
    assert!(
        text.join("\n").contains("00:30 pending"),
        "{}",
        text.join("\n")
    );
    assert!(text.join("\n").contains("held calls (stale)"));
    let row = text.iter().position(|l| l.contains("force_push")).unwrap();
    let stale = Theme::default().stale;
    let cell = &terminal.backend().buffer().content()[row * 120 + 20];
    assert!(
        cell.style().add_modifier.contains(stale.add_modifier),
        "held rows are dimmed: {cell:?}"
    );
    assert!(app.on_key(ch('a')).is_empty());
    assert_eq!(app.mode, Mode::Normal, "no dialog that would then fail");
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .starts_with("the gateway is unreachable (since 10:00:10)"),
        "{:?}",
        app.flash
    );
}

#[test]
fn paused_is_frozen_rows_and_selection_stay_while_new_ones_are_counted() {
    let mut app = sized(80, 24);
    feed(
        &mut app,
        (1..=40).map(|s| decision(s, "allow", "get_issue")),
    );
    for _ in 0..3 {
        app.on_key(ch('j'));
    }
    let before = screen(&render(&app, 80, 24));
    let selected = app.selected_row().unwrap().seq;
    feed(&mut app, (41..=45).map(|s| decision(s, "deny", "purge")));
    let after = screen(&render(&app, 80, 24));
    assert_eq!(
        before[2..22],
        after[2..22],
        "the rows on screen do not move"
    );
    assert_eq!(app.selected_row().unwrap().seq, selected);
    assert!(after[0].contains("paused +5 new"), "{}", after[0]);
    app.on_key(ch('g'));
    assert_eq!(app.selected_row().unwrap().seq, 45, "g follows again");
}

#[test]
fn the_detail_pane_tells_the_whole_story_of_a_held_call() {
    let mut app = connected_app();
    let mut d = decision(1, "hold", "merge_pr");
    d["workflow"] = json!({"ticket": "OPS-42", "change_window": true});
    let call_id = d["call_id"].as_str().unwrap().to_owned();
    feed(
        &mut app,
        [
            d,
            hold_created(2, 1, "2099-01-01T00:00:00.000Z"),
            json!({"seq": 3, "ts": "2026-11-26T10:01:02.000Z", "kind": "hold.resolved", "call_id": call_id,
                   "resolution": "approved", "by": "olga", "reason": "change CHG-7 approved"}),
            json!({"seq": 4, "kind": "hold.resolved", "call_id": call_id, "resolution": "consumed", "by": "client", "reason": null}),
            json!({"seq": 5, "kind": "call.completed", "call_id": call_id, "result": "tool_error",
                   "upstream_status": 200, "duration_ms": 31}),
        ],
    );
    app.on_key(key(KeyCode::Enter));
    let text = screen(&render(&app, 200, 40)).join("\n");
    for expected in [
        "time     2026-11-26 10:00:01.000Z",
        "identity token:ci-bot (groups ci)",
        "tool     atlassian/merge_pr",
        "risk     write",
        "target   jira_project:OPS",
        "workflow ticket OPS-42 · change window open",
        "policy   hold-policy",
        "reason   because hold",
        "hold     approved by olga (ran) at 10:01:02: “change CHG-7 approved”",
        "upstream tool_error (HTTP 200, 31 ms)",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // The row's wording says it ran, and never flips to `consumed`.
    assert!(text.contains("hold→approved (ran)"), "{text}");
}

#[test]
fn columns_share_the_width_and_cut_text_ends_with_an_ellipsis() {
    let mut app = connected_app();
    let mut d = decision(1, "allow", "confluence_update_page_with_a_very_long_name");
    d["identity"] = json!({"kind": "oauth", "name": "alice.longname@example.com", "groups": []});
    d["target"] = json!({"kind": "confluence_page", "id": "123456789"});
    feed(&mut app, [d]);
    for width in [80u16, 120, 200] {
        app.resize(width, 24);
        let text = screen(&render(&app, width, 24));
        let row = text.iter().find(|l| l.contains("10:00:01")).unwrap();
        if width == 200 {
            for whole in [
                "user:alice.longname@example.com",
                "confluence_update_page_with_a_very_long_name",
                "confluence_page:123456789",
            ] {
                assert!(row.contains(whole), "{width}: {whole} is whole: {row}");
            }
        } else {
            assert!(row.contains('…'), "{width}: cut text says so: {row}");
            assert!(
                row.contains("user:alice"),
                "{width}: identity keeps room: {row}"
            );
            assert!(
                row.contains("confluence_page"),
                "{width}: target keeps room: {row}"
            );
        }
        // Every cut ends in `…`: no cell shows a word cut without it.
        for cut in ["alice.longna ", "update_pa ", "confluence_pa "] {
            assert!(!row.contains(cut), "{width}: {cut:?} cut bare: {row}");
        }
    }
    // A message too long for the line is cut at a word, with `…`.
    app.notice("denied 3 of 7; already approved by bob; already approved by carol; could not resolve 0000beef: cannot reach the gateway");
    let text = screen(&render(&app, 80, 24));
    assert!(text[23].trim_end().ends_with('…'), "{}", text[23]);
    assert!(!text[23].contains("reac…"), "{}", text[23]);
}

#[test]
fn prompts_and_the_reason_field_edit_lines_like_a_shell() {
    let mut app = sample_app();
    app.on_key(ch(':'));
    typed(&mut app, "tools now");
    app.on_key(ctrl('w'));
    assert_eq!(app.command_text(), Some("tools "), "ctrl-w deletes a word");
    app.on_key(ctrl('u'));
    assert_eq!(app.command_text(), Some(""), "ctrl-u deletes the line");
    typed(&mut app, "eld");
    app.on_key(ctrl('a'));
    app.on_key(ch('h'));
    assert_eq!(app.command_text(), Some("held"), "ctrl-a goes home");
    app.on_key(key(KeyCode::End));
    app.on_key(key(KeyCode::Left));
    app.on_key(KeyEvent::new(KeyCode::Char('h'), KeyModifiers::CONTROL));
    assert_eq!(app.command_text(), Some("hed"), "ctrl-h deletes back");
    app.on_key(key(KeyCode::Home));
    app.on_key(key(KeyCode::Right));
    app.on_key(ctrl('e'));
    app.on_key(ch('x'));
    assert_eq!(app.command_text(), Some("hedx"), "ctrl-e goes to the end");
    app.on_key(key(KeyCode::Esc));

    // The filter line edits the same way and applies as it changes.
    app.on_key(ch('/'));
    typed(&mut app, "outcome:deny");
    app.on_key(ctrl('u'));
    assert_eq!(app.visible_rows().count(), 4, "an empty filter shows all");
    app.on_key(key(KeyCode::Enter));

    // The reason: editing keys, then Esc closes the dialog without acting.
    app.view = View::Held;
    app.on_key(ch('d'));
    typed(&mut app, "not today");
    app.on_key(ctrl('w'));
    typed(&mut app, "tonight");
    let Mode::Confirm(confirm) = &app.mode else {
        panic!("the dialog is open")
    };
    assert_eq!(confirm.ask.text.value(), "not tonight");
    assert!(app.on_key(key(KeyCode::Esc)).is_empty());
    assert_eq!(
        app.mode,
        Mode::Normal,
        "esc in the reason field closes the dialog"
    );
}

#[test]
fn approve_in_the_live_view_acts_on_the_selected_rows_hold_or_says_why_not() {
    let mut app = sample_app();
    // The newest row is the held force_push: `a` opens its dialog, in the live view.
    app.on_key(ch('j'));
    app.on_key(ch('k'));
    assert_eq!(app.selected_row().unwrap().call.tool, "force_push");
    app.on_key(ch('a'));
    let Mode::Confirm(confirm) = &app.mode else {
        panic!("the dialog opens")
    };
    assert_eq!(confirm.holds[0].call.tool, "force_push");
    assert_eq!(app.view, View::Live, "no silent jump to another view");
    app.on_key(key(KeyCode::Esc));
    // An allowed call is not held: a message, and nothing else moves.
    for _ in 0..3 {
        app.on_key(ch('j'));
    }
    assert_eq!(app.selected_row().unwrap().call.tool, "get_issue");
    assert!(app.on_key(ch('d')).is_empty());
    assert_eq!((app.view, &app.mode), (View::Live, &Mode::Normal));
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "the selected call is not waiting for approval"
    );
}

#[test]
fn the_held_view_sorts_and_jumps_to_the_hold_that_expires_soonest() {
    let mut app = sample_app();
    app.on_key(ch(':'));
    typed(&mut app, "held");
    app.on_key(key(KeyCode::Enter));
    let order = |app: &App| -> Vec<String> {
        app.visible_holds()
            .iter()
            .map(|h| h.call.tool.clone())
            .collect()
    };
    assert_eq!(order(&app), ["force_push", "create_issue"], "expiry first");
    app.on_key(ch('s'));
    assert_eq!(order(&app), ["create_issue", "force_push"], "then age");
    assert_eq!(
        app.selected_hold().unwrap().call.tool,
        "force_push",
        "the selection stays on its call"
    );
    app.on_key(ch('g'));
    assert_eq!(app.selected_hold().unwrap().call.tool, "create_issue");
    app.on_key(ch('n'));
    assert_eq!(
        app.selected_hold().unwrap().call.tool,
        "force_push",
        "n: soonest"
    );
}

fn risk_changed(seq: u64, tool: &str, from: &str, to: &str, version: u64) -> Box<Event> {
    Box::new(
        serde_json::from_value(json!({"seq": seq, "ts": "2026-11-26T10:00:09.000Z",
            "kind": "risk.changed", "upstream": "atlassian", "tool": tool,
            "from": from, "to": to, "version": version, "by": "ada", "note": null}))
        .unwrap(),
    )
}

#[test]
fn a_less_strict_class_asks_first_defaults_to_cancel_and_can_be_undone() {
    let mut app = connected_app();
    app.on_net(super::tests::catalog(vec![super::tests::tool_row(
        "delete_page",
        "destructive",
        4,
    )]));
    app.view = View::Tools;
    // Destructive to read: the dialog says so, shows the replay, and Enter cancels.
    assert_eq!(
        app.on_key(ch('r')),
        vec![Command::Preview {
            upstream: "atlassian".into(),
            tool: "delete_page".into(),
            risk: Risk::Read,
        }]
    );
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(text.contains("destructive → read: less strict"), "{text}");
    assert!(text.contains("replaying the recent calls…"), "{text}");
    let report: crate::api::ReplayReport = serde_json::from_value(json!({
        "first_seq": 1, "last_seq": 900, "decisions": 850,
        "transitions": {"deny→allow": 12, "unchanged": 838},
        "by_tool": [{"key": "atlassian/delete_page", "transitions": {"deny→allow": 12}}],
        "by_identity": [], "changed": [], "next_after": null, "upto": 900, "took_ms": 40}))
    .unwrap();
    // An answer for another change is not this dialog's.
    app.on_net(NetEvent::Previewed {
        upstream: "atlassian".into(),
        tool: "delete_page".into(),
        risk: Risk::Write,
        outcome: Ok(Box::new(report.clone())),
    });
    assert!(
        screen(&render(&app, 80, 24))
            .join("\n")
            .contains("replaying the recent calls…")
    );
    app.on_net(NetEvent::Previewed {
        upstream: "atlassian".into(),
        tool: "delete_page".into(),
        risk: Risk::Read,
        outcome: Ok(Box::new(report)),
    });
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(
        text.contains("over the last 850 decisions: deny→allow 12"),
        "{text}"
    );
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.model.tools[0].tool.risk,
        Risk::Destructive,
        "nothing changed"
    );
    // As strict (destructive → unclassified): no warning, but it still asks.
    assert!(super::tests::previews(app.on_key(ch('u'))));
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(!text.contains("less strict"), "{text}");
    let commands = app.on_key(ch('y'));
    assert!(matches!(
        commands.as_slice(),
        [Command::SetRisk {
            risk: Risk::Unclassified,
            expected_version: 4,
            ..
        }]
    ));
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "delete_page".into(),
        outcome: Ok(risk_changed(
            9,
            "delete_page",
            "destructive",
            "unclassified",
            5,
        )),
    });
    // Another admin's later change arrives as a fresh catalog (version 6).
    let mut later = super::tests::tool_row("delete_page", "unclassified", 6);
    later["updated_by"] = json!("bob");
    app.on_net(super::tests::catalog(vec![later]));
    // U names the tool and asks; it sends the version this console's change made, so
    // the gateway refuses it (409) rather than undo bob's change.
    assert!(super::tests::previews(app.on_key(ch('U'))));
    let text = screen(&render(&app, 80, 24)).join("\n");
    assert!(text.contains("atlassian/delete_page"), "{text}");
    assert!(text.contains("Undo your change (v5)"), "{text}");
    let commands = app.on_key(ch('y'));
    assert_eq!(
        commands,
        vec![Command::SetRisk {
            upstream: "atlassian".into(),
            tool: "delete_page".into(),
            risk: Risk::Destructive,
            expected_version: 5,
            note: None,
        }]
    );
    // Someone else's change shows as a message, and the catalog is fetched again.
    feed(
        &mut app,
        [
            json!({"seq": 10, "kind": "risk.changed", "upstream": "atlassian", "tool": "get_issue",
               "from": "read", "to": "write", "version": 2, "by": "bob", "note": null}),
        ],
    );
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "bob set atlassian/get_issue: read → write"
    );
    assert!(app.want_tools);
}

/// A gateway's traffic over the two minutes before `now()`, as the stream brings it.
fn busy_app() -> App {
    let mut app = connected_app();
    // Everything arrives at `now()`: the newest decision, made then, says there is no skew.
    app.clock = Some(now());
    let status: crate::api::StatusView = serde_json::from_value(json!({
        "version": "0.1.0", "uptime_secs": 7265, "store_id": "s1", "ready": true, "last_seq": 130,
        "upstreams": [
            {"name": "atlassian", "url": "http://127.0.0.1:9001/mcp", "tools": 14, "health": "ok"},
            {"name": "github", "url": "http://127.0.0.1:9002/mcp", "tools": 0, "health": "unreachable"},
            {"name": "files", "url": "stdio: npx", "tools": 14, "health": "ok", "stdio": {
                "processes": 2, "max_processes": 16, "sessions": 1, "started": 5, "restarts": 1,
                "last_exit": {"at": "2026-11-26T09:58:03Z", "how": "killed by signal 9",
                              "stderr": ["Secure MCP Filesystem Server running on stdio"]}}}
        ],
        "counters": {"decisions": {"allow": 900, "hold": 70, "deny": 30}, "holds_open": 1, "event_subscribers": 2},
        "policy": {"version": 3, "sha256": "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4"}
    }))
    .unwrap();
    app.on_net(NetEvent::Status(Box::new(status)));
    let mut events = Vec::new();
    for i in 0..120u64 {
        let outcome = match i % 10 {
            0 => "deny",
            1 | 2 => "hold",
            _ => "allow",
        };
        let mut d = decision(i + 1, outcome, "get_issue");
        // A burst in the last ten seconds, a trickle before.
        let secs_before = if i >= 100 {
            (119 - i) / 2
        } else {
            10 + (99 - i)
        };
        let at = now() - chrono::Duration::seconds(secs_before as i64);
        d["ts"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        events.push(d);
    }
    feed(&mut app, events);
    let mut held = decision(121, "hold", "merge_pr");
    held["ts"] = json!("2026-11-26T10:00:00.000Z");
    // A call id minted 3 minutes before now: its UUIDv7 says when it was held.
    let minted = (now() - chrono::Duration::seconds(185)).timestamp_millis() as u64;
    held["call_id"] = json!(format!(
        "{:08x}-{:04x}-7000-8000-000000000121",
        minted >> 16,
        minted & 0xffff
    ));
    feed(
        &mut app,
        [
            held,
            json!({"seq": 122, "kind": "hold.created", "call_id": format!("{:08x}-{:04x}-7000-8000-000000000121", minted >> 16, minted & 0xffff),
                   "expires_at": "2026-11-26T10:10:00.000Z", "ttl_ms": 600000, "phase": "pending"}),
            json!({"seq": 123, "kind": "policy.changed", "version": 4, "sha256": "ab", "by": "ada"}),
        ],
    );
    app
}

#[test]
fn snapshot_stats_from_the_stream_and_the_status() {
    let mut app = busy_app();
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "policy v4 is in force (by ada)",
        "a policy change made elsewhere shows as a message"
    );
    app.on_key(ch(':'));
    typed(&mut app, "stats");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Stats);
    for (w, h) in [(80, 24), (120, 40)] {
        app.resize(w, h);
        let terminal = render(&app, w, h);
        let text = screen(&terminal).join("\n");
        for expected in [
            "oldest 03:05",
            "policy v4",
            "held       1 open",
            "seen here  allow 84 (69%) · hold 25 (21%) · deny 12 (10%)",
            "github",
            "unreachable",
        ] {
            assert!(text.contains(expected), "{w}x{h}: {expected:?}:\n{text}");
        }
        insta::assert_snapshot!(format!("stats_{w}x{h}"), terminal.backend());
    }
}

#[test]
fn read_only_refuses_every_key_that_changes_the_gateway() {
    let mut app = App::new(100, true);
    app.on_net(NetEvent::Connected {
        store_id: "s1".into(),
    });
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    app.on_net(super::tests::catalog(vec![super::tests::tool_row(
        "delete_page",
        "destructive",
        4,
    )]));
    for (view, keys) in [
        (View::Held, &['a', 'd', ' '][..]),
        (View::Live, &['j', 'a', 'd'][..]),
        (View::Tools, &['e', 'r', 'w', 'x', 'u', 'U'][..]),
    ] {
        app.view = view;
        for &k in keys {
            assert!(app.on_key(ch(k)).is_empty(), "{view:?} {k}");
            assert_eq!(app.mode, Mode::Normal, "{view:?} {k}: no dialog opens");
        }
    }
    assert!(app.held.marked.is_empty());
    assert_eq!(app.model.tools[0].tool.risk, Risk::Destructive);
    assert!(app.flash.as_ref().unwrap().0.starts_with("read-only"));
    let text = screen(&render(&app, 120, 40)).join("\n");
    for hidden in ["a approve", "d deny", "e edit class", "U undo"] {
        assert!(
            !text.contains(hidden),
            "the hint bar hides {hidden:?}:\n{text}"
        );
    }
}

#[test]
fn a_reset_forgets_the_old_store_and_an_unknown_event_only_moves_the_seq() {
    let mut app = sample_app();
    app.view = View::Held;
    app.on_key(key(KeyCode::Char(' ')));
    assert_eq!(app.held.marked.len(), 1);
    // A newer gateway's event kind: skipped, its seq kept so a resume does not repeat it.
    feed(&mut app, []);
    app.on_net(NetEvent::Unknown {
        seq: Some(40),
        kind: Some("grant.used".into()),
    });
    assert_eq!(app.model.max_seq, 40);
    assert_eq!(app.row_count(), 4, "nothing else changed");
    // A decision it cannot read is one the operator could not answer: that is said.
    app.on_net(NetEvent::Unknown {
        seq: Some(41),
        kind: Some("decision".into()),
    });
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .starts_with("a decision event from a newer gateway"),
        "{:?}",
        app.flash
    );
    app.on_net(NetEvent::Reset);
    assert_eq!(
        (
            app.row_count(),
            app.model.holds.len(),
            app.held.marked.len(),
            app.model.max_seq
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "the gateway's store was recreated; reloaded"
    );
    // After a reconnect, the same address answering with another store is a reset too.
    app.on_net(NetEvent::Connected {
        store_id: "s2".into(),
    });
    feed(&mut app, [decision(1, "allow", "get_issue")]);
    app.on_net(NetEvent::Connection(Connection::Disconnected {
        since: now(),
    }));
    app.on_net(NetEvent::Connected {
        store_id: "s3".into(),
    });
    assert_eq!(app.row_count(), 0);
    assert_eq!(app.model.store_id.as_deref(), Some("s3"));
}

#[test]
fn a_paused_row_that_leaves_the_ring_is_said_and_the_rows_above_stay() {
    let mut app = App::new(30, false);
    app.resize(80, 24);
    app.on_net(NetEvent::Connected {
        store_id: "s1".into(),
    });
    feed(
        &mut app,
        (1..=30).map(|s| decision(s, "allow", "get_issue")),
    );
    for _ in 0..24 {
        app.on_key(ch('j'));
    }
    assert_eq!(app.selected_row().unwrap().seq, 6);
    let before = screen(&render(&app, 80, 24));
    // Three new rows push the three oldest out: the screen's rows above stay put.
    feed(&mut app, (31..=33).map(|s| decision(s, "deny", "purge")));
    let after = screen(&render(&app, 80, 24));
    let top = |s: &[String]| s[3..12].to_vec();
    assert_eq!(top(&before), top(&after));
    assert_eq!(app.selected_row().unwrap().seq, 6);
    // Three more take the selected row: the console says so and selects the oldest left.
    feed(&mut app, (34..=36).map(|s| decision(s, "deny", "purge")));
    assert_eq!(app.selected_row().unwrap().seq, 7);
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .starts_with("the selected row left the ring"),
        "{:?}",
        app.flash
    );
}

#[test]
fn following_rows_are_not_acted_on_until_one_is_picked() {
    let mut app = sample_app();
    assert!(app.live.follow);
    assert!(app.on_key(ch('a')).is_empty());
    assert_eq!(
        app.mode,
        Mode::Normal,
        "no dialog for a row that was not highlighted"
    );
    assert!(!app.live.follow, "the view stopped on the newest row");
    assert!(app.flash.as_ref().unwrap().0.contains("press a again"));
    let text = screen(&render(&app, 80, 24));
    assert_eq!(highlighted(&render(&app, 80, 24)).len(), 1, "{text:?}");
    app.on_key(ch('a'));
    let Mode::Confirm(confirm) = &app.mode else {
        panic!("now the dialog opens")
    };
    assert_eq!(confirm.holds[0].call.tool, "force_push");
}

#[test]
fn what_a_tired_operator_trips_on_is_caught() {
    // A typed deny reason survives a second Enter (which cancels) for the same call.
    let mut app = sample_app();
    app.on_key(ch(':'));
    typed(&mut app, "held");
    app.on_key(key(KeyCode::Enter));
    app.on_key(ch('d'));
    typed(&mut app, "not during the incident");
    app.on_key(key(KeyCode::Enter));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    app.on_key(ch('d'));
    let Mode::Confirm(confirm) = &app.mode else {
        panic!("the dialog opens again")
    };
    assert_eq!(confirm.ask.text.value(), "not during the incident");
    app.on_key(key(KeyCode::Esc));
    assert_eq!((app.view, &app.mode), (View::Held, &Mode::Normal));

    // The selected hold leaving the queue moves the selection, and says so.
    let selected = app.selected_hold().unwrap().call_id.clone();
    app.on_net(NetEvent::Resolved {
        call_id: selected.clone(),
        outcome: Ok(Box::new(HoldView {
            resolution: Some(crate::api::Resolution::Denied),
            resolved_by: Some("bob".into()),
            ..app.selected_hold().unwrap().clone()
        })),
    });
    app.expire_fates(std::time::Instant::now() + FATE_LINGER);
    assert_ne!(app.selected_hold().unwrap().call_id, selected);
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .0
            .ends_with("left the queue; the selection moved to the next call"),
        "{:?}",
        app.flash
    );

    // In the live view, `d` on that call says how it ended, once it left the queue.
    app.view = View::Live;
    app.on_key(ch('j'));
    app.on_key(ch('g'));
    app.on_key(key(KeyCode::Enter));
    app.on_key(key(KeyCode::Esc));
    while app.selected_row().is_none_or(|r| r.call_id() != selected) {
        app.on_key(ch('j'));
    }
    app.on_key(ch('d'));
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "that call's hold is already denied by bob"
    );
}

#[test]
fn an_undo_is_not_undone_and_the_consoles_own_change_is_no_news() {
    let mut app = connected_app();
    app.on_net(super::tests::catalog(vec![super::tests::tool_row(
        "delete_page",
        "read",
        4,
    )]));
    app.view = View::Tools;
    app.on_key(ch('x'));
    app.on_key(ch('y'));
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "delete_page".into(),
        outcome: Ok(risk_changed(9, "delete_page", "read", "destructive", 5)),
    });
    // The stream's copy of our own change says nothing new.
    app.notice("before");
    feed(
        &mut app,
        [
            json!({"seq": 9, "kind": "risk.changed", "upstream": "atlassian", "tool": "delete_page",
               "from": "read", "to": "destructive", "version": 5, "by": "ada", "note": null}),
        ],
    );
    assert_eq!(app.flash.as_ref().unwrap().0, "before");
    // U asks, confirmed; a second U has nothing to undo.
    app.on_key(ch('U'));
    assert_eq!(app.on_key(ch('y')).len(), 1);
    app.on_net(NetEvent::RiskEdited {
        upstream: "atlassian".into(),
        tool: "delete_page".into(),
        outcome: Ok(risk_changed(10, "delete_page", "destructive", "read", 6)),
    });
    assert!(app.on_key(ch('U')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "nothing to undo: this console changed no class yet"
    );
}

#[test]
fn snapshot_policy_view_with_versions_a_shadow_and_a_text() {
    let mut app = connected_app();
    app.on_key(ch(':'));
    typed(&mut app, "policy");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Command::FetchPolicy]);
    let version = |v: u64, by: &str, note: Option<&str>| -> crate::api::PolicyVersion {
        serde_json::from_value(
            json!({"version": v, "sha256": format!("{v:064x}"), "by": by,
            "at": format!("2026-11-26T09:0{v}:00.000Z"), "note": note}),
        )
        .unwrap()
    };
    app.on_net(NetEvent::Policy {
        versions: vec![
            version(3, "ada", Some("roll back")),
            version(2, "ada", Some("deny ci reads")),
            version(1, "default", None),
        ],
        shadow: Some(Box::new(
            serde_json::from_value(json!({"sha256": "ab".repeat(32), "by": "bob",
                "since": "2026-11-26T09:30:00.000Z", "compared": {"agree": 40, "allow→hold": 3},
                "text": "permit (principal, action, resource);"}))
            .unwrap(),
        )),
    });
    let text: crate::api::PolicyText = serde_json::from_value(json!({"version": 3,
        "sha256": format!("{:064x}", 3), "by": "ada", "at": "2026-11-26T09:03:00.000Z",
        "note": "roll back", "text": "@id(\"read-allowed\")\npermit (principal, action, resource)\nwhen { resource.risk == \"read\" };\n"}))
    .unwrap();
    app.on_net(NetEvent::PolicyText(Box::new(text)));
    for (w, h) in [(80, 24), (120, 40)] {
        app.resize(w, h);
        let terminal = render(&app, w, h);
        let shown = screen(&terminal).join("\n");
        for expected in [
            "in force   v3 (000000000000, ada: roll back)",
            "shadow     abababababab by bob since 09:30:00: agree 40, allow→hold 3",
            "v2      09:02:00 ada",
            "deny ci reads",
            "v3 text",
            "@id(\"read-allowed\")",
        ] {
            assert!(shown.contains(expected), "{w}x{h}: {expected:?}:\n{shown}");
        }
        insta::assert_snapshot!(format!("policy_{w}x{h}"), terminal.backend());
    }
    // Enter on another version fetches its text.
    app.on_key(ch('j'));
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        vec![Command::FetchPolicyVersion(2)]
    );
    // A policy change elsewhere asks for a refetch.
    feed(
        &mut app,
        [json!({"seq": 9, "kind": "policy.changed", "version": 4, "sha256": "cd", "by": "bob"})],
    );
    assert!(app.want_policy);
}

#[test]
fn a_two_person_hold_shows_how_many_approvals_it_has_and_whose() {
    let mut app = sized(120, 30);
    let mut d = decision(1, "hold", "merge_pr");
    d["approvals_required"] = json!(2);
    feed(
        &mut app,
        [
            d,
            hold_created(2, 1, "2099-01-01T00:00:00.000Z"),
            json!({"seq": 3, "kind": "hold.approval", "call_id": "01900000000000000000000000000001",
                   "by": "bob", "reason": "CHG-12", "approvals": 1, "required": 2}),
        ],
    );
    app.on_key(ch(':'));
    typed(&mut app, "held");
    app.on_key(key(KeyCode::Enter));
    app.on_key(key(KeyCode::Enter));
    let terminal = render(&app, 120, 30);
    let shown = screen(&terminal).join("\n");
    assert!(shown.contains(" 1/2 wai"), "{shown}");
    assert!(shown.contains("approvals 1 of 2: bob (CHG-12)"), "{shown}");
    insta::assert_snapshot!("held_two_person_120x30", terminal.backend());
    // The approve dialog says where it stands.
    app.on_key(key(KeyCode::Esc));
    app.on_key(ch('a'));
    let shown = screen(&render(&app, 120, 30)).join("\n");
    assert!(shown.contains("approvals 1 of 2 (by bob)"), "{shown}");
    app.on_key(key(KeyCode::Esc));
    // The same approver again changes nothing in the list.
    feed(
        &mut app,
        [
            json!({"seq": 4, "kind": "hold.approval", "call_id": "01900000000000000000000000000001",
               "by": "bob", "approvals": 1, "required": 2}),
        ],
    );
    assert_eq!(app.model.holds[0].approvals.len(), 1);
}

#[test]
fn holds_outside_what_the_operator_may_resolve_are_hidden_and_refused() {
    let mut app = sized(120, 30);
    feed(
        &mut app,
        [
            decision(1, "hold", "merge_pr"),
            hold_created(2, 1, "2099-01-01T00:00:00.000Z"),
            decision(3, "hold", "jira_create_issue"),
            hold_created(4, 3, "2099-01-01T00:01:00.000Z"),
        ],
    );
    assert_eq!(app.pending_count(), 2);
    app.on_net(NetEvent::Me(Box::new(crate::api::OperatorView {
        name: "jo".into(),
        role: "approver".into(),
        approves: Some(vec!["atlassian/jira_*".into()]),
    })));
    // Only jira's hold is in jo's queue, and counted.
    assert_eq!(app.pending_count(), 1);
    // A new hold jo cannot resolve rings no bell; one jo can, does.
    app.ring_bell = false;
    feed(
        &mut app,
        [
            decision(5, "hold", "merge_pr"),
            hold_created(6, 5, "2099-01-01T00:02:00.000Z"),
        ],
    );
    assert!(!app.ring_bell);
    feed(
        &mut app,
        [
            decision(7, "hold", "jira_delete_issue"),
            hold_created(8, 7, "2099-01-01T00:03:00.000Z"),
        ],
    );
    assert!(app.ring_bell);
    assert_eq!(app.pending_count(), 2);
    app.on_key(ch(':'));
    typed(&mut app, "held");
    app.on_key(key(KeyCode::Enter));
    let shown = screen(&render(&app, 120, 30)).join("\n");
    assert!(shown.contains("jira_create_issue"), "{shown}");
    assert!(!shown.contains("merge_pr"), "{shown}");
    assert!(shown.contains("held: 2"), "{shown}");
    // In the live view, the other call's row is there, and a/d say why not.
    app.on_key(ch(':'));
    typed(&mut app, "live");
    app.on_key(key(KeyCode::Enter));
    app.live.pause_at_top(&app.model);
    let page = app.page();
    while app
        .selected_row()
        .is_some_and(|r| r.call.tool != "merge_pr")
    {
        app.live.navigate(Action::Down, &app.model, page);
    }
    assert!(app.on_key(ch('a')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        app.flash.as_ref().unwrap().0,
        "you may not resolve holds of atlassian/merge_pr (approves in the gateway's config)"
    );
}

#[test]
fn x_extends_the_selected_hold_by_five_minutes() {
    let mut app = sized(120, 30);
    one_hold(&mut app, "2099-01-01T00:00:00.000Z");
    app.on_key(ch(':'));
    typed(&mut app, "held");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.on_key(ch('x')),
        vec![Command::Extend {
            call_id: "01900000000000000000000000000001".into(),
            secs: 300
        }]
    );
    let shown = screen(&render(&app, 120, 30)).join("\n");
    assert!(
        shown.contains("x extend"),
        "the hint bar offers it:\n{shown}"
    );
    // The stream says when it was extended, and the countdown follows.
    feed(
        &mut app,
        [
            json!({"seq": 3, "kind": "hold.extended", "call_id": "01900000000000000000000000000001",
               "expires_at": "2099-01-01T00:05:00.000Z", "by": "bob"}),
        ],
    );
    assert_eq!(app.model.holds[0].expires_at, "2099-01-01T00:05:00.000Z");
    let terminal = render(&app, 120, 30);
    let shown = screen(&terminal).join("\n");
    assert!(shown.contains("bob extended 00000001"), "{shown}");
    insta::assert_snapshot!("held_extended_120x30", terminal.backend());
    // Read-only consoles do not extend.
    app.read_only = true;
    assert!(app.on_key(ch('x')).is_empty());
}
