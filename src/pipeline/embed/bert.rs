//! A BERT encoder's forward pass on the CPU in f32, for inference only:
//! embeddings, then self-attention and feed-forward blocks with post-layer
//! norm, as Hugging Face's `BertModel` computes them.
//!
//! Inputs are packed: the tokens of every sequence lie one after another in
//! one matrix, with no padding. The dense layers see all tokens at once
//! (one large matrix product each), attention runs per sequence, so no
//! work is spent on padding and no mask is needed; a padded batch gives
//! the same values for its real tokens.

use serde::Deserialize;
use thiserror::Error;

use super::kernels;
use super::safetensors::{SafetensorsError, Tensors};

#[derive(Debug, Error)]
pub enum BertError {
    #[error("config.json does not describe a supported bert model: {0}")]
    Config(String),
    #[error("model.safetensors does not fit config.json: {0}")]
    Weights(#[from] SafetensorsError),
}

/// The fields of a Hugging Face `config.json` the forward pass uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".to_owned()
}

fn default_position_embedding_type() -> String {
    "absolute".to_owned()
}

impl BertConfig {
    pub fn parse(json: &[u8]) -> Result<BertConfig, BertError> {
        let config: BertConfig = serde_json::from_slice(json).map_err(|error| BertError::Config(error.to_string()))?;
        if config.hidden_act != "gelu" {
            return Err(BertError::Config(format!(
                "hidden_act {} (only gelu is implemented)",
                config.hidden_act
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(BertError::Config(format!(
                "position_embedding_type {} (only absolute is implemented)",
                config.position_embedding_type
            )));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(BertError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if config.type_vocab_size == 0 {
            return Err(BertError::Config("type_vocab_size is 0".to_owned()));
        }
        Ok(config)
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// Dense weights are kept transposed, `[inputs, outputs]`, not as torch
/// stores them: the matrix kernel packs that layout faster (about 10% on
/// the 1536 → 384 product, measured; the same on the others).
struct Layer {
    /// Query, key and value projections side by side, `[hidden, 3·hidden]`,
    /// so one matrix product makes all three.
    qkv_weight: Vec<f32>,
    qkv_bias: Vec<f32>,
    attention_output_weight: Vec<f32>,
    attention_output_bias: Vec<f32>,
    attention_norm: Norm,
    intermediate_weight: Vec<f32>,
    intermediate_bias: Vec<f32>,
    output_weight: Vec<f32>,
    output_bias: Vec<f32>,
    output_norm: Norm,
}

pub struct Bert {
    config: BertConfig,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    /// Row 0 of the token type table: single-segment inputs only use it.
    token_type_embedding: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

impl Bert {
    /// The weights named as Hugging Face saves a `BertModel` (with or
    /// without a `bert.` prefix), checked against `config`.
    pub fn load(config: BertConfig, tensors: &Tensors<'_>) -> Result<Bert, BertError> {
        let prefix = if tensors.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let hidden = config.hidden_size;
        let intermediate = config.intermediate_size;
        let get = |name: &str, shape: &[usize]| tensors.f32(&format!("{prefix}{name}"), shape);
        // a torch Linear weight `[outputs, inputs]`, transposed
        let dense = |name: &str, outputs: usize, inputs: usize| -> Result<Vec<f32>, BertError> {
            Ok(transpose(&get(name, &[outputs, inputs])?, outputs, inputs))
        };
        let norm = |name: &str| -> Result<Norm, BertError> {
            Ok(Norm {
                gamma: get(&format!("{name}.weight"), &[hidden])?,
                beta: get(&format!("{name}.bias"), &[hidden])?,
            })
        };
        let mut token_type_embedding = get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, hidden],
        )?;
        token_type_embedding.truncate(hidden);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let layer = format!("encoder.layer.{index}");
            let mut stacked = Vec::with_capacity(3 * hidden * hidden);
            let mut qkv_bias = Vec::with_capacity(3 * hidden);
            for part in ["query", "key", "value"] {
                stacked.extend(get(
                    &format!("{layer}.attention.self.{part}.weight"),
                    &[hidden, hidden],
                )?);
                qkv_bias.extend(get(&format!("{layer}.attention.self.{part}.bias"), &[hidden])?);
            }
            layers.push(Layer {
                qkv_weight: transpose(&stacked, 3 * hidden, hidden),
                qkv_bias,
                attention_output_weight: dense(&format!("{layer}.attention.output.dense.weight"), hidden, hidden)?,
                attention_output_bias: get(&format!("{layer}.attention.output.dense.bias"), &[hidden])?,
                attention_norm: norm(&format!("{layer}.attention.output.LayerNorm"))?,
                intermediate_weight: dense(&format!("{layer}.intermediate.dense.weight"), intermediate, hidden)?,
                intermediate_bias: get(&format!("{layer}.intermediate.dense.bias"), &[intermediate])?,
                output_weight: dense(&format!("{layer}.output.dense.weight"), hidden, intermediate)?,
                output_bias: get(&format!("{layer}.output.dense.bias"), &[hidden])?,
                output_norm: norm(&format!("{layer}.output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            word_embeddings: get("embeddings.word_embeddings.weight", &[config.vocab_size, hidden])?,
            position_embeddings: get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, hidden],
            )?,
            token_type_embedding,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The last hidden state of every token of every sequence, packed:
    /// `[total tokens, hidden]`, sequence after sequence. Each sequence
    /// must be non-empty, at most `max_position_embeddings` long, and hold
    /// only ids below `vocab_size`.
    pub fn forward(&self, sequences: &[&[u32]]) -> Vec<f32> {
        let hidden = self.config.hidden_size;
        let intermediate = self.config.intermediate_size;
        let eps = self.config.layer_norm_eps as f32;
        let total: usize = sequences.iter().map(|sequence| sequence.len()).sum();

        let mut states = vec![0f32; total * hidden];
        let mut rows = states.chunks_exact_mut(hidden);
        for sequence in sequences {
            assert!(
                sequence.len() <= self.config.max_position_embeddings,
                "sequence longer than the model's positions"
            );
            for (position, &id) in sequence.iter().enumerate() {
                let id = id as usize;
                assert!(id < self.config.vocab_size, "token id {id} outside the vocabulary");
                let row = rows.next().expect("one row per token");
                let word = &self.word_embeddings[id * hidden..(id + 1) * hidden];
                let place = &self.position_embeddings[position * hidden..(position + 1) * hidden];
                for (((value, word), place), kind) in
                    row.iter_mut().zip(word).zip(place).zip(&self.token_type_embedding)
                {
                    *value = word + place + kind;
                }
            }
        }
        let no_bias = vec![0f32; hidden];
        kernels::bias_layer_norm(
            &mut states,
            &no_bias,
            &self.embedding_norm.gamma,
            &self.embedding_norm.beta,
            eps,
        );

        let mut qkv = vec![0f32; total * 3 * hidden];
        let mut context = vec![0f32; total * hidden];
        let mut activations = vec![0f32; total * intermediate];
        let longest = sequences.iter().map(|sequence| sequence.len()).max().unwrap_or(0);
        let mut scores = vec![0f32; longest * longest];
        for layer in &self.layers {
            for row in qkv.chunks_exact_mut(3 * hidden) {
                row.copy_from_slice(&layer.qkv_bias);
            }
            linear(&mut qkv, &states, &layer.qkv_weight, total, hidden, 3 * hidden, true);
            self.attention(&qkv, &mut context, &mut scores, sequences);
            // the residual goes in first so the product adds onto it
            linear(
                &mut states,
                &context,
                &layer.attention_output_weight,
                total,
                hidden,
                hidden,
                true,
            );
            kernels::bias_layer_norm(
                &mut states,
                &layer.attention_output_bias,
                &layer.attention_norm.gamma,
                &layer.attention_norm.beta,
                eps,
            );
            linear(
                &mut activations,
                &states,
                &layer.intermediate_weight,
                total,
                hidden,
                intermediate,
                false,
            );
            kernels::bias_gelu(&mut activations, &layer.intermediate_bias);
            linear(
                &mut states,
                &activations,
                &layer.output_weight,
                total,
                intermediate,
                hidden,
                true,
            );
            kernels::bias_layer_norm(
                &mut states,
                &layer.output_bias,
                &layer.output_norm.gamma,
                &layer.output_norm.beta,
                eps,
            );
        }
        states
    }

    /// Scaled dot-product attention of each sequence with itself, head by
    /// head, from the packed `[q | k | v]` rows into `context`.
    fn attention(&self, qkv: &[f32], context: &mut [f32], scores: &mut [f32], sequences: &[&[u32]]) {
        let hidden = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_size = hidden / heads;
        let scale = 1.0 / (head_size as f32).sqrt();
        let stride = 3 * hidden;
        let total: usize = sequences.iter().map(|sequence| sequence.len()).sum();
        let longest = sequences.iter().map(|sequence| sequence.len()).max().unwrap_or(0);
        assert!(
            qkv.len() >= total * stride && context.len() >= total * hidden && scores.len() >= longest * longest,
            "attention buffers smaller than the sequences"
        );
        let mut first = 0;
        for sequence in sequences {
            let length = sequence.len();
            let scores = &mut scores[..length * length];
            for head in 0..heads {
                let query = first * stride + head * head_size;
                let key = query + hidden;
                let value = key + hidden;
                // SAFETY (both products): the assert above keeps the rows
                // first..first+length of `qkv` (stride 3·hidden, the
                // columns of one head) and of `context`, and length² values
                // of `scores`, in bounds; nothing else is touched
                unsafe {
                    // scores = scale · Q Kᵀ
                    gemm::gemm(
                        length,
                        length,
                        head_size,
                        scores.as_mut_ptr(),
                        1,
                        length as isize,
                        false,
                        qkv.as_ptr().add(query),
                        1,
                        stride as isize,
                        qkv.as_ptr().add(key),
                        stride as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                kernels::softmax_rows(scores, length);
                unsafe {
                    // context = P V
                    gemm::gemm(
                        length,
                        head_size,
                        length,
                        context.as_mut_ptr().add(first * hidden + head * head_size),
                        1,
                        hidden as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        length as isize,
                        qkv.as_ptr().add(value),
                        1,
                        stride as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            first += length;
        }
    }
}

/// `[rows × columns]` row-major values as `[columns × rows]`.
fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    debug_assert_eq!(values.len(), rows * columns);
    let mut transposed = vec![0f32; values.len()];
    for (row, chunk) in values.chunks_exact(columns).enumerate() {
        for (column, value) in chunk.iter().enumerate() {
            transposed[column * rows + row] = *value;
        }
    }
    transposed
}

/// `out[m×n] = a[m×k] · w[k×n]` (or `+=` when `accumulate`), all row-major.
fn linear(out: &mut [f32], a: &[f32], w: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(
        out.len() >= m * n && a.len() >= m * k && w.len() >= k * n,
        "matrix shapes do not match"
    );
    // SAFETY: the assert above keeps every index of the row-major operands in bounds
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::pipeline::embed::safetensors;

    fn tiny_config() -> BertConfig {
        BertConfig::parse(
            br#"{"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 12,
                 "max_position_embeddings": 16, "vocab_size": 20, "hidden_act": "gelu"}"#,
        )
        .unwrap()
    }

    /// Every tensor a `BertModel` of `config` has, filled with small
    /// pseudo-random values.
    fn tiny_weights(config: &BertConfig) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        let mut shapes = vec![
            (
                "embeddings.word_embeddings.weight".to_owned(),
                vec![config.vocab_size, hidden],
            ),
            (
                "embeddings.position_embeddings.weight".to_owned(),
                vec![config.max_position_embeddings, hidden],
            ),
            ("embeddings.token_type_embeddings.weight".to_owned(), vec![2, hidden]),
            ("embeddings.LayerNorm.weight".to_owned(), vec![hidden]),
            ("embeddings.LayerNorm.bias".to_owned(), vec![hidden]),
        ];
        for layer in 0..config.num_hidden_layers {
            let name = |rest: &str| format!("encoder.layer.{layer}.{rest}");
            for part in ["query", "key", "value"] {
                shapes.push((name(&format!("attention.self.{part}.weight")), vec![hidden, hidden]));
                shapes.push((name(&format!("attention.self.{part}.bias")), vec![hidden]));
            }
            shapes.push((name("attention.output.dense.weight"), vec![hidden, hidden]));
            shapes.push((name("attention.output.dense.bias"), vec![hidden]));
            shapes.push((name("attention.output.LayerNorm.weight"), vec![hidden]));
            shapes.push((name("attention.output.LayerNorm.bias"), vec![hidden]));
            shapes.push((name("intermediate.dense.weight"), vec![intermediate, hidden]));
            shapes.push((name("intermediate.dense.bias"), vec![intermediate]));
            shapes.push((name("output.dense.weight"), vec![hidden, intermediate]));
            shapes.push((name("output.dense.bias"), vec![hidden]));
            shapes.push((name("output.LayerNorm.weight"), vec![hidden]));
            shapes.push((name("output.LayerNorm.bias"), vec![hidden]));
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        shapes
            .into_iter()
            .map(|(name, shape)| {
                let values = (0..shape.iter().product()).map(|_| random()).collect();
                (name, (shape, values))
            })
            .collect()
    }

    fn load(config: &BertConfig, weights: &HashMap<String, (Vec<usize>, Vec<f32>)>, prefix: &str) -> Bert {
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = weights
            .iter()
            .map(|(name, (shape, values))| (format!("{prefix}{name}"), shape.clone(), values.clone()))
            .collect();
        let borrowed: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
            .iter()
            .map(|(name, shape, values)| (name.as_str(), shape.clone(), values.clone()))
            .collect();
        let bytes = safetensors::encode(&borrowed);
        Bert::load(config.clone(), &Tensors::parse(&bytes).unwrap()).unwrap()
    }

    /// The forward pass of one sequence straight from its definition, in f64.
    fn reference(config: &BertConfig, weights: &HashMap<String, (Vec<usize>, Vec<f32>)>, ids: &[u32]) -> Vec<f64> {
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let head_size = hidden / heads;
        let w = |name: &str| -> Vec<f64> { weights[name].1.iter().map(|v| f64::from(*v)).collect() };
        let linear = |x: &[f64], weight: &[f64], bias: &[f64]| -> Vec<f64> {
            let inputs = weight.len() / bias.len();
            x.chunks(inputs)
                .flat_map(|row| {
                    (0..bias.len()).map(move |out| {
                        bias[out] + row.iter().zip(&weight[out * inputs..]).map(|(a, b)| a * b).sum::<f64>()
                    })
                })
                .collect()
        };
        let norm = |x: &mut Vec<f64>, name: &str| {
            let (gamma, beta) = (w(&format!("{name}.weight")), w(&format!("{name}.bias")));
            for row in x.chunks_mut(hidden) {
                let mean = row.iter().sum::<f64>() / hidden as f64;
                let variance = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / hidden as f64;
                for (i, v) in row.iter_mut().enumerate() {
                    *v = (*v - mean) / (variance + config.layer_norm_eps).sqrt() * gamma[i] + beta[i];
                }
            }
        };
        let (word, position, kind) = &(
            w("embeddings.word_embeddings.weight"),
            w("embeddings.position_embeddings.weight"),
            w("embeddings.token_type_embeddings.weight"),
        );
        let mut x: Vec<f64> = ids
            .iter()
            .enumerate()
            .flat_map(|(t, &id)| {
                let id = id as usize;
                (0..hidden).map(move |i| word[id * hidden + i] + position[t * hidden + i] + kind[i])
            })
            .collect();
        norm(&mut x, "embeddings.LayerNorm");
        let length = ids.len();
        for layer in 0..config.num_hidden_layers {
            let name = |rest: &str| format!("encoder.layer.{layer}.{rest}");
            let project = |part: &str, x: &[f64]| {
                linear(
                    x,
                    &w(&name(&format!("attention.self.{part}.weight"))),
                    &w(&name(&format!("attention.self.{part}.bias"))),
                )
            };
            let (q, k, v) = (project("query", &x), project("key", &x), project("value", &x));
            let mut context = vec![0f64; length * hidden];
            for head in 0..heads {
                let cols = head * head_size..(head + 1) * head_size;
                for i in 0..length {
                    let scores: Vec<f64> = (0..length)
                        .map(|j| {
                            cols.clone().map(|c| q[i * hidden + c] * k[j * hidden + c]).sum::<f64>()
                                / (head_size as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for c in cols.clone() {
                        context[i * hidden + c] = (0..length)
                            .map(|j| (scores[j] - max).exp() / total * v[j * hidden + c])
                            .sum();
                    }
                }
            }
            let attended = linear(
                &context,
                &w(&name("attention.output.dense.weight")),
                &w(&name("attention.output.dense.bias")),
            );
            x = x.iter().zip(&attended).map(|(a, b)| a + b).collect();
            norm(&mut x, &name("attention.output.LayerNorm"));
            let activated: Vec<f64> = linear(
                &x,
                &w(&name("intermediate.dense.weight")),
                &w(&name("intermediate.dense.bias")),
            )
            .into_iter()
            .map(|v| f64::from(kernels::gelu(v as f32)))
            .collect();
            let output = linear(
                &activated,
                &w(&name("output.dense.weight")),
                &w(&name("output.dense.bias")),
            );
            x = x.iter().zip(&output).map(|(a, b)| a + b).collect();
            norm(&mut x, &name("output.LayerNorm"));
        }
        x
    }

    #[test]
    fn packed_forward_matches_the_definition_sequence_by_sequence() {
        let config = tiny_config();
        let weights = tiny_weights(&config);
        let bert = load(&config, &weights, "");
        let sequences: [&[u32]; 3] = [
            &[1, 5, 7, 2],
            &[1, 19, 2],
            &[1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2],
        ];
        let packed = bert.forward(&sequences);
        let mut first = 0;
        for sequence in sequences {
            let expected = reference(&config, &weights, sequence);
            let actual = &packed[first * 8..(first + sequence.len()) * 8];
            for (a, e) in actual.iter().zip(&expected) {
                assert!((f64::from(*a) - e).abs() < 1e-4, "{a} vs {e}");
            }
            first += sequence.len();
        }
        assert_eq!(first * 8, packed.len());
    }

    #[test]
    fn weights_load_with_or_without_the_bert_prefix() {
        let config = tiny_config();
        let weights = tiny_weights(&config);
        let plain = load(&config, &weights, "").forward(&[&[1, 2, 3]]);
        let prefixed = load(&config, &weights, "bert.").forward(&[&[1, 2, 3]]);
        assert_eq!(plain, prefixed);
    }

    #[test]
    fn missing_or_misshapen_weights_are_named() {
        let config = tiny_config();
        let mut weights = tiny_weights(&config);
        weights.remove("encoder.layer.1.output.dense.bias");
        let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> = weights
            .iter()
            .map(|(name, (shape, values))| (name.as_str(), shape.clone(), values.clone()))
            .collect();
        let bytes = safetensors::encode(&tensors);
        let error = Bert::load(config, &Tensors::parse(&bytes).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("encoder.layer.1.output.dense.bias"), "{error}");
    }

    #[test]
    fn unsupported_configurations_are_refused() {
        for json in [
            r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 4, "max_position_embeddings": 4, "vocab_size": 4}"#,
            r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4, "max_position_embeddings": 4, "vocab_size": 4, "hidden_act": "relu"}"#,
            r#"{"hidden_size": 8}"#,
        ] {
            assert!(BertConfig::parse(json.as_bytes()).is_err(), "{json}");
        }
    }
}
