//! The pure domain of NeuroStash: aggregates decide commands into events and
//! fold events into state. Nothing here performs I/O, reads a clock or draws
//! randomness: whatever a decision needs (the time, a generated id, a keyed
//! hash) is looked up by the caller and carried in the command, so that
//! `decide` and `apply` are deterministic and replaying a stream always
//! rebuilds the same state.

pub mod aggregate;
pub mod document;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ids;
pub mod indexing;
pub mod knowledge_base;
pub mod sealed;
pub mod tenant;
pub mod testing;

pub use aggregate::{Aggregate, Decision};
pub use envelope::{EventEnvelope, EventMetadata, LogPosition, SCHEMA_VERSION};
pub use error::DomainError;
pub use event::{AnyEvent, EventDecodeError, EventPayload};
pub use ids::{ApiKeyId, DocumentId, KnowledgeBaseId, StreamId, TenantId};
pub use indexing::{ChunkingSettings, EmbeddingModel};
pub use sealed::{Protected, Sealed};
