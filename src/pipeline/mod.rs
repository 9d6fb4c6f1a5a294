//! The document pipeline's stages: extract text from a file, split it into
//! chunks measured in the model's tokens, embed the chunks. Extraction and
//! chunking are pure and run on a blocking thread; embedding goes through
//! the [`Embedder`] port, which may be a local model or a server.

pub mod chunk;
pub mod embed;
pub mod extract;
pub mod tokens;

pub use chunk::{chunk_text, ChunkingOptions, TextChunk};
pub use embed::{
    embedder_from_config, EmbedError, Embedder, HashingEmbedder, LocalModel, LocalModelError, OpenAiEmbedder,
    OpenAiSettings,
};
pub use extract::{extract_text, ExtractError, ExtractedText};
pub use tokens::{TokenCounter, WordTokens};
