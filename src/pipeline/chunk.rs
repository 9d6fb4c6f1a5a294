//! Splits text into overlapping chunks of bounded size.
//!
//! Sizes are counted in whitespace-separated words, a stand-in for the
//! embedding model's tokens until a real model brings its tokenizer. A chunk
//! prefers to end where the text has a natural break: before a markdown
//! heading, after a blank line, or after a sentence, whichever is found in
//! the second half of the window; only when none is there does it cut
//! mid-sentence. Consecutive chunks share `overlap_words` words so that a
//! passage cut at a boundary is still found whole in one of them.

/// How [`chunk_text`] sizes its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkingOptions {
    /// Most words in one chunk; at least 1 is used.
    pub max_words: usize,
    /// Words repeated at the start of the next chunk; kept below `max_words`.
    pub overlap_words: usize,
}

impl Default for ChunkingOptions {
    fn default() -> Self {
        ChunkingOptions {
            max_words: 200,
            overlap_words: 40,
        }
    }
}

/// A slice of the extracted text. `start_byte..end_byte` is where `text`
/// lies in it, so a citation can point back into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub index: u32,
    pub text: String,
    pub start_byte: usize,
    pub end_byte: usize,
}

#[derive(Debug, Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
    /// How good a place the end of this word is to end a chunk.
    break_after: Break,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    None,
    Sentence,
    Paragraph,
    Heading,
}

fn words(text: &str) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    let mut start = None;
    for (at, ch) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        match (ch.is_whitespace(), start) {
            (false, None) => start = Some(at),
            (true, Some(begin)) => {
                words.push(Word {
                    start: begin,
                    end: at,
                    break_after: Break::None,
                });
                start = None;
            }
            _ => {}
        }
    }
    for i in 0..words.len() {
        let word = &text[words[i].start..words[i].end];
        let mut quality = Break::None;
        if word.ends_with(['.', '!', '?', ':', ';']) {
            quality = Break::Sentence;
        }
        if let Some(next) = words.get(i + 1) {
            let gap = &text[words[i].end..next.start];
            if gap.matches('\n').count() >= 2 {
                quality = quality.max(Break::Paragraph);
            }
            if gap.contains('\n') && text[next.start..next.end].starts_with('#') {
                quality = Break::Heading;
            }
        }
        words[i].break_after = quality;
    }
    words
}

/// Splits `text` into chunks of at most `max_words` words overlapping by
/// `overlap_words`. Whitespace-only text gives no chunks.
pub fn chunk_text(text: &str, options: &ChunkingOptions) -> Vec<TextChunk> {
    let max_words = options.max_words.max(1);
    let overlap = options.overlap_words.min(max_words - 1);
    let words = words(text);
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < words.len() {
        let limit = (first + max_words).min(words.len());
        let end = if limit == words.len() {
            limit
        } else {
            best_break(&words[first..limit]).map_or(limit, |offset| first + offset + 1)
        };
        let (start_byte, end_byte) = (words[first].start, words[end - 1].end);
        chunks.push(TextChunk {
            index: chunks.len() as u32,
            text: text[start_byte..end_byte].to_owned(),
            start_byte,
            end_byte,
        });
        if end == words.len() {
            break;
        }
        // always advance, even when the overlap would cover the whole chunk
        first = end.saturating_sub(overlap).max(first + 1);
    }
    chunks
}

/// The last strongest break in the second half of `window`, as an index into
/// it; breaking earlier than half way would make chunks needlessly small.
fn best_break(window: &[Word]) -> Option<usize> {
    let half = window.len() / 2;
    let mut best: Option<(Break, usize)> = None;
    for (offset, word) in window.iter().enumerate().skip(half) {
        if word.break_after == Break::None {
            continue;
        }
        if best.is_none_or(|(quality, _)| word.break_after >= quality) {
            best = Some((word.break_after, offset));
        }
    }
    best.map(|(_, offset)| offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options(max_words: usize, overlap_words: usize) -> ChunkingOptions {
        ChunkingOptions {
            max_words,
            overlap_words,
        }
    }

    #[test]
    fn short_text_is_one_chunk_with_its_offsets() {
        let text = "  Hello there, world.  ";
        let chunks = chunk_text(text, &options(10, 2));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Hello there, world.");
        assert_eq!(&text[chunks[0].start_byte..chunks[0].end_byte], chunks[0].text);
    }

    #[test]
    fn blank_text_gives_no_chunks() {
        assert!(chunk_text(" \n\t ", &ChunkingOptions::default()).is_empty());
    }

    #[test]
    fn chunks_end_at_a_sentence_when_one_is_in_reach() {
        let text = "one two three four five six. seven eight nine ten eleven twelve";
        let chunks = chunk_text(text, &options(8, 0));
        assert_eq!(chunks[0].text, "one two three four five six.");
        assert_eq!(chunks[1].text, "seven eight nine ten eleven twelve");
    }

    #[test]
    fn a_heading_starts_a_new_chunk() {
        let text = "intro words here. more words follow. and more\n# Section\nbody text";
        let chunks = chunk_text(text, &options(10, 0));
        assert_eq!(chunks[0].text, "intro words here. more words follow. and more");
        assert!(chunks[1].text.starts_with("# Section"));
    }

    #[test]
    fn consecutive_chunks_overlap() {
        let text = (0..30).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let chunks = chunk_text(&text, &options(10, 3));
        assert_eq!(chunks[0].text.split(' ').next_back(), Some("w9"));
        assert!(chunks[1].text.starts_with("w7 w8 w9 w10"));
    }

    proptest! {
        #[test]
        fn chunks_cover_every_word_in_order_within_bounds(
            words in proptest::collection::vec("[a-z]{1,6}[.!?]?", 0..300),
            separators in proptest::collection::vec(prop_oneof![Just(" "), Just("\n"), Just("\n\n"), Just("\n# ")], 300),
            max_words in 1usize..40,
            overlap_words in 0usize..50,
        ) {
            let mut text = String::new();
            for (word, separator) in words.iter().zip(&separators) {
                text.push_str(word);
                text.push_str(separator);
            }
            let chunks = chunk_text(&text, &options(max_words, overlap_words));
            let all: Vec<&str> = text.split_whitespace().collect();
            prop_assert_eq!(chunks.is_empty(), all.is_empty());
            let mut covered = 0usize;
            for (i, chunk) in chunks.iter().enumerate() {
                prop_assert_eq!(chunk.index as usize, i);
                prop_assert_eq!(&text[chunk.start_byte..chunk.end_byte], chunk.text.as_str());
                let count = chunk.text.split_whitespace().count();
                prop_assert!(count >= 1 && count <= max_words);
                // a chunk starts at or before the first word not yet covered
                let starts_at = text[..chunk.start_byte].split_whitespace().count();
                prop_assert!(starts_at <= covered);
                covered = covered.max(starts_at + count);
            }
            prop_assert_eq!(covered, all.len());
        }
    }
}
