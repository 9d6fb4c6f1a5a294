//! Upload → searchable, end to end through the HTTP API: a pdf made by
//! reportlab (`scripts/make_fixtures.py --pdf-pages N`) is uploaded into a
//! knowledge base, and the clock stops when a search for the phrase on its
//! last page returns its chunks. Beside it, in the same run, the
//! same text as a plain `.txt` file (the baseline: everything but pdf
//! parsing), each with the local all-MiniLM-L6-v2 model and with the
//! hashing embedder (everything but the model).
//!
//! ```text
//! eval "$(bash scripts/python-tools.sh)"   # the fixture makers and the model files
//! cargo bench --bench pipeline -- --quick  # 20 pages, one run each
//! cargo bench --bench pipeline             # 100 pages, best of 3
//! ```

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use common::Served;
use neurostash::config::EmbedderKind;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// 20 pages and one run per row instead of 100 pages, best of 3.
    #[arg(long)]
    quick: bool,
    /// Pages of the pdf (default 20 quick, 100 full).
    #[arg(long)]
    pages: Option<usize>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Served {
    async fn with_embedder(embedder: EmbedderKind) -> anyhow::Result<Served> {
        Served::start(|config| {
            config.embedder = Some(embedder);
            config.embed_model_dir = std::env::var_os("NEUROSTASH_EMBED_MODEL_DIR").map(Into::into);
        })
        .await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.post_as(&self.key, path, body).await
    }

    async fn post_as(&self, key: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// Uploads the file into a fresh knowledge base and times it until the
    /// search for `phrase` finds it; returns the time and the chunk count.
    async fn upload_until_searchable(
        &self,
        key: &str,
        file_name: &str,
        bytes: Vec<u8>,
        phrase: &str,
    ) -> anyhow::Result<(Duration, u64)> {
        let kb = self
            .post_as(key, "/v1/knowledge-bases", json!({ "name": "bench" }))
            .await?;
        let kb = kb["id"].as_str().context("a knowledge base id")?.to_owned();
        let started = Instant::now();
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned()),
            )
            .text("knowledge_base_id", kb.clone());
        let response = self
            .client
            .post(format!("{}/v1/documents", self.base))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await?;
        if response.status() != 202 {
            bail!("upload answered {}: {}", response.status(), response.text().await?);
        }
        let document: Value = response.json().await?;
        let id = document["id"].as_str().context("a document id")?.to_owned();
        loop {
            let found = self
                .post_as(
                    key,
                    &format!("/v1/knowledge-bases/{kb}/search"),
                    json!({ "query": phrase, "top_k": 3 }),
                )
                .await?;
            // the knowledge base holds this document alone: any hit is its
            // chunks, indexed (the 100 pages read alike, so the page of the
            // phrase need not rank first for a sentence model)
            let searchable = found["hits"].as_array().is_some_and(|hits| !hits.is_empty());
            if searchable {
                let elapsed = started.elapsed();
                let document: Value = self
                    .client
                    .get(format!("{}/v1/documents/{id}", self.base))
                    .bearer_auth(key)
                    .send()
                    .await?
                    .json()
                    .await?;
                return Ok((elapsed, document["chunk_count"].as_u64().unwrap_or(0)));
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("{file_name} never became searchable for {phrase:?}");
            }
            // a search embeds its query: polled too often it would take
            // the model from the document
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Makes the pdf, and the same text as plain text, into `dir`.
fn fixtures(dir: &Path, pages: usize) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let pythonpath = std::env::var("NEUROSTASH_FIXTURES_PYTHONPATH")
        .context("NEUROSTASH_FIXTURES_PYTHONPATH is not set: eval \"$(bash scripts/python-tools.sh)\" first")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_fixtures.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .arg("--pdf-pages")
        .arg(pages.to_string())
        .env("PYTHONPATH", pythonpath)
        .output()?;
    if !output.status.success() {
        bail!("make_fixtures.py failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let pdf = std::fs::read(dir.join("sample.pdf"))?;
    let text = extract::extract_text(Some("pdf"), &pdf).map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok((pdf, text.text.into_bytes()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pages = args.pages.unwrap_or(if args.quick { 20 } else { 100 });
    let runs = if args.quick { 1 } else { 3 };
    let dir = tempfile::tempdir()?;
    let (pdf, text) = fixtures(dir.path(), pages)?;
    let phrase = format!("lighthouse marker {pages:04}");
    let mut embedders = vec![("hashing", EmbedderKind::Hashing)];
    if std::env::var_os("NEUROSTASH_EMBED_MODEL_DIR").is_some() {
        embedders.insert(0, ("all-MiniLM-L6-v2", EmbedderKind::Local));
    } else {
        println!("(no NEUROSTASH_EMBED_MODEL_DIR: the local model rows are skipped)");
    }
    println!(
        "upload -> searchable, a {pages}-page pdf ({} KiB) and its text as .txt ({} KiB), best of {runs}",
        pdf.len() / 1024,
        text.len() / 1024
    );
    println!(
        "{:<18} {:<6} {:>10} {:>8} {:>12}",
        "embedder", "file", "seconds", "chunks", "pages/s"
    );
    for (label, kind) in embedders {
        let served = Served::with_embedder(kind).await?;
        for (file_name, bytes) in [("report.pdf", &pdf), ("report.txt", &text)] {
            let mut best: Option<(Duration, u64)> = None;
            for _ in 0..runs {
                // a new tenant each run, or the dedup would answer at once
                let user = served
                    .post(
                        "/v1/users",
                        json!({ "email": format!("{}@example.com", Uuid::now_v7().simple()), "role": "USER" }),
                    )
                    .await?;
                let key = user["api_key"].as_str().context("an api key")?.to_owned();
                let run = served
                    .upload_until_searchable(&key, file_name, bytes.clone(), &phrase)
                    .await?;
                if best.is_none_or(|(fastest, _)| run.0 < fastest) {
                    best = Some(run);
                }
            }
            let (elapsed, chunks) = best.context("at least one run")?;
            println!(
                "{label:<18} {:<6} {:>10.2} {chunks:>8} {:>12.1}",
                &file_name[7..],
                elapsed.as_secs_f64(),
                pages as f64 / elapsed.as_secs_f64()
            );
        }
        served.stop().await;
    }
    Ok(())
}
