//! Extraction throughput per format, on real files of realistic size made
//! by `scripts/make_fixtures.py` (reportlab, python-docx, openpyxl,
//! python-pptx, Python's csv/json), beside a baseline in the same run:
//! UTF-8 validation of as many bytes (what reading plain text costs at all).
//!
//! ```text
//! eval "$(bash scripts/python-tools.sh)"
//! cargo bench -p extract --bench extraction -- --quick   # small files, seconds
//! cargo bench -p extract --bench extraction              # a 100-page pdf, ~50k-row sheets
//! ```
//!
//! Each file is extracted `--repeats` times and the best run kept; MB/s is
//! of the file's bytes (compressed, for the zip formats and the pdf).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Small files, for a run of seconds.
    #[arg(long)]
    quick: bool,
    /// Runs per file (default 3 quick, 5 full).
    #[arg(long)]
    repeats: Option<usize>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn best_of(repeats: usize, mut run: impl FnMut() -> Duration) -> Duration {
    (0..repeats).map(|_| run()).min().unwrap_or_default()
}

fn rate(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(f64::EPSILON)
}

fn main() {
    let args = Args::parse();
    let repeats = args.repeats.unwrap_or(if args.quick { 3 } else { 5 });
    let (pdf_pages, scale) = if args.quick { ("10", "6") } else { ("100", "50") };
    let pythonpath = std::env::var("NEUROSTASH_FIXTURES_PYTHONPATH").unwrap_or_else(|_| {
        eprintln!("NEUROSTASH_FIXTURES_PYTHONPATH is not set: run `eval \"$(bash scripts/python-tools.sh)\"` first");
        std::process::exit(2);
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/make_fixtures.py");
    let made = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .args(["--pdf-pages", pdf_pages, "--scale", scale])
        .env("PYTHONPATH", pythonpath)
        .output()
        .expect("running python3");
    assert!(
        made.status.success(),
        "make_fixtures.py: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    println!(
        "extraction, best of {repeats} ({}; --pdf-pages {pdf_pages} --scale {scale})",
        if args.quick { "quick" } else { "full" }
    );
    println!(
        "{:<28} {:>10} {:>9} {:>8} {:>10} {:>9}",
        "file", "bytes", "text KB", "blocks", "best ms", "MB/s"
    );
    let mut largest = 0;
    for name in [
        "sample.pdf",
        "sample.docx",
        "sample.xlsx",
        "sample.pptx",
        "sample.csv",
        "sample.json",
        "sample.html",
        "sample.md",
    ] {
        let bytes = std::fs::read(dir.path().join(name)).expect("fixture");
        largest = largest.max(bytes.len());
        let ext = name.rsplit('.').next();
        let mut last = None;
        let best = best_of(repeats, || {
            let started = Instant::now();
            let extracted = extract::extract_text(ext, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let elapsed = started.elapsed();
            last = Some(extracted);
            elapsed
        });
        let extracted = last.expect("at least one run");
        let detail = match extracted.pages {
            Some(pages) => format!("{name} ({pages} p.)"),
            None => name.to_owned(),
        };
        println!(
            "{:<28} {:>10} {:>9} {:>8} {:>10.2} {:>9.1}",
            detail,
            bytes.len(),
            extracted.text.len() / 1000,
            extracted.blocks.len(),
            best.as_secs_f64() * 1e3,
            rate(bytes.len(), best)
        );
    }

    // The baseline: validating as many bytes of text as the largest file.
    let text: Vec<u8> = b"The lamp is lit at dusk and trimmed twice in the night.\n"
        .iter()
        .copied()
        .cycle()
        .take(largest)
        .collect();
    let best = best_of(repeats, || {
        let started = Instant::now();
        let valid = std::str::from_utf8(std::hint::black_box(&text)).is_ok();
        std::hint::black_box(valid);
        started.elapsed()
    });
    println!(
        "{:<28} {:>10} {:>9} {:>8} {:>10.2} {:>9.1}",
        "baseline: utf-8 validation",
        text.len(),
        text.len() / 1000,
        "-",
        best.as_secs_f64() * 1e3,
        rate(text.len(), best)
    );
    let plain = best_of(repeats, || {
        let started = Instant::now();
        std::hint::black_box(extract::extract_text(Some("txt"), &text).expect("plain text"));
        started.elapsed()
    });
    println!(
        "{:<28} {:>10} {:>9} {:>8} {:>10.2} {:>9.1}",
        "plain text (txt reader)",
        text.len(),
        text.len() / 1000,
        "-",
        plain.as_secs_f64() * 1e3,
        rate(text.len(), plain)
    );
}
