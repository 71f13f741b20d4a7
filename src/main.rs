use std::io::{IsTerminal, Write};

use clap::Parser;
use tracing_subscriber::EnvFilter;

use toolgate::cli::{
    CallIdArg, Cli, Command, ControlArgs, OutputFormat, PolicyCommand, TokenCommand, pick_hold,
};
use toolgate::cli_output;
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
            notify,
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
                notify,
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
        Command::Events {
            control,
            since,
            output,
        } => runtime()?.block_on(events(&control, since, output)),
        Command::Holds { control, output } => runtime()?.block_on(holds(&control, output)),
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

/// Writes one line to stdout. `Ok(false)` when the reader has gone (`| head -1` has its
/// line): that ends the output quietly, as it is no error. Rust ignores SIGPIPE, so a
/// closed pipe shows up here as EPIPE.
fn print_line(out: &mut impl Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
    }
}

/// Resolves once stdout's reader has gone (a pipe closed, as `head -1` does after its
/// line, or a terminal hung up), so a quiet stream ends then rather than at its next
/// event, as GNU `tail -f` does. Never resolves for a file, which has no reader to lose.
async fn reader_gone() {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        // A copy of stdout's descriptor that is only watched, never written, so stdout
        // stays blocking. The poller refuses a regular file: nothing to watch then.
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned()
            && let Ok(watch) = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(fd)
            && watch.ready(tokio::io::Interest::ERROR).await.is_ok()
        {
            return;
        }
    }
    std::future::pending::<()>().await
}

async fn holds(control: &ControlArgs, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let client = ControlClient::new(&control.gateway, &control.token)?;
    let listed = client.holds().await?;
    let holds = listed.rows;
    let stdout = std::io::stdout();
    let mut lines = match OutputFormat::or_default(output, stdout.is_terminal()) {
        // A hold this version cannot read is printed as the gateway sent it.
        OutputFormat::Json => holds
            .iter()
            .map(serde_json::to_string)
            .chain(listed.unreadable.iter().map(serde_json::to_string))
            .collect::<Result<Vec<_>, _>>()?,
        OutputFormat::Table if holds.is_empty() && listed.unreadable.is_empty() => {
            vec!["no held calls are waiting".to_owned()]
        }
        OutputFormat::Table => cli_output::holds_table(&holds, chrono::Utc::now()),
    };
    if !listed.unreadable.is_empty()
        && !matches!(output, Some(OutputFormat::Json))
        && stdout.is_terminal()
    {
        lines.push(format!(
            "and {} held calls this toolgate cannot show (a newer gateway's); --output json prints them",
            listed.unreadable.len()
        ));
    }
    // On a terminal, a line too wide is cut with `…` rather than wrapped mid-word.
    let width = stdout
        .is_terminal()
        .then(|| crossterm::terminal::size().ok().map(|(w, _)| w as usize))
        .flatten();
    let mut out = stdout.lock();
    for line in &lines {
        let line = match width {
            Some(w) => toolgate::console::text::fit(line, w),
            None => line.clone(),
        };
        if !print_line(&mut out, &line)? {
            break;
        }
    }
    Ok(())
}

/// Prints the event stream until it ends, or until stdout's reader goes away.
async fn events(
    control: &ControlArgs,
    since: Option<u64>,
    output: Option<OutputFormat>,
) -> anyhow::Result<()> {
    let client = ControlClient::new(&control.gateway, &control.token)?;
    let stdout = std::io::stdout();
    let mut table = (OutputFormat::or_default(output, stdout.is_terminal()) == OutputFormat::Table)
        .then(|| cli_output::EventTable::new(since.is_some()));
    let mut out = stdout.lock();
    if let Some(header) = table.as_mut().and_then(|t| t.header_now())
        && !print_line(&mut out, &header)?
    {
        return Ok(());
    }
    // The first failed write stops the stream: quietly for a reader that left, as an
    // error otherwise.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let mut stop_tx = Some(stop_tx);
    let stream = client.events(since, |json| {
        if stop_tx.is_none() {
            return;
        }
        let lines = match table.as_mut() {
            Some(table) => table.lines(json, chrono::Utc::now()),
            None => vec![json.to_owned()],
        };
        for line in &lines {
            let stop = match print_line(&mut out, line) {
                Ok(true) => continue,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(stop);
            }
            return;
        }
    });
    tokio::select! {
        streamed = stream => Ok(streamed?),
        stopped = stop_rx => stopped.unwrap_or(Ok(())),
        () = reader_gone() => Ok(()),
    }
}

/// Approves or denies a hold named by its call id, or by part of it as `pick_hold` finds
/// it among the pending holds; a race lost to someone else says who won and how.
fn resolve(
    control: &ControlArgs,
    call_id: &str,
    approve: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = ControlClient::new(&control.gateway, &control.token)?;
        let call_id = match CallIdArg::parse(call_id).map_err(anyhow::Error::msg)? {
            CallIdArg::Full(id) => id,
            CallIdArg::Part(part) => {
                let listed = client.holds().await?;
                // A hold this version cannot read may be the one meant: never guess past it.
                if listed.unreadable.iter().any(|h| {
                    h["call_id"]
                        .as_str()
                        .is_some_and(|id| toolgate::cli::id_matches(id, &part))
                }) {
                    anyhow::bail!(
                        "{part:?} matches a hold this toolgate cannot read (a newer gateway's); give its full call id"
                    );
                }
                let hold = pick_hold(&part, &listed.rows).map_err(anyhow::Error::msg)?;
                eprintln!(
                    "toolgate: {} {} ({}, {}/{})",
                    if approve { "approving" } else { "denying" },
                    hold.call_id,
                    cli_output::identity_label(&hold.call.identity),
                    cli_output::printable(&hold.call.upstream),
                    cli_output::printable(&hold.call.tool),
                );
                hold.call_id.clone()
            }
        };
        // A person reads one line; a program gets the hold as JSON.
        let person = std::io::stdout().is_terminal();
        let shown = |hold: &toolgate::api::HoldView| -> anyhow::Result<String> {
            Ok(if person {
                cli_output::resolution_line(hold)
            } else {
                serde_json::to_string(hold)?
            })
        };
        let mut out = std::io::stdout().lock();
        match client.resolve(&call_id, approve, reason).await {
            Ok(hold) => {
                print_line(&mut out, &shown(&hold)?)?;
                Ok(())
            }
            Err(ClientError::Api {
                code,
                message,
                hold: Some(hold),
                ..
            }) if code == "already_resolved" => {
                print_line(&mut out, &shown(&hold)?)?;
                anyhow::bail!("{call_id}: {message}")
            }
            Err(e) => Err(e.into()),
        }
    })
}
