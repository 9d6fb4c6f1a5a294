//! `neurostash replay`: rebuilds a projection from the event store (the
//! source of truth, whatever Kafka still retains) into a shadow generation
//! while the live one keeps serving, catches it up with the live stream and
//! switches atomically; also lists, rolls back and drops generations.
//!
//! The job applies the log in batches; each batch is durable with its
//! checkpoint (the registry commits them together, the vector shadow
//! persists a snapshot when stopped), so a job stopped between batches and
//! run again resumes from the shadow's checkpoint. Once the shadow is within
//! `max_lag` events of the head it switches: the registry catches up the
//! rest inside the switch's transaction, under the lock of the live
//! runners; the vector shadow persists its snapshot and flips the pointer,
//! and a running server loads it and applies whatever came after.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actors::db::Database;
use actors::objects::ObjectStore;
use actors::store::EventStore;
use anyhow::Context;
use domain::LogPosition;
use projections::generations::{GenerationName, GenerationRow, GenerationState, Generations};
use projections::registry::{Registry, RegistryProjection, REGISTRY_PROJECTION};
use projections::runtime::Projection;
use projections::vector::{generation_dir, remove_generation_dir, VectorProjection, VECTOR_PROJECTION};
use tokio::sync::watch;

/// The projections that have generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayTarget {
    Registry,
    Vector,
}

impl ReplayTarget {
    pub fn name(self) -> &'static str {
        match self {
            ReplayTarget::Registry => REGISTRY_PROJECTION,
            ReplayTarget::Vector => VECTOR_PROJECTION,
        }
    }
}

/// What the job works on: the database and log, and where vector index
/// generations live.
#[derive(Clone)]
pub struct ReplayContext {
    pub database: Database,
    pub store: Arc<dyn EventStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub vector_root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub target: ReplayTarget,
    /// `None`: resume the one generation still building, or start a new one
    /// named after the time.
    pub generation: Option<GenerationName>,
    /// Events at or before this position are not applied to a new shadow.
    pub from: LogPosition,
    pub batch_size: usize,
    /// How far behind the head (in log positions) the shadow may be when it
    /// switches; the rest is applied inside the switch.
    pub max_lag: i64,
    /// How long the tail waits for new events before looking again.
    pub poll_interval: Duration,
}

impl ReplayRequest {
    pub fn new(target: ReplayTarget) -> ReplayRequest {
        ReplayRequest {
            target,
            generation: None,
            from: LogPosition::START,
            batch_size: 500,
            max_lag: 100,
            poll_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Switched {
        generation: GenerationName,
        from: GenerationName,
        /// Where the shadow stood when this run began: the start of the log,
        /// `--from`, or the checkpoint an earlier run stopped at.
        started_at: LogPosition,
        position: LogPosition,
        events: u64,
    },
    Interrupted {
        generation: GenerationName,
        started_at: LogPosition,
        position: LogPosition,
        events: u64,
    },
}

/// Told how the job advances; the command line draws a progress bar.
pub trait ReplayProgress: Send + Sync {
    fn started(&self, generation: &GenerationName, at: LogPosition, head: LogPosition);
    fn advanced(&self, position: LogPosition, events: u64, head: LogPosition);
    fn switching(&self);
}

/// Reports nothing.
pub struct Silent;

impl ReplayProgress for Silent {
    fn started(&self, _: &GenerationName, _: LogPosition, _: LogPosition) {}
    fn advanced(&self, _: LogPosition, _: u64, _: LogPosition) {}
    fn switching(&self) {}
}

/// A progress bar on stderr: position against the log's head, events/s and
/// the time left at that rate.
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    pub fn new() -> ProgressBar {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] position {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        ProgressBar { bar }
    }
}

impl Default for ProgressBar {
    fn default() -> Self {
        ProgressBar::new()
    }
}

impl ReplayProgress for ProgressBar {
    fn started(&self, generation: &GenerationName, at: LogPosition, head: LogPosition) {
        self.bar.set_message(format!("generation {generation}"));
        self.bar.set_length(head.position.max(0) as u64);
        self.bar.set_position(at.position.max(0) as u64);
        // the rate counts this run's events, not the resumed checkpoint
        self.bar.reset_eta();
    }

    fn advanced(&self, position: LogPosition, _events: u64, head: LogPosition) {
        self.bar.set_length(head.position.max(position.position).max(0) as u64);
        self.bar.set_position(position.position.max(0) as u64);
    }

    fn switching(&self) {
        self.bar.finish_with_message("caught up, switching");
    }
}

/// The shadow a job writes; one per job, so the vector one is boxed only
/// to keep the variants alike in size.
enum Shadow {
    Registry(RegistryProjection),
    Vector(Box<VectorProjection>),
}

impl Shadow {
    fn projection(&self) -> &dyn Projection {
        match self {
            Shadow::Registry(projection) => projection,
            Shadow::Vector(projection) => projection.as_ref(),
        }
    }

    /// Makes what is applied durable: the registry's batches already are.
    async fn persist(&self) -> anyhow::Result<()> {
        if let Shadow::Vector(projection) = self {
            projection.persist().await.context("cannot persist the vector shadow")?;
        }
        Ok(())
    }
}

/// The generation a request means: the named one, else the one generation
/// still building (an interrupted run), else a new one named after now.
async fn choose_generation(generations: &Generations, request: &ReplayRequest) -> anyhow::Result<GenerationName> {
    let projection = request.target.name();
    if let Some(name) = &request.generation {
        return Ok(name.clone());
    }
    let building: Vec<GenerationRow> = generations
        .list(projection)
        .await?
        .into_iter()
        .filter(|row| row.state == GenerationState::Building)
        .collect();
    match building.as_slice() {
        [] => Ok(GenerationName::parse(
            &chrono::Utc::now().format("g%Y%m%d%H%M%S").to_string(),
        )?),
        [one] => Ok(one.name.clone()),
        several => anyhow::bail!(
            "projection {projection} has {} generations building ({}); name one with --generation",
            several.len(),
            several
                .iter()
                .map(|row| row.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the job until it has switched, or until `stop` turns true (checked
/// between batches, so the batch in hand is finished first).
pub async fn replay(
    context: &ReplayContext,
    request: &ReplayRequest,
    progress: &dyn ReplayProgress,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ReplayOutcome> {
    let projection = request.target.name();
    let generations = Generations::new(context.database.clone());
    let generation = choose_generation(&generations, request).await?;
    let row = generations.create(projection, &generation).await?;
    if row.state == GenerationState::Live {
        anyhow::bail!(
            "generation {generation} of projection {projection} is live already; name another with --generation"
        );
    }
    let shadow = match request.target {
        ReplayTarget::Registry => {
            Registry::new(context.database.clone())
                .create_generation(&generation)
                .await?;
            Shadow::Registry(RegistryProjection::for_generation(
                context.database.clone(),
                generation.clone(),
            ))
        }
        ReplayTarget::Vector => {
            let dir = generation_dir(&context.vector_root, &generation);
            let vectors = VectorProjection::open(dir, context.objects.clone())
                .await
                .with_context(|| format!("cannot open vector generation {generation}"))?;
            Shadow::Vector(Box::new(vectors))
        }
    };
    let store = context.store.as_ref();
    let checkpoint = shadow.projection().checkpoint().await?;
    let started_at = checkpoint.max(request.from);
    let mut position = started_at;
    let mut head = store.log_head().await.context("cannot read the log head")?;
    progress.started(&generation, started_at, head);
    let mut events = 0u64;
    let interrupted = |position, events| ReplayOutcome::Interrupted {
        generation: generation.clone(),
        started_at,
        position,
        events,
    };

    loop {
        if *stop.borrow() {
            shadow.persist().await?;
            return Ok(interrupted(position, events));
        }
        let batch = store
            .read_log(position, request.batch_size.max(1))
            .await
            .with_context(|| format!("cannot read the event log after {position}"))?;
        if let Some(last) = batch.last().map(|event| event.log_position) {
            shadow.projection().apply_batch(&batch).await?;
            position = last;
            events += batch.len() as u64;
        }
        if batch.len() < request.batch_size.max(1) {
            head = store.log_head().await.context("cannot read the log head")?;
        }
        progress.advanced(position, events, head);
        let lag = head.position.saturating_sub(position.position);
        if batch.len() < request.batch_size.max(1) && lag <= request.max_lag {
            break;
        }
        if batch.is_empty() {
            // the head moved on but its events are not readable yet (a
            // transaction still committing): look again shortly
            tokio::select! {
                _ = tokio::time::sleep(request.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    progress.switching();
    let (from, position) = match &shadow {
        Shadow::Registry(_) => {
            let switched =
                projections::registry::switch_generation(&context.database, store, &generation, request.batch_size)
                    .await?;
            (switched.from, switched.position)
        }
        Shadow::Vector(vectors) => {
            let reached = projections::runtime::catch_up_to_head(store, vectors.as_ref(), request.batch_size).await?;
            vectors.persist().await.context("cannot persist the vector shadow")?;
            let from = generations.switch(projection, &generation).await?;
            (from, reached)
        }
    };
    Ok(ReplayOutcome::Switched {
        generation,
        from,
        started_at,
        position,
        events,
    })
}

/// Switches back to the generation retired last; returns (from, to).
pub async fn rollback(
    context: &ReplayContext,
    target: ReplayTarget,
) -> anyhow::Result<(GenerationName, GenerationName)> {
    let generations = Generations::new(context.database.clone());
    let previous = generations.previous(target.name()).await?;
    let from = match target {
        ReplayTarget::Registry => {
            projections::registry::switch_generation(&context.database, context.store.as_ref(), &previous, 500)
                .await?
                .from
        }
        // the servers load it and apply what it missed while retired
        ReplayTarget::Vector => generations.switch(target.name(), &previous).await?,
    };
    Ok((from, previous))
}

/// Drops a generation that is not live.
pub async fn drop_generation(
    context: &ReplayContext,
    target: ReplayTarget,
    generation: &GenerationName,
) -> anyhow::Result<()> {
    match target {
        ReplayTarget::Registry => projections::registry::drop_generation(&context.database, generation).await?,
        ReplayTarget::Vector => {
            Generations::new(context.database.clone())
                .forget(target.name(), generation)
                .await?;
            remove_generation_dir(&context.vector_root, generation)
                .with_context(|| format!("cannot remove vector generation {generation}"))?;
        }
    }
    Ok(())
}

/// The generations of a projection with their checkpoints where the
/// database holds them (the registry's; a vector generation's checkpoint is
/// in its snapshot).
pub async fn list(
    context: &ReplayContext,
    target: ReplayTarget,
) -> anyhow::Result<Vec<(GenerationRow, Option<LogPosition>)>> {
    let rows = Generations::new(context.database.clone()).list(target.name()).await?;
    let registry = Registry::new(context.database.clone());
    let mut listed = Vec::with_capacity(rows.len());
    for row in rows {
        let checkpoint = match target {
            ReplayTarget::Registry => Some(registry.generation_checkpoint(&row.name).await?),
            ReplayTarget::Vector => None,
        };
        listed.push((row, checkpoint));
    }
    Ok(listed)
}
