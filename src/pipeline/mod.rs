//! The document pipeline's pure stages: extract text from a file, split it
//! into overlapping chunks, embed the chunks. The processor runs them on a
//! blocking thread; nothing here touches the network, the store or a clock.

pub mod chunk;
pub mod embed;
pub mod extract;

pub use chunk::{chunk_text, ChunkingOptions, TextChunk};
pub use embed::{EmbedError, Embedder, HashingEmbedder};
pub use extract::{extract_text, ExtractError, ExtractedText};
