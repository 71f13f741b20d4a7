//! `toolgate console`: a terminal UI for watching decisions and resolving holds. It
//! speaks only the control API, like any third-party client.

pub mod app;
pub mod keymap;
pub mod net;
pub mod theme;
pub mod ui;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::client::ControlClient;
use app::{App, Command};

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(33);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bell {
    Off,
    On,
    Unfocused,
}

pub struct Options {
    pub gateway: String,
    pub token: String,
    pub read_only: bool,
    pub bell: Bell,
    pub ring: usize,
    pub theme: String,
}

/// Where a user's own themes live: `<config dir>/toolgate/themes`.
pub fn user_themes_dir() -> Option<std::path::PathBuf> {
    directories::ProjectDirs::from("", "", "toolgate").map(|d| d.config_dir().join("themes"))
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let client = ControlClient::new(&options.gateway, &options.token)?;
    // A broken theme is reported before the screen is taken over.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let theme = theme::choose(&options.theme, no_color, user_themes_dir().as_deref())?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("toolgate console needs a terminal");
    }
    // ratatui's init restores the terminal on panic as well as on return.
    let mut terminal = ratatui::init();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableFocusChange);
    let result = event_loop(&mut terminal, client, &options, &theme).await;
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableFocusChange);
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    client: ControlClient,
    options: &Options,
    theme: &ui::Theme,
) -> anyhow::Result<()> {
    let mut app = App::new(options.ring, options.read_only);
    let (net_tx, mut net_rx) = mpsc::channel(1024);
    let network = tokio::spawn(net::run(client.clone(), options.ring, net_tx.clone()));
    let mut keys = EventStream::new();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut focused = true;
    let mut last_bell = Instant::now() - Duration::from_secs(60);
    let mut last_draw = Instant::now() - FRAME;
    loop {
        if app.dirty && last_draw.elapsed() >= FRAME {
            terminal.draw(|f| ui::draw(f, &app, theme, chrono::Utc::now()))?;
            app.dirty = false;
            last_draw = Instant::now();
        }
        if std::mem::take(&mut app.ring_bell) {
            let wanted = match options.bell {
                Bell::Off => false,
                Bell::On => true,
                Bell::Unfocused => !focused,
            };
            // At most one bell every two seconds, however many holds arrive.
            if wanted && last_bell.elapsed() >= Duration::from_secs(2) {
                let _ = std::io::stdout().write_all(b"\x07");
                let _ = std::io::stdout().flush();
                last_bell = Instant::now();
            }
        }
        let wait = if app.dirty {
            FRAME.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                    for command in app.on_key(k) {
                        match command {
                            Command::Quit => {
                                network.abort();
                                return Ok(());
                            }
                            Command::Resolve { call_id, approve, reason } => {
                                net::resolve(client.clone(), call_id, approve, reason, net_tx.clone());
                            }
                            Command::FetchTools => net::fetch_tools(client.clone(), net_tx.clone()),
                            Command::SetRisk { upstream, tool, risk, expected_version } => {
                                net::set_risk(client.clone(), upstream, tool, risk, expected_version, net_tx.clone());
                            }
                        }
                    }
                }
                Some(Ok(Event::FocusGained)) => focused = true,
                Some(Ok(Event::FocusLost)) => focused = false,
                Some(Ok(Event::Resize(_, _))) => app.dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            Some(event) = net_rx.recv() => {
                app.on_net(event);
                // Take what else has arrived, so a burst costs one frame.
                while let Ok(more) = net_rx.try_recv() {
                    app.on_net(more);
                }
                if std::mem::take(&mut app.want_tools) && app.view == app::View::Tools {
                    net::fetch_tools(client.clone(), net_tx.clone());
                }
            }
            _ = second.tick() => {
                // Countdowns and the reconnect timer move once a second.
                let changed = app.expire_fates(Instant::now());
                if changed || !app.holds.is_empty() || !app.is_connected() || app.flash.is_some() {
                    app.dirty = true;
                }
                if app.flash.as_ref().is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(5)) {
                    app.flash = None;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}
