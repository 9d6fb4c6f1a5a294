//! A model's own tokenizer (a Hugging Face `tokenizer.json`), for counting
//! chunks in its tokens and for making its input ids.

use std::ops::Range;

use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use crate::pipeline::tokens::TokenCounter;

pub struct ModelTokenizer {
    name: String,
    /// No truncation and no padding: every token of a text is counted.
    counting: Tokenizer,
    /// Truncates to the model's sequence length, special tokens included;
    /// no padding, since the forward pass packs sequences.
    input: Tokenizer,
    max_input_tokens: usize,
}

impl ModelTokenizer {
    /// Parses a `tokenizer.json`, ignoring the truncation and padding it
    /// configures: such files often carry settings (all-MiniLM-L6-v2's
    /// truncates and pads to 128) that the model's sentence-transformers
    /// configuration overrides, and `max_sequence_tokens` is that one.
    pub fn from_json(json: &[u8], name: String, max_sequence_tokens: usize) -> Result<ModelTokenizer, String> {
        let counting = counting_tokenizer(json)?;
        let special_tokens = counting
            .get_post_processor()
            .map(|processor| processor.added_tokens(false))
            .unwrap_or(0);
        if special_tokens >= max_sequence_tokens {
            return Err(format!(
                "{special_tokens} special tokens leave no room in a sequence of {max_sequence_tokens}"
            ));
        }
        let mut input = counting.clone();
        input
            .with_truncation(Some(TruncationParams {
                max_length: max_sequence_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|error| error.to_string())?;
        Ok(ModelTokenizer {
            name,
            counting,
            input,
            max_input_tokens: max_sequence_tokens - special_tokens,
        })
    }

    /// A tokenizer that only counts, for a model run elsewhere (behind an
    /// embeddings server) whose input limit is configured, not known here.
    pub fn for_counting(json: &[u8], name: String) -> Result<ModelTokenizer, String> {
        let counting = counting_tokenizer(json)?;
        Ok(ModelTokenizer {
            name,
            input: counting.clone(),
            counting,
            max_input_tokens: usize::MAX,
        })
    }

    /// Most tokens of a text the model reads, not counting special tokens.
    pub fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    /// Entries of the vocabulary, added tokens included: the model's
    /// embedding table must have at least this many rows.
    pub fn vocabulary_size(&self) -> usize {
        self.counting.get_vocab_size(true)
    }

    /// The ids the model reads for `text`: special tokens around it, cut
    /// at the sequence length.
    pub fn model_input(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self.input.encode(text, true).map_err(|error| error.to_string())?;
        Ok(encoding.get_ids().to_vec())
    }
}

impl TokenCounter for ModelTokenizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        match self.counting.encode(text, false) {
            Ok(encoding) => spans_from_offsets(text, encoding.get_offsets()),
            Err(error) => {
                // one token per character never counts fewer tokens than
                // the tokenizer would (WordPiece merges characters), so
                // chunks stay within the model's input
                tracing::warn!(tokenizer = %self.name, %error, "tokenizer failed, counting characters instead");
                text.char_indices().map(|(at, ch)| at..at + ch.len_utf8()).collect()
            }
        }
    }
}

/// The tokenizer of a `tokenizer.json` with its truncation and padding off.
fn counting_tokenizer(json: &[u8]) -> Result<Tokenizer, String> {
    let mut counting = Tokenizer::from_bytes(json).map_err(|error| error.to_string())?;
    counting
        .with_truncation(None)
        .map_err(|error| error.to_string())?
        .with_padding(None);
    Ok(counting)
}

/// Byte ranges from a tokenizer's offsets, made to keep
/// [`TokenCounter::token_spans`]' promises: on char boundaries, in order,
/// not overlapping. Normalisation can map two tokens onto one character
/// (a character that lowercases to two); the later one then becomes empty
/// at the end of the earlier one, so the count stays the tokenizer's.
pub(crate) fn spans_from_offsets(text: &str, offsets: &[(usize, usize)]) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(offsets.len());
    let mut covered = 0;
    for &(start, end) in offsets {
        let start = floor_char_boundary(text, start).max(covered);
        let end = ceil_char_boundary(text, end).max(start);
        spans.push(start..end);
        covered = end;
    }
    spans
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `tokenizer.json` with a vocabulary of a few words, configured as
    /// all-MiniLM-L6-v2's is, truncation and padding at 128 included.
    fn tiny_tokenizer(max_sequence_tokens: usize) -> ModelTokenizer {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cafe", "is", "open", "un", "##believ", "##able", ",", "!",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = words
            .iter()
            .enumerate()
            .map(|(id, word)| (word.to_string(), id.into()))
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": {"max_length": 128, "strategy": "LongestFirst", "stride": 0, "direction": "Right"},
            "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": [],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                   "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}
        });
        ModelTokenizer::from_json(json.to_string().as_bytes(), "tiny".to_owned(), max_sequence_tokens).unwrap()
    }

    fn pieces<'a>(text: &'a str, spans: &[Range<usize>]) -> Vec<&'a str> {
        spans.iter().map(|span| &text[span.clone()]).collect()
    }

    #[test]
    fn spans_are_subwords_in_the_original_text_without_special_tokens() {
        let tokenizer = tiny_tokenizer(16);
        let text = "The  Café is unbelievable, open!";
        let spans = tokenizer.token_spans(text);
        assert_eq!(
            pieces(text, &spans),
            ["The", "Café", "is", "un", "believ", "able", ",", "open", "!"]
        );
    }

    #[test]
    fn unknown_words_are_one_token_each() {
        let tokenizer = tiny_tokenizer(16);
        let text = "the zebra ünicode";
        assert_eq!(pieces(text, &tokenizer.token_spans(text)), ["the", "zebra", "ünicode"]);
    }

    #[test]
    fn model_input_has_special_tokens_and_is_cut_at_the_sequence_length() {
        let tokenizer = tiny_tokenizer(6);
        assert_eq!(tokenizer.max_input_tokens(), 4);
        assert_eq!(tokenizer.model_input("the cafe").unwrap(), [2, 4, 5, 3]);
        assert_eq!(
            tokenizer.model_input("the cafe is open , open").unwrap(),
            [2, 4, 5, 6, 7, 3]
        );
        assert_eq!(tokenizer.model_input("").unwrap(), [2, 3]);
        // counting is never cut
        assert_eq!(tokenizer.token_spans("the cafe is open , open").len(), 6);
    }

    #[test]
    fn overlapping_offsets_become_empty_spans_after_the_earlier_one() {
        let text = "aİb";
        // two tokens from the two characters İ lowercases to, both at 1..3
        let spans = spans_from_offsets(text, &[(0, 1), (1, 3), (1, 3), (3, 4)]);
        assert_eq!(spans, [0..1, 1..3, 3..3, 3..4]);
    }

    #[test]
    fn offsets_inside_a_character_widen_to_its_boundaries() {
        let text = "é!";
        let spans = spans_from_offsets(text, &[(1, 2), (2, 3), (9, 12)]);
        assert_eq!(spans, [0..2, 2..3, 3..3]);
        for span in &spans {
            assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        }
    }
}
