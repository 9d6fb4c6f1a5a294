//! The entry points, the content-type lists and the text formats' decoding
//! (the other formats have their tests beside their readers and in
//! `tests/`).

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
    assert_eq!(
        resolve_content_type("pdf", Some("application/pdf")),
        Ok("application/pdf")
    );
    assert_eq!(
        resolve_content_type("csv", Some("text/csv; charset=utf-8")),
        Ok("text/csv")
    );
    assert!(resolve_content_type("pdf", Some("text/plain")).is_err());
    assert!(resolve_content_type("docx", Some("application/pdf")).is_err());
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
    }
    for ext in ["txt", "text", "md", "markdown"] {
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
    let err = extract_text(Some("rtf"), b"{\\rtf1}").unwrap_err();
    assert_eq!(err, ExtractError::UnsupportedType("rtf".to_owned()));
    assert_eq!(
        err.to_string(),
        "unsupported file type \"rtf\"; supported types: \
         txt, text, md, markdown, html, htm, pdf, docx, xlsx, pptx, csv, tsv, json"
    );
    assert_eq!(err.code(), "unsupported_type");
    assert!(!is_supported("rtf"));
    assert!(!is_supported("doc"));
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

#[test]
fn plain_text_paragraphs_are_blocks_and_a_hash_line_is_text() {
    let extracted = extract_text(Some("txt"), b"# not a heading\nsame paragraph\n\n  second\n").unwrap();
    let parts: Vec<&str> = extracted
        .blocks
        .iter()
        .map(|block| &extracted.text[block.range.clone()])
        .collect();
    assert_eq!(parts, ["# not a heading\nsame paragraph", "second"]);
    assert!(extracted.blocks.iter().all(|block| block.kind == BlockKind::Text));
}

#[test]
fn error_messages_are_lowercase_clauses() {
    assert_eq!(lowercase_sentence("Invalid file header."), "invalid file header");
    assert_eq!(lowercase_sentence("PDF header not found"), "PDF header not found");
    assert_eq!(describe_bytes(256 * 1024 * 1024), "256 MiB");
    assert_eq!(describe_bytes(1000), "1000 bytes");
}
