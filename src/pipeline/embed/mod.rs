//! The embedding port: one trait for every way of turning chunk texts into
//! vectors, and the model identity a knowledge base is pinned to.
//!
//! Implementations: the deterministic [`HashingEmbedder`] (tests, and the
//! embedded default when no model directory is configured),
//! [`LocalModel`], all-MiniLM-L6-v2 run in-process from its files, and the
//! [`OpenAiEmbedder`], a client of any OpenAI-compatible embeddings server.

mod bert;
mod hashing;
mod kernels;
mod local;
mod model_tokenizer;
mod openai;
mod safetensors;
mod select;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::pipeline::tokens::TokenCounter;
use domain::EmbeddingModel;

pub use hashing::HashingEmbedder;
pub use local::{LocalModel, LocalModelError};
pub use openai::{OpenAiEmbedder, OpenAiSettings};
pub use select::{embedder_from_config, EmbedderSetupError};

#[derive(Debug, Error)]
pub enum EmbedError {
    /// May pass: a model server out of reach, overloaded or timing out.
    #[error("embedder {embedder} failed: {reason}")]
    Failed { embedder: String, reason: String },
    /// Will fail the same way again for the same texts (the server refused
    /// the input, the model answered with the wrong shape).
    #[error("embedder {embedder} refused the input: {reason}")]
    Rejected { embedder: String, reason: String },
}

impl EmbedError {
    /// Whether retrying the same texts later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, EmbedError::Failed { .. })
    }
}

/// Turns texts into unit-length vectors of the model's dimension.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Which model makes the vectors: a knowledge base is pinned to it, and
    /// vectors of two models never meet in one index.
    fn model(&self) -> &EmbeddingModel;

    /// One line for the start-up log: which embedder, from where.
    fn describe(&self) -> String;

    /// The model's own tokenizer, which the chunker measures chunks with.
    fn tokenizer(&self) -> Arc<dyn TokenCounter>;

    /// Most tokens of one input the model reads, counted as
    /// [`TokenCounter::token_spans`] counts them (without the special
    /// tokens the model adds); more are cut off, so chunks stay below it.
    fn max_input_tokens(&self) -> usize;

    /// One vector per text, in order. Callers may pass any number of texts;
    /// implementations batch as their model or server needs.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}
