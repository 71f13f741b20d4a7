//! The command line, as an operator meets it.

use std::process::Command;

use crate::support::*;

fn toolgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .output()
        .expect("toolgate runs")
}

#[test]
fn help_documents_every_subcommand() {
    let out = toolgate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (command, about) in [
        ("gateway", "Run the MCP gateway"),
        ("token", "Manage API tokens"),
    ] {
        assert!(
            help.contains(command) && help.contains(about),
            "{command} missing from:\n{help}"
        );
    }
    let token_help = String::from_utf8(toolgate(&["token", "new", "--help"]).stdout).unwrap();
    assert!(token_help.contains("token_sha256"), "{token_help}");
}

#[test]
fn token_new_prints_a_token_and_the_hash_of_that_token() {
    let out = toolgate(&["token", "new", "ci-bot"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let value_of = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_owned()
    };
    let token = value_of("token");
    assert!(token.starts_with("tg_"));
    assert_eq!(value_of("token_sha256"), sha256_hex(&token));
    assert!(chrono::DateTime::parse_from_rfc3339(&value_of("issued")).is_ok());
    assert!(text.contains("name = \"ci-bot\""));
    assert_ne!(token, value_of_other_run());
}

fn value_of_other_run() -> String {
    let text = String::from_utf8(toolgate(&["token", "new", "x"]).stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned()
}

#[test]
fn a_config_typo_fails_the_start_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\n\n[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\nhide_denied_tool = true\n",
    )
    .unwrap();
    let out = toolgate(&["gateway", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml: line 6: unknown field `hide_denied_tool`"),
        "{err}"
    );
}

#[test]
fn policy_check_accepts_the_default_and_places_an_error() {
    let default = repo_root().join("src/gateway/policy/default.cedar");
    let out = toolgate(&["policy", "check", default.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .ends_with(": ok, 5 policies\n")
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let out = toolgate(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.cedar:2:8: invalid policy"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn the_console_refuses_an_unknown_or_broken_theme_before_taking_the_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["console", "--theme", "neon", "--token", "x"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("theme \"neon\": no such theme; the shipped ones are default, light, high-contrast, mono"), "{err}");

    let home = tempfile::tempdir().unwrap();
    let themes = home.path().join("toolgate/themes");
    std::fs::create_dir_all(&themes).unwrap();
    std::fs::write(
        themes.join("ops.toml"),
        "[outcome]\nallow = { fg = \"grene\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["console", "--theme", "ops", "--token", "x"])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("ops.toml: line 2: unknown colour \"grene\""),
        "{err}"
    );
}
