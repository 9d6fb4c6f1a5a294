//! Embedding throughput: the local model beside sentence-transformers on
//! the same texts, the same thread count and the same batch size, in one
//! run; the hashing embedder as a floor.
//!
//! ```text
//! cargo bench --bench embedding -- --quick   # 128 sentences, 32 passages, about a minute
//! cargo bench --bench embedding              # 1024 sentences, 256 passages
//! ```
//!
//! Two text sets, made here and sent to both: short sentences (about 20
//! tokens) and passages of about 200 tokens, the size of a chunk. For each
//! thread count (`--threads`, default 1 and 2) and set:
//!
//! - `sentence-transformers`: `scripts/st_embed.py bench` in a Python
//!   subprocess, `torch.set_num_threads(n)`, `encode(batch_size=32)`, one
//!   warm-up pass, then the best of `--repeats` timed inside Python (model
//!   loading excluded);
//! - `local`: [`LocalModel`] loaded with `n` threads (it batches 32 texts
//!   per pass), one warm-up pass, then the best of `--repeats`;
//!
//! and once per set the hashing embedder on one thread. Rates are texts per
//! second, tokenization included on both sides.
//!
//! Needs `NEUROSTASH_EMBED_MODEL_DIR` and `NEUROSTASH_ST_PYTHONPATH`:
//! `eval "$(bash scripts/python-tools.sh)"` prints both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use neurostash::pipeline::{Embedder, HashingEmbedder, LocalModel, TokenCounter};
use serde::Deserialize;

#[derive(Debug, Parser)]
struct Args {
    /// Small sets, for a run of about a minute.
    #[arg(long)]
    quick: bool,
    /// Thread counts to compare at.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    threads: Vec<usize>,
    /// Short sentences (default 128 quick, 1024 full).
    #[arg(long)]
    sentences: Option<usize>,
    /// ~200-token passages (default 32 quick, 256 full).
    #[arg(long)]
    passages: Option<usize>,
    /// Timed passes per engine, the best kept (default 2 quick, 3 full).
    #[arg(long)]
    repeats: Option<usize>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

const BATCH_SIZE: usize = 32;

const SUBJECTS: [&str; 10] = [
    "The committee",
    "A young engineer",
    "Our database cluster",
    "The old lighthouse keeper",
    "Every new employee",
    "The research team",
    "A small startup",
    "The city council",
    "My neighbour's cat",
    "The quarterly report",
];
const VERBS: [&str; 10] = [
    "reviewed",
    "quietly rebuilt",
    "rejected",
    "carefully documented",
    "celebrated",
    "migrated",
    "questioned",
    "translated",
    "optimised",
    "forgot about",
];
const OBJECTS: [&str; 10] = [
    "the indexing pipeline",
    "an unusual proposal for the harbour",
    "three thousand scanned invoices",
    "the broken heating system",
    "a detailed plan for the next release",
    "the encrypted backups",
    "several pages of handwritten notes",
    "the latency problem in search",
    "an outdated privacy policy",
    "the summer festival schedule",
];
const ENDINGS: [&str; 8] = [
    "before the deadline.",
    "after a long discussion on Friday.",
    "without telling anyone.",
    "despite the heavy rain outside.",
    "in less than an hour.",
    "because the auditors asked twice.",
    "while everyone else was asleep.",
    "for the second time this year.",
];

/// The `index`-th sentence: a fixed walk through the word lists, so every
/// run (and both engines) sees the same texts.
fn sentence(index: usize) -> String {
    let pick = |list: &[&'static str], salt: usize| list[(index.wrapping_mul(2_654_435_761) >> salt) % list.len()];
    format!(
        "{} {} {} {}",
        pick(&SUBJECTS, 3),
        pick(&VERBS, 7),
        pick(&OBJECTS, 11),
        pick(&ENDINGS, 13)
    )
}

/// Passages of sentences, each grown until the model's tokenizer counts
/// about 200 tokens.
fn passages(count: usize, tokenizer: &dyn TokenCounter) -> Vec<String> {
    let mut next = 0;
    (0..count)
        .map(|_| {
            let mut passage = String::new();
            while tokenizer.token_spans(&passage).len() < 190 {
                if !passage.is_empty() {
                    passage.push(' ');
                }
                passage.push_str(&sentence(next));
                next += 1;
            }
            passage
        })
        .collect()
}

fn mean_tokens(texts: &[String], tokenizer: &dyn TokenCounter) -> f64 {
    let total: usize = texts.iter().map(|text| tokenizer.token_spans(text).len()).sum();
    total as f64 / texts.len().max(1) as f64
}

#[derive(Deserialize)]
struct PythonTiming {
    seconds: f64,
    texts: usize,
}

/// Texts per second of sentence-transformers on `texts`, timed in Python.
fn sentence_transformers(
    texts: &[String],
    threads: usize,
    repeats: usize,
    model_dir: &Path,
    pythonpath: &str,
) -> anyhow::Result<f64> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/st_embed.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["bench", "--threads", &threads.to_string()])
        .args([
            "--batch-size",
            &BATCH_SIZE.to_string(),
            "--repeats",
            &repeats.to_string(),
        ])
        .env("PYTHONPATH", pythonpath)
        .env("HF_HUB_OFFLINE", "1")
        .env("NEUROSTASH_EMBED_MODEL_DIR", model_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running {}", script.display()))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(&serde_json::to_vec(texts)?)?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("{} failed: {}", script.display(), output.status);
    }
    let timing: PythonTiming = serde_json::from_slice(&output.stdout).context("reading st_embed.py's timing")?;
    Ok(timing.texts as f64 / timing.seconds)
}

fn best_of(repeats: usize, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        run()?;
        best = best.min(started.elapsed());
    }
    Ok(best)
}

fn rate(texts: usize, elapsed: Duration) -> f64 {
    texts as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sentences = args.sentences.unwrap_or(if args.quick { 128 } else { 1024 }).max(1);
    let passage_count = args.passages.unwrap_or(if args.quick { 32 } else { 256 }).max(1);
    let repeats = args.repeats.unwrap_or(if args.quick { 2 } else { 3 }).max(1);
    let model_dir = std::env::var_os("NEUROSTASH_EMBED_MODEL_DIR")
        .map(PathBuf::from)
        .context("NEUROSTASH_EMBED_MODEL_DIR is not set: eval \"$(bash scripts/python-tools.sh)\" sets it")?;
    let pythonpath = std::env::var("NEUROSTASH_ST_PYTHONPATH")
        .context("NEUROSTASH_ST_PYTHONPATH is not set: eval \"$(bash scripts/python-tools.sh)\" sets it")?;

    let tokenizer = LocalModel::load(&model_dir, 1)?.tokenizer();
    let sets = [
        ("sentences", (0..sentences).map(sentence).collect::<Vec<_>>()),
        ("passages", passages(passage_count, &*tokenizer)),
    ];

    println!("embedding throughput, batch size {BATCH_SIZE}, best of {repeats} (texts/s)");
    println!(
        "{:<10} {:>7} {:>8} {:>22} {:>10} {:>9}",
        "set", "tokens", "threads", "sentence-transformers", "local", "local/ST"
    );
    for (name, texts) in &sets {
        let tokens = mean_tokens(texts, &*tokenizer);
        for &threads in &args.threads {
            let reference = sentence_transformers(texts, threads, repeats, &model_dir, &pythonpath)?;
            let model = LocalModel::load(&model_dir, threads)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed_now(&refs)?;
            let local = rate(texts.len(), best_of(repeats, || Ok(model.embed_now(&refs).map(drop)?))?);
            println!(
                "{name:<10} {tokens:>7.0} {threads:>8} {reference:>22.1} {local:>10.1} {:>8.2}x",
                local / reference
            );
        }
        let hashing = HashingEmbedder::new(384);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let elapsed = best_of(repeats, || {
            hashing.embed_now(&refs);
            Ok(())
        })?;
        println!(
            "{:<10} {tokens:>7.0} {:>8} {:>22} {:>10.1}   (hashing embedder, not a language model)",
            name,
            1,
            "-",
            rate(texts.len(), elapsed)
        );
    }
    Ok(())
}
