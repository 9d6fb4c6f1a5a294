//! Owns the id → actor map of one aggregate type: starts an actor on first use,
//! forgets it when it stops or crashes, and never stops itself because of a
//! child (ractor's default supervisor would).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use domain::{Aggregate, EventMetadata, StreamId};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Semaphore;

use crate::aggregate_actor::{ActorOptions, AggregateActor, AggregateMessage, CommandError, CommandOutcome};
use crate::store::EventStore;

pub enum SupervisorMessage<A: Aggregate> {
    Resolve {
        stream_id: StreamId,
        reply: RpcReplyPort<Result<ActorRef<AggregateMessage<A>>, String>>,
    },
    LiveCount {
        reply: RpcReplyPort<usize>,
    },
}

pub struct AggregateSupervisor<A: Aggregate> {
    store: Arc<dyn EventStore>,
    options: ActorOptions,
    _aggregate: std::marker::PhantomData<fn() -> A>,
}

#[derive(Default)]
pub struct SupervisorState<A: Aggregate> {
    by_stream: HashMap<StreamId, ActorRef<AggregateMessage<A>>>,
    by_actor: HashMap<ActorId, StreamId>,
}

impl<A: Aggregate> SupervisorState<A> {
    fn forget(&mut self, cell: &ActorCell) -> Option<StreamId> {
        let stream_id = self.by_actor.remove(&cell.get_id())?;
        self.by_stream.remove(&stream_id);
        Some(stream_id)
    }
}

impl<A: Aggregate> Actor for AggregateSupervisor<A> {
    type Msg = SupervisorMessage<A>;
    type State = SupervisorState<A>;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            by_stream: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Resolve { stream_id, reply } => {
                if let Some(actor) = state.by_stream.get(&stream_id) {
                    let _ = reply.send(Ok(actor.clone()));
                    return Ok(());
                }
                let spawned = Actor::spawn_linked(
                    None,
                    AggregateActor::<A>::new(self.store.clone(), self.options.clone()),
                    stream_id.clone(),
                    myself.get_cell(),
                )
                .await;
                match spawned {
                    Ok((actor, _join)) => {
                        state.by_actor.insert(actor.get_id(), stream_id.clone());
                        state.by_stream.insert(stream_id, actor.clone());
                        let _ = reply.send(Ok(actor));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(format!("could not start actor for {stream_id}: {error}")));
                    }
                }
            }
            SupervisorMessage::LiveCount { reply } => {
                let _ = reply.send(state.by_stream.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(stream_id) = state.forget(&cell) {
                    tracing::debug!(%stream_id, reason = reason.as_deref().unwrap_or(""), "actor stopped");
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(stream_id) = state.forget(&cell) {
                    // the next command for this stream starts a fresh actor
                    tracing::error!(%stream_id, %error, "actor crashed");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct HandleOptions {
    pub actor: ActorOptions,
    /// How long a caller waits for a command's reply.
    pub call_timeout: Duration,
    /// Commands in flight at once for this aggregate type; more wait, and
    /// give up as `Unavailable` after `call_timeout`. Mailboxes are
    /// unbounded, so work is bounded here where it enters.
    pub max_in_flight: usize,
}

impl Default for HandleOptions {
    fn default() -> Self {
        HandleOptions {
            actor: ActorOptions::default(),
            call_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
        }
    }
}

/// The way into the actors of one aggregate type.
pub struct AggregateHandle<A: Aggregate> {
    supervisor: ActorRef<SupervisorMessage<A>>,
    permits: Arc<Semaphore>,
    call_timeout: Duration,
}

impl<A: Aggregate> Clone for AggregateHandle<A> {
    fn clone(&self) -> Self {
        AggregateHandle {
            supervisor: self.supervisor.clone(),
            permits: self.permits.clone(),
            call_timeout: self.call_timeout,
        }
    }
}

impl<A: Aggregate> AggregateHandle<A> {
    pub async fn start(store: Arc<dyn EventStore>, options: HandleOptions) -> Result<Self, ractor::SpawnErr> {
        let supervisor = AggregateSupervisor::<A> {
            store,
            options: options.actor,
            _aggregate: std::marker::PhantomData,
        };
        let (supervisor, _join) = Actor::spawn(None, supervisor, ()).await?;
        Ok(AggregateHandle {
            supervisor,
            permits: Arc::new(Semaphore::new(options.max_in_flight)),
            call_timeout: options.call_timeout,
        })
    }

    /// Sends a command to the actor of `stream_id` and waits for its decision.
    pub async fn execute(
        &self,
        stream_id: StreamId,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<CommandOutcome<A::Event>, CommandError> {
        let _permit = tokio::time::timeout(self.call_timeout, self.permits.acquire())
            .await
            .map_err(|_| CommandError::Unavailable(format!("too many commands in flight for {stream_id}")))?
            .map_err(|_| CommandError::Unavailable("actor system is shutting down".into()))?;
        // an actor may stop for idleness between being resolved and receiving
        // the message; the message is then dropped unhandled, so one retry
        // against a freshly started actor is safe
        let mut pending = Some((command, metadata));
        for _ in 0..2 {
            let actor = self.resolve(&stream_id).await?;
            let (command, metadata) = pending.take().expect("a command is pending until sent");
            let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
            let message = AggregateMessage::Execute {
                command,
                metadata,
                reply: reply_tx.into(),
            };
            if let Err(ractor::MessagingErr::SendErr(AggregateMessage::Execute { command, metadata, .. })) =
                actor.send_message(message)
            {
                pending = Some((command, metadata));
                continue;
            }
            return match tokio::time::timeout(self.call_timeout, reply_rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_dropped)) => Err(CommandError::Unavailable(format!(
                    "actor for {stream_id} stopped before replying"
                ))),
                Err(_) => Err(CommandError::Unavailable(format!(
                    "actor for {stream_id} did not reply within {:?}",
                    self.call_timeout
                ))),
            };
        }
        Err(CommandError::Unavailable(format!(
            "actor for {stream_id} keeps stopping"
        )))
    }

    /// The current state of an aggregate, read through its actor.
    pub async fn inspect(&self, stream_id: StreamId) -> Result<(A, i64), CommandError> {
        let actor = self.resolve(&stream_id).await?;
        match actor
            .call(|reply| AggregateMessage::Inspect { reply }, Some(self.call_timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(CommandError::Unavailable(format!(
                "actor for {stream_id} did not answer"
            ))),
        }
    }

    /// How many actors of this type are alive now.
    pub async fn live_actors(&self) -> usize {
        match self
            .supervisor
            .call(|reply| SupervisorMessage::LiveCount { reply }, Some(self.call_timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(count)) => count,
            _ => 0,
        }
    }

    async fn resolve(&self, stream_id: &StreamId) -> Result<ActorRef<AggregateMessage<A>>, CommandError> {
        let stream = stream_id.clone();
        match self
            .supervisor
            .call(
                |reply| SupervisorMessage::Resolve {
                    stream_id: stream,
                    reply,
                },
                Some(self.call_timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(Ok(actor))) => Ok(actor),
            Ok(ractor::rpc::CallResult::Success(Err(reason))) => Err(CommandError::Unavailable(reason)),
            _ => Err(CommandError::Unavailable(format!(
                "supervisor did not resolve an actor for {stream_id}"
            ))),
        }
    }

    pub fn stop(&self) {
        self.supervisor.stop(Some("shutdown".into()));
    }
}
