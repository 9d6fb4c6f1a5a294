//! Reading the event topics from the start, as an outside consumer would:
//! every partition assigned by hand (no consumer group, no offsets kept),
//! for `neurostash audit tail` when Kafka is configured.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actors::store::RecordedEvent;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::cloudevent::CloudEvent;
use crate::kafka::{KafkaError, KafkaSettings};

/// One topic's reader. A consumer per topic, because the client reports
/// the end of a partition by its number alone.
struct TopicReader {
    consumer: BaseConsumer,
    /// Partitions not at their end yet.
    open: HashSet<i32>,
}

/// Reads every event topic from its beginning and hands each event to
/// `on_event` (which returns `false` to stop). Without `follow` it stops
/// once every partition has reached its end; with it, when `stop` is set.
/// Runs on the calling thread: call it from a blocking task.
pub fn tail_topics(
    settings: &KafkaSettings,
    follow: bool,
    stop: &AtomicBool,
    mut on_event: impl FnMut(RecordedEvent) -> bool,
) -> Result<(), KafkaError> {
    let client_error = |what: &str, source: RdKafkaError| KafkaError::Client {
        what: what.to_string(),
        brokers: settings.brokers.clone(),
        source: Box::new(source),
    };
    let mut readers = Vec::new();
    for topic in settings.topics().all() {
        let consumer: BaseConsumer = settings
            .client_config()
            // required by the client even for hand-assigned partitions;
            // nothing is ever committed under it
            .set(
                "group.id",
                format!("{}.tail.{}", settings.topic_prefix, uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|source| client_error("tail consumer", source))?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|source| client_error("metadata", source))?;
        let mut assignment = TopicPartitionList::new();
        let mut open = HashSet::new();
        for partition in metadata.topics().iter().flat_map(|found| found.partitions()) {
            assignment
                .add_partition_offset(&topic, partition.id(), Offset::Beginning)
                .map_err(|source| client_error("assignment", source))?;
            open.insert(partition.id());
        }
        if open.is_empty() {
            continue;
        }
        consumer
            .assign(&assignment)
            .map_err(|source| client_error("assignment", source))?;
        readers.push(TopicReader { consumer, open });
    }

    while !stop.load(Ordering::SeqCst) {
        if !follow && readers.iter().all(|reader| reader.open.is_empty()) {
            return Ok(());
        }
        for reader in &mut readers {
            match reader.consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Ok(message)) => {
                    reader.open.insert(message.partition());
                    let decoded = message
                        .payload()
                        .ok_or_else(|| "an empty message".to_string())
                        .and_then(|payload| CloudEvent::from_json(payload).map_err(|error| error.to_string()))
                        .and_then(|event| event.into_recorded().map_err(|error| error.to_string()));
                    match decoded {
                        Ok(event) => {
                            if !on_event(event) {
                                return Ok(());
                            }
                        }
                        Err(reason) => tracing::warn!(
                            topic = message.topic(),
                            partition = message.partition(),
                            offset = message.offset(),
                            %reason,
                            "passing over a message that is not a neurostash event"
                        ),
                    }
                }
                Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                    reader.open.remove(&partition);
                }
                Some(Err(error)) => return Err(client_error("tail", error)),
            }
        }
    }
    Ok(())
}
