//! SQL shared by the projections that keep tables (the registry, the audit
//! log): values bound the way each migration stores them, one write
//! transaction type for both backends, rows of either backend, and the
//! checkpoint every projection commits with its writes.
//!
//! The SQL is written in Postgres syntax: the casts it needs for Postgres
//! enums (`$1::op_status`, `op_status::text`) are removed for SQLite, whose
//! migrations store those columns as checked TEXT.

use std::borrow::Cow;

use actors::db::Database;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::LogPosition;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Row as _, Sqlite};
use uuid::Uuid;

use crate::consumed::PartitionOffset;

/// A value bound to a statement. SQLite stores uuids as hyphenated TEXT and
/// times as RFC 3339 TEXT with six fractional digits, so that text order is
/// time order; Postgres gets native values.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Bool(bool),
    Uuid(Uuid),
    OptUuid(Option<Uuid>),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
}

impl Param {
    pub(crate) fn text(value: impl Into<String>) -> Param {
        Param::Text(value.into())
    }
}

/// Postgres keeps microseconds; writing SQLite's text at the same precision
/// makes both backends hold the same instant.
pub(crate) fn sqlite_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `sql` (Postgres syntax) for SQLite: every `::type` cast removed.
pub(crate) fn sqlite_dialect(sql: &str) -> Cow<'_, str> {
    if !sql.contains("::") {
        return Cow::Borrowed(sql);
    }
    let mut converted = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("::") {
        converted.push_str(&rest[..at]);
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
    }
    converted.push_str(rest);
    Cow::Owned(converted)
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn sqlite_query<'q>(sql: &'q str, params: &[Param]) -> SqliteQuery<'q> {
    params.iter().fold(sqlx::query(sql), |query, param| match param {
        Param::Text(value) => query.bind(value.clone()),
        Param::OptText(value) => query.bind(value.clone()),
        Param::Int(value) => query.bind(*value),
        Param::Bool(value) => query.bind(*value),
        Param::Uuid(value) => query.bind(value.hyphenated().to_string()),
        Param::OptUuid(value) => query.bind(value.map(|value| value.hyphenated().to_string())),
        Param::Time(value) => query.bind(sqlite_time(value)),
        Param::OptTime(value) => query.bind(value.as_ref().map(sqlite_time)),
    })
}

fn pg_query<'q>(sql: &'q str, params: &[Param]) -> PgQuery<'q> {
    params.iter().fold(sqlx::query(sql), |query, param| match param {
        Param::Text(value) => query.bind(value.clone()),
        Param::OptText(value) => query.bind(value.clone()),
        Param::Int(value) => query.bind(*value),
        Param::Bool(value) => query.bind(*value),
        Param::Uuid(value) => query.bind(*value),
        Param::OptUuid(value) => query.bind(*value),
        Param::Time(value) => query.bind(*value),
        Param::OptTime(value) => query.bind(*value),
    })
}

/// Runs a read on the pool, outside any transaction.
pub(crate) async fn fetch_all(db: &Database, sql: &str, params: &[Param]) -> Result<Vec<Row>, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => {
            let sql = sqlite_dialect(sql);
            let rows = sqlite_query(&sql, params).fetch_all(pool).await?;
            Ok(rows.into_iter().map(Row::Sqlite).collect())
        }
        Database::Postgres(pool) => {
            let rows = pg_query(sql, params).fetch_all(pool).await?;
            Ok(rows.into_iter().map(Row::Postgres).collect())
        }
    }
}

pub(crate) async fn fetch_optional(db: &Database, sql: &str, params: &[Param]) -> Result<Option<Row>, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => {
            let sql = sqlite_dialect(sql);
            Ok(sqlite_query(&sql, params).fetch_optional(pool).await?.map(Row::Sqlite))
        }
        Database::Postgres(pool) => Ok(pg_query(sql, params).fetch_optional(pool).await?.map(Row::Postgres)),
    }
}

/// Runs a statement on the pool, in a transaction of its own; returns the
/// number of rows it affected.
pub(crate) async fn execute(db: &Database, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => {
            let sql = sqlite_dialect(sql);
            Ok(sqlite_query(&sql, params).execute(pool).await?.rows_affected())
        }
        Database::Postgres(pool) => Ok(pg_query(sql, params).execute(pool).await?.rows_affected()),
    }
}

/// Runs statements that take no parameters (DDL), several per string.
pub(crate) async fn execute_script(db: &Database, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    match db {
        Database::Sqlite(pool) => pool.execute(sql).await.map(drop),
        Database::Postgres(pool) => pool.execute(sql).await.map(drop),
    }
}

/// One write transaction of a projection on either backend. Beginning it
/// excludes every other writer of the same projection until it ends, so that
/// two appliers (two processes, or a reset beside a runner) cannot interleave
/// their checks of what is applied with each other's writes.
pub(crate) enum Transaction {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Transaction {
    /// Begins a write transaction holding the lock of `projection`.
    pub(crate) async fn begin(db: &Database, projection: &str) -> Result<Transaction, sqlx::Error> {
        match db {
            // IMMEDIATE takes the write lock up front: a deferred transaction
            // that reads and then writes fails with SQLITE_BUSY when another
            // writer committed in between.
            Database::Sqlite(pool) => Ok(Transaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
            Database::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("projection:{projection}"))
                    .execute(&mut *transaction)
                    .await?;
                Ok(Transaction::Postgres(transaction))
            }
        }
    }

    /// Also takes the lock of `projection` (held until the transaction
    /// ends). SQLite's write lock already excludes every other writer.
    pub(crate) async fn lock(&mut self, projection: &str) -> Result<(), sqlx::Error> {
        if let Transaction::Postgres(transaction) = self {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("projection:{projection}"))
                .execute(&mut **transaction)
                .await?;
        }
        Ok(())
    }

    /// Runs a statement; returns the number of rows it affected.
    pub(crate) async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => {
                let sql = sqlite_dialect(sql);
                let result = sqlite_query(&sql, params).execute(&mut **transaction).await?;
                Ok(result.rows_affected())
            }
            Transaction::Postgres(transaction) => {
                let result = pg_query(sql, params).execute(&mut **transaction).await?;
                Ok(result.rows_affected())
            }
        }
    }

    pub(crate) async fn fetch_optional(&mut self, sql: &str, params: &[Param]) -> Result<Option<Row>, sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => {
                let sql = sqlite_dialect(sql);
                let row = sqlite_query(&sql, params).fetch_optional(&mut **transaction).await?;
                Ok(row.map(Row::Sqlite))
            }
            Transaction::Postgres(transaction) => {
                let row = pg_query(sql, params).fetch_optional(&mut **transaction).await?;
                Ok(row.map(Row::Postgres))
            }
        }
    }

    pub(crate) async fn fetch_all(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => {
                let sql = sqlite_dialect(sql);
                let rows = sqlite_query(&sql, params).fetch_all(&mut **transaction).await?;
                Ok(rows.into_iter().map(Row::Sqlite).collect())
            }
            Transaction::Postgres(transaction) => {
                let rows = pg_query(sql, params).fetch_all(&mut **transaction).await?;
                Ok(rows.into_iter().map(Row::Postgres).collect())
            }
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => transaction.commit().await,
            Transaction::Postgres(transaction) => transaction.commit().await,
        }
    }
}

/// A result row of either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    pub(crate) fn text(&self, column: &str) -> Result<Option<String>, String> {
        let value = match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        };
        value.map_err(|error| error.to_string())
    }

    pub(crate) fn int(&self, column: &str) -> Result<Option<i64>, String> {
        let value = match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        };
        value.map_err(|error| error.to_string())
    }

    /// SQLite keeps a boolean as the integer 0 or 1, which sqlx decodes.
    pub(crate) fn bool(&self, column: &str) -> Result<Option<bool>, String> {
        let value = match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        };
        value.map_err(|error| error.to_string())
    }

    /// A NOT NULL integer of the projection's own bookkeeping; failing to
    /// read it is a driver error, not a corrupt registry row.
    pub(crate) fn bookkeeping_int(&self, column: &str) -> Result<i64, sqlx::Error> {
        match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        }
    }

    pub(crate) fn uuid(&self, column: &str) -> Result<Option<Uuid>, String> {
        match self {
            Row::Sqlite(_) => self
                .text(column)?
                .map(|text| Uuid::parse_str(&text).map_err(|error| format!("{column} {text:?} is not a uuid: {error}")))
                .transpose(),
            Row::Postgres(row) => row.try_get(column).map_err(|error| error.to_string()),
        }
    }

    pub(crate) fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, String> {
        match self {
            Row::Sqlite(_) => self
                .text(column)?
                .map(|text| {
                    DateTime::parse_from_rfc3339(&text)
                        .map(|time| time.with_timezone(&Utc))
                        .map_err(|error| format!("{column} {text:?} is not an rfc 3339 time: {error}"))
                })
                .transpose(),
            Row::Postgres(row) => row.try_get(column).map_err(|error| error.to_string()),
        }
    }
}

const CHECKPOINT_QUERY: &str = "SELECT commit_pos, position FROM projection_checkpoints WHERE name = $1";

/// The checkpoint of `projection`: the position of the last event whose
/// effects are committed, [`LogPosition::START`] before the first batch.
pub(crate) async fn load_checkpoint(db: &Database, projection: &str) -> Result<LogPosition, sqlx::Error> {
    let row = fetch_optional(db, CHECKPOINT_QUERY, &[Param::text(projection)]).await?;
    decode_checkpoint(row)
}

/// [`load_checkpoint`] inside a write transaction, which sees the checkpoint
/// no other writer of the projection can move until it ends.
pub(crate) async fn load_checkpoint_in(
    transaction: &mut Transaction,
    projection: &str,
) -> Result<LogPosition, sqlx::Error> {
    let row = transaction
        .fetch_optional(CHECKPOINT_QUERY, &[Param::text(projection)])
        .await?;
    decode_checkpoint(row)
}

fn decode_checkpoint(row: Option<Row>) -> Result<LogPosition, sqlx::Error> {
    let Some(row) = row else {
        return Ok(LogPosition::START);
    };
    Ok(LogPosition {
        commit: row.bookkeeping_int("commit_pos")?,
        position: row.bookkeeping_int("position")?,
    })
}

/// Moves the checkpoint of `projection` forward to `position`; a redelivered
/// batch that ends before the checkpoint leaves it where it is.
pub(crate) async fn store_checkpoint(
    transaction: &mut Transaction,
    projection: &str,
    position: LogPosition,
    recorded_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    transaction
        .execute(
            "INSERT INTO projection_checkpoints (name, commit_pos, position, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET commit_pos = excluded.commit_pos, position = excluded.position, \
             updated_at = excluded.updated_at \
             WHERE (projection_checkpoints.commit_pos, projection_checkpoints.position) \
             < (excluded.commit_pos, excluded.position)",
            &[
                Param::text(projection),
                Param::Int(position.commit),
                Param::Int(position.position),
                Param::Time(recorded_at),
            ],
        )
        .await?;
    Ok(())
}

/// Forgets the checkpoint of `projection`, so that it rebuilds from the
/// start of the log.
pub(crate) async fn delete_checkpoint(transaction: &mut Transaction, projection: &str) -> Result<(), sqlx::Error> {
    transaction
        .execute(
            "DELETE FROM projection_checkpoints WHERE name = $1",
            &[Param::text(projection)],
        )
        .await?;
    Ok(())
}

/// The stored next offsets of `projection` for these partitions; a
/// partition it never consumed is absent.
pub(crate) async fn load_offsets(
    db: &Database,
    projection: &str,
    partitions: &[(String, i32)],
) -> Result<Vec<PartitionOffset>, sqlx::Error> {
    let mut found = Vec::new();
    for (topic, partition) in partitions {
        let row = fetch_optional(
            db,
            "SELECT next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2 AND partition = $3",
            &[
                Param::text(projection),
                Param::text(topic),
                Param::Int(i64::from(*partition)),
            ],
        )
        .await?;
        if let Some(row) = row {
            found.push(PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                next_offset: row.bookkeeping_int("next_offset")?,
            });
        }
    }
    Ok(found)
}

/// Moves each partition's next offset forward; a redelivered batch leaves
/// them where they are.
pub(crate) async fn store_offsets(
    transaction: &mut Transaction,
    projection: &str,
    offsets: &[PartitionOffset],
) -> Result<(), sqlx::Error> {
    for offset in offsets {
        transaction
            .execute(
                "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset \
                 WHERE projection_offsets.next_offset < excluded.next_offset",
                &[
                    Param::text(projection),
                    Param::text(&offset.topic),
                    Param::Int(i64::from(offset.partition)),
                    Param::Int(offset.next_offset),
                ],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_dialect_drops_postgres_casts_only() {
        assert_eq!(
            sqlite_dialect("SELECT role::text AS role FROM t WHERE s = $1::op_status AND x = ':a'"),
            "SELECT role AS role FROM t WHERE s = $1 AND x = ':a'"
        );
        assert!(matches!(sqlite_dialect("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn sqlite_times_sort_as_text_in_time_order() {
        let earlier = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.9Z").map(|time| time.with_timezone(&Utc));
        let later = DateTime::parse_from_rfc3339("2024-05-01T10:00:01.000001Z").map(|time| time.with_timezone(&Utc));
        let (earlier, later) = (earlier.expect("valid time"), later.expect("valid time"));
        assert_eq!(sqlite_time(&earlier), "2024-05-01T10:00:00.900000Z");
        assert!(sqlite_time(&earlier) < sqlite_time(&later));
    }
}
