//! The command line: one binary, one subcommand per job.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Approve a held call; it runs once.
    Approve {
        #[command(flatten)]
        control: ControlArgs,
        call_id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a held call.
    Deny {
        #[command(flatten)]
        control: ControlArgs,
        call_id: String,
        /// Why, for the audit log and the agent.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Work with Cedar policy files.
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

/// How `holds` and `events` print.
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
