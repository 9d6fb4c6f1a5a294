//! Sends webhook deliveries from their outbox (`projections::webhooks`):
//! each body is the document event as its tenant sees it, signed with the
//! webhook's secret; a failure is retried with exponential backoff, and
//! after `webhook_max_attempts` the delivery is dead, listed by the API.
//!
//! The signature is `X-NeuroStash-Signature: t=<unix seconds>,v1=<hex>`,
//! the hex being HMAC-SHA256 under the secret of `<t>.<body>`: a receiver
//! recomputes it and refuses old timestamps, so a captured request cannot
//! be replayed later. `X-NeuroStash-Delivery` names the delivery (stable
//! across its attempts, for the receiver's dedup) and `X-NeuroStash-Event`
//! the event type.

use std::sync::Arc;
use std::time::Duration;

use actors::keys::KeyVault;
use actors::store::EventStore;
use chrono::Utc;
use domain::document::Document;
use domain::{Aggregate, StreamId};
use hmac::{Hmac, Mac};
use projections::webhooks::{DeliveryRow, WebhookRow, WebhookStore};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::background::{Next, PeriodicTask};
use crate::event_view::{decode, event_data};

pub const SIGNATURE_HEADER: &str = "X-NeuroStash-Signature";
pub const DELIVERY_HEADER: &str = "X-NeuroStash-Delivery";
pub const EVENT_HEADER: &str = "X-NeuroStash-Event";

/// Deliveries sent per pass at most; the next pass follows at once when
/// there were that many.
const BATCH: i64 = 64;

#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub interval: Duration,
}

/// `t=<unix>,v1=<hex>` for `body` at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct WebhookSender {
    deliveries: WebhookStore,
    events: Arc<dyn EventStore>,
    vault: Arc<KeyVault>,
    client: reqwest::Client,
    options: SenderOptions,
}

impl WebhookSender {
    pub fn new(
        deliveries: WebhookStore,
        events: Arc<dyn EventStore>,
        vault: Arc<KeyVault>,
        options: SenderOptions,
    ) -> Result<WebhookSender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            // a receiver's redirect is not followed: the signed body is
            // for the registered url alone
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebhookSender {
            deliveries,
            events,
            vault,
            client,
            options,
        })
    }

    /// Sends every due delivery once; returns how many were attempted.
    pub async fn send_due(&self) -> usize {
        let due = match self.deliveries.due(Utc::now(), BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "cannot read due webhook deliveries");
                return 0;
            }
        };
        let count = due.len();
        // one task per webhook: each webhook's deliveries stay in order, a
        // slow receiver holds back only its own
        let sends = due.into_iter().map(|delivery| self.send(delivery));
        futures::future::join_all(sends).await;
        count
    }

    async fn send(&self, delivery: DeliveryRow) {
        let attempts = delivery.attempts + 1;
        let outcome = self.attempt(&delivery).await;
        let recorded = match outcome {
            Ok(()) => self.deliveries.mark_delivered(delivery.id, attempts, Utc::now()).await,
            Err(reason) => {
                let retry_at = (attempts < i64::from(self.options.max_attempts)).then(|| {
                    let doublings = (attempts - 1).clamp(0, 30) as u32;
                    let wait = self
                        .options
                        .backoff_base
                        .saturating_mul(1 << doublings)
                        .min(self.options.backoff_max);
                    Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(10))
                });
                tracing::info!(
                    delivery_id = %delivery.id,
                    webhook_id = %delivery.webhook_id,
                    attempts,
                    dead = retry_at.is_none(),
                    %reason,
                    "webhook delivery failed"
                );
                self.deliveries
                    .mark_failed(delivery.id, attempts, &reason, retry_at)
                    .await
            }
        };
        if let Err(error) = recorded {
            // sent again at the next pass: the receiver dedups by delivery id
            tracing::warn!(delivery_id = %delivery.id, %error, "cannot record a webhook delivery's outcome");
        }
    }

    async fn attempt(&self, delivery: &DeliveryRow) -> Result<(), String> {
        let webhook = self
            .deliveries
            .webhook(delivery.tenant_id, delivery.webhook_id)
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| "the webhook is removed".to_owned())?;
        let body = self.body(delivery).await?;
        let secret = self
            .vault
            .open(delivery.tenant_id, "webhook_secret", &webhook.secret)
            .await
            .map_err(|error| format!("the signing secret cannot be opened: {error}"))?;
        self.post(&webhook, delivery, &secret, body).await
    }

    async fn post(
        &self,
        webhook: &WebhookRow,
        delivery: &DeliveryRow,
        secret: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let response = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature(secret, Utc::now().timestamp(), &body))
            .header(DELIVERY_HEADER, delivery.id.to_string())
            .header(EVENT_HEADER, &delivery.event_type)
            .body(body)
            .send()
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }

    /// The event as the tenant sees it, with the status it led to.
    async fn body(&self, delivery: &DeliveryRow) -> Result<Vec<u8>, String> {
        let stream_id = StreamId(delivery.stream_id.clone());
        let events = self
            .events
            .read_stream(&stream_id, 0)
            .await
            .map_err(|error| format!("the event cannot be read: {error}"))?;
        let mut document = Document::default();
        let mut found = None;
        for recorded in events
            .iter()
            .take_while(|event| event.stream_version <= delivery.stream_version)
        {
            let Some(decoded) = decode(recorded) else { continue };
            document.apply(&decoded);
            if recorded.event_id == delivery.event_id {
                found = Some((recorded, decoded));
            }
        }
        let (recorded, decoded) = found.ok_or_else(|| format!("event {} is not in its stream", delivery.event_id))?;
        let status = (!document.deleted)
            .then(|| document.status.map(|status| status.as_str().to_owned()))
            .flatten();
        let document_id = delivery
            .stream_id
            .strip_prefix(Document::CATEGORY)
            .and_then(|rest| rest.strip_prefix('-'))
            .unwrap_or_default();
        let body: Value = json!({
            "id": recorded.event_id,
            "type": recorded.event_type,
            "document_id": document_id,
            "version": recorded.stream_version,
            "recorded_at": recorded.recorded_at,
            "status": status,
            "data": event_data(&self.vault, delivery.tenant_id, &decoded).await,
        });
        serde_json::to_vec(&body).map_err(|error| error.to_string())
    }

    /// Sends due deliveries every `interval` until shut down.
    pub fn spawn(self) -> PeriodicTask {
        let interval = self.options.interval;
        let sender = Arc::new(self);
        PeriodicTask::spawn(interval, move || {
            let sender = sender.clone();
            async move {
                if sender.send_due().await as i64 >= BATCH {
                    Next::AtOnce
                } else {
                    Next::AfterInterval
                }
            }
        })
    }
}
