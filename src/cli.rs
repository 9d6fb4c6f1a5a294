//! The command line: `serve`, `admin`, `migrate`, `audit`, `replay`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actors::store::{EventStore, RecordedEvent};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use domain::tenant::{Role, TenantCommand};
use domain::{EventMetadata, LogPosition, TenantId};
use projections::audit::{AuditLog, AuditProjection};
use uuid::Uuid;

use crate::api::users::register_user;
use crate::app::{App, Foundation, Roles};
use crate::config::Config;
use crate::replay::{ReplayContext, ReplayOutcome, ReplayRequest, ReplayTarget};

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
    /// (`--roles` narrows it down, e.g. `--roles api` for an API node)
    Serve {
        #[arg(long)]
        bind: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Roles of this process, comma separated: api, process, project
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [RoleName::Api, RoleName::Process, RoleName::Project])]
        roles: Vec<RoleName>,
    },
    /// Run only the document pipeline's workers (no HTTP), until Ctrl-C
    Process {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run only the registry and audit projectors (no HTTP), until Ctrl-C
    Project {
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
    /// Read the event log as an audit trail, or verify the audit log's hash chain
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Rebuild a projection from the event store into a shadow generation
    /// while the live one serves, then switch to it; or list, roll back and
    /// drop generations
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReplayArgs {
    #[command(subcommand)]
    pub command: Option<ReplayCommand>,
    /// The projection to rebuild
    #[arg(value_enum, required = true)]
    pub projection: Option<ReplayTarget>,
    /// Apply only events after this log position (COMMIT:POSITION) to a new shadow
    #[arg(long)]
    pub from: Option<LogPosition>,
    /// The shadow generation's name (a-z 0-9 _); by default the one still
    /// building, else one named after the time
    #[arg(long)]
    pub generation: Option<String>,
    /// Events applied per transaction
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// List a projection's generations
    List {
        #[arg(value_enum)]
        projection: ReplayTarget,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Switch back to the generation that was live before the last switch
    Rollback {
        #[arg(value_enum)]
        projection: ReplayTarget,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Drop a generation that is not live
    Drop {
        #[arg(value_enum)]
        projection: ReplayTarget,
        generation: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// A command stopped by Ctrl-C or SIGTERM before it finished; the binary
/// exits 130, as a shell does for a job ended by SIGINT.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the events of the log: time, tenant, key, type, stream
    Tail {
        /// Only events recorded for this tenant id
        #[arg(long)]
        tenant: Option<Uuid>,
        /// Only events of this type, such as DocumentRegistered
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events recorded at or after this RFC 3339 time
        #[arg(long, value_parser = parse_rfc3339)]
        since: Option<DateTime<Utc>>,
        /// Keep printing new events until Ctrl-C
        #[arg(long)]
        follow: bool,
        /// Print each event's envelope as one JSON line
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Bring the audit log up to date, then check its hash chain against the
    /// event log; exits non-zero when anything is wrong
    Verify {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn parse_rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("{text:?} is not an rfc 3339 time: {error}"))
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
    /// Make new active data keys (every tenant's, or one's); data written
    /// before keeps reading under the old keys. Prints `<tenant id> <key id>`
    /// per tenant
    RotateKeys {
        /// Only this tenant (its user id)
        #[arg(long)]
        tenant: Option<Uuid>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleName {
    Api,
    Process,
    Project,
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleName::Api => "api",
            RoleName::Process => "process",
            RoleName::Project => "project",
        })
    }
}

fn roles_of(names: &[RoleName]) -> Roles {
    Roles {
        api: names.contains(&RoleName::Api),
        process: names.contains(&RoleName::Process),
        project: names.contains(&RoleName::Project),
    }
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
        Command::Serve { bind, data_dir, roles } => {
            let mut config = load_config(cli.config, data_dir)?;
            if let Some(bind) = bind {
                config.bind = bind;
            }
            serve(config, roles_of(&roles)).await
        }
        Command::Process { data_dir } => run_background(load_config(cli.config, data_dir)?, Roles::PROCESS).await,
        Command::Project { data_dir } => run_background(load_config(cli.config, data_dir)?, Roles::PROJECT).await,
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
        Command::Admin {
            command: AdminCommand::RotateKeys { tenant, data_dir },
        } => {
            let config = load_config(cli.config, data_dir)?;
            for (tenant_id, key_id) in rotate_keys_offline(&config, tenant.map(TenantId)).await? {
                println!("{tenant_id} {key_id}");
            }
            Ok(())
        }
        Command::Migrate { direction, data_dir } => {
            let config = load_config(cli.config, data_dir)?;
            std::fs::create_dir_all(&config.data_dir)?;
            let database = actors::db::Database::connect(&config.database_url(), &Default::default()).await?;
            match direction {
                Direction::Up => {
                    database.migrate_up().await?;
                    projections::registry::Registry::new(database.clone())
                        .upgrade_generations()
                        .await?;
                }
                Direction::Down => database.migrate_down().await?,
            }
            eprintln!("migrations {direction:?} applied");
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Tail {
                    tenant,
                    event_type,
                    since,
                    follow,
                    json,
                    data_dir,
                },
        } => {
            let config = load_config(cli.config, data_dir)?;
            let filter = TailFilter {
                tenant_id: tenant.map(TenantId),
                event_type,
                since,
            };
            audit_tail(&config, &filter, follow, json).await
        }
        Command::Audit {
            command: AuditCommand::Verify { data_dir },
        } => {
            let config = load_config(cli.config, data_dir)?;
            audit_verify(&config).await
        }
        Command::Replay(args) => replay_command(cli.config, args).await,
    }
}

async fn replay_context(config: &Config) -> anyhow::Result<ReplayContext> {
    let foundation = Foundation::open(config).await?;
    Ok(ReplayContext {
        database: foundation.database,
        store: foundation.store,
        objects: foundation.objects,
        vector_root: crate::app::vector_dir(config),
    })
}

fn generation_name(name: &str) -> anyhow::Result<projections::generations::GenerationName> {
    Ok(projections::generations::GenerationName::parse(name)?)
}

async fn replay_command(config_file: Option<PathBuf>, args: ReplayArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ReplayCommand::List { projection, data_dir }) => {
            let context = replay_context(&load_config(config_file, data_dir)?).await?;
            println!("generation\tstate\tcreated_at\tswitched_at\tcheckpoint");
            for (row, checkpoint) in crate::replay::list(&context, projection).await? {
                let time = |time: Option<DateTime<Utc>>| {
                    time.map_or_else(
                        || "-".to_owned(),
                        |time| time.to_rfc3339_opts(SecondsFormat::Secs, true),
                    )
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    row.name,
                    row.state,
                    time(Some(row.created_at)),
                    time(row.switched_at),
                    checkpoint.map_or_else(|| "-".to_owned(), |checkpoint| checkpoint.to_string())
                );
            }
            Ok(())
        }
        Some(ReplayCommand::Rollback { projection, data_dir }) => {
            let context = replay_context(&load_config(config_file, data_dir)?).await?;
            let (from, to) = crate::replay::rollback(&context, projection).await?;
            println!("rolled {} back from generation {from} to {to}", projection.name());
            Ok(())
        }
        Some(ReplayCommand::Drop {
            projection,
            generation,
            data_dir,
        }) => {
            let generation = generation_name(&generation)?;
            let context = replay_context(&load_config(config_file, data_dir)?).await?;
            crate::replay::drop_generation(&context, projection, &generation).await?;
            println!("dropped generation {generation} of {}", projection.name());
            Ok(())
        }
        None => {
            // clap requires the projection when no subcommand is given
            let Some(target) = args.projection else {
                anyhow::bail!("name a projection to replay: registry or vector");
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            // listening before anything else, so that an early Ctrl-C counts
            let listener = tokio::spawn(async move {
                shutdown_signal().await;
                eprintln!("stopping after the current batch");
                let _ = stop_tx.send(true);
            });
            let context = replay_context(&load_config(config_file, args.data_dir)?).await?;
            let mut request = ReplayRequest::new(target);
            request.generation = args.generation.as_deref().map(generation_name).transpose()?;
            request.from = args.from.unwrap_or(LogPosition::START);
            request.batch_size = args.batch_size.max(1);
            let started = std::time::Instant::now();
            let progress = crate::replay::ProgressBar::new();
            let outcome = crate::replay::replay(&context, &request, &progress, stop_rx).await;
            listener.abort();
            match outcome? {
                ReplayOutcome::Switched {
                    generation,
                    from,
                    started_at,
                    position,
                    events,
                } => {
                    println!(
                        "switched {} from generation {from} to {generation} at {position}: {events} events from {started_at} in {:.1} s",
                        target.name(),
                        started.elapsed().as_secs_f64()
                    );
                    Ok(())
                }
                ReplayOutcome::Interrupted {
                    generation, position, ..
                } => Err(Interrupted(format!(
                    "replay of {} into generation {generation} stopped at {position}; run `neurostash replay {} \
                     --generation {generation}` to resume",
                    target.name(),
                    target.name()
                ))
                .into()),
            }
        }
    }
}

/// Which events `audit tail` prints.
struct TailFilter {
    tenant_id: Option<TenantId>,
    event_type: Option<String>,
    since: Option<DateTime<Utc>>,
}

impl TailFilter {
    fn matches(&self, event: &RecordedEvent) -> bool {
        self.tenant_id
            .is_none_or(|tenant| event.metadata.tenant_id == Some(tenant))
            && self.event_type.as_ref().is_none_or(|kind| &event.event_type == kind)
            && self.since.is_none_or(|since| event.recorded_at >= since)
    }
}

/// Events read from the log per round trip.
const TAIL_BATCH: usize = 500;

/// How often `audit tail --follow` looks for events other processes appended.
const TAIL_POLL: Duration = Duration::from_millis(500);

/// Prints the log from its start; with `follow`, keeps polling for new
/// events until Ctrl-C or SIGTERM. A closed stdout (`| head`) ends it
/// quietly.
async fn audit_tail(config: &Config, filter: &TailFilter, follow: bool, json: bool) -> anyhow::Result<()> {
    if let Some(settings) = config.kafka() {
        return audit_tail_kafka(settings, filter, follow, json).await;
    }
    // listening from the start, so a Ctrl-C during a read is not lost
    let mut interrupted = tokio::spawn(shutdown_signal());
    let foundation = Foundation::open(config).await?;
    let store = foundation.store;
    let mut after = LogPosition::START;
    let mut stdout = std::io::stdout().lock();
    loop {
        let batch = store
            .read_log(after, TAIL_BATCH)
            .await
            .with_context(|| format!("cannot read the event log after {after}"))?;
        for event in batch.iter().filter(|event| filter.matches(event)) {
            let line = if json {
                serde_json::to_string(event).with_context(|| format!("cannot encode event {}", event.event_id))?
            } else {
                tail_line(event)
            };
            match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(error) => return Err(error).context("cannot write to stdout"),
            }
        }
        if let Some(last) = batch.last() {
            after = last.log_position;
        }
        if batch.len() == TAIL_BATCH {
            continue;
        }
        if !follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = tokio::time::sleep(TAIL_POLL) => {}
        }
    }
}

/// The stream as Kafka holds it: every topic from its beginning, partition
/// by partition (the topics have no order across partitions).
async fn audit_tail_kafka(
    settings: bus::KafkaSettings,
    filter: &TailFilter,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (events, mut received) = tokio::sync::mpsc::channel::<RecordedEvent>(1024);
    let reader = {
        let stop = stop.clone();
        let brokers = settings.brokers.clone();
        tokio::task::spawn_blocking(move || {
            bus::tail::tail_topics(&settings, follow, &stop, |event| events.blocking_send(event).is_ok())
                .with_context(|| format!("cannot read the event topics at {brokers}"))
        })
    };
    let mut interrupted = tokio::spawn(shutdown_signal());
    let mut stdout = std::io::stdout().lock();
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => break,
            event = received.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        if !filter.matches(&event) {
            continue;
        }
        let line = if json {
            serde_json::to_string(&event).with_context(|| format!("cannot encode event {}", event.event_id))?
        } else {
            tail_line(&event)
        };
        match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(error) => return Err(error).context("cannot write to stdout"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(received);
    reader.await.context("the topic reader panicked")?
}

fn tail_line(event: &RecordedEvent) -> String {
    let tenant = event
        .metadata
        .tenant_id
        .map_or_else(|| "-".to_owned(), |tenant| tenant.to_string());
    let key = event.metadata.actor_key_id.as_ref().map_or("-", |key| key.0.as_str());
    format!(
        "{} tenant={tenant} key={key} {} {}@{}",
        event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        event.event_type,
        event.stream_id,
        event.stream_version
    )
}

/// Catches the audit projection up to the log's head, verifies the chain
/// against the log and prints the report; an error when anything is wrong.
async fn audit_verify(config: &Config) -> anyhow::Result<()> {
    let foundation = Foundation::open(config).await?;
    let store: &dyn EventStore = foundation.store.as_ref();
    let projection = AuditProjection::new(foundation.database.clone());
    // a chain too damaged to extend is still worth a report
    let caught_up = projections::runtime::catch_up_to_head(store, &projection, TAIL_BATCH).await;
    if let Err(error) = &caught_up {
        eprintln!("warning: cannot bring the audit log up to date: {error}");
    }
    let report = AuditLog::new(foundation.database.clone())
        .verify(store)
        .await
        .context("cannot verify the audit log")?;
    println!("{report}");
    if !report.is_clean() {
        anyhow::bail!("audit log verification failed: {} problem(s)", report.total_findings());
    }
    caught_up.context("audit log is intact but not up to date")?;
    Ok(())
}

/// Creates a user straight through the actors, without a running server.
/// Rotates in the vault, then records each rotation on the tenant's stream
/// for the audit trail. A tenant whose stream refuses it (erased meanwhile)
/// keeps its new key unused; the rotation itself has happened.
async fn rotate_keys_offline(
    config: &Config,
    tenant: Option<TenantId>,
) -> anyhow::Result<Vec<(TenantId, actors::crypto::KeyId)>> {
    let foundation = Foundation::open(config).await?;
    let tenants = match tenant {
        Some(tenant) => vec![tenant],
        None => foundation.vault.tenants().await?,
    };
    let actors = actors::ActorSystem::start(foundation.store.clone(), Default::default()).await?;
    let mut rotated = Vec::with_capacity(tenants.len());
    for tenant_id in tenants {
        if foundation.vault.is_erased(tenant_id).await? {
            eprintln!("tenant {tenant_id} is erased: no key is made for it");
            continue;
        }
        let key_id = foundation
            .vault
            .rotate(tenant_id)
            .await
            .with_context(|| format!("cannot rotate the data key of tenant {tenant_id}"))?;
        let recorded = actors
            .tenants
            .execute(
                tenant_id.stream_id(),
                TenantCommand::RecordKeyRotation {
                    key_id: key_id.to_string(),
                },
                EventMetadata::system(Uuid::now_v7()),
            )
            .await;
        if let Err(error) = recorded {
            tracing::warn!(%tenant_id, %key_id, %error, "rotated, but the rotation could not be recorded in the log");
        }
        rotated.push((tenant_id, key_id));
    }
    actors.stop();
    Ok(rotated)
}

async fn create_user_offline(config: &Config, email: &str, role: Role) -> anyhow::Result<String> {
    let foundation = Foundation::open(config).await?;
    let actors = actors::ActorSystem::start(foundation.store.clone(), Default::default()).await?;
    let user = register_user(
        &actors,
        &foundation.key_hasher,
        &foundation.vault,
        email,
        role,
        EventMetadata::system(Uuid::now_v7()),
    )
    .await
    .map_err(|error| anyhow::anyhow!("cannot create user {email}: {error}"))?;
    actors.stop();
    Ok(user.token)
}

/// Starts the roles and serves HTTP until Ctrl-C or SIGTERM; without the
/// api role, see [`run_background`].
pub async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    if !roles.api {
        return run_background(config, roles).await;
    }
    let bind = config.bind;
    let app = App::start_roles(config, roles).await?;
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

/// Runs roles without HTTP until Ctrl-C or SIGTERM.
async fn run_background(config: Config, roles: Roles) -> anyhow::Result<()> {
    if roles.api {
        anyhow::bail!("the api role serves http: run `neurostash serve` for it");
    }
    let app = App::start_roles(config, roles).await?;
    tracing::info!(%roles, "running until ctrl-c or sigterm");
    shutdown_signal().await;
    app.shutdown().await;
    Ok(())
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
        &app.vault,
        email,
        Role::Admin,
        EventMetadata::system(Uuid::now_v7()),
    )
    .await
    .map_err(|error| anyhow::anyhow!("cannot create the first admin: {error}"))?;
    app.settle(user.written).await;
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
