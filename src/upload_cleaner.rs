//! Ends presigned uploads that were never completed: once an upload is past
//! its expiry (and a grace period, for a PUT that began just before it), its
//! staged bytes are deleted and `UploadExpired` is appended, which removes
//! it from the registry and frees its file name. The system does this
//! itself, on every project node; two nodes racing on one upload are
//! harmless, since expiring an upload that is no longer pending is a no-op.

use std::sync::Arc;
use std::time::Duration;

use actors::objects::ObjectStore;
use actors::{AggregateHandle, CommandError};
use chrono::Utc;
use domain::document::{Document, DocumentCommand};
use domain::EventMetadata;
use projections::registry::{PendingUploadRow, Registry, RegistryError};
use uuid::Uuid;

use crate::background::{Next, PeriodicTask};

/// How long after its expiry an upload is ended: S3 signs a URL a moment
/// after the upload's expiry was set, and a PUT begun in time may still be
/// running.
pub const GRACE: Duration = Duration::from_secs(60);

/// Uploads ended per registry read.
const BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("cannot list expired uploads: {0}")]
    Registry(#[from] RegistryError),
}

pub struct UploadCleaner {
    registry: Registry,
    documents: AggregateHandle<Document>,
    raw_objects: Arc<dyn ObjectStore>,
    grace: Duration,
}

impl UploadCleaner {
    pub fn new(
        registry: Registry,
        documents: AggregateHandle<Document>,
        raw_objects: Arc<dyn ObjectStore>,
        grace: Duration,
    ) -> UploadCleaner {
        UploadCleaner {
            registry,
            documents,
            raw_objects,
            grace,
        }
    }

    /// Ends every upload expired more than the grace period ago; returns
    /// how many were ended. One that cannot be ended now (its store is
    /// unreachable) is logged and left for the next sweep.
    pub async fn sweep(&self) -> Result<u64, CleanupError> {
        let grace = chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::zero());
        let mut ended = 0;
        // an upload ended or failed now may stay listed a while (until the
        // registry applies the event, or until the next sweep): each is
        // taken once per sweep, so a sweep always ends
        let mut seen = std::collections::HashSet::<Uuid>::new();
        loop {
            let expired = self
                .registry
                .expired_pending_uploads(Utc::now() - grace, BATCH + seen.len() as i64)
                .await?;
            let fresh: Vec<PendingUploadRow> = expired
                .into_iter()
                .filter(|pending| seen.insert(pending.upload_id))
                .collect();
            if fresh.is_empty() {
                return Ok(ended);
            }
            for pending in fresh {
                match self.end(&pending).await {
                    Ok(()) => ended += 1,
                    Err(error) => {
                        tracing::warn!(
                            document_id = %pending.document_id,
                            upload_id = %pending.upload_id,
                            %error,
                            "could not end an expired upload, retrying at the next sweep"
                        );
                    }
                }
            }
        }
    }

    /// Deletes the staged bytes first: should the command fail, the upload
    /// stays listed and the next sweep deletes again, where the other order
    /// could forget bytes behind an upload no longer listed.
    async fn end(&self, pending: &PendingUploadRow) -> Result<(), String> {
        self.raw_objects
            .delete(&pending.staging_key)
            .await
            .map_err(|error| error.to_string())?;
        let metadata = EventMetadata {
            tenant_id: Some(pending.tenant_id),
            actor_key_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
        };
        let command = DocumentCommand::ExpireUpload {
            upload_id: pending.upload_id,
            now: Utc::now(),
        };
        let outcome = self
            .documents
            .execute(pending.document_id.stream_id(), command, metadata)
            .await;
        match outcome {
            Ok(_) => {
                tracing::info!(
                    document_id = %pending.document_id,
                    upload_id = %pending.upload_id,
                    expired_at = %pending.expires_at,
                    "expired upload cleaned up"
                );
                Ok(())
            }
            Err(CommandError::Rejected(rejection)) => Err(rejection.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Sweeps every `interval` until the task is shut down.
    pub fn spawn(self, interval: Duration) -> PeriodicTask {
        let cleaner = std::sync::Arc::new(self);
        PeriodicTask::spawn(interval, move || {
            let cleaner = cleaner.clone();
            async move {
                match cleaner.sweep().await {
                    Ok(0) => {}
                    Ok(ended) => tracing::info!(ended, "expired uploads cleaned up"),
                    Err(error) => tracing::warn!(%error, "upload cleanup failed, retrying"),
                }
                Next::AfterInterval
            }
        })
    }
}
