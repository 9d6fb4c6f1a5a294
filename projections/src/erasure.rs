//! Erasure receipts: each part of the system that holds a tenant's data
//! acknowledges its erasure once the data is gone from it. The receipt of
//! an erasure is the set of those acknowledgements.

use actors::db::Database;
use chrono::{DateTime, Utc};
use domain::TenantId;
use uuid::Uuid;

use crate::sql::{self, Param};

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
