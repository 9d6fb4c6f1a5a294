//! Projections fed by a partitioned broker (Kafka) instead of the store's
//! global log.
//!
//! What such a feed delivers differs from the log: each partition is in
//! order, but partitions interleave freely; an event can come again (a
//! relay that crashed before marking, a consumer that restarts); and when a
//! relay retried a failed event, a stream's later version can arrive before
//! an earlier one. A [`ConsumedProjection`] copes with all three: it skips
//! versions it has applied, fills a gap in a stream from the event store
//! (the source of truth) before applying what follows it, and records the
//! next offset of each partition in the same transaction as its effects.

use actors::store::RecordedEvent;
use async_trait::async_trait;

use crate::runtime::ProjectionError;

/// The next offset to read from one partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

#[async_trait]
pub trait ConsumedProjection: Send + Sync + 'static {
    /// Stable name; keys the stored offsets and the applied versions.
    fn name(&self) -> &str;

    /// The stored next offsets of these partitions; a partition never
    /// consumed is absent.
    async fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, ProjectionError>;

    /// Applies `events` (partition order, possibly repeated or with gaps)
    /// and stores `offsets` atomically with the effects.
    async fn apply_consumed(
        &self,
        events: &[RecordedEvent],
        offsets: &[PartitionOffset],
    ) -> Result<(), ProjectionError>;
}

/// Offsets of a consumer whose effects live elsewhere (the processor's go
/// through the actors): stored on their own, after the effects are handed
/// on.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    db: actors::db::Database,
    projection: String,
}

impl OffsetStore {
    pub fn new(db: actors::db::Database, projection: impl Into<String>) -> OffsetStore {
        OffsetStore {
            db,
            projection: projection.into(),
        }
    }

    pub async fn load(&self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, ProjectionError> {
        crate::sql::load_offsets(&self.db, &self.projection, partitions)
            .await
            .map_err(|source| self.database_error(source))
    }

    pub async fn save(&self, offsets: &[PartitionOffset]) -> Result<(), ProjectionError> {
        let mut transaction = crate::sql::Transaction::begin(&self.db, &self.projection)
            .await
            .map_err(|source| self.database_error(source))?;
        crate::sql::store_offsets(&mut transaction, &self.projection, offsets)
            .await
            .map_err(|source| self.database_error(source))?;
        transaction.commit().await.map_err(|source| self.database_error(source))
    }

    fn database_error(&self, source: sqlx::Error) -> ProjectionError {
        ProjectionError::Database {
            projection: self.projection.clone(),
            source,
        }
    }
}
