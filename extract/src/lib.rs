//! Turning an uploaded file's bytes into the plain text that is chunked,
//! embedded and cited.
//!
//! Only text formats are read in this first cut. A binary format (pdf, docx)
//! slots in as a new [`Format`] variant with its own decoder; everything
//! after extraction only ever sees [`ExtractedText`].

use thiserror::Error;

/// The file extensions (lowercase, without the dot) [`extract_text`] reads.
pub const SUPPORTED_EXTENSIONS: &[&str] = &["txt", "text", "md", "markdown"];

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

/// Why a file yields no text. Each variant is a property of the file itself,
/// so retrying the same bytes always fails the same way.
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
}

impl ExtractError {
    /// A stable machine-readable code, for recording why processing failed
    /// without parsing the message.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::UnsupportedType(_) => "unsupported_type",
            ExtractError::NotUtf8 { .. } => "not_utf8",
            ExtractError::Empty => "empty",
        }
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
}

impl Format {
    fn from_extension(ext: &str) -> Option<Format> {
        // Callers may pass `MD` or `.md`; both name the same format.
        let ext = ext.trim().trim_start_matches('.').to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Format::PlainText),
            "md" | "markdown" => Some(Format::Markdown),
            _ => None,
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
        Some(Format::PlainText) => "text/plain",
        Some(Format::Markdown) => "text/markdown",
        None => "application/octet-stream",
    }
}

/// The content types a file of a supported extension may be declared as,
/// its own ([`content_type_for`]) first; none for any other extension.
/// Markdown is text, and clients that know no markdown type (browsers,
/// curl) send `text/plain` for it.
pub fn accepted_content_types(ext: &str) -> &'static [&'static str] {
    match Format::from_extension(ext) {
        Some(Format::PlainText) => &["text/plain"],
        Some(Format::Markdown) => &["text/markdown", "text/x-markdown", "text/plain"],
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

/// Bounds on what one file may cost to extract.
#[derive(Debug, Clone, Default)]
pub struct ExtractLimits {}

/// [`extract_text`] within `limits`.
pub fn extract_with_limits(
    file_name_extension: Option<&str>,
    bytes: &[u8],
    _limits: &ExtractLimits,
) -> Result<ExtractedText, ExtractError> {
    extract_text(file_name_extension, bytes)
}

/// Decodes a file into text, chosen by its extension.
///
/// A UTF-8 byte order mark is dropped and line endings become `\n`, so that
/// chunk offsets do not depend on the editor that saved the file. On
/// invalid UTF-8 the reported offset counts from the start of the file,
/// BOM included, so it can be found with a hex viewer.
pub fn extract_text(file_name_extension: Option<&str>, bytes: &[u8]) -> Result<ExtractedText, ExtractError> {
    let format = file_name_extension
        .and_then(Format::from_extension)
        .ok_or_else(|| ExtractError::UnsupportedType(file_name_extension.unwrap_or("").trim().to_owned()))?;

    let text = match format {
        // Markdown is kept verbatim: its markup is readable as it stands,
        // its headings are what the chunker breaks on, and stripping syntax
        // would lose link targets and code and shift citation offsets away
        // from what the user uploaded.
        Format::PlainText | Format::Markdown => decode_utf8_text(bytes)?,
    };

    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    let blocks = paragraphs(&text);
    Ok(ExtractedText {
        text,
        blocks,
        pages: None,
    })
}

/// Runs of non-blank lines as body blocks, and markdown `#` lines as
/// headings.
fn paragraphs(text: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut open: Option<std::ops::Range<usize>> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end();
        let start = at + (line.len() - line.trim_start().len());
        let end = at + content.len();
        at += line.len();
        let heading = content.trim_start().starts_with('#').then(|| {
            let hashes = content.trim_start().chars().take_while(|c| *c == '#').count();
            hashes.min(6) as u8
        });
        if content.trim().is_empty() || heading.is_some() {
            if let Some(range) = open.take() {
                blocks.push(Block {
                    range,
                    kind: BlockKind::Text,
                    location: Location::default(),
                });
            }
        }
        if let Some(level) = heading {
            blocks.push(Block {
                range: start..end,
                kind: BlockKind::Heading { level },
                location: Location::default(),
            });
        } else if !content.trim().is_empty() {
            open = Some(open.map_or(start..end, |range| range.start..end));
        }
    }
    if let Some(range) = open {
        blocks.push(Block {
            range,
            kind: BlockKind::Text,
            location: Location::default(),
        });
    }
    blocks
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn decode_utf8_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let (body, skipped) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (rest, UTF8_BOM.len()),
        None => (bytes, 0),
    };
    let text = std::str::from_utf8(body).map_err(|e| ExtractError::NotUtf8 {
        offset: skipped + e.valid_up_to(),
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_content_type_must_be_one_the_extension_allows() {
        assert_eq!(resolve_content_type("txt", Some("text/plain")), Ok("text/plain"));
        assert_eq!(
            resolve_content_type("txt", Some("Text/Plain; charset=UTF-8")),
            Ok("text/plain")
        );
        assert_eq!(resolve_content_type("md", Some("text/plain")), Ok("text/plain"));
        assert_eq!(
            resolve_content_type("markdown", Some("text/x-markdown")),
            Ok("text/x-markdown")
        );
        for ext in SUPPORTED_EXTENSIONS {
            assert_eq!(accepted_content_types(ext)[0], content_type_for(ext), "{ext}");
            // saying nothing, or octet-stream, gives the extension's own type
            for declared in [
                None,
                Some(""),
                Some("application/octet-stream"),
                Some(" APPLICATION/OCTET-STREAM "),
            ] {
                assert_eq!(
                    resolve_content_type(ext, declared),
                    Ok(content_type_for(ext)),
                    "{ext} {declared:?}"
                );
            }
        }
        let refused = resolve_content_type("txt", Some("text/html")).unwrap_err();
        assert_eq!(refused.accepted, ["text/plain"]);
        let message = refused.to_string();
        assert!(
            message.contains("\"text/html\"") && message.contains("text/plain"),
            "{message}"
        );
        for (ext, declared) in [
            ("md", "application/x-msdownload"),
            ("txt", "text/markdown"),
            ("txt", "image/svg+xml"),
            ("txt", "text/plainx"),
        ] {
            assert!(resolve_content_type(ext, Some(declared)).is_err(), "{ext} {declared}");
        }
        assert!(accepted_content_types("exe").is_empty());
    }

    fn ok(ext: &str, bytes: &[u8]) -> String {
        extract_text(Some(ext), bytes)
            .unwrap_or_else(|e| panic!("extracting {ext}: {e}"))
            .text
    }

    #[test]
    fn plain_text_is_returned_verbatim() {
        assert_eq!(ok("txt", b"hello\n  world\t!\n"), "hello\n  world\t!\n");
        assert_eq!(ok("text", "naïve café 日本".as_bytes()), "naïve café 日本");
    }

    #[test]
    fn markdown_keeps_its_markup() {
        let md = "# Title\n\nSome *emphasis* and a [link](https://example.com).\n\n```rust\nfn main() {}\n```\n";
        assert_eq!(ok("md", md.as_bytes()), md);
        assert_eq!(ok("markdown", md.as_bytes()), md);
    }

    #[test]
    fn extension_is_case_insensitive_and_may_have_a_dot() {
        assert_eq!(ok("MD", b"x"), "x");
        assert_eq!(ok(".Txt", b"x"), "x");
        assert!(is_supported("Markdown"));
        assert!(is_supported(".md"));
    }

    #[test]
    fn every_listed_extension_is_supported() {
        for ext in SUPPORTED_EXTENSIONS {
            assert!(is_supported(ext), "{ext}");
            assert_eq!(ok(ext, b"abc"), "abc");
        }
    }

    #[test]
    fn bom_is_stripped() {
        assert_eq!(ok("txt", b"\xEF\xBB\xBFhello"), "hello");
    }

    #[test]
    fn only_a_leading_bom_is_stripped() {
        // A U+FEFF later in the text is content (zero-width no-break space).
        assert_eq!(ok("txt", b"a\xEF\xBB\xBFb"), "a\u{feff}b");
    }

    #[test]
    fn line_endings_are_normalised() {
        assert_eq!(ok("txt", b"a\r\nb\rc\n\r\nd\r"), "a\nb\nc\n\nd\n");
        assert_eq!(ok("md", b"\r\r\nx"), "\n\nx");
    }

    #[test]
    fn invalid_utf8_reports_first_bad_offset() {
        let err = extract_text(Some("txt"), b"abc\xFFdef").unwrap_err();
        assert_eq!(err, ExtractError::NotUtf8 { offset: 3 });
        assert_eq!(
            err.to_string(),
            "file is not valid utf-8 text (first bad byte at offset 3)"
        );
        assert_eq!(err.code(), "not_utf8");
    }

    #[test]
    fn invalid_utf8_offset_counts_the_bom() {
        let err = extract_text(Some("txt"), b"\xEF\xBB\xBFab\xC3").unwrap_err();
        assert_eq!(err, ExtractError::NotUtf8 { offset: 5 });
    }

    #[test]
    fn utf16_is_rejected_as_not_utf8() {
        // A UTF-16 LE BOM is the most common way a "text" file is not UTF-8.
        let err = extract_text(Some("txt"), b"\xFF\xFEh\0i\0").unwrap_err();
        assert_eq!(err, ExtractError::NotUtf8 { offset: 0 });
    }

    #[test]
    fn empty_and_whitespace_only_are_rejected() {
        for bytes in [
            &b""[..],
            b"   ",
            b"\n\r\n\t ",
            b"\xEF\xBB\xBF",
            b"\xEF\xBB\xBF \n",
            "\u{3000}\u{a0}".as_bytes(),
        ] {
            assert_eq!(extract_text(Some("md"), bytes), Err(ExtractError::Empty), "{bytes:?}");
        }
        assert_eq!(ExtractError::Empty.to_string(), "file contains no text");
    }

    #[test]
    fn unsupported_types_are_rejected_with_the_supported_list() {
        let err = extract_text(Some("pdf"), b"%PDF-1.7").unwrap_err();
        assert_eq!(err, ExtractError::UnsupportedType("pdf".to_owned()));
        assert_eq!(
            err.to_string(),
            "unsupported file type \"pdf\"; supported types: txt, text, md, markdown"
        );
        assert_eq!(err.code(), "unsupported_type");
        assert!(!is_supported("pdf"));
        assert!(!is_supported(""));
        assert!(!is_supported("txt.gz"));
    }

    #[test]
    fn missing_extension_is_unsupported() {
        let err = extract_text(None, b"hello").unwrap_err();
        assert_eq!(err, ExtractError::UnsupportedType(String::new()));
        assert!(err.to_string().starts_with("unsupported file type (no extension);"));
    }

    #[test]
    fn hostile_extension_is_escaped_in_the_message() {
        let err = extract_text(Some("x\"\n\u{1b}"), b"hello").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg}");
    }

    #[test]
    fn type_is_checked_before_content() {
        // An unsupported file must not be reported as bad text.
        assert!(matches!(
            extract_text(Some("bin"), b"\xFF"),
            Err(ExtractError::UnsupportedType(_))
        ));
    }
}
