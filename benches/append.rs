//! Append throughput of the event store on SQLite and Postgres, beside a
//! naive baseline measured in the same run.
//!
//! ```text
//! cargo bench --bench append -- --quick      # small counts, well under 30 s
//! cargo bench --bench append                 # the full run
//! cargo bench --bench append -- --postgres-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! Every run writes `streams` streams of `events-per-stream` events from
//! `concurrency` workers (each worker owns a share of the streams and
//! appends to them in turn), into its own fresh database, in three modes:
//!
//! - `store 1/append`: the event store, one event per append, each append
//!   checked against the version the writer expects;
//! - `store N/append`: the same with N events per append;
//! - `naive 1/tx`: no event store, one `INSERT` per transaction written
//!   directly with sqlx against the same schema: what the storage costs
//!   without batching and without a version check.
//!
//! Latency is per append call (per transaction for the baseline). Postgres
//! runs when `NEUROSTASH_TEST_POSTGRES_URL` or `--postgres-url` names a
//! server, each run on a database of its own that is dropped afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use actors::db::{Database, TEST_POSTGRES_URL_VAR};
use actors::store::{EventStore, ExpectedVersion, NewEvent};
use anyhow::{bail, Context};
use clap::Parser;
use domain::{EventMetadata, StreamId, TenantId};
use serde_json::json;
use sqlx::types::Json;
use support::{Backend, RunDatabase};
use tokio::sync::Barrier;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "append throughput of the event store against a naive one-insert-per-transaction baseline")]
struct Args {
    /// Small counts for a smoke run (well under 30 s).
    #[arg(long)]
    quick: bool,
    /// Postgres server to create the benchmark databases on; without it
    /// only SQLite runs.
    #[arg(long, env = TEST_POSTGRES_URL_VAR)]
    postgres_url: Option<String>,
    /// Number of streams written (default 64).
    #[arg(long)]
    streams: Option<usize>,
    /// Events written to each stream (default 24 quick, 400 full).
    #[arg(long)]
    events_per_stream: Option<usize>,
    /// Concurrent writers, one run per value (default 16,64).
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Events per append in the batched mode (default 8).
    #[arg(long)]
    batch: Option<usize>,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Store { events_per_append: usize },
    Naive,
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Store { events_per_append } => format!("store {events_per_append}/append"),
            Mode::Naive => "naive 1/tx".to_string(),
        }
    }

    fn events_per_call(self) -> usize {
        match self {
            Mode::Store { events_per_append } => events_per_append,
            Mode::Naive => 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    streams: usize,
    events_per_stream: usize,
    concurrency: usize,
}

struct Measurement {
    backend: Backend,
    mode: Mode,
    concurrency: usize,
    events: usize,
    elapsed: Duration,
    /// One per append call (per transaction for the baseline), sorted.
    latencies: Vec<Duration>,
}

impl Measurement {
    fn percentile(&self, fraction: f64) -> Duration {
        support::percentile(&self.latencies, fraction)
    }
}

/// Where a run's appends go.
enum Target {
    Store(Arc<dyn EventStore>),
    Naive(Database),
}

impl Target {
    /// Appends `events` to `stream_id`, which holds `current_version`
    /// events; each stream has a single writer, so it knows the version.
    async fn append(&self, stream_id: &StreamId, current_version: i64, events: Vec<NewEvent>) -> anyhow::Result<()> {
        match self {
            Target::Store(store) => {
                store
                    .append(stream_id, ExpectedVersion::Exactly(current_version), events)
                    .await
                    .with_context(|| format!("store append to {stream_id}"))?;
            }
            Target::Naive(database) => {
                for (event, version) in events.into_iter().zip(current_version + 1..) {
                    naive_insert(database, stream_id, version, &event)
                        .await
                        .with_context(|| format!("naive insert into {stream_id}"))?;
                }
            }
        }
        Ok(())
    }
}

/// One event, one statement, one transaction: the obvious way to write an
/// event log, with the same columns and encodings as the adapters.
async fn naive_insert(database: &Database, stream_id: &StreamId, version: i64, event: &NewEvent) -> sqlx::Result<()> {
    match database {
        Database::Sqlite(pool) => {
            let mut transaction = pool.begin().await?;
            sqlx::query(
                "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, \
                 tenant_id, actor_key_id, correlation_id, causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(stream_id.as_str())
            .bind(version)
            .bind(event.event_id.to_string())
            .bind(event.event_type.as_str())
            .bind(i64::from(event.schema_version))
            .bind(event.data.to_string())
            .bind(event.metadata.tenant_id.map(|tenant| tenant.0.to_string()))
            .bind(event.metadata.actor_key_id.as_ref().map(|key| key.0.as_str()))
            .bind(event.metadata.correlation_id.to_string())
            .bind(event.metadata.causation_id.map(|id| id.to_string()))
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await
        }
        Database::Postgres(pool) => {
            let mut transaction = pool.begin().await?;
            sqlx::query(
                "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, \
                 tenant_id, actor_key_id, correlation_id, causation_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(stream_id.as_str())
            .bind(version)
            .bind(event.event_id)
            .bind(event.event_type.as_str())
            .bind(i16::try_from(event.schema_version).unwrap_or(i16::MAX))
            .bind(Json(&event.data))
            .bind(event.metadata.tenant_id.map(|tenant| tenant.0))
            .bind(event.metadata.actor_key_id.as_ref().map(|key| key.0.as_str()))
            .bind(event.metadata.correlation_id)
            .bind(event.metadata.causation_id)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await
        }
    }
}

/// A payload about the size of a real document event.
fn sample_event(tenant: TenantId, stream_index: usize, version: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "document.uploaded".to_string(),
        schema_version: 1,
        data: json!({
            "file_name": format!("report-{stream_index}-{version}.pdf"),
            "content_type": "application/pdf",
            "size_bytes": 48_213,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "object_key": format!("objects/{stream_index}/{version}"),
        }),
        metadata: EventMetadata {
            tenant_id: Some(tenant),
            actor_key_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
        },
    }
}

async fn measure(
    backend: Backend,
    mode: Mode,
    workload: Workload,
    postgres_url: Option<&str>,
) -> anyhow::Result<Measurement> {
    let workers = workload.concurrency.min(workload.streams).max(1);
    let run = RunDatabase::open(backend, postgres_url, workers as u32).await?;
    run.warm_pool(workers as u32).await?;
    let target = Arc::new(match mode {
        Mode::Store { .. } => Target::Store(run.database.event_store()),
        Mode::Naive => Target::Naive(run.database.clone()),
    });
    let events_per_call = mode.events_per_call().max(1);

    // Workers start together so the clock measures them all writing at once.
    let barrier = Arc::new(Barrier::new(workers + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let target = target.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let tenant = TenantId(Uuid::new_v4());
            let mut streams: Vec<(usize, StreamId, i64)> = (worker..workload.streams)
                .step_by(workers)
                .map(|stream_index| (stream_index, StreamId(format!("document-{}", Uuid::new_v4())), 0))
                .collect();
            let mut latencies = Vec::new();
            barrier.wait().await;
            // Round-robin over the worker's streams, as a busy node would
            // interleave commands for different aggregates.
            let mut written = 0;
            while written < workload.events_per_stream {
                let count = events_per_call.min(workload.events_per_stream - written);
                for (stream_index, stream_id, version) in &mut streams {
                    let events: Vec<NewEvent> = (1..=count as i64)
                        .map(|offset| sample_event(tenant, *stream_index, *version + offset))
                        .collect();
                    let started = Instant::now();
                    target.append(stream_id, *version, events).await?;
                    latencies.push(started.elapsed());
                    *version += count as i64;
                }
                written += count;
            }
            anyhow::Ok(latencies)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("bench worker panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();

    let events = workload.streams * workload.events_per_stream;
    let stored = run.event_count().await?;
    if stored != events as i64 {
        bail!(
            "{} {}: wrote {events} events but the database holds {stored}",
            backend.name(),
            mode.label()
        );
    }
    drop(target);
    run.close().await?;
    Ok(Measurement {
        backend,
        mode,
        concurrency: workers,
        events,
        elapsed,
        latencies,
    })
}

fn print_header() {
    println!(
        "{:<9} {:<16} {:>5} {:>7} {:>8} {:>10} {:>9} {:>9}",
        "store", "mode", "conc", "events", "seconds", "events/s", "p50 ms", "p99 ms"
    );
}

fn print_row(measurement: &Measurement) {
    let seconds = measurement.elapsed.as_secs_f64();
    println!(
        "{:<9} {:<16} {:>5} {:>7} {:>8.2} {:>10.0} {:>9.3} {:>9.3}",
        measurement.backend.name(),
        measurement.mode.label(),
        measurement.concurrency,
        measurement.events,
        seconds,
        measurement.events as f64 / seconds.max(f64::EPSILON),
        measurement.percentile(0.50).as_secs_f64() * 1_000.0,
        measurement.percentile(0.99).as_secs_f64() * 1_000.0,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let streams = args.streams.unwrap_or(64).max(1);
    let events_per_stream = args
        .events_per_stream
        .unwrap_or(if args.quick { 24 } else { 400 })
        .max(1);
    let concurrencies = args.concurrency.clone().unwrap_or_else(|| vec![16, 64]);
    let batch = args.batch.unwrap_or(8).max(2);
    let postgres_url = args.postgres_url.as_deref().filter(|url| !url.trim().is_empty());

    let mut backends = vec![Backend::Sqlite];
    match postgres_url {
        Some(_) => backends.push(Backend::Postgres),
        None => println!("postgres skipped: set {TEST_POSTGRES_URL_VAR} or pass --postgres-url to include it"),
    }
    println!(
        "{} run: {streams} streams x {events_per_stream} events, concurrency {concurrencies:?}, batches of {batch}",
        if args.quick { "quick" } else { "full" }
    );
    println!();
    print_header();

    let total = Instant::now();
    for backend in backends {
        for &concurrency in &concurrencies {
            let workload = Workload {
                streams,
                events_per_stream,
                concurrency: concurrency.max(1),
            };
            for mode in [
                Mode::Naive,
                Mode::Store { events_per_append: 1 },
                Mode::Store {
                    events_per_append: batch,
                },
            ] {
                let measurement = measure(backend, mode, workload, postgres_url)
                    .await
                    .with_context(|| format!("{} {} at concurrency {concurrency}", backend.name(), mode.label()))?;
                print_row(&measurement);
            }
        }
    }
    println!();
    println!(
        "latency is per append call (per transaction for naive); total {:.1} s",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}
