//! The embedded event store: one SQLite file.
//!
//! SQLite has a single writer at a time, so positions become visible in
//! the order they are handed out and the position doubles as the commit
//! order (`commit == position`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{ApiKeyId, EventMetadata, LogPosition, StreamId, TenantId};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{AppendOutcome, EventStore, ExpectedVersion, NewEvent, Outbox, RecordedEvent, StoreError};

const SELECT_COLUMNS: &str = "SELECT position, stream_id, stream_version, event_id, event_type, schema_version, \
     data, tenant_id, actor_key_id, correlation_id, causation_id, recorded_at FROM events";

/// SQLite binds at most 32766 parameters per statement and a row takes 10.
const ROWS_PER_INSERT: usize = 1_000;

/// An `Any` append that loses a race to another writer simply tries again
/// on top of it; this bounds how often. Each loss means another writer's
/// append committed, so a loser retries only as often as writers got ahead
/// of it: the bound must exceed the writers one stream sees at once (ten was
/// not enough for sixteen).
const ANY_APPEND_ATTEMPTS: usize = 64;

pub struct SqliteEventStore {
    pool: SqlitePool,
    appended: Arc<Notify>,
    /// Appends through this handle take turns here before they ask SQLite
    /// for its write lock. Between connections SQLite settles contention by
    /// sleeping and retrying until the busy timeout, which is unfair: with a
    /// few dozen concurrent appenders, appends to unrelated streams failed
    /// with "database is locked". SQLite admits one writer at a time anyway,
    /// so a fair in-process queue costs no throughput; the busy timeout
    /// still covers writers outside this handle (projections, other
    /// processes).
    write_turn: tokio::sync::Mutex<()>,
}

impl SqliteEventStore {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteEventStore {
            pool,
            appended: Arc::new(Notify::new()),
            write_turn: tokio::sync::Mutex::new(()),
        }
    }

    async fn current_version(&self, stream_id: &StreamId) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?")
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
        // IMMEDIATE takes the write lock up front: two deferred transactions
        // that both read and then write would deadlock upgrading their read
        // locks, and one of them would fail with SQLITE_BUSY at once.
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;

        let head: Option<(i64, i64)> = sqlx::query_as(
            "SELECT stream_version, position FROM events WHERE stream_id = ? ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream_id.as_str())
        .fetch_optional(&mut *transaction)
        .await?;
        let (current_version, head_position) = head.unwrap_or((0, 0));

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
                    commit: head_position,
                    position: head_position,
                },
            });
        }

        let mut last_position = head_position;
        let mut next_version = current_version + 1;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, \
                 tenant_id, actor_key_id, correlation_id, causation_id) ",
            );
            let first_version = next_version;
            insert.push_values(chunk.iter().zip(first_version..), |mut row, (event, version)| {
                row.push_bind(stream_id.as_str())
                    .push_bind(version)
                    .push_bind(event.event_id.to_string())
                    .push_bind(event.event_type.as_str())
                    .push_bind(i64::from(event.schema_version))
                    .push_bind(event.data.to_string())
                    .push_bind(event.metadata.tenant_id.map(|tenant| tenant.0.to_string()))
                    .push_bind(event.metadata.actor_key_id.as_ref().map(|key| key.0.as_str()))
                    .push_bind(event.metadata.correlation_id.to_string())
                    .push_bind(event.metadata.causation_id.map(|id| id.to_string()));
            });
            insert.push(" RETURNING position");
            let positions: Vec<i64> = insert.build_query_scalar().fetch_all(&mut *transaction).await?;
            last_position = positions.into_iter().max().unwrap_or(last_position);
            next_version += chunk.len() as i64;
        }
        // The outbox rows commit with the events or not at all.
        sqlx::query(
            "INSERT INTO outbox (position) SELECT position FROM events WHERE stream_id = ? AND stream_version > ?",
        )
        .bind(stream_id.as_str())
        .bind(current_version)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;

        Ok(AppendOutcome {
            stream_version: next_version - 1,
            log_position: LogPosition {
                commit: last_position,
                position: last_position,
            },
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
        if is_stream_version_violation(&error) {
            AttemptError::VersionTaken
        } else {
            AttemptError::Store(StoreError::from_sqlx(error))
        }
    }
}

/// A writer outside this adapter (without `BEGIN IMMEDIATE`) can still take
/// a version between our read and our insert; the unique constraint is the
/// final guard. SQLite names the columns, not the constraint.
fn is_stream_version_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database_error) => {
            database_error.is_unique_violation() && database_error.message().contains("events.stream_version")
        }
        _ => false,
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = {
                let _turn = self.write_turn.lock().await;
                self.try_append(stream_id, expected, &events).await
            };
            match attempt {
                Ok(outcome) => {
                    if !events.is_empty() {
                        self.appended.notify_waiters();
                    }
                    return Ok(outcome);
                }
                Err(AttemptError::Store(error)) => return Err(error),
                Err(AttemptError::VersionTaken) => {
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
            "{SELECT_COLUMNS} WHERE stream_id = ? AND stream_version > ? ORDER BY stream_version"
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
        let rows = sqlx::query(&format!(
            "{SELECT_COLUMNS} WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(after.position)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(decode_row).collect()
    }

    async fn log_head(&self) -> Result<LogPosition, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(head.map_or(LogPosition::START, |position| LogPosition {
            commit: position,
            position,
        }))
    }

    fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }
}

#[async_trait]
impl Outbox for SqliteEventStore {
    async fn pending(&self, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_COLUMNS} WHERE position IN (SELECT position FROM outbox ORDER BY position LIMIT ?) \
             ORDER BY position"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(decode_row).collect()
    }

    async fn mark_published(&self, positions: &[i64]) -> Result<u64, StoreError> {
        let mut marked = 0;
        // SQLite binds at most 32766 parameters per statement.
        for chunk in positions.chunks(ROWS_PER_INSERT) {
            let mut delete = QueryBuilder::<Sqlite>::new("DELETE FROM outbox WHERE position IN (");
            let mut separated = delete.separated(", ");
            for position in chunk {
                separated.push_bind(*position);
            }
            delete.push(")");
            let _turn = self.write_turn.lock().await;
            let done = delete
                .build()
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            marked += done.rows_affected();
        }
        Ok(marked)
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
        let _turn = self.write_turn.lock().await;
        // RFC 3339 UTC with a fixed precision compares correctly as text.
        let granted: Option<String> = sqlx::query_scalar(
            "INSERT INTO outbox_relay_lease (id, holder, expires_at) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE outbox_relay_lease.holder = excluded.holder OR outbox_relay_lease.expires_at < ?3 \
             RETURNING holder",
        )
        .bind(holder)
        .bind(lease_time(expires_at))
        .bind(lease_time(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(granted.is_some())
    }

    async fn release_relay_lease(&self, holder: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn.lock().await;
        sqlx::query("DELETE FROM outbox_relay_lease WHERE holder = ?")
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }
}

fn lease_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn decode_row(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let event_id_text: String = row.try_get("event_id").map_err(StoreError::from_sqlx)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        event_id: event_id_text.clone(),
        reason,
    };
    let uuid = |column: &str, text: &str| {
        Uuid::parse_str(text).map_err(|error| corrupt(format!("{column} {text:?} is not a uuid: {error}")))
    };
    let optional_uuid = |column: &str| -> Result<Option<Uuid>, StoreError> {
        let text: Option<String> = row.try_get(column).map_err(StoreError::from_sqlx)?;
        text.map(|text| uuid(column, &text)).transpose()
    };

    let event_id = uuid("event_id", &event_id_text)?;
    let position: i64 = row.try_get("position").map_err(StoreError::from_sqlx)?;
    let stream_id: String = row.try_get("stream_id").map_err(StoreError::from_sqlx)?;
    let stream_version: i64 = row.try_get("stream_version").map_err(StoreError::from_sqlx)?;
    let event_type: String = row.try_get("event_type").map_err(StoreError::from_sqlx)?;
    let schema_version: i64 = row.try_get("schema_version").map_err(StoreError::from_sqlx)?;
    let schema_version = u16::try_from(schema_version)
        .map_err(|_| corrupt(format!("schema version {schema_version} is out of range")))?;
    let data_text: String = row.try_get("data").map_err(StoreError::from_sqlx)?;
    let payload = serde_json::from_str(&data_text).map_err(|error| corrupt(format!("data is not json: {error}")))?;
    let actor_key_id: Option<String> = row.try_get("actor_key_id").map_err(StoreError::from_sqlx)?;
    let correlation_text: String = row.try_get("correlation_id").map_err(StoreError::from_sqlx)?;
    let recorded_text: String = row.try_get("recorded_at").map_err(StoreError::from_sqlx)?;
    let recorded_at = DateTime::parse_from_rfc3339(&recorded_text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| corrupt(format!("recorded_at {recorded_text:?} is not rfc 3339: {error}")))?;

    Ok(RecordedEvent {
        event_id,
        stream_id: StreamId(stream_id),
        stream_version,
        log_position: LogPosition {
            commit: position,
            position,
        },
        schema_version,
        event_type,
        recorded_at,
        metadata: EventMetadata {
            tenant_id: optional_uuid("tenant_id")?.map(TenantId),
            actor_key_id: actor_key_id.map(ApiKeyId),
            correlation_id: uuid("correlation_id", &correlation_text)?,
            causation_id: optional_uuid("causation_id")?,
        },
        payload,
    })
}
