//! The console's own `config.toml`: contexts (which gateway, as whom, how it looks) and
//! settings (keys, bell, ring size, mouse).
//!
//! It lives in the XDG config dir (`~/.config/toolgate/config.toml` on Linux);
//! `TOOLGATE_CONSOLE_CONFIG` points elsewhere. A missing file at the default place is an
//! empty config; a file that is there but wrong names its path, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Bell;
use super::keymap::{Action, Key, Keymap};
use crate::config::line_at;

pub const CONFIG_ENV: &str = "TOOLGATE_CONSOLE_CONFIG";
/// A token command that takes longer is treated as failed.
const TOKEN_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the config is read from, and whether the user chose that place.
pub fn config_path() -> Option<(PathBuf, bool)> {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    directories::ProjectDirs::from("", "", "toolgate")
        .map(|d| (d.config_dir().join("config.toml"), false))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default_context: Option<Spanned<String>>,
    theme: Option<String>,
    bell: Option<Bell>,
    notify: Option<super::Notify>,
    ring: Option<Spanned<usize>>,
    #[serde(default)]
    mouse: bool,
    #[serde(default)]
    keys: toml::Table,
    #[serde(default)]
    context: Vec<Spanned<ContextFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextFile {
    name: String,
    gateway: String,
    token: Option<String>,
    token_command: Option<String>,
    #[serde(default)]
    read_only: bool,
    theme: Option<String>,
}

/// Where a context's token comes from.
#[derive(Clone, PartialEq)]
pub enum TokenSource {
    Literal(String),
    /// Run with `sh -c`; its first line of output is the token.
    Command(String),
}

impl std::fmt::Debug for TokenSource {
    // Never print a token, even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            TokenSource::Command(c) => f.debug_tuple("Command").field(c).finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub name: String,
    pub gateway: String,
    pub token: Option<TokenSource>,
    pub read_only: bool,
    pub theme: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    pub path: Option<PathBuf>,
    pub default_context: Option<String>,
    pub theme: Option<String>,
    pub bell: Option<Bell>,
    pub notify: Option<super::Notify>,
    pub ring: Option<usize>,
    pub mouse: bool,
    pub keymap: Keymap,
    /// Key clashes, reported when the console starts.
    pub key_conflicts: Vec<String>,
    pub contexts: Vec<Context>,
}

/// A config that could not be used: the file, the line, the key, and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{}{}: {key}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl ConsoleConfig {
    /// Reads the config from where `config_path` says.
    pub fn load() -> Result<Self, ConfigError> {
        match config_path() {
            Some((path, chosen)) => Self::load_from(&path, chosen),
            None => Ok(Self::default()),
        }
    }

    /// `must_exist` is for a path the user named: a typo there must not pass silently.
    pub fn load_from(path: &Path, must_exist: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(Self {
                path: Some(path.to_owned()),
                ..Self::default()
            }),
            Err(e) => Err(ConfigError {
                path: path.to_owned(),
                line: None,
                key: CONFIG_ENV.into(),
                message: format!("cannot read the console config: {e}"),
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let error =
            |span: Option<std::ops::Range<usize>>, key: &str, message: String| ConfigError {
                path: path.to_owned(),
                line: span.map(|s| line_at(text, s.start)),
                key: key.to_owned(),
                message,
            };
        let file: File = toml::from_str(text).map_err(|e| {
            // The key is the one written on the line the error points at.
            let key = e
                .span()
                .and_then(|s| {
                    let start = s.start.min(text.len());
                    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                    let line = text[line_start..].lines().next()?;
                    let (key, _) = line.split_once('=')?;
                    Some(key.trim().to_owned())
                })
                .unwrap_or_else(|| "config".to_owned());
            error(e.span(), &key, e.message().to_owned())
        })?;

        let mut user_keys: Vec<(Action, Vec<(String, Key)>)> = Vec::new();
        // Spans of `[keys]` entries are not kept by a plain table, so a bad key is found
        // by its `name =` line.
        let line_of_key = |name: &str| {
            text.lines()
                .position(|l| {
                    let l = l.trim_start();
                    l.strip_prefix(name)
                        .is_some_and(|r| r.trim_start().starts_with('='))
                })
                .map(|i| i + 1)
        };
        for (name, value) in &file.keys {
            let at = |message: String| ConfigError {
                path: path.to_owned(),
                line: line_of_key(name),
                key: format!("keys.{name}"),
                message,
            };
            let action = Action::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                at(format!(
                    "no such action; the actions are {}",
                    names.join(", ")
                ))
            })?;
            let labels: Vec<&str> = match value {
                toml::Value::String(s) => vec![s.as_str()],
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or_else(|| at("every key must be a string".into()))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(at(
                        "must be a key (\"A\") or a list of keys ([\"A\", \"ctrl-a\"])".into(),
                    ));
                }
            };
            if labels.is_empty() {
                return Err(at(
                    "an empty list would leave the action without a key".into()
                ));
            }
            let keys = labels
                .into_iter()
                .map(|l| Key::parse(l).map(|k| (l.to_owned(), k)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            user_keys.push((action, keys));
        }
        user_keys.sort_by_key(|(a, _)| *a);
        let (keymap, key_conflicts) = Keymap::with_user(&user_keys);

        let mut contexts: Vec<Context> = Vec::new();
        for spanned in &file.context {
            let span = spanned.span();
            let c = spanned.get_ref();
            let key = format!("context {:?}", c.name);
            if contexts.iter().any(|o| o.name == c.name) {
                return Err(error(
                    Some(span),
                    &key,
                    "a context of that name is already defined".into(),
                ));
            }
            if c.name.trim().is_empty() || c.name.contains(char::is_whitespace) {
                return Err(error(
                    Some(span),
                    "name",
                    format!("{:?} is not a usable context name (no spaces)", c.name),
                ));
            }
            crate::client::ControlClient::check_origin(&c.gateway)
                .map_err(|m| error(Some(span.clone()), &format!("{key}.gateway"), m))?;
            let token = match (&c.token, &c.token_command) {
                (Some(_), Some(_)) => {
                    return Err(error(
                        Some(span),
                        &key,
                        "set token or token_command, not both".into(),
                    ));
                }
                (Some(t), None) => Some(TokenSource::Literal(t.clone())),
                (None, Some(cmd)) => Some(TokenSource::Command(cmd.clone())),
                // The token may come from --token or TOOLGATE_TOKEN instead.
                (None, None) => None,
            };
            contexts.push(Context {
                name: c.name.clone(),
                gateway: c.gateway.clone(),
                token,
                read_only: c.read_only,
                theme: c.theme.clone(),
            });
        }
        if let Some(d) = &file.default_context
            && !contexts.iter().any(|c| &c.name == d.get_ref())
        {
            return Err(error(
                Some(d.span()),
                "default_context",
                format!("no context is named {:?}{}", d.get_ref(), known(&contexts)),
            ));
        }
        if let Some(r) = &file.ring
            && *r.get_ref() == 0
        {
            return Err(error(Some(r.span()), "ring", "must be at least 1".into()));
        }
        Ok(Self {
            path: Some(path.to_owned()),
            default_context: file.default_context.map(Spanned::into_inner),
            theme: file.theme,
            bell: file.bell,
            notify: file.notify,
            ring: file.ring.map(Spanned::into_inner),
            mouse: file.mouse,
            keymap,
            key_conflicts,
            contexts,
        })
    }

    pub fn context(&self, name: &str) -> Result<&Context, String> {
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no context is named {name:?}{}", known(&self.contexts)))
    }
}

fn known(contexts: &[Context]) -> String {
    if contexts.is_empty() {
        "; the config defines none".into()
    } else {
        let names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
        format!("; the contexts are {}", names.join(", "))
    }
}

impl TokenSource {
    /// The token itself. A command runs without a terminal, so it cannot prompt and
    /// hang the console; its error output is reported, its token never is.
    pub async fn resolve(&self) -> Result<String, String> {
        let command = match self {
            TokenSource::Literal(t) => return Ok(t.clone()),
            TokenSource::Command(c) => c,
        };
        let child = tokio::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("token_command could not start: {e}"))?;
        let out = tokio::time::timeout(TOKEN_COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                format!(
                    "token_command took longer than {}s",
                    TOKEN_COMMAND_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("token_command failed: {e}"))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why.lines().next().unwrap_or("").trim();
            return Err(format!("token_command exited with {}: {why}", out.status));
        }
        let token = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err("token_command printed no token".into());
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConsoleConfig, ConfigError> {
        ConsoleConfig::parse(text, Path::new("/home/o/.config/toolgate/config.toml"))
    }

    const GOOD: &str = r#"
default_context = "staging"
bell = "unfocused"
ring = 500
mouse = true

[keys]
approve = "A"
deny = ["D", "ctrl-d"]

[[context]]
name = "staging"
gateway = "http://127.0.0.1:7801"
token = "tg_staging"
theme = "light"

[[context]]
name = "prod"
gateway = "https://toolgate.prod.example:7801"
token_command = "echo tg_prod"
read_only = true
theme = "high-contrast"
"#;

    #[test]
    fn a_full_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.default_context.as_deref(), Some("staging"));
        assert_eq!(
            (c.bell, c.ring, c.mouse),
            (Some(Bell::Unfocused), Some(500), true)
        );
        assert_eq!(c.notify, None, "notifications are off unless asked for");
        let with_notify = parse("notify = \"osc777\"\n").unwrap();
        assert_eq!(with_notify.notify, Some(crate::console::Notify::Osc777));
        let err = parse("notify = \"osc99\"\n").unwrap_err();
        assert!(err.message.contains("unknown variant `osc99`"), "{err}");
        assert_eq!(c.contexts.len(), 2);
        let prod = c.context("prod").unwrap();
        assert!(prod.read_only);
        assert_eq!(
            prod.token,
            Some(TokenSource::Command("echo tg_prod".into()))
        );
        assert_eq!(prod.theme.as_deref(), Some("high-contrast"));
        assert_eq!(c.keymap.key_for(Action::Approve), Some("A"));
        assert_eq!(c.keymap.key_for(Action::Deny), Some("D"));
        assert!(c.key_conflicts.is_empty());
        assert!(
            !format!("{:?}", c.contexts).contains("tg_staging"),
            "tokens are not printed"
        );
        assert!(
            c.context("dev")
                .unwrap_err()
                .contains("the contexts are staging, prod")
        );
    }

    #[test]
    fn a_bad_config_names_the_file_line_and_key() {
        let err = parse(&GOOD.replace("bell = ", "bel = ")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(3), "bel"), "{err}");
        assert!(
            err.to_string()
                .starts_with("/home/o/.config/toolgate/config.toml:3: bel: unknown field `bel`"),
            "{err}"
        );

        let err = parse(&GOOD.replace("\"unfocused\"", "\"sometimes\"")).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("unknown variant `sometimes`"), "{err}");

        let err = parse(&GOOD.replace("deny = [\"D\"", "deny = [\"DD\"")).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (Some(9), "keys.deny"),
            "{err}"
        );
        assert!(err.message.starts_with("unknown key \"DD\""), "{err}");

        let err = parse(&GOOD.replace("approve = ", "aprove = ")).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (Some(8), "keys.aprove"),
            "{err}"
        );
        assert!(
            err.message.contains("the actions are quit, command"),
            "{err}"
        );

        let err = parse(&GOOD.replace(
            "default_context = \"staging\"",
            "default_context = \"stage\"",
        ))
        .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (Some(2), "default_context"),
            "{err}"
        );

        let err = parse(&GOOD.replace(
            "token = \"tg_staging\"",
            "token = \"tg_staging\"\ntoken_command = \"x\"",
        ))
        .unwrap_err();
        assert_eq!(err.line, Some(11), "{err}");
        assert!(err.message.contains("not both"), "{err}");

        let err = parse(&GOOD.replace("https://toolgate.prod", "ftp://toolgate.prod")).unwrap_err();
        assert_eq!(err.key, "context \"prod\".gateway", "{err}");

        let err = parse(&GOOD.replace("ring = 500", "ring = \"lots\"")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(4), "ring"), "{err}");
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn a_missing_file_is_empty_only_where_nobody_asked_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(
            ConsoleConfig::load_from(&path, false)
                .unwrap()
                .contexts
                .is_empty()
        );
        let err = ConsoleConfig::load_from(&path, true).unwrap_err();
        assert!(err.message.contains("cannot read"), "{err}");
    }

    #[tokio::test]
    async fn a_token_command_gives_its_first_line_and_a_failure_its_reason() {
        let ok = TokenSource::Command("printf 'tg_abc\\nextra'".into());
        assert_eq!(ok.resolve().await.unwrap(), "tg_abc");
        let err = TokenSource::Command("echo 'vault: sealed' >&2; exit 3".into())
            .resolve()
            .await
            .unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.contains("vault: sealed"),
            "{err}"
        );
        let err = TokenSource::Command("true".into())
            .resolve()
            .await
            .unwrap_err();
        assert_eq!(err, "token_command printed no token");
    }
}
