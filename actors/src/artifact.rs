//! The processing result of a document, stored next to its bytes: too bulky
//! for an event, so the event names it by key and checksum.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkArtifact {
    pub embedder: String,
    pub dimensions: u32,
    pub chunks: Vec<ArtifactChunk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactChunk {
    pub index: u32,
    pub text: String,
    /// Offset of the chunk's first byte in the extracted text.
    pub start_byte: u64,
    pub vector: Vec<f32>,
    /// Artifacts from before citations have none.
    #[serde(default)]
    pub citation: Citation,
}

/// Where a chunk is in its document, as a reader would look it up: its
/// section's headings, and the pages, sheet and rows, or slide it comes
/// from, as far as the format has them. Numbers are 1-based.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// The headings above the chunk, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub section: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact checksum mismatch: expected {expected}, found {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("artifact is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl ChunkArtifact {
    /// Serialises the artifact and returns its bytes with their SHA-256 (hex).
    pub fn encode(&self) -> Result<(Vec<u8>, String), ArtifactError> {
        let bytes = serde_json::to_vec(self)?;
        let checksum = sha256_hex(&bytes);
        Ok((bytes, checksum))
    }

    /// Parses artifact bytes after checking them against the checksum the
    /// event recorded.
    pub fn decode(bytes: &[u8], expected_sha256: &str) -> Result<ChunkArtifact, ArtifactError> {
        let actual = sha256_hex(bytes);
        if actual != expected_sha256 {
            return Err(ArtifactError::ChecksumMismatch {
                expected: expected_sha256.to_owned(),
                actual,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
