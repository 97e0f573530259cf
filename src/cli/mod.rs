//! The `corral` command line: parsing, the subcommands that are not the server (`users`,
//! `keys`, `migrate`, `check-config`, `demo`, `sim`), and starting the server.

pub mod demo;
pub mod keys;
pub mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "One dependable endpoint in front of a fleet of LLM upstreams"
)]
struct Cli {
    /// Configuration file (TOML); CORRAL__SECTION__KEY environment variables override it.
    #[arg(long, global = true, default_value = "corral.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Address to listen on, overriding server.listen.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// A gateway in front of a simulated fleet, zero setup.
    Demo {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// A simulated Ollama server.
    Sim(crate::sim::SimArgs),
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// People and their tokens.
    Users {
        #[command(subcommand)]
        cmd: users::UsersCmd,
    },
    /// Upstream API keys: import, list, enable, disable.
    Keys {
        #[command(subcommand)]
        cmd: keys::KeysCmd,
    },
}

/// Parses the command line and runs it; the exit code is 2 for a usage or configuration
/// error, 1 for a failure at run time.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let explicit = std::env::args().any(|a| a == "--config" || a.starts_with("--config="));
    let load = || Config::load(&cli.config, explicit);
    match cli.command {
        Command::CheckConfig => match load() {
            Ok(cfg) => {
                print!("{}", cfg.redacted().to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(e),
        },
        Command::Demo { port } => block_on(demo::run(port, wait_for_signal())),
        Command::Sim(args) => block_on(crate::sim::run(args)),
        Command::Migrate => match load() {
            Ok(cfg) => runtime_result(users::run_migrate(&cfg)),
            Err(e) => usage_error(e),
        },
        Command::Users { cmd } => match load() {
            Ok(cfg) => runtime_result(users::run_users(&cfg, cmd)),
            Err(e) => usage_error(e),
        },
        Command::Keys { cmd } => match load() {
            Ok(cfg) => runtime_result(keys::run_keys(&cfg, cmd)),
            Err(e) => usage_error(e),
        },
        Command::Serve { listen } => match load() {
            Ok(cfg) => run_server(cfg, listen),
            Err(e) => usage_error(e),
        },
    }
}

fn block_on(fut: impl std::future::Future<Output = std::io::Result<()>>) -> ExitCode {
    match actix_web::rt::System::new().block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::from(1)
        }
    }
}

fn runtime_result(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("corral: {e}");
    ExitCode::from(2)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,actix_server=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run_server(cfg: Config, listen: Option<String>) -> ExitCode {
    let listen = listen.unwrap_or_else(|| cfg.server.listen.clone());
    let result = actix_web::rt::System::new().block_on(async move {
        let running = crate::serve(cfg, &listen).await?;
        tracing::info!("corral listening on {}", running.url());
        let handle = running.handle.clone();
        let gateway = running.gateway.clone();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            gateway.set_draining();
            handle.stop(true).await;
        });
        let gateway = running.gateway.clone();
        let served = running.wait().await;
        gateway.drain_logs().await;
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::from(1)
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Rows as left-aligned columns two spaces apart.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
