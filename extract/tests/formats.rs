//! Real files made by the tools people make them with (reportlab,
//! python-docx, openpyxl, python-pptx, Python's csv/json): each phrase
//! `scripts/make_fixtures.py` reports is found in a block at the location
//! it reports, each heading at its level, and nothing it marks absent is
//! extracted.
//!
//! `NEUROSTASH_FIXTURES_PYTHONPATH` points at the fixture makers;
//! `bash scripts/test.sh` provides it (through `scripts/python-tools.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use extract::{extract_text, BlockKind, ExtractedText};
use serde_json::Value;

fn make_fixtures(out: &Path, extra: &[&str]) -> Value {
    let pythonpath = std::env::var("NEUROSTASH_FIXTURES_PYTHONPATH")
        .expect("NEUROSTASH_FIXTURES_PYTHONPATH is not set: `bash scripts/test.sh` provides it");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/make_fixtures.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(out)
        .args(extra)
        .env("PYTHONPATH", pythonpath)
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "make_fixtures.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("make_fixtures.py prints json")
}

fn block_texts(extracted: &ExtractedText) -> Vec<String> {
    extracted
        .blocks
        .iter()
        .map(|block| {
            format!(
                "{:?} {:?} {:?}",
                block.kind,
                block.location,
                &extracted.text[block.range.clone()]
            )
        })
        .collect()
}

fn check(name: &str, bytes: &[u8], expected: &Value) {
    let ext = name.rsplit('.').next().unwrap();
    if let Some(code) = expected.get("error").and_then(Value::as_str) {
        let err = extract_text(Some(ext), bytes).expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
        return;
    }
    let extracted = extract_text(Some(ext), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let described = block_texts(&extracted);
    if let Some(pages) = expected.get("pages").and_then(Value::as_u64) {
        assert_eq!(extracted.pages, Some(pages as u32), "{name} pages");
    }
    for phrase in expected["phrases"].as_array().unwrap() {
        let text = phrase["text"].as_str().unwrap();
        let block = extracted
            .blocks
            .iter()
            .find(|block| extracted.text[block.range.clone()].contains(text))
            .unwrap_or_else(|| panic!("{name}: no block holds {text:?}; blocks: {described:#?}"));
        let location = &block.location;
        let want = |key: &str| phrase.get(key);
        if let Some(page) = want("page") {
            assert_eq!(location.page, Some(page.as_u64().unwrap() as u32), "{name} {text:?}");
        }
        if let Some(slide) = want("slide") {
            assert_eq!(location.slide, Some(slide.as_u64().unwrap() as u32), "{name} {text:?}");
        }
        if let Some(sheet) = want("sheet") {
            assert_eq!(location.sheet.as_deref(), sheet.as_str(), "{name} {text:?}");
        }
        if let Some(row) = want("row") {
            assert_eq!(location.row, row.as_u64(), "{name} {text:?}");
        }
    }
    for heading in expected["headings"].as_array().unwrap() {
        let text = heading["text"].as_str().unwrap();
        let level = heading["level"].as_u64().unwrap() as u8;
        let found = extracted.blocks.iter().any(|block| {
            block.kind == BlockKind::Heading { level } && extracted.text[block.range.clone()].contains(text)
        });
        assert!(
            found,
            "{name}: no level {level} heading {text:?}; blocks: {described:#?}"
        );
    }
    for absent in expected["absent"].as_array().unwrap() {
        let absent = absent.as_str().unwrap();
        assert!(!extracted.text.contains(absent), "{name}: {absent:?} was extracted");
    }
    // Anything that is not a listed heading is not a heading either (the
    // chunker builds section paths from them).
    let headings = extracted
        .blocks
        .iter()
        .filter(|block| matches!(block.kind, BlockKind::Heading { .. }))
        .count();
    assert!(
        headings >= expected["headings"].as_array().unwrap().len(),
        "{name}: {described:#?}"
    );
}

#[test]
fn every_format_gives_its_text_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let table = make_fixtures(dir.path(), &[]);
    let files = table.as_object().unwrap();
    assert_eq!(files.len(), 9, "one file per format, and an encrypted pdf");
    for (name, expected) in files {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        check(name, &bytes, expected);
    }
}

#[test]
fn a_long_pdf_has_each_phrase_on_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let table = make_fixtures(dir.path(), &["--pdf-pages", "40", "--scale", "2"]);
    for name in ["sample.pdf", "sample.docx", "sample.pptx", "sample.xlsx"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        check(name, &bytes, &table[name]);
    }
    let pdf = extract_text(Some("pdf"), &std::fs::read(dir.path().join("sample.pdf")).unwrap()).unwrap();
    assert_eq!(pdf.pages, Some(40));
    // the body lines are not headings, and only the title is level 1
    let level_one = pdf
        .blocks
        .iter()
        .filter(|block| block.kind == BlockKind::Heading { level: 1 })
        .count();
    assert_eq!(level_one, 1, "{:#?}", block_texts(&pdf));
}
