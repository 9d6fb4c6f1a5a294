//! The outbox relay: drains the event store's transactional outbox into
//! Kafka.
//!
//! One round takes (or renews) the relay lease, reads the oldest pending
//! events, sends them all with the stream id as key, waits for every
//! acknowledgement and only then marks them published. A crash anywhere
//! leaves the unmarked events in the outbox and the next round sends them
//! again: delivery is at least once, and consumers deduplicate by event id
//! or by stream version.
//!
//! Order: the producer is idempotent, so its own retries never reorder a
//! partition, and a stream's events share a key and so a partition. When
//! one event of a stream fails, that stream's later events of the round
//! are not marked even if they were delivered: they go out again after the
//! failed one, so a consumer that drops versions it has already applied
//! ends up with every version, in order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::store::{Outbox, RecordedEvent, StoreError};
use chrono::Utc;
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::cloudevent::{CloudEvent, MESSAGE_CONTENT_TYPE};
use crate::kafka::{KafkaError, KafkaSettings, Topics};

#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Names this relay in the lease; unique per process.
    pub holder: String,
    /// Most events sent in one round.
    pub batch_size: usize,
    /// How often an idle relay looks at the outbox: appends by other
    /// processes raise no signal here.
    pub poll_interval: Duration,
    /// The lease outlives a crashed relay by at most this long.
    pub lease_for: Duration,
    /// Longest wait between rounds while the broker or the store fails.
    pub max_backoff: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            holder: format!("relay-{}-{}", std::process::id(), uuid::Uuid::new_v4()),
            batch_size: 500,
            poll_interval: Duration::from_millis(250),
            lease_for: Duration::from_secs(15),
            max_backoff: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox relay {holder} could not use the event store: {source}")]
    Store {
        holder: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Another relay holds the lease.
    NotLeader,
    /// Nothing was pending.
    Idle,
    /// `marked` events are on Kafka and out of the outbox; `failed` were
    /// not acknowledged and stay for the next round.
    Published { marked: usize, failed: usize },
}

/// Which events of a round reached the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publication {
    /// Positions safe to mark: acknowledged, and no earlier event of the
    /// same stream in the round failed.
    pub markable: Vec<i64>,
    /// Events not acknowledged, with the broker's reason.
    pub failed: Vec<(i64, String)>,
}

/// The relay's counters, for logs, health and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayProgress {
    pub leader: bool,
    /// Events acknowledged by the broker and marked published.
    pub published: u64,
    pub last_position: Option<i64>,
    /// Rounds that failed (broker or store unavailable).
    pub failed_rounds: u64,
    pub last_error: Option<String>,
}

pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    producer: FutureProducer,
    topics: Topics,
    options: RelayOptions,
    /// When this relay last took or renewed the lease.
    lease_renewed: Mutex<Option<Instant>>,
}

impl OutboxRelay {
    pub fn new(settings: &KafkaSettings, outbox: Arc<dyn Outbox>, options: RelayOptions) -> Result<Self, KafkaError> {
        Ok(OutboxRelay {
            outbox,
            producer: settings.producer()?,
            topics: settings.topics(),
            options,
            lease_renewed: Mutex::new(None),
        })
    }

    pub fn holder(&self) -> &str {
        &self.options.holder
    }

    fn store_error(&self, source: StoreError) -> RelayError {
        RelayError::Store {
            holder: self.options.holder.clone(),
            source,
        }
    }

    /// Takes the lease, or renews it once a third of it has run out; a
    /// relay that cannot tell whether it still leads stops publishing.
    async fn hold_lease(&self) -> Result<bool, RelayError> {
        let renewed = *self
            .lease_renewed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if renewed.is_some_and(|at| at.elapsed() < self.options.lease_for / 3) {
            return Ok(true);
        }
        let started = Instant::now();
        let granted = self
            .outbox
            .acquire_relay_lease(&self.options.holder, Utc::now(), self.options.lease_for)
            .await;
        let mut slot = self
            .lease_renewed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match granted {
            Ok(true) => {
                *slot = Some(started);
                Ok(true)
            }
            Ok(false) => {
                *slot = None;
                Ok(false)
            }
            Err(error) => {
                *slot = None;
                Err(self.store_error(error))
            }
        }
    }

    /// Sends `events` and waits for the broker's answer to each.
    pub async fn publish(&self, events: &[RecordedEvent]) -> Publication {
        let deliveries = events.iter().map(|event| {
            let topic = self.topics.for_category(event.stream_id.category());
            let payload = CloudEvent::from_recorded(event).to_json();
            let headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(MESSAGE_CONTENT_TYPE),
            });
            let record = FutureRecord::to(&topic)
                .key(event.stream_id.as_str())
                .payload(&payload)
                .headers(headers);
            let sent = self
                .producer
                .send_result(record)
                .map_err(|(error, _)| error.to_string());
            async move {
                match sent {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((error, _))) => Err(error.to_string()),
                        Err(_) => Err("the producer dropped the message".to_string()),
                    },
                    Err(error) => Err(error),
                }
            }
        });
        let outcomes = join_all(deliveries).await;

        let mut publication = Publication::default();
        let mut broken_streams = HashSet::new();
        for (event, outcome) in events.iter().zip(outcomes) {
            let position = event.log_position.position;
            match outcome {
                Ok(()) if !broken_streams.contains(&event.stream_id) => publication.markable.push(position),
                Ok(()) => {}
                Err(reason) => {
                    broken_streams.insert(event.stream_id.clone());
                    publication.failed.push((position, reason));
                }
            }
        }
        publication
    }

    /// One round: lease, read, publish, mark.
    pub async fn relay_once(&self) -> Result<Round, RelayError> {
        if !self.hold_lease().await? {
            return Ok(Round::NotLeader);
        }
        let pending = self
            .outbox
            .pending(self.options.batch_size.max(1))
            .await
            .map_err(|error| self.store_error(error))?;
        if pending.is_empty() {
            return Ok(Round::Idle);
        }
        let publication = self.publish(&pending).await;
        if let Some((position, reason)) = publication.failed.first() {
            tracing::warn!(
                holder = %self.options.holder,
                failed = publication.failed.len(),
                first_position = position,
                %reason,
                "kafka did not acknowledge events: they stay in the outbox"
            );
        }
        self.outbox
            .mark_published(&publication.markable)
            .await
            .map_err(|error| self.store_error(error))?;
        Ok(Round::Published {
            marked: publication.markable.len(),
            failed: publication.failed.len(),
        })
    }

    /// Runs rounds until shut down: straight on while there is work, woken
    /// by `appended` or the poll interval when idle, backing off while the
    /// broker or the store fails.
    pub fn spawn(self, appended: Arc<Notify>) -> RelayHandle {
        let (progress_sender, progress) = watch::channel(RelayProgress::default());
        let (stop, mut stopped) = watch::channel(false);
        let relay = Arc::new(self);
        let task = {
            let relay = relay.clone();
            tokio::spawn(async move {
                tracing::info!(holder = %relay.options.holder, "outbox relay started");
                let mut backoff = Duration::ZERO;
                let mut last_report = Instant::now();
                loop {
                    if *stopped.borrow() {
                        break;
                    }
                    let wake = appended.notified();
                    tokio::pin!(wake);
                    wake.as_mut().enable();
                    let round = relay.relay_once().await;
                    let pause = match &round {
                        Ok(Round::Published { failed: 0, .. }) => {
                            backoff = Duration::ZERO;
                            None
                        }
                        Ok(Round::Idle) | Ok(Round::NotLeader) => {
                            backoff = Duration::ZERO;
                            Some(relay.options.poll_interval)
                        }
                        Ok(Round::Published { .. }) | Err(_) => {
                            backoff = (backoff * 2).clamp(Duration::from_millis(100), relay.options.max_backoff);
                            Some(backoff)
                        }
                    };
                    progress_sender.send_modify(|progress| record(progress, &round));
                    if let Err(error) = &round {
                        tracing::warn!(%error, retry_in = ?backoff, "outbox relay round failed");
                    }
                    if last_report.elapsed() >= Duration::from_secs(30) {
                        let progress = progress_sender.borrow().clone();
                        tracing::info!(
                            holder = %relay.options.holder,
                            leader = progress.leader,
                            published = progress.published,
                            last_position = ?progress.last_position,
                            "outbox relay progress"
                        );
                        last_report = Instant::now();
                    }
                    if let Some(pause) = pause {
                        let waits_for_work = matches!(round, Ok(Round::Idle));
                        tokio::select! {
                            _ = stopped.changed() => {}
                            _ = tokio::time::sleep(pause) => {}
                            _ = &mut wake, if waits_for_work => {}
                        }
                    }
                }
                relay.producer.flush(Duration::from_secs(5)).ok();
                if let Err(error) = relay.outbox.release_relay_lease(&relay.options.holder).await {
                    tracing::warn!(holder = %relay.options.holder, %error, "could not release the relay lease");
                }
                tracing::info!(holder = %relay.options.holder, "outbox relay stopped");
            })
        };
        RelayHandle {
            progress,
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }
}

fn record(progress: &mut RelayProgress, round: &Result<Round, RelayError>) {
    match round {
        Ok(Round::NotLeader) => progress.leader = false,
        Ok(Round::Idle) => progress.leader = true,
        Ok(Round::Published { marked, failed }) => {
            progress.leader = true;
            progress.published += *marked as u64;
            if *failed > 0 {
                progress.failed_rounds += 1;
                progress.last_error = Some(format!("{failed} events not acknowledged"));
            }
        }
        Err(error) => {
            progress.failed_rounds += 1;
            progress.last_error = Some(error.to_string());
        }
    }
}

/// A running relay.
pub struct RelayHandle {
    progress: watch::Receiver<RelayProgress>,
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RelayHandle {
    pub fn progress(&self) -> RelayProgress {
        self.progress.borrow().clone()
    }

    /// Waits until `published` events have been marked, or `timeout`.
    pub async fn wait_for_published(&self, published: u64, timeout: Duration) -> bool {
        let mut progress = self.progress.clone();
        tokio::time::timeout(timeout, progress.wait_for(|progress| progress.published >= published))
            .await
            .is_ok_and(|outcome| outcome.is_ok())
    }

    /// Stops after the current round, flushes the producer and gives the
    /// lease up.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "outbox relay task ended abnormally");
            }
        }
    }
}
