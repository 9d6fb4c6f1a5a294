//! Drives projections over the global log.

use actors::store::RecordedEvent;
use async_trait::async_trait;
use domain::LogPosition;

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
}
