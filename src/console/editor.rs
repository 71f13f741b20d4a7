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
/// The shell `exec`s the editor, so the process started is the editor itself: a signal
/// for it (Ctrl-C, a stop) reaches it alone, and a shell that would die of a Ctrl-C the
/// editor handled (dash does) is not in between.
pub fn command(editor: &str, file: &Path, line: Option<usize>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("exec {editor} \"$@\""))
        .arg(editor);
    if let Some(line) = line.filter(|_| takes_line(editor)) {
        command.arg(format!("+{line}"));
    }
    command.arg(file);
    command
}

/// What an editor's exit says, when it is the shell's word that the editor never ran.
pub fn not_run(editor: &str, status: std::process::ExitStatus) -> Option<String> {
    let why = match status.code() {
        Some(127) => "not found",
        Some(126) => "not executable",
        _ => return None,
    };
    Some(format!(
        "cannot start the editor {editor:?}: {why}; set $VISUAL or $EDITOR"
    ))
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
                "exec /usr/bin/vim -u NONE \"$@\"",
                "/usr/bin/vim -u NONE",
                "+7",
                "/tmp/draft.cedar"
            ]
        );
        assert_eq!(
            args(&command("code --wait", file, Some(7))),
            [
                "-c",
                "exec code --wait \"$@\"",
                "code --wait",
                "/tmp/draft.cedar"
            ]
        );
    }

    #[tokio::test]
    async fn the_process_started_is_the_editor_itself_and_a_missing_one_is_named() {
        // The shell is replaced: the child's pid is the editor's, so a signal sent to it
        // is the editor's to handle, and its exit status is the editor's own.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let editor = format!(
            "sh -c 'echo $$ > {}; trap \"exit 0\" INT; sleep 5 & wait' x",
            pid_file.display()
        );
        let mut child = command(&editor, &dir.path().join("f"), None)
            .spawn()
            .unwrap();
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(Some(pid), child.id(), "no shell stands between");
        // A Ctrl-C the editor handles is not a failure.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        assert!(child.wait().await.unwrap().success());

        let missing = "toolgate-no-such-editor";
        let status = command(missing, &dir.path().join("f"), None)
            .status()
            .await
            .unwrap();
        assert_eq!(
            not_run(missing, status).as_deref(),
            Some(
                "cannot start the editor \"toolgate-no-such-editor\": not found; set $VISUAL or $EDITOR"
            )
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
