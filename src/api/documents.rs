//! Documents: upload, list, read, delete.

use std::sync::{Arc, Mutex, PoisonError};

use actors::objects::{ByteStream, ObjectStore, ObjectStoreError};
use chrono::{DateTime, Utc};
use domain::document::{DocumentCommand, DocumentEvent, FileName};
use domain::{DocumentId, KnowledgeBaseId, Sealed};
use futures::StreamExt;
use poem::web::{Data, Field, Multipart};
use poem::{FromRequest, Request, RequestBody};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::{impl_apirequest_for_payload, ApiResponse, Object, OpenApi, Tags};
use projections::registry::DocumentRow;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::error::ApiError;
use super::knowledge_bases::link_document;
use super::{ApiKeyAuth, Caller};
use crate::app::App;
use crate::pipeline::extract::{is_supported, resolve_content_type, SUPPORTED_EXTENSIONS};

#[derive(Tags)]
enum Tag {
    Documents,
}

/// The body of an upload: a multipart form read field by field as it
/// arrives, so that the file's bytes flow into the object store and are
/// never held whole. poem-openapi's `Multipart` derive is not used: it
/// spools every file field to a temporary file before the route runs, so
/// the whole upload would sit on local disk in plaintext, past the
/// encryption and before any check (and in memory where `/tmp` is a tmpfs).
/// The schema below documents the form that derive would have described.
struct UploadBody(Multipart);

impl Payload for UploadBody {
    const CONTENT_TYPE: &'static str = "multipart/form-data";

    fn check_content_type(content_type: &str) -> bool {
        content_type
            .split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(Self::CONTENT_TYPE))
    }

    fn schema_ref() -> MetaSchemaRef {
        let field = |schema: MetaSchema, description: &'static str| {
            MetaSchemaRef::Inline(Box::new(MetaSchema {
                description: Some(description),
                ..schema
            }))
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            required: vec!["file"],
            properties: vec![
                (
                    "file",
                    field(
                        MetaSchema::new_with_format("string", "binary"),
                        "The document, at most max_upload_bytes. Its file name (1 to 255 bytes and 200 \
                         characters, NFC, without path separators, control or bidirectional formatting \
                         characters) names it; its extension (.txt, .text, .md, .markdown) says how it is \
                         read, and its content type, when not application/octet-stream, must be one the \
                         extension allows.",
                    ),
                ),
                (
                    "knowledge_base_id",
                    field(
                        MetaSchema::new_with_format("string", "uuid"),
                        "A knowledge base of the caller's to add the document to. Sent before the file, a \
                         refused one costs no upload.",
                    ),
                ),
            ],
            ..MetaSchema::new("object")
        }))
    }
}

impl ParsePayload for UploadBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(UploadBody(Multipart::from_request(request, body).await?))
    }
}

// the extractor a payload type gets: content type checked, then parsed
impl_apirequest_for_payload!(UploadBody);

/// The most bytes of the `knowledge_base_id` field: a uuid, with room for
/// whitespace around it.
const MAX_TEXT_FIELD_BYTES: u64 = 256;

/// The pieces an uploaded file is read and stored in.
const UPLOAD_READ_BYTES: usize = 64 * 1024;

/// What a file's bytes came to on their way into the store.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) hasher: Sha256,
    pub(super) bytes: u64,
    /// The body went past the limit and was cut off there.
    pub(super) over_limit: bool,
}

/// The tally of a body being read, shared with the stream that counts it.
#[derive(Clone, Default)]
pub(super) struct SharedTally(Arc<Mutex<Tally>>);

impl SharedTally {
    /// What was counted so far; the stream is done with it.
    pub(super) fn take(&self) -> Tally {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// `body`, hashed and counted as it passes; past `limit` bytes it fails, so
/// a store it flows into keeps nothing.
pub(super) fn tallied(body: ByteStream, limit: u64) -> (ByteStream, SharedTally) {
    let tally = SharedTally::default();
    let counted = {
        let tally = tally.clone();
        body.map(move |piece| {
            let piece = piece?;
            let mut tally = tally.0.lock().unwrap_or_else(PoisonError::into_inner);
            tally.bytes += piece.len() as u64;
            if tally.bytes > limit {
                tally.over_limit = true;
                return Err(std::io::Error::other(format!(
                    "the body is larger than the limit of {limit} bytes"
                )));
            }
            tally.hasher.update(&piece);
            Ok(piece)
        })
        .boxed()
    };
    (counted, tally)
}

/// A file whose bytes are stored and that no event names yet.
struct StoredFile {
    document_id: DocumentId,
    file_name: FileName,
    sealed_file_name: Sealed,
    content_type: &'static str,
    size_bytes: u64,
    sha256: String,
    object: UnclaimedObject,
}

/// An object that nothing names yet. It is removed unless claimed: at once
/// by [`UnclaimedObject::discard`] when the upload is refused, and, when
/// the request is dropped before (the client went away), in the background,
/// so a refused or abandoned upload leaves no bytes behind. It is claimed
/// before the command that names it is sent, since the actor carries out a
/// command whose sender is gone.
pub(super) struct UnclaimedObject {
    objects: Arc<dyn ObjectStore>,
    key: Option<String>,
}

impl UnclaimedObject {
    pub(super) fn new(objects: Arc<dyn ObjectStore>, key: String) -> UnclaimedObject {
        UnclaimedObject {
            objects,
            key: Some(key),
        }
    }

    /// The key, now the caller's to name in an event (or remove).
    pub(super) fn claim(mut self) -> String {
        self.key.take().expect("an unclaimed object has its key")
    }

    pub(super) async fn discard(mut self) {
        if let Some(key) = self.key.take() {
            remove_object(self.objects.as_ref(), &key).await;
        }
    }
}

impl Drop for UnclaimedObject {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let objects = self.objects.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { remove_object(objects.as_ref(), &key).await });
        }
    }
}

pub(super) async fn remove_object(objects: &dyn ObjectStore, object_key: &str) {
    if let Err(error) = objects.delete(object_key).await {
        tracing::warn!(%object_key, %error, "could not remove bytes of a refused upload");
    }
}

/// The multipart error as the client is told it.
fn unreadable_form(error: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_upload(format!(
        "the multipart form cannot be read: {}",
        error.to_string().to_lowercase()
    ))
}

/// A short text field, read bounded: the body bound is an upload's.
async fn read_text_field(field: Field, name: &str) -> Result<String, ApiError> {
    let reader = field.into_async_read();
    tokio::pin!(reader);
    let mut bytes = Vec::new();
    reader
        .take(MAX_TEXT_FIELD_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(unreadable_form)?;
    if bytes.len() as u64 > MAX_TEXT_FIELD_BYTES {
        return Err(ApiError::invalid_upload(format!(
            "field {name} is longer than {MAX_TEXT_FIELD_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid_upload(format!("field {name} is not utf-8 text")))
}

/// The knowledge base an upload names, if it names one: the caller's own
/// and one its key reaches, else 404 as another tenant's would be.
pub(super) async fn upload_knowledge_base(
    app: &App,
    caller: &Caller,
    raw: &str,
) -> Result<Option<KnowledgeBaseId>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let id: Uuid = raw
        .parse()
        .map_err(|_| ApiError::invalid(format!("knowledge_base_id {raw:?} is not a uuid")))?;
    if !caller.reaches(KnowledgeBaseId(id)) {
        return Err(ApiError::not_found("knowledge base", id));
    }
    let kb = app
        .registry
        .knowledge_base(caller.tenant_id, KnowledgeBaseId(id))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("knowledge base", id))?;
    Ok(Some(kb.id))
}

/// A file a new document may be made of, by its name and declared content
/// type: a safe name (400 otherwise), an extension the pipeline extracts and
/// a content type that extension allows (415 otherwise). Gives the name and
/// the content type to record.
pub(super) fn accepted_file(raw_name: &str, declared: Option<&str>) -> Result<(FileName, &'static str), ApiError> {
    let file_name = FileName::parse(raw_name).map_err(ApiError::invalid_file_name)?;
    let extension = file_name.extension().unwrap_or_default();
    if !is_supported(&extension) {
        let what = match extension.as_str() {
            "" => "files without an extension are".to_owned(),
            extension => format!("files with extension .{extension} are"),
        };
        return Err(ApiError::UnsupportedMediaType(format!(
            "{what} not supported: supported extensions are {}",
            SUPPORTED_EXTENSIONS.join(", ")
        )));
    }
    let content_type = resolve_content_type(&extension, declared)
        .map_err(|mismatch| ApiError::ContentTypeMismatch(mismatch.to_string()))?;
    Ok((file_name, content_type))
}

/// Checks the file's name and type from its part headers, then streams its
/// bytes into the object store (which encrypts them), hashing and counting
/// them on the way. Past `max_upload_bytes` the stream fails, so the store
/// keeps nothing, and the upload is refused with 413.
async fn store_file(app: &App, caller: &Caller, field: Field) -> Result<StoredFile, ApiError> {
    let raw_name = field
        .file_name()
        .ok_or_else(|| ApiError::invalid_file_name("field file has no file name"))?;
    let (file_name, content_type) = accepted_file(raw_name, field.content_type())?;
    let document_id = DocumentId::for_file(caller.tenant_id, file_name.as_str());
    let sealed_file_name = app
        .vault
        .seal(caller.tenant_id, "file_name", file_name.as_str())
        .await
        .map_err(ApiError::internal)?;
    // under a key of its own, so a refused registration removes exactly
    // these bytes and never an earlier upload's
    let object_key = format!(
        "tenants/{}/documents/{}/{}",
        caller.tenant_id,
        document_id,
        Uuid::now_v7()
    );
    let limit = app.config.max_upload_bytes;
    let reader = tokio_util::io::ReaderStream::with_capacity(field.into_async_read(), UPLOAD_READ_BYTES).boxed();
    let (body, tally) = tallied(reader, limit as u64);
    let stored = app.objects.put_stream(&object_key, body).await;
    let tally = tally.take();
    match stored {
        Ok(size_bytes) => {
            debug_assert_eq!(size_bytes, tally.bytes, "the store took every byte read");
            Ok(StoredFile {
                document_id,
                file_name,
                sealed_file_name,
                content_type,
                size_bytes,
                sha256: hex::encode(tally.hasher.finalize()),
                object: UnclaimedObject::new(app.objects.clone(), object_key),
            })
        }
        // the store kept nothing of a body that failed
        Err(_) if tally.over_limit => Err(ApiError::PayloadTooLarge { limit }),
        Err(ObjectStoreError::Body { source, .. }) => Err(unreadable_form(source)),
        Err(error) => Err(ApiError::internal(error)),
    }
}

/// Reads the form: the knowledge base and the file in either order (other
/// fields are skipped). The file is stored as it arrives; whatever is
/// refused after that discards it before answering.
async fn receive_upload(
    app: &App,
    caller: &Caller,
    mut form: Multipart,
) -> Result<(StoredFile, Option<KnowledgeBaseId>), ApiError> {
    let mut knowledge_base: Option<Option<KnowledgeBaseId>> = None;
    let mut file: Option<StoredFile> = None;
    let received = async {
        while let Some(field) = form.next_field().await.map_err(unreadable_form)? {
            match field.name() {
                Some("knowledge_base_id") => {
                    if knowledge_base.is_some() {
                        return Err(ApiError::invalid_upload("field knowledge_base_id is given twice"));
                    }
                    let raw = read_text_field(field, "knowledge_base_id").await?;
                    knowledge_base = Some(upload_knowledge_base(app, caller, &raw).await?);
                }
                Some("file") => {
                    if file.is_some() {
                        return Err(ApiError::invalid_upload(
                            "one file per upload: field file is given twice",
                        ));
                    }
                    file = Some(store_file(app, caller, field).await?);
                }
                _ => {}
            }
        }
        let knowledge_base = knowledge_base.flatten();
        if knowledge_base.is_none() {
            caller.require_tenant_wide("upload a document outside a knowledge base")?;
        }
        Ok(knowledge_base)
    }
    .await;
    match (received, file) {
        (Ok(knowledge_base), Some(file)) => Ok((file, knowledge_base)),
        (Ok(_), None) => Err(ApiError::invalid_upload("multipart field file is required")),
        (Err(error), file) => {
            if let Some(file) = file {
                file.object.discard().await;
            }
            Err(error)
        }
    }
}

#[derive(Object)]
pub(super) struct Accepted {
    pub(super) id: Uuid,
    pub(super) status: String,
    /// The version the upload made: 1 for a new document, more for new
    /// bytes under the name of an existing one.
    #[oai(skip_serializing_if_is_none)]
    pub(super) version: Option<u32>,
}

/// An upload of bytes the tenant already has: the document that has them.
#[derive(Object)]
pub(super) struct Duplicate {
    pub(super) id: Uuid,
    /// The existing document's status.
    pub(super) status: String,
    /// Always true: no new document was made.
    pub(super) duplicate: bool,
}

#[derive(ApiResponse)]
pub(super) enum UploadResponse {
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
    /// The same bytes are already one of the tenant's documents, which is
    /// answered instead of a copy (and linked into the knowledge base asked
    /// for, if it is not there yet).
    #[oai(status = 200)]
    Duplicate(Json<Duplicate>),
}

/// The tenant's document with these bytes, if there is one: the upload
/// that brought them again is answered with it, linked into `knowledge_base`
/// when one was asked for. The new bytes are the caller's to discard.
pub(super) async fn existing_duplicate(
    app: &App,
    caller: &Caller,
    sha256: &str,
    knowledge_base: Option<KnowledgeBaseId>,
) -> Result<Option<UploadResponse>, ApiError> {
    let Some(existing) = app
        .registry
        .document_by_content(caller.tenant_id, sha256)
        .await
        .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    if let Some(kb) = knowledge_base {
        match link_document(
            app,
            caller,
            kb,
            existing.id,
            caller.tenant_id,
            existing.embedding_model.clone(),
        )
        .await
        {
            Ok(()) => {}
            Err(ApiError::Conflict {
                code: "already_exists", ..
            }) => {}
            Err(error) => return Err(error),
        }
    }
    tracing::info!(document_id = %existing.id, "upload of bytes the tenant already has, answered with its document");
    Ok(Some(UploadResponse::Duplicate(Json(Duplicate {
        id: existing.id.0,
        status: existing.op_status.as_str().to_owned(),
        duplicate: true,
    }))))
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
struct VersionView {
    version: i64,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    created_at: DateTime<Utc>,
    /// The version the document is now: its chunks are the ones searched.
    current: bool,
}

#[derive(Object)]
struct VersionList {
    items: Vec<VersionView>,
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
    ///
    /// The file streams into the store: past `max_upload_bytes` the upload
    /// stops with 413. A file name that is not safe answers 400, an
    /// extension that is not supported or a content type the extension
    /// does not allow 415; nothing of a refused upload is kept. Bytes the
    /// tenant already has (the same SHA-256) answer 200 with the existing
    /// document instead of making a copy.
    #[oai(path = "/documents", method = "post", tag = "Tag::Documents")]
    async fn upload(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, body: UploadBody) -> poem::Result<UploadResponse> {
        let caller = auth.0;
        let (file, knowledge_base) = receive_upload(&app, &caller, body.0).await?;
        // held until the registry shows this document, so that the same
        // bytes sent at once by another request find it
        let _same_bytes = app.content_locks.lock(caller.tenant_id, &file.sha256).await;
        let duplicate = existing_duplicate(&app, &caller, &file.sha256, knowledge_base).await;
        match duplicate {
            Ok(None) => {}
            Ok(Some(answer)) => {
                file.object.discard().await;
                return Ok(answer);
            }
            Err(error) => {
                file.object.discard().await;
                return Err(error.into());
            }
        }
        let document_id = file.document_id;
        let object_key = file.object.claim();
        let registered = app
            .actors
            .documents
            .execute(
                document_id.stream_id(),
                DocumentCommand::Register {
                    document_id,
                    tenant_id: caller.tenant_id,
                    file_name: file.file_name,
                    sealed_file_name: file.sealed_file_name,
                    content_type: file.content_type.to_owned(),
                    size_bytes: file.size_bytes,
                    sha256: file.sha256,
                    object_key: object_key.clone(),
                    knowledge_base_id: knowledge_base,
                },
                caller.metadata(),
            )
            .await;
        let registered = match registered {
            Ok(outcome) => outcome,
            Err(error) => {
                remove_object(app.objects.as_ref(), &object_key).await;
                return Err(ApiError::from(error).into());
            }
        };
        let version = registered.events.iter().find_map(|event| match event {
            DocumentEvent::DocumentRegistered { .. } => Some(1),
            DocumentEvent::DocumentVersionAdded { version, .. } => Some(*version),
            _ => None,
        });
        app.settle(registered.written).await;
        if let Some(kb) = knowledge_base {
            match link_document(&app, &caller, kb, document_id, caller.tenant_id, None).await {
                Ok(()) => {}
                // a new version of a document that is there already
                Err(ApiError::Conflict {
                    code: "already_exists", ..
                }) if version > Some(1) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(UploadResponse::Accepted(Json(Accepted {
            id: document_id.0,
            status: "PENDING".into(),
            version,
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

    /// Every version of a document, oldest first; the last is current.
    #[oai(path = "/documents/:id/versions", method = "get", tag = "Tag::Documents")]
    async fn versions(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
    ) -> poem::Result<Json<VersionList>> {
        let document = reachable_document(&app, &auth.0, id.0).await?;
        let rows = app
            .registry
            .document_versions(auth.0.tenant_id, document.id)
            .await
            .map_err(ApiError::internal)?;
        let current = rows.last().map(|row| row.version);
        Ok(Json(VersionList {
            items: rows
                .into_iter()
                .map(|row| VersionView {
                    version: row.version,
                    content_type: row.content_type,
                    size_bytes: row.size_bytes,
                    sha256: row.sha256,
                    created_at: row.created_at,
                    current: Some(row.version) == current,
                })
                .collect(),
        }))
    }

    /// Process a FAILED document again, its attempts counted from zero (409
    /// for a document that has not failed).
    #[oai(path = "/documents/:id/retry", method = "post", tag = "Tag::Documents")]
    async fn retry(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<UploadResponse> {
        let caller = auth.0;
        let document = reachable_document(&app, &caller, id.0).await?;
        let outcome = app
            .actors
            .documents
            .execute(document.id.stream_id(), DocumentCommand::Retry, caller.metadata())
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        tracing::info!(document_id = %document.id, key_id = %caller.key_id, "retry requested");
        Ok(UploadResponse::Accepted(Json(Accepted {
            id: document.id.0,
            status: "PENDING".into(),
            version: None,
        })))
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
        // every version's bytes: they are all under the document's folder
        let folder = format!("tenants/{}/documents/{}/", caller.tenant_id, document.id);
        if let Err(error) = app.objects.delete_prefix(&folder).await {
            tracing::warn!(document_id = %document.id, %error, "could not delete document bytes");
        }
        Ok(Deleted::Deleted)
    }
}

fn default_limit() -> u32 {
    50
}
