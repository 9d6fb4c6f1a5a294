//! Picks and starts the embedder the configuration names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::model_tokenizer::ModelTokenizer;
use super::{EmbedError, Embedder, HashingEmbedder, LocalModel, LocalModelError, OpenAiEmbedder, OpenAiSettings};
use crate::config::{Config, EmbedderKind};

/// Why the configured embedder cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EmbedderSetupError {
    #[error("the local embedding model cannot be loaded: {0}")]
    Local(#[from] LocalModelError),
    #[error("the embedding server cannot be used: {0}")]
    Remote(#[from] EmbedError),
    #[error("the openai embedder needs NEUROSTASH_EMBED_URL and NEUROSTASH_EMBED_MODEL")]
    Unconfigured,
    #[error("the served model's tokenizer {path} cannot be used: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
}

/// The configured embedder, loaded (the local model) or reached once (a
/// server), so that a wrong setting stops the start with its reason.
pub async fn embedder_from_config(config: &Config) -> Result<Arc<dyn Embedder>, EmbedderSetupError> {
    match config.embedder_kind() {
        EmbedderKind::Hashing => {
            if config.embedder.is_none() {
                tracing::warn!(
                    model_dir = %config.model_dir().display(),
                    "no embedding model in the model directory: searching with the hashing embedder, which \
                     matches words, not meaning; `bash scripts/serve.sh` fetches all-MiniLM-L6-v2, or set \
                     NEUROSTASH_EMBED_MODEL_DIR"
                );
            }
            Ok(Arc::new(HashingEmbedder::new(config.embedding_dimensions)))
        }
        EmbedderKind::Openai => {
            let (Some(url), Some(model)) = (&config.embed_url, &config.embed_model) else {
                return Err(EmbedderSetupError::Unconfigured);
            };
            let mut settings = OpenAiSettings::new(url.clone(), model.clone());
            settings.api_key = config.embed_api_key.as_ref().map(|key| key.expose().to_owned());
            settings.dimensions = config.embed_dimensions;
            settings.batch_size = config.embed_batch_size;
            settings.timeout = Duration::from_secs(config.embed_timeout_secs);
            settings.max_retries = config.embed_max_retries;
            settings.max_input_tokens = config.embed_max_input_tokens;
            if let Some(path) = &config.embed_tokenizer {
                settings.tokenizer = Some(Arc::new(served_tokenizer(path, model)?));
            }
            Ok(Arc::new(OpenAiEmbedder::connect(settings).await?))
        }
        EmbedderKind::Local => local(config),
    }
}

/// The tokenizer of the model a server runs, named after the model and the
/// file's content, as the chunking it measures is recorded with that name.
fn served_tokenizer(path: &Path, model: &str) -> Result<ModelTokenizer, EmbedderSetupError> {
    let failed = |reason: String| EmbedderSetupError::Tokenizer {
        path: path.to_owned(),
        reason,
    };
    let json = std::fs::read(path).map_err(|error| failed(error.to_string()))?;
    let name = format!("{model}-tokenizer-{}", &hex::encode(Sha256::digest(&json))[..12]);
    ModelTokenizer::for_counting(&json, name).map_err(failed)
}

fn local(config: &Config) -> Result<Arc<dyn Embedder>, EmbedderSetupError> {
    let threads = match config.embed_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    Ok(Arc::new(LocalModel::load(&config.model_dir(), threads)?))
}
