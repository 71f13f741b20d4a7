//! `toolgate console`: a terminal UI for watching decisions and resolving holds. It
//! speaks only the control API, like any third-party client.

pub mod app;
pub mod config;
pub mod editor;
pub mod filter;
pub mod keymap;
pub mod model;
pub mod net;
pub mod popups;
pub mod table;
pub mod text;
pub mod theme;
pub mod ui;
pub mod views;

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyEventKind, MouseEventKind};
use futures_util::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::client::ControlClient;
use app::{App, Command};
use config::{ConsoleConfig, Context, TokenSource};

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(33);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bell {
    Off,
    On,
    Unfocused,
}

/// A desktop notification when a hold arrives, through the terminal: OSC 9 (iTerm2,
/// kitty, WezTerm, Windows Terminal) or OSC 777 (foot, rxvt, VTE terminals). Off by
/// default; inside tmux it needs `set -g allow-passthrough on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    #[default]
    Off,
    Osc9,
    Osc777,
}

impl Notify {
    /// The escape sequence that shows `body`, or nothing when off. Control characters
    /// are dropped so that a tool name cannot end the sequence early.
    pub fn sequence(self, body: &str) -> Option<String> {
        let body: String = body
            .chars()
            .filter(|c| !c.is_control() && *c != ';')
            .collect();
        match self {
            Notify::Off => None,
            Notify::Osc9 => Some(format!("\x1b]9;{body}\x07")),
            Notify::Osc777 => Some(format!("\x1b]777;notify;toolgate;{body}\x07")),
        }
    }
}

/// When to use colour: `auto` honours `NO_COLOR`; `never` is the `mono` theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// What the command line asked for; the config fills in the rest.
#[derive(Default)]
pub struct Options {
    pub context: Option<String>,
    pub gateway: Option<String>,
    pub token: Option<String>,
    pub read_only: bool,
    pub bell: Option<Bell>,
    pub notify: Option<Notify>,
    pub ring: Option<usize>,
    pub theme: Option<String>,
    pub color: ColorChoice,
    pub mouse: bool,
    /// A first line for the status bar, until the first key.
    pub greeting: Option<String>,
}

const DEFAULT_GATEWAY: &str = "http://127.0.0.1:7801";
const DEFAULT_RING: usize = 10_000;

/// Where a user's own themes live: `<config dir>/toolgate/themes`.
pub fn user_themes_dir() -> Option<std::path::PathBuf> {
    directories::ProjectDirs::from("", "", "toolgate").map(|d| d.config_dir().join("themes"))
}

/// Everything the console runs with, the command line and config.toml merged.
struct Settings {
    config: ConsoleConfig,
    /// The context to start in; an unnamed one when it came from flags alone.
    start: Context,
    named: bool,
    bell: Bell,
    notify: Notify,
    ring: usize,
    mouse: bool,
    /// `--read-only`: every context, including those switched to, is read-only.
    read_only_flag: bool,
    /// `--color never` or `NO_COLOR`: every context uses `mono`.
    colourless: bool,
    /// The theme for a context that names none.
    base_theme: String,
    /// The theme named on the command line wins for the first context only.
    start_theme: Option<String>,
    greeting: Option<String>,
}

impl Settings {
    fn merge(options: Options, config: ConsoleConfig) -> anyhow::Result<Settings> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        // A --gateway or --token without --context is a one-off: a default context's
        // token must never be sent to a gateway it was not made for.
        let context_name = options.context.clone().or_else(|| {
            (options.gateway.is_none() && options.token.is_none())
                .then(|| config.default_context.clone())
                .flatten()
        });
        let (mut start, named) = match &context_name {
            Some(name) => (
                config
                    .context(name)
                    .map_err(|e| anyhow::anyhow!("--context: {e}"))?
                    .clone(),
                true,
            ),
            None => (
                Context {
                    name: String::new(),
                    gateway: env("TOOLGATE_GATEWAY").unwrap_or_else(|| DEFAULT_GATEWAY.into()),
                    token: None,
                    read_only: false,
                    theme: None,
                },
                false,
            ),
        };
        if let Some(g) = options.gateway {
            start.gateway = g;
        }
        if let Some(t) = options.token.map(TokenSource::Literal) {
            start.token = Some(t);
        } else if start.token.is_none() {
            start.token = token_from_env();
        }
        if start.token.is_none() {
            anyhow::bail!(
                "no operator token: pass --token, set TOOLGATE_TOKEN, or give the context a token \
                 or token_command in {}",
                config
                    .path
                    .as_ref()
                    .map_or("config.toml".into(), |p| p.display().to_string())
            );
        }
        start.read_only |= options.read_only;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let colourless = match options.color {
            ColorChoice::Never => true,
            ColorChoice::Always => false,
            ColorChoice::Auto => no_color,
        };
        Ok(Settings {
            read_only_flag: options.read_only,
            bell: options.bell.or(config.bell).unwrap_or(Bell::On),
            notify: options.notify.or(config.notify).unwrap_or_default(),
            ring: options.ring.or(config.ring).unwrap_or(DEFAULT_RING).max(1),
            mouse: options.mouse || config.mouse,
            colourless,
            base_theme: config.theme.clone().unwrap_or_else(|| "default".into()),
            start_theme: options.theme,
            greeting: options.greeting,
            start,
            named,
            config,
        })
    }

    /// The theme for `context`, as a name.
    fn theme_for(&self, context: &Context, first: bool) -> String {
        if self.colourless {
            return "mono".into();
        }
        first
            .then(|| self.start_theme.clone())
            .flatten()
            .or_else(|| context.theme.clone())
            .unwrap_or_else(|| self.base_theme.clone())
    }
}

/// `TOOLGATE_TOKEN`, the last place a token is looked for.
fn token_from_env() -> Option<TokenSource> {
    std::env::var("TOOLGATE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(TokenSource::Literal)
}

/// Every theme name `:theme` can complete: the shipped ones and the user's files.
fn theme_names() -> Vec<String> {
    let mut names: Vec<String> = theme::BUILTIN
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    if let Some(Ok(entries)) = user_themes_dir().map(std::fs::read_dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "toml")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                && !names.iter().any(|n| n == stem)
            {
                names.push(stem.to_owned());
            }
        }
    }
    names
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    // Everything that can be wrong is reported before the screen is taken over.
    let config = ConsoleConfig::load()?;
    let settings = Settings::merge(options, config)?;
    let theme_name = settings.theme_for(&settings.start, true);
    let theme = theme::Theme::load(&theme_name, user_themes_dir().as_deref())?;
    for conflict in &settings.config.key_conflicts {
        eprintln!("toolgate console: {conflict}");
    }
    let token = settings
        .start
        .token
        .as_ref()
        .map(TokenSource::resolve)
        .expect("merge checked there is a token")
        .await
        .map_err(|e| anyhow::anyhow!("context {:?}: {e}", settings.start.name))?;
    let client = ControlClient::new(&settings.start.gateway, &token)?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("toolgate console needs a terminal");
    }
    let mut screen = Screen::take(settings.mouse);
    let editing = Editing::default();
    // SIGTERM or SIGINT from outside (the terminal's own Ctrl-C is a key here) end the
    // console as `q` does, with the terminal restored.
    let result = tokio::select! {
        result = event_loop(&mut screen.terminal, client, &settings, theme, &editing) => result,
        () = stop_signal(&editing.active) => Ok(()),
    };
    editing.stop();
    result
}

/// The operator's editor while it has the terminal: what to stop, and the terminal's
/// settings to put back, if the console is told to stop meanwhile.
#[derive(Default)]
struct Editing {
    active: AtomicBool,
    pid: std::sync::atomic::AtomicU32,
    /// The terminal as the console gave it to the editor.
    termios: std::sync::Mutex<Option<libc::termios>>,
}

impl Editing {
    fn begin(&self, pid: Option<u32>) {
        // SAFETY: tcgetattr writes a termios for fd 0 into memory we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let saved = (unsafe { libc::tcgetattr(0, &mut t) } == 0).then_some(t);
        *self.termios.lock().expect("termios") = saved;
        self.pid.store(pid.unwrap_or(0), Ordering::SeqCst);
        self.active.store(true, Ordering::SeqCst);
    }

    fn end(&self) {
        self.active.store(false, Ordering::SeqCst);
        self.pid.store(0, Ordering::SeqCst);
    }

    /// Stops an editor still running (TERM, then KILL), and gives the terminal back as
    /// the editor found it: cooked, echoing, and without the keys typed meanwhile.
    fn stop(&self) {
        if !self.active.swap(false, Ordering::SeqCst) {
            return;
        }
        let pid = self.pid.load(Ordering::SeqCst) as libc::pid_t;
        if pid > 0 {
            // SAFETY: signals to the editor this console started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(10));
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(t) = *self.termios.lock().expect("termios") {
            // SAFETY: restores settings tcgetattr gave for the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Drops what was typed but not read yet: keys meant for the editor (a second Enter
/// after `:wq`) must not act on the console that takes the terminal back.
fn drop_typeahead() {
    // SAFETY: tcflush on fd 0 only discards queued input.
    unsafe { libc::tcflush(0, libc::TCIFLUSH) };
}

/// SIGTERM, or SIGINT unless the editor has the terminal: a Ctrl-C there is the
/// editor's (git ignores it too while its editor runs).
async fn stop_signal(editing: &AtomicBool) {
    #[cfg(unix)]
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        #[cfg(unix)]
        let terminated = async {
            match terminate.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminated = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                if !editing.load(Ordering::SeqCst) {
                    return;
                }
            }
            () = terminated => return,
        }
    }
}

/// The terminal while the console owns it. Dropping it gives the terminal back, on
/// return, on error, and when the console's future is dropped; ratatui's panic hook
/// covers panics.
struct Screen {
    terminal: DefaultTerminal,
    mouse: bool,
}

impl Screen {
    fn take(mouse: bool) -> Screen {
        let terminal = ratatui::init();
        report_focus_and_mouse(mouse);
        Screen { terminal, mouse }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        leave_screen(self.mouse);
    }
}

/// Asks the terminal to report focus changes, and the mouse when it is wanted.
fn report_focus_and_mouse(mouse: bool) {
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableFocusChange);
    if mouse {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture);
    }
}

/// Gives the terminal back as it was: cooked mode, the main screen, no mouse reports.
fn leave_screen(mouse: bool) {
    if mouse {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    }
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableFocusChange);
    ratatui::restore();
}

/// Takes the terminal again after the editor had it, and draws everything anew.
fn enter_screen(terminal: &mut DefaultTerminal, mouse: bool) {
    let _ = crossterm::terminal::enable_raw_mode();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen);
    report_focus_and_mouse(mouse);
    // A blank frame first, so the next one is drawn whole over the fresh screen.
    // (`Terminal::clear` asks the terminal where its cursor is first, and gives up
    // without forgetting the old frame when the answer is slow.)
    let _ = terminal.draw(|frame| frame.render_widget(ratatui::widgets::Clear, frame.area()));
}

/// Runs the operator's editor on `request`'s text in a private temporary file, with the
/// terminal given to it, and answers what was saved. The network's events still reach
/// the app meanwhile, so nothing that happens while the editor is open is missed.
async fn edit_outside(
    terminal: &mut DefaultTerminal,
    keys: &mut EventStream,
    mouse: bool,
    editing: &Editing,
    request: &popups::draft::EditRequest,
    app: &mut App,
    link: &mut Link,
) -> Result<String, String> {
    let file = tempfile::Builder::new()
        .prefix("toolgate-policy-")
        .suffix(".cedar")
        .tempfile()
        .map_err(|e| format!("cannot make the draft's file: {e}"))?;
    std::fs::write(file.path(), &request.text)
        .map_err(|e| format!("cannot write the draft's file: {e}"))?;
    let editor = editor::chosen();
    // The key reader stops first: left running, it would take keys meant for the editor.
    *keys = EventStream::new();
    leave_screen(mouse);
    let started = Instant::now();
    let status = match editor::command(&editor, file.path(), request.line).spawn() {
        Ok(mut child) => {
            editing.begin(child.id());
            loop {
                tokio::select! {
                    status = child.wait() => break status.map_err(|e| e.to_string()),
                    Some(event) = link.rx.recv() => app.on_net(event),
                }
            }
        }
        Err(e) => Err(format!(
            "cannot start the editor {editor:?}: {e}; set $VISUAL or $EDITOR"
        )),
    };
    editing.end();
    drop_typeahead();
    enter_screen(terminal, mouse);
    app.dirty = true;
    let status = status?;
    let saved = std::fs::read_to_string(file.path());
    if let Some(why) = editor::not_run(&editor, status) {
        return Err(why);
    }
    if !status.success() {
        // What it saved may be an hour of work: kept, and where is said.
        let kept = match &saved {
            Ok(text) if *text != request.text => file
                .keep()
                .map(|(_, path)| format!("; what it saved is kept in {}", path.display()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        return Err(format!(
            "the editor ({editor}) {status}: nothing changed{kept}"
        ));
    }
    let saved = saved.map_err(|e| format!("cannot read the draft back: {e}"))?;
    if request.draft.is_none()
        && saved == request.text
        && started.elapsed() < Duration::from_secs(1)
    {
        return Err(format!(
            "the editor ({editor}) returned at once with nothing changed: a GUI editor needs its wait flag (code --wait, subl -w, gvim -f)"
        ));
    }
    Ok(saved)
}

/// One connection to one gateway. Switching context drops it whole: its channel goes
/// with it, so nothing the old gateway sent can reach the new view.
struct Link {
    client: ControlClient,
    network: tokio::task::JoinHandle<()>,
    tx: mpsc::Sender<app::NetEvent>,
    rx: mpsc::Receiver<app::NetEvent>,
}

impl Link {
    fn open(client: ControlClient, ring: usize) -> Link {
        Link::resume(client, ring, None)
    }

    /// A link that goes on from what the app already has (`since` and the store id),
    /// so that a recreated store answers `reset` instead of passing for the old one.
    fn resume(client: ControlClient, ring: usize, from: Option<net::Resume>) -> Link {
        let (tx, rx) = mpsc::channel(1024);
        let network = tokio::spawn(net::run_from(client.clone(), ring, tx.clone(), from));
        Link {
            client,
            network,
            tx,
            rx,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.network.abort();
    }
}

/// Puts text on the terminal's clipboard with OSC 52; the terminal at the far end of an
/// SSH session receives it. Inside tmux this needs `set -g set-clipboard on`.
fn osc52(text: &str) -> String {
    use base64::Engine;
    format!(
        "\x1b]52;c;{}\x07",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    client: ControlClient,
    settings: &Settings,
    mut theme: ui::Theme,
    editing: &Editing,
) -> anyhow::Result<()> {
    let mut app = App::new(settings.ring, settings.start.read_only);
    app.keymap = settings.config.keymap.clone();
    app.context_names = settings
        .config
        .contexts
        .iter()
        .map(|c| c.name.clone())
        .collect();
    app.theme_names = theme_names();
    if settings.named {
        app.context = Some(settings.start.name.clone());
    }
    app.hint = settings.greeting.clone();
    app.gateway = client.origin().to_owned();
    if let Ok((w, h)) = crossterm::terminal::size() {
        app.resize(w, h);
    }
    if !settings.config.key_conflicts.is_empty() {
        app.notice(format!(
            "keys: {}",
            settings.config.key_conflicts.join("; ")
        ));
    }
    let mut link = Link::open(client, settings.ring);
    let mut keys = EventStream::new();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut focused = true;
    let mut last_bell = Instant::now() - Duration::from_secs(60);
    let mut last_draw = Instant::now() - FRAME;
    loop {
        if app.dirty && last_draw.elapsed() >= FRAME {
            terminal.draw(|f| ui::draw(f, &app, &theme, chrono::Utc::now()))?;
            app.dirty = false;
            last_draw = Instant::now();
        }
        if std::mem::take(&mut app.ring_bell) {
            let wanted = match settings.bell {
                Bell::Off => false,
                Bell::On => true,
                Bell::Unfocused => !focused,
            };
            // At most one bell (and one notification) every two seconds, however many
            // holds arrive.
            if last_bell.elapsed() >= Duration::from_secs(2) {
                let mut out = std::io::stdout();
                if wanted {
                    let _ = out.write_all(b"\x07");
                }
                if let Some(seq) = settings.notify.sequence(&app.hold_notice()) {
                    let _ = out.write_all(seq.as_bytes());
                }
                let _ = out.flush();
                last_bell = Instant::now();
            }
        }
        let wait = if app.dirty {
            FRAME.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        let mut commands = Vec::new();
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => commands = app.on_key(k),
                Some(Ok(Event::Mouse(m))) if settings.mouse => match m.kind {
                    MouseEventKind::ScrollUp => app.scroll(true),
                    MouseEventKind::ScrollDown => app.scroll(false),
                    _ => {}
                },
                Some(Ok(Event::FocusGained)) => focused = true,
                Some(Ok(Event::FocusLost)) => focused = false,
                Some(Ok(Event::Resize(w, h))) => app.resize(w, h),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            Some(event) = link.rx.recv() => {
                app.on_net(event);
                // Take what else has arrived, so a burst costs one frame.
                while let Ok(more) = link.rx.try_recv() {
                    app.on_net(more);
                }
                if std::mem::take(&mut app.want_tools) && app.view == views::View::Tools {
                    net::fetch_tools(link.client.clone(), link.tx.clone());
                }
                if std::mem::take(&mut app.want_policy) && app.view == views::View::Policy {
                    net::fetch_policy(link.client.clone(), link.tx.clone());
                }
            }
            _ = second.tick() => {
                // Countdowns and the reconnect timer move once a second.
                let changed = app.expire_fates(Instant::now());
                if changed || !app.model.holds.is_empty() || !app.is_connected() || app.flash.is_some() {
                    app.dirty = true;
                }
                if app.flash.as_ref().is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(5)) {
                    app.flash = None;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
        let mut commands = VecDeque::from(commands);
        while let Some(command) = commands.pop_front() {
            let (client, tx) = (link.client.clone(), link.tx.clone());
            match command {
                Command::Quit => return Ok(()),
                Command::Resolve {
                    call_id,
                    approve,
                    reason,
                    grant,
                } => net::resolve(client, call_id, approve, reason, grant, tx),
                Command::FetchTools => net::fetch_tools(client, tx),
                Command::FetchGrants => net::fetch_grants(client, tx),
                Command::FetchTokens => net::fetch_tokens(client, tx),
                Command::RevokeGrant(id) => net::revoke_grant(client, id, tx),
                Command::Extend { call_id, secs } => net::extend(client, call_id, secs, tx),
                Command::FetchPolicy => net::fetch_policy(client, tx),
                Command::FetchPolicyVersion(v) => net::fetch_policy_version(client, v, tx),
                Command::Preview {
                    upstream,
                    tool,
                    risk,
                } => net::preview(client, upstream, tool, risk, tx),
                Command::Edit(request) => {
                    let saved = edit_outside(
                        terminal,
                        &mut keys,
                        settings.mouse,
                        editing,
                        &request,
                        &mut app,
                        &mut link,
                    )
                    .await;
                    commands.extend(app.on_edited(*request, saved));
                }
                Command::ReplayDraft { id, text } => net::replay_draft(client, id, text, tx),
                Command::PushDraft {
                    id,
                    text,
                    note,
                    expected_version,
                } => net::push_draft(client, id, text, note, expected_version, tx),
                Command::ShadowDraft { id, text } => net::shadow_draft(client, id, text, tx),
                Command::SetRisk {
                    upstream,
                    tool,
                    risk,
                    expected_version,
                    note,
                } => net::set_risk(client, upstream, tool, risk, expected_version, note, tx),
                Command::Copy(text) => {
                    let _ = std::io::stdout().write_all(osc52(&text).as_bytes());
                    let _ = std::io::stdout().flush();
                }
                Command::SetTheme(name) => {
                    if settings.colourless {
                        app.notice("colour is off (--color never or NO_COLOR); mono stays");
                        continue;
                    }
                    match theme::Theme::load(&name, user_themes_dir().as_deref()) {
                        Ok(t) => {
                            theme = t;
                            app.notice(format!("theme {name}"));
                        }
                        Err(e) => app.notice(e.to_string()),
                    }
                }
                Command::Reconnect => {
                    // The same context again, with its token fetched anew: what an
                    // operator does after rotating a token.
                    let name = app.context.clone();
                    let fresh = match &name {
                        Some(name) => switch(settings, name).await.map(|(_, client, _)| client),
                        None => resolve_start(settings).await,
                    };
                    match fresh {
                        Ok(client) => {
                            app.gateway = client.origin().to_owned();
                            drop(std::mem::replace(
                                &mut link,
                                Link::open(client, settings.ring),
                            ));
                            app.connection = app::Connection::Connecting;
                            if app.view == views::View::Tools {
                                net::fetch_tools(link.client.clone(), link.tx.clone());
                            }
                        }
                        Err(e) => app.notice(format!("cannot reconnect: {e}")),
                    }
                }
                Command::SwitchContext(name) => {
                    match switch(settings, &name).await {
                        Ok((context, client, new_theme)) => {
                            // The old link goes first, so its task stops before the new one starts.
                            drop(std::mem::replace(
                                &mut link,
                                Link::open(client, settings.ring),
                            ));
                            theme = new_theme;
                            let view = app.view;
                            app.enter_context(&context.name, context.read_only);
                            app.gateway = link.client.origin().to_owned();
                            if view == views::View::Tools {
                                net::fetch_tools(link.client.clone(), link.tx.clone());
                            }
                        }
                        Err(e) => app.notice(format!("still on the old context: {e}")),
                    }
                }
            }
        }
    }
}

/// The start context's client again, its token resolved anew (a literal token or
/// `TOOLGATE_TOKEN` give the same one back).
async fn resolve_start(settings: &Settings) -> Result<ControlClient, String> {
    let token = settings
        .start
        .token
        .as_ref()
        .ok_or("no token")?
        .resolve()
        .await?;
    ControlClient::new(&settings.start.gateway, &token).map_err(|e| e.to_string())
}

/// Everything a new context needs, made before anything of the old one is dropped, so a
/// bad token command leaves the console where it was.
async fn switch(
    settings: &Settings,
    name: &str,
) -> Result<(Context, ControlClient, ui::Theme), String> {
    let mut context = settings.config.context(name)?.clone();
    // A flag cannot be undone by a switch: `--read-only` holds for every context.
    context.read_only |= settings.read_only_flag;
    let token = context
        .token
        .clone()
        .or_else(token_from_env)
        .ok_or_else(|| {
            format!("context {name:?} has no token or token_command, and TOOLGATE_TOKEN is unset")
        })?
        .resolve()
        .await?;
    let client = ControlClient::new(&context.gateway, &token).map_err(|e| e.to_string())?;
    let theme = theme::Theme::load(
        &settings.theme_for(&context, false),
        user_themes_dir().as_deref(),
    )
    .map_err(|e| e.to_string())?;
    Ok((context, client, theme))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            color: ColorChoice::Always,
            ..Options::default()
        }
    }

    fn config() -> ConsoleConfig {
        ConsoleConfig::parse(
            r#"
default_context = "prod"
theme = "light"
ring = 300
[[context]]
name = "prod"
gateway = "https://prod.example:7801"
token = "tg_prod"
read_only = true
theme = "high-contrast"
[[context]]
name = "staging"
gateway = "http://127.0.0.1:7801"
token = "tg_staging"
"#,
            std::path::Path::new("config.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_command_line_then_the_context_then_the_config_decide() {
        let s = Settings::merge(options(), config()).unwrap();
        assert_eq!((s.start.name.as_str(), s.named), ("prod", true));
        assert!(s.start.read_only, "a read-only context stays read-only");
        assert_eq!((s.ring, s.bell, s.mouse), (300, Bell::On, false));
        assert_eq!(s.theme_for(&s.start, true), "high-contrast");
        let staging = s.config.context("staging").unwrap().clone();
        assert_eq!(s.theme_for(&staging, false), "light", "the config's theme");

        // A one-off --gateway never gets the default context's token.
        let one_off = Options {
            gateway: Some("http://127.0.0.1:9999".into()),
            token: Some("tg_mine".into()),
            ..options()
        };
        let s = Settings::merge(one_off, config()).unwrap();
        assert!(!s.named);
        assert_eq!(s.start.token, Some(TokenSource::Literal("tg_mine".into())));
        assert!(!s.start.read_only);

        // --theme wins for the first context only; --color never wins always.
        let themed = Options {
            context: Some("staging".into()),
            theme: Some("default".into()),
            ring: Some(50),
            ..options()
        };
        let s = Settings::merge(themed, config()).unwrap();
        assert_eq!(s.ring, 50);
        assert_eq!(s.theme_for(&s.start, true), "default");
        let prod = s.config.context("prod").unwrap().clone();
        assert_eq!(s.theme_for(&prod, false), "high-contrast");
        let never = Options {
            color: ColorChoice::Never,
            ..options()
        };
        let s = Settings::merge(never, config()).unwrap();
        assert_eq!(s.theme_for(&s.start, true), "mono");
        assert_eq!(s.theme_for(&prod, false), "mono");
    }

    #[test]
    fn a_notification_is_off_by_default_and_cannot_be_ended_early_by_a_name() {
        assert_eq!(Notify::default().sequence("1 held"), None);
        assert_eq!(
            Notify::Osc9.sequence("2 held · newest: py/write_page by token:ci-bot"),
            Some("\x1b]9;2 held · newest: py/write_page by token:ci-bot\x07".into())
        );
        assert_eq!(
            Notify::Osc777.sequence("x\x07\x1b]52;c;evil;y"),
            Some("\x1b]777;notify;toolgate;x]52cevily\x07".into()),
            "control characters and separators are dropped"
        );
    }

    #[test]
    fn osc52_carries_the_text_in_base64() {
        assert_eq!(osc52("0190abc"), "\x1b]52;c;MDE5MGFiYw==\x07");
    }
}
