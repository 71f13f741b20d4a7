//! The `:tokens` view: the token report, flags first, and a token's advice in its details.

use crossterm::event::KeyCode;
use serde_json::json;

use super::oncall::screen;
use super::tests::{ch, connected_app, key, render, typed};
use super::*;

fn report() -> crate::api::TokensView {
    serde_json::from_value(json!({
        "at": "2026-11-26T10:00:00.000Z", "window_days": 30,
        "tokens": [
            {"name": "stale-bot", "issued": "2025-10-22T10:00:00.000Z", "age_days": 400,
             "identity": "token:stale-bot",
             "calls_7d": {"allow": 0, "hold": 0, "deny": 0}, "calls_30d": {"allow": 0, "hold": 0, "deny": 0},
             "used": [], "targets": [], "reachable": ["py/get_project", "py/read_page", "py/write_page"],
             "flags": [
                {"flag": "unused", "says": "no call in 30 days: remove its [[identity]] (or rotate it if it is still needed)"},
                {"flag": "never_expires", "says": "it never expires: set `expires` on its [[identity]] (90 days, say) so a leaked copy dies on its own"},
                {"flag": "old", "says": "issued 400 days ago, more than 90: rotate it (toolgate token new, then swap token_sha256 and issued)"}]},
            {"name": "broad-bot", "issued": "2026-11-16T10:00:00.000Z", "age_days": 10,
             "expires": "2026-12-26T10:00:00.000Z", "identity": "token:broad-bot",
             "last_used": "2026-11-26T09:58:12.000Z",
             "calls_7d": {"allow": 2, "hold": 0, "deny": 0}, "calls_30d": {"allow": 2, "hold": 0, "deny": 0},
             "used": ["py/read_page"], "targets": ["page:B-1", "page:B-2"],
             "reachable": ["py/get_project", "py/read_page", "py/write_page"],
             "flags": [{"flag": "broad", "says": "the policy lets it reach 3 tools; it used 1: narrow it to what it used (the policy below)"}],
             "narrowing_policy": "@id(\"narrow-broad-bot\")\n@reason(\"broad-bot may call only the tools it used (narrowed by the token report)\")\nforbid (principal == Token::\"broad-bot\", action == Action::\"call_tool\", resource)\nunless { resource == Tool::\"py/read_page\" };\n"},
            {"name": "ci-bot", "issued": "2026-11-01T10:00:00.000Z", "age_days": 25,
             "expires": "2027-02-01T10:00:00.000Z", "identity": "token:ci-bot",
             "last_used": "2026-11-26T09:59:40.000Z",
             "calls_7d": {"allow": 40, "hold": 3, "deny": 1}, "calls_30d": {"allow": 120, "hold": 9, "deny": 2},
             "used": ["py/read_page", "py/write_page"], "targets": ["project:OPS"],
             "reachable": ["py/get_project", "py/read_page", "py/write_page"], "flags": []}
        ],
        "users": []
    }))
    .unwrap()
}

#[test]
fn the_tokens_view_shows_flags_and_a_tokens_advice_with_its_narrowing_policy() {
    let mut app = connected_app();
    app.on_key(ch(':'));
    typed(&mut app, "tokens");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Command::FetchTokens]);
    app.on_net(NetEvent::Tokens(Box::new(report())));
    for (w, h) in [(120, 40), (80, 24)] {
        app.resize(w, h);
        let terminal = render(&app, w, h);
        let shown = screen(&terminal).join("\n");
        assert!(shown.contains("2 flagged of 3"), "{shown}");
        assert!(shown.contains("stale-bot"), "{shown}");
        assert!(shown.contains("never"), "{shown}");
        insta::assert_snapshot!(format!("tokens_{w}x{h}"), terminal.backend());
    }
    // The broad one in full: what to do, and the policy that would do it.
    app.resize(120, 40);
    app.on_key(ch('j'));
    app.on_key(key(KeyCode::Enter));
    let shown = screen(&render(&app, 120, 40)).join("\n");
    assert!(
        shown.contains("broad: the policy lets it reach 3 tools"),
        "{shown}"
    );
    assert!(
        shown.contains(r#"unless { resource == Tool::"py/read_page" };"#),
        "{shown}"
    );
}
