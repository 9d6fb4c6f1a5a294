//! The queries of [`Registry`]. Every tenant-facing read filters by the
//! tenant, so another tenant's row reads as absent.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::tenant::ApiKeyScopes;
use domain::{ApiKeyId, DocumentId, KnowledgeBaseId, StreamId, TenantId};
use uuid::Uuid;

use super::generation::Writer;
use super::{
    ApiKeyRow, DocumentRow, DocumentVersionRow, DumpTable, DumpValue, KnowledgeBaseDocumentRow, KnowledgeBaseRow,
    PendingUploadRow, Registry, RegistryDump, RegistryError, RowReader, UserRow,
};
use crate::sql::{Param, Row};

const USER_COLUMNS: &str = "SELECT id, email, role::text AS role, created_at FROM user_clients";

const API_KEY_COLUMNS: &str = "SELECT key_id, user_id, secret_hash, role::text AS role, label, created_at, \
     expires_at, revoked_at, read_only, knowledge_base_ids::text AS knowledge_base_ids FROM api_keys";

/// `document_count` counts the links whose document is in the registry,
/// the ones [`Registry::knowledge_base_documents`] lists.
const KNOWLEDGE_BASE_COLUMNS: &str = "SELECT kb.id, kb.user_id, kb.name, kb.category, kb.embedding_model, \
     kb.chunking, kb.created_at, kb.updated_at, (SELECT COUNT(*) FROM knowledge_base_documents link \
     JOIN documents_registry doc ON doc.id = link.document_id \
     WHERE link.knowledge_base_id = kb.id) AS document_count FROM knowledge_bases kb";

const DOCUMENT_COLUMNS: &str = "SELECT id, user_id, file_name, content_type, size_bytes, sha256, object_key, \
     op_status::text AS op_status, error, chunk_count, embedding_model, attempts, created_at, updated_at \
     FROM documents_registry";

const PENDING_UPLOAD_COLUMNS: &str = "SELECT document_id, user_id, upload_id, staging_key, size_bytes, sha256, \
     knowledge_base_id, expires_at, created_at FROM pending_uploads";

/// Ids per `IN (…)` list: far below SQLite's bound on parameters.
const IDS_PER_QUERY: usize = 500;

impl Registry {
    /// The highest version of `stream_id` the registry has applied (0 for a
    /// stream it has not seen).
    pub async fn applied_version(&self, stream_id: &StreamId) -> Result<i64, RegistryError> {
        let action = || format!("read of the applied version of {stream_id}");
        let key = self.tables().await.map_err(failed(action))?.projection_key();
        let row = crate::sql::fetch_optional(
            &self.db,
            "SELECT version FROM projection_applied WHERE projection = $1 AND stream_id = $2",
            &[Param::text(key), Param::text(stream_id.as_str())],
        )
        .await
        .map_err(failed(action))?;
        match row {
            None => Ok(0),
            Some(row) => row.bookkeeping_int("version").map_err(failed(action)),
        }
    }

    /// Waits, bounded, until the registry has applied `stream_id` up to
    /// `version`: read-your-writes when the registry is fed from a
    /// partitioned broker, which has no global position to wait for.
    pub async fn wait_for_version(&self, stream_id: &StreamId, version: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match self.applied_version(stream_id).await {
                Ok(applied) if applied >= version => return true,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot check the registry's progress"),
            }
            if tokio::time::Instant::now() + pause > deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    pub async fn api_key(&self, key_id: &ApiKeyId) -> Result<Option<ApiKeyRow>, RegistryError> {
        let sql = format!("{API_KEY_COLUMNS} WHERE key_id = $1");
        self.fetch_optional(&sql, &[Param::text(key_id.0.as_str())])
            .await
            .map_err(failed(|| format!("read of api key {key_id}")))?
            .map(|row| api_key_row(&row))
            .transpose()
    }

    /// The tenant's keys, revoked and expired ones included, oldest first.
    pub async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRow>, RegistryError> {
        let sql = format!("{API_KEY_COLUMNS} WHERE user_id = $1 ORDER BY created_at, key_id");
        self.fetch_all(&sql, &[Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| format!("list of api keys of tenant {tenant}")))?
            .iter()
            .map(api_key_row)
            .collect()
    }

    pub async fn user(&self, tenant: TenantId) -> Result<Option<UserRow>, RegistryError> {
        let sql = format!("{USER_COLUMNS} WHERE id = $1");
        self.fetch_optional(&sql, &[Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| format!("read of tenant {tenant}")))?
            .map(|row| user_row(&row))
            .transpose()
    }

    /// The tenant's knowledge bases, oldest first.
    pub async fn list_knowledge_bases(&self, tenant: TenantId) -> Result<Vec<KnowledgeBaseRow>, RegistryError> {
        let sql = format!("{KNOWLEDGE_BASE_COLUMNS} WHERE kb.user_id = $1 ORDER BY kb.created_at, kb.id");
        self.fetch_all(&sql, &[Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| format!("list of knowledge bases of tenant {tenant}")))?
            .iter()
            .map(knowledge_base_row)
            .collect()
    }

    /// `None` when the knowledge base does not exist or is another tenant's.
    pub async fn knowledge_base(
        &self,
        tenant: TenantId,
        kb: KnowledgeBaseId,
    ) -> Result<Option<KnowledgeBaseRow>, RegistryError> {
        let sql = format!("{KNOWLEDGE_BASE_COLUMNS} WHERE kb.id = $1 AND kb.user_id = $2");
        self.fetch_optional(&sql, &[Param::Uuid(kb.0), Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| format!("read of knowledge base {kb} of tenant {tenant}")))?
            .map(|row| knowledge_base_row(&row))
            .transpose()
    }

    /// One page of the tenant's documents in upload order, and how many the
    /// tenant has in all. A negative limit or offset counts as 0.
    pub async fn list_documents(
        &self,
        tenant: TenantId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DocumentRow>, i64), RegistryError> {
        let sql = format!("{DOCUMENT_COLUMNS} WHERE user_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3");
        let action = || format!("list of documents of tenant {tenant}");
        let rows = self
            .fetch_all(
                &sql,
                &[
                    Param::Uuid(tenant.0),
                    Param::Int(limit.max(0)),
                    Param::Int(offset.max(0)),
                ],
            )
            .await
            .map_err(failed(action))?;
        let documents = rows.iter().map(document_row).collect::<Result<Vec<_>, _>>()?;
        let total = self
            .fetch_optional(
                "SELECT COUNT(*) AS total FROM documents_registry WHERE user_id = $1",
                &[Param::Uuid(tenant.0)],
            )
            .await
            .map_err(failed(action))?
            .map(|row| RowReader::new(&row, "documents_registry").keyed("count").int("total"))
            .transpose()?
            .unwrap_or(0);
        Ok((documents, total))
    }

    /// `None` when the document does not exist or is another tenant's.
    pub async fn document(&self, tenant: TenantId, id: DocumentId) -> Result<Option<DocumentRow>, RegistryError> {
        let sql = format!("{DOCUMENT_COLUMNS} WHERE id = $1 AND user_id = $2");
        self.fetch_optional(&sql, &[Param::Uuid(id.0), Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| format!("read of document {id} of tenant {tenant}")))?
            .map(|row| document_row(&row))
            .transpose()
    }

    /// Every version of the tenant's document, oldest first; empty for
    /// another tenant's.
    pub async fn document_versions(
        &self,
        tenant: TenantId,
        document: DocumentId,
    ) -> Result<Vec<DocumentVersionRow>, RegistryError> {
        let sql = "SELECT document_id, version, content_type, size_bytes, sha256, created_at FROM document_versions \
                   WHERE document_id = $1 AND user_id = $2 ORDER BY version";
        self.fetch_all(sql, &[Param::Uuid(document.0), Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| {
                format!("read of the versions of document {document} of tenant {tenant}")
            }))?
            .iter()
            .map(|row| {
                let reader = RowReader::new(row, "document_versions").keyed(document);
                Ok(DocumentVersionRow {
                    document_id: document,
                    version: reader.int("version")?,
                    content_type: reader.text("content_type")?,
                    size_bytes: reader.int("size_bytes")?,
                    sha256: reader.text("sha256")?,
                    created_at: reader.time("created_at")?,
                })
            })
            .collect()
    }

    /// The tenant's oldest document whose bytes have this SHA-256 (hex), if
    /// any: what an upload of the same bytes is answered with.
    pub async fn document_by_content(
        &self,
        tenant: TenantId,
        sha256: &str,
    ) -> Result<Option<DocumentRow>, RegistryError> {
        let sql = format!("{DOCUMENT_COLUMNS} WHERE user_id = $1 AND sha256 = $2 ORDER BY created_at, id LIMIT 1");
        self.fetch_optional(&sql, &[Param::Uuid(tenant.0), Param::Text(sha256.to_owned())])
            .await
            .map_err(failed(|| {
                format!("read of the documents of tenant {tenant} by content")
            }))?
            .map(|row| document_row(&row))
            .transpose()
    }

    /// The documents of the tenant's knowledge base in the order they were
    /// added; empty when the knowledge base is another tenant's.
    pub async fn knowledge_base_documents(
        &self,
        tenant: TenantId,
        kb: KnowledgeBaseId,
    ) -> Result<Vec<KnowledgeBaseDocumentRow>, RegistryError> {
        let sql = "SELECT link.document_id, doc.file_name, link.status::text AS status, link.added_at \
             FROM knowledge_base_documents link \
             JOIN knowledge_bases kb ON kb.id = link.knowledge_base_id \
             JOIN documents_registry doc ON doc.id = link.document_id \
             WHERE link.knowledge_base_id = $1 AND kb.user_id = $2 AND doc.user_id = $2 \
             ORDER BY link.added_at, link.document_id";
        self.fetch_all(sql, &[Param::Uuid(kb.0), Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| {
                format!("list of documents of knowledge base {kb} of tenant {tenant}")
            }))?
            .iter()
            .map(|row| {
                let reader = RowReader::new(row, "knowledge_base_documents");
                let document_id = DocumentId(reader.uuid("document_id")?);
                let reader = reader.keyed(format!("{kb}/{document_id}"));
                Ok(KnowledgeBaseDocumentRow {
                    document_id,
                    file_name: reader.text("file_name")?,
                    status: reader.status("status")?,
                    added_at: reader.time("added_at")?,
                })
            })
            .collect()
    }

    /// The tenant's knowledge bases that `document` is in; empty when it is
    /// in none or is another tenant's.
    pub async fn document_knowledge_bases(
        &self,
        tenant: TenantId,
        document: DocumentId,
    ) -> Result<Vec<KnowledgeBaseId>, RegistryError> {
        let sql = "SELECT link.knowledge_base_id FROM knowledge_base_documents link \
             JOIN knowledge_bases kb ON kb.id = link.knowledge_base_id \
             JOIN documents_registry doc ON doc.id = link.document_id \
             WHERE link.document_id = $1 AND kb.user_id = $2 AND doc.user_id = $2 \
             ORDER BY link.knowledge_base_id";
        self.fetch_all(sql, &[Param::Uuid(document.0), Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| {
                format!("list of knowledge bases of document {document} of tenant {tenant}")
            }))?
            .iter()
            .map(|row| {
                let reader = RowReader::new(row, "knowledge_base_documents").keyed(document);
                Ok(KnowledgeBaseId(reader.uuid("knowledge_base_id")?))
            })
            .collect()
    }

    /// The file names of those of `ids` that are the tenant's documents.
    pub async fn document_file_names(
        &self,
        tenant: TenantId,
        ids: &[DocumentId],
    ) -> Result<HashMap<DocumentId, String>, RegistryError> {
        let mut names = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let placeholders = (0..chunk.len())
                .map(|index| format!("${}", index + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql =
                format!("SELECT id, file_name FROM documents_registry WHERE user_id = $1 AND id IN ({placeholders})");
            let params: Vec<Param> = std::iter::once(Param::Uuid(tenant.0))
                .chain(chunk.iter().map(|id| Param::Uuid(id.0)))
                .collect();
            let rows = self.fetch_all(&sql, &params).await.map_err(failed(|| {
                format!("read of {} document names of tenant {tenant}", chunk.len())
            }))?;
            for row in &rows {
                let reader = RowReader::new(row, "documents_registry");
                let id = DocumentId(reader.uuid("id")?);
                let file_name = reader.keyed(id).text("file_name")?;
                names.insert(id, file_name);
            }
        }
        Ok(names)
    }

    /// Documents of every tenant still PENDING or PROCESSING, oldest first:
    /// what the processor's sweep picks up after a crash or a lost message.
    pub async fn unfinished_documents(&self, limit: i64) -> Result<Vec<DocumentId>, RegistryError> {
        let sql = "SELECT id FROM documents_registry WHERE op_status IN ('PENDING', 'PROCESSING') \
             ORDER BY created_at, id LIMIT $1";
        self.fetch_all(sql, &[Param::Int(limit.max(0))])
            .await
            .map_err(failed(|| "list of unfinished documents".to_owned()))?
            .iter()
            .map(|row| Ok(DocumentId(RowReader::new(row, "documents_registry").uuid("id")?)))
            .collect()
    }

    /// The tenant's pending upload of `document`; `None` when there is
    /// none or it is another tenant's.
    pub async fn pending_upload(
        &self,
        tenant: TenantId,
        document: DocumentId,
    ) -> Result<Option<PendingUploadRow>, RegistryError> {
        let sql = format!("{PENDING_UPLOAD_COLUMNS} WHERE document_id = $1 AND user_id = $2");
        self.fetch_optional(&sql, &[Param::Uuid(document.0), Param::Uuid(tenant.0)])
            .await
            .map_err(failed(|| {
                format!("read of the pending upload of document {document} of tenant {tenant}")
            }))?
            .map(|row| pending_upload_row(&row))
            .transpose()
    }

    /// Pending upload `upload_id` of `document`, whoever's it is: for the
    /// upload URL the API signs itself, whose signature is the credential.
    pub async fn pending_upload_by_id(
        &self,
        document: DocumentId,
        upload_id: Uuid,
    ) -> Result<Option<PendingUploadRow>, RegistryError> {
        let sql = format!("{PENDING_UPLOAD_COLUMNS} WHERE document_id = $1 AND upload_id = $2");
        self.fetch_optional(&sql, &[Param::Uuid(document.0), Param::Uuid(upload_id)])
            .await
            .map_err(failed(|| format!("read of upload {upload_id} of document {document}")))?
            .map(|row| pending_upload_row(&row))
            .transpose()
    }

    /// Pending uploads of every tenant that expired before `now`, the
    /// longest expired first: what the upload cleaner ends.
    pub async fn expired_pending_uploads(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<PendingUploadRow>, RegistryError> {
        let sql = format!("{PENDING_UPLOAD_COLUMNS} WHERE expires_at <= $1 ORDER BY expires_at, document_id LIMIT $2");
        self.fetch_all(&sql, &[Param::Time(now), Param::Int(limit.max(0))])
            .await
            .map_err(failed(|| "list of expired pending uploads".to_owned()))?
            .iter()
            .map(pending_upload_row)
            .collect()
    }

    /// Empties the registry and forgets the projection's checkpoint and
    /// applied versions in one transaction, so that the projection rebuilds
    /// it from the start of the log. A runner already running keeps its
    /// position in memory: stop it first and start a new one after.
    pub async fn reset(&self) -> Result<(), RegistryError> {
        let action = || "reset".to_owned();
        let mut writer = self.writer().await.map_err(projection_failed("reset"))?;
        let key = writer.tables.projection_key();
        // keys before tenants: api_keys references user_clients
        for table in [
            "pending_uploads",
            "document_versions",
            "knowledge_base_documents",
            "knowledge_bases",
            "documents_registry",
            "api_keys",
            "user_clients",
        ] {
            writer
                .execute(&format!("DELETE FROM {table}"), &[])
                .await
                .map_err(failed(|| format!("reset of {table}")))?;
        }
        crate::sql::delete_checkpoint(&mut writer.transaction, &key)
            .await
            .map_err(failed(action))?;
        for bookkeeping in ["projection_applied", "projection_offsets"] {
            writer
                .execute(
                    &format!("DELETE FROM {bookkeeping} WHERE projection = $1"),
                    &[Param::text(&key)],
                )
                .await
                .map_err(failed(action))?;
        }
        writer.transaction.commit().await.map_err(failed(action))
    }

    /// Every row of every registry table; see [`RegistryDump`]. Read in one
    /// transaction that excludes the projection's writes, so the tables
    /// agree with each other and with the checkpoint.
    pub async fn dump(&self) -> Result<RegistryDump, RegistryError> {
        let mut writer = self.writer().await.map_err(projection_failed("dump"))?;
        let mut tables = Vec::with_capacity(DUMPED_TABLES.len());
        for spec in DUMPED_TABLES {
            tables.push(dump_table(&mut writer, spec).await?);
        }
        // read only: dropping the transaction rolls it back
        Ok(RegistryDump { tables })
    }
}

/// The lock or the live generation could not be had.
fn projection_failed(action: &'static str) -> impl FnOnce(crate::runtime::ProjectionError) -> RegistryError {
    move |error| match error {
        crate::runtime::ProjectionError::Database { source, .. } => RegistryError::Database {
            action: action.to_owned(),
            source,
        },
        other => RegistryError::Busy {
            action: action.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn failed<F: FnOnce() -> String>(action: F) -> impl FnOnce(sqlx::Error) -> RegistryError {
    move |source| RegistryError::Database {
        action: action(),
        source,
    }
}

fn user_row(row: &Row) -> Result<UserRow, RegistryError> {
    let reader = RowReader::new(row, "user_clients");
    let id = TenantId(reader.uuid("id")?);
    let reader = reader.keyed(id);
    Ok(UserRow {
        id,
        email: reader.text("email")?,
        role: reader.role("role")?,
        created_at: reader.time("created_at")?,
    })
}

fn api_key_row(row: &Row) -> Result<ApiKeyRow, RegistryError> {
    let reader = RowReader::new(row, "api_keys");
    let key_id = ApiKeyId(reader.text("key_id")?);
    let reader = reader.keyed(&key_id);
    Ok(ApiKeyRow {
        tenant_id: TenantId(reader.uuid("user_id")?),
        secret_hash: reader.text("secret_hash")?,
        role: reader.role("role")?,
        label: reader.opt_text("label")?,
        created_at: reader.time("created_at")?,
        expires_at: reader.opt_time("expires_at")?,
        revoked_at: reader.opt_time("revoked_at")?,
        scopes: ApiKeyScopes {
            read_only: reader.bool("read_only")?,
            knowledge_base_ids: reader.opt_json("knowledge_base_ids")?,
        },
        key_id,
    })
}

fn knowledge_base_row(row: &Row) -> Result<KnowledgeBaseRow, RegistryError> {
    let reader = RowReader::new(row, "knowledge_bases");
    let id = KnowledgeBaseId(reader.uuid("id")?);
    let reader = reader.keyed(id);
    Ok(KnowledgeBaseRow {
        id,
        tenant_id: TenantId(reader.uuid("user_id")?),
        name: reader.text("name")?,
        category: reader.opt_text("category")?,
        embedding_model: reader.opt_json("embedding_model")?,
        chunking: reader.opt_json("chunking")?,
        document_count: reader.int("document_count")?,
        created_at: reader.time("created_at")?,
        updated_at: reader.time("updated_at")?,
    })
}

fn document_row(row: &Row) -> Result<DocumentRow, RegistryError> {
    let reader = RowReader::new(row, "documents_registry");
    let id = DocumentId(reader.uuid("id")?);
    let reader = reader.keyed(id);
    Ok(DocumentRow {
        id,
        tenant_id: TenantId(reader.uuid("user_id")?),
        file_name: reader.text("file_name")?,
        content_type: reader.text("content_type")?,
        size_bytes: reader.int("size_bytes")?,
        sha256: reader.text("sha256")?,
        object_key: reader.text("object_key")?,
        op_status: reader.status("op_status")?,
        error: reader.opt_text("error")?,
        chunk_count: reader.opt_int("chunk_count")?,
        embedding_model: reader.opt_json("embedding_model")?,
        attempts: reader.int("attempts")?,
        created_at: reader.time("created_at")?,
        updated_at: reader.time("updated_at")?,
    })
}

fn pending_upload_row(row: &Row) -> Result<PendingUploadRow, RegistryError> {
    let reader = RowReader::new(row, "pending_uploads");
    let document_id = DocumentId(reader.uuid("document_id")?);
    let reader = reader.keyed(document_id);
    Ok(PendingUploadRow {
        document_id,
        tenant_id: TenantId(reader.uuid("user_id")?),
        upload_id: reader.uuid("upload_id")?,
        staging_key: reader.text("staging_key")?,
        size_bytes: reader.int("size_bytes")?,
        sha256: reader.opt_text("sha256")?,
        knowledge_base_id: reader.opt_uuid("knowledge_base_id")?.map(KnowledgeBaseId),
        expires_at: reader.time("expires_at")?,
        created_at: reader.time("created_at")?,
    })
}

/// How a dumped column is stored, hence decoded.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    /// A Postgres enum, TEXT on SQLite: read as its text.
    Enum,
    Int,
    Bool,
    /// JSONB on Postgres, TEXT on SQLite: read as its text.
    Json,
    Uuid,
    Time,
}

struct DumpSpec {
    table: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Restricts shared bookkeeping tables to this projection's rows.
    filter: Option<&'static str>,
    order_by: &'static str,
}

const DUMPED_TABLES: &[DumpSpec] = &[
    DumpSpec {
        table: "user_clients",
        columns: &[
            ("id", Kind::Uuid),
            ("email", Kind::Text),
            ("role", Kind::Enum),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
        ],
        filter: None,
        order_by: "id",
    },
    DumpSpec {
        table: "api_keys",
        columns: &[
            ("key_id", Kind::Text),
            ("user_id", Kind::Uuid),
            ("secret_hash", Kind::Text),
            ("role", Kind::Enum),
            ("label", Kind::Text),
            ("created_at", Kind::Time),
            ("expires_at", Kind::Time),
            ("revoked_at", Kind::Time),
            ("read_only", Kind::Bool),
            ("knowledge_base_ids", Kind::Json),
        ],
        filter: None,
        order_by: "key_id",
    },
    DumpSpec {
        table: "documents_registry",
        columns: &[
            ("id", Kind::Uuid),
            ("user_id", Kind::Uuid),
            ("file_name", Kind::Text),
            ("content_type", Kind::Text),
            ("size_bytes", Kind::Int),
            ("sha256", Kind::Text),
            ("object_key", Kind::Text),
            ("lock_status", Kind::Enum),
            ("op_status", Kind::Enum),
            ("error", Kind::Text),
            ("attempts", Kind::Int),
            ("chunk_count", Kind::Int),
            ("embedder", Kind::Text),
            ("embedding_model", Kind::Text),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
        ],
        filter: None,
        order_by: "id",
    },
    DumpSpec {
        table: "knowledge_bases",
        columns: &[
            ("id", Kind::Uuid),
            ("user_id", Kind::Uuid),
            ("name", Kind::Text),
            ("category", Kind::Text),
            ("embedding_model", Kind::Text),
            ("chunking", Kind::Text),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
        ],
        filter: None,
        order_by: "id",
    },
    DumpSpec {
        table: "knowledge_base_documents",
        columns: &[
            ("knowledge_base_id", Kind::Uuid),
            ("document_id", Kind::Uuid),
            ("status", Kind::Enum),
            ("added_at", Kind::Time),
            ("updated_at", Kind::Time),
        ],
        filter: None,
        order_by: "knowledge_base_id, document_id",
    },
    DumpSpec {
        table: "document_versions",
        columns: &[
            ("document_id", Kind::Uuid),
            ("version", Kind::Int),
            ("user_id", Kind::Uuid),
            ("content_type", Kind::Text),
            ("size_bytes", Kind::Int),
            ("sha256", Kind::Text),
            ("object_key", Kind::Text),
            ("created_at", Kind::Time),
        ],
        filter: None,
        order_by: "document_id, version",
    },
    DumpSpec {
        table: "pending_uploads",
        columns: &[
            ("document_id", Kind::Uuid),
            ("user_id", Kind::Uuid),
            ("upload_id", Kind::Uuid),
            ("staging_key", Kind::Text),
            ("size_bytes", Kind::Int),
            ("sha256", Kind::Text),
            ("knowledge_base_id", Kind::Uuid),
            ("expires_at", Kind::Time),
            ("created_at", Kind::Time),
        ],
        filter: None,
        order_by: "document_id",
    },
    DumpSpec {
        table: "projection_checkpoints",
        columns: &[
            ("name", Kind::Text),
            ("commit_pos", Kind::Int),
            ("position", Kind::Int),
            ("updated_at", Kind::Time),
        ],
        filter: Some("name"),
        order_by: "name",
    },
    DumpSpec {
        table: "projection_applied",
        columns: &[
            ("projection", Kind::Text),
            ("stream_id", Kind::Text),
            ("version", Kind::Int),
        ],
        filter: Some("projection"),
        order_by: "projection, stream_id",
    },
];

async fn dump_table(transaction: &mut Writer, spec: &DumpSpec) -> Result<DumpTable, RegistryError> {
    let select = spec
        .columns
        .iter()
        .map(|(column, kind)| match kind {
            Kind::Enum | Kind::Json => format!("{column}::text AS {column}"),
            _ => (*column).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (filter, params) = match spec.filter {
        Some(column) => (
            format!(" WHERE {column} = $1"),
            vec![Param::text(transaction.tables.projection_key())],
        ),
        None => (String::new(), Vec::new()),
    };
    let sql = format!("SELECT {select} FROM {}{filter} ORDER BY {}", spec.table, spec.order_by);
    let rows = transaction
        .fetch_all(&sql, &params)
        .await
        .map_err(failed(|| format!("dump of {}", spec.table)))?;
    let mut dumped = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let reader = RowReader::new(row, spec.table).keyed(format!("#{index}"));
        let mut values = Vec::with_capacity(spec.columns.len());
        for (column, kind) in spec.columns {
            let value = match kind {
                Kind::Text | Kind::Enum | Kind::Json => reader.opt_text(column)?.map(DumpValue::Text),
                Kind::Int => reader.opt_int(column)?.map(DumpValue::Int),
                Kind::Bool => reader.opt_bool(column)?.map(DumpValue::Bool),
                Kind::Uuid => reader.opt_uuid(column)?.map(DumpValue::Uuid),
                Kind::Time => reader.opt_time(column)?.map(DumpValue::Time),
            };
            values.push(value.unwrap_or(DumpValue::Null));
        }
        dumped.push(values);
    }
    Ok(DumpTable {
        table: spec.table,
        columns: spec.columns.iter().map(|(column, _)| *column).collect(),
        rows: dumped,
    })
}
