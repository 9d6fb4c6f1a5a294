//! Encryption at rest: throughput of the chunked XChaCha20-Poly1305 object
//! format beside a plain copy of the same bytes, and upload → SUCCESS
//! latency through the HTTP API with the objects in the local directory
//! and in S3, all in the same run.
//!
//! ```text
//! cargo bench --bench encryption -- --quick   # small sizes, well under a minute
//! cargo bench --bench encryption              # the full run
//! ```
//!
//! Throughput, on one buffer of `--megabytes` random bytes, each mode
//! repeated and the best run kept (MB/s of plaintext):
//!
//! - `copy`: the bytes copied into a fresh buffer (the baseline: what
//!   moving them costs at all);
//! - `encrypt` / `decrypt`: the whole object in memory (artifacts);
//! - `encrypt stream` / `decrypt stream`: the streaming form the object
//!   store uses, fed 64 KiB pieces, as an upload arrives.
//!
//! Latency: an embedded app (SQLite, hashing embedder) serves the API on
//! loopback; `--uploads` text files are uploaded one after another and each
//! is timed from the request until `GET /v1/documents/{id}` says SUCCESS.
//! The S3 row runs when `NEUROSTASH_TEST_S3_ENDPOINT` (with its access and
//! secret key variables) names a server, as `scripts/s3.sh` starts one.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::crypto::stream::{
    decrypt_bytes, decrypt_stream, encrypt_bytes, encrypt_stream, read_header, DEFAULT_CHUNK_SIZE,
};
use actors::crypto::DataKey;
use actors::objects::ByteStream;
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use common::Served;
use domain::TenantId;
use futures::StreamExt;
use neurostash::config::Secret;
use rand::RngCore;
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Small sizes, for a run well under a minute.
    #[arg(long)]
    quick: bool,
    /// Size of the buffer for throughput (default 16 quick, 256 full).
    #[arg(long)]
    megabytes: Option<usize>,
    /// Uploads timed per object store (default 10 quick, 40 full).
    #[arg(long)]
    uploads: Option<usize>,
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

fn pieces(bytes: &Bytes) -> ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|start| Ok(bytes.slice(start..(start + 64 * 1024).min(bytes.len()))))
        .collect();
    futures::stream::iter(pieces).boxed()
}

async fn drain(mut stream: ByteStream) -> anyhow::Result<usize> {
    let mut total = 0;
    while let Some(piece) = stream.next().await {
        total += piece?.len();
    }
    Ok(total)
}

async fn throughput(megabytes: usize, repeats: usize) -> anyhow::Result<()> {
    let mut plain = vec![0u8; megabytes * 1024 * 1024];
    rand::thread_rng().fill_bytes(&mut plain);
    let key = Arc::new(DataKey::generate(TenantId(Uuid::now_v7())));
    let size = plain.len();

    let copy = best_of(repeats, || {
        let started = Instant::now();
        let copied = plain.clone();
        std::hint::black_box(&copied);
        started.elapsed()
    });
    let mut sealed = Vec::new();
    let encrypt = best_of(repeats, || {
        let started = Instant::now();
        sealed = encrypt_bytes(&key, &plain);
        started.elapsed()
    });
    let mut opened = Vec::new();
    let decrypt = best_of(repeats, || {
        let started = Instant::now();
        opened = decrypt_bytes(&sealed, |_| Ok(key.clone())).expect("decrypts");
        started.elapsed()
    });
    if opened != plain {
        bail!("in-memory round trip changed the bytes");
    }

    let plain_bytes = Bytes::from(plain);
    let sealed_bytes = Bytes::from(sealed);
    let mut encrypt_stream_best = Duration::MAX;
    let mut decrypt_stream_best = Duration::MAX;
    for _ in 0..repeats {
        let started = Instant::now();
        let written = drain(encrypt_stream(&key, DEFAULT_CHUNK_SIZE, pieces(&plain_bytes))).await?;
        encrypt_stream_best = encrypt_stream_best.min(started.elapsed());
        if written != sealed_bytes.len() {
            bail!(
                "streamed ciphertext has {written} bytes, the in-memory form {}",
                sealed_bytes.len()
            );
        }
        let started = Instant::now();
        let (header, rest) = read_header(pieces(&sealed_bytes)).await?;
        let read = drain(decrypt_stream(&key, header, rest)?).await?;
        decrypt_stream_best = decrypt_stream_best.min(started.elapsed());
        if read != size {
            bail!("streamed plaintext has {read} bytes, not {size}");
        }
    }

    println!("\nthroughput, {megabytes} MiB, best of {repeats} (MB/s of plaintext)");
    println!("{:<16} {:>10} {:>12}", "mode", "MB/s", "vs copy");
    let copy_rate = rate(size, copy);
    for (mode, elapsed) in [
        ("copy", copy),
        ("encrypt", encrypt),
        ("decrypt", decrypt),
        ("encrypt stream", encrypt_stream_best),
        ("decrypt stream", decrypt_stream_best),
    ] {
        let mbps = rate(size, elapsed);
        println!("{mode:<16} {mbps:>10.0} {:>11.1}%", 100.0 * mbps / copy_rate);
    }
    println!(
        "ciphertext overhead: {} bytes on {size} ({:.3}%)",
        sealed_bytes.len() - size,
        100.0 * (sealed_bytes.len() - size) as f64 / size as f64
    );
    Ok(())
}

async fn serve(s3: bool) -> anyhow::Result<Served> {
    Served::start(|config| {
        if s3 {
            config.s3_endpoint = std::env::var("NEUROSTASH_TEST_S3_ENDPOINT").ok();
            config.s3_access_key = std::env::var("NEUROSTASH_TEST_S3_ACCESS_KEY").ok();
            config.s3_secret_key = std::env::var("NEUROSTASH_TEST_S3_SECRET_KEY").ok().map(Secret::new);
            config.s3_bucket = format!("bench-{}", Uuid::now_v7().simple());
        }
    })
    .await
}

async fn upload_until_success(served: &Served, number: usize) -> anyhow::Result<Duration> {
    let text = format!(
        "Bench document {number}: the tide tables for the northern harbour list high water at dawn \
         and again at dusk, with the spring tides running a metre above the neaps. {}",
        "Fishing boats wait at the bar for the flood. ".repeat(40)
    );
    let started = Instant::now();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text(text).file_name(format!("tides-{number}.txt")),
    );
    let response = served
        .client
        .post(format!("{}/v1/documents", served.base))
        .bearer_auth(&served.key)
        .multipart(form)
        .send()
        .await?;
    if response.status() != 202 {
        bail!("upload answered {}: {}", response.status(), response.text().await?);
    }
    let body: serde_json::Value = response.json().await?;
    let id = body["id"].as_str().context("a document id")?.to_owned();
    loop {
        let document: serde_json::Value = served
            .client
            .get(format!("{}/v1/documents/{id}", served.base))
            .bearer_auth(&served.key)
            .send()
            .await?
            .json()
            .await?;
        match document["status"].as_str() {
            Some("SUCCESS") => return Ok(started.elapsed()),
            Some("FAILED") => bail!("document {id} failed: {document}"),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("document {id} never reached SUCCESS");
        }
    }
}

async fn latency(uploads: usize) -> anyhow::Result<()> {
    let mut stores = vec![("local directory", false)];
    if std::env::var("NEUROSTASH_TEST_S3_ENDPOINT").is_ok() {
        stores.push(("s3", true));
    } else {
        println!("\n(no NEUROSTASH_TEST_S3_ENDPOINT: the s3 row is skipped)");
    }
    println!("\nupload -> SUCCESS, {uploads} sequential text uploads of about 2 KB (ms)");
    println!("{:<16} {:>8} {:>8} {:>8} {:>8}", "objects", "p50", "p90", "max", "mean");
    for (name, s3) in stores {
        let served = serve(s3).await?;
        // the first upload pays for the tenant's first data key and warm-up
        upload_until_success(&served, 0).await?;
        let mut samples = Vec::with_capacity(uploads);
        for number in 1..=uploads {
            samples.push(upload_until_success(&served, number).await?.as_secs_f64() * 1e3);
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        println!(
            "{name:<16} {:>8.1} {:>8.1} {:>8.1} {mean:>8.1}",
            at(0.5),
            at(0.9),
            samples[samples.len() - 1]
        );
        served.stop().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let megabytes = args.megabytes.unwrap_or(if args.quick { 16 } else { 256 });
    let uploads = args.uploads.unwrap_or(if args.quick { 10 } else { 40 }).max(1);
    throughput(megabytes, if args.quick { 3 } else { 5 }).await?;
    latency(uploads).await?;
    Ok(())
}
