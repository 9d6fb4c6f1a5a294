//! PDF: the text of each page's content stream (lopdf, pure Rust), read
//! one operation at a time so that a page of millions of operators costs
//! no more memory than its text. Lines set in a font clearly larger than
//! the body's are headings (the largest size level 1, the next level 2, …);
//! the other lines of a page form its body blocks; every block carries its
//! page, and `pages` is the page count.
//!
//! Every stream lopdf unpacks (object streams while loading, page content
//! and font encodings while reading) is bounded by `max_stream_bytes`.

use std::collections::BTreeMap;

use lopdf::content::Content;
use lopdf::{DecompressError, Document, Encoding, LoadOptions, Object};

use crate::output::{Budget, Output};
use crate::{describe_bytes, BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let budget = Budget::start(limits, format);
    let options = LoadOptions::with_max_decompressed_size(limits.max_stream_bytes);
    let document = Document::load_mem_with_options(bytes, options).map_err(|e| error(format, limits, e))?;
    // lopdf decrypts a file whose user password is empty (only printing
    // or copying restricted) and leaves /Encrypt for one that needs a
    // password.
    if document.trailer.has(b"Encrypt") {
        return Err(ExtractError::Encrypted { format });
    }
    let pages = document.get_pages();
    if pages.len() > limits.max_pages as usize {
        return Err(ExtractError::too_large(
            format,
            format!("has {} pages; at most {} are read", pages.len(), limits.max_pages),
        ));
    }
    budget.check()?;

    let mut lines: Vec<Line> = Vec::new();
    let mut text_bytes = 0usize;
    let mut first_error: Option<lopdf::Error> = None;
    for (&number, &page_id) in &pages {
        budget.check()?;
        let before = lines.len();
        if let Err(e) = page_lines(&document, page_id, number, limits, &budget, &mut lines) {
            if let lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) = e {
                return Err(stream_too_large(format, limits));
            }
            first_error.get_or_insert(e);
        }
        text_bytes += lines[before..].iter().map(|line| line.text.len()).sum::<usize>();
        if text_bytes > limits.max_text_bytes {
            return Err(Output::new(limits, format).text_too_large());
        }
    }
    if lines.iter().all(|line| line.text.trim().is_empty()) {
        if let Some(e) = first_error {
            return Err(ExtractError::malformed(format, e));
        }
        // A file cut short still loads (its objects are found by scanning),
        // but "no text" would blame the file's content, not its damage.
        if document.xref_recovery.is_some() {
            return Err(ExtractError::malformed(
                format,
                "its cross-reference table is missing or broken (is the file truncated?) and no text could be read",
            ));
        }
    }

    let levels = heading_sizes(&lines);
    let mut out = Output::new(limits, format);
    let mut body = String::new();
    let mut body_page = 0;
    for line in &lines {
        let level = levels
            .iter()
            .position(|size| (line.size - size).abs() < 0.01)
            .filter(|_| line.text.trim().chars().count() <= 200);
        if line.page != body_page || level.is_some() {
            out.push(BlockKind::Text, page_location(body_page), &body)?;
            body.clear();
            body_page = line.page;
        }
        match level {
            Some(rank) => out.push(
                BlockKind::Heading {
                    level: (rank + 1) as u8,
                },
                page_location(line.page),
                &line.text,
            )?,
            None => {
                if !body.is_empty() {
                    body.push('\n');
                }
                body.push_str(line.text.trim());
            }
        }
    }
    out.push(BlockKind::Text, page_location(body_page), &body)?;
    Ok(out.finish(Some(pages.len() as u32)))
}

fn page_location(page: u32) -> Location {
    Location {
        page: Some(page),
        ..Location::default()
    }
}

/// A line of text as set on a page, with the size of its largest glyphs.
struct Line {
    page: u32,
    text: String,
    size: f32,
}

/// The font sizes that mark headings, largest first: sizes clearly above
/// the body's (the size most characters are set in), at most six.
fn heading_sizes(lines: &[Line]) -> Vec<f32> {
    let mut characters: BTreeMap<u32, usize> = BTreeMap::new();
    for line in lines {
        *characters.entry(line.size.to_bits()).or_default() += line.text.trim().chars().count();
    }
    let Some(body) = characters
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(size, _)| f32::from_bits(*size))
    else {
        return Vec::new();
    };
    let mut sizes: Vec<f32> = characters
        .keys()
        .map(|size| f32::from_bits(*size))
        .filter(|size| *size > body * 1.15)
        .collect();
    sizes.sort_by(|a, b| b.total_cmp(a));
    sizes.truncate(6);
    sizes
}

fn number(object: &Object) -> Option<f32> {
    match object {
        Object::Integer(n) => Some(*n as f32),
        Object::Real(n) => Some(*n),
        _ => None,
    }
}

fn page_lines(
    document: &Document,
    page_id: lopdf::ObjectId,
    page: u32,
    limits: &ExtractLimits,
    budget: &Budget,
    lines: &mut Vec<Line>,
) -> Result<(), lopdf::Error> {
    let fonts = document.get_page_fonts(page_id)?;
    let mut encodings: BTreeMap<Vec<u8>, Encoding<'_>> = BTreeMap::new();
    for (name, font) in fonts {
        match font.get_font_encoding_with_limit(document, limits.max_stream_bytes) {
            Ok(encoding) => {
                encodings.insert(name, encoding);
            }
            Err(e @ lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => return Err(e),
            // A font whose encoding cannot be read loses its text, not the page's.
            Err(_) => {}
        }
    }
    let content = document.get_page_content_with_limit(page_id, limits.max_stream_bytes)?;

    let mut encoding: Option<&Encoding<'_>> = None;
    let mut font_size: f32 = 0.0;
    let mut scale: f32 = 1.0;
    let mut line = Line {
        page,
        text: String::new(),
        size: 0.0,
    };
    let end_line = |line: &mut Line, lines: &mut Vec<Line>| {
        if !line.text.trim().is_empty() {
            lines.push(Line {
                page,
                text: std::mem::take(&mut line.text),
                size: line.size,
            });
        }
        line.text.clear();
        line.size = 0.0;
    };
    let mut line_bytes = 0usize;
    for (index, operation) in Content::decode_iter(&content).enumerate() {
        if index.is_multiple_of(4096) && budget.check().is_err() {
            break;
        }
        // A damaged stream keeps the text read up to the damage.
        let Ok(operation) = operation else { break };
        let operands = &operation.operands;
        match operation.operator.as_str() {
            "Tf" => {
                encoding = operands
                    .first()
                    .and_then(|name| name.as_name().ok())
                    .and_then(|name| encodings.get(name));
                font_size = operands.get(1).and_then(number).unwrap_or(font_size);
            }
            "Tm" => {
                end_line(&mut line, lines);
                let (b, d) = (
                    operands.get(1).and_then(number).unwrap_or(0.0),
                    operands.get(3).and_then(number).unwrap_or(1.0),
                );
                scale = (b * b + d * d).sqrt();
            }
            "Td" | "TD" => {
                let dy = operands.get(1).and_then(number).unwrap_or(0.0);
                if dy.abs() > 0.01 {
                    end_line(&mut line, lines);
                } else if !line.text.is_empty() && !line.text.ends_with(' ') {
                    line.text.push(' ');
                }
            }
            "T*" | "ET" => end_line(&mut line, lines),
            "Tj" | "TJ" | "'" | "\"" => {
                if matches!(operation.operator.as_str(), "'" | "\"") {
                    end_line(&mut line, lines);
                }
                let shown = if operation.operator == "\"" {
                    operands.get(2..).unwrap_or_default()
                } else {
                    &operands[..]
                };
                if let Some(encoding) = encoding {
                    let before = line.text.len();
                    collect_text(&mut line.text, encoding, shown, 0);
                    line_bytes += line.text.len() - before;
                    if line.text.len() > before {
                        line.size = line.size.max((font_size * scale).abs());
                    }
                }
                if line_bytes > limits.max_text_bytes {
                    break;
                }
            }
            _ => {}
        }
    }
    end_line(&mut line, lines);
    Ok(())
}

fn collect_text(text: &mut String, encoding: &Encoding<'_>, operands: &[Object], depth: usize) {
    for operand in operands {
        match operand {
            Object::String(bytes, _) => {
                if let Ok(decoded) = encoding.bytes_to_string(bytes) {
                    text.push_str(&decoded);
                }
            }
            // TJ arrays hold strings and spacing; an array inside one is
            // not valid, and is not followed further.
            Object::Array(items) if depth == 0 => collect_text(text, encoding, items, depth + 1),
            // A large negative adjustment is a gap between words.
            Object::Integer(n) if *n < -100 => text.push(' '),
            Object::Real(n) if *n < -100.0 => text.push(' '),
            _ => {}
        }
    }
}

fn stream_too_large(format: &'static str, limits: &ExtractLimits) -> ExtractError {
    ExtractError::too_large(
        format,
        format!(
            "has a compressed stream that unpacks to more than {}; it looks like a decompression bomb",
            describe_bytes(limits.max_stream_bytes as u64)
        ),
    )
}

fn error(format: &'static str, limits: &ExtractLimits, e: lopdf::Error) -> ExtractError {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => stream_too_large(format, limits),
        lopdf::Error::InvalidPassword
        | lopdf::Error::Decryption(_)
        | lopdf::Error::UnsupportedSecurityHandler(_)
        | lopdf::Error::AlreadyEncrypted => ExtractError::Encrypted { format },
        e => ExtractError::malformed(format, e),
    }
}
