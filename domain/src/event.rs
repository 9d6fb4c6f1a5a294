use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::{Document, DocumentEvent};
use crate::knowledge_base::{KnowledgeBase, KnowledgeBaseEvent};
use crate::tenant::{Tenant, TenantEvent};
use crate::Aggregate;

/// An event type of one aggregate. Stored as its `event_type` name plus the
/// JSON of its fields (`data`); both are stable forever.
pub trait EventPayload:
    Serialize + DeserializeOwned + JsonSchema + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    fn event_type(&self) -> &'static str;

    /// The event's fields without its type tag.
    fn to_data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            // adjacently tagged enums always serialise to an object
            _ => Value::Null,
        }
    }

    fn from_data(event_type: &str, schema_version: u16, data: Value) -> Result<Self, EventDecodeError> {
        let data = upcast(event_type, schema_version, data)?;
        let tagged = serde_json::json!({ "type": event_type, "data": data });
        serde_json::from_value(tagged).map_err(|source| EventDecodeError::Malformed {
            event_type: event_type.to_owned(),
            reason: source.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown stream category {0}")]
    UnknownCategory(String),
    #[error("event {event_type} has unsupported schema version {schema_version}")]
    UnsupportedSchemaVersion { event_type: String, schema_version: u16 },
    #[error("malformed {event_type} event: {reason}")]
    Malformed { event_type: String, reason: String },
}

/// Brings the data of an event written under an older schema version up to
/// the current one. Every stored version stays readable forever; version 1
/// is the current one, so there is nothing to convert yet.
pub fn upcast(event_type: &str, schema_version: u16, data: Value) -> Result<Value, EventDecodeError> {
    match schema_version {
        crate::SCHEMA_VERSION => Ok(data),
        _ => Err(EventDecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version,
        }),
    }
}

/// Any event of the log, as read by projections and process managers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AnyEvent {
    Tenant(TenantEvent),
    Document(DocumentEvent),
    KnowledgeBase(KnowledgeBaseEvent),
}

impl AnyEvent {
    pub fn decode(
        category: &str,
        event_type: &str,
        schema_version: u16,
        data: Value,
    ) -> Result<AnyEvent, EventDecodeError> {
        match category {
            Tenant::CATEGORY => TenantEvent::from_data(event_type, schema_version, data).map(AnyEvent::Tenant),
            Document::CATEGORY => DocumentEvent::from_data(event_type, schema_version, data).map(AnyEvent::Document),
            KnowledgeBase::CATEGORY => {
                KnowledgeBaseEvent::from_data(event_type, schema_version, data).map(AnyEvent::KnowledgeBase)
            }
            other => Err(EventDecodeError::UnknownCategory(other.to_owned())),
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            AnyEvent::Tenant(event) => event.event_type(),
            AnyEvent::Document(event) => event.event_type(),
            AnyEvent::KnowledgeBase(event) => event.event_type(),
        }
    }
}

/// The JSON Schema of every event type, keyed by stream category, as
/// published to outside consumers of the log.
pub fn event_schemas() -> Value {
    serde_json::json!({
        Tenant::CATEGORY: schemars::schema_for!(TenantEvent),
        Document::CATEGORY: schemars::schema_for!(DocumentEvent),
        KnowledgeBase::CATEGORY: schemars::schema_for!(KnowledgeBaseEvent),
    })
}

/// Implements [`EventPayload`] for an adjacently tagged event enum whose
/// variant names are its event types.
#[macro_export]
macro_rules! event_payload {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {
        impl $crate::event::EventPayload for $enum {
            fn event_type(&self) -> &'static str {
                match self {
                    $($enum::$variant { .. } => stringify!($variant),)+
                }
            }
        }

        impl $enum {
            /// Every event type of this enum, as `event_type` names them.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];
        }
    };
}
