//! Webhooks: register a URL for a tenant's document events, list and
//! remove them, and read their deliveries, the dead-letter list among them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::tenant::TenantCommand;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use projections::webhooks::{DeliveryRow, DeliveryStatus, WebhookRow};
use rand::RngCore;
use uuid::Uuid;

use super::error::ApiError;
use super::{ApiKeyAuth, Caller};
use crate::app::{App, Feed};

#[derive(Tags)]
enum Tag {
    Webhooks,
}

#[derive(Object)]
struct NewWebhook {
    /// Where the events are POSTed: http:// or https://, at most 2048 bytes.
    #[oai(validator(max_length = 2048))]
    url: String,
    /// Document event types (`DocumentRegistered`, `ProcessingStarted`,
    /// `TextExtracted`, …, `DocumentProcessed`, `ProcessingFailed`), or `*`.
    #[oai(validator(min_items = 1, max_items = 32))]
    events: Vec<String>,
}

#[derive(Object)]
struct WebhookView {
    id: Uuid,
    url: String,
    events: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookView {
    fn from(row: WebhookRow) -> Self {
        WebhookView {
            id: row.id,
            url: row.url,
            events: row.event_types,
            created_at: row.created_at,
        }
    }
}

#[derive(Object)]
struct RegisteredWebhook {
    id: Uuid,
    url: String,
    events: Vec<String>,
    /// The signing secret, shown this once: each delivery carries
    /// `X-NeuroStash-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    secret: String,
}

#[derive(Object)]
struct WebhookList {
    items: Vec<WebhookView>,
}

#[derive(Object)]
struct DeliveryView {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    document_id: Option<Uuid>,
    version: i64,
    /// PENDING, DELIVERED or DEAD
    status: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(row: DeliveryRow) -> Self {
        DeliveryView {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            document_id: row
                .stream_id
                .strip_prefix("document-")
                .and_then(|id| Uuid::parse_str(id).ok()),
            version: row.stream_version,
            status: row.status.as_str().to_owned(),
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
            created_at: row.created_at,
        }
    }
}

#[derive(Object)]
struct DeliveryList {
    items: Vec<DeliveryView>,
}

#[derive(ApiResponse)]
enum RegisterResponse {
    #[oai(status = 201)]
    Registered(Json<RegisteredWebhook>),
}

#[derive(ApiResponse)]
enum Done {
    #[oai(status = 204)]
    Done,
}

/// Waits, bounded, until the webhook projection has applied a write.
async fn settle_webhooks(app: &App, written: Option<actors::aggregate_actor::Written>) {
    let Some(written) = written else { return };
    if let Feed::Log(runner) = &app.webhook_feed {
        runner
            .wait_for(written.log_position, app.config.read_your_writes_timeout())
            .await;
    }
}

async fn owned_webhook(app: &App, caller: &Caller, id: Uuid) -> Result<WebhookRow, ApiError> {
    app.webhooks
        .webhook(caller.tenant_id, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("webhook", id))
}

pub struct WebhooksApi;

#[OpenApi(prefix_path = "/v1")]
impl WebhooksApi {
    /// Register a URL that receives the tenant's document events of the
    /// given types, signed; answers the signing secret once.
    #[oai(path = "/webhooks", method = "post", tag = "Tag::Webhooks")]
    async fn register(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        body: Json<NewWebhook>,
    ) -> poem::Result<RegisterResponse> {
        let caller = auth.0;
        caller.require_tenant_wide("register webhooks")?;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let secret = hex::encode(secret);
        let sealed = app
            .vault
            .seal(caller.tenant_id, "webhook_secret", &secret)
            .await
            .map_err(ApiError::internal)?;
        let webhook_id = Uuid::now_v7();
        let outcome = app
            .actors
            .tenants
            .execute(
                caller.tenant_id.stream_id(),
                TenantCommand::RegisterWebhook {
                    webhook_id,
                    url: body.0.url,
                    event_types: body.0.events,
                    secret: sealed,
                },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        let Some(domain::tenant::TenantEvent::WebhookRegistered { url, event_types, .. }) =
            outcome.events.first().cloned()
        else {
            return Err(ApiError::internal("webhook registration recorded no event").into());
        };
        settle_webhooks(&app, outcome.written).await;
        tracing::info!(%webhook_id, tenant_id = %caller.tenant_id, "webhook registered");
        Ok(RegisterResponse::Registered(Json(RegisteredWebhook {
            id: webhook_id,
            url,
            events: event_types,
            secret,
        })))
    }

    /// The tenant's webhooks (without their secrets).
    #[oai(path = "/webhooks", method = "get", tag = "Tag::Webhooks")]
    async fn list(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth) -> poem::Result<Json<WebhookList>> {
        auth.0.require_tenant_wide("list webhooks")?;
        let rows = app
            .webhooks
            .webhooks(auth.0.tenant_id)
            .await
            .map_err(ApiError::internal)?;
        Ok(Json(WebhookList {
            items: rows.into_iter().map(Into::into).collect(),
        }))
    }

    /// Remove a webhook: nothing more is sent to it, its queue goes.
    #[oai(path = "/webhooks/:id", method = "delete", tag = "Tag::Webhooks")]
    async fn remove(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<Done> {
        let caller = auth.0;
        caller.require_tenant_wide("remove webhooks")?;
        let webhook = owned_webhook(&app, &caller, id.0).await?;
        let outcome = app
            .actors
            .tenants
            .execute(
                caller.tenant_id.stream_id(),
                TenantCommand::RemoveWebhook { webhook_id: webhook.id },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        settle_webhooks(&app, outcome.written).await;
        Ok(Done::Done)
    }

    /// A webhook's deliveries, oldest first; `status=DEAD` is its
    /// dead-letter list (deliveries whose attempts are used up).
    #[oai(path = "/webhooks/:id/deliveries", method = "get", tag = "Tag::Webhooks")]
    async fn deliveries(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
        /// PENDING, DELIVERED or DEAD; all when absent.
        status: Query<Option<String>>,
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<u32>,
    ) -> poem::Result<Json<DeliveryList>> {
        let caller = auth.0;
        caller.require_tenant_wide("read webhook deliveries")?;
        let status = match status.0.as_deref() {
            None => None,
            Some(raw) => Some(DeliveryStatus::parse(&raw.trim().to_ascii_uppercase()).ok_or_else(|| {
                ApiError::bad_parameter("status", format!("{raw:?} is not PENDING, DELIVERED or DEAD"))
            })?),
        };
        let webhook = owned_webhook(&app, &caller, id.0).await?;
        let rows = app
            .webhooks
            .deliveries(caller.tenant_id, webhook.id, status, i64::from(limit.0))
            .await
            .map_err(ApiError::internal)?;
        Ok(Json(DeliveryList {
            items: rows.into_iter().map(Into::into).collect(),
        }))
    }
}

fn default_limit() -> u32 {
    100
}
