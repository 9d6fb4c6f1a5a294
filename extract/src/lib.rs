//! Turning an uploaded file's bytes into the plain text that is chunked,
//! embedded and cited, with its structure: headings, and where each part
//! of the text sits in the file (page, sheet and row, slide).
//!
//! Every reader is pure Rust and runs inside [`ExtractLimits`]: a cap on
//! the text and blocks it produces, on what a zip or a compressed stream
//! may unpack to, on nesting depth, and a time budget checked as it goes.
//! A file that breaks a limit, or that is damaged, is an [`ExtractError`]
//! with a stable [`code`](ExtractError::code); a panic inside a reader is
//! caught at the entry and reported as a damaged file.

use std::time::Duration;

use thiserror::Error;

mod archive;
mod csv;
mod docx;
mod html;
mod json;
mod markdown;
mod output;
mod pdf;
mod pptx;
mod text;
mod xlsx;
mod xml;

/// The file extensions (lowercase, without the dot) [`extract_text`] reads.
pub const SUPPORTED_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "html", "htm", "pdf", "docx", "xlsx", "pptx", "csv", "tsv", "json",
];

/// The text of a document and its structure. Chunk offsets are byte
/// offsets into `text`; `blocks` say where in the file each part of it
/// came from, which is what a chunk cites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedText {
    pub text: String,
    /// In order, not overlapping, together covering every non-blank part
    /// of `text`; each is `text[block.range]`.
    pub blocks: Vec<Block>,
    /// Pages of a paged format (pdf), slides of a deck, sheets of a
    /// workbook; `None` for formats without such units.
    pub pages: Option<u32>,
}

/// A heading or a run of body text, with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub range: std::ops::Range<usize>,
    pub kind: BlockKind,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A heading of `level` 1 (top) to 6; the blocks after it, up to the
    /// next heading of the same or a higher level, are its section.
    Heading { level: u8 },
    /// Body text: a paragraph, a list item, a table row, a cell value.
    Text,
}

/// Where in the file a block is, as a reader of that format would say it.
/// Every field is 1-based, as viewers number them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<u32>,
}

/// What one extraction may cost. Each cap stops a class of hostile file
/// (a zip bomb, a flate bomb in a pdf, 100k nested elements, a file that
/// yields millions of tiny blocks) before it costs more than the cap; the
/// defaults keep one extraction within about 64 MiB of memory and a few
/// seconds for any input the upload limit lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Bytes of extracted text.
    pub max_text_bytes: usize,
    /// Blocks (paragraphs, rows, headings) in the result.
    pub max_blocks: usize,
    /// Pages of a pdf, slides of a deck, sheets of a workbook.
    pub max_pages: u32,
    /// Entries in a zip container (docx, xlsx, pptx).
    pub max_entries: usize,
    /// Bytes all the entries of a zip container together unpack to.
    pub max_unpacked_bytes: u64,
    /// Bytes one compressed pdf stream (a page's content, an object
    /// stream, a font's encoding) may unpack to.
    pub max_stream_bytes: usize,
    /// Nesting of elements (html, xml) or values (json).
    pub max_depth: usize,
    /// Wall-clock time for one extraction, checked as it goes.
    pub time_budget: Duration,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_text_bytes: 16 * MIB,
            max_blocks: 200_000,
            max_pages: 5_000,
            max_entries: 10_000,
            max_unpacked_bytes: 256 * MIB as u64,
            max_stream_bytes: 16 * MIB,
            max_depth: 128,
            time_budget: Duration::from_secs(30),
        }
    }
}

const MIB: usize = 1024 * 1024;

/// Why a file yields no text. Each variant is a property of the file itself
/// (given the limits), so retrying the same bytes always fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExtractError {
    #[error(
        "unsupported file type {}; supported types: {}",
        describe_extension(.0),
        SUPPORTED_EXTENSIONS.join(", ")
    )]
    UnsupportedType(String),
    #[error("file is not valid utf-8 text (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("file contains no text")]
    Empty,
    /// The file is not what its extension says, or it is damaged.
    #[error("the {format} is damaged: {reason}")]
    Malformed { format: &'static str, reason: String },
    #[error("the {format} is encrypted with a password; upload a copy without the password")]
    Encrypted { format: &'static str },
    /// `detail` finishes the sentence "the {format} …".
    #[error("the {format} {detail}")]
    TooLarge { format: &'static str, detail: String },
    #[error("the {format} nests more than {limit} levels deep")]
    TooDeep { format: &'static str, limit: usize },
    #[error("reading the {format} took longer than {} s", .budget.as_secs_f64())]
    Timeout { format: &'static str, budget: Duration },
}

impl ExtractError {
    /// A stable machine-readable code, for recording why processing failed
    /// without parsing the message.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::UnsupportedType(_) => "unsupported_type",
            ExtractError::NotUtf8 { .. } => "not_utf8",
            ExtractError::Empty => "empty",
            ExtractError::Malformed { .. } => "malformed",
            ExtractError::Encrypted { .. } => "encrypted",
            ExtractError::TooLarge { .. } => "too_large",
            ExtractError::TooDeep { .. } => "too_deep",
            ExtractError::Timeout { .. } => "timeout",
        }
    }

    pub(crate) fn malformed(format: &'static str, reason: impl std::fmt::Display) -> ExtractError {
        ExtractError::Malformed {
            format,
            reason: lowercase_sentence(&reason.to_string()),
        }
    }

    pub(crate) fn too_large(format: &'static str, detail: impl Into<String>) -> ExtractError {
        ExtractError::TooLarge {
            format,
            detail: detail.into(),
        }
    }
}

/// Reasons come from parsers that capitalise and end with a period; a
/// message here is one lowercase clause. An acronym ("PDF", "EOF") keeps
/// its case.
fn lowercase_sentence(reason: &str) -> String {
    let reason = reason.trim().trim_end_matches('.');
    let mut chars = reason.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second) if first.is_uppercase() && !second.is_some_and(char::is_uppercase) => {
            first.to_lowercase().chain(reason[first.len_utf8()..].chars()).collect()
        }
        _ => reason.to_owned(),
    }
}

/// `n` bytes as a person reads a limit: "256 MiB", "512 KiB", "100 bytes".
pub(crate) fn describe_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= MIB as u64 && n.is_multiple_of(MIB as u64) {
        format!("{} MiB", n / MIB as u64)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

fn describe_extension(ext: &str) -> String {
    if ext.is_empty() {
        "(no extension)".to_owned()
    } else {
        // Debug formatting escapes quotes and control characters, because
        // the extension comes from a user-supplied file name and ends up in
        // logs and api responses.
        format!("{ext:?}")
    }
}

/// How the bytes of a file are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    PlainText,
    Markdown,
    Html,
    Pdf,
    Docx,
    Xlsx,
    Pptx,
    Csv,
    Tsv,
    Json,
}

impl Format {
    fn from_extension(ext: &str) -> Option<Format> {
        // Callers may pass `MD` or `.md`; both name the same format.
        let ext = ext.trim().trim_start_matches('.').to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Format::PlainText),
            "md" | "markdown" => Some(Format::Markdown),
            "html" | "htm" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            "docx" => Some(Format::Docx),
            "xlsx" => Some(Format::Xlsx),
            "pptx" => Some(Format::Pptx),
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The name error messages use ("the pdf is damaged").
    fn name(self) -> &'static str {
        match self {
            Format::PlainText => "text file",
            Format::Markdown => "markdown file",
            Format::Html => "html page",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Xlsx => "xlsx",
            Format::Pptx => "pptx",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Json => "json",
        }
    }

    /// The registered media types of the format, its own first, then the
    /// ones clients send for it in practice.
    fn content_types(self) -> &'static [&'static str] {
        match self {
            Format::PlainText => &["text/plain"],
            // Markdown is text, and clients that know no markdown type
            // (browsers, curl) send `text/plain` for it.
            Format::Markdown => &["text/markdown", "text/x-markdown", "text/plain"],
            Format::Html => &["text/html", "application/xhtml+xml"],
            Format::Pdf => &["application/pdf", "application/x-pdf"],
            Format::Docx => &["application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
            // Windows with Excel installed declares csv as an Excel file.
            Format::Xlsx => &["application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"],
            Format::Pptx => &["application/vnd.openxmlformats-officedocument.presentationml.presentation"],
            Format::Csv => &["text/csv", "application/csv", "text/plain", "application/vnd.ms-excel"],
            Format::Tsv => &["text/tab-separated-values", "text/plain"],
            Format::Json => &["application/json", "text/json", "text/plain"],
        }
    }
}

/// Whether [`extract_text`] reads files with this extension (case-insensitive,
/// a leading dot is allowed).
pub fn is_supported(ext: &str) -> bool {
    Format::from_extension(ext).is_some()
}

/// The media type of a supported extension; octet-stream for any other.
pub fn content_type_for(ext: &str) -> &'static str {
    match Format::from_extension(ext) {
        Some(format) => format.content_types()[0],
        None => "application/octet-stream",
    }
}

/// The content types a file of a supported extension may be declared as,
/// its own ([`content_type_for`]) first; none for any other extension.
/// `application/octet-stream` is always allowed as well (see
/// [`resolve_content_type`]).
pub fn accepted_content_types(ext: &str) -> &'static [&'static str] {
    match Format::from_extension(ext) {
        Some(format) => format.content_types(),
        None => &[],
    }
}

/// A declared content type that the file's extension does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "content type {declared:?} is not allowed for a .{extension} file: declare {} or application/octet-stream",
    .accepted.join(", ")
)]
pub struct ContentTypeMismatch {
    /// As declared, cut to 100 characters.
    pub declared: String,
    pub extension: String,
    pub accepted: &'static [&'static str],
}

/// The content type to record for a file of the supported extension `ext`
/// declared as `declared` (a `Content-Type` value; parameters such as
/// `charset` and case do not matter). A declared type the extension allows
/// is recorded as the allow-list spells it, so what is stored comes from
/// the list and never from the client. `application/octet-stream` and no
/// declaration say nothing about the file (clients such as `curl -F` send
/// octet-stream for any file), so the extension's own type is recorded.
pub fn resolve_content_type(ext: &str, declared: Option<&str>) -> Result<&'static str, ContentTypeMismatch> {
    let accepted = accepted_content_types(ext);
    let essence = declared
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .filter(|essence| !essence.is_empty());
    let Some(essence) = essence else {
        return Ok(content_type_for(ext));
    };
    if essence == "application/octet-stream" {
        return Ok(content_type_for(ext));
    }
    accepted
        .iter()
        .find(|candidate| **candidate == essence)
        .copied()
        .ok_or_else(|| ContentTypeMismatch {
            declared: declared.unwrap_or_default().chars().take(100).collect(),
            extension: ext.trim().trim_start_matches('.').to_ascii_lowercase(),
            accepted,
        })
}

/// Decodes a file into text and blocks, chosen by its extension, within
/// the default [`ExtractLimits`].
///
/// Text formats: a UTF-8 byte order mark is dropped and line endings
/// become `\n`, so that chunk offsets do not depend on the editor that
/// saved the file. On invalid UTF-8 the reported offset counts from the
/// start of the file, BOM included, so it can be found with a hex viewer.
pub fn extract_text(file_name_extension: Option<&str>, bytes: &[u8]) -> Result<ExtractedText, ExtractError> {
    extract_with_limits(file_name_extension, bytes, &ExtractLimits::default())
}

/// [`extract_text`] within the given limits.
pub fn extract_with_limits(
    file_name_extension: Option<&str>,
    bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<ExtractedText, ExtractError> {
    let format = file_name_extension
        .and_then(Format::from_extension)
        .ok_or_else(|| ExtractError::UnsupportedType(file_name_extension.unwrap_or("").trim().to_owned()))?;

    // The readers are written not to panic, and the ones found were fixed;
    // this is the last line for what fuzzing has not found yet, so that a
    // file never takes its worker down with it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| extract_format(format, bytes, limits)))
        .unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ExtractError::malformed(
                format.name(),
                format!("the reader failed on it ({detail})"),
            ))
        })?;

    if result.text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    debug_assert!(result
        .blocks
        .iter()
        .all(|block| result.text.get(block.range.clone()).is_some()));
    debug_assert!(result
        .blocks
        .windows(2)
        .all(|pair| pair[0].range.end <= pair[1].range.start));
    Ok(result)
}

fn extract_format(format: Format, bytes: &[u8], limits: &ExtractLimits) -> Result<ExtractedText, ExtractError> {
    let name = format.name();
    match format {
        Format::PlainText => text::extract(bytes, limits, name),
        Format::Markdown => markdown::extract(bytes, limits, name),
        Format::Html => html::extract(bytes, limits, name),
        Format::Pdf => pdf::extract(bytes, limits, name),
        Format::Docx => docx::extract(bytes, limits, name),
        Format::Xlsx => xlsx::extract(bytes, limits, name),
        Format::Pptx => pptx::extract(bytes, limits, name),
        Format::Csv => csv::extract(bytes, b',', limits, name),
        Format::Tsv => csv::extract(bytes, b'\t', limits, name),
        Format::Json => json::extract(bytes, limits, name),
    }
}

#[cfg(test)]
mod tests;
