use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use toolgate::cli::{Cli, Command, PolicyCommand, TokenCommand};
use toolgate::config::Config;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TOOLGATE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("toolgate=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gateway { config } => {
            let config = Config::load(&config)?;
            tokio::runtime::Runtime::new()?.block_on(toolgate::gateway::run(config))
        }
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            match toolgate::gateway::policy::PolicyEngine::compile(&text) {
                Ok(engine) => {
                    println!("{}: ok, {} policies", file.display(), engine.policy_count());
                    Ok(())
                }
                Err(e) => {
                    let at = match (e.line, e.column) {
                        (Some(l), Some(c)) => format!(":{l}:{c}"),
                        (Some(l), None) => format!(":{l}"),
                        _ => String::new(),
                    };
                    anyhow::bail!("{}{at}: {}", file.display(), e.message)
                }
            }
        }
        Command::Token {
            command: TokenCommand::New { name },
        } => {
            let token = toolgate::token::new_token();
            let issued = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            print!(
                "{}",
                toolgate::token::describe_new_token(&name, &token, &issued)
            );
            Ok(())
        }
    }
}
