//! Plain text: kept verbatim (BOM dropped, line endings `\n`), one block
//! per run of non-blank lines.

use crate::output::Budget;
use crate::{describe_bytes, Block, BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let text = decode_utf8_text(bytes, limits, format)?;
    let blocks = paragraphs(&text, limits, format)?;
    Ok(ExtractedText {
        text,
        blocks,
        pages: None,
    })
}

/// Runs of non-blank lines, as body blocks.
fn paragraphs(text: &str, limits: &ExtractLimits, format: &'static str) -> Result<Vec<Block>, ExtractError> {
    let budget = Budget::start(limits, format);
    let mut blocks: Vec<Block> = Vec::new();
    let mut open: Option<std::ops::Range<usize>> = None;
    let mut at = 0;
    let close = |range: std::ops::Range<usize>, blocks: &mut Vec<Block>| {
        if blocks.len() >= limits.max_blocks {
            return Err(too_many_paragraphs(limits, format));
        }
        blocks.push(Block {
            range,
            kind: BlockKind::Text,
            location: Location::default(),
        });
        Ok(())
    };
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if index.is_multiple_of(4096) {
            budget.check()?;
        }
        let content = line.trim_end();
        let start = at + (line.len() - line.trim_start().len());
        let end = at + content.len();
        at += line.len();
        if content.trim().is_empty() {
            if let Some(range) = open.take() {
                close(range, &mut blocks)?;
            }
        } else {
            open = Some(open.map_or(start..end, |range| range.start..end));
        }
    }
    if let Some(range) = open {
        close(range, &mut blocks)?;
    }
    Ok(blocks)
}

fn too_many_paragraphs(limits: &ExtractLimits, format: &'static str) -> ExtractError {
    ExtractError::too_large(format, format!("has more than {} paragraphs", limits.max_blocks))
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The file as UTF-8 text (BOM dropped, line endings `\n`), refused above
/// the text limit.
pub(crate) fn decode_utf8_text(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<String, ExtractError> {
    let (body, skipped) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (rest, UTF8_BOM.len()),
        None => (bytes, 0),
    };
    let text = std::str::from_utf8(body).map_err(|e| ExtractError::NotUtf8 {
        offset: skipped + e.valid_up_to(),
    })?;
    if text.len() > limits.max_text_bytes {
        return Err(ExtractError::too_large(
            format,
            format!(
                "holds more than {} of text",
                describe_bytes(limits.max_text_bytes as u64)
            ),
        ));
    }
    Ok(normalize_line_endings(text))
}

/// `\r\n` and a lone `\r` (classic Mac) both become `\n`, so every consumer
/// only has to know one line terminator.
fn normalize_line_endings(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}
