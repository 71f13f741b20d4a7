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
    /// Work with Cedar policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
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
