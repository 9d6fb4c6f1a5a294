//! The registry: the relational read model of tenants, API keys, documents
//! and knowledge bases (the tables of `migrations/*/0002_registry.up.sql`).
//!
//! [`RegistryProjection`] writes it from the log; [`Registry`] reads it.
//! Every timestamp written is the `recorded_at` of the event that wrote it,
//! so a replay from the start of the log reproduces identical rows, which
//! [`Registry::dump`] lets a test check.
//!
//! Both backends run the same SQL, written in Postgres syntax: the casts it
//! needs for Postgres enums (`$1::op_status`, `op_status::text`) are removed
//! for SQLite, whose migration stores those columns as checked TEXT. Values
//! are bound through [`Param`], which encodes uuids and times the way each
//! migration stores them.

mod apply;
mod read;

use std::borrow::Cow;

use actors::db::Database;
use actors::store::RecordedEvent;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::document::DocumentStatus;
use domain::tenant::Role;
use domain::{ApiKeyId, DocumentId, KnowledgeBaseId, LogPosition, TenantId};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Row as _, Sqlite};
use uuid::Uuid;

use crate::consumed::{ConsumedProjection, PartitionOffset};
use crate::runtime::{Projection, ProjectionError};

/// The projection's name: keys its checkpoint and its applied versions.
pub const REGISTRY_PROJECTION: &str = "registry";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {action} failed: {source}")]
    Database {
        /// What was being done, with the ids involved.
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("registry row {key} of {table} is corrupt: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
}

/// A tenant ("user client").
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: TenantId,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    pub secret_hash: String,
    pub role: Role,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeBaseRow {
    pub id: KnowledgeBaseId,
    pub tenant_id: TenantId,
    pub name: String,
    pub category: Option<String>,
    /// Links whose document is in the registry: the documents
    /// [`Registry::knowledge_base_documents`] lists.
    pub document_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRow {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub object_key: String,
    pub op_status: DocumentStatus,
    pub error: Option<String>,
    pub chunk_count: Option<i64>,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeBaseDocumentRow {
    pub document_id: DocumentId,
    pub file_name: String,
    /// The document's `op_status`, mirrored onto the link.
    pub status: DocumentStatus,
    pub added_at: DateTime<Utc>,
}

/// Every row of every registry table, this projection's checkpoint and
/// applied versions included, each table sorted by its primary key: two
/// dumps are equal exactly when the registries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryDump {
    pub tables: Vec<DumpTable>,
}

impl RegistryDump {
    /// The tables of the registry's entities alone, without the projection's
    /// own bookkeeping (checkpoint, applied versions): what two registries
    /// fed by different deliveries of the same log agree on.
    pub fn entities(&self) -> RegistryDump {
        RegistryDump {
            tables: self
                .tables
                .iter()
                .filter(|table| !table.table.starts_with("projection_"))
                .cloned()
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpTable {
    pub table: &'static str,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<DumpValue>>,
}

/// One column value of a dumped row, decoded to the same type on both
/// backends (enum columns as their text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpValue {
    Null,
    Int(i64),
    Text(String),
    Uuid(Uuid),
    Time(DateTime<Utc>),
}

/// Writes the registry tables from the log; see the module documentation.
pub struct RegistryProjection {
    db: Database,
}

impl RegistryProjection {
    pub fn new(db: Database) -> Self {
        RegistryProjection { db }
    }
}

#[async_trait]
impl Projection for RegistryProjection {
    fn name(&self) -> &str {
        REGISTRY_PROJECTION
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        apply::load_checkpoint(&self.db).await.map_err(database_error)
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        apply::apply_batch(&self.db, events, apply::Delivery::Log).await
    }
}

#[async_trait]
impl ConsumedProjection for RegistryProjection {
    fn name(&self) -> &str {
        REGISTRY_PROJECTION
    }

    async fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, ProjectionError> {
        apply::load_offsets(&self.db, partitions).await.map_err(database_error)
    }

    async fn apply_consumed(
        &self,
        events: &[RecordedEvent],
        offsets: &[PartitionOffset],
    ) -> Result<(), ProjectionError> {
        apply::apply_batch(&self.db, events, apply::Delivery::Consumed(offsets)).await
    }
}

/// Reads the registry tables. Cheap to clone: it shares the pool.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Database,
}

impl Registry {
    pub fn new(db: Database) -> Self {
        Registry { db }
    }
}

fn database_error(source: sqlx::Error) -> ProjectionError {
    ProjectionError::Database {
        projection: REGISTRY_PROJECTION.to_owned(),
        source,
    }
}

/// A value bound to a statement. SQLite stores uuids as hyphenated TEXT and
/// times as RFC 3339 TEXT with six fractional digits, so that text order is
/// time order; Postgres gets native values.
#[derive(Debug, Clone)]
enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Uuid(Uuid),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
}

impl Param {
    fn text(value: impl Into<String>) -> Param {
        Param::Text(value.into())
    }
}

/// Postgres keeps microseconds; writing SQLite's text at the same precision
/// makes both backends hold the same instant.
fn sqlite_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `sql` (Postgres syntax) for SQLite: every `::type` cast removed.
fn sqlite_dialect(sql: &str) -> Cow<'_, str> {
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
        Param::Uuid(value) => query.bind(value.hyphenated().to_string()),
        Param::Time(value) => query.bind(sqlite_time(value)),
        Param::OptTime(value) => query.bind(value.as_ref().map(sqlite_time)),
    })
}

fn pg_query<'q>(sql: &'q str, params: &[Param]) -> PgQuery<'q> {
    params.iter().fold(sqlx::query(sql), |query, param| match param {
        Param::Text(value) => query.bind(value.clone()),
        Param::OptText(value) => query.bind(value.clone()),
        Param::Int(value) => query.bind(*value),
        Param::Uuid(value) => query.bind(*value),
        Param::Time(value) => query.bind(*value),
        Param::OptTime(value) => query.bind(*value),
    })
}

/// Runs a read on the pool, outside any transaction.
async fn fetch_all(db: &Database, sql: &str, params: &[Param]) -> Result<Vec<Row>, sqlx::Error> {
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

async fn fetch_optional(db: &Database, sql: &str, params: &[Param]) -> Result<Option<Row>, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => {
            let sql = sqlite_dialect(sql);
            Ok(sqlite_query(&sql, params).fetch_optional(pool).await?.map(Row::Sqlite))
        }
        Database::Postgres(pool) => Ok(pg_query(sql, params).fetch_optional(pool).await?.map(Row::Postgres)),
    }
}

/// One write transaction of the registry on either backend. Beginning it
/// excludes every other registry writer until it ends, so that two appliers
/// (two processes, or a reset beside a runner) cannot interleave their
/// checks of the applied versions with each other's writes.
enum Transaction {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Transaction {
    async fn begin(db: &Database) -> Result<Transaction, sqlx::Error> {
        match db {
            // IMMEDIATE takes the write lock up front: a deferred transaction
            // that reads and then writes fails with SQLITE_BUSY when another
            // writer committed in between.
            Database::Sqlite(pool) => Ok(Transaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
            Database::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("projection:{REGISTRY_PROJECTION}"))
                    .execute(&mut *transaction)
                    .await?;
                Ok(Transaction::Postgres(transaction))
            }
        }
    }

    /// Runs a statement; returns the number of rows it affected.
    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
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

    async fn fetch_optional(&mut self, sql: &str, params: &[Param]) -> Result<Option<Row>, sqlx::Error> {
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

    async fn fetch_all(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, sqlx::Error> {
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

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => transaction.commit().await,
            Transaction::Postgres(transaction) => transaction.commit().await,
        }
    }
}

/// A result row of either backend.
enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    fn text(&self, column: &str) -> Result<Option<String>, String> {
        let value = match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        };
        value.map_err(|error| error.to_string())
    }

    fn int(&self, column: &str) -> Result<Option<i64>, String> {
        let value = match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        };
        value.map_err(|error| error.to_string())
    }

    /// A NOT NULL integer of the projection's own bookkeeping; failing to
    /// read it is a driver error, not a corrupt registry row.
    fn bookkeeping_int(&self, column: &str) -> Result<i64, sqlx::Error> {
        match self {
            Row::Sqlite(row) => row.try_get(column),
            Row::Postgres(row) => row.try_get(column),
        }
    }

    fn uuid(&self, column: &str) -> Result<Option<Uuid>, String> {
        match self {
            Row::Sqlite(_) => self
                .text(column)?
                .map(|text| Uuid::parse_str(&text).map_err(|error| format!("{column} {text:?} is not a uuid: {error}")))
                .transpose(),
            Row::Postgres(row) => row.try_get(column).map_err(|error| error.to_string()),
        }
    }

    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, String> {
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

/// Decodes the columns of one row of `table`, naming the table and the
/// row's key in every error.
struct RowReader<'r> {
    row: &'r Row,
    table: &'static str,
    key: String,
}

impl<'r> RowReader<'r> {
    fn new(row: &'r Row, table: &'static str) -> RowReader<'r> {
        RowReader {
            row,
            table,
            key: "(key not read yet)".to_owned(),
        }
    }

    /// Names the row in later errors.
    fn keyed(mut self, key: impl std::fmt::Display) -> RowReader<'r> {
        self.key = key.to_string();
        self
    }

    fn corrupt(&self, reason: String) -> RegistryError {
        RegistryError::Corrupt {
            table: self.table,
            key: self.key.clone(),
            reason,
        }
    }

    fn required<T>(&self, column: &str, value: Result<Option<T>, String>) -> Result<T, RegistryError> {
        match value {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self.corrupt(format!("{column} is null"))),
            Err(reason) => Err(self.corrupt(format!("{column}: {reason}"))),
        }
    }

    fn optional<T>(&self, column: &str, value: Result<Option<T>, String>) -> Result<Option<T>, RegistryError> {
        value.map_err(|reason| self.corrupt(format!("{column}: {reason}")))
    }

    fn text(&self, column: &str) -> Result<String, RegistryError> {
        self.required(column, self.row.text(column))
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, RegistryError> {
        self.optional(column, self.row.text(column))
    }

    fn int(&self, column: &str) -> Result<i64, RegistryError> {
        self.required(column, self.row.int(column))
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, RegistryError> {
        self.optional(column, self.row.int(column))
    }

    fn uuid(&self, column: &str) -> Result<Uuid, RegistryError> {
        self.required(column, self.row.uuid(column))
    }

    fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>, RegistryError> {
        self.optional(column, self.row.uuid(column))
    }

    fn time(&self, column: &str) -> Result<DateTime<Utc>, RegistryError> {
        self.required(column, self.row.time(column))
    }

    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, RegistryError> {
        self.optional(column, self.row.time(column))
    }

    fn role(&self, column: &str) -> Result<Role, RegistryError> {
        let text = self.text(column)?;
        text.parse()
            .map_err(|error| self.corrupt(format!("{column} {text:?} is not a role: {error}")))
    }

    fn status(&self, column: &str) -> Result<DocumentStatus, RegistryError> {
        let text = self.text(column)?;
        parse_status(&text).ok_or_else(|| self.corrupt(format!("{column} {text:?} is not a document status")))
    }
}

fn parse_status(text: &str) -> Option<DocumentStatus> {
    [
        DocumentStatus::Pending,
        DocumentStatus::Processing,
        DocumentStatus::Success,
        DocumentStatus::Failed,
    ]
    .into_iter()
    .find(|status| status.as_str() == text)
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

    #[test]
    fn every_status_parses_back_from_its_text() {
        for status in [
            DocumentStatus::Pending,
            DocumentStatus::Processing,
            DocumentStatus::Success,
            DocumentStatus::Failed,
        ] {
            assert_eq!(parse_status(status.as_str()), Some(status));
        }
        assert_eq!(parse_status("pending"), None);
    }
}
