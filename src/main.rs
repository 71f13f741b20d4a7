use std::io::{IsTerminal, Write};

use clap::Parser;
use tracing_subscriber::EnvFilter;

use toolgate::cli::{
    CallIdArg, Cli, Command, ControlArgs, OutputFormat, PolicyCommand, StoreCommand, TokenCommand,
    pick_hold,
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
        Command::SampleServer => runtime()?.block_on(toolgate::demo::upstream::serve_stdio()),
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
        Command::Grants {
            control,
            output,
            revoke,
        } => runtime()?.block_on(grants(&control, output, revoke)),
        Command::Tokens { control, output } => runtime()?.block_on(tokens(&control, output)),
        Command::Approve {
            control,
            call_id,
            reason,
            grant_for,
            grant_scope,
        } => {
            let grant = grant_for.map(|d| toolgate::api::GrantRequest {
                for_secs: d.num_seconds().max(0) as u64,
                scope: grant_scope.into(),
            });
            resolve(&control, &call_id, Some(grant), reason)
        }
        Command::Deny {
            control,
            call_id,
            reason,
        } => resolve(&control, &call_id, None, reason),
        Command::Policy { command } => runtime()?.block_on(policy(command)),
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
        Command::Audit { command } => audit(command),
        Command::Store {
            command: StoreCommand::Migrate { config },
        } => {
            let config = Config::load(&config)?;
            let location = config.store_location().map_err(anyhow::Error::msg)?;
            let (ran, steps) = runtime()?
                .block_on(toolgate::gateway::store::migrate(&location))
                .map_err(|e| {
                    anyhow::anyhow!("cannot migrate the store ({}): {e}", location.describe())
                })?;
            println!(
                "toolgate store migrate: {} at schema step {steps} of {steps} ({ran} run now)",
                location.describe()
            );
            Ok(())
        }
    }
}

fn audit(command: toolgate::cli::AuditCommand) -> anyhow::Result<()> {
    use toolgate::audit_cli::{self, Source};
    use toolgate::cli::AuditCommand;
    let source_of =
        |data_dir: Option<std::path::PathBuf>, config: Option<std::path::PathBuf>| match (
            data_dir, config,
        ) {
            (Some(dir), _) => Some(Source::DataDir(dir)),
            (None, Some(file)) => Some(Source::Config(file)),
            (None, None) => None,
        };
    match command {
        AuditCommand::Verify {
            data_dir,
            config,
            export,
            pubkey,
            anchor,
        } => {
            let source = match (source_of(data_dir, config), export) {
                (Some(s), _) => s,
                (None, Some(file)) => Source::Export(file),
                (None, None) => anyhow::bail!("give --data-dir, --config or --export"),
            };
            let (said, code) = runtime()?.block_on(audit_cli::verify(&source, &pubkey, &anchor));
            if code == audit_cli::INTACT {
                println!("toolgate audit verify: {said}");
            } else {
                eprintln!("toolgate audit verify: {said}");
            }
            std::process::exit(code);
        }
        AuditCommand::Export {
            source,
            since,
            until,
            output,
        } => {
            let source = source_of(source.data_dir, source.config).expect("clap requires one");
            let written = match &output {
                Some(path) => {
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(path)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                    runtime()?.block_on(audit_cli::export(&source, since, until, &mut file))?
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    runtime()?.block_on(audit_cli::export(&source, since, until, &mut out))?
                }
            };
            if let Some(path) = output {
                eprintln!(
                    "toolgate audit export: {written} events to {}",
                    path.display()
                );
            }
            Ok(())
        }
        AuditCommand::Pubkey {
            data_dir,
            config,
            key_file,
        } => {
            println!(
                "{}",
                audit_cli::pubkey(config.as_deref(), data_dir.as_deref(), key_file.as_deref())?
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
/// line): that ends the output quietly, as it is no error.
fn print_line(out: &mut impl Write, line: &str) -> anyhow::Result<bool> {
    print_text(out, &format!("{line}\n"))
}

/// Writes `text` to stdout as it is. `Ok(false)` when the reader has gone. Rust ignores
/// SIGPIPE, so a closed pipe shows up here as EPIPE.
fn print_text(out: &mut impl Write, text: &str) -> anyhow::Result<bool> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
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
    let format = OutputFormat::or_default(output, stdout.is_terminal());
    let mut lines = match format {
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
    if !listed.unreadable.is_empty() && format == OutputFormat::Table {
        lines.push(format!(
            "and {} held calls this toolgate cannot show (a newer gateway's); --output json prints them",
            listed.unreadable.len()
        ));
    }
    // JSON lines are never cut: a cut line is no JSON.
    print_rows(&lines, format == OutputFormat::Table)
}

/// The token report: a line per token and its flags, or JSON lines.
async fn tokens(control: &ControlArgs, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let client = ControlClient::new(&control.gateway, &control.token)?;
    let view = client.tokens().await?;
    let stdout = std::io::stdout();
    let format = OutputFormat::or_default(output, stdout.is_terminal());
    let lines = match format {
        OutputFormat::Json => view
            .tokens
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?,
        OutputFormat::Table => cli_output::tokens_table(&view),
    };
    print_rows(&lines, format == OutputFormat::Table)
}

/// Lists the active grants, or revokes one named by its id or short id.
async fn grants(
    control: &ControlArgs,
    output: Option<OutputFormat>,
    revoke: Option<String>,
) -> anyhow::Result<()> {
    let client = ControlClient::new(&control.gateway, &control.token)?;
    let grants = client.grants().await?.grants;
    if let Some(wanted) = revoke {
        // Only an exact id or an exact short id: a slip never revokes another grant.
        let found: Vec<_> = grants
            .iter()
            .filter(|g| g.id == wanted || toolgate::api::short_id(&g.id) == wanted)
            .collect();
        let grant = match found.as_slice() {
            [one] => *one,
            [] => anyhow::bail!("no active grant {wanted:?} (toolgate grants lists them)"),
            _ => anyhow::bail!("{wanted:?} names several grants; give the whole id"),
        };
        let revoked = client.revoke_grant(&grant.id).await?;
        println!(
            "revoked {} (used {} times)",
            cli_output::printable(&revoked.label()),
            revoked.uses
        );
        return Ok(());
    }
    let stdout = std::io::stdout();
    let format = OutputFormat::or_default(output, stdout.is_terminal());
    let lines = match format {
        OutputFormat::Json => grants
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?,
        OutputFormat::Table if grants.is_empty() => vec!["no active grants".to_owned()],
        OutputFormat::Table => cli_output::grants_table(&grants, chrono::Utc::now()),
    };
    print_rows(&lines, format == OutputFormat::Table)
}

/// Prints a line each, until stdout's reader goes. On a terminal, when `fit`, a line too
/// wide is cut with `…` rather than wrapped mid-word.
fn print_rows(lines: &[String], fit: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let width = (fit && stdout.is_terminal())
        .then(|| crossterm::terminal::size().ok().map(|(w, _)| w as usize))
        .flatten();
    let mut out = stdout.lock();
    for line in lines {
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

/// A policy the gateway refused as invalid, as `FILE:LINE:COL: message`.
fn policy_refused(file: &dyn std::fmt::Display, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api {
            message,
            line,
            column,
            ..
        } => anyhow::anyhow!("{file}{}: {message}", cli_output::place(line, column)),
        other => other.into(),
    }
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

/// Approves (`Some(grant)`, perhaps with a grant) or denies (`None`) a hold named by its
/// call id, or by part of it as `pick_hold` finds it among the pending holds; a race lost
/// to someone else says who won and how.
fn resolve(
    control: &ControlArgs,
    call_id: &str,
    approving: Option<Option<toolgate::api::GrantRequest>>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let approve = approving.is_some();
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
        match client
            .resolve(&call_id, approve, reason, approving.flatten())
            .await
        {
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

/// `policy check` a file; `policy pull | push | log | diff` the gateway's policy, through
/// the control API.
async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    let client = |control: &ControlArgs| ControlClient::new(&control.gateway, &control.token);
    let stdout = std::io::stdout();
    match command {
        PolicyCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            match toolgate::gateway::policy::PolicyEngine::compile(&text) {
                Ok(engine) => {
                    println!("{}: ok, {} policies", file.display(), engine.policy_count());
                    Ok(())
                }
                Err(e) => anyhow::bail!(
                    "{}{}: {}",
                    file.display(),
                    cli_output::place(e.line, e.column),
                    e.message
                ),
            }
        }
        PolicyCommand::Pull {
            control,
            output,
            force,
            version,
        } => {
            let client = client(&control)?;
            let policy = match version {
                Some(v) => client.policy_version(v).await?,
                None => client.policy().await?,
            };
            let Some(path) = output else {
                print_text(&mut stdout.lock(), &policy.text)?;
                return Ok(());
            };
            write_file(&path, &policy.text, force)?;
            print_line(
                &mut stdout.lock(),
                &format!(
                    "{}: policy v{} ({})",
                    path.display(),
                    policy.stored.version,
                    cli_output::short_sha(&policy.stored.sha256)
                ),
            )?;
            Ok(())
        }
        PolicyCommand::Push {
            control,
            file,
            note,
            expected_version,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            match client(&control)?
                .put_policy(&text, note, expected_version)
                .await
            {
                Ok(event) => {
                    let toolgate::api::EventBody::PolicyChanged {
                        version, sha256, ..
                    } = event.body
                    else {
                        anyhow::bail!("the gateway answered with a {} event", event.body.kind());
                    };
                    print_line(
                        &mut stdout.lock(),
                        &format!(
                            "{}: v{version} is in force ({})",
                            file.display(),
                            cli_output::short_sha(&sha256)
                        ),
                    )?;
                    Ok(())
                }
                Err(e) if e.is_invalid_policy() => Err(policy_refused(&file.display(), e)),
                Err(ClientError::Api {
                    code,
                    policy: Some(current),
                    ..
                }) if code == "stale_version" => anyhow::bail!(
                    "{}: not pushed: the policy in force is {}, not v{}; pull it, merge your \
                     change and push with --expected-version {}",
                    file.display(),
                    cli_output::policy_label(&current),
                    expected_version.unwrap_or_default(),
                    current.version
                ),
                Err(e) => Err(e.into()),
            }
        }
        PolicyCommand::Replay {
            control,
            file,
            risk,
            last,
            since,
            limit,
            output,
        } => {
            let policy = file
                .as_ref()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))
                })
                .transpose()?;
            let window = match (since, last) {
                (Some(ago), _) => Some(toolgate::api::ReplayWindow::Since(
                    (chrono::Utc::now() - ago).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )),
                (None, Some(n)) => Some(toolgate::api::ReplayWindow::Last(n)),
                (None, None) => None,
            };
            let request = toolgate::api::ReplayRequest {
                policy,
                risk,
                window,
                page: Some(toolgate::api::ReplayPage {
                    after: None,
                    upto: None,
                    limit: Some(usize::from(limit)),
                }),
            };
            match client(&control)?.replay(&request).await {
                Ok(report) => {
                    let lines = match OutputFormat::or_default(output, stdout.is_terminal()) {
                        OutputFormat::Json => vec![serde_json::to_string(&report)?],
                        OutputFormat::Table => {
                            cli_output::replay_summary(&report, chrono::Utc::now())
                        }
                    };
                    print_rows(&lines, false)
                }
                Err(e) if e.is_invalid_policy() => Err(policy_refused(
                    &file
                        .as_deref()
                        .map_or("the policy".into(), |f| f.display().to_string()),
                    e,
                )),
                Err(e) => Err(e.into()),
            }
        }
        PolicyCommand::Shadow {
            control,
            file,
            off,
            promote,
            sha,
            expected_version,
            note,
        } => {
            let client = client(&control)?;
            let no_shadow = |e: &ClientError| matches!(e, ClientError::Api { status: 404, .. });
            let lines = if let Some(file) = file {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                match client.put_shadow(&text).await {
                    Ok(view) => vec![format!(
                        "{}: installed as the shadow ({}); it decides every call beside the policy in force and enforces nothing",
                        file.display(),
                        cli_output::short_sha(&view.sha256)
                    )],
                    Err(e) if e.is_invalid_policy() => {
                        return Err(policy_refused(&file.display(), e));
                    }
                    Err(e) => return Err(e.into()),
                }
            } else if off {
                match client.delete_shadow().await {
                    Ok(view) => {
                        let mut lines = vec!["the shadow is removed".to_owned()];
                        lines.extend(cli_output::shadow_summary(&view).into_iter().skip(1));
                        lines
                    }
                    Err(e) if no_shadow(&e) => anyhow::bail!("no shadow policy is installed"),
                    Err(e) => return Err(e.into()),
                }
            } else if promote {
                let expected = expected_version.expect("clap requires it with --promote");
                let sha = sha.expect("clap requires it with --promote");
                match client.promote_shadow(&sha, expected, note).await {
                    Ok(event) => {
                        let toolgate::api::EventBody::PolicyChanged { version, .. } = event.body
                        else {
                            anyhow::bail!(
                                "the gateway answered with a {} event",
                                event.body.kind()
                            );
                        };
                        vec![format!("the shadow is in force as v{version}")]
                    }
                    Err(ClientError::Api {
                        code,
                        policy: Some(current),
                        ..
                    }) if code == "stale_version" => anyhow::bail!(
                        "not promoted: the policy in force is {}, not v{expected}; the shadow was compared against another policy",
                        cli_output::policy_label(&current)
                    ),
                    Err(e) if no_shadow(&e) => anyhow::bail!("no shadow policy is installed"),
                    Err(ClientError::Api { code, message, .. }) if code == "shadow_changed" => {
                        anyhow::bail!("not promoted: {message}")
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                match client.shadow().await? {
                    Some(view) => cli_output::shadow_summary(&view),
                    None => vec!["no shadow policy is installed".to_owned()],
                }
            };
            print_rows(&lines, false)
        }
        PolicyCommand::Log { control, output } => {
            let versions = client(&control)?.policy_versions().await?;
            let format = OutputFormat::or_default(output, stdout.is_terminal());
            let lines = match format {
                OutputFormat::Json => versions
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<Vec<_>, _>>()?,
                OutputFormat::Table => cli_output::policy_log(&versions),
            };
            // JSON is never cut: a program reads it whole.
            print_rows(&lines, format == OutputFormat::Table)
        }
        PolicyCommand::Diff { control, v1, v2 } => {
            let client = client(&control)?;
            let (old, new) =
                tokio::try_join!(client.policy_version(v1), client.policy_version(v2))?;
            let diff = cli_output::policy_diff(&old, &new);
            if diff.is_empty() {
                eprintln!(
                    "toolgate: v{v1} and v{v2} have the same text ({})",
                    cli_output::short_sha(&new.stored.sha256)
                );
            }
            print_text(&mut stdout.lock(), &diff)?;
            Ok(())
        }
    }
}

/// Writes `text` to a new file at `path`, or over an existing one when `force`.
fn write_file(path: &std::path::Path, text: &str, force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} exists; it is kept (--force overwrites it)",
            path.display()
        ),
        _ => anyhow::anyhow!("cannot write {}: {e}", path.display()),
    })?;
    file.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
