//! The operator's editor, as git and k9s run it: `$VISUAL`, then `$EDITOR`, then `vi`,
//! through `sh` so that a value with arguments (`code --wait`, `emacs -nw`) works as it
//! does for git.

use std::path::Path;

/// The editor the operator chose.
pub fn chosen() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_owned())
}

/// Editors known to take `+LINE` before the file to start at that line.
fn takes_line(editor: &str) -> bool {
    let program = editor.split_whitespace().next().unwrap_or_default();
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    matches!(
        name,
        "vi" | "vim"
            | "nvim"
            | "gvim"
            | "view"
            | "nano"
            | "pico"
            | "emacs"
            | "emacsclient"
            | "micro"
            | "kak"
            | "ne"
            | "joe"
            | "jed"
            | "mg"
            | "mcedit"
    )
}

/// The command that opens `file` in `editor`, at `line` when the editor can be told.
/// Dropping it kills the editor: a console that is told to stop takes it along.
pub fn command(editor: &str, file: &Path, line: Option<usize>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(editor);
    if let Some(line) = line.filter(|_| takes_line(editor)) {
        command.arg(format!("+{line}"));
    }
    command.arg(file).kill_on_drop(true);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &tokio::process::Command) -> Vec<String> {
        command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_known_editor_starts_at_the_line_and_others_just_open_the_file() {
        let file = Path::new("/tmp/draft.cedar");
        assert_eq!(
            args(&command("/usr/bin/vim -u NONE", file, Some(7))),
            [
                "-c",
                "/usr/bin/vim -u NONE \"$@\"",
                "/usr/bin/vim -u NONE",
                "+7",
                "/tmp/draft.cedar"
            ]
        );
        assert_eq!(
            args(&command("code --wait", file, Some(7))),
            [
                "-c",
                "code --wait \"$@\"",
                "code --wait",
                "/tmp/draft.cedar"
            ]
        );
    }

    #[tokio::test]
    async fn an_editor_with_arguments_edits_the_file_through_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("it has spaces.cedar");
        std::fs::write(&file, "permit (principal, action, resource);\n").unwrap();
        let status = command("sed -i -e s/permit/forbid/", &file, Some(1))
            .status()
            .await
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "forbid (principal, action, resource);\n"
        );
    }
}
