//! Presigned uploads: a client asks for an upload URL, puts the file's
//! bytes there itself (straight into S3, past the API), then completes the
//! upload. The bytes wait in plain form under the raw store's staging prefix
//! (`staging/<tenant>/<document>/<upload>`); completing checks them, copies
//! them, encrypted, to the document's own key, deletes the staged object and
//! registers the document, which starts its processing. An upload never
//! completed is ended by the upload cleaner after its expiry.
//!
//! Where the object store cannot presign (the local directory), the API
//! signs an upload URL of its own, `PUT /v1/uploads/{document}/{upload}`,
//! whose HMAC signature and expiry are the credential, as S3's are.

use std::sync::Arc;
use std::time::Duration;

use actors::objects::ObjectStoreError;
use chrono::{DateTime, Utc};
use domain::document::DocumentCommand;
use domain::DocumentId;
use futures::{StreamExt, TryStreamExt};
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Body, Request};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use projections::registry::PendingUploadRow;
use serde::Deserialize;
use sha2::Digest;
use uuid::Uuid;

use super::documents::{
    accepted_file, existing_duplicate, remove_object, tallied, upload_knowledge_base, Accepted, Tally, UnclaimedObject,
    UploadResponse,
};
use super::error::ApiError;
use super::knowledge_bases::link_document;
use super::{ApiKeyAuth, Caller};
use crate::app::App;

#[derive(Tags)]
enum Tag {
    Documents,
}

/// What the client will upload.
#[derive(Object)]
struct UploadRequest {
    /// The document's file name, checked as a direct upload's is.
    #[oai(validator(max_length = 1024))]
    file_name: String,
    /// When absent or application/octet-stream, the extension's own type.
    #[oai(validator(max_length = 255))]
    content_type: Option<String>,
    /// The exact number of bytes that will be put, at most max_upload_bytes.
    size: u64,
    /// The SHA-256 (64 lowercase hex characters) the bytes must have.
    sha256: Option<String>,
    /// A knowledge base of the caller's the document joins when completed.
    knowledge_base_id: Option<Uuid>,
}

/// Where to put the bytes, and until when.
#[derive(Object)]
struct UploadTicket {
    document_id: Uuid,
    upload_id: Uuid,
    /// PUT the file's bytes here (no Authorization header), then POST
    /// /v1/documents/{document_id}/complete.
    upload_url: String,
    /// Always PUT.
    method: String,
    expires_at: DateTime<Utc>,
}

#[derive(poem_openapi::ApiResponse)]
enum TicketResponse {
    #[oai(status = 201)]
    Created(Json<UploadTicket>),
}

pub struct UploadsApi;

#[OpenApi(prefix_path = "/v1")]
impl UploadsApi {
    /// Open a presigned upload: answers with a URL to PUT the file's bytes
    /// to directly (S3's own, or this API's where the store is the local
    /// directory), valid until `expires_at`.
    ///
    /// The name, type, size and knowledge base are checked now, as a direct
    /// upload's are: 400 for an unsafe file name, 415 for an unsupported
    /// type, 413 for a size over max_upload_bytes. While the upload is open
    /// the same file name cannot be uploaded otherwise (409 upload_pending).
    #[oai(path = "/documents/uploads", method = "post", tag = "Tag::Documents")]
    async fn request_upload(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        request: &Request,
        body: Json<UploadRequest>,
    ) -> poem::Result<TicketResponse> {
        let caller = auth.0;
        let body = body.0;
        let (file_name, content_type) = accepted_file(&body.file_name, body.content_type.as_deref())?;
        let limit = app.config.max_upload_bytes;
        if body.size > limit as u64 {
            return Err(ApiError::PayloadTooLarge { limit }.into());
        }
        let sha256 = body.sha256.map(|sha256| sha256.trim().to_ascii_lowercase());
        let knowledge_base = match body.knowledge_base_id {
            Some(id) => upload_knowledge_base(&app, &caller, &id.to_string()).await?,
            None => {
                caller.require_tenant_wide("upload a document outside a knowledge base")?;
                None
            }
        };
        let document_id = DocumentId::for_file(caller.tenant_id, file_name.as_str());
        let sealed_file_name = app
            .vault
            .seal(caller.tenant_id, "file_name", file_name.as_str())
            .await
            .map_err(ApiError::internal)?;
        let upload_id = Uuid::now_v7();
        let ttl = Duration::from_secs(app.config.upload_url_ttl_secs);
        let now = Utc::now();
        let expires_at = now + chrono::Duration::seconds(app.config.upload_url_ttl_secs as i64);
        let staging_key = domain::document::staging_key(caller.tenant_id, document_id, upload_id);
        // signed before the upload is recorded: a store that cannot sign
        // must not leave an open upload behind
        let upload_url = match app.raw_objects.presign_put(&staging_key, ttl).await {
            Ok(Some(url)) => url,
            Ok(None) => local_upload_url(&app, request, document_id, upload_id, expires_at),
            Err(error) => return Err(ApiError::internal(error).into()),
        };
        let outcome = app
            .actors
            .documents
            .execute(
                document_id.stream_id(),
                DocumentCommand::RequestUpload {
                    document_id,
                    tenant_id: caller.tenant_id,
                    file_name,
                    sealed_file_name,
                    content_type: content_type.to_owned(),
                    size_bytes: body.size,
                    sha256,
                    knowledge_base_id: knowledge_base,
                    upload_id,
                    now,
                    expires_at,
                },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        tracing::info!(%document_id, %upload_id, %expires_at, "presigned upload opened");
        Ok(TicketResponse::Created(Json(UploadTicket {
            document_id: document_id.0,
            upload_id,
            upload_url,
            method: "PUT".into(),
            expires_at,
        })))
    }

    /// Complete a presigned upload: the staged bytes are checked (there,
    /// of the declared size, of the declared SHA-256 when one was given),
    /// stored encrypted, and the document is processed.
    ///
    /// Bytes the tenant already has as a document answer 200 with that
    /// document (the upload ends, nothing is copied). Bytes not uploaded yet
    /// answer 409 upload_not_received and the upload stays open; bytes of another size or digest end the upload (422) and
    /// are deleted; past its expiry the upload is gone (410).
    #[oai(path = "/documents/:id/complete", method = "post", tag = "Tag::Documents")]
    async fn complete(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<UploadResponse> {
        let caller = auth.0;
        let pending = caller_pending_upload(&app, &caller, DocumentId(id.0)).await?;
        let document_id = pending.document_id;
        let upload_id = pending.upload_id;
        if pending.expires_at <= Utc::now() {
            return Err(expired(&pending).into());
        }
        let staged = app
            .raw_objects
            .size(&pending.staging_key)
            .await
            .map_err(ApiError::internal)?;
        let Some(staged_size) = staged else {
            return Err(ApiError::Conflict {
                code: "upload_not_received",
                message: format!(
                    "upload {upload_id} of document {document_id} has no bytes yet: put them to its upload url first"
                ),
            }
            .into());
        };
        if staged_size != pending.size_bytes as u64 {
            let reason = format!(
                "upload {upload_id} of document {document_id} holds {staged_size} bytes, {} were declared",
                pending.size_bytes
            );
            return Err(reject(&app, &caller, &pending, "upload_size_mismatch", reason)
                .await
                .into());
        }
        // the copy is counted and hashed on its way: the staged object may
        // have been replaced since it was measured
        let object_key = format!(
            "tenants/{}/documents/{}/{}",
            caller.tenant_id,
            document_id,
            Uuid::now_v7()
        );
        let staged_bytes = app
            .raw_objects
            .get_stream(&pending.staging_key)
            .await
            .map_err(ApiError::internal)?;
        let (body, tally) = tallied(staged_bytes, pending.size_bytes as u64);
        let stored = app.objects.put_stream(&object_key, body).await;
        let Tally {
            hasher,
            bytes,
            over_limit,
        } = tally.take();
        match stored {
            Ok(_) => {}
            Err(_) if over_limit => {
                let reason = format!(
                    "upload {upload_id} of document {document_id} holds more than the {} bytes declared",
                    pending.size_bytes
                );
                return Err(reject(&app, &caller, &pending, "upload_size_mismatch", reason)
                    .await
                    .into());
            }
            Err(ObjectStoreError::NotFound(_)) => {
                return Err(ApiError::Conflict {
                    code: "upload_not_received",
                    message: format!("upload {upload_id} of document {document_id} has no bytes anymore"),
                }
                .into())
            }
            Err(error) => return Err(ApiError::internal(error).into()),
        }
        let object = UnclaimedObject::new(app.objects.clone(), object_key);
        let sha256 = hex::encode(hasher.finalize());
        if bytes != pending.size_bytes as u64 {
            object.discard().await;
            let reason = format!(
                "upload {upload_id} of document {document_id} holds {bytes} bytes, {} were declared",
                pending.size_bytes
            );
            return Err(reject(&app, &caller, &pending, "upload_size_mismatch", reason)
                .await
                .into());
        }
        if pending.sha256.as_ref().is_some_and(|declared| *declared != sha256) {
            object.discard().await;
            let reason = format!("upload {upload_id} of document {document_id} does not have the declared sha-256");
            return Err(reject(&app, &caller, &pending, "upload_checksum_mismatch", reason)
                .await
                .into());
        }
        // the same bytes as one of the tenant's documents: that one answers,
        // and this upload ends without a copy (checked under the lock that
        // direct uploads of these bytes take too)
        let _same_bytes = app.content_locks.lock(caller.tenant_id, &sha256).await;
        if let Some(answer) = existing_duplicate(&app, &caller, &sha256, pending.knowledge_base_id).await? {
            object.discard().await;
            let reason = format!("the same bytes are already a document of the tenant: upload {upload_id} ends");
            let rejected = app
                .actors
                .documents
                .execute(
                    document_id.stream_id(),
                    DocumentCommand::RejectUpload { upload_id, reason },
                    caller.metadata(),
                )
                .await
                .map_err(ApiError::from)?;
            remove_object(app.raw_objects.as_ref(), &pending.staging_key).await;
            app.settle(rejected.written).await;
            return Ok(answer);
        }
        let object_key = object.claim();
        let completed = app
            .actors
            .documents
            .execute(
                document_id.stream_id(),
                DocumentCommand::CompleteUpload {
                    upload_id,
                    size_bytes: bytes,
                    sha256,
                    object_key: object_key.clone(),
                    now: Utc::now(),
                },
                caller.metadata(),
            )
            .await;
        let completed = match completed {
            Ok(outcome) => outcome,
            Err(error) => {
                remove_object(app.objects.as_ref(), &object_key).await;
                return Err(ApiError::from(error).into());
            }
        };
        remove_object(app.raw_objects.as_ref(), &pending.staging_key).await;
        app.settle(completed.written).await;
        if let Some(kb) = pending.knowledge_base_id {
            link_document(&app, &caller, kb, document_id, caller.tenant_id, None).await?;
        }
        tracing::info!(%document_id, %upload_id, size_bytes = bytes, "presigned upload completed");
        Ok(UploadResponse::Accepted(Json(Accepted {
            id: document_id.0,
            status: "PENDING".into(),
            version: Some(1),
        })))
    }
}

/// The caller's open upload of `document`, or 404 as for a document that
/// does not exist: another tenant's, or one a key limited to knowledge
/// bases does not reach.
async fn caller_pending_upload(app: &App, caller: &Caller, document: DocumentId) -> Result<PendingUploadRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no upload of document {document} is pending"));
    let pending = app
        .registry
        .pending_upload(caller.tenant_id, document)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let reachable = match pending.knowledge_base_id {
        Some(kb) => caller.reaches(kb),
        None => caller.scopes.knowledge_base_ids.is_none(),
    };
    if !reachable {
        return Err(not_found());
    }
    Ok(pending)
}

fn expired(pending: &PendingUploadRow) -> ApiError {
    ApiError::Gone {
        code: "upload_expired",
        message: format!(
            "upload {} of document {} expired at {}: request a new one",
            pending.upload_id, pending.document_id, pending.expires_at
        ),
    }
}

/// Ends an upload whose bytes are not what was declared and deletes them;
/// the error the client gets (422 `code`).
async fn reject(
    app: &App,
    caller: &Caller,
    pending: &PendingUploadRow,
    code: &'static str,
    reason: String,
) -> ApiError {
    let rejected = app
        .actors
        .documents
        .execute(
            pending.document_id.stream_id(),
            DocumentCommand::RejectUpload {
                upload_id: pending.upload_id,
                reason: reason.clone(),
            },
            caller.metadata(),
        )
        .await;
    match rejected {
        Ok(outcome) => {
            remove_object(app.raw_objects.as_ref(), &pending.staging_key).await;
            app.settle(outcome.written).await;
            tracing::info!(document_id = %pending.document_id, upload_id = %pending.upload_id, %reason, "presigned upload rejected");
            ApiError::Invalid { code, message: reason }
        }
        Err(error) => ApiError::from(error),
    }
}

/// The address of this API's own upload route for one upload, signed.
fn local_upload_url(
    app: &App,
    request: &Request,
    document: DocumentId,
    upload: Uuid,
    expires_at: DateTime<Utc>,
) -> String {
    let base = match &app.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = request
                .headers()
                .get(poem::http::header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| app.config.bind.to_string());
            format!("http://{host}")
        }
    };
    let expires = expires_at.timestamp();
    let signature = app
        .key_hasher
        .sign_upload(&document.to_string(), &upload.to_string(), expires);
    format!("{base}/v1/uploads/{document}/{upload}?expires={expires}&signature={signature}")
}

#[derive(Deserialize)]
pub struct SignedUpload {
    expires: i64,
    signature: String,
}

/// `PUT /v1/uploads/{document}/{upload}?expires=…&signature=…`: the bytes
/// of an upload whose URL the API signed. Like S3's presigned PUT it takes
/// no API key and replaces what an earlier PUT stored; unlike it, it refuses
/// more bytes than were declared (413) and fewer (400), keeping nothing.
#[handler]
pub async fn put_upload(
    Data(app): Data<&Arc<App>>,
    poem::web::Path((document, upload)): poem::web::Path<(Uuid, Uuid)>,
    Query(signed): Query<SignedUpload>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let denied = || ApiError::Forbidden("the upload url is not valid".into());
    if !app.key_hasher.verify_upload(
        &document.to_string(),
        &upload.to_string(),
        signed.expires,
        &signed.signature,
    ) {
        return Err(denied());
    }
    if signed.expires <= Utc::now().timestamp() {
        return Err(ApiError::Gone {
            code: "upload_expired",
            message: format!("the upload url of upload {upload} has expired: request a new one"),
        });
    }
    let pending = app
        .registry
        .pending_upload_by_id(DocumentId(document), upload)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("upload {upload} of document {document} is not pending")))?;
    if pending.expires_at <= Utc::now() {
        return Err(expired(&pending));
    }
    let declared = pending.size_bytes as u64;
    let (body, tally) = tallied(
        body.into_bytes_stream().map_err(std::io::Error::other).boxed(),
        declared,
    );
    let stored = app.raw_objects.put_stream(&pending.staging_key, body).await;
    let tally = tally.take();
    match stored {
        Ok(size) if size == declared => Ok(StatusCode::OK),
        Ok(size) => {
            remove_object(app.raw_objects.as_ref(), &pending.staging_key).await;
            Err(ApiError::BadRequest {
                code: "upload_size_mismatch",
                message: format!("upload {upload} takes {declared} bytes, {size} were sent"),
            })
        }
        Err(_) if tally.over_limit => Err(ApiError::PayloadTooLarge {
            limit: pending.size_bytes as usize,
        }),
        Err(ObjectStoreError::Body { source, .. }) => Err(ApiError::invalid_upload(format!(
            "the upload body cannot be read: {}",
            source.to_string().to_lowercase()
        ))),
        Err(error) => Err(ApiError::internal(error)),
    }
}
