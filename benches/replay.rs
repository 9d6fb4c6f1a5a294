//! Replay rate of the registry (events/s from the log into the registry
//! tables) on SQLite and Postgres, beside a baseline measured in the same
//! run: the same final rows bulk-loaded into empty tables.
//!
//! ```text
//! cargo bench --bench replay -- --quick      # small counts, well under a minute
//! cargo bench --bench replay                 # the full run
//! cargo bench --bench replay -- --postgres-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! Each backend gets a fresh database and a realistic log appended through
//! the event store (untimed): tenants with API keys (one revoked), knowledge
//! bases, documents registered, linked to one or two knowledge bases and
//! processed (some failing, some retried), and later some links removed,
//! documents deleted and knowledge bases deleted, one append per command as
//! the API and the processor make them, while a `ProjectionRunner` keeps the
//! registry live. Its dump is the reference. Then, each from
//! `Registry::reset`:
//!
//! - `replay B/batch`: `read_log` B events after the checkpoint and
//!   `RegistryProjection::apply_batch` them, until the head (what
//!   `catch_up` does), timing the reads and the applies apart;
//! - `runner 256/batch`: a `ProjectionRunner` with its default options,
//!   until it reports the head;
//! - `copy rows` (Postgres) / `insert rows` (SQLite): the baseline, the rows
//!   of the rebuilt registry's dump (bookkeeping tables included, so the
//!   same rows the projection writes) written into the emptied tables in one
//!   transaction, by `COPY … FROM STDIN` on Postgres and by multi-row
//!   `INSERT`s on SQLite, which has no `COPY`.
//!
//! After every replay the dump must equal the live one, and after the
//! baseline the rebuilt one. Postgres runs when `NEUROSTASH_TEST_POSTGRES_URL`
//! or `--postgres-url` names a server. The runs share one database, so on
//! Postgres each inherits the dead rows of the one before (as a rebuild
//! after `reset` would); the tables are not analysed in between (see
//! [`reset`]).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::crypto::{seal_field, DataKey};
use actors::db::{Database, TEST_POSTGRES_URL_VAR};
use actors::store::{EventStore, ExpectedVersion, NewEvent};
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use domain::document::{ArtifactRef, DocumentEvent, FileName};
use domain::event::EventPayload;
use domain::knowledge_base::KnowledgeBaseEvent;
use domain::tenant::{Email, Role, TenantEvent};
use domain::{ApiKeyId, DocumentId, EventMetadata, KnowledgeBaseId, LogPosition, StreamId, TenantId};
use projections::registry::{DumpValue, Registry, RegistryDump, RegistryProjection};
use projections::runtime::{Projection, ProjectionRunner, RunnerOptions};
use support::{percentile, Backend, RunDatabase};
use uuid::Uuid;

/// How long the live projection and the runner may take to reach the head.
const HEAD_DEADLINE: Duration = Duration::from_secs(600);
/// SQLite's default bound on the parameters of one statement.
const SQLITE_MAX_PARAMETERS: usize = 32_766;

#[derive(Debug, Parser)]
#[command(about = "registry replay rate against a bulk load of the same rows")]
struct Args {
    /// Small counts for a smoke run (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Postgres server to create the benchmark databases on; without it
    /// only SQLite runs.
    #[arg(long, env = TEST_POSTGRES_URL_VAR)]
    postgres_url: Option<String>,
    /// Tenants in the log (default 4 quick, 20 full).
    #[arg(long)]
    tenants: Option<usize>,
    /// Documents per tenant (default 150 quick, 500 full).
    #[arg(long)]
    documents: Option<usize>,
    /// Knowledge bases per tenant (default 5).
    #[arg(long)]
    knowledge_bases: Option<usize>,
    /// Replay batch sizes, one run per value (default 500,2000).
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<usize>>,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    tenants: usize,
    documents: usize,
    knowledge_bases: usize,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Replay(usize),
    Runner(usize),
    Baseline,
}

impl Mode {
    fn label(self, backend: Backend) -> String {
        match (self, backend) {
            (Mode::Replay(batch), _) => format!("replay {batch}/batch"),
            (Mode::Runner(batch), _) => format!("runner {batch}/batch"),
            (Mode::Baseline, Backend::Postgres) => "copy rows".to_string(),
            (Mode::Baseline, Backend::Sqlite) => "insert rows".to_string(),
        }
    }
}

struct Measurement {
    backend: Backend,
    mode: Mode,
    events: usize,
    rows: usize,
    elapsed: Duration,
    /// Time in `read_log` and in `apply_batch` (replay only).
    split: Option<(Duration, Duration)>,
    /// One per batch (read + apply), sorted; replay only.
    batches: Vec<Duration>,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Appends events through the store, one append per command, keeping the
/// log position of the last.
struct Appender {
    store: Arc<dyn EventStore>,
    tenant: TenantId,
    last: LogPosition,
}

impl Appender {
    async fn append<E: EventPayload>(&mut self, stream: &StreamId, event: &E) -> anyhow::Result<()> {
        self.append_all(stream, std::slice::from_ref(event)).await
    }

    async fn append_all<E: EventPayload>(&mut self, stream: &StreamId, events: &[E]) -> anyhow::Result<()> {
        let new_events = events
            .iter()
            .map(|event| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: event.event_type().to_string(),
                schema_version: domain::SCHEMA_VERSION,
                data: event.to_data(),
                metadata: EventMetadata {
                    tenant_id: Some(self.tenant),
                    actor_key_id: Some(ApiKeyId(format!("key-{}-0", self.tenant.0.simple()))),
                    correlation_id: Uuid::now_v7(),
                    causation_id: None,
                },
            })
            .collect();
        let outcome = self
            .store
            .append(stream, ExpectedVersion::Any, new_events)
            .await
            .with_context(|| format!("appending to {stream}"))?;
        self.last = self.last.max(outcome.log_position);
        Ok(())
    }
}

fn started(attempt: u32) -> DocumentEvent {
    DocumentEvent::ProcessingStarted {
        worker: format!("processor-{}", attempt % 2),
        attempt,
        lease_expires_at: Utc::now() + chrono::Duration::seconds(120),
    }
}

/// The life of one tenant, in the order a busy node would append it;
/// returns the log position of its last append.
async fn append_tenant(store: Arc<dyn EventStore>, index: usize, workload: Workload) -> anyhow::Result<LogPosition> {
    let email = format!("tenant-{index}@example.com");
    let tenant = TenantId::for_email(&email);
    let mut appender = Appender {
        store,
        tenant,
        last: LogPosition::START,
    };
    let tenant_stream = tenant.stream_id();
    // sealed as the api seals them, so events have their real size
    let data_key = DataKey::generate(tenant);
    let key = |number: usize| ApiKeyId(format!("key-{}-{number}", tenant.0.simple()));
    let mut opening = vec![TenantEvent::TenantRegistered {
        tenant_id: tenant,
        email: seal_field(
            &data_key,
            "email",
            Email::parse(&email).context("a valid email")?.as_str(),
        )
        .into(),
        role: if index == 0 { Role::Admin } else { Role::User },
    }];
    opening.extend((0..3).map(|number| TenantEvent::ApiKeyIssued {
        key_id: key(number),
        secret_hash: format!("{:064x}", (index * 10 + number) as u128 * 0x9e37_79b9),
        role: Role::User,
        label: (number > 0).then(|| format!("ci runner {number}")),
        expires_at: (number == 2).then(|| Utc::now() + chrono::Duration::days(90)),
        scopes: Default::default(),
    }));
    appender.append_all(&tenant_stream, &opening).await?;

    let knowledge_bases: Vec<KnowledgeBaseId> = (0..workload.knowledge_bases)
        .map(|_| KnowledgeBaseId(Uuid::new_v4()))
        .collect();
    for (number, knowledge_base) in knowledge_bases.iter().enumerate() {
        let created = KnowledgeBaseEvent::KnowledgeBaseCreated {
            knowledge_base_id: *knowledge_base,
            tenant_id: tenant,
            name: seal_field(&data_key, "name", &format!("research notes {number}")).into(),
            category: (number % 2 == 0).then(|| seal_field(&data_key, "category", "research").into()),
            embedding_model: None,
            chunking: None,
        };
        appender.append(&knowledge_base.stream_id(), &created).await?;
    }
    let kb_count = knowledge_bases.len().max(1);
    let kb = |number: usize| knowledge_bases.get(number % kb_count);

    // Uploads: registered, then filed into one or two knowledge bases.
    let mut documents = Vec::with_capacity(workload.documents);
    for number in 0..workload.documents {
        let file_name = format!("meeting-notes-{number:05}.md");
        let document_id = DocumentId::for_file(tenant, &file_name);
        let registered = DocumentEvent::DocumentRegistered {
            document_id,
            tenant_id: tenant,
            file_name: seal_field(
                &data_key,
                "file_name",
                FileName::parse(&file_name).context("a valid file name")?.as_str(),
            )
            .into(),
            content_type: "text/markdown".to_string(),
            size_bytes: 4_096 + number as u64 * 17,
            sha256: format!("{:064x}", number as u128 * 0x2545_f491_4f6c_dd1d + index as u128),
            object_key: format!("objects/{}/{}", tenant.0, document_id.0),
            knowledge_base_id: None,
        };
        appender.append(&document_id.stream_id(), &registered).await?;
        let mut targets = vec![number];
        if number % 3 == 0 {
            targets.push(number + 1);
        }
        for target in targets {
            if let Some(knowledge_base) = kb(target) {
                let added = KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id };
                appender.append(&knowledge_base.stream_id(), &added).await?;
            }
        }
        documents.push(document_id);
    }

    // Processing: most succeed, some fail once and then succeed, some fail.
    for (number, document_id) in documents.iter().enumerate() {
        let stream = document_id.stream_id();
        let failed = |attempt| DocumentEvent::ProcessingFailed {
            reason: "extraction failed: the markdown parser gave up at line 12".to_string(),
            attempt,
        };
        let processed = DocumentEvent::DocumentProcessed {
            artifact: ArtifactRef {
                object_key: format!("artifacts/{}.nsa", document_id.0),
                sha256: format!("{:064x}", number as u128 + 11),
                chunk_count: 3 + (number % 30) as u32,
                embedder: "hashing-embedder-v1".to_string(),
                dimensions: 384,
                embedder_version: None,
            },
        };
        let mut life = vec![started(1)];
        match number % 20 {
            7 => life.extend([failed(1), started(2), processed]),
            13 => life.push(failed(1)),
            _ => life.push(processed),
        }
        for event in &life {
            appender.append(&stream, event).await?;
        }
    }

    // Later: links removed, documents deleted, a key revoked, and every
    // other tenant's last knowledge base deleted.
    for (number, document_id) in documents.iter().enumerate() {
        if number % 10 == 4 {
            if let Some(knowledge_base) = kb(number) {
                let removed = KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase {
                    document_id: *document_id,
                };
                appender.append(&knowledge_base.stream_id(), &removed).await?;
            }
        }
        if number % 25 == 5 {
            appender
                .append(&document_id.stream_id(), &DocumentEvent::DocumentDeleted {})
                .await?;
        }
    }
    appender
        .append(&tenant_stream, &TenantEvent::ApiKeyRevoked { key_id: key(1) })
        .await?;
    if index % 2 == 1 && knowledge_bases.len() > 1 {
        if let Some(last) = knowledge_bases.last() {
            appender
                .append(&last.stream_id(), &KnowledgeBaseEvent::KnowledgeBaseDeleted {})
                .await?;
        }
    }
    Ok(appender.last)
}

/// Appends the whole log, tenants side by side, while a runner keeps the
/// registry live; returns the head, once the registry has reached it.
///
/// The head is the position of the last append, not `log_head` when the
/// appends are done: on Postgres `log_head` stops short of every
/// transaction younger than one still running, and the runner's own write
/// transaction may be running then.
async fn build_log(database: &Database, workload: Workload) -> anyhow::Result<LogPosition> {
    let store = database.event_store();
    let live = ProjectionRunner::spawn(
        store.clone(),
        Arc::new(RegistryProjection::new(database.clone())),
        RunnerOptions::default(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..workload.tenants {
        tasks.spawn(append_tenant(store.clone(), index, workload));
    }
    let mut head = LogPosition::START;
    while let Some(joined) = tasks.join_next().await {
        head = head.max(joined.context("append worker panicked")??);
    }
    let reached = live.wait_for(head, HEAD_DEADLINE).await;
    live.shutdown().await;
    if !reached {
        bail!("the live registry did not reach the head {head} in {HEAD_DEADLINE:?}");
    }
    Ok(head)
}

/// Empties the registry as a rebuild would. No `VACUUM (ANALYZE)` after
/// it on Postgres: statistics that say the tables are empty make the
/// planner pick sequential scans, and the replay then reads millions of
/// tuples (seen: 14 M on `knowledge_base_documents` for an 18 k event log)
/// and slows down by half or worse.
async fn reset(registry: &Registry) -> anyhow::Result<()> {
    registry.reset().await.context("resetting the registry")?;
    let emptied = registry.dump().await.context("dumping the reset registry")?;
    if let Some(table) = emptied.tables.iter().find(|table| !table.rows.is_empty()) {
        bail!("the reset left {} rows in {}", table.rows.len(), table.table);
    }
    Ok(())
}

fn row_count(dump: &RegistryDump) -> usize {
    dump.tables.iter().map(|table| table.rows.len()).sum()
}

/// Names every table in which two dumps differ, with the first differing
/// row of each.
fn compare(what: &str, actual: &RegistryDump, expected: &RegistryDump) -> anyhow::Result<()> {
    if actual == expected {
        return Ok(());
    }
    let mut differences = Vec::new();
    for (actual, expected) in actual.tables.iter().zip(&expected.tables) {
        if actual == expected {
            continue;
        }
        let differing = actual
            .rows
            .iter()
            .zip(&expected.rows)
            .find(|(actual, expected)| actual != expected);
        differences.push(format!(
            "table {} has {} rows, expected {}; first differing row {:?}, expected {:?}",
            actual.table,
            actual.rows.len(),
            expected.rows.len(),
            differing.map(|(actual, _)| actual),
            differing.map(|(_, expected)| expected),
        ));
    }
    if differences.is_empty() {
        bail!("{what}: the dumps differ in their tables");
    }
    bail!("{what}: {}", differences.join("\n"))
}

/// Replays the log from the start in batches of `batch`, as `catch_up`
/// does, timing the reads and the applies apart.
async fn replay(
    store: &dyn EventStore,
    projection: &RegistryProjection,
    head: LogPosition,
    batch: usize,
) -> anyhow::Result<(usize, Duration, Duration, Vec<Duration>)> {
    let mut position = projection.checkpoint().await.context("reading the checkpoint")?;
    let (mut reading, mut applying) = (Duration::ZERO, Duration::ZERO);
    let mut batches = Vec::new();
    let mut events = 0;
    while position < head {
        let started = Instant::now();
        let read = store.read_log(position, batch).await.context("reading the log")?;
        let read_at = Instant::now();
        let Some(last) = read.last().map(|event| event.log_position) else {
            bail!("the log ended at {position}, short of the head {head}");
        };
        projection.apply_batch(&read).await.context("applying a batch")?;
        let applied_at = Instant::now();
        reading += read_at - started;
        applying += applied_at - read_at;
        batches.push(applied_at - started);
        events += read.len();
        position = last;
    }
    Ok((events, reading, applying, batches))
}

/// One dumped value as COPY's text format writes it.
fn copy_text(value: &DumpValue, line: &mut String) {
    match value {
        DumpValue::Null => line.push_str("\\N"),
        DumpValue::Int(value) => line.push_str(&value.to_string()),
        DumpValue::Bool(value) => line.push_str(if *value { "t" } else { "f" }),
        DumpValue::Uuid(value) => line.push_str(&value.hyphenated().to_string()),
        DumpValue::Time(value) => line.push_str(&rfc3339(value)),
        DumpValue::Text(value) => {
            for character in value.chars() {
                match character {
                    '\\' => line.push_str("\\\\"),
                    '\t' => line.push_str("\\t"),
                    '\n' => line.push_str("\\n"),
                    '\r' => line.push_str("\\r"),
                    other => line.push(other),
                }
            }
        }
    }
}

/// Microseconds, as Postgres keeps them and as the SQLite migration stores
/// times (text order is time order).
fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The baseline: every row of `dump` written into the emptied tables in one
/// transaction, with the backend's fastest plain bulk path.
async fn bulk_load(database: &Database, dump: &RegistryDump) -> anyhow::Result<()> {
    match database {
        Database::Postgres(pool) => {
            let mut transaction = pool.begin().await.context("beginning the copy")?;
            for table in &dump.tables {
                if table.rows.is_empty() {
                    continue;
                }
                let mut data = String::new();
                for row in &table.rows {
                    for (index, value) in row.iter().enumerate() {
                        if index > 0 {
                            data.push('\t');
                        }
                        copy_text(value, &mut data);
                    }
                    data.push('\n');
                }
                let statement = format!("COPY {} ({}) FROM STDIN", table.table, table.columns.join(", "));
                let mut copy = transaction
                    .copy_in_raw(&statement)
                    .await
                    .with_context(|| format!("starting the copy into {}", table.table))?;
                copy.send(data.as_bytes())
                    .await
                    .with_context(|| format!("copying into {}", table.table))?;
                let copied = copy
                    .finish()
                    .await
                    .with_context(|| format!("finishing the copy into {}", table.table))?;
                if copied != table.rows.len() as u64 {
                    bail!("copied {copied} of {} rows into {}", table.rows.len(), table.table);
                }
            }
            transaction.commit().await.context("committing the copy")?;
        }
        Database::Sqlite(pool) => {
            let mut transaction = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .context("beginning the insert")?;
            for table in &dump.tables {
                let columns = table.columns.len().max(1);
                let rows_per_statement = (SQLITE_MAX_PARAMETERS / columns).max(1);
                for chunk in table.rows.chunks(rows_per_statement) {
                    let placeholders = format!("({})", vec!["?"; columns].join(", "));
                    let sql = format!(
                        "INSERT INTO {} ({}) VALUES {}",
                        table.table,
                        table.columns.join(", "),
                        vec![placeholders; chunk.len()].join(", ")
                    );
                    let mut query = sqlx::query(&sql);
                    for value in chunk.iter().flatten() {
                        query = match value {
                            DumpValue::Null => query.bind(None::<String>),
                            DumpValue::Int(value) => query.bind(*value),
                            DumpValue::Bool(value) => query.bind(*value),
                            DumpValue::Uuid(value) => query.bind(value.hyphenated().to_string()),
                            DumpValue::Time(value) => query.bind(rfc3339(value)),
                            DumpValue::Text(value) => query.bind(value.clone()),
                        };
                    }
                    let inserted = query
                        .execute(&mut *transaction)
                        .await
                        .with_context(|| format!("inserting into {}", table.table))?;
                    if inserted.rows_affected() != chunk.len() as u64 {
                        bail!(
                            "inserted {} of {} rows into {}",
                            inserted.rows_affected(),
                            chunk.len(),
                            table.table
                        );
                    }
                }
            }
            transaction.commit().await.context("committing the insert")?;
        }
    }
    Ok(())
}

async fn measure_backend(
    backend: Backend,
    postgres_url: Option<&str>,
    workload: Workload,
    batches: &[usize],
) -> anyhow::Result<Vec<Measurement>> {
    let run = RunDatabase::open(backend, postgres_url, 8).await?;
    let database = run.database.clone();
    let store = database.event_store();
    let built = Instant::now();
    let head = build_log(&database, workload).await?;
    let events = usize::try_from(run.event_count().await?).unwrap_or_default();
    let registry = Registry::new(database.clone());
    let live = registry.dump().await.context("dumping the live registry")?;
    let rows = row_count(&live);
    println!(
        "{}: {events} events appended and applied live in {:.1} s; the registry holds {rows} rows",
        backend.name(),
        built.elapsed().as_secs_f64()
    );

    let projection = RegistryProjection::new(database.clone());
    let mut measurements = Vec::new();
    let mut rebuilt = None;
    for &batch in batches {
        let batch = batch.max(1);
        reset(&registry).await?;
        let started = Instant::now();
        let (applied, reading, applying, mut timings) = replay(&*store, &projection, head, batch).await?;
        let elapsed = started.elapsed();
        if applied != events {
            bail!("replay {batch}: applied {applied} of the log's {events} events");
        }
        let dump = registry.dump().await.context("dumping the rebuilt registry")?;
        compare(&format!("replay {batch}"), &dump, &live)?;
        rebuilt = Some(dump);
        timings.sort_unstable();
        measurements.push(Measurement {
            backend,
            mode: Mode::Replay(batch),
            events,
            rows,
            elapsed,
            split: Some((reading, applying)),
            batches: timings,
        });
    }

    let options = RunnerOptions::default();
    let runner_batch = options.batch_size;
    reset(&registry).await?;
    let started = Instant::now();
    let runner = ProjectionRunner::spawn(
        store.clone(),
        Arc::new(RegistryProjection::new(database.clone())),
        options,
    );
    let reached = runner.wait_for(head, HEAD_DEADLINE).await;
    let elapsed = started.elapsed();
    runner.shutdown().await;
    if !reached {
        bail!("the runner did not reach the head {head} in {HEAD_DEADLINE:?}");
    }
    let dump = registry.dump().await.context("dumping the runner's registry")?;
    compare("runner", &dump, &live)?;
    measurements.push(Measurement {
        backend,
        mode: Mode::Runner(runner_batch),
        events,
        rows,
        elapsed,
        split: None,
        batches: Vec::new(),
    });

    // The baseline writes the rebuilt registry's rows, and must give it back.
    let rebuilt = rebuilt.unwrap_or(dump);
    reset(&registry).await?;
    let started = Instant::now();
    bulk_load(&database, &rebuilt).await?;
    let elapsed = started.elapsed();
    let loaded = registry.dump().await.context("dumping the bulk-loaded registry")?;
    compare(&Mode::Baseline.label(backend), &loaded, &rebuilt)?;
    measurements.push(Measurement {
        backend,
        mode: Mode::Baseline,
        events,
        rows: row_count(&rebuilt),
        elapsed,
        split: None,
        batches: Vec::new(),
    });

    drop(store);
    run.close().await?;
    Ok(measurements)
}

fn print_header() {
    println!(
        "{:<9} {:<17} {:>7} {:>7} {:>8} {:>10} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8}",
        "store",
        "mode",
        "events",
        "rows",
        "seconds",
        "events/s",
        "rows/s",
        "read s",
        "apply s",
        "p50 ms",
        "p99 ms",
        "vs bulk"
    );
}

fn print_row(measurement: &Measurement, bulk: f64) {
    let seconds = measurement.elapsed.as_secs_f64();
    let (read, apply) = match measurement.split {
        Some((read, apply)) => (
            format!("{:.2}", read.as_secs_f64()),
            format!("{:.2}", apply.as_secs_f64()),
        ),
        None => ("-".to_string(), "-".to_string()),
    };
    let millis = |fraction| {
        if measurement.batches.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2}",
                percentile(&measurement.batches, fraction).as_secs_f64() * 1_000.0
            )
        }
    };
    println!(
        "{:<9} {:<17} {:>7} {:>7} {:>8.2} {:>10.0} {:>9.0} {:>7} {:>8} {:>9} {:>9} {:>7.1}%",
        measurement.backend.name(),
        measurement.mode.label(measurement.backend),
        measurement.events,
        measurement.rows,
        seconds,
        measurement.rate(),
        measurement.rows as f64 / seconds.max(f64::EPSILON),
        read,
        apply,
        millis(0.50),
        millis(0.99),
        100.0 * measurement.rate() / bulk.max(f64::EPSILON),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workload = Workload {
        tenants: args.tenants.unwrap_or(if args.quick { 4 } else { 20 }).max(1),
        documents: args.documents.unwrap_or(if args.quick { 150 } else { 500 }),
        knowledge_bases: args.knowledge_bases.unwrap_or(5),
    };
    let batches = args.batch.clone().unwrap_or_else(|| vec![500, 2000]);
    let postgres_url = args.postgres_url.as_deref().filter(|url| !url.trim().is_empty());

    let mut backends = vec![Backend::Sqlite];
    match postgres_url {
        Some(_) => backends.push(Backend::Postgres),
        None => println!("postgres skipped: set {TEST_POSTGRES_URL_VAR} or pass --postgres-url to include it"),
    }
    println!(
        "{} run: {} tenants x ({} knowledge bases, {} documents), replay batches {batches:?}",
        if args.quick { "quick" } else { "full" },
        workload.tenants,
        workload.knowledge_bases,
        workload.documents
    );

    let total = Instant::now();
    let mut results = Vec::new();
    for backend in backends {
        results.push(
            measure_backend(backend, postgres_url, workload, &batches)
                .await
                .with_context(|| format!("{} replay", backend.name()))?,
        );
    }
    println!();
    print_header();
    for measurements in &results {
        let bulk = measurements
            .iter()
            .find(|measurement| matches!(measurement.mode, Mode::Baseline))
            .map(Measurement::rate)
            .unwrap_or_default();
        for measurement in measurements {
            print_row(measurement, bulk);
        }
    }
    println!();
    println!(
        "events/s: log events per second to the final registry (for the bulk load: the same rows, \
         written directly); p50/p99: per read + apply batch; total {:.1} s",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}
