//! Console themes: semantic roles (what a colour means), in TOML files.
//!
//! The shipped themes in `themes/` are embedded in the binary; a file of the same name
//! in the user's themes directory wins. A theme with a typo is refused with its file,
//! line and the offending key or value, never half-applied.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The shipped themes, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
    ("mono", include_str!("../../themes/mono.toml")),
];

/// One style per role.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub allow: Style,
    pub deny: Style,
    pub hold: Style,
    pub risk_read: Style,
    pub risk_write: Style,
    pub risk_destructive: Style,
    pub risk_unclassified: Style,
    pub header: Style,
    pub selection: Style,
    pub border: Style,
    pub stale: Style,
    pub muted: Style,
    pub urgent: Style,
}

impl Default for Theme {
    fn default() -> Self {
        Theme::builtin("default")
            .and_then(Result::ok)
            .expect("the default theme is valid")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{source_name}: {message}")]
pub struct ThemeError {
    /// The file, or `builtin:NAME`.
    pub source_name: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    outcome: OutcomeRoles,
    risk: RiskRoles,
    ui: UiRoles,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeRoles {
    allow: StyleSpec,
    deny: StyleSpec,
    hold: StyleSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskRoles {
    read: StyleSpec,
    write: StyleSpec,
    destructive: StyleSpec,
    unclassified: StyleSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UiRoles {
    header: StyleSpec,
    selection: StyleSpec,
    border: StyleSpec,
    stale: StyleSpec,
    muted: StyleSpec,
    urgent: StyleSpec,
}

/// `{ fg = "red", bg = "#101010", modifiers = ["bold"] }`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StyleSpec {
    #[serde(default)]
    fg: Option<ColorName>,
    #[serde(default)]
    bg: Option<ColorName>,
    #[serde(default)]
    modifiers: Vec<ModifierName>,
}

struct ColorName(Color);

impl<'de> Deserialize<'de> for ColorName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let lower = text.to_lowercase();
        // ratatui knows the 16 ANSI names (and "gray"/"grey" spellings) and "#rrggbb".
        let known = lower.starts_with('#') && lower.len() == 7
            || [
                "black",
                "red",
                "green",
                "yellow",
                "blue",
                "magenta",
                "cyan",
                "gray",
                "grey",
                "darkgray",
                "darkgrey",
                "lightred",
                "lightgreen",
                "lightyellow",
                "lightblue",
                "lightmagenta",
                "lightcyan",
                "white",
                "reset",
            ]
            .contains(&lower.as_str());
        match Color::from_str(&lower) {
            Ok(c) if known => Ok(ColorName(c)),
            _ => Err(serde::de::Error::custom(format!(
                "unknown colour {text:?}: use one of the 16 ANSI names (red, lightblue, darkgray, …), \"reset\", or \"#rrggbb\""
            ))),
        }
    }
}

struct ModifierName(Modifier);

impl<'de> Deserialize<'de> for ModifierName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let modifier = match text.as_str() {
            "bold" => Modifier::BOLD,
            "dim" => Modifier::DIM,
            "italic" => Modifier::ITALIC,
            "underlined" => Modifier::UNDERLINED,
            "reversed" => Modifier::REVERSED,
            "crossed_out" => Modifier::CROSSED_OUT,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown modifier {text:?}: use bold, dim, italic, underlined, reversed or crossed_out"
                )));
            }
        };
        Ok(ModifierName(modifier))
    }
}

impl StyleSpec {
    fn style(&self) -> Style {
        let mut style = Style::new();
        if let Some(ColorName(c)) = self.fg {
            style = style.fg(c);
        }
        if let Some(ColorName(c)) = self.bg {
            style = style.bg(c);
        }
        self.modifiers
            .iter()
            .fold(style, |s, ModifierName(m)| s.add_modifier(*m))
    }
}

impl Theme {
    /// Parses a theme's TOML; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ThemeError> {
        let file: ThemeFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| crate::config::line_at(text, s.start));
            ThemeError {
                source_name: source_name.to_owned(),
                message: match line {
                    Some(l) => format!("line {l}: {}", e.message()),
                    None => e.message().to_owned(),
                },
            }
        })?;
        Ok(Theme {
            allow: file.outcome.allow.style(),
            deny: file.outcome.deny.style(),
            hold: file.outcome.hold.style(),
            risk_read: file.risk.read.style(),
            risk_write: file.risk.write.style(),
            risk_destructive: file.risk.destructive.style(),
            risk_unclassified: file.risk.unclassified.style(),
            header: file.ui.header.style(),
            selection: file.ui.selection.style(),
            border: file.ui.border.style(),
            stale: file.ui.stale.style(),
            muted: file.ui.muted.style(),
            urgent: file.ui.urgent.style(),
        })
    }

    pub fn builtin(name: &str) -> Option<Result<Self, ThemeError>> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Theme::parse(text, &format!("builtin:{n}")))
    }

    /// The theme called `name`: the user's file of that name if there is one, else the
    /// shipped one.
    pub fn load(name: &str, user_dir: Option<&Path>) -> Result<Self, ThemeError> {
        if let Some(dir) = user_dir {
            let path: PathBuf = dir.join(format!("{name}.toml"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Theme::parse(&text, &path.display().to_string());
            }
        }
        Theme::builtin(name).unwrap_or_else(|| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            Err(ThemeError {
                source_name: format!("theme {name:?}"),
                message: format!("no such theme; the shipped ones are {}", names.join(", ")),
            })
        })
    }

    /// Every role's style, for checks over a whole theme.
    pub fn roles(&self) -> [Style; 13] {
        [
            self.allow,
            self.deny,
            self.hold,
            self.risk_read,
            self.risk_write,
            self.risk_destructive,
            self.risk_unclassified,
            self.header,
            self.selection,
            self.border,
            self.stale,
            self.muted,
            self.urgent,
        ]
    }
}

/// The theme to start with: `mono` when `NO_COLOR` is set (any value), else `name`.
pub fn choose(name: &str, no_color: bool, user_dir: Option<&Path>) -> Result<Theme, ThemeError> {
    Theme::load(if no_color { "mono" } else { name }, user_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_theme_parses_and_sets_every_role() {
        let themes_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("themes");
        let mut files: Vec<_> = std::fs::read_dir(&themes_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(
            files.len(),
            BUILTIN.len(),
            "every file in themes/ is embedded"
        );
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            // Roles are required fields: a theme that leaves one out does not parse.
            Theme::parse(&text, &path.display().to_string()).unwrap();
            let name = path.file_stem().unwrap().to_str().unwrap();
            assert!(Theme::builtin(name).is_some(), "{name} is not embedded");
        }
    }

    #[test]
    fn mono_uses_no_colour() {
        let mono = Theme::builtin("mono").unwrap().unwrap();
        for style in mono.roles() {
            assert_eq!((style.fg, style.bg), (None, None), "{style:?}");
        }
        assert!(
            mono.deny.add_modifier.contains(Modifier::BOLD),
            "deny still stands out"
        );
    }

    #[test]
    fn a_broken_theme_names_its_file_line_and_mistake() {
        let broken = include_str!("../../themes/default.toml")
            .replace("hold = { fg = \"yellow\"", "hold = { fg = \"yelow\"");
        let err = Theme::parse(&broken, "themes/ops.toml").unwrap_err();
        assert_eq!(err.source_name, "themes/ops.toml");
        assert!(
            err.message.starts_with("line 8: unknown colour \"yelow\""),
            "{err}"
        );

        let missing = include_str!("../../themes/default.toml").replace("urgent = ", "urgnet = ");
        let err = Theme::parse(&missing, "t.toml").unwrap_err();
        assert!(err.message.contains("unknown field `urgnet`"), "{err}");

        let err = Theme::parse(
            &include_str!("../../themes/mono.toml").replace("\"dim\"", "\"faint\""),
            "m.toml",
        )
        .unwrap_err();
        assert!(err.message.contains("unknown modifier \"faint\""), "{err}");
    }

    #[test]
    fn a_user_theme_of_the_same_name_wins_and_no_color_picks_mono() {
        let dir = tempfile::tempdir().unwrap();
        let custom = include_str!("../../themes/default.toml")
            .replace("allow = { fg = \"green\" }", "allow = { fg = \"blue\" }");
        std::fs::write(dir.path().join("default.toml"), custom).unwrap();
        let theme = Theme::load("default", Some(dir.path())).unwrap();
        assert_eq!(theme.allow.fg, Some(Color::Blue));
        assert_eq!(
            Theme::load("light", Some(dir.path())).unwrap(),
            Theme::builtin("light").unwrap().unwrap()
        );
        assert_eq!(
            choose("default", true, Some(dir.path())).unwrap(),
            Theme::builtin("mono").unwrap().unwrap()
        );
        let err = Theme::load("neon", None).unwrap_err();
        assert!(
            err.message.contains("default, light, high-contrast, mono"),
            "{err}"
        );
    }
}
