//! A document: an uploaded file and the life of its processing.

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use uuid::Uuid;

use crate::error::DomainError;
use crate::ids::{DocumentId, KnowledgeBaseId, TenantId};
use crate::sealed::{Protected, Sealed};
use crate::{event_payload, Aggregate, Decision};

/// The longest file name in UTF-8 bytes: what most file systems hold.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// The longest file name in characters, so that a name of many short
/// characters still fits a listing.
pub const MAX_FILE_NAME_CHARS: usize = 200;

/// Where the bytes of presigned uploads wait for their completion, in the
/// raw object store: plain bytes outside every tenant's encrypted prefix.
pub const STAGING_PREFIX: &str = "staging/";

/// The staging key of one upload: `staging/<tenant>/<document>/<upload>`.
/// A tenant's whole staging area is `staging/<tenant>/`, which erasing the
/// tenant removes; a fresh upload id per request means a late PUT to an
/// expired upload's URL can never land on a later upload's object.
pub fn staging_key(tenant_id: TenantId, document_id: DocumentId, upload_id: Uuid) -> String {
    format!("{STAGING_PREFIX}{tenant_id}/{document_id}/{upload_id}")
}

/// Whether `text` is a SHA-256 digest as the system writes them: 64
/// lowercase hex characters.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The `op_status` of the seed article's `documents_registry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentStatus {
    Pending,
    Processing,
    Success,
    Failed,
}

impl DocumentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DocumentStatus::Pending => "PENDING",
            DocumentStatus::Processing => "PROCESSING",
            DocumentStatus::Success => "SUCCESS",
            DocumentStatus::Failed => "FAILED",
        }
    }
}

/// A file name safe to show, store and use in an object key.
///
/// [`FileName::parse`] is the only way to make one. It normalises to NFC
/// (so that a name typed on one system and one copied from another, which
/// may spell `é` as one code point or as `e` and a combining accent, are
/// one name and one document id) and trims surrounding whitespace. It then
/// refuses what makes a name misleading or unsafe to handle: path
/// separators, control characters (line and paragraph separators
/// included), the invisible bidirectional formatting characters that can
/// make `report\u{202E}txt.exe` display as `reportexe.txt`, names of dots
/// only, and names over [`MAX_FILE_NAME_BYTES`] bytes or
/// [`MAX_FILE_NAME_CHARS`] characters. Parsing a parsed name gives it back
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct FileName(String);

/// Unicode's `Bidi_Control` characters: the embeddings, overrides and
/// isolates and the three marks. They show nothing themselves and only
/// reorder what is around them, so in a file name they serve to disguise it.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that break a name across lines or move the terminal's
/// cursor: Unicode's controls (C0, DEL, C1) and the line and paragraph
/// separators, which are not controls but end a line all the same.
fn is_control_like(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

impl FileName {
    pub fn parse(raw: &str) -> Result<FileName, DomainError> {
        let invalid = |reason: String| Err(DomainError::invalid("file_name", reason));
        // normalised first, so every check below sees the name as stored
        let normalised: String = raw.nfc().collect();
        let name = normalised.trim();
        if name.is_empty() {
            return invalid("must not be empty".into());
        }
        if name.chars().all(|c| c == '.') {
            return invalid("must not be made of dots only".into());
        }
        for (index, c) in name.chars().enumerate() {
            let position = index + 1;
            if c == '/' || c == '\\' {
                return invalid(format!(
                    "must not contain a path separator (/ or \\): {c} at character {position}"
                ));
            }
            if is_control_like(c) {
                return invalid(format!(
                    "must not contain control characters: U+{:04X} at character {position}",
                    c as u32
                ));
            }
            if is_bidi_control(c) {
                return invalid(format!(
                    "must not contain bidirectional formatting characters, which can disguise its extension: \
                     U+{:04X} at character {position}",
                    c as u32
                ));
            }
        }
        if name.len() > MAX_FILE_NAME_BYTES {
            return invalid(format!(
                "must be at most {MAX_FILE_NAME_BYTES} bytes in utf-8, not {}",
                name.len()
            ));
        }
        let characters = name.chars().count();
        if characters > MAX_FILE_NAME_CHARS {
            return invalid(format!(
                "must be at most {MAX_FILE_NAME_CHARS} characters, not {characters}"
            ));
        }
        Ok(FileName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lowercase extension, if any (`report.MD` → `md`).
    pub fn extension(&self) -> Option<String> {
        self.0
            .rsplit_once('.')
            .filter(|(stem, _)| !stem.is_empty())
            .map(|(_, ext)| ext.to_ascii_lowercase())
    }
}

/// Where the processing result (chunks + vectors) of a document is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactRef {
    pub object_key: String,
    /// SHA-256 of the stored artifact, hex.
    pub sha256: String,
    pub chunk_count: u32,
    pub embedder: String,
    pub dimensions: u32,
    /// The embedding model's version (weights checksum or served model);
    /// none on artifacts from before models were versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder_version: Option<String>,
}

impl ArtifactRef {
    /// The model the artifact's vectors come from.
    pub fn model(&self) -> crate::EmbeddingModel {
        crate::EmbeddingModel {
            name: self.embedder.clone(),
            dimensions: self.dimensions,
            version: self.embedder_version.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum DocumentCommand {
    /// `file_name` is checked against the id; only `sealed_file_name`, made
    /// by the caller under the tenant's data key, is kept.
    Register {
        document_id: DocumentId,
        tenant_id: TenantId,
        file_name: FileName,
        sealed_file_name: Sealed,
        content_type: String,
        size_bytes: u64,
        sha256: String,
        object_key: String,
        /// The knowledge base the document is uploaded into, whose chunking
        /// it is processed with.
        knowledge_base_id: Option<KnowledgeBaseId>,
    },
    /// Opens a presigned upload: the client is to put `size_bytes` bytes
    /// (whose SHA-256 is `sha256`, when given) at the staging key of
    /// `upload_id` before `expires_at`. `now` and the fresh `upload_id` are
    /// the caller's: the domain reads no clock and draws nothing.
    RequestUpload {
        document_id: DocumentId,
        tenant_id: TenantId,
        file_name: FileName,
        sealed_file_name: Sealed,
        content_type: String,
        size_bytes: u64,
        sha256: Option<String>,
        knowledge_base_id: Option<KnowledgeBaseId>,
        upload_id: Uuid,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// Registers the document from its pending upload, whose bytes the
    /// caller has measured (`size_bytes`, `sha256`) and stored, encrypted,
    /// under `object_key`.
    CompleteUpload {
        upload_id: Uuid,
        size_bytes: u64,
        sha256: String,
        object_key: String,
        now: DateTime<Utc>,
    },
    /// Ends a pending upload whose staged bytes are not what was declared.
    RejectUpload {
        upload_id: Uuid,
        reason: String,
    },
    /// Ends a pending upload past its expiry; one no longer pending is a
    /// no-op, so the cleaner may repeat it.
    ExpireUpload {
        upload_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Takes the processing lease. `now` is the caller's clock: the domain
    /// reads none.
    StartProcessing {
        worker: String,
        now: DateTime<Utc>,
        lease_for: Duration,
        max_attempts: u32,
    },
    CompleteProcessing {
        worker: String,
        artifact: ArtifactRef,
    },
    FailProcessing {
        worker: String,
        reason: String,
    },
    /// The lease holder's attempt failed for a reason that may pass (a store
    /// out of reach): the document waits `backoff.delay(attempt)` and is
    /// tried again, or fails for good once `max_attempts` are used.
    ScheduleRetry {
        worker: String,
        reason: String,
        now: DateTime<Utc>,
        max_attempts: u32,
        backoff: Backoff,
    },
    /// The lease holder reports a stage of its attempt done, for the
    /// clients and auditors watching the document.
    RecordStage {
        worker: String,
        stage: ProcessingStage,
    },
    /// A person's or a client's request to process a FAILED document again,
    /// with a fresh count of attempts.
    Retry,
    Delete,
}

/// A stage of a processing attempt, as [`DocumentCommand::RecordStage`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessingStage {
    /// The text is out of the file: `characters` of it, on `pages` pages
    /// where the format has pages.
    Extracted { characters: u64, pages: Option<u32> },
    /// The text is cut into `chunk_count` chunks with `settings`, counted
    /// in `tokenizer`'s tokens.
    Chunked {
        chunk_count: u32,
        settings: Option<crate::ChunkingSettings>,
        tokenizer: Option<String>,
    },
    /// Batch `batch` (1-based) of `batches` of chunks is embedded.
    Embedded { batch: u32, batches: u32 },
}

/// Exponential backoff between processing attempts: `base` after the
/// first failed attempt, doubling each time, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let factor = 1i32 << doublings;
        self.base
            .checked_mul(factor)
            .map_or(self.max, |delay| delay.min(self.max))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum DocumentEvent {
    DocumentRegistered {
        document_id: DocumentId,
        tenant_id: TenantId,
        /// Sealed under the tenant's data key.
        file_name: Protected,
        content_type: String,
        size_bytes: u64,
        sha256: String,
        object_key: String,
        /// The knowledge base it was uploaded into, whose chunking it is
        /// processed with; none for a document uploaded on its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        knowledge_base_id: Option<KnowledgeBaseId>,
    },
    ProcessingStarted {
        worker: String,
        attempt: u32,
        lease_expires_at: DateTime<Utc>,
    },
    DocumentProcessed {
        artifact: ArtifactRef,
    },
    ProcessingFailed {
        reason: String,
        attempt: u32,
    },
    DocumentDeleted {},
    /// Attempt `attempt` failed with `reason`, which may pass; the document
    /// is PENDING again and is not taken before `retry_at`.
    RetryScheduled {
        attempt: u32,
        reason: String,
        retry_at: DateTime<Utc>,
    },
    /// A FAILED document is to be processed again, its attempts counted
    /// from zero.
    RetryRequested {},
    /// New bytes under the document's name: version `version` replaces the
    /// current one in every index once it is processed; the document is
    /// PENDING again. Earlier versions stay listed.
    DocumentVersionAdded {
        version: u32,
        content_type: String,
        size_bytes: u64,
        sha256: String,
        object_key: String,
    },
    /// Attempt `attempt` has the document's text out of its file.
    TextExtracted {
        attempt: u32,
        characters: u64,
        /// For the formats that have pages.
        pages: Option<u32>,
    },
    /// Attempt `attempt` has cut the text into `chunk_count` chunks, with
    /// the chunking `settings` measured in `tokenizer`'s tokens (none in
    /// events from before chunks were measured in tokens).
    TextChunked {
        attempt: u32,
        chunk_count: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<crate::ChunkingSettings>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokenizer: Option<String>,
    },
    /// Attempt `attempt` has embedded batch `batch` (1-based) of `batches`.
    EmbeddingBatchCompleted {
        attempt: u32,
        batch: u32,
        batches: u32,
    },
    /// A presigned upload was opened. Completing it records
    /// `DocumentRegistered`, so that processing and the read models see an
    /// upload like any other.
    UploadRequested {
        document_id: DocumentId,
        tenant_id: TenantId,
        upload_id: Uuid,
        /// Sealed under the tenant's data key.
        file_name: Protected,
        content_type: String,
        size_bytes: u64,
        /// The declared SHA-256 (hex) the bytes must match, if any.
        sha256: Option<String>,
        /// Where the completed document is linked.
        knowledge_base_id: Option<KnowledgeBaseId>,
        /// In the raw object store; see [`staging_key`].
        staging_key: String,
        expires_at: DateTime<Utc>,
    },
    /// The staged bytes did not match the declaration; the upload is over.
    UploadRejected {
        upload_id: Uuid,
        reason: String,
    },
    /// The upload was not completed in time; its staged bytes are deleted.
    UploadExpired {
        upload_id: Uuid,
    },
}
event_payload!(DocumentEvent {
    DocumentRegistered,
    ProcessingStarted,
    DocumentProcessed,
    ProcessingFailed,
    DocumentDeleted,
    RetryScheduled,
    RetryRequested,
    DocumentVersionAdded,
    TextExtracted,
    TextChunked,
    EmbeddingBatchCompleted,
    UploadRequested,
    UploadRejected,
    UploadExpired,
});

/// A presigned upload waiting for its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub document_id: DocumentId,
    pub tenant_id: TenantId,
    pub upload_id: Uuid,
    pub file_name: Protected,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: Option<String>,
    pub knowledge_base_id: Option<KnowledgeBaseId>,
    pub staging_key: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub worker: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub id: Option<DocumentId>,
    /// The knowledge base it was uploaded into.
    pub knowledge_base_id: Option<KnowledgeBaseId>,
    pub tenant_id: Option<TenantId>,
    pub file_name: Option<Protected>,
    pub content_type: Option<String>,
    pub object_key: Option<String>,
    pub status: Option<DocumentStatus>,
    pub lease: Option<Lease>,
    pub attempts: u32,
    pub error: Option<String>,
    /// A PENDING document after a failed attempt is not taken before this.
    pub retry_at: Option<DateTime<Utc>>,
    pub artifact: Option<ArtifactRef>,
    pub deleted: bool,
    /// 1 at registration, one more for each new version.
    pub version: u32,
    /// The SHA-256 of the current version's bytes.
    pub sha256: Option<String>,
    /// An open presigned upload. A stream may hold one before its first
    /// registration (`id` is still `None` then) or after a delete.
    pub pending_upload: Option<PendingUpload>,
}

impl Document {
    /// Registered and not deleted.
    fn is_live(&self) -> bool {
        self.id.is_some() && !self.deleted
    }

    fn refuse_pending_upload(&self) -> Result<(), DomainError> {
        match &self.pending_upload {
            Some(pending) => Err(DomainError::UploadPending {
                document_id: pending.document_id.to_string(),
                expires_at: pending.expires_at,
            }),
            None => Ok(()),
        }
    }

    /// The open upload `upload_id`, or why there is none.
    fn pending(&self, upload_id: Uuid) -> Result<&PendingUpload, DomainError> {
        self.pending_upload
            .as_ref()
            .filter(|pending| pending.upload_id == upload_id)
            .ok_or_else(|| DomainError::NoPendingUpload {
                document_id: self
                    .id
                    .or(self.pending_upload.as_ref().map(|pending| pending.document_id))
                    .map_or_else(|| "unregistered".to_owned(), |id| id.to_string()),
                upload_id: upload_id.to_string(),
            })
    }

    fn live_id(&self) -> Result<DocumentId, DomainError> {
        match self.id {
            Some(id) if !self.deleted => Ok(id),
            Some(id) => Err(DomainError::NotFound {
                entity: "document",
                id: id.to_string(),
            }),
            None => Err(DomainError::NotFound {
                entity: "document",
                id: "unregistered".into(),
            }),
        }
    }

    fn check_lease_holder(&self, id: DocumentId, worker: &str) -> Result<(), DomainError> {
        let holds = self.status == Some(DocumentStatus::Processing)
            && self.lease.as_ref().is_some_and(|lease| lease.worker == worker);
        if holds {
            Ok(())
        } else {
            Err(DomainError::NotLeaseHolder {
                document_id: id.to_string(),
                worker: worker.to_owned(),
            })
        }
    }
}

/// A document's id is derived from its tenant and file name: a command
/// naming another is refused.
fn check_document_id(document_id: DocumentId, tenant_id: TenantId, file_name: &FileName) -> Result<(), DomainError> {
    if document_id != DocumentId::for_file(tenant_id, file_name.as_str()) {
        return Err(DomainError::invalid(
            "document_id",
            "does not match tenant and file name",
        ));
    }
    Ok(())
}

impl Aggregate for Document {
    const CATEGORY: &'static str = "document";
    type Command = DocumentCommand;
    type Event = DocumentEvent;

    fn decide(&self, command: &DocumentCommand) -> Decision<DocumentEvent> {
        match command {
            DocumentCommand::Register {
                document_id,
                tenant_id,
                file_name,
                sealed_file_name,
                content_type,
                size_bytes,
                sha256,
                object_key,
                knowledge_base_id,
            } => {
                check_document_id(*document_id, *tenant_id, file_name)?;
                // other bytes under the name of a live document are its next
                // version; the same bytes are the document it already is
                if self.is_live() {
                    if self.sha256.as_deref() == Some(sha256.as_str()) {
                        return Err(DomainError::AlreadyExists {
                            entity: "document",
                            id: document_id.to_string(),
                        });
                    }
                    return Ok(vec![DocumentEvent::DocumentVersionAdded {
                        version: self.version + 1,
                        content_type: content_type.clone(),
                        size_bytes: *size_bytes,
                        sha256: sha256.clone(),
                        object_key: object_key.clone(),
                    }]);
                }
                // a deleted document's stream may be registered again: the
                // same file name uploaded after a delete; the same name sent
                // directly while a presigned upload of it is open is refused,
                // or one of them would be lost
                self.refuse_pending_upload()?;
                Ok(vec![DocumentEvent::DocumentRegistered {
                    document_id: *document_id,
                    tenant_id: *tenant_id,
                    file_name: Protected::Sealed(sealed_file_name.clone()),
                    content_type: content_type.clone(),
                    size_bytes: *size_bytes,
                    sha256: sha256.clone(),
                    object_key: object_key.clone(),
                    knowledge_base_id: *knowledge_base_id,
                }])
            }
            DocumentCommand::RequestUpload {
                document_id,
                tenant_id,
                file_name,
                sealed_file_name,
                content_type,
                size_bytes,
                sha256,
                knowledge_base_id,
                upload_id,
                now,
                expires_at,
            } => {
                if self.is_live() {
                    return Err(DomainError::AlreadyExists {
                        entity: "document",
                        id: document_id.to_string(),
                    });
                }
                // an expired one too, until the cleaner has deleted its
                // staged bytes: replacing it here would leave them behind
                self.refuse_pending_upload()?;
                check_document_id(*document_id, *tenant_id, file_name)?;
                if expires_at <= now {
                    return Err(DomainError::invalid("expires_at", "must be later than now"));
                }
                if sha256.as_deref().is_some_and(|sha256| !is_sha256_hex(sha256)) {
                    return Err(DomainError::invalid("sha256", "must be 64 lowercase hex characters"));
                }
                if content_type.trim().is_empty() {
                    return Err(DomainError::invalid("content_type", "must not be empty"));
                }
                Ok(vec![DocumentEvent::UploadRequested {
                    document_id: *document_id,
                    tenant_id: *tenant_id,
                    upload_id: *upload_id,
                    file_name: Protected::Sealed(sealed_file_name.clone()),
                    content_type: content_type.clone(),
                    size_bytes: *size_bytes,
                    sha256: sha256.clone(),
                    knowledge_base_id: *knowledge_base_id,
                    staging_key: staging_key(*tenant_id, *document_id, *upload_id),
                    expires_at: *expires_at,
                }])
            }
            DocumentCommand::CompleteUpload {
                upload_id,
                size_bytes,
                sha256,
                object_key,
                now,
            } => {
                let pending = self.pending(*upload_id)?;
                if *now >= pending.expires_at {
                    return Err(DomainError::UploadExpired {
                        document_id: pending.document_id.to_string(),
                        upload_id: upload_id.to_string(),
                        expired_at: pending.expires_at,
                    });
                }
                if *size_bytes != pending.size_bytes {
                    return Err(DomainError::invalid(
                        "size",
                        format!(
                            "upload {upload_id} holds {size_bytes} bytes, {} were declared",
                            pending.size_bytes
                        ),
                    ));
                }
                if !is_sha256_hex(sha256) {
                    return Err(DomainError::invalid("sha256", "must be 64 lowercase hex characters"));
                }
                if pending.sha256.as_ref().is_some_and(|declared| declared != sha256) {
                    return Err(DomainError::invalid(
                        "sha256",
                        format!("upload {upload_id} does not have the declared sha-256"),
                    ));
                }
                debug_assert!(!self.is_live(), "a live document with an open upload");
                Ok(vec![DocumentEvent::DocumentRegistered {
                    document_id: pending.document_id,
                    tenant_id: pending.tenant_id,
                    file_name: pending.file_name.clone(),
                    content_type: pending.content_type.clone(),
                    size_bytes: *size_bytes,
                    sha256: sha256.clone(),
                    object_key: object_key.clone(),
                    knowledge_base_id: pending.knowledge_base_id,
                }])
            }
            DocumentCommand::RejectUpload { upload_id, reason } => {
                self.pending(*upload_id)?;
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(DomainError::invalid("reason", "must not be empty"));
                }
                Ok(vec![DocumentEvent::UploadRejected {
                    upload_id: *upload_id,
                    reason: reason.chars().take(2000).collect(),
                }])
            }
            DocumentCommand::ExpireUpload { upload_id, now } => {
                // completed, rejected or expired already: a repeat by a
                // cleaner that raced another changes nothing
                let Ok(pending) = self.pending(*upload_id) else {
                    return Ok(vec![]);
                };
                if *now < pending.expires_at {
                    return Err(DomainError::Conflict(format!(
                        "upload {upload_id} of document {} does not expire until {}",
                        pending.document_id, pending.expires_at
                    )));
                }
                Ok(vec![DocumentEvent::UploadExpired { upload_id: *upload_id }])
            }
            DocumentCommand::StartProcessing {
                worker,
                now,
                lease_for,
                max_attempts,
            } => {
                let id = self.live_id()?;
                match self.status {
                    Some(DocumentStatus::Pending) if self.retry_at.is_some_and(|at| *now < at) => {
                        Err(DomainError::RetryNotDue {
                            document_id: id.to_string(),
                            at: self.retry_at.unwrap_or(*now),
                        })
                    }
                    Some(DocumentStatus::Pending) => Ok(vec![DocumentEvent::ProcessingStarted {
                        worker: worker.clone(),
                        attempt: self.attempts + 1,
                        lease_expires_at: *now + *lease_for,
                    }]),
                    Some(DocumentStatus::Processing) => {
                        let lease = self.lease.as_ref().expect("a processing document holds a lease");
                        if lease.worker == *worker {
                            // the holder asking again is a redelivery: nothing changes
                            return Ok(vec![]);
                        }
                        if *now < lease.expires_at {
                            return Err(DomainError::LeaseHeld {
                                document_id: id.to_string(),
                                holder: lease.worker.clone(),
                                until: lease.expires_at,
                            });
                        }
                        if self.attempts >= *max_attempts {
                            return Ok(vec![DocumentEvent::ProcessingFailed {
                                reason: format!("processing lease expired {} times without a result", self.attempts),
                                attempt: self.attempts,
                            }]);
                        }
                        Ok(vec![DocumentEvent::ProcessingStarted {
                            worker: worker.clone(),
                            attempt: self.attempts + 1,
                            lease_expires_at: *now + *lease_for,
                        }])
                    }
                    Some(DocumentStatus::Success) => {
                        Err(DomainError::Conflict(format!("document {id} is already processed")))
                    }
                    Some(DocumentStatus::Failed) | None => {
                        Err(DomainError::Conflict(format!("document {id} failed processing")))
                    }
                }
            }
            DocumentCommand::CompleteProcessing { worker, artifact } => {
                let id = self.live_id()?;
                self.check_lease_holder(id, worker)?;
                Ok(vec![DocumentEvent::DocumentProcessed {
                    artifact: artifact.clone(),
                }])
            }
            DocumentCommand::FailProcessing { worker, reason } => {
                let id = self.live_id()?;
                self.check_lease_holder(id, worker)?;
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(DomainError::invalid("reason", "must not be empty"));
                }
                Ok(vec![DocumentEvent::ProcessingFailed {
                    reason: reason.chars().take(2000).collect(),
                    attempt: self.attempts,
                }])
            }
            DocumentCommand::ScheduleRetry {
                worker,
                reason,
                now,
                max_attempts,
                backoff,
            } => {
                let id = self.live_id()?;
                self.check_lease_holder(id, worker)?;
                let reason: String = reason.trim().chars().take(2000).collect();
                if reason.is_empty() {
                    return Err(DomainError::invalid("reason", "must not be empty"));
                }
                if self.attempts >= *max_attempts {
                    return Ok(vec![DocumentEvent::ProcessingFailed {
                        reason: format!("gave up after {} attempts: {reason}", self.attempts),
                        attempt: self.attempts,
                    }]);
                }
                Ok(vec![DocumentEvent::RetryScheduled {
                    attempt: self.attempts,
                    reason,
                    retry_at: *now + backoff.delay(self.attempts),
                }])
            }
            DocumentCommand::RecordStage { worker, stage } => {
                let id = self.live_id()?;
                self.check_lease_holder(id, worker)?;
                let attempt = self.attempts;
                Ok(vec![match stage.clone() {
                    ProcessingStage::Extracted { characters, pages } => DocumentEvent::TextExtracted {
                        attempt,
                        characters,
                        pages,
                    },
                    ProcessingStage::Chunked {
                        chunk_count,
                        settings,
                        tokenizer,
                    } => DocumentEvent::TextChunked {
                        attempt,
                        chunk_count,
                        settings,
                        tokenizer,
                    },
                    ProcessingStage::Embedded { batch, batches } => {
                        if batch == 0 || batch > batches {
                            return Err(DomainError::invalid(
                                "batch",
                                format!("{batch} is not one of 1..={batches}"),
                            ));
                        }
                        DocumentEvent::EmbeddingBatchCompleted {
                            attempt,
                            batch,
                            batches,
                        }
                    }
                }])
            }
            DocumentCommand::Retry => {
                let id = self.live_id()?;
                match self.status {
                    Some(DocumentStatus::Failed) => Ok(vec![DocumentEvent::RetryRequested {}]),
                    _ => Err(DomainError::Conflict(format!(
                        "document {id} has not failed: only a failed document is retried"
                    ))),
                }
            }
            DocumentCommand::Delete => {
                self.live_id()?;
                Ok(vec![DocumentEvent::DocumentDeleted {}])
            }
        }
    }

    fn apply(&mut self, event: &DocumentEvent) {
        match event {
            DocumentEvent::DocumentRegistered {
                document_id,
                tenant_id,
                file_name,
                content_type,
                object_key,
                sha256,
                knowledge_base_id,
                ..
            } => {
                *self = Document {
                    knowledge_base_id: *knowledge_base_id,
                    id: Some(*document_id),
                    tenant_id: Some(*tenant_id),
                    file_name: Some(file_name.clone()),
                    content_type: Some(content_type.clone()),
                    object_key: Some(object_key.clone()),
                    status: Some(DocumentStatus::Pending),
                    version: 1,
                    sha256: Some(sha256.clone()),
                    ..Document::default()
                };
            }
            DocumentEvent::DocumentVersionAdded {
                version,
                content_type,
                sha256,
                object_key,
                ..
            } => {
                // a lease on the earlier version ends: its result no longer counts
                self.version = *version;
                self.content_type = Some(content_type.clone());
                self.sha256 = Some(sha256.clone());
                self.object_key = Some(object_key.clone());
                self.status = Some(DocumentStatus::Pending);
                self.lease = None;
                self.attempts = 0;
                self.error = None;
                self.retry_at = None;
                self.artifact = None;
            }
            DocumentEvent::ProcessingStarted {
                worker,
                attempt,
                lease_expires_at,
            } => {
                self.status = Some(DocumentStatus::Processing);
                self.attempts = *attempt;
                self.retry_at = None;
                self.lease = Some(Lease {
                    worker: worker.clone(),
                    expires_at: *lease_expires_at,
                });
            }
            DocumentEvent::DocumentProcessed { artifact } => {
                self.status = Some(DocumentStatus::Success);
                self.lease = None;
                self.error = None;
                self.artifact = Some(artifact.clone());
            }
            DocumentEvent::ProcessingFailed { reason, .. } => {
                self.status = Some(DocumentStatus::Failed);
                self.lease = None;
                self.error = Some(reason.clone());
            }
            DocumentEvent::DocumentDeleted {} => {
                self.deleted = true;
                self.lease = None;
            }
            DocumentEvent::RetryScheduled {
                attempt,
                reason,
                retry_at,
            } => {
                self.status = Some(DocumentStatus::Pending);
                self.lease = None;
                self.attempts = *attempt;
                self.error = Some(reason.clone());
                self.retry_at = Some(*retry_at);
            }
            // progress within an attempt: what the document is does not change
            DocumentEvent::TextExtracted { .. }
            | DocumentEvent::TextChunked { .. }
            | DocumentEvent::EmbeddingBatchCompleted { .. } => {}
            DocumentEvent::RetryRequested {} => {
                self.status = Some(DocumentStatus::Pending);
                self.attempts = 0;
                self.error = None;
                self.retry_at = None;
            }
            DocumentEvent::UploadRequested {
                document_id,
                tenant_id,
                upload_id,
                file_name,
                content_type,
                size_bytes,
                sha256,
                knowledge_base_id,
                staging_key,
                expires_at,
            } => {
                self.pending_upload = Some(PendingUpload {
                    document_id: *document_id,
                    tenant_id: *tenant_id,
                    upload_id: *upload_id,
                    file_name: file_name.clone(),
                    content_type: content_type.clone(),
                    size_bytes: *size_bytes,
                    sha256: sha256.clone(),
                    knowledge_base_id: *knowledge_base_id,
                    staging_key: staging_key.clone(),
                    expires_at: *expires_at,
                });
            }
            DocumentEvent::UploadRejected { .. } | DocumentEvent::UploadExpired { .. } => {
                self.pending_upload = None;
            }
        }
    }
}
