//! The registry: the relational read model of tenants, API keys, documents,
//! knowledge bases and pending presigned uploads (the tables of
//! `migrations/*/0002_registry.up.sql`, with the API key scope columns of
//! `0008_api_key_scopes` and the `pending_uploads` of `0010`).
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
mod generation;
mod read;
mod replay;

use actors::db::Database;
use actors::store::RecordedEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::document::DocumentStatus;
use domain::tenant::{ApiKeyScopes, Role};
use domain::{ApiKeyId, DocumentId, KnowledgeBaseId, LogPosition, TenantId};
use uuid::Uuid;

use crate::consumed::{ConsumedProjection, PartitionOffset};
use crate::generations::GenerationName;
use crate::runtime::{Projection, ProjectionError};
use crate::sql::Row;
use generation::Tables;
pub use replay::{drop_generation, switch_generation, Switched};

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
    #[error("registry {action} refused: {reason}")]
    Busy { action: String, reason: String },
    #[error(transparent)]
    Generations(#[from] crate::generations::GenerationError),
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
    pub scopes: ApiKeyScopes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeBaseRow {
    pub id: KnowledgeBaseId,
    pub tenant_id: TenantId,
    pub name: String,
    pub category: Option<String>,
    /// None for knowledge bases from before models were pinned.
    pub embedding_model: Option<domain::EmbeddingModel>,
    pub chunking: Option<domain::ChunkingSettings>,
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
    /// The model the vectors of the current version come from, once processed.
    pub embedding_model: Option<domain::EmbeddingModel>,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One version of a document (`document_versions`).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentVersionRow {
    pub document_id: DocumentId,
    pub version: i64,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// A presigned upload waiting for its completion (`pending_uploads`).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUploadRow {
    pub document_id: DocumentId,
    pub tenant_id: TenantId,
    pub upload_id: Uuid,
    /// In the raw object store.
    pub staging_key: String,
    pub size_bytes: i64,
    /// The declared SHA-256, hex, when one was given.
    pub sha256: Option<String>,
    pub knowledge_base_id: Option<KnowledgeBaseId>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
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
    Bool(bool),
    Text(String),
    Uuid(Uuid),
    Time(DateTime<Utc>),
}

/// Writes the registry tables from the log; see the module documentation.
///
/// [`RegistryProjection::new`] writes the live generation (what `serve`
/// runs): it resolves the live generation inside each batch's transaction
/// and, once a replay has switched it, refuses the batch with
/// [`ProjectionError::Retargeted`] so that its runner resumes from the new
/// generation's checkpoint. [`RegistryProjection::for_generation`] writes
/// one generation by name (a shadow being rebuilt).
pub struct RegistryProjection {
    db: Database,
    target: WriteTarget,
}

enum WriteTarget {
    /// The generation the last loaded checkpoint belongs to.
    Live {
        bound: std::sync::Mutex<Option<GenerationName>>,
    },
    Pinned(GenerationName),
}

impl RegistryProjection {
    pub fn new(db: Database) -> Self {
        RegistryProjection {
            db,
            target: WriteTarget::Live {
                bound: std::sync::Mutex::new(None),
            },
        }
    }

    /// Writes generation `generation` alone, whether live or not; its
    /// tables must exist ([`Registry::create_generation`]).
    pub fn for_generation(db: Database, generation: GenerationName) -> Self {
        RegistryProjection {
            db,
            target: WriteTarget::Pinned(generation),
        }
    }

    fn bound(&self) -> Option<GenerationName> {
        match &self.target {
            WriteTarget::Live { bound } => bound.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            WriteTarget::Pinned(generation) => Some(generation.clone()),
        }
    }

    async fn apply(&self, events: &[RecordedEvent], delivery: apply::Delivery<'_>) -> Result<(), ProjectionError> {
        let consumed = matches!(delivery, apply::Delivery::Consumed(_));
        match &self.target {
            WriteTarget::Live { .. } => {
                // a partitioned feed has no checkpoint to be bound to; its
                // per-stream versions keep any generation it lands in exact
                let bound = if consumed { None } else { self.bound() };
                let target = apply::Target::Live { bound: bound.as_ref() };
                apply::apply_batch(&self.db, target, events, delivery).await
            }
            WriteTarget::Pinned(generation) => {
                apply::apply_batch(&self.db, apply::Target::Pinned(generation), events, delivery).await
            }
        }
    }

    async fn tables(&self) -> Result<Tables, ProjectionError> {
        let generation = match &self.target {
            WriteTarget::Live { .. } => crate::generations::live_on(&self.db, REGISTRY_PROJECTION)
                .await
                .map_err(database_error)?,
            WriteTarget::Pinned(generation) => generation.clone(),
        };
        Ok(Tables::new(&self.db, &generation))
    }
}

#[async_trait]
impl Projection for RegistryProjection {
    fn name(&self) -> &str {
        REGISTRY_PROJECTION
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        let tables = self.tables().await?;
        if let WriteTarget::Live { bound } = &self.target {
            *bound.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tables.generation().clone());
        }
        crate::sql::load_checkpoint(&self.db, &tables.projection_key())
            .await
            .map_err(database_error)
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        self.apply(events, apply::Delivery::Log).await
    }

    /// One primary-key read per round of the runner: cheap next to the
    /// read of the log it precedes.
    async fn retargeted(&self) -> Result<bool, ProjectionError> {
        let WriteTarget::Live { .. } = &self.target else {
            return Ok(false);
        };
        let Some(bound) = self.bound() else {
            return Ok(false);
        };
        let live = crate::generations::live_on(&self.db, REGISTRY_PROJECTION)
            .await
            .map_err(database_error)?;
        Ok(live != bound)
    }
}

#[async_trait]
impl ConsumedProjection for RegistryProjection {
    fn name(&self) -> &str {
        REGISTRY_PROJECTION
    }

    async fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, ProjectionError> {
        let tables = self.tables().await?;
        crate::sql::load_offsets(&self.db, &tables.projection_key(), partitions)
            .await
            .map_err(database_error)
    }

    async fn apply_consumed(
        &self,
        events: &[RecordedEvent],
        offsets: &[PartitionOffset],
    ) -> Result<(), ProjectionError> {
        self.apply(events, apply::Delivery::Consumed(offsets)).await
    }
}

/// Reads the registry tables. Cheap to clone: it shares the pool.
///
/// [`Registry::new`] reads the live generation and resolves it again on
/// every read (one primary-key lookup), so a running server follows a
/// switch or a rollback with its very next read; a cached pointer would
/// still need a round trip to learn it is stale, or serve a rolled-back
/// generation for as long as it is cached.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Database,
    /// Reads this generation instead of the live one.
    pinned: Option<GenerationName>,
}

impl Registry {
    pub fn new(db: Database) -> Self {
        Registry { db, pinned: None }
    }

    /// Reads generation `generation` whether it is live or not.
    pub fn at_generation(db: Database, generation: GenerationName) -> Self {
        Registry {
            db,
            pinned: Some(generation),
        }
    }

    /// Creates the tables of generation `generation` (idempotent): the
    /// shadow a replay rebuilds.
    pub async fn create_generation(&self, generation: &GenerationName) -> Result<(), RegistryError> {
        Tables::new(&self.db, generation)
            .create(&self.db)
            .await
            .map_err(|source| RegistryError::Database {
                action: format!("creating the tables of generation {generation}"),
                source,
            })
    }

    /// Brings the tables of every registry generation but `default` (whose
    /// tables the migrations own) to the current columns: the migrations
    /// cannot reach them, SQLite's least of all, whose tables they would
    /// have to name. Run after migrating, before serving.
    pub async fn upgrade_generations(&self) -> Result<(), RegistryError> {
        let generations = crate::generations::Generations::new(self.db.clone())
            .list(REGISTRY_PROJECTION)
            .await?;
        for generation in generations.iter().filter(|row| !row.name.is_default()) {
            self.create_generation(&generation.name).await?;
        }
        Ok(())
    }

    /// The checkpoint of generation `generation`.
    pub async fn generation_checkpoint(&self, generation: &GenerationName) -> Result<LogPosition, RegistryError> {
        let key = Tables::new(&self.db, generation).projection_key();
        crate::sql::load_checkpoint(&self.db, &key)
            .await
            .map_err(|source| RegistryError::Database {
                action: format!("read of the checkpoint of generation {generation}"),
                source,
            })
    }

    async fn tables(&self) -> Result<Tables, sqlx::Error> {
        let generation = match &self.pinned {
            Some(generation) => generation.clone(),
            None => crate::generations::live_on(&self.db, REGISTRY_PROJECTION).await?,
        };
        Ok(Tables::new(&self.db, &generation))
    }

    async fn fetch_all(&self, sql: &str, params: &[crate::sql::Param]) -> Result<Vec<Row>, sqlx::Error> {
        let tables = self.tables().await?;
        crate::sql::fetch_all(&self.db, &tables.qualify(sql), params).await
    }

    async fn fetch_optional(&self, sql: &str, params: &[crate::sql::Param]) -> Result<Option<Row>, sqlx::Error> {
        let tables = self.tables().await?;
        crate::sql::fetch_optional(&self.db, &tables.qualify(sql), params).await
    }

    /// A write transaction on the tables this registry reads, under the
    /// lock their writers take.
    async fn writer(&self) -> Result<generation::Writer, ProjectionError> {
        let target = match &self.pinned {
            Some(generation) => apply::Target::Pinned(generation),
            None => apply::Target::Live { bound: None },
        };
        apply::begin(&self.db, &target).await
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

    fn bool(&self, column: &str) -> Result<bool, RegistryError> {
        self.required(column, self.row.bool(column))
    }

    fn opt_bool(&self, column: &str) -> Result<Option<bool>, RegistryError> {
        self.optional(column, self.row.bool(column))
    }

    /// A JSON column (JSONB on Postgres, read through `::text`; TEXT on
    /// SQLite) decoded as `T`.
    fn opt_json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>, RegistryError> {
        let Some(text) = self.opt_text(column)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| self.corrupt(format!("{column} {text:?} does not decode: {error}")))
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
