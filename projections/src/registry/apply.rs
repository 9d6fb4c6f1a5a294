//! Applying the log to the registry tables.
//!
//! A batch is applied in one transaction together with the checkpoint and
//! the highest version applied per stream. Delivery is at-least-once, and a
//! redelivered event is recognised by its stream's applied version rather
//! than by the checkpoint alone: on Postgres the log is ordered by commit,
//! so per-stream versions are the one order every delivery agrees on.

use std::collections::HashMap;

use actors::db::Database;
use actors::store::RecordedEvent;
use chrono::{DateTime, Utc};
use domain::document::DocumentEvent;
use domain::knowledge_base::KnowledgeBaseEvent;
use domain::tenant::TenantEvent;
use domain::{AnyEvent, DocumentId, KnowledgeBaseId, TenantId};
use uuid::Uuid;

use super::generation::{Tables, Writer};
use super::{database_error, REGISTRY_PROJECTION};
use crate::consumed::PartitionOffset;
use crate::generations::{GenerationName, GenerationState};
use crate::runtime::ProjectionError;
use crate::sql::{store_checkpoint, store_offsets, Param, Transaction};

/// Where a batch came from, and so what is recorded with its effects.
pub(super) enum Delivery<'a> {
    /// The store's global log, in order: the last position becomes the
    /// checkpoint.
    Log,
    /// Kafka: these next offsets are stored, and a stream whose versions
    /// skip ahead is filled from the event store first.
    Consumed(&'a [PartitionOffset]),
}

/// Which generation a batch is written to.
pub(super) enum Target<'a> {
    /// The live one, resolved inside the transaction. `bound` is the
    /// generation whose checkpoint the caller resumed from: when another is
    /// live now, the batch is refused with [`ProjectionError::Retargeted`]
    /// so that the caller reloads the checkpoint of the new one. `None`
    /// (Kafka deliveries) writes whatever is live: the per-stream versions
    /// keep that exact.
    Live { bound: Option<&'a GenerationName> },
    /// One generation by name (a shadow being built, a retired one caught
    /// up for a rollback), refused once it is live, when the live runner
    /// writes it.
    Pinned(&'a GenerationName),
}

pub(super) async fn apply_batch(
    db: &Database,
    target: Target<'_>,
    events: &[RecordedEvent],
    delivery: Delivery<'_>,
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut writer = begin(db, &target).await?;
    apply_in(&mut writer, db, events, delivery).await?;
    writer.transaction.commit().await.map_err(database_error)
}

/// Begins the transaction a batch for `target` is written in, holding the
/// lock its writers share.
pub(super) async fn begin(db: &Database, target: &Target<'_>) -> Result<Writer, ProjectionError> {
    match target {
        Target::Live { bound } => {
            let mut transaction = Transaction::begin(db, REGISTRY_PROJECTION)
                .await
                .map_err(database_error)?;
            let live = crate::generations::live_in(&mut transaction, REGISTRY_PROJECTION)
                .await
                .map_err(database_error)?;
            if let Some(bound) = bound {
                if *bound != &live {
                    return Err(ProjectionError::Retargeted {
                        projection: REGISTRY_PROJECTION.to_owned(),
                        from: bound.to_string(),
                        to: live.to_string(),
                    });
                }
            }
            Ok(Writer {
                transaction,
                tables: Tables::new(db, &live),
            })
        }
        Target::Pinned(generation) => {
            let tables = Tables::new(db, generation);
            let mut transaction = Transaction::begin(db, &tables.projection_key())
                .await
                .map_err(database_error)?;
            let state = crate::generations::state_in(&mut transaction, REGISTRY_PROJECTION, generation)
                .await
                .map_err(database_error)?;
            if state == Some(GenerationState::Live) {
                return Err(ProjectionError::Retargeted {
                    projection: tables.projection_key(),
                    from: generation.to_string(),
                    to: format!("{generation} as the live generation, which the live runner writes"),
                });
            }
            Ok(Writer { transaction, tables })
        }
    }
}

/// Applies `events` in `writer`'s transaction, with the applied versions
/// and the checkpoint (or offsets) of its generation; does not commit.
pub(super) async fn apply_in(
    writer: &mut Writer,
    db: &Database,
    events: &[RecordedEvent],
    delivery: Delivery<'_>,
) -> Result<(), ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    let key = writer.tables.projection_key();
    let mut applied = AppliedVersions::new(key.clone());
    let mut skipped = 0usize;
    let mut filled = 0usize;
    for event in events {
        let applied_version = applied.get(writer, event).await.map_err(database_error)?;
        if event.stream_version <= applied_version {
            skipped += 1;
            continue;
        }
        if event.stream_version > applied_version + 1 {
            // Only a redelivering feed skips versions; the log never does.
            debug_assert!(matches!(delivery, Delivery::Consumed(_)), "the log skipped a version");
            let missing = missing_versions(db, event, applied_version).await?;
            filled += missing.len();
            for earlier in &missing {
                apply_one(writer, earlier).await?;
                applied.advance(earlier);
            }
        }
        apply_one(writer, event).await?;
        applied.advance(event);
    }
    applied.store(writer).await.map_err(database_error)?;
    match delivery {
        Delivery::Log => store_checkpoint(&mut writer.transaction, &key, last.log_position, last.recorded_at)
            .await
            .map_err(database_error)?,
        Delivery::Consumed(offsets) => store_offsets(&mut writer.transaction, &key, offsets)
            .await
            .map_err(database_error)?,
    }
    if skipped > 0 || filled > 0 {
        tracing::debug!(
            projection = %key,
            skipped,
            filled,
            until = %last.log_position,
            "skipped events already applied, filled gaps from the store"
        );
    }
    Ok(())
}

async fn apply_one(transaction: &mut Writer, event: &RecordedEvent) -> Result<(), ProjectionError> {
    apply_event(transaction, event).await.map_err(|error| match error {
        ApplyError::Database(source) => database_error(source),
        ApplyError::Event(reason) => ProjectionError::Event {
            projection: REGISTRY_PROJECTION.to_owned(),
            event_id: event.event_id,
            position: event.log_position,
            reason,
        },
    })
}

/// The versions of `event`'s stream after `applied_version` and before
/// `event`, from the event store.
async fn missing_versions(
    db: &Database,
    event: &RecordedEvent,
    applied_version: i64,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    let stream = db
        .event_store()
        .read_stream(&event.stream_id, applied_version)
        .await
        .map_err(|source| ProjectionError::Store {
            projection: REGISTRY_PROJECTION.to_owned(),
            source,
        })?;
    let missing: Vec<RecordedEvent> = stream
        .into_iter()
        .filter(|earlier| earlier.stream_version < event.stream_version)
        .collect();
    let expected = (event.stream_version - applied_version - 1) as usize;
    if missing.len() != expected {
        return Err(ProjectionError::Event {
            projection: REGISTRY_PROJECTION.to_owned(),
            event_id: event.event_id,
            position: event.log_position,
            reason: format!(
                "stream {} has {} of the {expected} versions between {applied_version} and {} in the store",
                event.stream_id,
                missing.len(),
                event.stream_version
            ),
        });
    }
    Ok(missing)
}

/// Why one event could not be applied: the database failed (worth a
/// retry), or the event itself cannot be understood (it never will be).
enum ApplyError {
    Database(sqlx::Error),
    Event(String),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        ApplyError::Database(error)
    }
}

/// The highest version applied per stream, as loaded in this transaction
/// plus what it has applied since.
struct AppliedVersions {
    /// The generation's key in `projection_applied`.
    projection: String,
    versions: HashMap<String, i64>,
    changed: Vec<String>,
}

impl AppliedVersions {
    fn new(projection: String) -> AppliedVersions {
        AppliedVersions {
            projection,
            versions: HashMap::new(),
            changed: Vec::new(),
        }
    }

    async fn get(&mut self, transaction: &mut Writer, event: &RecordedEvent) -> Result<i64, sqlx::Error> {
        let stream = event.stream_id.as_str();
        if let Some(version) = self.versions.get(stream) {
            return Ok(*version);
        }
        let row = transaction
            .fetch_optional(
                "SELECT version FROM projection_applied WHERE projection = $1 AND stream_id = $2",
                &[Param::text(&self.projection), Param::text(stream)],
            )
            .await?;
        let version = match row {
            None => 0,
            Some(row) => row.bookkeeping_int("version")?,
        };
        self.versions.insert(stream.to_owned(), version);
        Ok(version)
    }

    fn advance(&mut self, event: &RecordedEvent) {
        let stream = event.stream_id.as_str();
        debug_assert!(self.versions.contains_key(stream), "advance before get for {stream}");
        self.versions.insert(stream.to_owned(), event.stream_version);
        if !self.changed.iter().any(|changed| changed == stream) {
            self.changed.push(stream.to_owned());
        }
    }

    async fn store(&self, transaction: &mut Writer) -> Result<(), sqlx::Error> {
        for stream in &self.changed {
            let version = self.versions.get(stream).copied().unwrap_or_default();
            transaction
                .execute(
                    "INSERT INTO projection_applied (projection, stream_id, version) VALUES ($1, $2, $3) \
                     ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version \
                     WHERE projection_applied.version < excluded.version",
                    &[Param::text(&self.projection), Param::text(stream), Param::Int(version)],
                )
                .await?;
        }
        Ok(())
    }
}

async fn apply_event(transaction: &mut Writer, event: &RecordedEvent) -> Result<(), ApplyError> {
    let decoded = AnyEvent::decode(
        event.stream_id.category(),
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .map_err(|error| ApplyError::Event(error.to_string()))?;
    let stream_entity = stream_entity_id(event)?;
    let at = event.recorded_at;
    match decoded {
        AnyEvent::Tenant(tenant_event) => apply_tenant(transaction, TenantId(stream_entity), tenant_event, at).await,
        AnyEvent::Document(document_event) => {
            apply_document(transaction, DocumentId(stream_entity), document_event, at).await
        }
        AnyEvent::KnowledgeBase(kb_event) => {
            apply_knowledge_base(transaction, KnowledgeBaseId(stream_entity), kb_event, at).await
        }
    }
}

/// The id of the entity a stream belongs to: the uuid after its category.
fn stream_entity_id(event: &RecordedEvent) -> Result<Uuid, ApplyError> {
    let stream = event.stream_id.as_str();
    let suffix = stream.get(event.stream_id.category().len() + 1..).unwrap_or_default();
    Uuid::parse_str(suffix)
        .map_err(|error| ApplyError::Event(format!("stream {stream} does not end in an entity uuid: {error}")))
}

/// An event naming an entity other than its stream's would land its rows
/// on the wrong key.
fn check_same_entity(stream: Uuid, named: Uuid, what: &str) -> Result<(), ApplyError> {
    if stream == named {
        Ok(())
    } else {
        Err(ApplyError::Event(format!(
            "event names {what} {named} but belongs to the stream of {stream}"
        )))
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64, ApplyError> {
    i64::try_from(value).map_err(|_| ApplyError::Event(format!("{what} {value} does not fit a signed 64-bit integer")))
}

async fn apply_tenant(
    transaction: &mut Writer,
    tenant: TenantId,
    event: TenantEvent,
    at: DateTime<Utc>,
) -> Result<(), ApplyError> {
    match event {
        TenantEvent::TenantRegistered { tenant_id, email, role } => {
            check_same_entity(tenant.0, tenant_id.0, "tenant")?;
            transaction
                .execute(
                    "INSERT INTO user_clients (id, email, role, created_at, updated_at) \
                     VALUES ($1, $2, $3::role_type, $4, $4)",
                    &[
                        Param::Uuid(tenant.0),
                        Param::text(email.as_str()),
                        Param::text(role.as_str()),
                        Param::Time(at),
                    ],
                )
                .await?;
        }
        TenantEvent::ApiKeyIssued {
            key_id,
            secret_hash,
            role,
            label,
            expires_at,
            scopes,
        } => {
            let knowledge_base_ids = scopes
                .knowledge_base_ids
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|error| ApplyError::Event(format!("scopes of api key {key_id} do not encode: {error}")))?;
            transaction
                .execute(
                    "INSERT INTO api_keys (key_id, user_id, secret_hash, role, label, created_at, expires_at, \
                     revoked_at, read_only, knowledge_base_ids) \
                     VALUES ($1, $2, $3, $4::role_type, $5, $6, $7, NULL, $8, $9::jsonb)",
                    &[
                        Param::Text(key_id.0),
                        Param::Uuid(tenant.0),
                        Param::Text(secret_hash),
                        Param::text(role.as_str()),
                        Param::OptText(label),
                        Param::Time(at),
                        Param::OptTime(expires_at),
                        Param::Bool(scopes.read_only),
                        Param::OptText(knowledge_base_ids),
                    ],
                )
                .await?;
        }
        TenantEvent::ApiKeyRevoked { key_id } => {
            transaction
                .execute(
                    "UPDATE api_keys SET revoked_at = $3 WHERE key_id = $1 AND user_id = $2",
                    &[Param::Text(key_id.0), Param::Uuid(tenant.0), Param::Time(at)],
                )
                .await?;
        }
        // key material and its rows live in the vault, not in the registry
        // webhooks are the webhook projection's
        TenantEvent::EncryptionKeyRotated { .. }
        | TenantEvent::WebhookRegistered { .. }
        | TenantEvent::WebhookRemoved { .. } => {}
        TenantEvent::TenantErased { erasure_id } => {
            // every row of the tenant goes; the links of its knowledge bases
            // and of its documents first, while the subqueries can find them
            let statements = [
                "DELETE FROM knowledge_base_documents WHERE knowledge_base_id IN \
                 (SELECT id FROM knowledge_bases WHERE user_id = $1)",
                "DELETE FROM knowledge_base_documents WHERE document_id IN \
                 (SELECT id FROM documents_registry WHERE user_id = $1)",
                "DELETE FROM knowledge_bases WHERE user_id = $1",
                "DELETE FROM documents_registry WHERE user_id = $1",
                "DELETE FROM pending_uploads WHERE user_id = $1",
                "DELETE FROM document_versions WHERE user_id = $1",
                "DELETE FROM api_keys WHERE user_id = $1",
                "DELETE FROM user_clients WHERE id = $1",
            ];
            let mut removed = 0;
            for statement in statements {
                removed += transaction.execute(statement, &[Param::Uuid(tenant.0)]).await?;
            }
            transaction
                .execute(
                    crate::erasure::ACKNOWLEDGE_SQL,
                    &crate::erasure::acknowledge_params(
                        erasure_id,
                        tenant,
                        "registry",
                        at,
                        &format!("{removed} registry rows removed"),
                    ),
                )
                .await?;
        }
    }
    Ok(())
}

async fn apply_document(
    transaction: &mut Writer,
    document: DocumentId,
    event: DocumentEvent,
    at: DateTime<Utc>,
) -> Result<(), ApplyError> {
    let id = Param::Uuid(document.0);
    match event {
        DocumentEvent::DocumentRegistered {
            document_id,
            tenant_id,
            file_name,
            content_type,
            size_bytes,
            sha256,
            object_key,
            knowledge_base_id: _,
        } => {
            check_same_entity(document.0, document_id.0, "document")?;
            transaction
                .execute(
                    "INSERT INTO documents_registry (id, user_id, file_name, content_type, size_bytes, sha256, \
                     object_key, lock_status, op_status, error, attempts, chunk_count, embedder, created_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'UNLOCKED', 'PENDING', NULL, 0, NULL, NULL, \
                     $8, $8)",
                    &[
                        id.clone(),
                        Param::Uuid(tenant_id.0),
                        Param::text(file_name.as_str()),
                        Param::Text(content_type.clone()),
                        Param::Int(to_i64(size_bytes, "size_bytes")?),
                        Param::Text(sha256.clone()),
                        Param::Text(object_key.clone()),
                        Param::Time(at),
                    ],
                )
                .await?;
            // a registration after a delete starts the versions over
            transaction
                .execute(
                    "DELETE FROM document_versions WHERE document_id = $1",
                    std::slice::from_ref(&id),
                )
                .await?;
            insert_version(
                transaction,
                document,
                tenant_id,
                1,
                content_type,
                size_bytes,
                sha256,
                object_key,
                at,
            )
            .await?;
            // a knowledge base may have linked the document before its
            // registration reached the registry
            mirror_status(transaction, document, "PENDING", at).await?;
            // a completed presigned upload is no longer pending
            transaction
                .execute(
                    "DELETE FROM pending_uploads WHERE document_id = $1",
                    &[Param::Uuid(document.0)],
                )
                .await?;
        }
        DocumentEvent::UploadRequested {
            document_id,
            tenant_id,
            upload_id,
            size_bytes,
            sha256,
            knowledge_base_id,
            staging_key,
            expires_at,
            ..
        } => {
            check_same_entity(document.0, document_id.0, "document")?;
            transaction
                .execute(
                    "INSERT INTO pending_uploads (document_id, user_id, upload_id, staging_key, size_bytes, sha256, \
                     knowledge_base_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        id,
                        Param::Uuid(tenant_id.0),
                        Param::Uuid(upload_id),
                        Param::Text(staging_key),
                        Param::Int(to_i64(size_bytes, "size_bytes")?),
                        Param::OptText(sha256),
                        Param::OptUuid(knowledge_base_id.map(|kb| kb.0)),
                        Param::Time(expires_at),
                        Param::Time(at),
                    ],
                )
                .await?;
        }
        DocumentEvent::UploadRejected { upload_id, .. } | DocumentEvent::UploadExpired { upload_id } => {
            transaction
                .execute(
                    "DELETE FROM pending_uploads WHERE document_id = $1 AND upload_id = $2",
                    &[id, Param::Uuid(upload_id)],
                )
                .await?;
        }
        DocumentEvent::ProcessingStarted { attempt, .. } => {
            transaction
                .execute(
                    "UPDATE documents_registry SET op_status = 'PROCESSING', lock_status = 'LOCKED', \
                     attempts = $2, updated_at = $3 WHERE id = $1",
                    &[id, Param::Int(i64::from(attempt)), Param::Time(at)],
                )
                .await?;
            mirror_status(transaction, document, "PROCESSING", at).await?;
        }
        DocumentEvent::DocumentProcessed { artifact } => {
            transaction
                .execute(
                    "UPDATE documents_registry SET op_status = 'SUCCESS', lock_status = 'UNLOCKED', error = NULL, \
                     chunk_count = $2, embedder = $3, embedding_model = $4, updated_at = $5 WHERE id = $1",
                    &[
                        id,
                        Param::Int(i64::from(artifact.chunk_count)),
                        Param::Text(artifact.embedder.clone()),
                        Param::OptText(json_column(&Some(artifact.model()))?),
                        Param::Time(at),
                    ],
                )
                .await?;
            mirror_status(transaction, document, "SUCCESS", at).await?;
        }
        DocumentEvent::ProcessingFailed { reason, attempt } => {
            transaction
                .execute(
                    "UPDATE documents_registry SET op_status = 'FAILED', lock_status = 'UNLOCKED', error = $2, \
                     attempts = $3, updated_at = $4 WHERE id = $1",
                    &[id, Param::Text(reason), Param::Int(i64::from(attempt)), Param::Time(at)],
                )
                .await?;
            mirror_status(transaction, document, "FAILED", at).await?;
        }
        DocumentEvent::RetryScheduled { attempt, reason, .. } => {
            transaction
                .execute(
                    "UPDATE documents_registry SET op_status = 'PENDING', lock_status = 'UNLOCKED', error = $2, \
                     attempts = $3, updated_at = $4 WHERE id = $1",
                    &[id, Param::Text(reason), Param::Int(i64::from(attempt)), Param::Time(at)],
                )
                .await?;
            mirror_status(transaction, document, "PENDING", at).await?;
        }
        DocumentEvent::DocumentVersionAdded {
            version,
            content_type,
            size_bytes,
            sha256,
            object_key,
        } => {
            let tenant = transaction
                .fetch_optional(
                    "SELECT user_id FROM documents_registry WHERE id = $1",
                    std::slice::from_ref(&id),
                )
                .await?
                .and_then(|row| row.uuid("user_id").ok().flatten())
                .map(TenantId);
            let Some(tenant) = tenant else {
                return Err(ApplyError::Event(format!(
                    "version {version} of document {document}, which the registry does not have"
                )));
            };
            transaction
                .execute(
                    "UPDATE documents_registry SET content_type = $2, size_bytes = $3, sha256 = $4, object_key = $5, \
                     op_status = 'PENDING', lock_status = 'UNLOCKED', error = NULL, attempts = 0, updated_at = $6 \
                     WHERE id = $1",
                    &[
                        id,
                        Param::Text(content_type.clone()),
                        Param::Int(to_i64(size_bytes, "size_bytes")?),
                        Param::Text(sha256.clone()),
                        Param::Text(object_key.clone()),
                        Param::Time(at),
                    ],
                )
                .await?;
            insert_version(
                transaction,
                document,
                tenant,
                version,
                content_type,
                size_bytes,
                sha256,
                object_key,
                at,
            )
            .await?;
            mirror_status(transaction, document, "PENDING", at).await?;
        }
        // progress within an attempt: the row says PROCESSING throughout
        DocumentEvent::TextExtracted { .. }
        | DocumentEvent::TextChunked { .. }
        | DocumentEvent::EmbeddingBatchCompleted { .. } => {}
        DocumentEvent::RetryRequested {} => {
            transaction
                .execute(
                    "UPDATE documents_registry SET op_status = 'PENDING', lock_status = 'UNLOCKED', error = NULL, \
                     attempts = 0, updated_at = $2 WHERE id = $1",
                    &[id, Param::Time(at)],
                )
                .await?;
            mirror_status(transaction, document, "PENDING", at).await?;
        }
        DocumentEvent::DocumentDeleted {} => {
            transaction
                .execute(
                    "DELETE FROM knowledge_base_documents WHERE document_id = $1",
                    std::slice::from_ref(&id),
                )
                .await?;
            transaction
                .execute(
                    "DELETE FROM document_versions WHERE document_id = $1",
                    std::slice::from_ref(&id),
                )
                .await?;
            transaction
                .execute("DELETE FROM documents_registry WHERE id = $1", &[id])
                .await?;
        }
    }
    Ok(())
}

/// One row of `document_versions`.
#[allow(clippy::too_many_arguments)]
async fn insert_version(
    transaction: &mut Writer,
    document: DocumentId,
    tenant: TenantId,
    version: u32,
    content_type: String,
    size_bytes: u64,
    sha256: String,
    object_key: String,
    at: DateTime<Utc>,
) -> Result<(), ApplyError> {
    transaction
        .execute(
            "INSERT INTO document_versions (document_id, version, user_id, content_type, size_bytes, sha256, \
             object_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                Param::Uuid(document.0),
                Param::Int(i64::from(version)),
                Param::Uuid(tenant.0),
                Param::Text(content_type),
                Param::Int(to_i64(size_bytes, "size_bytes")?),
                Param::Text(sha256),
                Param::Text(object_key),
                Param::Time(at),
            ],
        )
        .await?;
    Ok(())
}

/// Copies a document's new status onto every knowledge base link to it.
async fn mirror_status(
    transaction: &mut Writer,
    document: DocumentId,
    status: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    transaction
        .execute(
            // a link is written from two streams (the knowledge base's and
            // the document's), whose events a partitioned feed interleaves
            // freely: the latest time wins, whatever the order of arrival
            "UPDATE knowledge_base_documents SET status = $2::op_status, \
             updated_at = CASE WHEN updated_at < $3 THEN $3 ELSE updated_at END WHERE document_id = $1",
            &[Param::Uuid(document.0), Param::text(status), Param::Time(at)],
        )
        .await?;
    Ok(())
}

async fn apply_knowledge_base(
    transaction: &mut Writer,
    knowledge_base: KnowledgeBaseId,
    event: KnowledgeBaseEvent,
    at: DateTime<Utc>,
) -> Result<(), ApplyError> {
    let id = Param::Uuid(knowledge_base.0);
    match event {
        KnowledgeBaseEvent::KnowledgeBaseCreated {
            knowledge_base_id,
            tenant_id,
            name,
            category,
            embedding_model,
            chunking,
        } => {
            check_same_entity(knowledge_base.0, knowledge_base_id.0, "knowledge base")?;
            transaction
                .execute(
                    "INSERT INTO knowledge_bases (id, user_id, name, category, embedding_model, chunking, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    &[
                        id,
                        Param::Uuid(tenant_id.0),
                        Param::text(name.as_str()),
                        Param::OptText(category.map(|category| category.as_str().to_owned())),
                        Param::OptText(json_column(&embedding_model)?),
                        Param::OptText(json_column(&chunking)?),
                        Param::Time(at),
                    ],
                )
                .await?;
        }
        KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id } => {
            // The link starts at the document's status now; a document not
            // in the registry yet is PENDING until its registration arrives.
            // Adding a linked document again keeps the first link.
            transaction
                .execute(
                    // the document may already be further along (a partitioned
                    // feed delivers its stream independently): take its status
                    // and, if later, its time, as the log order would have
                    "INSERT INTO knowledge_base_documents (knowledge_base_id, document_id, status, added_at, \
                     updated_at) VALUES ($1, $2, COALESCE((SELECT op_status FROM documents_registry WHERE id = $2), \
                     'PENDING'::op_status), $3, COALESCE((SELECT CASE WHEN updated_at > $3 THEN updated_at END \
                     FROM documents_registry WHERE id = $2), $3)) ON CONFLICT (knowledge_base_id, document_id) DO NOTHING",
                    &[id.clone(), Param::Uuid(document_id.0), Param::Time(at)],
                )
                .await?;
            touch_knowledge_base(transaction, id, at).await?;
        }
        KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id } => {
            transaction
                .execute(
                    "DELETE FROM knowledge_base_documents WHERE knowledge_base_id = $1 AND document_id = $2",
                    &[id.clone(), Param::Uuid(document_id.0)],
                )
                .await?;
            touch_knowledge_base(transaction, id, at).await?;
        }
        KnowledgeBaseEvent::KnowledgeBaseDeleted {} => {
            transaction
                .execute(
                    "DELETE FROM knowledge_base_documents WHERE knowledge_base_id = $1",
                    std::slice::from_ref(&id),
                )
                .await?;
            transaction
                .execute("DELETE FROM knowledge_bases WHERE id = $1", &[id])
                .await?;
        }
    }
    Ok(())
}

async fn touch_knowledge_base(transaction: &mut Writer, id: Param, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    transaction
        .execute(
            "UPDATE knowledge_bases SET updated_at = $2 WHERE id = $1",
            &[id, Param::Time(at)],
        )
        .await?;
    Ok(())
}

/// A value kept as JSON text in a column.
fn json_column<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>, ApplyError> {
    value
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|error| ApplyError::Event(format!("a column value does not encode: {error}")))
}
