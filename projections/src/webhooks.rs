//! Webhooks: the projection that keeps the tenants' webhooks and fills
//! their delivery outbox from the log, and the reads and writes of the
//! sender that empties it (`neurostash::webhooks`).
//!
//! A delivery is queued in the transaction that moves the projection's
//! checkpoint, once per (webhook, event): replaying a batch queues nothing
//! twice. It names its event by id, stream and version; the body is made
//! from the event when it is sent, so the outbox holds no plaintext. Events
//! before a webhook's registration are never queued for it: it appears in
//! log order.

use actors::db::Database;
use actors::store::RecordedEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::document::Document;
use domain::tenant::{Tenant, TenantEvent};
use domain::{Aggregate, AnyEvent, LogPosition, Sealed, TenantId};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{self, Param, Row, Transaction};

pub const WEBHOOK_PROJECTION: &str = "webhooks";

/// A delivery's state: PENDING until the receiver takes it, DEAD once
/// its attempts are used up (the dead-letter list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Dead => "DEAD",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "PENDING" => Some(DeliveryStatus::Pending),
            "DELIVERED" => Some(DeliveryStatus::Delivered),
            "DEAD" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub url: String,
    pub event_types: Vec<String>,
    pub secret: Sealed,
    pub created_at: DateTime<Utc>,
}

impl WebhookRow {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types
            .iter()
            .any(|wanted| wanted == "*" || wanted == event_type)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub seq: i64,
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub tenant_id: TenantId,
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("webhook store: {0}")]
pub struct WebhookStoreError(String);

impl From<sqlx::Error> for WebhookStoreError {
    fn from(error: sqlx::Error) -> Self {
        WebhookStoreError(error.to_string())
    }
}

const WEBHOOK_COLUMNS: &str = "SELECT id, user_id, url, event_types, secret, created_at FROM webhooks";
const DELIVERY_COLUMNS: &str = "SELECT seq, id, webhook_id, user_id, event_id, event_type, stream_id, stream_version, \
     status, attempts, next_attempt_at, last_error, delivered_at, created_at FROM webhook_deliveries";

/// The reads of the API and the sender, and the sender's writes.
#[derive(Clone)]
pub struct WebhookStore {
    db: Database,
}

impl WebhookStore {
    pub fn new(db: Database) -> WebhookStore {
        WebhookStore { db }
    }

    pub async fn webhooks(&self, tenant: TenantId) -> Result<Vec<WebhookRow>, WebhookStoreError> {
        let sql = format!("{WEBHOOK_COLUMNS} WHERE user_id = $1 ORDER BY created_at, id");
        let rows = sql::fetch_all(&self.db, &sql, &[Param::Uuid(tenant.0)]).await?;
        rows.iter().map(webhook_row).collect()
    }

    /// The tenant's webhook `id`; `None` for another tenant's.
    pub async fn webhook(&self, tenant: TenantId, id: Uuid) -> Result<Option<WebhookRow>, WebhookStoreError> {
        let sql = format!("{WEBHOOK_COLUMNS} WHERE id = $1 AND user_id = $2");
        let row = sql::fetch_optional(&self.db, &sql, &[Param::Uuid(id), Param::Uuid(tenant.0)]).await?;
        row.as_ref().map(webhook_row).transpose()
    }

    /// The deliveries of a tenant's webhook, oldest first, of one status or
    /// all.
    pub async fn deliveries(
        &self,
        tenant: TenantId,
        webhook: Uuid,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, WebhookStoreError> {
        let mut sql = format!("{DELIVERY_COLUMNS} WHERE webhook_id = $1 AND user_id = $2");
        let mut params = vec![Param::Uuid(webhook), Param::Uuid(tenant.0)];
        if let Some(status) = status {
            sql.push_str(" AND status = $3");
            params.push(Param::text(status.as_str()));
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", limit.clamp(1, 1000)));
        let rows = sql::fetch_all(&self.db, &sql, &params).await?;
        rows.iter().map(delivery_row).collect()
    }

    /// What to send now: of each webhook, its oldest pending delivery, if
    /// that one is due. A webhook's events go out one at a time, in log
    /// order: a delivery waiting out its backoff holds back the later ones
    /// (until it is delivered or dead).
    pub async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DeliveryRow>, WebhookStoreError> {
        let sql = format!(
            "{DELIVERY_COLUMNS} WHERE status = 'PENDING' AND next_attempt_at <= $1 AND seq = \
             (SELECT MIN(head.seq) FROM webhook_deliveries head WHERE head.webhook_id = webhook_deliveries.webhook_id \
             AND head.status = 'PENDING') ORDER BY seq LIMIT $2"
        );
        let rows = sql::fetch_all(&self.db, &sql, &[Param::Time(now), Param::Int(limit.max(1))]).await?;
        rows.iter().map(delivery_row).collect()
    }

    pub async fn mark_delivered(&self, id: Uuid, attempts: i64, at: DateTime<Utc>) -> Result<(), WebhookStoreError> {
        sql::execute(
            &self.db,
            "UPDATE webhook_deliveries SET status = 'DELIVERED', attempts = $2, delivered_at = $3, last_error = NULL \
             WHERE id = $1 AND status = 'PENDING'",
            &[Param::Uuid(id), Param::Int(attempts), Param::Time(at)],
        )
        .await?;
        Ok(())
    }

    /// A failed attempt: tried again at `retry_at`, or dead without one.
    pub async fn mark_failed(
        &self,
        id: Uuid,
        attempts: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), WebhookStoreError> {
        let error: String = error.chars().take(1000).collect();
        match retry_at {
            Some(at) => {
                sql::execute(
                    &self.db,
                    "UPDATE webhook_deliveries SET attempts = $2, last_error = $3, next_attempt_at = $4 \
                     WHERE id = $1 AND status = 'PENDING'",
                    &[
                        Param::Uuid(id),
                        Param::Int(attempts),
                        Param::Text(error),
                        Param::Time(at),
                    ],
                )
                .await?
            }
            None => {
                sql::execute(
                    &self.db,
                    "UPDATE webhook_deliveries SET status = 'DEAD', attempts = $2, last_error = $3 \
                     WHERE id = $1 AND status = 'PENDING'",
                    &[Param::Uuid(id), Param::Int(attempts), Param::Text(error)],
                )
                .await?
            }
        };
        Ok(())
    }
}

fn decode_error(error: String) -> WebhookStoreError {
    WebhookStoreError(error)
}

fn webhook_row(row: &Row) -> Result<WebhookRow, WebhookStoreError> {
    let missing = |column: &str| WebhookStoreError(format!("webhooks.{column} is null"));
    let event_types: String = row
        .text("event_types")
        .map_err(decode_error)?
        .ok_or_else(|| missing("event_types"))?;
    let secret = row
        .text("secret")
        .map_err(decode_error)?
        .ok_or_else(|| missing("secret"))?;
    Ok(WebhookRow {
        id: row.uuid("id").map_err(decode_error)?.ok_or_else(|| missing("id"))?,
        tenant_id: TenantId(
            row.uuid("user_id")
                .map_err(decode_error)?
                .ok_or_else(|| missing("user_id"))?,
        ),
        url: row.text("url").map_err(decode_error)?.ok_or_else(|| missing("url"))?,
        event_types: serde_json::from_str(&event_types)
            .map_err(|error| WebhookStoreError(format!("webhooks.event_types: {error}")))?,
        secret: Sealed::from_text(secret)
            .ok_or_else(|| WebhookStoreError("webhooks.secret is not a sealed value".into()))?,
        created_at: row
            .time("created_at")
            .map_err(decode_error)?
            .ok_or_else(|| missing("created_at"))?,
    })
}

fn delivery_row(row: &Row) -> Result<DeliveryRow, WebhookStoreError> {
    let missing = |column: &str| WebhookStoreError(format!("webhook_deliveries.{column} is null"));
    let status = row
        .text("status")
        .map_err(decode_error)?
        .ok_or_else(|| missing("status"))?;
    Ok(DeliveryRow {
        seq: row.int("seq").map_err(decode_error)?.ok_or_else(|| missing("seq"))?,
        id: row.uuid("id").map_err(decode_error)?.ok_or_else(|| missing("id"))?,
        webhook_id: row
            .uuid("webhook_id")
            .map_err(decode_error)?
            .ok_or_else(|| missing("webhook_id"))?,
        tenant_id: TenantId(
            row.uuid("user_id")
                .map_err(decode_error)?
                .ok_or_else(|| missing("user_id"))?,
        ),
        event_id: row
            .uuid("event_id")
            .map_err(decode_error)?
            .ok_or_else(|| missing("event_id"))?,
        event_type: row
            .text("event_type")
            .map_err(decode_error)?
            .ok_or_else(|| missing("event_type"))?,
        stream_id: row
            .text("stream_id")
            .map_err(decode_error)?
            .ok_or_else(|| missing("stream_id"))?,
        stream_version: row
            .int("stream_version")
            .map_err(decode_error)?
            .ok_or_else(|| missing("stream_version"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| WebhookStoreError(format!("unknown status {status}")))?,
        attempts: row.int("attempts").map_err(decode_error)?.unwrap_or(0),
        next_attempt_at: row
            .time("next_attempt_at")
            .map_err(decode_error)?
            .ok_or_else(|| missing("next_attempt_at"))?,
        last_error: row.text("last_error").map_err(decode_error)?,
        delivered_at: row.time("delivered_at").map_err(decode_error)?,
        created_at: row
            .time("created_at")
            .map_err(decode_error)?
            .ok_or_else(|| missing("created_at"))?,
    })
}

/// Keeps `webhooks` and queues `webhook_deliveries` from the log.
pub struct WebhookProjection {
    db: Database,
}

impl WebhookProjection {
    pub fn new(db: Database) -> WebhookProjection {
        WebhookProjection { db }
    }
}

fn database_error(source: sqlx::Error) -> ProjectionError {
    ProjectionError::Database {
        projection: WEBHOOK_PROJECTION.to_owned(),
        source,
    }
}

fn tenant_of_stream(event: &RecordedEvent) -> Option<TenantId> {
    event
        .stream_id
        .as_str()
        .strip_prefix(Tenant::CATEGORY)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|id| id.parse().ok())
        .map(TenantId)
}

async fn apply_tenant_event(transaction: &mut Transaction, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(tenant) = tenant_of_stream(event) else {
        return Ok(());
    };
    let decoded = AnyEvent::decode(
        Tenant::CATEGORY,
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    );
    match decoded {
        Ok(AnyEvent::Tenant(TenantEvent::WebhookRegistered {
            webhook_id,
            url,
            event_types,
            secret,
        })) => {
            let types = serde_json::to_string(&event_types).unwrap_or_else(|_| "[]".into());
            transaction
                .execute(
                    "INSERT INTO webhooks (id, user_id, url, event_types, secret, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                    &[
                        Param::Uuid(webhook_id),
                        Param::Uuid(tenant.0),
                        Param::Text(url),
                        Param::Text(types),
                        Param::text(secret.as_str()),
                        Param::Time(event.recorded_at),
                    ],
                )
                .await
                .map_err(database_error)?;
        }
        Ok(AnyEvent::Tenant(TenantEvent::WebhookRemoved { webhook_id })) => {
            // its dead letters and what it never got go with it
            for statement in [
                "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
                "DELETE FROM webhooks WHERE id = $1",
            ] {
                transaction
                    .execute(statement, &[Param::Uuid(webhook_id)])
                    .await
                    .map_err(database_error)?;
            }
        }
        Ok(AnyEvent::Tenant(TenantEvent::TenantErased { .. })) => {
            for statement in [
                "DELETE FROM webhook_deliveries WHERE user_id = $1",
                "DELETE FROM webhooks WHERE user_id = $1",
            ] {
                transaction
                    .execute(statement, &[Param::Uuid(tenant.0)])
                    .await
                    .map_err(database_error)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Queues the document event for each of its tenant's webhooks that wants
/// its type.
/// The webhooks of each tenant met in a batch, read once per batch (and
/// again after a tenant event of that tenant).
type TenantWebhooks = std::collections::HashMap<TenantId, Vec<WebhookRow>>;

async fn queue_document_event(
    transaction: &mut Transaction,
    known: &mut TenantWebhooks,
    event: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let Some(tenant) = event.metadata.tenant_id else {
        return Ok(());
    };
    if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(tenant) {
        let rows = transaction
            .fetch_all(
                &format!("{WEBHOOK_COLUMNS} WHERE user_id = $1"),
                &[Param::Uuid(tenant.0)],
            )
            .await
            .map_err(database_error)?;
        let webhooks = rows
            .iter()
            .map(webhook_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ProjectionError::Io {
                projection: WEBHOOK_PROJECTION.to_owned(),
                reason: error.to_string(),
            })?;
        slot.insert(webhooks);
    }
    for webhook in &known[&tenant] {
        if !webhook.wants(&event.event_type) {
            continue;
        }
        transaction
            .execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, user_id, event_id, event_type, stream_id, \
                 stream_version, status, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', 0, $8, $8) \
                 ON CONFLICT (webhook_id, event_id) DO NOTHING",
                &[
                    Param::Uuid(Uuid::now_v7()),
                    Param::Uuid(webhook.id),
                    Param::Uuid(tenant.0),
                    Param::Uuid(event.event_id),
                    Param::text(event.event_type.as_str()),
                    Param::text(event.stream_id.as_str()),
                    Param::Int(event.stream_version),
                    Param::Time(event.recorded_at),
                ],
            )
            .await
            .map_err(database_error)?;
    }
    Ok(())
}

#[async_trait]
impl Projection for WebhookProjection {
    fn name(&self) -> &str {
        WEBHOOK_PROJECTION
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        sql::load_checkpoint(&self.db, WEBHOOK_PROJECTION)
            .await
            .map_err(database_error)
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut transaction = Transaction::begin(&self.db, WEBHOOK_PROJECTION)
            .await
            .map_err(database_error)?;
        let checkpoint = sql::load_checkpoint_in(&mut transaction, WEBHOOK_PROJECTION)
            .await
            .map_err(database_error)?;
        let mut known = TenantWebhooks::new();
        for event in events.iter().filter(|event| event.log_position > checkpoint) {
            match event.stream_id.category() {
                Tenant::CATEGORY => {
                    apply_tenant_event(&mut transaction, event).await?;
                    if let Some(tenant) = tenant_of_stream(event) {
                        known.remove(&tenant);
                    }
                }
                Document::CATEGORY => queue_document_event(&mut transaction, &mut known, event).await?,
                _ => {}
            }
        }
        sql::store_checkpoint(
            &mut transaction,
            WEBHOOK_PROJECTION,
            last.log_position,
            last.recorded_at,
        )
        .await
        .map_err(database_error)?;
        transaction.commit().await.map_err(database_error)
    }
}
