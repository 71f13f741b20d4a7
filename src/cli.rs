//! The command line: one binary, one subcommand per job.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::HoldView;

#[derive(Debug, Parser)]
#[command(
    name = "toolgate",
    version,
    about = "Runtime authorization for AI agents' MCP tool calls",
    long_about = "toolgate sits between AI agents and their MCP servers. It authenticates every \
                  client, reads every message strictly, learns each upstream's tools, and relays \
                  both MCP protocol eras (2025-11-25 and 2026-07-28) without translating them."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MCP gateway: agents connect to http://LISTEN/mcp/{upstream}.
    Gateway {
        /// The gateway's TOML config (see docs/configuration.md).
        #[arg(long, short, value_name = "FILE", env = "TOOLGATE_CONFIG")]
        config: PathBuf,
    },
    /// The terminal console: watch decisions live, approve or deny held calls, and set
    /// tools' risk classes.
    ///
    /// Settings come from the command line, then the chosen context in config.toml, then
    /// the rest of config.toml, then TOOLGATE_GATEWAY / TOOLGATE_TOKEN (see docs/console.md).
    Console {
        /// A context from config.toml (gateway, token, read-only, theme).
        #[arg(long, value_name = "NAME")]
        context: Option<String>,
        /// The control API origin [default: the context's, TOOLGATE_GATEWAY, or
        /// http://127.0.0.1:7801].
        #[arg(long, value_name = "URL")]
        gateway: Option<String>,
        /// An operator token [default: the context's, or TOOLGATE_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// Hide and refuse everything that changes the gateway.
        #[arg(long)]
        read_only: bool,
        /// Ring the terminal bell when a hold arrives [default: on].
        #[arg(long, value_enum)]
        bell: Option<crate::console::Bell>,
        /// Also a desktop notification through the terminal when a hold arrives: osc9
        /// (iTerm2, kitty, WezTerm, Windows Terminal) or osc777 (foot, VTE) [default: off].
        #[arg(long, value_enum)]
        notify: Option<crate::console::Notify>,
        /// How many decisions to keep [default: 10000].
        #[arg(long)]
        ring: Option<usize>,
        /// The colour theme: default, light, high-contrast, mono, or one of your own in
        /// <config dir>/toolgate/themes [default: the context's, or default].
        #[arg(long)]
        theme: Option<String>,
        /// When to use colour; `auto` follows NO_COLOR, `never` is the mono theme.
        #[arg(long, value_enum, default_value = "auto")]
        color: crate::console::ColorChoice,
        /// Scroll with the mouse wheel (this takes the mouse from the terminal's own
        /// selection).
        #[arg(long)]
        mouse: bool,
        /// Print where config.toml is read from (TOOLGATE_CONSOLE_CONFIG overrides it),
        /// and exit.
        #[arg(long)]
        print_config_path: bool,
    },
    /// The demo's sample MCP server (Jira, Confluence and Bitbucket-like tools, in
    /// memory) on stdin and stdout: a stdio upstream to try, `command = ["toolgate",
    /// "sample-server"]`. Logs go to stderr.
    SampleServer,
    /// Everything in one process, offline: a gateway, an Atlassian-style MCP server
    /// (Jira, Confluence, Bitbucket) and simulated agents, with the console attached.
    Demo {
        /// The MCP port agents connect to (0: the system picks one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The control API port (0: the system picks one).
        #[arg(long, default_value_t = 0)]
        control_port: u16,
        /// The sample upstream's port (0: the system picks one).
        #[arg(long, default_value_t = 0)]
        upstream_port: u16,
        /// Keep the audit store here instead of in a temporary dir removed at exit.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Run without the console, and print the URLs and tokens to connect with.
        #[arg(long)]
        no_console: bool,
        /// Start no simulated agents: the gateway and upstream wait for your own clients.
        #[arg(long)]
        no_agents: bool,
        /// Ring the terminal bell when a hold arrives (the demo holds calls every few
        /// seconds).
        #[arg(long, value_enum, default_value = "off")]
        bell: crate::console::Bell,
        /// The console's theme.
        #[arg(long)]
        theme: Option<String>,
        /// When to use colour.
        #[arg(long, value_enum, default_value = "auto")]
        color: crate::console::ColorChoice,
    },
    /// Print the gateway's events (replayed from --since, then live): a table on a
    /// terminal, JSON lines otherwise.
    Events {
        #[command(flatten)]
        control: ControlArgs,
        /// Replay every stored event after this seq first (0 replays everything).
        #[arg(long)]
        since: Option<u64>,
        /// json: one event a line, as the API sends it; table: a line an event, for people
        /// [default: table when stdout is a terminal, json otherwise].
        #[arg(long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// List the held calls waiting for a decision: a table on a terminal, JSON lines
    /// otherwise.
    Holds {
        #[command(flatten)]
        control: ControlArgs,
        /// json: one hold a line, as a JSON object; table: a line a hold, for people
        /// [default: table when stdout is a terminal, json otherwise].
        #[arg(long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// The standing privilege of every API token: age, expiry, last use, calls, the tools
    /// it used against those the policy lets it reach, and what to fix.
    Tokens {
        #[command(flatten)]
        control: ControlArgs,
        /// json: one token a line, as a JSON object; table: a line a token, then its
        /// flags, for people [default: table when stdout is a terminal, json otherwise].
        #[arg(long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// List the active grants (approvals that let like calls through for a time), or
    /// revoke one.
    Grants {
        #[command(flatten)]
        control: ControlArgs,
        /// json: one grant a line, as a JSON object; table: a line a grant, for people
        /// [default: table when stdout is a terminal, json otherwise].
        #[arg(long, value_enum)]
        output: Option<OutputFormat>,
        /// Revoke this grant (its id, or the short id the table and the console show):
        /// from the next call on it lets nothing through.
        #[arg(long, value_name = "ID")]
        revoke: Option<String>,
    },
    /// Approve a held call; it runs once (and, with --grant-for, its like for a time).
    Approve {
        #[command(flatten)]
        control: ControlArgs,
        /// The call id, its short id as the console shows it (the end), or any part of its
        /// start that no other pending hold shares.
        call_id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Also let the same identity's like calls through for this long (15m, 1h), at
        /// most the gateway's max_grant_secs: a grant.
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        grant_for: Option<chrono::Duration>,
        /// What the grant lets through: identical calls (same exact arguments), or calls
        /// of the same tool with any arguments that the policy would hold.
        #[arg(long, value_enum, default_value = "identical", requires = "grant_for")]
        grant_scope: GrantScopeArg,
    },
    /// Deny a held call.
    Deny {
        #[command(flatten)]
        control: ControlArgs,
        /// The call id, its short id as the console shows it (the end), or any part of its
        /// start that no other pending hold shares.
        call_id: String,
        /// Why, for the audit log and the agent.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Work with Cedar policy files, and with the policy a gateway has in force.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Make a deployment key: the 32-byte secret that keys the identical-call hash (and
    /// every other key the gateway derives). Give every replica the same file, as
    /// `[gateway] key_file`; it is written readable by its owner only.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Manage API tokens for agents and operators.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Work with the gateway's store (`[store]` in the config).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// The audit log's evidence: verify its hash chain and signed checkpoints, export it,
    /// print the key that signs it. No gateway needs to run.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Where `toolgate audit` reads the log: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct AuditSource {
    /// A SQLite store's data dir (the gateway's `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The gateway's TOML config: the store its `[store]` names, PostgreSQL included.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-compute the hash chain and check every checkpoint's signature. Exits 0 when
    /// intact, 1 at the first event edited, dropped, inserted or reordered (which it
    /// names), 2 when the log cannot be read.
    Verify {
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "export"])]
        data_dir: Option<PathBuf>,
        #[arg(long, short, value_name = "FILE", conflicts_with = "export")]
        config: Option<PathBuf>,
        /// An export (`toolgate audit export`), checked on its own.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// The key checkpoints must be signed with (`toolgate audit pubkey`, or `GET
        /// /status`); by default the deployment key beside the store, if readable. Give it
        /// again for each key the log was signed with across rotations.
        #[arg(long, value_name = "HEX")]
        pubkey: Vec<String>,
        /// An earlier export kept elsewhere: the log must still hold every checkpoint it
        /// holds (so deleting checkpoints from the store is caught). More than one may be
        /// given.
        #[arg(long, value_name = "FILE")]
        anchor: Vec<PathBuf>,
    },
    /// Write the events (after --since, up to --until) as JSON lines with their hashes,
    /// then the checkpoints among them: a file `verify --export` checks on its own.
    Export {
        #[command(flatten)]
        source: AuditSource,
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        since: u64,
        #[arg(long, value_name = "SEQ")]
        until: Option<u64>,
        /// Write to this file (a new one) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the public key that signs checkpoints (derived from the deployment key).
    Pubkey {
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "key_file"])]
        data_dir: Option<PathBuf>,
        #[arg(long, short, value_name = "FILE", conflicts_with = "key_file")]
        config: Option<PathBuf>,
        /// The deployment key file itself.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Run the store's migrations that have not run yet, and say how many ran. The
    /// gateway runs them at start too; this runs them ahead, as a deploy step.
    Migrate {
        /// The gateway's TOML config, whose `[store]` names the store.
        #[arg(long, short, value_name = "FILE", env = "TOOLGATE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token, and the `token_sha256` and `issued` lines that accept it.
    New {
        /// The identity's name, as decisions and the audit log will show it.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file against toolgate's schema, as the gateway would load it.
    Check {
        /// The Cedar policy file.
        file: PathBuf,
    },
    /// Print the gateway's policy in force (or an older version) as it is stored.
    Pull {
        #[command(flatten)]
        control: ControlArgs,
        /// Write it to this file instead of stdout; an existing file is kept unless
        /// --force.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the --output file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
        /// A stored version instead of the one in force (`toolgate policy log` lists them).
        #[arg(long, value_name = "V")]
        version: Option<u64>,
    },
    /// Put a policy file in force on the gateway, as a new version; prints that version.
    /// The gateway validates it first: an invalid file changes nothing.
    Push {
        #[command(flatten)]
        control: ControlArgs,
        /// The Cedar policy file.
        file: PathBuf,
        /// Why, for the version history.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// Push only if the policy in force is still this version (the one the file was
        /// pulled from); otherwise nothing changes and the command says who changed it.
        #[arg(long, value_name = "V")]
        expected_version: Option<u64>,
    },
    /// List the gateway's stored policy versions, newest (the one in force) first.
    Log {
        #[command(flatten)]
        control: ControlArgs,
        /// json: one version a line, as a JSON object; table: a line a version, for people
        /// [default: table when stdout is a terminal, json otherwise].
        #[arg(long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// What a policy file (and/or other classes) would have decided for the gateway's
    /// recorded calls: how many decisions change, from what to what, for which tools and
    /// identities, and the first changed calls. Nothing is put in force.
    #[command(group(clap::ArgGroup::new("candidate").required(true).multiple(true).args(["file", "risk"])))]
    Replay {
        #[command(flatten)]
        control: ControlArgs,
        /// The candidate Cedar policy file; without it, the policy in force with --risk.
        file: Option<PathBuf>,
        /// A candidate class, as UPSTREAM/TOOL=CLASS (read, write, destructive,
        /// unclassified); may be given more than once.
        #[arg(long, value_name = "UPSTREAM/TOOL=CLASS", value_parser = parse_risk_candidate)]
        risk: Vec<crate::api::RiskCandidate>,
        /// The newest N decisions [default: 10000].
        #[arg(long, value_name = "N", conflicts_with = "since", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        last: Option<u64>,
        /// The decisions of the last DUR: 30m, 2h, 7d.
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        since: Option<chrono::Duration>,
        /// How many changed calls to list (at most 1000).
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=1000))]
        limit: u16,
        /// json: the whole report as one JSON object; table: a summary for people
        /// [default: table when stdout is a terminal, json otherwise].
        #[arg(long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// The shadow policy: with FILE, install it (it decides every call beside the policy
    /// in force, enforcing nothing); --off removes it; --promote puts it in force; with
    /// none of them, show how its decisions compare.
    Shadow {
        #[command(flatten)]
        control: ControlArgs,
        /// The Cedar policy file to install as the shadow.
        #[arg(conflicts_with_all = ["off", "promote"])]
        file: Option<PathBuf>,
        /// Remove the shadow.
        #[arg(long, conflicts_with = "promote")]
        off: bool,
        /// Put the shadow in force as a new version, if it is still --sha and the policy
        /// in force is still --expected-version.
        #[arg(long, requires_all = ["expected_version", "sha"])]
        promote: bool,
        /// The shadow to promote, as `toolgate policy shadow` shows it (12 digits or more).
        #[arg(long, value_name = "SHA256", requires = "promote")]
        sha: Option<String>,
        /// The version in force the shadow was compared against.
        #[arg(long, value_name = "V", requires = "promote")]
        expected_version: Option<u64>,
        /// Why, for the version history (with --promote).
        #[arg(long, value_name = "TEXT", requires = "promote")]
        note: Option<String>,
    },
    /// Show what changed between two stored policy versions, as a unified diff.
    Diff {
        #[command(flatten)]
        control: ControlArgs,
        /// The version to compare from.
        v1: u64,
        /// The version to compare to.
        v2: u64,
    },
}

/// What `--grant-scope` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrantScopeArg {
    Identical,
    Tool,
}

impl From<GrantScopeArg> for crate::api::GrantScope {
    fn from(s: GrantScopeArg) -> Self {
        match s {
            GrantScopeArg::Identical => crate::api::GrantScope::Identical,
            GrantScopeArg::Tool => crate::api::GrantScope::Tool,
        }
    }
}

/// `30m`, `2h`, `7d` (or `45s`) as a duration, for `--since`.
pub fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .ok_or_else(|| format!("{text:?} is not a duration: use 30m, 2h or 7d"))?;
    let (digits, unit) = text.split_at(unit_at);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use 30m, 2h or 7d"))?;
    let duration = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    };
    duration
        .filter(|d| *d <= chrono::Duration::days(3653))
        .ok_or_else(|| format!("{text:?} is not a duration: use 30m, 2h or 7d (ten years at most)"))
}

/// `UPSTREAM/TOOL=CLASS` as a candidate class, for `--risk`.
pub fn parse_risk_candidate(text: &str) -> Result<crate::api::RiskCandidate, String> {
    let wrong =
        || format!("{text:?} is not UPSTREAM/TOOL=CLASS (read, write, destructive, unclassified)");
    let (tool, class) = text.rsplit_once('=').ok_or_else(wrong)?;
    let (upstream, tool) = tool.split_once('/').ok_or_else(wrong)?;
    let risk = crate::api::Risk::parse(class).ok_or_else(wrong)?;
    if upstream.is_empty() || tool.is_empty() {
        return Err(wrong());
    }
    Ok(crate::api::RiskCandidate {
        upstream: upstream.to_owned(),
        tool: tool.to_owned(),
        risk,
    })
}

/// Where the control API is, and the operator token to use.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The control API origin.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7801",
        env = "TOOLGATE_GATEWAY"
    )]
    pub gateway: String,
    /// An operator token.
    #[arg(long, env = "TOOLGATE_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// How `holds`, `events` and `policy log` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object a line, for programs.
    Json,
    /// A header, then a line a row, for a person.
    Table,
}

impl OutputFormat {
    /// The format asked for, or else a table on a terminal and JSON lines for a pipe or a
    /// file, which is where a program reads.
    pub fn or_default(chosen: Option<Self>, terminal: bool) -> Self {
        chosen.unwrap_or(if terminal {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        })
    }
}

/// What the CALL_ID of `approve` or `deny` names.
#[derive(Debug, PartialEq, Eq)]
pub enum CallIdArg {
    /// A whole call id, lowercased: it goes to the API as it is, pending or not.
    Full(String),
    /// Part of one, lowercased: the console's short id (the end of a call id) or a start.
    Part(String),
}

impl CallIdArg {
    pub fn parse(arg: &str) -> Result<Self, String> {
        if let Ok(id) = uuid::Uuid::try_parse(arg)
            && arg.len() == uuid::fmt::Hyphenated::LENGTH
        {
            return Ok(CallIdArg::Full(id.hyphenated().to_string()));
        }
        if arg.is_empty() || !arg.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(format!(
                "{arg:?} is not a call id or part of one (hex digits and dashes)"
            ));
        }
        // A hold that is gone leaves the next one to match a short part: four characters
        // at least, as git asks of an abbreviated hash, so a slip cannot approve a stranger.
        if arg.len() < MIN_ID_PART {
            return Err(format!(
                "{arg:?} is too short: give at least {MIN_ID_PART} characters of the call id \
                 (the console shows its last 8)"
            ));
        }
        Ok(CallIdArg::Part(arg.to_ascii_lowercase()))
    }
}

/// The fewest characters of a call id that `approve` and `deny` accept.
pub const MIN_ID_PART: usize = 4;

/// Whether `part` names `call_id`: its start (at least `MIN_ID_PART` characters), or its
/// end as the console shows it (the short id, 8 characters or more). A shorter end is
/// not a short id anyone was shown, so it names nothing.
pub fn id_matches(call_id: &str, part: &str) -> bool {
    let id = call_id.to_ascii_lowercase();
    id.starts_with(part)
        || (part.len() >= crate::api::short_id(call_id).len() && id.ends_with(part))
}

/// The one pending hold whose call id starts or ends with `part`, or why there is none:
/// nothing matches, or several do (listed, so the operator can give more of the id).
/// Call ids are UUIDv7, whose start is a timestamp: calls held in the same minute share
/// their first eight characters, so a start is often ambiguous where the end is not.
pub fn pick_hold<'a>(part: &str, holds: &'a [HoldView]) -> Result<&'a HoldView, String> {
    let matches: Vec<&HoldView> = holds
        .iter()
        .filter(|h| id_matches(&h.call_id, part))
        .collect();
    match matches[..] {
        [one] => Ok(one),
        [] => Err(format!(
            "no pending hold matches {part:?} (`toolgate holds` lists them; a resolved hold needs its full call id)"
        )),
        ref many => {
            let mut message = format!(
                "{part:?} matches {} pending holds; nothing was resolved. Give more of the call id:",
                many.len()
            );
            for line in crate::cli_output::hold_list(many) {
                message.push_str("\n  ");
                message.push_str(&line);
            }
            Err(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(call_id: &str, identity: &str, tool: &str) -> HoldView {
        serde_json::from_value(serde_json::json!({
            "call_id": call_id, "phase": "waiting", "expires_at": "2026-01-01T00:10:00.000Z",
            "call": {"call_id": call_id, "upstream": "py", "tool": tool, "risk": "write",
                "identity": {"kind": "api_token", "name": identity, "groups": []},
                "target": {"kind": "page", "id": "P-1"}, "workflow": null, "outcome": "hold",
                "policy_ids": [], "reason": "", "decision_us": 1, "args": {}}
        }))
        .unwrap()
    }

    const A: &str = "019b0d2e-6a41-7c3e-9f00-0123456789ab";
    const B: &str = "019b0d2e-6a42-7d11-8e00-fedcba987654";

    #[test]
    fn a_whole_call_id_goes_through_and_anything_else_of_hex_and_dashes_is_a_part() {
        assert_eq!(CallIdArg::parse(A), Ok(CallIdArg::Full(A.into())));
        assert_eq!(
            CallIdArg::parse(&A.to_uppercase()),
            Ok(CallIdArg::Full(A.into()))
        );
        assert_eq!(
            CallIdArg::parse("456789AB"),
            Ok(CallIdArg::Part("456789ab".into()))
        );
        // The 32-digit form is a UUID too, but not a call id as the API spells it.
        assert_eq!(
            CallIdArg::parse(&A.replace('-', "")),
            Ok(CallIdArg::Part(A.replace('-', "")))
        );
        for bad in ["", "hold-xyz", "0190 1234", "../x"] {
            let err = CallIdArg::parse(bad).unwrap_err();
            assert!(err.contains("is not a call id or part of one"), "{err}");
        }
        let err = CallIdArg::parse("019").unwrap_err();
        assert!(err.contains("give at least 4 characters"), "{err}");
        assert_eq!(CallIdArg::parse("019b"), Ok(CallIdArg::Part("019b".into())));
    }

    #[test]
    fn a_short_id_or_a_unique_start_picks_one_hold() {
        let holds = [
            hold(A, "ci-bot", "write_page"),
            hold(B, "ops", "delete_page"),
        ];
        assert_eq!(pick_hold("456789ab", &holds).unwrap().call_id, A);
        assert_eq!(pick_hold("ba987654", &holds).unwrap().call_id, B);
        assert_eq!(pick_hold("019b0d2e-6a42", &holds).unwrap().call_id, B);
        assert_eq!(pick_hold(A, &holds).unwrap().call_id, A);
        // A few characters of the end are no short id anyone was shown: no match.
        assert!(pick_hold("89ab", &holds).is_err());
        assert!(pick_hold("9876543", &holds).is_err());
    }

    #[test]
    fn an_ambiguous_part_lists_every_match_and_a_missing_one_says_so() {
        let holds = [
            hold(A, "ci-bot", "write_page"),
            hold(B, "ops", "delete_page"),
        ];
        let err = pick_hold("019b0d2e", &holds).unwrap_err();
        assert_eq!(
            err,
            format!(
                "\"019b0d2e\" matches 2 pending holds; nothing was resolved. Give more of the call id:\n  \
                 {A}  token:ci-bot  py/write_page   page:P-1\n  \
                 {B}  token:ops     py/delete_page  page:P-1"
            )
        );
        let err = pick_hold("deadbeef", &holds).unwrap_err();
        assert!(
            err.starts_with("no pending hold matches \"deadbeef\""),
            "{err}"
        );
    }
}
