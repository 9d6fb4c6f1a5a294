//! A document: an uploaded file and the life of its processing.

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::error::DomainError;
use crate::ids::{DocumentId, TenantId};
use crate::sealed::{Protected, Sealed};
use crate::{event_payload, Aggregate, Decision};

/// The longest file name in UTF-8 bytes: what most file systems hold.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// The longest file name in characters, so that a name of many short
/// characters still fits a listing.
pub const MAX_FILE_NAME_CHARS: usize = 200;

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
    Delete,
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
}
event_payload!(DocumentEvent {
    DocumentRegistered,
    ProcessingStarted,
    DocumentProcessed,
    ProcessingFailed,
    DocumentDeleted,
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub worker: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub id: Option<DocumentId>,
    pub tenant_id: Option<TenantId>,
    pub file_name: Option<Protected>,
    pub content_type: Option<String>,
    pub object_key: Option<String>,
    pub status: Option<DocumentStatus>,
    pub lease: Option<Lease>,
    pub attempts: u32,
    pub error: Option<String>,
    pub artifact: Option<ArtifactRef>,
    pub deleted: bool,
}

impl Document {
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
            } => {
                // a deleted document's stream may be registered again: the
                // same file name uploaded after a delete
                if self.id.is_some() && !self.deleted {
                    return Err(DomainError::AlreadyExists {
                        entity: "document",
                        id: document_id.to_string(),
                    });
                }
                if *document_id != DocumentId::for_file(*tenant_id, file_name.as_str()) {
                    return Err(DomainError::invalid(
                        "document_id",
                        "does not match tenant and file name",
                    ));
                }
                Ok(vec![DocumentEvent::DocumentRegistered {
                    document_id: *document_id,
                    tenant_id: *tenant_id,
                    file_name: Protected::Sealed(sealed_file_name.clone()),
                    content_type: content_type.clone(),
                    size_bytes: *size_bytes,
                    sha256: sha256.clone(),
                    object_key: object_key.clone(),
                }])
            }
            DocumentCommand::StartProcessing {
                worker,
                now,
                lease_for,
                max_attempts,
            } => {
                let id = self.live_id()?;
                match self.status {
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
                ..
            } => {
                *self = Document {
                    id: Some(*document_id),
                    tenant_id: Some(*tenant_id),
                    file_name: Some(file_name.clone()),
                    content_type: Some(content_type.clone()),
                    object_key: Some(object_key.clone()),
                    status: Some(DocumentStatus::Pending),
                    ..Document::default()
                };
            }
            DocumentEvent::ProcessingStarted {
                worker,
                attempt,
                lease_expires_at,
            } => {
                self.status = Some(DocumentStatus::Processing);
                self.attempts = *attempt;
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
        }
    }
}
