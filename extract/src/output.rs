//! The text and blocks a reader builds, kept inside the limits as they
//! grow, and the time budget every reader checks in its loops.

use std::time::Instant;

use crate::{describe_bytes, Block, BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

/// The deadline of one extraction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    deadline: Option<Instant>,
    budget: std::time::Duration,
    format: &'static str,
}

impl Budget {
    pub(crate) fn start(limits: &ExtractLimits, format: &'static str) -> Budget {
        Budget {
            // A budget too large to add to now is no deadline at all.
            deadline: Instant::now().checked_add(limits.time_budget),
            budget: limits.time_budget,
            format,
        }
    }

    pub(crate) fn check(&self) -> Result<(), ExtractError> {
        match self.deadline {
            Some(deadline) if Instant::now() > deadline => Err(self.timeout()),
            _ => Ok(()),
        }
    }

    pub(crate) fn timeout(&self) -> ExtractError {
        ExtractError::Timeout {
            format: self.format,
            budget: self.budget,
        }
    }
}

/// Text and blocks under construction: each pushed block is appended to
/// the text (after a separator) and recorded with its range.
pub(crate) struct Output<'l> {
    text: String,
    blocks: Vec<Block>,
    limits: &'l ExtractLimits,
    pub(crate) budget: Budget,
    pub(crate) format: &'static str,
}

impl<'l> Output<'l> {
    pub(crate) fn new(limits: &'l ExtractLimits, format: &'static str) -> Output<'l> {
        Output {
            text: String::new(),
            blocks: Vec::new(),
            limits,
            budget: Budget::start(limits, format),
            format,
        }
    }

    pub(crate) fn limits(&self) -> &'l ExtractLimits {
        self.limits
    }

    /// Appends `content` (trimmed; nothing if blank) as a block of its own,
    /// after a blank line.
    pub(crate) fn push(&mut self, kind: BlockKind, location: Location, content: &str) -> Result<(), ExtractError> {
        self.push_separated("\n\n", kind, location, content)
    }

    /// Appends `content` as a block on the next line, for rows of a table
    /// that read as one unit.
    pub(crate) fn push_line(&mut self, kind: BlockKind, location: Location, content: &str) -> Result<(), ExtractError> {
        self.push_separated("\n", kind, location, content)
    }

    fn push_separated(
        &mut self,
        separator: &str,
        kind: BlockKind,
        location: Location,
        content: &str,
    ) -> Result<(), ExtractError> {
        self.budget.check()?;
        let content = content.trim();
        if content.is_empty() {
            return Ok(());
        }
        let separator = if self.text.is_empty() { "" } else { separator };
        if self.text.len() + separator.len() + content.len() > self.limits.max_text_bytes {
            return Err(self.text_too_large());
        }
        if self.blocks.len() >= self.limits.max_blocks {
            return Err(self.too_many_blocks());
        }
        self.text.push_str(separator);
        let start = self.text.len();
        self.text.push_str(content);
        self.blocks.push(Block {
            range: start..self.text.len(),
            kind,
            location,
        });
        Ok(())
    }

    pub(crate) fn text_too_large(&self) -> ExtractError {
        ExtractError::too_large(
            self.format,
            format!(
                "holds more than {} of text",
                describe_bytes(self.limits.max_text_bytes as u64)
            ),
        )
    }

    pub(crate) fn too_many_blocks(&self) -> ExtractError {
        ExtractError::too_large(
            self.format,
            format!("has more than {} paragraphs, rows or headings", self.limits.max_blocks),
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub(crate) fn finish(self, pages: Option<u32>) -> ExtractedText {
        ExtractedText {
            text: self.text,
            blocks: self.blocks,
            pages,
        }
    }
}

/// Collapses runs of whitespace to one space, as a reader sees text laid
/// out from markup.
pub(crate) fn push_collapsed(buffer: &mut String, piece: &str) {
    for c in piece.chars() {
        if c.is_whitespace() {
            if !buffer.is_empty() && !buffer.ends_with(' ') {
                buffer.push(' ');
            }
        } else {
            buffer.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_ranges_of_the_text_and_blank_ones_are_skipped() {
        let limits = ExtractLimits::default();
        let mut out = Output::new(&limits, "test");
        out.push(BlockKind::Heading { level: 1 }, Location::default(), " Title ")
            .unwrap();
        out.push(BlockKind::Text, Location::default(), "  \n ").unwrap();
        out.push_line(BlockKind::Text, Location::default(), "body").unwrap();
        let extracted = out.finish(None);
        assert_eq!(extracted.text, "Title\nbody");
        let parts: Vec<&str> = extracted
            .blocks
            .iter()
            .map(|b| &extracted.text[b.range.clone()])
            .collect();
        assert_eq!(parts, ["Title", "body"]);
    }

    #[test]
    fn text_and_block_limits_are_errors() {
        let limits = ExtractLimits {
            max_text_bytes: 10,
            max_blocks: 2,
            ..ExtractLimits::default()
        };
        let mut out = Output::new(&limits, "test");
        let err = out
            .push(BlockKind::Text, Location::default(), "eleven char")
            .unwrap_err();
        assert_eq!(err.code(), "too_large");
        assert_eq!(err.to_string(), "the test holds more than 10 bytes of text");
        let mut out = Output::new(&limits, "test");
        out.push(BlockKind::Text, Location::default(), "a").unwrap();
        out.push(BlockKind::Text, Location::default(), "b").unwrap();
        let err = out.push(BlockKind::Text, Location::default(), "c").unwrap_err();
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn a_spent_budget_is_a_timeout() {
        let limits = ExtractLimits {
            time_budget: std::time::Duration::ZERO,
            ..ExtractLimits::default()
        };
        let budget = Budget::start(&limits, "pdf");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let err = budget.check().unwrap_err();
        assert_eq!(err.code(), "timeout");
        assert_eq!(err.to_string(), "reading the pdf took longer than 0 s");
    }
}
