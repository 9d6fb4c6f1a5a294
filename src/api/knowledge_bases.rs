//! Knowledge bases, their documents, and search.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::knowledge_base::{normalise_category, normalise_name, KnowledgeBaseCommand};
use domain::{ChunkingSettings, DocumentId, EmbeddingModel, KnowledgeBaseId, TenantId};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use projections::registry::KnowledgeBaseRow;
use uuid::Uuid;

use super::documents::reachable_document;
use super::error::ApiError;
use super::{ApiKeyAuth, Caller};
use crate::app::App;

#[derive(Tags)]
enum Tag {
    KnowledgeBases,
    Search,
}

#[derive(Object)]
struct CreateKnowledgeBase {
    name: String,
    category: Option<String>,
    /// How its documents are cut into chunks; unset: the server's defaults.
    chunking: Option<Chunking>,
}

/// Chunk sizes in the embedding model's tokens.
#[derive(Object)]
struct Chunking {
    /// At most what the model reads (254 for all-MiniLM-L6-v2).
    max_tokens: u32,
    /// Tokens of whole sentences a chunk repeats from the one before; less
    /// than half of `max_tokens`.
    overlap_tokens: u32,
}

/// The model every vector of a knowledge base comes from.
#[derive(Object)]
struct EmbeddingModelView {
    name: String,
    dimensions: u32,
    version: String,
}

#[derive(Object)]
struct KnowledgeBaseView {
    id: Uuid,
    name: String,
    category: Option<String>,
    /// None for knowledge bases from before models were pinned.
    embedding_model: Option<EmbeddingModelView>,
    chunking: Option<Chunking>,
    document_count: i64,
    created_at: DateTime<Utc>,
}

impl KnowledgeBaseView {
    /// The row as shown to its tenant, its sealed name and category opened.
    async fn of(app: &App, row: KnowledgeBaseRow) -> KnowledgeBaseView {
        let category = match &row.category {
            Some(stored) => Some(app.reveal(row.tenant_id, "category", stored).await),
            None => None,
        };
        KnowledgeBaseView {
            id: row.id.0,
            name: app.reveal(row.tenant_id, "name", &row.name).await,
            category,
            embedding_model: row.embedding_model.map(|model| EmbeddingModelView {
                name: model.name,
                dimensions: model.dimensions,
                version: model.version,
            }),
            chunking: row.chunking.map(|chunking| Chunking {
                max_tokens: chunking.max_tokens,
                overlap_tokens: chunking.overlap_tokens,
            }),
            document_count: row.document_count,
            created_at: row.created_at,
        }
    }
}

#[derive(Object)]
struct KnowledgeBaseList {
    items: Vec<KnowledgeBaseView>,
}

#[derive(ApiResponse)]
enum CreateKnowledgeBaseResponse {
    #[oai(status = 201)]
    Created(Json<KnowledgeBaseView>),
}

#[derive(ApiResponse)]
enum Deleted {
    #[oai(status = 204)]
    Deleted,
}

#[derive(Object)]
struct AddDocument {
    document_id: Uuid,
}

#[derive(Object)]
struct LinkView {
    document_id: Uuid,
    file_name: String,
    /// PENDING, PROCESSING, SUCCESS or FAILED: whether the document is searchable here.
    status: String,
    added_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
enum AddDocumentResponse {
    #[oai(status = 201)]
    Added(Json<LinkView>),
}

#[derive(Object)]
struct LinkList {
    items: Vec<LinkView>,
}

#[derive(Object)]
struct SearchRequest {
    #[oai(validator(min_length = 1, max_length = 4096))]
    query: String,
    #[oai(default = "default_top_k", validator(minimum(value = "1"), maximum(value = "100")))]
    top_k: u32,
}

fn default_top_k() -> u32 {
    5
}

#[derive(Object)]
struct SearchHit {
    document_id: Uuid,
    file_name: String,
    chunk_index: u32,
    text: String,
    /// Where in the document the chunk is.
    citation: CitationView,
    score: f32,
}

/// Where a chunk is, as a reader would look it up; each part only where the
/// format has it. Numbers are 1-based.
#[derive(Object)]
struct CitationView {
    /// The headings above the chunk, outermost first.
    section: Vec<String>,
    /// The pdf pages the chunk runs over.
    page_start: Option<u32>,
    page_end: Option<u32>,
    /// The spreadsheet sheet and rows (csv: rows) it holds.
    sheet: Option<String>,
    row_start: Option<u64>,
    row_end: Option<u64>,
    /// The presentation slide.
    slide: Option<u32>,
}

impl From<actors::artifact::Citation> for CitationView {
    fn from(citation: actors::artifact::Citation) -> Self {
        CitationView {
            section: citation.section,
            page_start: citation.page_start,
            page_end: citation.page_end,
            sheet: citation.sheet,
            row_start: citation.row_start,
            row_end: citation.row_end,
            slide: citation.slide,
        }
    }
}

#[derive(Object)]
struct SearchResponse {
    hits: Vec<SearchHit>,
}

/// The caller's knowledge base, or 404 exactly as if it did not exist:
/// also one outside the scope of the caller's key.
async fn owned_knowledge_base(app: &App, caller: &Caller, id: Uuid) -> Result<KnowledgeBaseRow, ApiError> {
    let knowledge_base_id = KnowledgeBaseId(id);
    if !caller.reaches(knowledge_base_id) {
        return Err(ApiError::not_found("knowledge base", knowledge_base_id));
    }
    app.registry
        .knowledge_base(caller.tenant_id, knowledge_base_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("knowledge base", knowledge_base_id))
}

async fn link_view(
    app: &App,
    caller: &Caller,
    kb: KnowledgeBaseId,
    document: DocumentId,
) -> Result<LinkView, ApiError> {
    let link = app
        .registry
        .knowledge_base_documents(caller.tenant_id, kb)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|link| link.document_id == document)
        .ok_or_else(|| ApiError::Unavailable(format!("link {kb}/{document} is not visible yet")))?;
    Ok(LinkView {
        document_id: link.document_id.0,
        file_name: app.reveal(caller.tenant_id, "file_name", &link.file_name).await,
        status: link.status.as_str().to_owned(),
        added_at: link.added_at,
    })
}

pub struct KnowledgeBasesApi;

#[OpenApi(prefix_path = "/v1")]
impl KnowledgeBasesApi {
    /// Create a knowledge base.
    #[oai(path = "/knowledge-bases", method = "post", tag = "Tag::KnowledgeBases")]
    async fn create(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        body: Json<CreateKnowledgeBase>,
    ) -> poem::Result<CreateKnowledgeBaseResponse> {
        let caller = auth.0;
        // a key limited to knowledge bases could not reach the new one
        caller.require_tenant_wide("create knowledge bases")?;
        let knowledge_base_id = KnowledgeBaseId(Uuid::now_v7());
        let invalid = |error: domain::DomainError| ApiError::invalid(error.to_string());
        let name = normalise_name(&body.name).map_err(invalid)?;
        let category = body
            .category
            .as_deref()
            .map(normalise_category)
            .transpose()
            .map_err(invalid)?;
        let chunking = body.chunking.as_ref().map_or(
            ChunkingSettings {
                max_tokens: app.config.chunk_max_tokens,
                overlap_tokens: app.config.chunk_overlap_tokens,
            },
            |chunking| ChunkingSettings {
                max_tokens: chunking.max_tokens,
                overlap_tokens: chunking.overlap_tokens,
            },
        );
        let model_max = u32::try_from(app.embedder.max_input_tokens()).unwrap_or(u32::MAX);
        chunking.validate(model_max).map_err(invalid)?;
        let sealed_name = app
            .vault
            .seal(caller.tenant_id, "name", &name)
            .await
            .map_err(ApiError::internal)?;
        let sealed_category = match &category {
            Some(category) => Some(
                app.vault
                    .seal(caller.tenant_id, "category", category)
                    .await
                    .map_err(ApiError::internal)?,
            ),
            None => None,
        };
        let outcome = app
            .actors
            .knowledge_bases
            .execute(
                knowledge_base_id.stream_id(),
                KnowledgeBaseCommand::Create {
                    knowledge_base_id,
                    tenant_id: caller.tenant_id,
                    name,
                    category,
                    sealed_name,
                    sealed_category,
                    embedding_model: app.embedder.model().clone(),
                    chunking,
                },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        let row = owned_knowledge_base(&app, &caller, knowledge_base_id.0).await?;
        Ok(CreateKnowledgeBaseResponse::Created(Json(
            KnowledgeBaseView::of(&app, row).await,
        )))
    }

    /// The caller's knowledge bases: those its key reaches.
    #[oai(path = "/knowledge-bases", method = "get", tag = "Tag::KnowledgeBases")]
    async fn list(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth) -> poem::Result<Json<KnowledgeBaseList>> {
        let caller = auth.0;
        let rows = app
            .registry
            .list_knowledge_bases(caller.tenant_id)
            .await
            .map_err(ApiError::internal)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.into_iter().filter(|row| caller.reaches(row.id)) {
            items.push(KnowledgeBaseView::of(&app, row).await);
        }
        Ok(Json(KnowledgeBaseList { items }))
    }

    /// One knowledge base.
    #[oai(path = "/knowledge-bases/:id", method = "get", tag = "Tag::KnowledgeBases")]
    async fn get(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
    ) -> poem::Result<Json<KnowledgeBaseView>> {
        let row = owned_knowledge_base(&app, &auth.0, id.0).await?;
        Ok(Json(KnowledgeBaseView::of(&app, row).await))
    }

    /// Delete a knowledge base (its documents stay).
    #[oai(path = "/knowledge-bases/:id", method = "delete", tag = "Tag::KnowledgeBases")]
    async fn delete(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<Deleted> {
        let caller = auth.0;
        let row = owned_knowledge_base(&app, &caller, id.0).await?;
        let outcome = app
            .actors
            .knowledge_bases
            .execute(row.id.stream_id(), KnowledgeBaseCommand::Delete, caller.metadata())
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        Ok(Deleted::Deleted)
    }

    /// Add one of the caller's documents to a knowledge base.
    #[oai(
        path = "/knowledge-bases/:id/documents",
        method = "post",
        tag = "Tag::KnowledgeBases"
    )]
    async fn add_document(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
        body: Json<AddDocument>,
    ) -> poem::Result<AddDocumentResponse> {
        let caller = auth.0;
        let kb = owned_knowledge_base(&app, &caller, id.0).await?;
        let document_id = DocumentId(body.document_id);
        add_document_to_knowledge_base(&app, &caller, kb.id, document_id).await?;
        Ok(AddDocumentResponse::Added(Json(
            link_view(&app, &caller, kb.id, document_id).await?,
        )))
    }

    /// Remove a document from a knowledge base (the document stays).
    #[oai(
        path = "/knowledge-bases/:id/documents/:document_id",
        method = "delete",
        tag = "Tag::KnowledgeBases"
    )]
    async fn remove_document(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
        document_id: Path<Uuid>,
    ) -> poem::Result<Deleted> {
        let caller = auth.0;
        let kb = owned_knowledge_base(&app, &caller, id.0).await?;
        let outcome = app
            .actors
            .knowledge_bases
            .execute(
                kb.id.stream_id(),
                KnowledgeBaseCommand::RemoveDocument {
                    document_id: DocumentId(document_id.0),
                },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        Ok(Deleted::Deleted)
    }

    /// The documents of a knowledge base with the status of each.
    #[oai(path = "/knowledge-bases/:id/documents", method = "get", tag = "Tag::KnowledgeBases")]
    async fn list_documents(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
    ) -> poem::Result<Json<LinkList>> {
        let caller = auth.0;
        let kb = owned_knowledge_base(&app, &caller, id.0).await?;
        let links = app
            .registry
            .knowledge_base_documents(caller.tenant_id, kb.id)
            .await
            .map_err(ApiError::internal)?;
        let mut items = Vec::with_capacity(links.len());
        for link in links {
            items.push(LinkView {
                document_id: link.document_id.0,
                file_name: app.reveal(caller.tenant_id, "file_name", &link.file_name).await,
                status: link.status.as_str().to_owned(),
                added_at: link.added_at,
            });
        }
        Ok(Json(LinkList { items }))
    }

    /// Semantic search over the processed documents of a knowledge base.
    #[oai(path = "/knowledge-bases/:id/search", method = "post", tag = "Tag::Search")]
    async fn search(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
        body: Json<SearchRequest>,
    ) -> poem::Result<Json<SearchResponse>> {
        let caller = auth.0;
        let kb = owned_knowledge_base(&app, &caller, id.0).await?;
        let vector = app
            .embedder
            .embed(std::slice::from_ref(&body.query))
            .await
            .map_err(ApiError::internal)?
            .pop()
            .ok_or_else(|| ApiError::internal("embedder returned no vector"))?;
        let hits = app
            .vector_index()?
            .search(kb.id, &vector, body.top_k as usize)
            .await
            .map_err(ApiError::internal)?;
        let ids: Vec<DocumentId> = hits.iter().map(|hit| hit.document_id).collect();
        let names = app
            .registry
            .document_file_names(caller.tenant_id, &ids)
            .await
            .map_err(ApiError::internal)?;
        // a hit whose document left the registry (deleted a moment ago) is dropped
        let mut shown = Vec::with_capacity(hits.len());
        for hit in hits {
            let Some(stored) = names.get(&hit.document_id) else {
                continue;
            };
            shown.push(SearchHit {
                document_id: hit.document_id.0,
                file_name: app.reveal(caller.tenant_id, "file_name", stored).await,
                chunk_index: hit.chunk_index,
                text: hit.text,
                citation: hit.citation.into(),
                score: hit.score,
            });
        }
        Ok(Json(SearchResponse { hits: shown }))
    }
}

/// Links a document to a knowledge base after checking the caller reaches
/// it: a key limited to knowledge bases must not bring a document it cannot
/// see into one it can.
async fn add_document_to_knowledge_base(
    app: &App,
    caller: &Caller,
    knowledge_base_id: KnowledgeBaseId,
    document_id: DocumentId,
) -> Result<(), ApiError> {
    let document = reachable_document(app, caller, document_id.0).await?;
    link_document(
        app,
        caller,
        knowledge_base_id,
        document_id,
        document.tenant_id,
        document.embedding_model,
    )
    .await
}

/// Links a document whose owner is already known: an upload links the
/// document it has just registered without waiting for the registry to show
/// it, so uploads go on while a projector is behind or down.
pub(super) async fn link_document(
    app: &App,
    caller: &Caller,
    knowledge_base_id: KnowledgeBaseId,
    document_id: DocumentId,
    document_tenant: TenantId,
    document_model: Option<EmbeddingModel>,
) -> Result<(), ApiError> {
    let outcome = app
        .actors
        .knowledge_bases
        .execute(
            knowledge_base_id.stream_id(),
            KnowledgeBaseCommand::AddDocument {
                document_id,
                document_tenant,
                document_model,
            },
            caller.metadata(),
        )
        .await?;
    app.settle(outcome.written).await;
    Ok(())
}
