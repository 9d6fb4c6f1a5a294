//! Projections fed from Kafka.
//!
//! A consumer group per projection; Kafka's own offsets are never committed.
//! When the group assigns partitions, the runner asks the projection for
//! the offsets it stored with its effects and starts each partition there
//! (at the beginning when it never consumed it). Messages are gathered into
//! batches, decoded from CloudEvents and handed to
//! [`ConsumedProjection::apply_consumed`] together with the next offset of
//! each partition, which the projection commits in the same transaction as
//! its writes: a crash anywhere replays at most the batch that did not
//! commit, and the projection recognises what it has already applied.
//!
//! The consumer runs on a thread of its own, because librdkafka calls the
//! rebalance callback from inside `poll` and the stored offsets must be
//! read there, before the partitions start fetching.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::store::RecordedEvent;
use projections::consumed::{ConsumedProjection, PartitionOffset};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::cloudevent::CloudEvent;
use crate::kafka::{KafkaError, KafkaSettings};

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Kafka consumer group; every process running the same projection
    /// joins it and the partitions are shared among them.
    pub group_id: String,
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// How long a batch waits to fill before it is applied anyway.
    pub batch_wait: Duration,
    /// How soon the group notices a consumer that died.
    pub session_timeout: Duration,
    /// Longest wait between attempts while the projection fails.
    pub max_backoff: Duration,
}

impl ConsumerOptions {
    pub fn for_projection(settings: &KafkaSettings, projection: &str) -> ConsumerOptions {
        ConsumerOptions {
            group_id: format!("{}.{projection}", settings.topic_prefix),
            batch_size: 500,
            batch_wait: Duration::from_millis(50),
            session_timeout: settings.session_timeout,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the consumer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// Events handed to the projection in committed batches, repeats
    /// included.
    pub delivered: u64,
    /// The next offset of every partition it has committed.
    pub next_offsets: BTreeMap<(String, i32), i64>,
    /// Partitions it owns now.
    pub assigned: Vec<(String, i32)>,
    /// Whether the group has handed this consumer its share yet (which can
    /// be no partition at all, in a group with more members than
    /// partitions).
    pub joined: bool,
    pub failed_batches: u64,
    pub last_error: Option<String>,
}

/// A message taken from a partition, not yet applied.
struct Pending {
    topic: String,
    partition: i32,
    offset: i64,
    /// `None` for a message that is not a NeuroStash CloudEvent: it is
    /// passed over (its offset still advances) rather than blocking the
    /// partition forever.
    event: Option<RecordedEvent>,
}

struct RunnerContext {
    projection: Arc<dyn ConsumedProjection>,
    runtime: tokio::runtime::Handle,
    /// Gathered messages; the rebalance callback drops those of revoked
    /// partitions, which their next owner reads again from the stored
    /// offsets.
    pending: Mutex<Vec<Pending>>,
    progress: watch::Sender<ConsumerProgress>,
}

impl ClientContext for RunnerContext {}

impl ConsumerContext for RunnerContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|element| (element.topic().to_string(), element.partition()))
            .collect();
        let projection = self.projection.name().to_string();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = self.stored_offsets(&partitions);
                for (topic, partition) in &partitions {
                    let start = stored
                        .get(&(topic.clone(), *partition))
                        .map_or(Offset::Beginning, |next| Offset::Offset(*next));
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, start) {
                        tracing::error!(%projection, %topic, partition, %error, "cannot set the start offset");
                    }
                }
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(%projection, %error, "cannot take the assigned partitions");
                }
                tracing::info!(%projection, partitions = ?partitions, "partitions assigned");
                self.progress.send_modify(|progress| {
                    progress.assigned = partitions;
                    progress.joined = true;
                });
            }
            _ => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.retain(|message| !partitions.contains(&(message.topic.clone(), message.partition)));
                }
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%projection, %error, "cannot give the partitions up");
                }
                tracing::info!(%projection, partitions = ?partitions, "partitions revoked");
                self.progress.send_modify(|progress| progress.assigned.clear());
            }
        }
    }
}

impl RunnerContext {
    /// The projection's stored offsets, retried a few times: starting a
    /// partition over from the beginning is correct (every repeat is
    /// recognised) but slow, so it is the last resort.
    fn stored_offsets(&self, partitions: &[(String, i32)]) -> BTreeMap<(String, i32), i64> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match self.runtime.block_on(self.projection.stored_offsets(partitions)) {
                Ok(offsets) => {
                    return offsets
                        .into_iter()
                        .map(|offset| ((offset.topic, offset.partition), offset.next_offset))
                        .collect()
                }
                Err(error) => {
                    tracing::warn!(projection = self.projection.name(), %error, attempt, "cannot read stored offsets");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
        tracing::error!(
            projection = self.projection.name(),
            "stored offsets unreadable: the assigned partitions start from the beginning"
        );
        BTreeMap::new()
    }
}

/// A running Kafka consumer feeding one projection.
pub struct ConsumerHandle {
    progress: watch::Receiver<ConsumerProgress>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ConsumerHandle {
    pub fn progress(&self) -> ConsumerProgress {
        self.progress.borrow().clone()
    }

    /// Waits until `check` holds for the progress, or `timeout`.
    pub async fn wait_until(&self, timeout: Duration, check: impl Fn(&ConsumerProgress) -> bool) -> bool {
        let mut progress = self.progress.clone();
        tokio::time::timeout(timeout, progress.wait_for(|progress| check(progress)))
            .await
            .is_ok_and(|outcome| outcome.is_ok())
    }

    /// Stops after the batch in hand, leaves the group and waits for the
    /// consumer thread.
    pub async fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("kafka consumer thread ended abnormally");
            }
        }
    }
}

/// Starts consuming the topics of `categories` into `projection`.
pub fn spawn_consumer(
    settings: &KafkaSettings,
    categories: &[&str],
    projection: Arc<dyn ConsumedProjection>,
    options: ConsumerOptions,
) -> Result<ConsumerHandle, KafkaError> {
    let (progress_sender, progress) = watch::channel(ConsumerProgress::default());
    let context = RunnerContext {
        projection: projection.clone(),
        runtime: tokio::runtime::Handle::current(),
        pending: Mutex::new(Vec::new()),
        progress: progress_sender,
    };
    let session_ms = options.session_timeout.as_millis().max(1).to_string();
    let heartbeat_ms = (options.session_timeout.as_millis() / 4).max(1).to_string();
    let consumer: BaseConsumer<RunnerContext> = settings
        .client_config()
        .set("group.id", &options.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", &session_ms)
        .set("heartbeat.interval.ms", &heartbeat_ms)
        .create_with_context(context)
        .map_err(|source| KafkaError::Client {
            what: format!("consumer of group {}", options.group_id),
            brokers: settings.brokers.clone(),
            source: Box::new(source),
        })?;
    let topics: Vec<String> = categories
        .iter()
        .map(|category| settings.topics().for_category(category))
        .collect();
    let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_names).map_err(|source| KafkaError::Client {
        what: format!("subscription of group {} to {topics:?}", options.group_id),
        brokers: settings.brokers.clone(),
        source: Box::new(source),
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("kafka-{}", projection.name()))
            .spawn(move || run(consumer, options, stop))
            .map_err(|error| KafkaError::Thread(error.to_string()))?
    };
    Ok(ConsumerHandle {
        progress,
        stop,
        thread: Mutex::new(Some(thread)),
    })
}

fn run(consumer: BaseConsumer<RunnerContext>, options: ConsumerOptions, stop: Arc<AtomicBool>) {
    let context = consumer.context();
    let projection = context.projection.name().to_string();
    tracing::info!(%projection, group = %options.group_id, "kafka consumer started");
    let mut backoff = Duration::ZERO;
    let mut retry_at: Option<Instant> = None;
    let mut batch_started: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let gathered = context.pending.lock().map(|pending| pending.len()).unwrap_or(0);
        let full = gathered >= options.batch_size.max(1);
        // while a failed batch waits for its retry, polling goes on (it
        // keeps the group membership alive) but the partitions are paused
        if !full || retry_at.is_some() {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(message)) => {
                    let pending = Pending {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        event: decode(&projection, &message),
                    };
                    if let Ok(mut gathered) = context.pending.lock() {
                        gathered.push(pending);
                    }
                    batch_started.get_or_insert_with(Instant::now);
                    if !full && batch_started.is_some_and(|at| at.elapsed() < options.batch_wait) {
                        continue;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%projection, %error, "kafka consume error");
                }
                None => {}
            }
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        let batch: Vec<Pending> = match context.pending.lock() {
            Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
            _ => {
                batch_started = None;
                continue;
            }
        };
        match apply(context, &batch) {
            Ok(()) => {
                if retry_at.take().is_some() {
                    resume(&consumer, &projection);
                }
                backoff = Duration::ZERO;
                batch_started = None;
            }
            Err(error) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(100), options.max_backoff);
                tracing::warn!(%projection, %error, retry_in = ?backoff, "applying a kafka batch failed");
                context.progress.send_modify(|progress| {
                    progress.failed_batches += 1;
                    progress.last_error = Some(error.to_string());
                });
                if retry_at.is_none() {
                    pause(&consumer, &projection);
                }
                retry_at = Some(Instant::now() + backoff);
                // the batch goes back in front of anything polled since
                if let Ok(mut pending) = context.pending.lock() {
                    let newer = std::mem::take(&mut *pending);
                    *pending = batch;
                    pending.extend(newer);
                }
            }
        }
    }
    consumer.unsubscribe();
    tracing::info!(%projection, "kafka consumer stopped");
}

fn apply(context: &RunnerContext, batch: &[Pending]) -> Result<(), projections::runtime::ProjectionError> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in batch {
        let slot = next.entry((message.topic.clone(), message.partition)).or_insert(0);
        *slot = (*slot).max(message.offset + 1);
    }
    let offsets: Vec<PartitionOffset> = next
        .iter()
        .map(|((topic, partition), next_offset)| PartitionOffset {
            topic: topic.clone(),
            partition: *partition,
            next_offset: *next_offset,
        })
        .collect();
    let events: Vec<RecordedEvent> = batch.iter().filter_map(|message| message.event.clone()).collect();
    context
        .runtime
        .block_on(context.projection.apply_consumed(&events, &offsets))?;
    context.progress.send_modify(|progress| {
        progress.delivered += events.len() as u64;
        progress.next_offsets.extend(next);
        progress.last_error = None;
    });
    Ok(())
}

fn decode(projection: &str, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<RecordedEvent> {
    let decoded = message
        .payload()
        .ok_or_else(|| "an empty message".to_string())
        .and_then(|payload| CloudEvent::from_json(payload).map_err(|error| error.to_string()))
        .and_then(|event| event.into_recorded().map_err(|error| error.to_string()));
    match decoded {
        Ok(event) => Some(event),
        Err(reason) => {
            tracing::error!(
                %projection,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                %reason,
                "passing over a message that is not a neurostash event"
            );
            None
        }
    }
}

fn pause(consumer: &BaseConsumer<RunnerContext>, projection: &str) {
    if let Err(error) = assignment(consumer).and_then(|assigned| consumer.pause(&assigned)) {
        tracing::warn!(%projection, %error, "cannot pause the partitions");
    }
}

fn resume(consumer: &BaseConsumer<RunnerContext>, projection: &str) {
    if let Err(error) = assignment(consumer).and_then(|assigned| consumer.resume(&assigned)) {
        tracing::warn!(%projection, %error, "cannot resume the partitions");
    }
}

fn assignment(consumer: &BaseConsumer<RunnerContext>) -> KafkaResult<TopicPartitionList> {
    consumer.assignment()
}
