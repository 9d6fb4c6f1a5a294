//! The message format on Kafka: CloudEvents 1.0, structured JSON mode, so
//! that any consumer (kcat, a Python script, an audit tool) can read the
//! topic without NeuroStash's code.

use chrono::{DateTime, Utc};
use domain::{ApiKeyId, EventEnvelope, EventMetadata, LogPosition, StreamId, TenantId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::schemas::dataschema_uri;

pub const SPEC_VERSION: &str = "1.0";
pub const SOURCE: &str = "urn:neurostash:event-store";
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// Kafka's content type for a structured-mode CloudEvent (the binding spec).
pub const MESSAGE_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";
/// `type` is this prefix, the stream category and the event type:
/// `neurostash.document.DocumentRegistered`.
pub const TYPE_PREFIX: &str = "neurostash";

/// One event of the log as a CloudEvent. The required context attributes
/// come first; NeuroStash's own envelope fields are extension attributes
/// (lowercase alphanumeric names, as the spec requires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudEvent {
    pub specversion: String,
    /// The event id, unique in the log: consumers deduplicate on it.
    pub id: Uuid,
    pub source: String,
    /// `neurostash.<stream category>.<event type>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stream (aggregate) id, also the Kafka message key.
    pub subject: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    /// Names the JSON Schema `data` follows: a key of `GET /v1/schemas/events`
    /// and a file under `schemas/events/` in the repository.
    pub dataschema: String,
    /// 1-based version of the event within its stream.
    pub streamversion: i64,
    /// The global position of the event in the log.
    pub position: i64,
    /// The log's ordering key of the appending transaction; `(logcommit,
    /// position)` totally orders the log.
    pub logcommit: i64,
    pub schemaversion: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenantid: Option<Uuid>,
    /// The API key that issued the command; absent for the system itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actorkeyid: Option<String>,
    pub correlationid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<Uuid>,
    pub data: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudEventError {
    #[error("not a cloudevent: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("cloudevent {id} has spec version {version}, expected {SPEC_VERSION}")]
    SpecVersion { id: Uuid, version: String },
    #[error("cloudevent {id} has type {event_type}, not neurostash.<category>.<event type>")]
    Type { id: Uuid, event_type: String },
}

impl CloudEvent {
    pub fn from_recorded(event: &EventEnvelope<Value>) -> CloudEvent {
        let category = event.stream_id.category();
        CloudEvent {
            specversion: SPEC_VERSION.to_string(),
            id: event.event_id,
            source: SOURCE.to_string(),
            event_type: format!("{TYPE_PREFIX}.{category}.{}", event.event_type),
            subject: event.stream_id.as_str().to_string(),
            time: event.recorded_at,
            datacontenttype: DATA_CONTENT_TYPE.to_string(),
            dataschema: dataschema_uri(category, &event.event_type, event.schema_version),
            streamversion: event.stream_version,
            position: event.log_position.position,
            logcommit: event.log_position.commit,
            schemaversion: event.schema_version,
            tenantid: event.metadata.tenant_id.map(|tenant| tenant.0),
            actorkeyid: event.metadata.actor_key_id.as_ref().map(|key| key.0.clone()),
            correlationid: event.metadata.correlation_id,
            causationid: event.metadata.causation_id,
            data: event.payload.clone(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // a struct of strings, numbers and a JSON value always serialises
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<CloudEvent, CloudEventError> {
        let event: CloudEvent = serde_json::from_slice(bytes)?;
        if event.specversion != SPEC_VERSION {
            return Err(CloudEventError::SpecVersion {
                id: event.id,
                version: event.specversion,
            });
        }
        Ok(event)
    }

    /// Back to the log's envelope, as a consumer of the topic feeds it to a
    /// projection.
    pub fn into_recorded(self) -> Result<EventEnvelope<Value>, CloudEventError> {
        let event_type = self
            .event_type
            .strip_prefix(TYPE_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .map(|(_category, event_type)| event_type.to_string())
            .ok_or_else(|| CloudEventError::Type {
                id: self.id,
                event_type: self.event_type.clone(),
            })?;
        Ok(EventEnvelope {
            event_id: self.id,
            stream_id: StreamId(self.subject),
            stream_version: self.streamversion,
            log_position: LogPosition {
                commit: self.logcommit,
                position: self.position,
            },
            schema_version: self.schemaversion,
            event_type,
            recorded_at: self.time,
            metadata: EventMetadata {
                tenant_id: self.tenantid.map(TenantId),
                actor_key_id: self.actorkeyid.map(ApiKeyId),
                correlation_id: self.correlationid,
                causation_id: self.causationid,
            },
            payload: self.data,
        })
    }
}
