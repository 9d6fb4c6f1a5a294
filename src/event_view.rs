//! Document events as their tenant sees them: the fields of an event with
//! its sealed file names opened and the store's internal keys left out, for
//! the event stream of the API and the bodies of webhooks.

use actors::keys::KeyVault;
use actors::store::RecordedEvent;
use domain::document::{Document, DocumentEvent};
use domain::{Aggregate, AnyEvent, Protected, TenantId};
use serde_json::{json, Value};

/// Shown in place of a sealed value that cannot be opened.
pub const UNREADABLE: &str = "(unreadable)";

/// A sealed field of the tenant's, opened. Text from before fields were
/// sealed passes as is; a value that cannot be opened (its key destroyed,
/// its bytes altered) is shown as such and logged.
pub async fn reveal(vault: &KeyVault, tenant_id: TenantId, field: &str, stored: &str) -> String {
    match Protected::from_stored(stored) {
        Protected::Plain(text) => text,
        Protected::Sealed(sealed) => match vault.open(tenant_id, field, &sealed).await {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(%tenant_id, field, key_id = sealed.key_id(), %error, "cannot open a sealed field");
                UNREADABLE.to_owned()
            }
        },
    }
}

/// A recorded event of the document stream, decoded.
pub fn decode(event: &RecordedEvent) -> Option<DocumentEvent> {
    match AnyEvent::decode(
        Document::CATEGORY,
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    ) {
        Ok(AnyEvent::Document(decoded)) => Some(decoded),
        _ => None,
    }
}

/// The event's own fields for its tenant.
pub async fn event_data(vault: &KeyVault, tenant: TenantId, event: &DocumentEvent) -> Value {
    match event {
        DocumentEvent::DocumentRegistered {
            file_name,
            content_type,
            size_bytes,
            sha256,
            ..
        } => json!({
            "file_name": reveal(vault, tenant, "file_name", file_name.as_str()).await,
            "content_type": content_type,
            "size_bytes": size_bytes,
            "sha256": sha256,
        }),
        DocumentEvent::UploadRequested {
            upload_id,
            file_name,
            content_type,
            size_bytes,
            expires_at,
            ..
        } => json!({
            "upload_id": upload_id,
            "file_name": reveal(vault, tenant, "file_name", file_name.as_str()).await,
            "content_type": content_type,
            "size_bytes": size_bytes,
            "expires_at": expires_at,
        }),
        DocumentEvent::ProcessingStarted {
            attempt,
            lease_expires_at,
            ..
        } => json!({ "attempt": attempt, "lease_expires_at": lease_expires_at }),
        DocumentEvent::DocumentProcessed { artifact } => json!({
            "chunk_count": artifact.chunk_count,
            "embedder": artifact.embedder,
            "dimensions": artifact.dimensions,
        }),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|mut value| value.get_mut("data").map(Value::take))
            .unwrap_or(Value::Null),
    }
}
