//! Documents: upload, list, read, delete.

use std::sync::Arc;

use actors::artifact::sha256_hex;
use chrono::{DateTime, Utc};
use domain::document::{DocumentCommand, FileName};
use domain::{DocumentId, KnowledgeBaseId};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiResponse, Multipart, Object, OpenApi, Tags};
use projections::registry::DocumentRow;
use uuid::Uuid;

use super::error::ApiError;
use super::knowledge_bases::link_document;
use super::{ApiKeyAuth, Caller};
use crate::app::App;
use crate::pipeline::extract::{is_supported, SUPPORTED_EXTENSIONS};

#[derive(Tags)]
enum Tag {
    Documents,
}

#[derive(Multipart)]
struct UploadForm {
    file: Upload,
    knowledge_base_id: Option<String>,
}

#[derive(Object)]
struct Accepted {
    id: Uuid,
    status: String,
}

#[derive(ApiResponse)]
enum UploadResponse {
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
}

#[derive(Object)]
struct DocumentView {
    id: Uuid,
    file_name: String,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    /// PENDING, PROCESSING, SUCCESS or FAILED
    status: String,
    error: Option<String>,
    chunk_count: Option<i64>,
    attempts: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl DocumentView {
    /// The row as shown to its tenant, its sealed file name opened.
    async fn of(app: &App, row: DocumentRow) -> DocumentView {
        let file_name = app.reveal(row.tenant_id, "file_name", &row.file_name).await;
        DocumentView {
            id: row.id.0,
            file_name,
            content_type: row.content_type,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            status: row.op_status.as_str().to_owned(),
            error: row.error,
            chunk_count: row.chunk_count,
            attempts: row.attempts,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Object)]
struct DocumentPage {
    items: Vec<DocumentView>,
    total: i64,
    limit: u32,
    offset: u32,
}

#[derive(ApiResponse)]
enum Deleted {
    #[oai(status = 204)]
    Deleted,
}

/// The caller's document, or 404 exactly as if it did not exist: also one
/// that a key limited to knowledge bases cannot reach, since it is in none
/// of them. For such a key the tenant's knowledge bases the document is in
/// come with it; any other key needs no such read and gets `None`.
async fn owned_document(
    app: &App,
    caller: &Caller,
    id: Uuid,
) -> Result<(DocumentRow, Option<Vec<KnowledgeBaseId>>), ApiError> {
    let document_id = DocumentId(id);
    let not_found = || ApiError::not_found("document", document_id);
    let document = app
        .registry
        .document(caller.tenant_id, document_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    if caller.scopes.knowledge_base_ids.is_none() {
        return Ok((document, None));
    }
    let knowledge_bases = app
        .registry
        .document_knowledge_bases(caller.tenant_id, document_id)
        .await
        .map_err(ApiError::internal)?;
    if !knowledge_bases.iter().any(|kb| caller.reaches(*kb)) {
        return Err(not_found());
    }
    Ok((document, Some(knowledge_bases)))
}

/// [`owned_document`] alone, for the routes that only read it or link it.
pub(super) async fn reachable_document(app: &App, caller: &Caller, id: Uuid) -> Result<DocumentRow, ApiError> {
    Ok(owned_document(app, caller, id).await?.0)
}

pub struct DocumentsApi;

#[OpenApi(prefix_path = "/v1")]
impl DocumentsApi {
    /// Upload a document (multipart field `file`, optionally `knowledge_base_id`);
    /// it is processed in the background.
    #[oai(path = "/documents", method = "post", tag = "Tag::Documents")]
    async fn upload(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, form: UploadForm) -> poem::Result<UploadResponse> {
        let caller = auth.0;
        let file_name = FileName::parse(form.file.file_name().unwrap_or_default())
            .map_err(|error| ApiError::invalid(error.to_string()))?;
        let extension = file_name.extension();
        if !extension.as_deref().is_some_and(is_supported) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "file {} has an unsupported type: supported extensions are {}",
                file_name.as_str(),
                SUPPORTED_EXTENSIONS.join(", ")
            ))
            .into());
        }
        let limit = app.config.max_upload_bytes;
        if form.file.size() > limit {
            return Err(ApiError::PayloadTooLarge { limit }.into());
        }
        let knowledge_base = match form.knowledge_base_id.as_deref().map(str::trim) {
            None | Some("") => {
                caller.require_tenant_wide("upload a document outside a knowledge base")?;
                None
            }
            Some(raw) => {
                let id: Uuid = raw
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("knowledge_base_id {raw:?} is not a uuid")))?;
                if !caller.reaches(KnowledgeBaseId(id)) {
                    return Err(ApiError::not_found("knowledge base", id).into());
                }
                let kb = app
                    .registry
                    .knowledge_base(caller.tenant_id, KnowledgeBaseId(id))
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::not_found("knowledge base", id))?;
                Some(kb.id)
            }
        };
        // clients such as curl -F send octet-stream for any file: the
        // extension, already checked against the allow-list, says more
        let content_type = match form.file.content_type() {
            Some(declared) if declared != "application/octet-stream" => declared.to_owned(),
            _ => crate::pipeline::extract::content_type_for(&file_name.extension().unwrap_or_default()).to_owned(),
        };
        let bytes = form.file.into_vec().await.map_err(ApiError::internal)?;
        let document_id = DocumentId::for_file(caller.tenant_id, file_name.as_str());
        // the bytes are stored before the event that names them, under a key
        // of their own, so a refused registration can remove exactly them
        let object_key = format!(
            "tenants/{}/documents/{}/{}",
            caller.tenant_id,
            document_id,
            Uuid::now_v7()
        );
        let sha256 = sha256_hex(&bytes);
        let size_bytes = bytes.len() as u64;
        let sealed_file_name = app
            .vault
            .seal(caller.tenant_id, "file_name", file_name.as_str())
            .await
            .map_err(ApiError::internal)?;
        app.objects.put(&object_key, bytes).await.map_err(ApiError::internal)?;
        let registered = app
            .actors
            .documents
            .execute(
                document_id.stream_id(),
                DocumentCommand::Register {
                    document_id,
                    tenant_id: caller.tenant_id,
                    file_name,
                    sealed_file_name,
                    content_type,
                    size_bytes,
                    sha256,
                    object_key: object_key.clone(),
                },
                caller.metadata(),
            )
            .await;
        let registered = match registered {
            Ok(outcome) => outcome,
            Err(error) => {
                if let Err(cleanup) = app.objects.delete(&object_key).await {
                    tracing::warn!(%object_key, error = %cleanup, "could not remove bytes of a refused upload");
                }
                return Err(ApiError::from(error).into());
            }
        };
        app.settle(registered.written).await;
        if let Some(kb) = knowledge_base {
            link_document(&app, &caller, kb, document_id, caller.tenant_id).await?;
        }
        Ok(UploadResponse::Accepted(Json(Accepted {
            id: document_id.0,
            status: "PENDING".into(),
        })))
    }

    /// The caller's documents, oldest first.
    #[oai(path = "/documents", method = "get", tag = "Tag::Documents")]
    async fn list(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<u32>,
        #[oai(default)] offset: Query<u32>,
    ) -> poem::Result<Json<DocumentPage>> {
        auth.0
            .require_tenant_wide("list every document: list those of a knowledge base instead")?;
        let (rows, total) = app
            .registry
            .list_documents(auth.0.tenant_id, limit.0 as i64, offset.0 as i64)
            .await
            .map_err(ApiError::internal)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            items.push(DocumentView::of(&app, row).await);
        }
        Ok(Json(DocumentPage {
            items,
            total,
            limit: limit.0,
            offset: offset.0,
        }))
    }

    /// One document and its processing status.
    #[oai(path = "/documents/:id", method = "get", tag = "Tag::Documents")]
    async fn get(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<Json<DocumentView>> {
        let row = reachable_document(&app, &auth.0, id.0).await?;
        Ok(Json(DocumentView::of(&app, row).await))
    }

    /// Delete a document: it leaves every knowledge base and search.
    #[oai(path = "/documents/:id", method = "delete", tag = "Tag::Documents")]
    async fn delete(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<Deleted> {
        let caller = auth.0;
        let (document, knowledge_bases) = owned_document(&app, &caller, id.0).await?;
        // a deleted document leaves every knowledge base it is in: a key
        // limited to some of them must not empty the others
        // (which ones is not said: the key is not to learn of them)
        if knowledge_bases.iter().flatten().any(|kb| !caller.reaches(*kb)) {
            return Err(ApiError::KnowledgeBaseScopedKey {
                key_id: caller.key_id.to_string(),
                action: format!(
                    "delete document {}, which is also in knowledge bases outside its scope",
                    document.id
                ),
            }
            .into());
        }
        let outcome = app
            .actors
            .documents
            .execute(document.id.stream_id(), DocumentCommand::Delete, caller.metadata())
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        if let Err(error) = app.objects.delete(&document.object_key).await {
            tracing::warn!(document_id = %document.id, %error, "could not delete document bytes");
        }
        Ok(Deleted::Deleted)
    }
}

fn default_limit() -> u32 {
    50
}
