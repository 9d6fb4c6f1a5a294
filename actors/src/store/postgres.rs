//! The Postgres event store.
//!
//! Positions come from an identity column and are handed out at insert,
//! before commit, so concurrent appenders make them visible out of order.
//! Each row also records its transaction id (`commit_id`, an `xid8`); the
//! log is ordered by `(commit_id, position)` and a reader only sees
//! transactions below the oldest one still running (`pg_snapshot_xmin`).
//! Every transaction a later read could still reveal then sorts after what
//! this read returned, so each read is a prefix of every later one.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{ApiKeyId, EventMetadata, LogPosition, StreamId, TenantId};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{AppendOutcome, EventStore, ExpectedVersion, NewEvent, Outbox, RecordedEvent, StoreError};

const SELECT_COLUMNS: &str = "SELECT position, commit_id::text::bigint AS commit, stream_id, stream_version, \
     event_id, event_type, schema_version, data, tenant_id, actor_key_id, correlation_id, causation_id, \
     recorded_at FROM events";

/// Postgres binds at most 65535 parameters per statement and a row takes 10.
const ROWS_PER_INSERT: usize = 1_000;

/// An `Any` append that loses a race to another writer simply tries again
/// on top of it; this bounds how often. Each loss means another writer's
/// append committed, so a loser retries only as often as writers got ahead
/// of it: the bound must exceed the writers one stream sees at once (ten was
/// not enough for sixteen).
const ANY_APPEND_ATTEMPTS: usize = 64;

/// The unique constraint that guards the per-stream version, named in the
/// `0001_events` migration.
const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";

pub struct PostgresEventStore {
    pool: PgPool,
    appended: Arc<Notify>,
}

impl PostgresEventStore {
    pub fn new(pool: PgPool) -> Self {
        PostgresEventStore {
            pool,
            appended: Arc::new(Notify::new()),
        }
    }

    async fn current_version(&self, stream_id: &StreamId) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(stream_version), 0)::bigint FROM events WHERE stream_id = $1")
            .bind(stream_id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)
    }

    async fn try_append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, AttemptError> {
        let schema_versions = events
            .iter()
            .map(|event| {
                i16::try_from(event.schema_version).map_err(|_| {
                    AttemptError::Store(StoreError::Corrupt {
                        event_id: event.event_id.to_string(),
                        reason: format!("schema version {} does not fit a smallint", event.schema_version),
                    })
                })
            })
            .collect::<Result<Vec<i16>, _>>()?;

        // Read committed is enough: a concurrent appender at the same
        // version blocks on the unique index until we finish, then fails.
        let mut transaction = self.pool.begin().await?;

        let head: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT stream_version, commit_id::text::bigint, position FROM events \
             WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream_id.as_str())
        .fetch_optional(&mut *transaction)
        .await?;
        let (current_version, head_commit, head_position) = head.unwrap_or((0, 0, 0));

        if let ExpectedVersion::Exactly(expected_version) = expected {
            if expected_version != current_version {
                return Err(AttemptError::Store(StoreError::Conflict {
                    stream_id: stream_id.clone(),
                    expected: expected_version,
                    actual: current_version,
                }));
            }
        }
        if events.is_empty() {
            return Ok(AppendOutcome {
                stream_version: current_version,
                log_position: LogPosition {
                    commit: head_commit,
                    position: head_position,
                },
            });
        }

        let mut last_position = LogPosition::START;
        let mut next_version = current_version + 1;
        for (chunk, chunk_schema_versions) in events
            .chunks(ROWS_PER_INSERT)
            .zip(schema_versions.chunks(ROWS_PER_INSERT))
        {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, \
                 tenant_id, actor_key_id, correlation_id, causation_id) ",
            );
            let rows = chunk.iter().zip(chunk_schema_versions).zip(next_version..);
            insert.push_values(rows, |mut row, ((event, schema_version), version)| {
                row.push_bind(stream_id.as_str())
                    .push_bind(version)
                    .push_bind(event.event_id)
                    .push_bind(event.event_type.as_str())
                    .push_bind(*schema_version)
                    .push_bind(Json(&event.data))
                    .push_bind(event.metadata.tenant_id.map(|tenant| tenant.0))
                    .push_bind(event.metadata.actor_key_id.as_ref().map(|key| key.0.as_str()))
                    .push_bind(event.metadata.correlation_id)
                    .push_bind(event.metadata.causation_id);
            });
            insert.push(" RETURNING commit_id::text::bigint, position");
            let inserted: Vec<(i64, i64)> = insert.build_query_as().fetch_all(&mut *transaction).await?;
            for (commit, position) in inserted {
                last_position = last_position.max(LogPosition { commit, position });
            }
            next_version += chunk.len() as i64;
        }
        // The outbox rows commit with the events or not at all.
        sqlx::query(
            "INSERT INTO outbox (position) SELECT position FROM events WHERE stream_id = $1 AND stream_version > $2",
        )
        .bind(stream_id.as_str())
        .bind(current_version)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;

        Ok(AppendOutcome {
            stream_version: next_version - 1,
            log_position: last_position,
        })
    }
}

/// Why one append attempt failed: lost a race on the stream's version
/// (worth re-reading), or anything else.
enum AttemptError {
    VersionTaken,
    Store(StoreError),
}

impl From<sqlx::Error> for AttemptError {
    fn from(error: sqlx::Error) -> Self {
        let lost_race = matches!(
            &error,
            sqlx::Error::Database(database_error)
                if database_error.is_unique_violation()
                    && database_error.constraint() == Some(STREAM_VERSION_CONSTRAINT)
        );
        if lost_race {
            AttemptError::VersionTaken
        } else {
            AttemptError::Store(StoreError::from_sqlx(error))
        }
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_append(stream_id, expected, &events).await {
                Ok(outcome) => {
                    if !events.is_empty() {
                        self.appended.notify_waiters();
                    }
                    return Ok(outcome);
                }
                Err(AttemptError::Store(error)) => return Err(error),
                Err(AttemptError::VersionTaken) => {
                    // The winner has committed by now (we were blocked on
                    // its index entry until it did), so this sees it.
                    let actual = self.current_version(stream_id).await?;
                    let expected_version = match expected {
                        ExpectedVersion::Exactly(version) => version,
                        ExpectedVersion::Any if attempts < ANY_APPEND_ATTEMPTS => continue,
                        ExpectedVersion::Any => actual,
                    };
                    tracing::debug!(%stream_id, expected_version, actual, "append lost a race on the stream version");
                    return Err(StoreError::Conflict {
                        stream_id: stream_id.clone(),
                        expected: expected_version,
                        actual,
                    });
                }
            }
        }
    }

    async fn read_stream(&self, stream_id: &StreamId, after_version: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_COLUMNS} WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version"
        ))
        .bind(stream_id.as_str())
        .bind(after_version)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_log(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The statement's own snapshot decides both what is visible and the
        // horizon: every transaction below its xmin has finished, so none
        // can still appear below what this read returns.
        let rows = sqlx::query(&format!(
            "{SELECT_COLUMNS} \
             WHERE (commit_id, position) > ($1::bigint::text::xid8, $2) \
               AND commit_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY commit_id, position LIMIT $3"
        ))
        .bind(after.commit)
        .bind(after.position)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(decode_row).collect()
    }

    async fn log_head(&self) -> Result<LogPosition, StoreError> {
        let head: Option<(i64, i64)> = sqlx::query_as(
            "SELECT commit_id::text::bigint, position FROM events \
             WHERE commit_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY commit_id DESC, position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(head.map_or(LogPosition::START, |(commit, position)| LogPosition {
            commit,
            position,
        }))
    }

    fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }
}

#[async_trait]
impl Outbox for PostgresEventStore {
    async fn pending(&self, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        // The smallest positions first: a stream's versions have increasing
        // positions, so any such prefix holds each stream's oldest events.
        let rows = sqlx::query(&format!(
            "{SELECT_COLUMNS} WHERE position IN (SELECT position FROM outbox ORDER BY position LIMIT $1) \
             ORDER BY position"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(decode_row).collect()
    }

    async fn mark_published(&self, positions: &[i64]) -> Result<u64, StoreError> {
        if positions.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query("DELETE FROM outbox WHERE position = ANY($1)")
            .bind(positions)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn backlog(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)
    }

    async fn acquire_relay_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        lease_for: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = now + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX);
        let granted: Option<String> = sqlx::query_scalar(
            "INSERT INTO outbox_relay_lease (id, holder, expires_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE outbox_relay_lease.holder = excluded.holder OR outbox_relay_lease.expires_at < $3 \
             RETURNING holder",
        )
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(granted.is_some())
    }

    async fn release_relay_lease(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox_relay_lease WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }
}

fn decode_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let event_id: Uuid = row.try_get("event_id").map_err(StoreError::from_sqlx)?;
    let schema_version: i16 = row.try_get("schema_version").map_err(StoreError::from_sqlx)?;
    let schema_version = u16::try_from(schema_version).map_err(|_| StoreError::Corrupt {
        event_id: event_id.to_string(),
        reason: format!("schema version {schema_version} is negative"),
    })?;
    let Json(payload): Json<Value> = row.try_get("data").map_err(StoreError::from_sqlx)?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(StoreError::from_sqlx)?;
    let tenant_id: Option<Uuid> = row.try_get("tenant_id").map_err(StoreError::from_sqlx)?;
    let actor_key_id: Option<String> = row.try_get("actor_key_id").map_err(StoreError::from_sqlx)?;

    Ok(RecordedEvent {
        event_id,
        stream_id: StreamId(row.try_get("stream_id").map_err(StoreError::from_sqlx)?),
        stream_version: row.try_get("stream_version").map_err(StoreError::from_sqlx)?,
        log_position: LogPosition {
            commit: row.try_get("commit").map_err(StoreError::from_sqlx)?,
            position: row.try_get("position").map_err(StoreError::from_sqlx)?,
        },
        schema_version,
        event_type: row.try_get("event_type").map_err(StoreError::from_sqlx)?,
        recorded_at,
        metadata: EventMetadata {
            tenant_id: tenant_id.map(TenantId),
            actor_key_id: actor_key_id.map(ApiKeyId),
            correlation_id: row.try_get("correlation_id").map_err(StoreError::from_sqlx)?,
            causation_id: row.try_get("causation_id").map_err(StoreError::from_sqlx)?,
        },
        payload,
    })
}
