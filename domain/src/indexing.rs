//! What a knowledge base is pinned to: the embedding model its vectors come
//! from and the chunking its documents are cut with. Both are recorded in
//! the events, so a replay rebuilds the same settings and no two models'
//! vectors ever meet in one index.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// An embedding model as the vectors it makes are told apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddingModel {
    pub name: String,
    pub dimensions: u32,
    /// A weights checksum for a local model, the served model for a remote one.
    pub version: String,
}

impl std::fmt::Display for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} dimensions, {})", self.name, self.dimensions, self.version)
    }
}

/// Chunk sizes in the model's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkingSettings {
    pub max_tokens: u32,
    pub overlap_tokens: u32,
}

impl ChunkingSettings {
    /// Fewer tokens than this make chunks too small to mean anything alone.
    pub const MIN_TOKENS: u32 = 16;

    /// Checks the settings against the most tokens the model reads.
    pub fn validate(&self, model_max_tokens: u32) -> Result<(), DomainError> {
        if self.max_tokens < Self::MIN_TOKENS || self.max_tokens > model_max_tokens {
            return Err(DomainError::invalid(
                "chunking.max_tokens",
                format!(
                    "must be {} to {model_max_tokens} (the most the embedding model reads)",
                    Self::MIN_TOKENS
                ),
            ));
        }
        if self.overlap_tokens >= self.max_tokens / 2 {
            return Err(DomainError::invalid(
                "chunking.overlap_tokens",
                "must be less than half of max_tokens",
            ));
        }
        Ok(())
    }
}
