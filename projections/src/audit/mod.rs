//! The audit log: who did what, when, with which key — one record per event
//! of the log, kept as a tamper-evident hash chain (the `audit_log` table of
//! `migrations/*/0004_audit.up.sql`).
//!
//! [`AuditProjection`] writes it from the log, [`AuditLog`] reads it and
//! [`AuditLog::verify`] checks it. Each record carries a dense sequence
//! number, the event's envelope (never its data: only the SHA-256 of the
//! data, so the record commits to the content without copying what may be
//! sensitive), the hash of the record before it and its own hash over all
//! of that (see [`chain`]). Modifying a record breaks its hash; deleting or
//! inserting one breaks the sequence or the link of the record after it.
//! Someone able to rewrite the table can recompute a whole chain, so verify
//! also holds the records against the event log itself.
//!
//! Records follow log order and every value comes from the event, so a
//! replay from the start of the log rebuilds an identical chain.

pub mod chain;
mod verify;

use actors::db::Database;
use actors::store::RecordedEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::tenant::TenantEvent;
use domain::{AnyEvent, ApiKeyId, LogPosition, StreamId, TenantId};
use uuid::Uuid;

pub use chain::{Digest, GENESIS_HASH};
pub use verify::{Finding, VerifyReport, MAX_LISTED_FINDINGS};

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{self, fetch_all, Param, Row, Transaction};

/// The projection's name: keys its checkpoint and its write lock.
pub const AUDIT_PROJECTION: &str = "audit";

/// The most records one [`AuditLog::list`] returns.
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {action} failed: {source}")]
    Database {
        /// What was being done, with the ids involved.
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("audit record seq {seq} is corrupt: {reason}")]
    Corrupt { seq: i64, reason: String },
    #[error("audit log could not read the event log: {0}")]
    Store(#[source] actors::store::StoreError),
}

/// One record of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1, 2, 3, … in log order, without gaps.
    pub seq: i64,
    pub event_id: Uuid,
    pub log_position: LogPosition,
    pub stream_id: StreamId,
    pub stream_version: i64,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    /// The tenant on whose behalf the event was recorded.
    pub tenant_id: Option<TenantId>,
    /// The API key that issued the command; `None` for the system itself.
    pub actor_key_id: Option<ApiKeyId>,
    pub correlation_id: Uuid,
    /// SHA-256 of the event's data in canonical JSON ([`chain::data_sha256`]).
    pub data_sha256: Digest,
    /// The previous record's `hash`; [`GENESIS_HASH`] for seq 1.
    pub prev_hash: Digest,
    /// [`chain::record_hash`] of this record.
    pub hash: Digest,
}

impl AuditRecord {
    /// The record for `event` at `seq`, chained to `prev_hash`.
    pub fn for_event(seq: i64, event: &RecordedEvent, prev_hash: Digest) -> AuditRecord {
        let mut record = AuditRecord {
            seq,
            event_id: event.event_id,
            log_position: event.log_position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            // the precision both backends keep, so that the hash computed now
            // is the one recomputed from the stored row
            recorded_at: truncate_to_micros(event.recorded_at),
            tenant_id: event.metadata.tenant_id,
            actor_key_id: event.metadata.actor_key_id.clone(),
            correlation_id: event.metadata.correlation_id,
            data_sha256: chain::data_sha256(&event.payload),
            prev_hash,
            hash: GENESIS_HASH,
        };
        record.hash = chain::record_hash(&record);
        record
    }

    /// Whether `hash` is the hash of this record's content.
    pub fn hash_matches(&self) -> bool {
        chain::record_hash(self) == self.hash
    }
}

fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// Which records [`AuditLog::list`] returns, in seq order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub tenant_id: Option<TenantId>,
    pub event_type: Option<String>,
    /// Records recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Records after this seq: the cursor of the previous page (0 for the first).
    pub after_seq: i64,
    /// At most this many, capped at [`MAX_PAGE`]; 0 reads as 1.
    pub limit: usize,
}

/// Writes the audit log from the log; see the module documentation.
pub struct AuditProjection {
    db: Database,
}

impl AuditProjection {
    pub fn new(db: Database) -> Self {
        AuditProjection { db }
    }
}

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &str {
        AUDIT_PROJECTION
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        sql::load_checkpoint(&self.db, AUDIT_PROJECTION)
            .await
            .map_err(database_error)
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        // The lock makes this the only writer of the chain until commit, so
        // the head read here stays the head and seqs stay dense.
        let mut transaction = Transaction::begin(&self.db, AUDIT_PROJECTION)
            .await
            .map_err(database_error)?;
        let checkpoint = sql::load_checkpoint_in(&mut transaction, AUDIT_PROJECTION)
            .await
            .map_err(database_error)?;
        let (mut head_seq, mut head_hash) = chain_head(&mut transaction, last).await?;
        let mut recorded_here = std::collections::HashSet::new();
        let mut skipped = 0usize;
        for event in events {
            if event.log_position <= checkpoint
                || recorded_here.contains(&event.event_id)
                || is_recorded(&mut transaction, event.event_id)
                    .await
                    .map_err(database_error)?
            {
                skipped += 1;
                continue;
            }
            let record = AuditRecord::for_event(head_seq + 1, event, head_hash);
            insert(&mut transaction, &record).await.map_err(database_error)?;
            acknowledge_erasure(&mut transaction, event).await?;
            recorded_here.insert(event.event_id);
            head_seq = record.seq;
            head_hash = record.hash;
        }
        sql::store_checkpoint(&mut transaction, AUDIT_PROJECTION, last.log_position, last.recorded_at)
            .await
            .map_err(database_error)?;
        transaction.commit().await.map_err(database_error)?;
        if skipped > 0 {
            tracing::debug!(
                projection = AUDIT_PROJECTION,
                skipped,
                until = %last.log_position,
                "skipped events already recorded"
            );
        }
        Ok(())
    }
}

/// The audit log keeps an erased tenant's records, by design: removing them
/// would break the hash chain every later record depends on, and they hold
/// no plaintext (the event data is only hashed, its sealed fields can no
/// longer be opened by anyone).
async fn acknowledge_erasure(transaction: &mut Transaction, event: &RecordedEvent) -> Result<(), ProjectionError> {
    if event.event_type != "TenantErased" {
        return Ok(());
    }
    let Ok(AnyEvent::Tenant(TenantEvent::TenantErased { erasure_id })) = AnyEvent::decode(
        event.stream_id.category(),
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    ) else {
        return Ok(());
    };
    let Some(tenant) = event
        .stream_id
        .as_str()
        .strip_prefix("tenant-")
        .and_then(|id| id.parse().ok())
    else {
        return Ok(());
    };
    transaction
        .execute(
            crate::erasure::ACKNOWLEDGE_SQL,
            &crate::erasure::acknowledge_params(
                erasure_id,
                TenantId(tenant),
                "audit",
                event.recorded_at,
                "records kept for the hash chain; they hold hashes only and their sealed fields cannot be opened",
            ),
        )
        .await
        .map_err(database_error)?;
    Ok(())
}

fn database_error(source: sqlx::Error) -> ProjectionError {
    ProjectionError::Database {
        projection: AUDIT_PROJECTION.to_owned(),
        source,
    }
}

/// The seq and hash of the last record; (0, genesis) for an empty log.
async fn chain_head(
    transaction: &mut Transaction,
    batch_end: &RecordedEvent,
) -> Result<(i64, Digest), ProjectionError> {
    let row = transaction
        .fetch_optional("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[])
        .await
        .map_err(database_error)?;
    let Some(row) = row else {
        return Ok((0, GENESIS_HASH));
    };
    let seq = row.bookkeeping_int("seq").map_err(database_error)?;
    let hash = row
        .text("hash")
        .and_then(|hash| digest("hash", hash))
        .map_err(|reason| ProjectionError::Event {
            projection: AUDIT_PROJECTION.to_owned(),
            event_id: batch_end.event_id,
            position: batch_end.log_position,
            reason: format!("cannot chain onto audit record seq {seq}: {reason}"),
        })?;
    Ok((seq, hash))
}

async fn is_recorded(transaction: &mut Transaction, event_id: Uuid) -> Result<bool, sqlx::Error> {
    let row = transaction
        .fetch_optional(
            "SELECT seq FROM audit_log WHERE event_id = $1",
            &[Param::Uuid(event_id)],
        )
        .await?;
    Ok(row.is_some())
}

async fn insert(transaction: &mut Transaction, record: &AuditRecord) -> Result<(), sqlx::Error> {
    transaction
        .execute(
            "INSERT INTO audit_log (seq, event_id, log_commit, log_position, stream_id, stream_version, \
             event_type, recorded_at, tenant_id, actor_key_id, correlation_id, data_sha256, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                Param::Int(record.seq),
                Param::Uuid(record.event_id),
                Param::Int(record.log_position.commit),
                Param::Int(record.log_position.position),
                Param::text(record.stream_id.as_str()),
                Param::Int(record.stream_version),
                Param::text(record.event_type.as_str()),
                Param::Time(record.recorded_at),
                Param::OptUuid(record.tenant_id.map(|tenant| tenant.0)),
                Param::OptText(record.actor_key_id.as_ref().map(|key| key.0.clone())),
                Param::Uuid(record.correlation_id),
                Param::Text(hex::encode(record.data_sha256)),
                Param::Text(hex::encode(record.prev_hash)),
                Param::Text(hex::encode(record.hash)),
            ],
        )
        .await?;
    Ok(())
}

const RECORD_COLUMNS: &str = "SELECT seq, event_id, log_commit, log_position, stream_id, stream_version, \
     event_type, recorded_at, tenant_id, actor_key_id, correlation_id, data_sha256, prev_hash, hash FROM audit_log";

/// Reads and verifies the audit log. Cheap to clone: it shares the pool.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Database,
}

impl AuditLog {
    pub fn new(db: Database) -> Self {
        AuditLog { db }
    }

    /// Records matching `filter`, in seq order; the last one's seq is the
    /// cursor of the next page.
    pub async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
        let mut sql = format!("{RECORD_COLUMNS} WHERE seq > $1");
        let mut params = vec![Param::Int(filter.after_seq)];
        if let Some(tenant) = filter.tenant_id {
            params.push(Param::Uuid(tenant.0));
            sql.push_str(&format!(" AND tenant_id = ${}", params.len()));
        }
        if let Some(event_type) = &filter.event_type {
            params.push(Param::text(event_type.as_str()));
            sql.push_str(&format!(" AND event_type = ${}", params.len()));
        }
        if let Some(since) = filter.since {
            params.push(Param::Time(since));
            sql.push_str(&format!(" AND recorded_at >= ${}", params.len()));
        }
        let limit = filter.limit.clamp(1, MAX_PAGE);
        params.push(Param::Int(limit as i64));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));

        let rows = fetch_all(&self.db, &sql, &params)
            .await
            .map_err(|source| AuditError::Database {
                action: "list".to_owned(),
                source,
            })?;
        rows.iter().map(decode_record).collect()
    }

    /// The checkpoint of the audit projection: everything in the log up to
    /// it has its record.
    pub async fn checkpoint(&self) -> Result<LogPosition, AuditError> {
        sql::load_checkpoint(&self.db, AUDIT_PROJECTION)
            .await
            .map_err(|source| AuditError::Database {
                action: "checkpoint".to_owned(),
                source,
            })
    }

    /// Deletes every record and the checkpoint in one transaction, so that
    /// the projection rebuilds the chain from the start of the log. A runner
    /// already running keeps its position in memory: stop it first.
    pub async fn reset(&self) -> Result<(), AuditError> {
        let failed = |source| AuditError::Database {
            action: "reset".to_owned(),
            source,
        };
        let mut transaction = Transaction::begin(&self.db, AUDIT_PROJECTION).await.map_err(failed)?;
        transaction
            .execute("DELETE FROM audit_log", &[])
            .await
            .map_err(failed)?;
        sql::delete_checkpoint(&mut transaction, AUDIT_PROJECTION)
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)
    }
}

/// A 32-byte digest from its lowercase hex column.
fn digest(column: &str, text: Option<String>) -> Result<Digest, String> {
    let text = text.ok_or_else(|| format!("{column} is null"))?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&text, &mut digest)
        .map_err(|error| format!("{column} {text:?} is not 32 bytes of hex: {error}"))?;
    Ok(digest)
}

fn decode_record(row: &Row) -> Result<AuditRecord, AuditError> {
    let seq = row.int("seq").ok().flatten().ok_or_else(|| AuditError::Corrupt {
        seq: 0,
        reason: "seq cannot be read".to_owned(),
    })?;
    decode_fields(row, seq).map_err(|reason| AuditError::Corrupt { seq, reason })
}

fn decode_fields(row: &Row, seq: i64) -> Result<AuditRecord, String> {
    fn required<T>(column: &str, value: Result<Option<T>, String>) -> Result<T, String> {
        value
            .map_err(|reason| format!("{column}: {reason}"))?
            .ok_or_else(|| format!("{column} is null"))
    }
    fn optional<T>(column: &str, value: Result<Option<T>, String>) -> Result<Option<T>, String> {
        value.map_err(|reason| format!("{column}: {reason}"))
    }
    Ok(AuditRecord {
        seq,
        event_id: required("event_id", row.uuid("event_id"))?,
        log_position: LogPosition {
            commit: required("log_commit", row.int("log_commit"))?,
            position: required("log_position", row.int("log_position"))?,
        },
        stream_id: StreamId(required("stream_id", row.text("stream_id"))?),
        stream_version: required("stream_version", row.int("stream_version"))?,
        event_type: required("event_type", row.text("event_type"))?,
        recorded_at: required("recorded_at", row.time("recorded_at"))?,
        tenant_id: optional("tenant_id", row.uuid("tenant_id"))?.map(TenantId),
        actor_key_id: optional("actor_key_id", row.text("actor_key_id"))?.map(ApiKeyId),
        correlation_id: required("correlation_id", row.uuid("correlation_id"))?,
        data_sha256: digest("data_sha256", row.text("data_sha256")?)?,
        prev_hash: digest("prev_hash", row.text("prev_hash")?)?,
        hash: digest("hash", row.text("hash")?)?,
    })
}
