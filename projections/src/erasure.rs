//! Erasure receipts: each part of the system that holds a tenant's data
//! acknowledges its erasure once the data is gone from it. The receipt of
//! an erasure is the set of those acknowledgements.

use std::sync::Arc;

use actors::db::Database;
use actors::keys::KeyVault;
use actors::objects::{tenant_prefix, ObjectStore};
use actors::store::RecordedEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::tenant::TenantEvent;
use domain::{AnyEvent, LogPosition, TenantId};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{self, Param, Transaction};

/// The parts that must acknowledge before an erasure is complete. The
/// vector index is node-local: each API node acknowledges as
/// `vector@<node>`, and one is enough to count it.
pub const REQUIRED_COMPONENTS: [&str; 5] = ["registry", "audit", "vector", "keys", "objects"];

/// Inserted in the acknowledging part's own transaction where it has one;
/// a redelivered erasure leaves the first acknowledgement standing.
pub(crate) const ACKNOWLEDGE_SQL: &str = "INSERT INTO erasure_receipts (erasure_id, tenant_id, component, \
     acknowledged_at, detail) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (erasure_id, component) DO NOTHING";

pub(crate) fn acknowledge_params(
    erasure_id: Uuid,
    tenant_id: TenantId,
    component: &str,
    at: DateTime<Utc>,
    detail: &str,
) -> [Param; 5] {
    [
        Param::Uuid(erasure_id),
        Param::Uuid(tenant_id.0),
        Param::text(component),
        Param::Time(at),
        Param::text(detail),
    ]
}

/// Records an acknowledgement outside any projection transaction (the
/// eraser, the node-local vector index after its snapshot).
pub async fn acknowledge(
    db: &Database,
    erasure_id: Uuid,
    tenant_id: TenantId,
    component: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sql::execute(
        db,
        ACKNOWLEDGE_SQL,
        &acknowledge_params(erasure_id, tenant_id, component, Utc::now(), detail),
    )
    .await
    .map(drop)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    pub component: String,
    pub acknowledged_at: DateTime<Utc>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReceipt {
    pub erasure_id: Uuid,
    pub tenant_id: TenantId,
    pub acknowledgements: Vec<Acknowledgement>,
}

impl ErasureReceipt {
    /// The required parts that have not acknowledged yet.
    pub fn pending(&self) -> Vec<&'static str> {
        REQUIRED_COMPONENTS
            .iter()
            .copied()
            .filter(|required| {
                !self
                    .acknowledgements
                    .iter()
                    .any(|ack| ack.component == *required || ack.component.starts_with(&format!("{required}@")))
            })
            .collect()
    }
}

/// The receipt of one erasure; `None` while no part has acknowledged it.
pub async fn receipt(db: &Database, erasure_id: Uuid) -> Result<Option<ErasureReceipt>, sqlx::Error> {
    let rows = sql::fetch_all(
        db,
        "SELECT tenant_id, component, acknowledged_at, detail FROM erasure_receipts \
         WHERE erasure_id = $1 ORDER BY acknowledged_at, component",
        &[Param::Uuid(erasure_id)],
    )
    .await?;
    let decode = |error: String| sqlx::Error::Decode(error.into());
    let mut tenant = None;
    let mut acknowledgements = Vec::with_capacity(rows.len());
    for row in rows {
        tenant = row.uuid("tenant_id").map_err(decode)?.map(TenantId);
        acknowledgements.push(Acknowledgement {
            component: row.text("component").map_err(decode)?.unwrap_or_default(),
            acknowledged_at: row.time("acknowledged_at").map_err(decode)?.unwrap_or_default(),
            detail: row.text("detail").map_err(decode)?.unwrap_or_default(),
        });
    }
    Ok(tenant.map(|tenant_id| ErasureReceipt {
        erasure_id,
        tenant_id,
        acknowledgements,
    }))
}

/// The name of the eraser's checkpoint.
pub const ERASER: &str = "eraser";

/// The process manager that carries out an erasure: on `TenantErased` it
/// destroys the tenant's data keys (crypto-shredding: every sealed field and
/// encrypted object of the tenant becomes unreadable, wherever a copy of it
/// survives) and deletes its objects and staged uploads, acknowledging each.
/// Both steps are idempotent, so a redelivered erasure only repeats them.
pub struct Eraser {
    db: Database,
    vault: Arc<KeyVault>,
    /// The raw store: deleting needs no key, and the staging area is plain.
    objects: Arc<dyn ObjectStore>,
}

impl Eraser {
    pub fn new(db: Database, vault: Arc<KeyVault>, objects: Arc<dyn ObjectStore>) -> Eraser {
        Eraser { db, vault, objects }
    }

    async fn erase(&self, erasure_id: Uuid, tenant_id: TenantId) -> Result<(), ProjectionError> {
        let failed = |reason: String| ProjectionError::Io {
            projection: ERASER.to_owned(),
            reason,
        };
        let destroyed = self
            .vault
            .destroy(tenant_id)
            .await
            .map_err(|error| failed(format!("destroying the keys of tenant {tenant_id}: {error}")))?;
        acknowledge(
            &self.db,
            erasure_id,
            tenant_id,
            "keys",
            &format!("{destroyed} data keys destroyed"),
        )
        .await
        .map_err(database_error)?;
        let mut deleted = 0;
        for prefix in [tenant_prefix(tenant_id), format!("staging/{tenant_id}/")] {
            deleted += self
                .objects
                .delete_prefix(&prefix)
                .await
                .map_err(|error| failed(format!("deleting the objects of tenant {tenant_id}: {error}")))?;
        }
        acknowledge(
            &self.db,
            erasure_id,
            tenant_id,
            "objects",
            &format!("{deleted} objects deleted"),
        )
        .await
        .map_err(database_error)?;
        tracing::info!(%tenant_id, %erasure_id, destroyed, deleted, "tenant erased: keys destroyed, objects deleted");
        Ok(())
    }
}

fn database_error(source: sqlx::Error) -> ProjectionError {
    ProjectionError::Database {
        projection: ERASER.to_owned(),
        source,
    }
}

#[async_trait]
impl Projection for Eraser {
    fn name(&self) -> &str {
        ERASER
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        sql::load_checkpoint(&self.db, ERASER).await.map_err(database_error)
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        for event in events.iter().filter(|event| event.event_type == "TenantErased") {
            let decoded = AnyEvent::decode(
                event.stream_id.category(),
                &event.event_type,
                event.schema_version,
                event.payload.clone(),
            );
            let (Ok(AnyEvent::Tenant(TenantEvent::TenantErased { erasure_id })), Some(tenant)) = (
                decoded,
                event
                    .stream_id
                    .as_str()
                    .strip_prefix("tenant-")
                    .and_then(|id| id.parse().ok()),
            ) else {
                continue;
            };
            self.erase(erasure_id, TenantId(tenant)).await?;
        }
        let mut transaction = Transaction::begin(&self.db, ERASER).await.map_err(database_error)?;
        sql::store_checkpoint(&mut transaction, ERASER, last.log_position, last.recorded_at)
            .await
            .map_err(database_error)?;
        transaction.commit().await.map_err(database_error)
    }
}
