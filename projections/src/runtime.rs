//! Drives projections over the global log.
//!
//! A [`ProjectionRunner`] tails the log for one projection from the
//! projection's own checkpoint: it reads a batch after the checkpoint, hands
//! it to [`Projection::apply_batch`] (which commits the effects together with
//! the new checkpoint) and repeats; when the log is exhausted it sleeps until
//! the store signals an append made in this process, or until the poll
//! interval has passed, because other processes append to the same log and
//! their appends raise no signal here. Failures are logged and retried with a
//! capped exponential backoff: a projection that cannot make progress waits,
//! it never spins and never takes the process down.
//!
//! Delivery is at-least-once: after a failure the runner resumes from the
//! projection's durable checkpoint, so a batch whose commit succeeded but
//! whose acknowledgement was lost is delivered again, and the projection
//! recognises what it has already applied.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::store::{EventStore, RecordedEvent};
use async_trait::async_trait;
use domain::LogPosition;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection {projection} storage failed: {source}")]
    Database {
        projection: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("projection {projection} could not read the log: {source}")]
    Store {
        projection: String,
        #[source]
        source: actors::store::StoreError,
    },
    #[error("projection {projection} failed on event {event_id} at {position}: {reason}")]
    Event {
        projection: String,
        event_id: uuid::Uuid,
        position: LogPosition,
        reason: String,
    },
    #[error("projection {projection} i/o failed: {reason}")]
    Io { projection: String, reason: String },
    /// The generation the projection writes was switched (see
    /// [`crate::generations`]) after its checkpoint was loaded: the batch
    /// was not applied, and the caller resumes from the new generation's
    /// checkpoint.
    #[error("projection {projection} was switched from generation {from} to {to}")]
    Retargeted {
        projection: String,
        from: String,
        to: String,
    },
    #[error("projection {projection} panicked while applying the batch ending at {position}: {reason}")]
    Panicked {
        projection: String,
        position: LogPosition,
        reason: String,
    },
}

/// A read model built from the log. Applying is at-least-once: the runtime
/// may hand a projection events it has already applied (after a crash, or a
/// duplicate delivery), and the projection must ignore them, which it can do
/// by the checkpoint it committed with its effects.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name; keys the checkpoint.
    fn name(&self) -> &str;

    /// The position of the last event whose effects are durable.
    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError>;

    /// Applies events in log order, then records the position of the last
    /// one atomically with the effects.
    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError>;

    /// Whether the projection now writes another generation than the one
    /// whose checkpoint it last returned (a replay switched it): the runner
    /// asks before each read and, on true, reloads the checkpoint. A
    /// projection with a single generation never is.
    async fn retargeted(&self) -> Result<bool, ProjectionError> {
        Ok(false)
    }
}

/// How a [`ProjectionRunner`] reads and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Most events handed to one `apply_batch`; at least 1 is used.
    pub batch_size: usize,
    /// How long an idle runner waits before looking at the log again when no
    /// append signal arrives; bounds how late it sees other processes' appends.
    pub poll_interval: Duration,
    /// The first retry delay after a failure; each further failure in a row
    /// doubles it up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_size: 256,
            poll_interval: Duration::from_millis(150),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Starts projection runners; see the module documentation.
pub struct ProjectionRunner;

impl ProjectionRunner {
    /// Spawns a tokio task that applies the log to `projection` from its
    /// checkpoint until the returned handle is shut down or dropped.
    pub fn spawn(
        store: Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
        options: RunnerOptions,
    ) -> ProjectionHandle {
        let name = projection.name().to_owned();
        let (progress_tx, progress_rx) = watch::channel(LogPosition::START);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(store, projection, options, progress_tx, stop_rx));
        ProjectionHandle {
            name,
            progress: progress_rx,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
        }
    }
}

/// Controls a running projection. Dropping the handle stops the runner as
/// [`ProjectionHandle::shutdown`] does, without waiting for it: a runner
/// nobody can observe or stop is a leak.
#[derive(Debug)]
pub struct ProjectionHandle {
    name: String,
    progress: watch::Receiver<LogPosition>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ProjectionHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position of the last event whose effects are durable; starts at
    /// [`LogPosition::START`] until the checkpoint is loaded, and never moves
    /// backwards.
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.progress.clone()
    }

    /// The applied position now (see [`ProjectionHandle::progress`]).
    pub fn position(&self) -> LogPosition {
        *self.progress.borrow()
    }

    /// Waits until the projection has applied everything up to `position`
    /// (for read-your-writes: pass the position an append returned). Returns
    /// false when `timeout` passes first or the runner has stopped short of it.
    pub async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        let mut progress = self.progress.clone();
        let reached = tokio::time::timeout(timeout, async {
            progress.wait_for(|applied| *applied >= position).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => true,
            // the runner stopped: what it reached before stopping still counts
            Ok(false) => *self.progress.borrow() >= position,
            Err(_elapsed) => false,
        }
    }

    /// Asks the runner to stop and waits until it has: a batch being applied
    /// is finished first, so the checkpoint matches the effects.
    pub async fn shutdown(&self) {
        // Sending fails only when the runner is already gone.
        let _ = self.stop.send(true);
        let task = match self.task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::error!(projection = %self.name, %error, "projection runner ended abnormally");
            }
        }
    }
}

/// Applies the log to `projection` from its checkpoint up to and including
/// `until`, in batches of `batch_size`, and returns the position reached:
/// `until`, or less when the log ends before it. For rebuild tools and tests,
/// which want the work done before they go on; errors are returned, not
/// retried.
pub async fn catch_up(
    store: &dyn EventStore,
    projection: &dyn Projection,
    until: LogPosition,
    batch_size: usize,
) -> Result<LogPosition, ProjectionError> {
    let batch_size = batch_size.max(1);
    let mut position = projection.checkpoint().await?;
    while position < until {
        let mut batch = store
            .read_log(position, batch_size)
            .await
            .map_err(|source| ProjectionError::Store {
                projection: projection.name().to_owned(),
                source,
            })?;
        // the log is in order, so what lies beyond `until` is a suffix
        let within = batch.partition_point(|event| event.log_position <= until);
        batch.truncate(within);
        let Some(last) = batch.last().map(|event| event.log_position) else {
            break;
        };
        debug_assert!(last > position, "read_log returned an event at or before {position}");
        projection.apply_batch(&batch).await?;
        position = last;
    }
    Ok(position)
}

/// [`catch_up`] to the log's head as it is when called.
pub async fn catch_up_to_head(
    store: &dyn EventStore,
    projection: &dyn Projection,
    batch_size: usize,
) -> Result<LogPosition, ProjectionError> {
    let head = store.log_head().await.map_err(|source| ProjectionError::Store {
        projection: projection.name().to_owned(),
        source,
    })?;
    catch_up(store, projection, head, batch_size).await
}

/// Delays between retries: doubling from `initial` up to `max`.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        // a zero delay would turn a persistent failure into a tight loop
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// True once a stop was asked for or the handle is gone.
fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    stop.has_changed().is_err() || *stop.borrow()
}

/// Sleeps for `delay` unless a stop is asked for first; returns whether the
/// runner should go on.
async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
    !stop_requested(stop)
}

/// Publishes `position` unless the published one is already at or past it.
fn publish(progress: &watch::Sender<LogPosition>, position: LogPosition) {
    progress.send_if_modified(|published| {
        if position > *published {
            *published = position;
            true
        } else {
            false
        }
    });
}

async fn run(
    store: Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
    options: RunnerOptions,
    progress: watch::Sender<LogPosition>,
    mut stop: watch::Receiver<bool>,
) {
    let name = projection.name().to_owned();
    let batch_size = options.batch_size.max(1);
    let appended = store.appended();
    let mut backoff = Backoff::new(options.initial_backoff, options.max_backoff);
    // None until the checkpoint is loaded, and again after any failure: the
    // durable checkpoint is the only position known to match the effects.
    let mut position: Option<LogPosition> = None;
    tracing::info!(projection = %name, "projection runner started");

    while !stop_requested(&stop) {
        let after = match position {
            Some(position) => position,
            None => match projection.checkpoint().await {
                Ok(checkpoint) => {
                    publish(&progress, checkpoint);
                    position = Some(checkpoint);
                    checkpoint
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(projection = %name, %error, retry_in = ?delay, "loading the checkpoint failed");
                    if !pause(delay, &mut stop).await {
                        break;
                    }
                    continue;
                }
            },
        };

        match projection.retargeted().await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(projection = %name, "projection switched generation, reloading its checkpoint");
                position = None;
                continue;
            }
            Err(error) => {
                position = None;
                let delay = backoff.next_delay();
                tracing::warn!(projection = %name, %error, retry_in = ?delay, "checking the live generation failed");
                if !pause(delay, &mut stop).await {
                    break;
                }
                continue;
            }
        }

        // Registered before the read, so that an append landing between the
        // read and the wait still wakes this runner.
        let notified = appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let outcome = match store.read_log(after, batch_size).await {
            Ok(batch) if batch.is_empty() => Ok(None),
            Ok(batch) => apply_isolated(&projection, batch).await.map(Some),
            Err(source) => Err(ProjectionError::Store {
                projection: name.clone(),
                source,
            }),
        };
        match outcome {
            Ok(Some(applied)) => {
                backoff.reset();
                position = Some(applied);
                publish(&progress, applied);
            }
            Ok(None) => {
                backoff.reset();
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(options.poll_interval) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(error @ ProjectionError::Retargeted { .. }) => {
                // not a failure: the next round starts from the new
                // generation's checkpoint, at once
                tracing::info!(projection = %name, %error, "reloading the checkpoint");
                position = None;
            }
            Err(error) => {
                position = None;
                let delay = backoff.next_delay();
                tracing::warn!(projection = %name, %error, retry_in = ?delay, "applying the log failed");
                if !pause(delay, &mut stop).await {
                    break;
                }
            }
        }
    }
    tracing::info!(projection = %name, "projection runner stopped");
}

/// Applies one batch on its own task, so that a panicking projection is
/// reported and retried like any failure instead of silently ending the
/// runner. Returns the position of the batch's last event.
async fn apply_isolated(
    projection: &Arc<dyn Projection>,
    batch: Vec<RecordedEvent>,
) -> Result<LogPosition, ProjectionError> {
    let last = batch.last().map_or(LogPosition::START, |event| event.log_position);
    let applier = Arc::clone(projection);
    let applied = tokio::spawn(async move { applier.apply_batch(&batch).await }).await;
    match applied {
        Ok(result) => result.map(|()| last),
        Err(join_error) => Err(ProjectionError::Panicked {
            projection: projection.name().to_owned(),
            position: last,
            reason: join_error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use actors::store::{AppendOutcome, ExpectedVersion, NewEvent, StoreError};
    use chrono::Utc;
    use domain::{EventMetadata, StreamId};
    use tokio::sync::Notify;

    use super::*;

    /// An in-memory log whose reads can be made to fail and whose append
    /// signal can be withheld, as for an append made by another process.
    #[derive(Default)]
    struct MemoryStore {
        log: Mutex<Vec<RecordedEvent>>,
        failing_reads: AtomicUsize,
        reads: AtomicUsize,
        appended: Arc<Notify>,
    }

    impl MemoryStore {
        fn push(&self, count: usize, signal: bool) -> LogPosition {
            let mut log = self.log.lock().unwrap();
            for _ in 0..count {
                let position = log.len() as i64 + 1;
                log.push(RecordedEvent {
                    event_id: uuid::Uuid::new_v4(),
                    stream_id: StreamId(format!("test-{}", uuid::Uuid::nil())),
                    stream_version: position,
                    log_position: LogPosition {
                        commit: position,
                        position,
                    },
                    schema_version: domain::SCHEMA_VERSION,
                    event_type: "Tested".into(),
                    recorded_at: Utc::now(),
                    metadata: EventMetadata::system(uuid::Uuid::nil()),
                    payload: serde_json::Value::Null,
                });
            }
            let head = log.last().map_or(LogPosition::START, |event| event.log_position);
            drop(log);
            if signal {
                self.appended.notify_waiters();
            }
            head
        }
    }

    #[async_trait]
    impl EventStore for MemoryStore {
        async fn append(
            &self,
            _stream_id: &StreamId,
            _expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> Result<AppendOutcome, StoreError> {
            let head = self.push(events.len(), true);
            Ok(AppendOutcome {
                stream_version: head.position,
                log_position: head,
            })
        }

        async fn read_stream(&self, _stream_id: &StreamId, _after: i64) -> Result<Vec<RecordedEvent>, StoreError> {
            Ok(vec![])
        }

        async fn read_log(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let failing = self.failing_reads.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_reads.store(failing - 1, Ordering::SeqCst);
                return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
            }
            let log = self.log.lock().unwrap();
            Ok(log
                .iter()
                .filter(|event| event.log_position > after)
                .take(limit)
                .cloned()
                .collect())
        }

        async fn log_head(&self) -> Result<LogPosition, StoreError> {
            let log = self.log.lock().unwrap();
            Ok(log.last().map_or(LogPosition::START, |event| event.log_position))
        }

        fn appended(&self) -> Arc<Notify> {
            Arc::clone(&self.appended)
        }
    }

    /// Counts applied events and keeps its checkpoint in memory; fails or
    /// panics on demand. Refuses a batch that does not start right after its
    /// checkpoint, which is how a runner skipping or repeating events shows.
    #[derive(Default)]
    struct CountingProjection {
        state: Mutex<(LogPosition, usize)>,
        failing_batches: AtomicUsize,
        panicking_batches: AtomicUsize,
        batch_sizes: Mutex<Vec<usize>>,
    }

    impl CountingProjection {
        fn applied(&self) -> usize {
            self.state.lock().unwrap().1
        }
    }

    #[async_trait]
    impl Projection for CountingProjection {
        fn name(&self) -> &str {
            "counting"
        }

        async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
            Ok(self.state.lock().unwrap().0)
        }

        async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
            if self.panicking_batches.load(Ordering::SeqCst) > 0 {
                self.panicking_batches.fetch_sub(1, Ordering::SeqCst);
                panic!("counting projection told to panic");
            }
            if self.failing_batches.load(Ordering::SeqCst) > 0 {
                self.failing_batches.fetch_sub(1, Ordering::SeqCst);
                return Err(ProjectionError::Io {
                    projection: "counting".into(),
                    reason: "told to fail".into(),
                });
            }
            let mut state = self.state.lock().unwrap();
            let expected_next = state.0.position + 1;
            assert_eq!(
                events[0].log_position.position, expected_next,
                "batch does not follow the checkpoint"
            );
            state.0 = events.last().unwrap().log_position;
            state.1 += events.len();
            self.batch_sizes.lock().unwrap().push(events.len());
            Ok(())
        }
    }

    fn fast_options() -> RunnerOptions {
        RunnerOptions {
            batch_size: 4,
            poll_interval: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        }
    }

    fn spawn(
        store: &Arc<MemoryStore>,
        projection: &Arc<CountingProjection>,
        options: RunnerOptions,
    ) -> ProjectionHandle {
        let store: Arc<dyn EventStore> = store.clone();
        let projection: Arc<dyn Projection> = projection.clone();
        ProjectionRunner::spawn(store, projection, options)
    }

    #[tokio::test]
    async fn applies_the_log_in_batches_and_follows_appends() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        store.push(10, true);
        let handle = spawn(&store, &projection, fast_options());

        let head = store.push(0, false);
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);
        assert_eq!(projection.applied(), 10);
        assert_eq!(*projection.batch_sizes.lock().unwrap(), vec![4, 4, 2]);

        let head = store.push(3, true);
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);
        assert_eq!(projection.applied(), 13);
        assert_eq!(handle.position(), head);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn an_append_without_a_signal_is_found_by_polling() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        let handle = spawn(&store, &projection, fast_options());
        tokio::time::sleep(Duration::from_millis(20)).await;

        let head = store.push(2, false);
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);
        assert_eq!(projection.applied(), 2);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn an_idle_runner_waits_instead_of_spinning() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        let options = RunnerOptions {
            poll_interval: Duration::from_millis(100),
            ..fast_options()
        };
        let handle = spawn(&store, &projection, options);
        tokio::time::sleep(Duration::from_millis(550)).await;
        let reads = store.reads.load(Ordering::SeqCst);
        assert!(
            (3..=8).contains(&reads),
            "{reads} reads in 550 ms at a 100 ms poll interval"
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn wait_for_times_out_short_of_the_position() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        let head = store.push(1, true);
        let handle = spawn(&store, &projection, fast_options());
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);

        let beyond = LogPosition {
            commit: 99,
            position: 99,
        };
        let started = std::time::Instant::now();
        assert!(!handle.wait_for(beyond, Duration::from_millis(150)).await);
        assert!(started.elapsed() >= Duration::from_millis(150));
        handle.shutdown().await;
        // after a shutdown what was reached still counts, what was not never will
        assert!(handle.wait_for(head, Duration::from_millis(10)).await);
        assert!(!handle.wait_for(beyond, Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn failures_and_panics_are_retried_with_backoff() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        store.failing_reads.store(3, Ordering::SeqCst);
        projection.failing_batches.store(2, Ordering::SeqCst);
        projection.panicking_batches.store(1, Ordering::SeqCst);
        let head = store.push(6, true);

        let started = std::time::Instant::now();
        let handle = spawn(&store, &projection, fast_options());
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);
        // 6 failures in a row wait 10 + 20 + 40 + 40 + 40 + 40 ms
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "retried after {:?}",
            started.elapsed()
        );
        assert_eq!(projection.applied(), 6);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_stops_the_runner() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        let handle = spawn(&store, &projection, fast_options());
        tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
            .await
            .expect("shutdown finishes");

        let head = store.push(3, true);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(projection.applied(), 0);
        assert!(!handle.wait_for(head, Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_runner() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(CountingProjection::default());
        drop(spawn(&store, &projection, fast_options()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.push(3, true);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(projection.applied(), 0);
    }

    /// Switches to another in-memory "generation" once, with its own
    /// checkpoint, the way a replay switches a projection under its runner.
    #[derive(Default)]
    struct SwitchingProjection {
        /// (checkpoint, applied events) per generation; index 0 in use first.
        generations: Mutex<[(LogPosition, usize); 2]>,
        current: AtomicUsize,
        bound: AtomicUsize,
        switch_now: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Projection for SwitchingProjection {
        fn name(&self) -> &str {
            "switching"
        }

        async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
            let current = self.current.load(Ordering::SeqCst);
            self.bound.store(current, Ordering::SeqCst);
            Ok(self.generations.lock().unwrap()[current].0)
        }

        async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
            let current = self.current.load(Ordering::SeqCst);
            let mut generations = self.generations.lock().unwrap();
            let generation = &mut generations[current];
            assert_eq!(
                events[0].log_position.position,
                generation.0.position + 1,
                "batch does not follow the checkpoint of generation {current}"
            );
            generation.0 = events.last().unwrap().log_position;
            generation.1 += events.len();
            Ok(())
        }

        async fn retargeted(&self) -> Result<bool, ProjectionError> {
            if self.switch_now.swap(false, Ordering::SeqCst) {
                self.current.store(1, Ordering::SeqCst);
            }
            Ok(self.current.load(Ordering::SeqCst) != self.bound.load(Ordering::SeqCst))
        }
    }

    #[tokio::test]
    async fn a_retargeted_projection_resumes_from_the_new_checkpoint() {
        let store = Arc::new(MemoryStore::default());
        let projection = Arc::new(SwitchingProjection::default());
        let head = store.push(6, true);
        // the new generation was built up to 4 of the 6 events elsewhere
        projection.generations.lock().unwrap()[1] = (LogPosition { commit: 4, position: 4 }, 4);
        let store_dyn: Arc<dyn EventStore> = store.clone();
        let projection_dyn: Arc<dyn Projection> = projection.clone();
        let handle = ProjectionRunner::spawn(store_dyn, projection_dyn, fast_options());
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);

        projection.switch_now.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while projection.generations.lock().unwrap()[1].0 < head {
            assert!(
                std::time::Instant::now() < deadline,
                "the new generation was not caught up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let head = store.push(2, true);
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);
        let generations = *projection.generations.lock().unwrap();
        assert_eq!(generations[0].1, 6, "the old generation was written after the switch");
        assert_eq!(
            generations[1],
            (head, 8),
            "the new generation missed or repeated events"
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn catch_up_stops_at_until_or_at_the_end_of_the_log() {
        let store = MemoryStore::default();
        let projection = CountingProjection::default();
        store.push(10, true);

        let until = LogPosition { commit: 5, position: 5 };
        assert_eq!(catch_up(&store, &projection, until, 3).await.unwrap(), until);
        assert_eq!(projection.applied(), 5);
        assert_eq!(*projection.batch_sizes.lock().unwrap(), vec![3, 2]);

        let head = catch_up_to_head(&store, &projection, 100).await.unwrap();
        assert_eq!(
            head,
            LogPosition {
                commit: 10,
                position: 10
            }
        );
        assert_eq!(projection.applied(), 10);

        let beyond = LogPosition {
            commit: 50,
            position: 50,
        };
        assert_eq!(catch_up(&store, &projection, beyond, 3).await.unwrap(), head);
        assert_eq!(projection.applied(), 10);
    }

    #[tokio::test]
    async fn catch_up_returns_errors() {
        let store = MemoryStore::default();
        let projection = CountingProjection::default();
        store.push(2, true);
        store.failing_reads.store(1, Ordering::SeqCst);
        let error = catch_up_to_head(&store, &projection, 10).await.unwrap_err();
        assert!(matches!(error, ProjectionError::Store { ref projection, .. } if projection == "counting"));
        assert_eq!(projection.applied(), 0);
    }
}
