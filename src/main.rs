use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use std::io::Write as _;

use toolgate::cli::{Cli, Command, ControlArgs, PolicyCommand, TokenCommand};
use toolgate::client::{ClientError, ControlClient};
use toolgate::config::Config;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A full-screen console owns the terminal: log lines would tear it, so they are off
    // unless TOOLGATE_LOG asks for them (send stderr to a file then).
    let owns_terminal = matches!(
        cli.command,
        Command::Console { .. }
            | Command::Demo {
                no_console: false,
                ..
            }
    );
    let default_filter = if owns_terminal {
        "off"
    } else {
        "toolgate=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TOOLGATE_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_filter)),
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
            runtime()?.block_on(toolgate::gateway::run(config))
        }
        Command::Console {
            context,
            gateway,
            token,
            read_only,
            bell,
            ring,
            theme,
            color,
            mouse,
            print_config_path,
        } => {
            if print_config_path {
                match toolgate::console::config::config_path() {
                    Some((path, _)) => println!("{}", path.display()),
                    None => anyhow::bail!(
                        "no config directory is known for this user; set {}",
                        toolgate::console::config::CONFIG_ENV
                    ),
                }
                return Ok(());
            }
            runtime()?.block_on(toolgate::console::run(toolgate::console::Options {
                context,
                gateway,
                token,
                read_only,
                bell,
                ring,
                theme,
                color,
                mouse,
                greeting: None,
            }))
        }
        Command::Demo {
            port,
            control_port,
            upstream_port,
            data_dir,
            no_console,
            no_agents,
            bell,
            theme,
            color,
        } => runtime()?.block_on(toolgate::demo::run(toolgate::demo::DemoOptions {
            port,
            control_port,
            upstream_port,
            data_dir,
            no_console,
            no_agents,
            console: toolgate::console::Options {
                bell: Some(bell),
                theme,
                color,
                ..Default::default()
            },
        })),
        Command::Events { control, since } => runtime()?.block_on(async {
            let client = ControlClient::new(&control.gateway, &control.token)?;
            let mut out = std::io::stdout().lock();
            client
                .events(since, |json| {
                    let _ = writeln!(out, "{json}");
                    let _ = out.flush();
                })
                .await?;
            Ok(())
        }),
        Command::Holds { control } => runtime()?.block_on(async {
            let client = ControlClient::new(&control.gateway, &control.token)?;
            for hold in client.holds().await? {
                println!("{}", serde_json::to_string(&hold)?);
            }
            Ok(())
        }),
        Command::Approve {
            control,
            call_id,
            reason,
        } => resolve(&control, &call_id, true, reason),
        Command::Deny {
            control,
            call_id,
            reason,
        } => resolve(&control, &call_id, false, reason),
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
        Command::Keygen { output } => {
            toolgate::gateway::keys::DeploymentKey::generate().write_new(&output)?;
            println!(
                "toolgate keygen: wrote a deployment key to {} (mode 600); set [gateway] key_file to it on every replica",
                output.display()
            );
            Ok(())
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Approves or denies a hold; a race lost to someone else says who won and how.
fn resolve(
    control: &ControlArgs,
    call_id: &str,
    approve: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = ControlClient::new(&control.gateway, &control.token)?;
        match client.resolve(call_id, approve, reason).await {
            Ok(hold) => {
                println!("{}", serde_json::to_string(&hold)?);
                Ok(())
            }
            Err(ClientError::Api {
                code,
                message,
                hold: Some(hold),
                ..
            }) if code == "already_resolved" => {
                println!("{}", serde_json::to_string(&hold)?);
                anyhow::bail!("{call_id}: {message}")
            }
            Err(e) => Err(e.into()),
        }
    })
}
