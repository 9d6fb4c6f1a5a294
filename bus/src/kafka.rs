//! Kafka connection settings, topic names and topic administration.

use std::time::Duration;

use domain::document::Document;
use domain::knowledge_base::KnowledgeBase;
use domain::tenant::Tenant;
use domain::Aggregate;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

/// How NeuroStash reaches Kafka and lays out its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics are `<prefix>.<stream category>`.
    pub topic_prefix: String,
    /// Partitions of a topic created at start; events are keyed by stream
    /// id, so this bounds how many consumers of a group share the work.
    pub partitions: i32,
    pub replication_factor: i32,
    pub client_id: String,
    /// How long the producer keeps retrying one message before the relay
    /// sees it fail (and leaves it in the outbox for the next round).
    pub delivery_timeout: Duration,
    /// How soon a consumer group notices a member that died; some brokers
    /// also make a joining member wait a part of it.
    pub session_timeout: Duration,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            topic_prefix: "neurostash.events".to_string(),
            partitions: 6,
            replication_factor: 1,
            client_id: "neurostash".to_string(),
            // below the relay lease (15 s): a round never outlives the lease
            // it was started under, even while the broker is away
            delivery_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
        }
    }

    pub fn topics(&self) -> Topics {
        Topics {
            prefix: self.topic_prefix.clone(),
        }
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        config
    }

    /// A producer that never reorders or duplicates on its own retries
    /// (idempotent) and counts a message sent only once every in-sync
    /// replica has it.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.delivery_timeout.as_millis().to_string())
            .create()
            .map_err(|source| KafkaError::Client {
                what: "producer".into(),
                brokers: self.brokers.clone(),
                source: Box::new(source),
            })
    }

    /// Creates the event topics that do not exist yet.
    pub async fn ensure_topics(&self) -> Result<Vec<String>, KafkaError> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().map_err(|source| KafkaError::Client {
                what: "admin client".into(),
                brokers: self.brokers.clone(),
                source: Box::new(source),
            })?;
        let names = self.topics().all();
        let new_topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, self.partitions, TopicReplication::Fixed(self.replication_factor)))
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|source| KafkaError::Client {
                what: "topic creation".into(),
                brokers: self.brokers.clone(),
                source: Box::new(source),
            })?;
        let mut created = Vec::new();
        for result in results {
            match result {
                Ok(topic) => created.push(topic),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(KafkaError::Topic { topic, code }),
            }
        }
        Ok(created)
    }
}

/// The topic of each stream category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub const CATEGORIES: [&'static str; 3] = [Tenant::CATEGORY, Document::CATEGORY, KnowledgeBase::CATEGORY];

    /// Kafka warns that `.` and `_` collide in metric names, so the
    /// category's underscores become dashes.
    pub fn for_category(&self, category: &str) -> String {
        format!("{}.{}", self.prefix, category.replace('_', "-"))
    }

    pub fn all(&self) -> Vec<String> {
        Self::CATEGORIES
            .iter()
            .map(|category| self.for_category(category))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka {what} for {brokers} failed: {source}")]
    Client {
        what: String,
        brokers: String,
        // boxed: librdkafka's error is large and most results are Ok
        #[source]
        source: Box<RdKafkaError>,
    },
    #[error("creating kafka topic {topic} failed: {code}")]
    Topic { topic: String, code: RDKafkaErrorCode },
    #[error("cannot start a kafka consumer thread: {0}")]
    Thread(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_has_a_topic_without_underscores() {
        let topics = KafkaSettings::new("127.0.0.1:9092").topics();
        assert_eq!(
            topics.all(),
            vec![
                "neurostash.events.tenant".to_string(),
                "neurostash.events.document".to_string(),
                "neurostash.events.knowledge-base".to_string(),
            ]
        );
    }
}
