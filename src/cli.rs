//! The command line: `serve`, `admin`, `migrate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use domain::tenant::Role;
use domain::{EventMetadata, LogPosition};
use uuid::Uuid;

use crate::api::users::register_user;
use crate::app::{App, Foundation};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "neurostash", version, about = "self-hosted, multi-tenant knowledge stash")]
pub struct Cli {
    /// A TOML configuration file (settings also come from NEUROSTASH_* variables)
    #[arg(long, global = true, env = "NEUROSTASH_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the actors, the projections and the processor in one process
    Serve {
        #[arg(long)]
        bind: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Administrative tasks
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Apply or revert the database migrations
    Migrate {
        #[arg(value_enum)]
        direction: Direction,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user; prints its api key alone on the last line of stdout
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum, default_value = "user")]
        role: RoleArg,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    User,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Direction {
    Up,
    Down,
}

fn load_config(path: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(data_dir) = data_dir {
        config.data_dir = data_dir;
    }
    Ok(config)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { bind, data_dir } => {
            let mut config = load_config(cli.config, data_dir)?;
            if let Some(bind) = bind {
                config.bind = bind;
            }
            serve(config).await
        }
        Command::Admin {
            command: AdminCommand::CreateUser { email, role, data_dir },
        } => {
            let config = load_config(cli.config, data_dir)?;
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::User => Role::User,
            };
            let token = create_user_offline(&config, &email, role).await?;
            println!("{token}");
            Ok(())
        }
        Command::Migrate { direction, data_dir } => {
            let config = load_config(cli.config, data_dir)?;
            std::fs::create_dir_all(&config.data_dir)?;
            let database = actors::db::Database::connect(&config.database_url(), &Default::default()).await?;
            match direction {
                Direction::Up => database.migrate_up().await?,
                Direction::Down => database.migrate_down().await?,
            }
            eprintln!("migrations {direction:?} applied");
            Ok(())
        }
    }
}

/// Creates a user straight through the actors, without a running server.
async fn create_user_offline(config: &Config, email: &str, role: Role) -> anyhow::Result<String> {
    let foundation = Foundation::open(config).await?;
    let actors = actors::ActorSystem::start(foundation.store.clone(), Default::default()).await?;
    let user = register_user(
        &actors,
        &foundation.key_hasher,
        email,
        role,
        EventMetadata::system(Uuid::now_v7()),
    )
    .await
    .map_err(|error| anyhow::anyhow!("cannot create user {email}: {error}"))?;
    actors.stop();
    Ok(user.token)
}

/// Starts every role and serves HTTP until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let bind = config.bind;
    let app = App::start(config).await?;
    bootstrap_admin(&app).await?;
    let listener = poem::listener::TcpListener::bind(bind);
    tracing::info!(%bind, "serving");
    let server = poem::Server::new(listener).run_with_graceful_shutdown(
        crate::api::routes(app.clone()),
        shutdown_signal(),
        Some(std::time::Duration::from_secs(10)),
    );
    let served = server.await.with_context(|| format!("cannot serve on {bind}"));
    app.shutdown().await;
    served
}

/// With an empty store, creates the first admin and prints its key once.
async fn bootstrap_admin(app: &Arc<App>) -> anyhow::Result<()> {
    if app.store.log_head().await? != LogPosition::START {
        return Ok(());
    }
    let email = "admin@neurostash.local";
    let user = register_user(
        &app.actors,
        &app.key_hasher,
        email,
        Role::Admin,
        EventMetadata::system(Uuid::now_v7()),
    )
    .await
    .map_err(|error| anyhow::anyhow!("cannot create the first admin: {error}"))?;
    app.settle(user.log_position).await;
    eprintln!("created the first admin {email}; its api key is shown once, on stdout:");
    println!("{}", user.token);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
