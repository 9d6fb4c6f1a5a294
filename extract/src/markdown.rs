//! Markdown: the text is kept verbatim (its markup is readable as it
//! stands, and stripping syntax would lose link targets and code and
//! shift citation offsets away from what the user uploaded); the blocks
//! come from a CommonMark parse: ATX and setext headings with their level,
//! paragraphs, list items, code blocks, table rows.

use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::output::Budget;
use crate::text::decode_utf8_text;
use crate::{Block, BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let text = decode_utf8_text(bytes, limits, format)?;
    check_nesting(&text, limits, format)?;
    let blocks = blocks(&text, limits, format)?;
    Ok(ExtractedText {
        text,
        blocks,
        pages: None,
    })
}

/// The parser reads the whole document before it yields its first event,
/// and deeply nested containers make that pass quadratic (100k nested
/// block quotes take minutes), so container markers at the start of each
/// line (`>`, list bullets and numbers) are counted first.
fn check_nesting(text: &str, limits: &ExtractLimits, format: &'static str) -> Result<(), ExtractError> {
    for line in text.lines() {
        let mut depth = 0usize;
        let mut rest = line.as_bytes();
        loop {
            while let [b' ' | b'\t', tail @ ..] = rest {
                rest = tail;
            }
            match rest {
                [b'>', tail @ ..] => rest = tail,
                [b'-' | b'*' | b'+', b' ' | b'\t', tail @ ..] => rest = tail,
                [b'0'..=b'9', ..] => {
                    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                    match &rest[digits..] {
                        [b'.' | b')', b' ' | b'\t', tail @ ..] if digits <= 9 => rest = tail,
                        _ => break,
                    }
                }
                _ => break,
            }
            depth += 1;
            if depth > limits.max_depth {
                return Err(ExtractError::TooDeep {
                    format,
                    limit: limits.max_depth,
                });
            }
        }
    }
    Ok(())
}

struct Blocks<'t> {
    text: &'t str,
    blocks: Vec<Block>,
    /// Inline content not inside a paragraph (a tight list item's text),
    /// waiting for the next block boundary.
    pending: Option<Range<usize>>,
    limits: &'t ExtractLimits,
    format: &'static str,
}

impl Blocks<'_> {
    fn emit(&mut self, range: Range<usize>, kind: BlockKind) -> Result<(), ExtractError> {
        let Some(slice) = self.text.get(range.clone()) else {
            return Ok(());
        };
        let start = range.start + (slice.len() - slice.trim_start().len());
        let end = range.start + slice.trim_end().len();
        // Blocks never overlap, even where the parser's ranges would (a
        // container's last line shared with its child).
        let start = start.max(self.blocks.last().map_or(0, |last| last.range.end));
        if start >= end {
            return Ok(());
        }
        if self.blocks.len() >= self.limits.max_blocks {
            return Err(ExtractError::too_large(
                self.format,
                format!("has more than {} paragraphs or headings", self.limits.max_blocks),
            ));
        }
        self.blocks.push(Block {
            range: start..end,
            kind,
            location: Location::default(),
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExtractError> {
        match self.pending.take() {
            Some(range) => self.emit(range, BlockKind::Text),
            None => Ok(()),
        }
    }

    fn extend(&mut self, range: Range<usize>) {
        self.pending = Some(match self.pending.take() {
            Some(open) => open.start..range.end.max(open.end),
            None => range,
        });
    }
}

fn blocks(text: &str, limits: &ExtractLimits, format: &'static str) -> Result<Vec<Block>, ExtractError> {
    let budget = Budget::start(limits, format);
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        // front matter would otherwise read as a rule and a setext heading
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut state = Blocks {
        text,
        blocks: Vec::new(),
        pending: None,
        limits,
        format,
    };
    // Inside a leaf block (paragraph, heading, code, table row) whose whole
    // range is already a block: its inner events are skipped.
    let mut leaf_depth = 0usize;
    for (index, (event, range)) in Parser::new_ext(text, options).into_offset_iter().enumerate() {
        if index.is_multiple_of(1024) {
            budget.check()?;
        }
        if leaf_depth > 0 {
            match event {
                Event::Start(_) => leaf_depth += 1,
                Event::End(_) => leaf_depth -= 1,
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(tag) => match tag {
                Tag::Heading { level, .. } => {
                    state.flush()?;
                    state.emit(range, BlockKind::Heading { level: level as u8 })?;
                    leaf_depth = 1;
                }
                Tag::Paragraph
                | Tag::CodeBlock(_)
                | Tag::HtmlBlock
                | Tag::TableHead
                | Tag::TableRow
                | Tag::MetadataBlock(_) => {
                    state.flush()?;
                    state.emit(range, BlockKind::Text)?;
                    leaf_depth = 1;
                }
                Tag::Emphasis
                | Tag::Strong
                | Tag::Strikethrough
                | Tag::Superscript
                | Tag::Subscript
                | Tag::Link { .. }
                | Tag::Image { .. } => state.extend(range),
                _ => state.flush()?,
            },
            Event::End(
                TagEnd::Emphasis
                | TagEnd::Strong
                | TagEnd::Strikethrough
                | TagEnd::Superscript
                | TagEnd::Subscript
                | TagEnd::Link
                | TagEnd::Image,
            ) => {}
            Event::End(_) | Event::Rule => state.flush()?,
            Event::Text(_)
            | Event::Code(_)
            | Event::InlineMath(_)
            | Event::DisplayMath(_)
            | Event::Html(_)
            | Event::InlineHtml(_)
            | Event::FootnoteReference(_)
            | Event::TaskListMarker(_)
            | Event::SoftBreak
            | Event::HardBreak => state.extend(range),
        }
    }
    state.flush()?;
    Ok(state.blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(md: &str) -> Vec<(String, BlockKind)> {
        let blocks = blocks(md, &ExtractLimits::default(), "markdown file").unwrap();
        blocks
            .iter()
            .map(|block| (md[block.range.clone()].to_owned(), block.kind))
            .collect()
    }

    #[test]
    fn headings_have_their_levels_and_paragraphs_are_blocks() {
        let md = "# Title\n\nIntro *text*\nsecond line.\n\n## Part\n\nBody.\n\nSetext\n======\n";
        assert_eq!(
            parts(md),
            [
                ("# Title".to_owned(), BlockKind::Heading { level: 1 }),
                ("Intro *text*\nsecond line.".to_owned(), BlockKind::Text),
                ("## Part".to_owned(), BlockKind::Heading { level: 2 }),
                ("Body.".to_owned(), BlockKind::Text),
                ("Setext\n======".to_owned(), BlockKind::Heading { level: 1 }),
            ]
        );
    }

    #[test]
    fn deeply_nested_containers_are_too_deep() {
        let limits = ExtractLimits::default();
        for deep in ["> ".repeat(100_000), "- ".repeat(200) + "x", "1. > ".repeat(100)] {
            let err = extract(deep.as_bytes(), &limits, "markdown file").unwrap_err();
            assert_eq!(err.code(), "too_deep");
        }
        assert!(extract(b"> > - quoted list\n\n---\n- a\n", &limits, "markdown file").is_ok());
    }

    #[test]
    fn a_hashtag_is_not_a_heading() {
        assert_eq!(
            parts("#hashtag and more\n"),
            [("#hashtag and more".to_owned(), BlockKind::Text)]
        );
    }

    #[test]
    fn tight_list_items_code_and_front_matter_are_blocks() {
        let md = "---\ntitle: x\n---\n\n- one\n- two\n  - nested\n\n```\ncode\n```\n";
        let texts: Vec<String> = parts(md).into_iter().map(|(text, _)| text).collect();
        assert_eq!(texts, ["---\ntitle: x\n---", "one", "two", "nested", "```\ncode\n```"]);
    }
}
