//! Every format end to end through the HTTP API: a real file made by the
//! tool people make it with (`scripts/make_fixtures.py`: reportlab,
//! python-docx, openpyxl, python-pptx, Python's csv and json) is uploaded,
//! extracted, chunked, embedded and found by a search for a phrase it
//! holds, with the page, sheet and row, or slide it is on. Broken and
//! hostile files end FAILED with a reason, and never hold up the others.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{spawn_app_configured, Backend, TestApp};
use neurostash::config::EmbedderKind;
use serde_json::Value;

/// Runs the fixture maker into `dir` and returns its phrase table.
fn make_fixtures(dir: &Path) -> Value {
    let pythonpath = std::env::var("NEUROSTASH_FIXTURES_PYTHONPATH")
        .expect("NEUROSTASH_FIXTURES_PYTHONPATH is not set: `bash scripts/test.sh` provides it");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_fixtures.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .env("PYTHONPATH", pythonpath)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "make_fixtures.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the fixture table is json")
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a hit's citation holds the place the table gives for a phrase.
fn cites(citation: &Value, expected: &Value) -> bool {
    let within = |start: &str, end: &str, value: &Value| {
        let Some(value) = value.as_u64() else { return true };
        match (citation[start].as_u64(), citation[end].as_u64()) {
            (Some(start), Some(end)) => (start..=end).contains(&value),
            _ => false,
        }
    };
    within("page_start", "page_end", &expected["page"])
        && within("row_start", "row_end", &expected["row"])
        && (expected["sheet"].is_null() || citation["sheet"] == expected["sheet"])
        && (expected["slide"].is_null() || citation["slide"] == expected["slide"])
}

async fn wait_all(app: &TestApp, key: &str, ids: &[(String, String)]) -> Vec<Value> {
    let mut documents = Vec::new();
    for (_, id) in ids {
        documents.push(app.wait_processed(key, id).await);
    }
    documents
}

#[tokio::test]
async fn each_format_is_found_by_a_phrase_it_holds_with_its_citation() {
    each_format_is_found(EmbedderKind::Hashing).await;
}

/// The same with all-MiniLM-L6-v2: chunks measured by its WordPiece
/// tokenizer, found by its vectors.
#[tokio::test]
async fn each_format_is_found_by_the_local_model() {
    each_format_is_found(EmbedderKind::Local).await;
}

async fn each_format_is_found(embedder: EmbedderKind) {
    let fixtures = tempfile::tempdir().expect("temp dir");
    let table = make_fixtures(fixtures.path());
    let model_dir = (embedder == EmbedderKind::Local).then(|| {
        std::env::var_os("NEUROSTASH_EMBED_MODEL_DIR")
            .expect("NEUROSTASH_EMBED_MODEL_DIR is not set: `bash scripts/test.sh` provides it")
    });
    let app = spawn_app_configured(Backend::Sqlite, |config| {
        config.chunk_max_tokens = 64;
        config.chunk_overlap_tokens = 8;
        config.embedder = Some(embedder);
        config.embed_model_dir = model_dir.map(Into::into);
    })
    .await;
    let (_, key) = app.create_user("ada@example.com").await;
    let table = table.as_object().expect("a table per file");
    assert!(table.len() >= 8, "a fixture per format: {:?}", table.keys());

    let mut uploaded = Vec::new();
    for file_name in table.keys() {
        // a knowledge base per file, so each search sees one document
        let kb = app.create_knowledge_base(&key, file_name).await;
        let bytes = std::fs::read(fixtures.path().join(file_name)).expect("fixture file");
        let (status, body) = app.upload_bytes(&key, file_name, bytes, Some(&kb)).await;
        assert_eq!(status, 202, "{file_name}: {body}");
        uploaded.push((kb, body["id"].as_str().unwrap().to_owned()));
    }
    let documents = wait_all(&app, &key, &uploaded).await;
    app.wait_indexed().await;

    for ((file_name, expected), ((kb, _), document)) in table.iter().zip(uploaded.iter().zip(&documents)) {
        if let Some(code) = expected["error"].as_str() {
            // a file the table says must be refused (an encrypted pdf)
            assert_eq!(document["status"], "FAILED", "{file_name}: {document}");
            let error = document["error"].as_str().unwrap_or_default();
            assert!(error.contains(code), "{file_name}: {error}");
            continue;
        }
        assert_eq!(document["status"], "SUCCESS", "{file_name}: {document}");
        for phrase in expected["phrases"].as_array().unwrap() {
            let text = phrase["text"].as_str().unwrap();
            let (status, found) = app.search(&key, kb, text, 10).await;
            assert_eq!(status, 200, "{found}");
            let hits = found["hits"].as_array().unwrap();
            let hit = hits
                .iter()
                .find(|hit| collapse(hit["text"].as_str().unwrap()).contains(&collapse(text)))
                .unwrap_or_else(|| panic!("{file_name}: no hit holds {text:?}: {found}"));
            assert_eq!(hit["file_name"], file_name.as_str());
            assert!(
                cites(&hit["citation"], phrase),
                "{file_name}: {text:?} is cited as {} but is at {phrase}",
                hit["citation"]
            );
        }
        for absent in expected["absent"].as_array().into_iter().flatten() {
            let absent = absent.as_str().unwrap();
            let (_, found) = app.search(&key, kb, absent, 50).await;
            for hit in found["hits"].as_array().unwrap() {
                assert!(
                    !hit["text"].as_str().unwrap().contains(absent),
                    "{file_name}: {absent:?} was extracted: {hit}"
                );
            }
        }
        // the section of a chunk is the path of headings above it
        let headings: Vec<&str> = expected["headings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|heading| heading["text"].as_str().unwrap())
            .collect();
        if let Some(first) = headings.first() {
            let (_, found) = app.search(&key, kb, first, 50).await;
            let sections: Vec<&Value> = found["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|hit| &hit["citation"]["section"])
                .collect();
            assert!(
                sections.iter().any(|section| section.as_array().is_some_and(
                    |path| !path.is_empty() && path.iter().all(|title| headings.contains(&title.as_str().unwrap()))
                )),
                "{file_name}: no chunk names its section among {headings:?}: {sections:?}"
            );
        }
    }
    app.shutdown().await;
}

/// A docx whose one part unpacks to far more than any limit: zeros
/// deflate about a thousandfold.
fn zip_bomb_docx() -> Vec<u8> {
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    archive.start_file("[Content_Types].xml", options).unwrap();
    archive
        .write_all(
            br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#,
        )
        .unwrap();
    archive.start_file("word/document.xml", options).unwrap();
    archive.write_all(b"<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body><w:p><w:r><w:t>").unwrap();
    let zeros = vec![b'a'; 1 << 20];
    for _ in 0..1024 {
        archive.write_all(&zeros).unwrap();
    }
    archive.write_all(b"</w:t></w:r></w:p></w:body></w:document>").unwrap();
    archive.finish().unwrap().into_inner()
}

#[tokio::test]
async fn broken_and_hostile_files_fail_with_a_reason_and_hold_up_nothing() {
    let fixtures = tempfile::tempdir().expect("temp dir");
    make_fixtures(fixtures.path());
    let pdf = std::fs::read(fixtures.path().join("sample.pdf")).unwrap();
    let deep_html = format!(
        "<html><body>{}deep{}</body></html>",
        "<div>".repeat(100_000),
        "</div>".repeat(100_000)
    );
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.pdf", pdf[..pdf.len() / 2].to_vec()),
        ("bomb.docx", zip_bomb_docx()),
        ("deep.html", deep_html.into_bytes()),
        ("latin1.txt", b"caf\xe9 au lait".to_vec()),
        ("garbage.xlsx", b"PK\x03\x04 this is not a workbook".to_vec()),
        ("garbage.pptx", vec![0u8; 4096]),
    ];
    let app = spawn_app_configured(Backend::Sqlite, |_| {}).await;
    let (_, key) = app.create_user("ada@example.com").await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for (file_name, bytes) in &hostile {
        let (status, body) = app.upload_bytes(&key, file_name, bytes.clone(), None).await;
        assert_eq!(status, 202, "{file_name}: {body}");
        ids.push((file_name.to_string(), body["id"].as_str().unwrap().to_owned()));
    }
    // a good file behind them all is not held up
    let (status, good) = app.upload(&key, "good.txt", "a plain good file", None).await;
    assert_eq!(status, 202, "{good}");
    let good = app.wait_processed(&key, good["id"].as_str().unwrap()).await;
    assert_eq!(good["status"], "SUCCESS", "{good}");

    for ((file_name, _), document) in ids.iter().zip(wait_all(&app, &key, &ids).await) {
        assert_eq!(document["status"], "FAILED", "{file_name}: {document}");
        let error = document["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty() && !error.contains("panic"), "{file_name}: {error}");
        // a property of the file: failed at once, not retried
        assert_eq!(document["attempts"], 1, "{file_name}: {document}");
        eprintln!("{file_name}: {error}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "hostile files took {:?}",
        started.elapsed()
    );
    app.shutdown().await;
}
