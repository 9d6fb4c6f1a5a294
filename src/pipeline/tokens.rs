//! Counting text in a model's tokens, which is what chunk sizes are
//! measured in.

use std::ops::Range;

/// A tokenizer as the chunker sees it: where each token of a text lies.
pub trait TokenCounter: Send + Sync {
    /// Names the vocabulary, recorded with the chunking settings.
    fn name(&self) -> &str;

    /// Byte ranges in `text` of its tokens, in order, without the special
    /// tokens a model adds around an input. Ranges lie on char boundaries
    /// and do not overlap; whitespace between tokens belongs to none.
    fn token_spans(&self, text: &str) -> Vec<Range<usize>>;
}

/// Words and punctuation marks as tokens: each run of alphanumeric
/// characters is one, each other visible character is one. It is the
/// measure for embedders without a tokenizer of their own (the hashing
/// embedder), and about what a WordPiece vocabulary gives for English.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordTokens;

impl TokenCounter for WordTokens {
    fn name(&self) -> &str {
        "words-v1"
    }

    fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        let mut word: Option<usize> = None;
        for (at, ch) in text.char_indices() {
            if ch.is_alphanumeric() {
                word.get_or_insert(at);
                continue;
            }
            if let Some(start) = word.take() {
                spans.push(start..at);
            }
            if !ch.is_whitespace() {
                spans.push(at..at + ch.len_utf8());
            }
        }
        if let Some(start) = word {
            spans.push(start..text.len());
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_marks_are_tokens() {
        let text = "Hello, wörld! 42x";
        let tokens: Vec<&str> = WordTokens.token_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(tokens, ["Hello", ",", "wörld", "!", "42x"]);
        assert!(WordTokens.token_spans(" \n\t").is_empty());
    }
}
