//! Splits an extracted document into chunks measured in the embedding
//! model's tokens.
//!
//! The document's blocks are cut into sentences (UAX #29), and sentences
//! are packed into chunks of at most `max_tokens` tokens. A heading always
//! starts a new chunk, and so does a new sheet or slide: a chunk belongs to
//! one section, and its citation names one place a reader can open. Pages
//! do not break chunks, because prose runs on over a page break; such a
//! chunk cites the range of its pages. Consecutive chunks of a section
//! share up to `overlap_tokens` tokens of whole sentences, so that a
//! passage cut at a boundary is still found whole in one of them. A
//! sentence longer than a chunk is cut at token boundaries.

use std::ops::Range;

use actors::artifact::Citation;
use extract::{BlockKind, ExtractedText, Location};
use unicode_segmentation::UnicodeSegmentation;

use crate::pipeline::tokens::TokenCounter;

/// How [`chunk_text`] sizes its chunks, in the tokenizer's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkingOptions {
    /// Most tokens in one chunk; at least 1 is used.
    pub max_tokens: usize,
    /// Tokens of whole sentences repeated at the start of the next chunk of
    /// the same section; kept below `max_tokens`.
    pub overlap_tokens: usize,
}

impl Default for ChunkingOptions {
    fn default() -> Self {
        ChunkingOptions {
            max_tokens: 200,
            overlap_tokens: 32,
        }
    }
}

/// A slice of the extracted text: `text` is `document[start_byte..end_byte]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub index: u32,
    pub text: String,
    pub start_byte: usize,
    pub end_byte: usize,
    pub tokens: usize,
    pub citation: Citation,
}

/// A sentence, or a heading, with what it inherits from its block.
#[derive(Debug, Clone)]
struct Unit {
    bytes: Range<usize>,
    tokens: Range<usize>,
    block: usize,
    heading: bool,
    /// The headings above it, outermost first (a heading includes itself).
    section: usize,
}

/// Splits `document` into chunks. A document without tokens gives none.
pub fn chunk_text(document: &ExtractedText, tokenizer: &dyn TokenCounter, options: &ChunkingOptions) -> Vec<TextChunk> {
    let max_tokens = options.max_tokens.max(1);
    let overlap = options.overlap_tokens.min(max_tokens - 1);
    let text = document.text.as_str();
    let spans = tokenizer.token_spans(text);
    let (units, sections) = units(document, &spans);
    let mut builder = Builder {
        document,
        sections: &sections,
        chunks: Vec::new(),
    };

    let mut current: Vec<Unit> = Vec::new();
    let mut current_tokens = 0usize;
    for unit in units {
        let count = unit.tokens.len();
        if count == 0 {
            continue;
        }
        let hard_break = current.last().is_some_and(|last| {
            unit.heading
                || !same_place(
                    &document.blocks[last.block].location,
                    &document.blocks[unit.block].location,
                )
        });
        if hard_break {
            builder.emit(&current);
            current.clear();
            current_tokens = 0;
        }
        if count > max_tokens {
            // one sentence is longer than a chunk: what is packed so far goes
            // out whole, and the sentence is cut into overlapping windows
            if !current.is_empty() {
                builder.emit(&current);
                current.clear();
            }
            let mut first = unit.tokens.start;
            loop {
                let last = (first + max_tokens).min(unit.tokens.end);
                let window = Unit {
                    bytes: spans[first].start..spans[last - 1].end,
                    tokens: first..last,
                    ..unit.clone()
                };
                if last == unit.tokens.end {
                    current_tokens = window.tokens.len();
                    current.push(window);
                    break;
                }
                builder.emit(std::slice::from_ref(&window));
                first = (last - overlap).max(first + 1);
            }
            continue;
        }
        if current_tokens + count > max_tokens {
            builder.emit(&current);
            // the overlap: whole sentences from the end of the chunk just
            // emitted, as many as fit, never a heading alone
            let mut carried = 0;
            let mut keep = current.len();
            while keep > 0 {
                let tokens = current[keep - 1].tokens.len();
                if carried + tokens > overlap || carried + tokens + count > max_tokens {
                    break;
                }
                carried += tokens;
                keep -= 1;
            }
            current.drain(..keep);
            if current.first().is_some_and(|unit| unit.heading) && current.len() == 1 {
                current.clear();
                carried = 0;
            }
            current_tokens = carried;
        }
        current_tokens += count;
        current.push(unit);
    }
    builder.emit(&current);
    builder.chunks
}

/// Whether two blocks are on the same sheet and slide: a chunk never spans
/// two of either.
fn same_place(a: &Location, b: &Location) -> bool {
    a.sheet == b.sheet && a.slide == b.slide
}

/// The document's sentences and headings in order, each with its token
/// range, and the section paths they refer to.
fn units(document: &ExtractedText, spans: &[Range<usize>]) -> (Vec<Unit>, Vec<Vec<String>>) {
    let text = document.text.as_str();
    let mut units = Vec::new();
    let mut sections: Vec<Vec<String>> = vec![Vec::new()];
    let mut path: Vec<(u8, String)> = Vec::new();
    for (block_index, block) in document.blocks.iter().enumerate() {
        let Some(body) = text.get(block.range.clone()) else {
            continue;
        };
        match block.kind {
            BlockKind::Heading { level } => {
                while path.last().is_some_and(|(open, _)| *open >= level) {
                    path.pop();
                }
                path.push((level, heading_title(body)));
                sections.push(path.iter().map(|(_, title)| title.clone()).collect());
                let bytes = trimmed(text, block.range.clone());
                units.push(Unit {
                    tokens: token_range(spans, &bytes),
                    bytes,
                    block: block_index,
                    heading: true,
                    section: sections.len() - 1,
                });
            }
            BlockKind::Text => {
                for (offset, sentence) in body.split_sentence_bound_indices() {
                    let start = block.range.start + offset;
                    let bytes = trimmed(text, start..start + sentence.len());
                    if bytes.is_empty() {
                        continue;
                    }
                    units.push(Unit {
                        tokens: token_range(spans, &bytes),
                        bytes,
                        block: block_index,
                        heading: false,
                        section: sections.len() - 1,
                    });
                }
            }
        }
    }
    (units, sections)
}

/// A heading as a section title: markdown's `#` marks and surrounding
/// whitespace dropped, inner whitespace collapsed.
fn heading_title(heading: &str) -> String {
    let title = heading.trim().trim_start_matches('#').trim_end_matches('#');
    title.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `range` without the whitespace at its ends.
fn trimmed(text: &str, range: Range<usize>) -> Range<usize> {
    let slice = &text[range.clone()];
    let start = range.start + (slice.len() - slice.trim_start().len());
    let end = range.start + slice.trim_end().len();
    start..end.max(start)
}

/// The tokens that start inside `bytes`.
fn token_range(spans: &[Range<usize>], bytes: &Range<usize>) -> Range<usize> {
    let first = spans.partition_point(|span| span.start < bytes.start);
    let last = spans.partition_point(|span| span.start < bytes.end);
    first..last.max(first)
}

struct Builder<'a> {
    document: &'a ExtractedText,
    sections: &'a [Vec<String>],
    chunks: Vec<TextChunk>,
}

impl Builder<'_> {
    fn emit(&mut self, units: &[Unit]) {
        let (Some(first), Some(last)) = (units.first(), units.last()) else {
            return;
        };
        let (start_byte, end_byte) = (first.bytes.start, last.bytes.end);
        let blocks = &self.document.blocks;
        let mut citation = Citation {
            section: self.sections[first.section].clone(),
            ..Citation::default()
        };
        for unit in units {
            let location = &blocks[unit.block].location;
            if let Some(page) = location.page {
                citation.page_start = Some(citation.page_start.map_or(page, |start| start.min(page)));
                citation.page_end = Some(citation.page_end.map_or(page, |end| end.max(page)));
            }
            if let Some(row) = location.row {
                citation.row_start = Some(citation.row_start.map_or(row, |start| start.min(row)));
                citation.row_end = Some(citation.row_end.map_or(row, |end| end.max(row)));
            }
            if citation.sheet.is_none() {
                citation.sheet.clone_from(&location.sheet);
            }
            if citation.slide.is_none() {
                citation.slide = location.slide;
            }
        }
        self.chunks.push(TextChunk {
            index: self.chunks.len() as u32,
            text: self.document.text[start_byte..end_byte].to_owned(),
            start_byte,
            end_byte,
            tokens: last.tokens.end - first.tokens.start,
            citation,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tokens::WordTokens;
    use extract::Block;
    use proptest::prelude::*;

    fn options(max_tokens: usize, overlap_tokens: usize) -> ChunkingOptions {
        ChunkingOptions {
            max_tokens,
            overlap_tokens,
        }
    }

    fn plain(text: &str) -> ExtractedText {
        extract::extract_text(Some("md"), text.as_bytes()).expect("text extracts")
    }

    fn chunk(text: &str, max: usize, overlap: usize) -> Vec<TextChunk> {
        chunk_text(&plain(text), &WordTokens, &options(max, overlap))
    }

    #[test]
    fn short_text_is_one_chunk_with_its_offsets() {
        let text = "  Hello there, world.  ";
        let chunks = chunk(text, 10, 2);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Hello there, world.");
        assert_eq!(&text[chunks[0].start_byte..chunks[0].end_byte], chunks[0].text);
        assert_eq!(chunks[0].tokens, 5);
    }

    #[test]
    fn chunks_end_at_a_sentence() {
        let text = "One two three four five six. Seven eight nine ten eleven twelve.";
        let chunks = chunk(text, 8, 0);
        assert_eq!(chunks[0].text, "One two three four five six.");
        assert_eq!(chunks[1].text, "Seven eight nine ten eleven twelve.");
    }

    #[test]
    fn a_heading_starts_a_new_chunk_and_names_the_section() {
        let text = "# Guide\n\nintro words here.\n\n## Setup\n\nInstall it first. Then run it.\n\n## Use\n\nCall it.";
        let chunks = chunk(text, 100, 0);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "# Guide\n\nintro words here.",
                "## Setup\n\nInstall it first. Then run it.",
                "## Use\n\nCall it."
            ]
        );
        assert_eq!(chunks[0].citation.section, ["Guide"]);
        assert_eq!(chunks[1].citation.section, ["Guide", "Setup"]);
        assert_eq!(chunks[2].citation.section, ["Guide", "Use"]);
    }

    #[test]
    fn consecutive_chunks_of_a_section_overlap_by_whole_sentences() {
        let text = "Alpha beta gamma. Delta epsilon. Zeta eta theta. Iota kappa.";
        // sentences are 4, 3, 4 and 3 tokens
        let chunks = chunk(text, 8, 4);
        assert_eq!(chunks[0].text, "Alpha beta gamma. Delta epsilon.");
        assert_eq!(chunks[1].text, "Delta epsilon. Zeta eta theta.");
        assert_eq!(chunks[2].text, "Zeta eta theta. Iota kappa.");
    }

    #[test]
    fn a_long_sentence_is_cut_at_token_boundaries() {
        let text = (0..25).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let chunks = chunk(&text, 10, 3);
        assert!(chunks.iter().all(|c| c.tokens <= 10));
        assert!(chunks[0].text.ends_with("w9"));
        assert!(chunks[1].text.starts_with("w7 w8 w9 w10"), "{}", chunks[1].text);
        assert!(chunks.last().unwrap().text.ends_with("w24"));
    }

    fn located(text: &str, places: &[Location]) -> ExtractedText {
        let mut blocks = Vec::new();
        let mut at = 0;
        for (line, location) in text.split('\n').zip(places) {
            blocks.push(Block {
                range: at..at + line.len(),
                kind: BlockKind::Text,
                location: location.clone(),
            });
            at += line.len() + 1;
        }
        ExtractedText {
            text: text.to_owned(),
            blocks,
            pages: None,
        }
    }

    #[test]
    fn citations_name_pages_rows_sheets_and_slides() {
        let page = |page| Location {
            page: Some(page),
            ..Location::default()
        };
        let document = located(
            "first page ends with a sentence that runs\non to the second page.",
            &[page(1), page(2)],
        );
        let chunks = chunk_text(&document, &WordTokens, &options(50, 0));
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            (chunks[0].citation.page_start, chunks[0].citation.page_end),
            (Some(1), Some(2))
        );

        let row = |sheet: &str, row| Location {
            sheet: Some(sheet.to_owned()),
            row: Some(row),
            ..Location::default()
        };
        let document = located("a: 1\nb: 2\nc: 3", &[row("One", 2), row("One", 3), row("Two", 2)]);
        let chunks = chunk_text(&document, &WordTokens, &options(50, 0));
        assert_eq!(chunks.len(), 2, "a new sheet starts a new chunk");
        assert_eq!(chunks[0].citation.sheet.as_deref(), Some("One"));
        assert_eq!(
            (chunks[0].citation.row_start, chunks[0].citation.row_end),
            (Some(2), Some(3))
        );
        assert_eq!(chunks[1].citation.sheet.as_deref(), Some("Two"));

        let slide = |slide| Location {
            slide: Some(slide),
            ..Location::default()
        };
        let document = located("Title one\nTitle two", &[slide(1), slide(2)]);
        let chunks = chunk_text(&document, &WordTokens, &options(50, 0));
        assert_eq!(
            chunks.iter().map(|c| c.citation.slide).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
    }

    #[test]
    fn blank_text_gives_no_chunks() {
        let document = ExtractedText {
            text: " \n ".into(),
            blocks: Vec::new(),
            pages: None,
        };
        assert!(chunk_text(&document, &WordTokens, &ChunkingOptions::default()).is_empty());
    }

    proptest! {
        #[test]
        fn chunks_cover_every_token_in_order_within_bounds(
            words in proptest::collection::vec("[a-z]{1,6}[.!?]?", 0..300),
            separators in proptest::collection::vec(prop_oneof![Just(" "), Just("\n"), Just("\n\n"), Just("\n\n# ")], 300),
            max_tokens in 1usize..40,
            overlap_tokens in 0usize..50,
        ) {
            let mut text = String::new();
            for (word, separator) in words.iter().zip(&separators) {
                text.push_str(word);
                text.push_str(separator);
            }
            let Ok(document) = extract::extract_text(Some("md"), text.as_bytes()) else {
                prop_assert!(text.trim().is_empty());
                return Ok(());
            };
            let chunks = chunk_text(&document, &WordTokens, &options(max_tokens, overlap_tokens));
            let spans = WordTokens.token_spans(&document.text);
            let mut covered = 0usize;
            for (i, chunk) in chunks.iter().enumerate() {
                prop_assert_eq!(chunk.index as usize, i);
                prop_assert_eq!(&document.text[chunk.start_byte..chunk.end_byte], chunk.text.as_str());
                let inside = WordTokens.token_spans(&chunk.text).len();
                prop_assert!(inside >= 1 && inside <= max_tokens.max(1), "{} tokens in {:?}", inside, chunk.text);
                let first = spans.partition_point(|s| s.start < chunk.start_byte);
                prop_assert!(first <= covered, "a gap before chunk {}", i);
                covered = covered.max(first + inside);
            }
            prop_assert_eq!(covered, spans.len());
        }
    }
}
