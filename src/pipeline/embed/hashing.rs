//! The deterministic hashing embedder.
//!
//! The hashing embedder is feature hashing over words and character
//! trigrams: texts that share words land near each other, the same text
//! always gives the same vector on every machine, and it needs no model
//! files. It stands in for a real sentence-embedding model in tests and in
//! the embedded default until one is configured.

use std::sync::Arc;

use async_trait::async_trait;

use domain::EmbeddingModel;

use super::{EmbedError, Embedder};
use crate::pipeline::tokens::{TokenCounter, WordTokens};

#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    model: EmbeddingModel,
    dimensions: usize,
}

impl HashingEmbedder {
    /// `dimensions` below 8 is raised to 8: fewer buckets make almost every
    /// text collide with every other.
    pub fn new(dimensions: usize) -> HashingEmbedder {
        let dimensions = dimensions.max(8);
        HashingEmbedder {
            model: EmbeddingModel {
                name: format!("hashing-v1-{dimensions}"),
                dimensions: dimensions as u32,
                version: "1".to_owned(),
            },
            dimensions,
        }
    }

    fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimensions];
        let lowered = text.to_lowercase();
        for word in lowered
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
        {
            // words carry the meaning; trigrams let inflections ("index",
            // "indexes") still meet, at a lower weight
            self.add_feature(&mut vector, word.as_bytes(), 1.0);
            let padded: Vec<char> = format!("<{word}>").chars().collect();
            for trigram in padded.windows(3) {
                let trigram: String = trigram.iter().collect();
                self.add_feature(&mut vector, trigram.as_bytes(), 0.3);
            }
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        vector
    }

    fn add_feature(&self, vector: &mut [f32], feature: &[u8], weight: f32) {
        let hash = fnv1a(feature);
        let bucket = (hash % self.dimensions as u64) as usize;
        // the sign bit spreads collisions around zero instead of piling up
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[bucket] += sign * weight;
    }
}

/// FNV-1a: stable across platforms and releases, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl HashingEmbedder {
    /// The vectors of `texts`, computed on the calling thread.
    pub fn embed_now(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        texts.iter().map(|text| self.embed_one(text)).collect()
    }
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    fn describe(&self) -> String {
        format!(
            "hashing embedder {} (deterministic word and trigram hashing, not a language model)",
            self.model.name
        )
    }

    fn tokenizer(&self) -> Arc<dyn TokenCounter> {
        Arc::new(WordTokens)
    }

    /// It reads any length; the bound keeps chunks the size a model takes.
    fn max_input_tokens(&self) -> usize {
        512
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|text| self.embed_one(text)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        let embedder = HashingEmbedder::new(64);
        let first = embedder.embed_now(&["The quick brown fox"]);
        let again = HashingEmbedder::new(64).embed_now(&["The quick brown fox"]);
        assert_eq!(first, again);
        assert_eq!(first[0].len(), 64);
        assert!((cosine(&first[0], &first[0]) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn shared_words_are_closer_than_unrelated_text() {
        let embedder = HashingEmbedder::new(256);
        let vectors = embedder.embed_now(&[
            "rust borrow checker lifetimes",
            "the borrow checker enforces lifetimes in rust",
            "banana bread recipe with walnuts",
        ]);
        assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.3);
    }

    #[test]
    fn text_without_words_is_the_zero_vector() {
        let vectors = HashingEmbedder::new(16).embed_now(&["  ... !!"]);
        assert!(vectors[0].iter().all(|x| *x == 0.0));
    }
}
