//! NeuroStash on Kafka. The event store stays the source of truth; this
//! crate carries its events onto Kafka for the consumers that scale out:
//! the CloudEvents message format, the JSON Schemas of every event type
//! (published so outside consumers can validate what they read), topic
//! administration, and the relay that drains the store's transactional
//! outbox into the topics.

pub mod cloudevent;
pub mod consume;
pub mod kafka;
pub mod relay;
pub mod schemas;
pub mod tail;
pub mod testing;

pub use cloudevent::CloudEvent;
pub use consume::{spawn_consumer, ConsumerHandle, ConsumerOptions, ConsumerProgress};
pub use kafka::{KafkaError, KafkaSettings, Topics};
pub use relay::{OutboxRelay, RelayHandle, RelayOptions, RelayProgress};
