use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{ApiKeyId, StreamId, TenantId};

/// Schema version written with every new event. Older stored versions are
/// upcast on read (see [`crate::event::upcast`]).
pub const SCHEMA_VERSION: u16 = 1;

/// A place in the global log, totally ordered.
///
/// `commit` orders by transaction and `position` within it. On SQLite writers
/// are serialised, so `commit == position`. On Postgres `commit` is the
/// appending transaction's id: positions are handed out before commit, so a
/// transaction holding a lower position can become visible after a higher one
/// was already read, and a reader that followed positions alone would skip it.
/// Ordering by transaction id and reading only transactions older than every
/// running one (`pg_snapshot_xmin`) makes each read a stable prefix of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub struct LogPosition {
    pub commit: i64,
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { commit: 0, position: 0 };
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.commit, self.position)
    }
}

impl std::str::FromStr for LogPosition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| part.parse::<i64>().map_err(|e| format!("bad log position {s:?}: {e}"));
        match s.split_once(':') {
            Some((commit, position)) => Ok(LogPosition {
                commit: parse(commit)?,
                position: parse(position)?,
            }),
            None => {
                let position = parse(s)?;
                Ok(LogPosition {
                    commit: position,
                    position,
                })
            }
        }
    }
}

/// Who caused an event and in which flow; stored beside the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventMetadata {
    pub tenant_id: Option<TenantId>,
    /// The API key that issued the command; `None` for the system itself.
    pub actor_key_id: Option<ApiKeyId>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
}

impl EventMetadata {
    pub fn system(correlation_id: Uuid) -> Self {
        EventMetadata {
            tenant_id: None,
            actor_key_id: None,
            correlation_id,
            causation_id: None,
        }
    }
}

/// An event as recorded in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope<E> {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    /// 1-based version of the event within its stream.
    pub stream_version: i64,
    pub log_position: LogPosition,
    pub schema_version: u16,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    #[serde(flatten)]
    pub metadata: EventMetadata,
    pub payload: E,
}

impl<E> EventEnvelope<E> {
    pub fn map<F>(self, payload: F) -> EventEnvelope<F> {
        EventEnvelope {
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            log_position: self.log_position,
            schema_version: self.schema_version,
            event_type: self.event_type,
            recorded_at: self.recorded_at,
            metadata: self.metadata,
            payload,
        }
    }
}
