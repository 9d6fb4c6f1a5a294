//! One ractor actor per live aggregate instance: it loads the stream, decides
//! commands against the folded state, appends the events and replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{Aggregate, DomainError, EventMetadata, EventPayload, LogPosition, StreamId, SCHEMA_VERSION};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::store::{EventStore, ExpectedVersion, NewEvent, StoreError};

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command; nothing was appended.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// Other writers kept appending to the stream; every retry lost the race.
    #[error("stream {stream_id} kept changing under {attempts} attempts")]
    Contended { stream_id: StreamId, attempts: u32 },
    #[error(transparent)]
    Store(StoreError),
    #[error("stream {stream_id} holds an unreadable event: {reason}")]
    Corrupt { stream_id: StreamId, reason: String },
    /// The actor could not be reached in time; safe to retry.
    #[error("{0}")]
    Unavailable(String),
}

/// What an accepted command did.
#[derive(Debug, Clone)]
pub struct CommandOutcome<E> {
    pub events: Vec<E>,
    pub stream_version: i64,
    /// Where the events landed; `None` when the command was accepted but
    /// appended nothing (an idempotent repeat).
    pub written: Option<Written>,
}

/// Where an append landed: what a reader waits for to see it, by log
/// position (a reader of the global log) or by stream version (a reader
/// fed by a partitioned broker, which has no global order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub stream_id: StreamId,
    pub stream_version: i64,
    /// Position of the last appended event.
    pub log_position: LogPosition,
}

pub enum AggregateMessage<A: Aggregate> {
    Execute {
        command: A::Command,
        metadata: EventMetadata,
        reply: RpcReplyPort<Result<CommandOutcome<A::Event>, CommandError>>,
    },
    /// The folded state and its version, as this actor knows it.
    Inspect {
        reply: RpcReplyPort<Result<(A, i64), CommandError>>,
    },
    IdleCheck,
}

#[derive(Debug, Clone)]
pub struct ActorOptions {
    /// An actor that handled no message for this long stops itself.
    pub idle_timeout: Duration,
    /// How many times a command is re-decided after losing an append race.
    pub max_conflict_retries: u32,
}

impl Default for ActorOptions {
    fn default() -> Self {
        ActorOptions {
            idle_timeout: Duration::from_secs(300),
            max_conflict_retries: 5,
        }
    }
}

pub struct AggregateActor<A: Aggregate> {
    store: Arc<dyn EventStore>,
    options: ActorOptions,
    _aggregate: std::marker::PhantomData<fn() -> A>,
}

impl<A: Aggregate> AggregateActor<A> {
    pub fn new(store: Arc<dyn EventStore>, options: ActorOptions) -> Self {
        AggregateActor {
            store,
            options,
            _aggregate: std::marker::PhantomData,
        }
    }
}

pub struct AggregateActorState<A: Aggregate> {
    stream_id: StreamId,
    aggregate: A,
    version: i64,
    /// False until the stream is read, and again after a store failure left
    /// it unknown whether an append landed.
    loaded: bool,
    last_activity: Instant,
    idle_timer: Option<JoinHandle<()>>,
}

impl<A: Aggregate> AggregateActorState<A> {
    /// Brings the folded state up to the stream's current version.
    async fn catch_up(&mut self, store: &dyn EventStore) -> Result<(), CommandError> {
        if !self.loaded {
            self.aggregate = A::default();
            self.version = 0;
        }
        let recorded = store
            .read_stream(&self.stream_id, self.version)
            .await
            .map_err(CommandError::Store)?;
        for event in recorded {
            let payload =
                A::Event::from_data(&event.event_type, event.schema_version, event.payload).map_err(|error| {
                    CommandError::Corrupt {
                        stream_id: self.stream_id.clone(),
                        reason: error.to_string(),
                    }
                })?;
            self.aggregate.apply(&payload);
            self.version = event.stream_version;
        }
        self.loaded = true;
        Ok(())
    }

    async fn execute(
        &mut self,
        store: &dyn EventStore,
        options: &ActorOptions,
        command: &A::Command,
        metadata: &EventMetadata,
    ) -> Result<CommandOutcome<A::Event>, CommandError> {
        if !self.loaded {
            self.catch_up(store).await?;
        }
        for _attempt in 0..=options.max_conflict_retries {
            let events = self.aggregate.decide(command)?;
            if events.is_empty() {
                return Ok(CommandOutcome {
                    events,
                    stream_version: self.version,
                    written: None,
                });
            }
            let new_events = events
                .iter()
                .map(|event| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: event.event_type().to_owned(),
                    schema_version: SCHEMA_VERSION,
                    data: event.to_data(),
                    metadata: metadata.clone(),
                })
                .collect();
            match store
                .append(&self.stream_id, ExpectedVersion::Exactly(self.version), new_events)
                .await
            {
                Ok(outcome) => {
                    for event in &events {
                        self.aggregate.apply(event);
                    }
                    debug_assert_eq!(outcome.stream_version, self.version + events.len() as i64);
                    self.version = outcome.stream_version;
                    return Ok(CommandOutcome {
                        events,
                        stream_version: outcome.stream_version,
                        written: Some(Written {
                            stream_id: self.stream_id.clone(),
                            stream_version: outcome.stream_version,
                            log_position: outcome.log_position,
                        }),
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    // another process appended to this stream: fold its
                    // events in and decide again against the fresh state
                    tracing::debug!(stream_id = %self.stream_id, "append conflict, reloading");
                    self.catch_up(store).await?;
                }
                Err(error) => {
                    // the append may or may not have committed: reload before
                    // the next decision rather than trust the cached state
                    self.loaded = false;
                    return Err(CommandError::Store(error));
                }
            }
        }
        Err(CommandError::Contended {
            stream_id: self.stream_id.clone(),
            attempts: options.max_conflict_retries + 1,
        })
    }
}

impl<A: Aggregate> Actor for AggregateActor<A> {
    type Msg = AggregateMessage<A>;
    type State = AggregateActorState<A>;
    type Arguments = StreamId;

    // the supervisor awaits pre_start while spawning, so nothing slow happens
    // here: the stream is read when the first message arrives
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        stream_id: StreamId,
    ) -> Result<Self::State, ActorProcessingErr> {
        let check_every = (self.options.idle_timeout / 4).max(Duration::from_millis(50));
        let idle_timer = myself.send_interval(check_every, || AggregateMessage::IdleCheck);
        Ok(AggregateActorState {
            stream_id,
            aggregate: A::default(),
            version: 0,
            loaded: false,
            last_activity: Instant::now(),
            idle_timer: Some(idle_timer),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.idle_timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AggregateMessage::Execute {
                command,
                metadata,
                reply,
            } => {
                state.last_activity = Instant::now();
                let result = state
                    .execute(self.store.as_ref(), &self.options, &command, &metadata)
                    .await;
                if let Err(CommandError::Store(error)) = &result {
                    tracing::warn!(stream_id = %state.stream_id, %error, "append failed");
                }
                // a caller that gave up waiting is not an actor failure
                let _ = reply.send(result);
            }
            AggregateMessage::Inspect { reply } => {
                state.last_activity = Instant::now();
                let result = state
                    .catch_up(self.store.as_ref())
                    .await
                    .map(|()| (state.aggregate.clone(), state.version));
                let _ = reply.send(result);
            }
            AggregateMessage::IdleCheck => {
                if state.last_activity.elapsed() >= self.options.idle_timeout {
                    tracing::debug!(stream_id = %state.stream_id, "stopping idle actor");
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}
