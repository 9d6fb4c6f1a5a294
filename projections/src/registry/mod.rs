//! The registry: the relational read model of tenants, API keys, documents
//! and knowledge bases (the tables of `migrations/*/0002_registry.up.sql`).
//!
//! [`RegistryProjection`] writes it from the log; [`Registry`] reads it.
//! Every timestamp written is the `recorded_at` of the event that wrote it,
//! so a replay from the start of the log reproduces identical rows, which
//! [`Registry::dump`] lets a test check.
//!
//! Both backends run the same SQL, written in Postgres syntax (see
//! [`crate::sql`], which also binds values the way each migration stores
//! them).

mod apply;
mod read;

use actors::db::Database;
use actors::store::RecordedEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::document::DocumentStatus;
use domain::tenant::Role;
use domain::{ApiKeyId, DocumentId, KnowledgeBaseId, LogPosition, TenantId};
use uuid::Uuid;

use crate::consumed::{ConsumedProjection, PartitionOffset};
use crate::runtime::{Projection, ProjectionError};
use crate::sql::Row;

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
        crate::sql::load_checkpoint(&self.db, REGISTRY_PROJECTION)
            .await
            .map_err(database_error)
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
        crate::sql::load_offsets(&self.db, REGISTRY_PROJECTION, partitions)
            .await
            .map_err(database_error)
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
