//! Outbox relay throughput (events/s from the event store's outbox into
//! Kafka) on SQLite and Postgres, beside a baseline measured in the same run:
//! the same CloudEvent messages produced straight from memory.
//!
//! ```text
//! cargo bench --bench relay -- --quick      # small counts, well under a minute
//! cargo bench --bench relay                 # the full run
//! cargo bench --bench relay -- --brokers 127.0.0.1:9092 --postgres-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! Every relay run appends `streams` document streams of `events-per-stream`
//! real document events (registered, processing started, processed, …) into
//! a fresh database (untimed), then times:
//!
//! - `relay B/round`: `OutboxRelay::relay_once` rounds of at most B events
//!   until the outbox is empty: lease, read the pending events, send them,
//!   wait for every acknowledgement, mark them published;
//! - `outbox B/round`: the database half alone, no Kafka: read B pending
//!   events, mark them published, until empty.
//!
//! The baseline needs no database: the CloudEvent messages of the first
//! log, encoded up front, sent by a producer with the relay's own settings
//! (idempotent, `acks=all`, `linger.ms=5`):
//!
//! - `producer all`: every message in flight at once, what broker and client
//!   take at most (run first and again last, to show drift);
//! - `producer B/round`: B messages, wait for all their acknowledgements,
//!   the next B: the relay's Kafka half without the database.
//!
//! In every mode the first event goes alone and untimed (`1st ms`): a new
//! producer pays for its connection, its producer id and the new topic's
//! metadata there, half a second or more on Tansu, which would otherwise
//! swamp the quick run. The rate is that of the remaining events.
//!
//! Each run writes to topics of a prefix of its own, and every run is
//! checked by reading its topic back from the start of every partition
//! until each event id has arrived (the broker's high watermark is not
//! trusted: Tansu's is wrong for multi-message writes). Brokers come from
//! `NEUROSTASH_TEST_KAFKA_BROKERS` or `--brokers`; Postgres runs when
//! `NEUROSTASH_TEST_POSTGRES_URL` or `--postgres-url` names a server.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::crypto::{seal_field, DataKey};
use actors::db::TEST_POSTGRES_URL_VAR;
use actors::store::{EventStore, ExpectedVersion, NewEvent, Outbox, RecordedEvent};
use anyhow::{bail, Context};
use bus::cloudevent::MESSAGE_CONTENT_TYPE;
use bus::relay::Round;
use bus::{CloudEvent, KafkaSettings, OutboxRelay, RelayOptions};
use chrono::Utc;
use clap::Parser;
use domain::document::{ArtifactRef, DocumentEvent, FileName};
use domain::event::EventPayload;
use domain::{DocumentId, EventMetadata, LogPosition, TenantId};
use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::{percentile, Backend, RunDatabase};
use uuid::Uuid;

const BROKERS_VAR: &str = "NEUROSTASH_TEST_KAFKA_BROKERS";
/// How long reading a run's messages back may take.
const VERIFY_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(about = "outbox relay throughput into kafka against a producer sending the same messages from memory")]
struct Args {
    /// Small counts for a smoke run (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Kafka bootstrap servers.
    #[arg(long, env = BROKERS_VAR)]
    brokers: Option<String>,
    /// Postgres server to create the benchmark databases on; without it
    /// only SQLite runs.
    #[arg(long, env = TEST_POSTGRES_URL_VAR)]
    postgres_url: Option<String>,
    /// Document streams appended per run (default 1000 quick, 10000 full).
    #[arg(long)]
    streams: Option<usize>,
    /// Events per stream (default 3: registered, started, processed).
    #[arg(long)]
    events_per_stream: Option<usize>,
    /// Relay batch sizes, one run per value (default 100,500,2000).
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<usize>>,
    /// Partitions of each topic (default 6, as the relay's settings).
    #[arg(long)]
    partitions: Option<i32>,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    ProducerAll,
    ProducerRounds(usize),
    Outbox(usize),
    Relay(usize),
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::ProducerAll => "producer all".to_string(),
            Mode::ProducerRounds(batch) => format!("producer {batch}/round"),
            Mode::Outbox(batch) => format!("outbox {batch}/round"),
            Mode::Relay(batch) => format!("relay {batch}/round"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    streams: usize,
    events_per_stream: usize,
    partitions: i32,
}

impl Workload {
    fn events(self) -> usize {
        self.streams * self.events_per_stream
    }
}

struct Measurement {
    store: &'static str,
    mode: Mode,
    /// Events timed: all but the first.
    events: usize,
    /// The first event alone (connection, producer id, topic metadata).
    first: Duration,
    elapsed: Duration,
    /// One per round (per send for `producer all`: none), sorted.
    rounds: Vec<Duration>,
    /// Messages read back beyond one per event (redeliveries).
    duplicates: usize,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// The events of one document's life: registered, then processing started
/// and finished, and processed again after that when a stream has more.
fn document_events(tenant: TenantId, stream_index: usize, count: usize) -> (DocumentId, Vec<DocumentEvent>) {
    let file_name = format!("quarterly-report-{stream_index:06}-final-reviewed.pdf");
    let document_id = DocumentId::for_file(tenant, &file_name);
    let mut events = vec![DocumentEvent::DocumentRegistered {
        document_id,
        tenant_id: tenant,
        // sealed as the api seals it, so the message has its real size
        file_name: seal_field(
            &DataKey::generate(tenant),
            "file_name",
            FileName::parse(&file_name).expect("a valid file name").as_str(),
        )
        .into(),
        content_type: "application/pdf".to_string(),
        size_bytes: 48_213 + stream_index as u64,
        sha256: format!("{:064x}", stream_index as u128 * 0x9e37_79b9_7f4a_7c15),
        object_key: format!("objects/{}/{}/{file_name}", tenant.0, document_id.0),
        knowledge_base_id: None,
    }];
    let mut attempt = 0;
    while events.len() < count {
        if events.len() % 2 == 1 {
            attempt += 1;
            events.push(DocumentEvent::ProcessingStarted {
                worker: format!("processor-{}-worker-{}", stream_index % 4, stream_index % 2),
                attempt,
                lease_expires_at: Utc::now() + chrono::Duration::seconds(120),
            });
        } else {
            events.push(DocumentEvent::DocumentProcessed {
                artifact: ArtifactRef {
                    object_key: format!("artifacts/{}/{:064x}.nsa", document_id.0, stream_index as u128 + 7),
                    sha256: format!("{:064x}", stream_index as u128 + 7),
                    chunk_count: 12 + (stream_index % 40) as u32,
                    embedder: "hashing-embedder-v1".to_string(),
                    dimensions: 384,
                    embedder_version: None,
                },
            });
        }
    }
    events.truncate(count);
    (document_id, events)
}

fn new_event(tenant: TenantId, event: &DocumentEvent) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event.event_type().to_string(),
        schema_version: domain::SCHEMA_VERSION,
        data: event.to_data(),
        metadata: EventMetadata {
            tenant_id: Some(tenant),
            actor_key_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
        },
    }
}

/// Appends the workload (each stream in two appends: its registration,
/// then the rest, as the API and the processor would), from a few workers.
async fn append_workload(store: Arc<dyn EventStore>, workload: Workload) -> anyhow::Result<()> {
    const WORKERS: usize = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let store = store.clone();
        tasks.spawn(async move {
            let tenant = TenantId::for_email(&format!("tenant-{worker}@example.com"));
            let streams: Vec<(DocumentId, Vec<DocumentEvent>)> = (worker..workload.streams)
                .step_by(WORKERS)
                .map(|stream_index| document_events(tenant, stream_index, workload.events_per_stream))
                .collect();
            for (document_id, events) in &streams {
                store
                    .append(
                        &document_id.stream_id(),
                        ExpectedVersion::Exactly(0),
                        vec![new_event(tenant, &events[0])],
                    )
                    .await
                    .with_context(|| format!("appending the registration of {document_id}"))?;
            }
            for (document_id, events) in &streams {
                if events.len() > 1 {
                    let rest = events[1..].iter().map(|event| new_event(tenant, event)).collect();
                    store
                        .append(&document_id.stream_id(), ExpectedVersion::Exactly(1), rest)
                        .await
                        .with_context(|| format!("appending the processing of {document_id}"))?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("append worker panicked")??;
    }
    Ok(())
}

/// A database holding the workload, every event of it in the outbox.
async fn prepared_database(
    backend: Backend,
    postgres_url: Option<&str>,
    workload: Workload,
) -> anyhow::Result<(RunDatabase, Arc<dyn EventStore>, Arc<dyn Outbox>)> {
    let run = RunDatabase::open(backend, postgres_url, 8).await?;
    let (store, outbox) = run.database.event_log();
    append_workload(store.clone(), workload).await?;
    let events = workload.events() as i64;
    let stored = run.event_count().await?;
    let backlog = outbox.backlog().await.context("reading the outbox backlog")?;
    if stored != events || backlog != events {
        bail!(
            "{}: appended {events} events but the database holds {stored} with {backlog} in the outbox",
            backend.name()
        );
    }
    Ok((run, store, outbox))
}

/// Settings for topics no other run uses.
fn fresh_settings(brokers: &str, partitions: i32) -> KafkaSettings {
    let mut settings = KafkaSettings::new(brokers);
    settings.topic_prefix = format!("bench-{}", Uuid::new_v4().simple());
    settings.partitions = partitions;
    settings.client_id = "neurostash-bench".to_string();
    settings
}

fn document_topic(settings: &KafkaSettings) -> String {
    settings.topics().for_category("document")
}

/// Reads `topic` from the start of every partition until every id of
/// `expected` has arrived; returns how many messages were read beyond one
/// per id. Fails on a message that is not one of them.
fn read_back(brokers: &str, topic: &str, partitions: i32, expected: &HashSet<Uuid>) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the verifying consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .context("assigning a partition")?;
    }
    consumer.assign(&assignment).context("assigning the partitions")?;
    let deadline = Instant::now() + VERIFY_DEADLINE;
    let mut seen = HashSet::with_capacity(expected.len());
    let mut messages = 0usize;
    while seen.len() < expected.len() {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} events arrived on {topic} in {VERIFY_DEADLINE:?}",
                seen.len(),
                expected.len()
            );
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("consuming")?;
        let event = CloudEvent::from_json(message.payload().unwrap_or_default())
            .with_context(|| format!("a message on {topic} is not a cloudevent"))?;
        if !expected.contains(&event.id) {
            bail!("{topic} holds event {} that this run did not send", event.id);
        }
        messages += 1;
        seen.insert(event.id);
    }
    Ok(messages - seen.len())
}

async fn verify(settings: &KafkaSettings, expected: HashSet<Uuid>) -> anyhow::Result<usize> {
    let brokers = settings.brokers.clone();
    let topic = document_topic(settings);
    let partitions = settings.partitions;
    tokio::task::spawn_blocking(move || read_back(&brokers, &topic, partitions, &expected))
        .await
        .context("the verifying consumer panicked")?
}

/// The messages the relay would send for `events`, encoded up front.
struct Messages {
    keys: Vec<String>,
    payloads: Vec<Vec<u8>>,
    ids: HashSet<Uuid>,
}

impl Messages {
    fn of(events: &[RecordedEvent]) -> Messages {
        Messages {
            keys: events
                .iter()
                .map(|event| event.stream_id.as_str().to_string())
                .collect(),
            payloads: events
                .iter()
                .map(|event| CloudEvent::from_recorded(event).to_json())
                .collect(),
            ids: events.iter().map(|event| event.event_id).collect(),
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// What waiting for one delivery gave: `Err` when the producer was dropped.
fn delivered<Canceled>(outcome: Result<OwnedDeliveryResult, Canceled>) -> anyhow::Result<()> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => bail!("kafka refused a message: {error}"),
        Err(_) => bail!("the producer dropped a message"),
    }
}

/// Sends messages `range` of `messages`, waiting for room when the
/// producer's queue is full; returns the deliveries to wait for.
async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    messages: &Messages,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<DeliveryFuture>> {
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some(MESSAGE_CONTENT_TYPE),
    });
    let mut in_flight = Vec::with_capacity(range.len());
    for index in range {
        loop {
            let record = FutureRecord::to(topic)
                .key(messages.keys[index].as_str())
                .payload(messages.payloads[index].as_slice())
                .headers(headers.clone());
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    for delivery in in_flight.drain(..) {
                        delivered(delivery.await)?;
                    }
                }
                Err((error, _)) => bail!("producing a message failed: {error}"),
            }
        }
    }
    Ok(in_flight)
}

async fn measure_producer(
    brokers: &str,
    messages: &Messages,
    mode: Mode,
    partitions: i32,
) -> anyhow::Result<Measurement> {
    let settings = fresh_settings(brokers, partitions);
    settings.ensure_topics().await.context("creating the topics")?;
    let producer = settings.producer().context("creating the producer")?;
    let topic = document_topic(&settings);
    let batch = match mode {
        Mode::ProducerRounds(batch) => batch.max(1),
        _ => messages.len().max(1),
    };
    // The first message alone, untimed: it pays for the connection, the
    // producer id and the new topic's metadata.
    let first = Instant::now();
    for outcome in join_all(send_all(&producer, &topic, messages, 0..1.min(messages.len())).await?).await {
        delivered(outcome)?;
    }
    let first = first.elapsed();
    let mut rounds = Vec::new();
    let started = Instant::now();
    let mut next = 1.min(messages.len());
    while next < messages.len() {
        let end = (next + batch).min(messages.len());
        let round = Instant::now();
        let in_flight = send_all(&producer, &topic, messages, next..end).await?;
        for outcome in join_all(in_flight).await {
            delivered(outcome)?;
        }
        rounds.push(round.elapsed());
        next = end;
    }
    let elapsed = started.elapsed();
    if matches!(mode, Mode::ProducerAll) {
        rounds.clear();
    }
    rounds.sort_unstable();
    let duplicates = verify(&settings, messages.ids.clone()).await?;
    Ok(Measurement {
        store: "-",
        mode,
        events: messages.len().saturating_sub(1),
        first,
        elapsed,
        rounds,
        duplicates,
    })
}

async fn measure_store(
    backend: Backend,
    postgres_url: Option<&str>,
    brokers: &str,
    workload: Workload,
    mode: Mode,
) -> anyhow::Result<Measurement> {
    let (run, store, outbox) = prepared_database(backend, postgres_url, workload).await?;
    let events = workload.events();
    let expected: HashSet<Uuid> = store
        .read_log(LogPosition::START, events + 1)
        .await
        .context("reading the appended log")?
        .iter()
        .map(|event| event.event_id)
        .collect();
    if expected.len() != events {
        bail!("the log holds {} events, {events} were appended", expected.len());
    }
    let settings = fresh_settings(brokers, workload.partitions);
    settings.ensure_topics().await.context("creating the topics")?;
    let mut rounds = Vec::new();
    let mut moved = 0usize;
    let (first, elapsed);
    match mode {
        Mode::Relay(batch) => {
            let relay = OutboxRelay::new(
                &settings,
                outbox.clone(),
                RelayOptions {
                    holder: format!("bench-relay-{}", Uuid::new_v4()),
                    batch_size: batch,
                    ..RelayOptions::default()
                },
            )
            .context("creating the relay")?;
            // The oldest event alone, untimed, as a round of one would move
            // it: it pays for the connection, the producer id and the new
            // topic's metadata.
            let started = Instant::now();
            let oldest = outbox.pending(1).await.context("reading the outbox")?;
            let publication = relay.publish(&oldest).await;
            if let Some((_, reason)) = publication.failed.first() {
                bail!("the first event was not acknowledged: {reason}");
            }
            moved += outbox
                .mark_published(&publication.markable)
                .await
                .context("marking the first event published")? as usize;
            first = started.elapsed();
            let started = Instant::now();
            loop {
                let round = Instant::now();
                match relay.relay_once().await.context("relay round")? {
                    Round::Idle => break,
                    Round::NotLeader => bail!("the relay lost its lease to nobody"),
                    Round::Published { marked, failed } => {
                        if failed > 0 {
                            bail!("{failed} events were not acknowledged by the broker");
                        }
                        moved += marked;
                    }
                }
                rounds.push(round.elapsed());
            }
            elapsed = started.elapsed();
        }
        Mode::Outbox(batch) => {
            // Like the relay's: the oldest event alone, untimed.
            let started = Instant::now();
            let oldest = outbox.pending(1).await.context("reading the outbox")?;
            let positions: Vec<i64> = oldest.iter().map(|event| event.log_position.position).collect();
            moved += outbox
                .mark_published(&positions)
                .await
                .context("marking the first event published")? as usize;
            first = started.elapsed();
            let started = Instant::now();
            loop {
                let round = Instant::now();
                let pending = outbox.pending(batch).await.context("reading the outbox")?;
                if pending.is_empty() {
                    break;
                }
                let positions: Vec<i64> = pending.iter().map(|event| event.log_position.position).collect();
                moved += outbox
                    .mark_published(&positions)
                    .await
                    .context("marking events published")? as usize;
                rounds.push(round.elapsed());
            }
            elapsed = started.elapsed();
        }
        Mode::ProducerAll | Mode::ProducerRounds(_) => bail!("{} needs no database", mode.label()),
    }
    rounds.sort_unstable();
    let backlog = outbox.backlog().await.context("reading the outbox backlog")?;
    if moved != events || backlog != 0 {
        bail!("moved {moved} of {events} events out of the outbox, {backlog} left");
    }
    let duplicates = match mode {
        Mode::Relay(_) => verify(&settings, expected).await?,
        _ => 0,
    };
    run.close().await?;
    Ok(Measurement {
        store: backend.name(),
        mode,
        events: events - 1,
        first,
        elapsed,
        rounds,
        duplicates,
    })
}

fn print_header() {
    println!(
        "{:<9} {:<20} {:>8} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>8} {:>8}",
        "store", "mode", "1st ms", "events", "rounds", "seconds", "events/s", "p50 ms", "p99 ms", "vs all", "vs same"
    );
}

/// `all` and `same` are the producer baselines' rates: every message in
/// flight, and the same round size.
fn print_row(measurement: &Measurement, all: Option<f64>, same: Option<f64>) {
    let ratio = |baseline: Option<f64>| match baseline {
        Some(rate) if rate > 0.0 => format!("{:.0}%", 100.0 * measurement.rate() / rate),
        _ => "-".to_string(),
    };
    let rounds = if measurement.rounds.is_empty() {
        "-".to_string()
    } else {
        measurement.rounds.len().to_string()
    };
    let millis = |fraction| {
        if measurement.rounds.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2}",
                percentile(&measurement.rounds, fraction).as_secs_f64() * 1_000.0
            )
        }
    };
    println!(
        "{:<9} {:<20} {:>8.1} {:>7} {:>7} {:>8.2} {:>10.0} {:>9} {:>9} {:>8} {:>8}{}",
        measurement.store,
        measurement.mode.label(),
        measurement.first.as_secs_f64() * 1_000.0,
        measurement.events,
        rounds,
        measurement.elapsed.as_secs_f64(),
        measurement.rate(),
        millis(0.50),
        millis(0.99),
        ratio(all),
        ratio(same),
        if measurement.duplicates > 0 {
            format!("  ({} duplicates read back)", measurement.duplicates)
        } else {
            String::new()
        }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let brokers = args
        .brokers
        .clone()
        .filter(|brokers| !brokers.trim().is_empty())
        .with_context(|| {
            format!("no kafka broker: set {BROKERS_VAR} or pass --brokers (`bash scripts/kafka.sh start` starts one)")
        })?;
    let workload = Workload {
        streams: args.streams.unwrap_or(if args.quick { 1000 } else { 10_000 }).max(1),
        events_per_stream: args.events_per_stream.unwrap_or(3).max(1),
        partitions: args.partitions.unwrap_or(6).max(1),
    };
    let batches = args.batch.clone().unwrap_or_else(|| vec![100, 500, 2000]);
    let postgres_url = args.postgres_url.as_deref().filter(|url| !url.trim().is_empty());

    let mut backends = vec![Backend::Sqlite];
    match postgres_url {
        Some(_) => backends.push(Backend::Postgres),
        None => println!("postgres skipped: set {TEST_POSTGRES_URL_VAR} or pass --postgres-url to include it"),
    }

    // The baseline's messages: those of a log like every run's, encoded once.
    let total = Instant::now();
    let (sample, sample_store, _) = prepared_database(Backend::Sqlite, None, workload).await?;
    let log = sample_store
        .read_log(LogPosition::START, workload.events() + 1)
        .await
        .context("reading the sample log")?;
    let messages = Messages::of(&log);
    let data_bytes: usize = log.iter().map(|event| event.payload.to_string().len()).sum();
    let message_bytes: usize = messages.payloads.iter().map(Vec::len).sum();
    drop(log);
    sample.close().await?;

    println!(
        "{} run: {} streams x {} document events = {} events, batches {batches:?}, {} partitions, brokers {brokers}",
        if args.quick { "quick" } else { "full" },
        workload.streams,
        workload.events_per_stream,
        workload.events(),
        workload.partitions
    );
    println!(
        "mean event data {} B, mean cloudevent message {} B",
        data_bytes / messages.len().max(1),
        message_bytes / messages.len().max(1)
    );
    println!();
    print_header();

    let first = measure_producer(&brokers, &messages, Mode::ProducerAll, workload.partitions)
        .await
        .context("producer all")?;
    print_row(&first, None, None);
    let all = first.rate();
    let mut same_batch = Vec::new();
    for &batch in &batches {
        let mode = Mode::ProducerRounds(batch.max(1));
        let measurement = measure_producer(&brokers, &messages, mode, workload.partitions)
            .await
            .with_context(|| mode.label())?;
        print_row(&measurement, Some(all), None);
        same_batch.push((batch, measurement.rate()));
    }
    for backend in backends {
        for &(batch, same) in &same_batch {
            for mode in [Mode::Outbox(batch.max(1)), Mode::Relay(batch.max(1))] {
                let measurement = measure_store(backend, postgres_url, &brokers, workload, mode)
                    .await
                    .with_context(|| format!("{} {}", backend.name(), mode.label()))?;
                let same = matches!(mode, Mode::Relay(_)).then_some(same);
                print_row(&measurement, Some(all), same);
            }
        }
    }
    let last = measure_producer(&brokers, &messages, Mode::ProducerAll, workload.partitions)
        .await
        .context("producer all, again")?;
    print_row(&last, Some(all), None);
    println!();
    println!(
        "1st ms: the first event alone, untimed (connection, producer id, topic metadata); events, rounds, \
         seconds: the rest; rounds: relay_once calls (the last, empty one not counted) or producer rounds; \
         vs all / vs same: events/s as a share of producer all / producer with the same round size; \
         total {:.1} s",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}
