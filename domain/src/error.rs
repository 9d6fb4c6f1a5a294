/// A command the domain refuses. Each variant has a stable `code` that the API
/// returns to clients; messages are lowercase and name the ids involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{entity} {id} already exists")]
    AlreadyExists { entity: &'static str, id: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("document {document_id} is being processed by {holder} until {until}")]
    LeaseHeld {
        document_id: String,
        holder: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    #[error("worker {worker} does not hold the processing lease of document {document_id}")]
    NotLeaseHolder { document_id: String, worker: String },
    #[error("{0}")]
    Conflict(String),
    /// Taking the lease of a document waiting out its backoff.
    #[error("document {document_id} is not to be retried before {at}")]
    RetryNotDue {
        document_id: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A registration or a second upload of a document whose presigned
    /// upload is still open (or expired and not cleaned up yet).
    #[error("document {document_id} has an upload pending until {expires_at}")]
    UploadPending {
        document_id: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// Completing, rejecting an upload the document does not hold open:
    /// never requested, completed already, rejected or expired.
    #[error("upload {upload_id} of document {document_id} is not pending")]
    NoPendingUpload { document_id: String, upload_id: String },
    #[error("upload {upload_id} of document {document_id} expired at {expired_at}")]
    UploadExpired {
        document_id: String,
        upload_id: String,
        expired_at: chrono::DateTime<chrono::Utc>,
    },
    /// A document whose vectors come from another model than the one the
    /// knowledge base is pinned to.
    #[error("knowledge base {knowledge_base_id} is pinned to embedding model {pinned}; the document's vectors come from {found}")]
    ModelMismatch {
        knowledge_base_id: String,
        pinned: String,
        found: String,
    },
}

impl DomainError {
    /// The stable machine-readable code for this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::NotFound { .. } => "not_found",
            DomainError::AlreadyExists { .. } => "already_exists",
            DomainError::Invalid { .. } => "invalid_input",
            DomainError::LeaseHeld { .. } => "lease_held",
            DomainError::NotLeaseHolder { .. } => "not_lease_holder",
            DomainError::Conflict(_) => "conflict",
            DomainError::RetryNotDue { .. } => "retry_not_due",
            DomainError::UploadPending { .. } => "upload_pending",
            DomainError::NoPendingUpload { .. } => "no_pending_upload",
            DomainError::UploadExpired { .. } => "upload_expired",
            DomainError::ModelMismatch { .. } => "embedding_model_mismatch",
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DomainError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
