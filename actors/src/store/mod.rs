//! The event-store port: append with optimistic concurrency per stream, read
//! a stream, read the global log in order.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use domain::{EventEnvelope, EventMetadata, LogPosition, StreamId};
use serde_json::Value;
use uuid::Uuid;

pub use postgres::PostgresEventStore;
pub use sqlite::SqliteEventStore;

/// An event about to be appended; the store gives it a version and a position.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    pub data: Value,
    pub metadata: EventMetadata,
}

/// An event as stored: the envelope around the event's JSON data.
pub type RecordedEvent = EventEnvelope<Value>;

/// What the appender believes the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds (no concurrency check).
    Any,
    /// The stream must be at exactly this version; 0 means "no stream yet".
    Exactly(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Version of the last appended event (the stream's new version).
    pub stream_version: i64,
    /// Log position of the last appended event; a reader that has reached it
    /// has seen the whole append.
    pub log_position: LogPosition,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    Conflict {
        stream_id: StreamId,
        expected: i64,
        actual: i64,
    },
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("event store query failed: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored event {event_id} is corrupt: {reason}")]
    Corrupt { event_id: String, reason: String },
}

impl StoreError {
    /// Classifies a driver error: connection-level failures are worth a retry
    /// by the caller (503), everything else is a bug or bad data.
    pub fn from_sqlx(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            other => StoreError::Database(other),
        }
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` atomically. Of two appends made at the same expected
    /// version exactly one succeeds; the other gets [`StoreError::Conflict`].
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// The events of one stream with a version above `after_version`, in order.
    async fn read_stream(&self, stream_id: &StreamId, after_version: i64) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of the global log strictly after `after`, in log
    /// order. Every read returns a prefix of what any later read returns: an
    /// event is never delivered after an event that follows it in the log.
    async fn read_log(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last event a `read_log` would return now.
    async fn log_head(&self) -> Result<LogPosition, StoreError>;

    /// Fires after every append made through this handle, so in-process
    /// consumers can wake without polling; appends by other processes are
    /// seen by polling.
    fn appended(&self) -> std::sync::Arc<tokio::sync::Notify>;
}

/// The transactional outbox of the event store: every append leaves a row
/// per event, in the same transaction, until a relay has published the
/// event and marked it.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` unpublished events, oldest first; the events of one
    /// stream always come in version order. A transaction that commits
    /// late is never skipped: its rows are simply still there next time.
    async fn pending(&self, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Forgets events the broker has acknowledged. Marking an event twice,
    /// or one that was never pending, is harmless.
    async fn mark_published(&self, positions: &[i64]) -> Result<u64, StoreError>;

    /// How many events wait to be published.
    async fn backlog(&self) -> Result<i64, StoreError>;

    /// Takes or renews the relay lease for `holder` until `now + lease_for`;
    /// `false` while another holder's lease is still running. One relay at a
    /// time keeps each stream's events in order on the topic.
    async fn acquire_relay_lease(
        &self,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        lease_for: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Gives the lease up early (at shutdown) so another relay needs not
    /// wait for it to expire.
    async fn release_relay_lease(&self, holder: &str) -> Result<(), StoreError>;
}
