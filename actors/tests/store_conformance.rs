//! One conformance suite for the event-store port, run against both
//! adapters.
//!
//! Every property is written once as an `async fn(Backend)` and instantiated
//! per backend by `conformance_suite!` at the bottom, so the SQLite and the
//! Postgres adapter are held to exactly the same contract. The Postgres
//! visibility rule (a transaction that commits late is never skipped) has no
//! SQLite counterpart and gets its own module.
//!
//! The Postgres half needs `NEUROSTASH_TEST_POSTGRES_URL`; without it those
//! tests fail rather than pass vacuously.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::db::{fresh_postgres, test_postgres_url, ConnectOptions, Database, TEST_POSTGRES_URL_VAR};
use actors::store::{AppendOutcome, EventStore, ExpectedVersion, NewEvent, Outbox, RecordedEvent, StoreError};
use chrono::Utc;
use domain::{ApiKeyId, EventMetadata, LogPosition, StreamId, TenantId};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::Barrier;
use uuid::Uuid;

/// How many tasks race on one stream; above the pool size of the default
/// options, so the pool is widened to let every one of them reach the
/// database at once.
const RACERS: usize = 16;

/// Pool size for every test database: enough for all racers and writers to
/// hold a connection at the same time.
const POOL_SIZE: u32 = 40;

/// How long a reader may wait for the log to reach an append it knows has
/// committed. Any transaction open on the same Postgres server, in another
/// test's database too, holds the read horizon back for its duration.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated, empty database with one shared store handle on it.
struct TestDatabase {
    database: Database,
    /// Where an independent pool on the same database can connect.
    url: String,
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
    teardown: Teardown,
}

enum Teardown {
    /// The directory holding the SQLite file; removed on drop.
    Sqlite(tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
    },
}

fn postgres_admin_url() -> String {
    test_postgres_url().unwrap_or_else(|| {
        panic!(
            "{TEST_POSTGRES_URL_VAR} is not set: the postgres conformance tests need a server \
             (`eval \"$(bash scripts/postgres.sh start)\"` starts one, `bash scripts/test.sh` runs everything)"
        )
    })
}

fn pool_options() -> ConnectOptions {
    ConnectOptions {
        max_connections: POOL_SIZE,
        max_attempts: 3,
        retry_delay: Duration::from_millis(200),
        ..ConnectOptions::default()
    }
}

async fn open(backend: Backend) -> TestDatabase {
    open_with_pool(backend, POOL_SIZE).await
}

async fn open_with_pool(backend: Backend, pool_size: u32) -> TestDatabase {
    let options = ConnectOptions {
        max_connections: pool_size,
        ..pool_options()
    };
    let (database, url, teardown) = match backend {
        Backend::Sqlite => {
            let directory = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", directory.path().join("events.db").display());
            let database = Database::connect(&url, &options).await.expect("sqlite opens");
            (database, url, Teardown::Sqlite(directory))
        }
        Backend::Postgres => {
            let admin_url = postgres_admin_url();
            let (bootstrap, url) = fresh_postgres(&admin_url).await.expect("fresh postgres database");
            // `fresh_postgres` opens a default-sized pool; the racing tests
            // need every racer inside the database at once.
            bootstrap.close().await;
            let database = Database::connect(&url, &options)
                .await
                .expect("fresh postgres database reopens");
            let name = database_name(&url).to_string();
            (database, url, Teardown::Postgres { admin_url, name })
        }
    };
    database.migrate_up().await.expect("migrations apply");
    let (store, outbox) = database.event_log();
    TestDatabase {
        database,
        url,
        store,
        outbox,
        teardown,
    }
}

fn database_name(url: &str) -> &str {
    let without_query = url.split('?').next().unwrap_or(url);
    without_query.rsplit('/').next().unwrap_or(without_query)
}

impl TestDatabase {
    /// Drops a Postgres test database once its test has passed; a failed
    /// test keeps its database for inspection.
    async fn finish(self) {
        self.database.close().await;
        match self.teardown {
            Teardown::Sqlite(directory) => drop(directory),
            Teardown::Postgres { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

fn new_stream(category: &str) -> StreamId {
    StreamId(format!("{category}-{}", Uuid::new_v4()))
}

fn event(label: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "conformance.happened".to_string(),
        schema_version: 1,
        data: json!({ "label": label }),
        metadata: EventMetadata::system(Uuid::now_v7()),
    }
}

fn events(label: &str, count: usize) -> Vec<NewEvent> {
    (0..count).map(|index| event(&format!("{label}-{index}"))).collect()
}

/// Reads the log after `after` in pages until it has reached `target`.
///
/// A read right after an append may stop short of it on Postgres while any
/// other transaction on the server is still open, so this polls the way a
/// projection does instead of expecting one read to see everything.
async fn read_log_until(store: &dyn EventStore, after: LogPosition, target: LogPosition) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    let mut read = Vec::new();
    let mut last = after;
    while last < target {
        let page = store.read_log(last, 100).await.expect("read_log");
        match page.last() {
            Some(newest) => {
                last = newest.log_position;
                read.extend(page);
            }
            None => {
                assert!(
                    Instant::now() < deadline,
                    "the log did not reach {target} within {CATCH_UP_DEADLINE:?}, stuck at {last}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    read
}

fn assert_strictly_increasing(log: &[RecordedEvent]) {
    for pair in log.windows(2) {
        assert!(
            pair[0].log_position < pair[1].log_position,
            "log positions out of order: {} ({}) then {} ({})",
            pair[0].log_position,
            pair[0].event_id,
            pair[1].log_position,
            pair[1].event_id
        );
    }
}

fn assert_conflict(result: Result<AppendOutcome, StoreError>, stream_id: &StreamId, expected: i64, actual: i64) {
    match result {
        Err(StoreError::Conflict {
            stream_id: conflicting_stream,
            expected: conflict_expected,
            actual: conflict_actual,
        }) => {
            assert_eq!(&conflicting_stream, stream_id);
            assert_eq!(
                (conflict_expected, conflict_actual),
                (expected, actual),
                "conflict versions"
            );
        }
        other => panic!("expected a conflict at {expected} (actual {actual}) on {stream_id}, got {other:?}"),
    }
}

async fn append_then_read_stream_round_trips_every_field(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.as_ref();
    let stream_id = new_stream("roundtrip");
    let tenant = TenantId(Uuid::new_v4());
    let correlation = Uuid::now_v7();
    let written = vec![
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "tenant.registered".to_string(),
            schema_version: 1,
            data: json!({ "email": "ada@example.com", "tags": ["a", "b"], "nested": { "n": 42, "half": 0.5 } }),
            metadata: EventMetadata {
                tenant_id: Some(tenant),
                actor_key_id: Some(ApiKeyId("key_abc".to_string())),
                correlation_id: correlation,
                causation_id: Some(Uuid::now_v7()),
            },
        },
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "tenant.renamed".to_string(),
            // A stored older schema must come back as stored for upcasting.
            schema_version: 3,
            data: json!({ "name": "Zoë \u{1F600} \"quoted\"", "empty": {}, "none": null }),
            metadata: EventMetadata::system(correlation),
        },
        event("third"),
    ];
    let before = Utc::now() - chrono::Duration::seconds(5);

    let outcome = store
        .append(&stream_id, ExpectedVersion::Exactly(0), written.clone())
        .await
        .expect("append to a new stream");
    let after = Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(outcome.stream_version, 3);

    let read = store.read_stream(&stream_id, 0).await.expect("read_stream");
    assert_eq!(read.len(), written.len());
    for ((recorded, sent), version) in read.iter().zip(&written).zip(1..) {
        assert_eq!(recorded.event_id, sent.event_id);
        assert_eq!(recorded.stream_id, stream_id);
        assert_eq!(recorded.stream_version, version);
        assert_eq!(recorded.event_type, sent.event_type);
        assert_eq!(recorded.schema_version, sent.schema_version);
        assert_eq!(recorded.metadata, sent.metadata);
        assert_eq!(recorded.payload, sent.data);
        assert!(
            (before..=after).contains(&recorded.recorded_at),
            "recorded_at {} is not around now",
            recorded.recorded_at
        );
    }
    assert_strictly_increasing(&read);
    assert_eq!(
        outcome.log_position, read[2].log_position,
        "the outcome names the last event"
    );

    let tail = store.read_stream(&stream_id, 2).await.expect("read_stream tail");
    assert_eq!(tail, read[2..].to_vec());
    assert!(store
        .read_stream(&stream_id, 3)
        .await
        .expect("read past the end")
        .is_empty());
    assert!(store
        .read_stream(&new_stream("absent"), 0)
        .await
        .expect("read an absent stream")
        .is_empty());

    let more = store
        .append(&stream_id, ExpectedVersion::Exactly(3), events("more", 2))
        .await
        .expect("append at the current version");
    assert_eq!(more.stream_version, 5);
    let versions: Vec<i64> = store
        .read_stream(&stream_id, 0)
        .await
        .expect("read_stream")
        .iter()
        .map(|recorded| recorded.stream_version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);

    // The log decodes the same rows the same way.
    let log = read_log_until(store, LogPosition::START, more.log_position).await;
    assert_eq!(log[..3].to_vec(), read);
    test.finish().await;
}

async fn a_stale_expected_version_conflicts_and_writes_nothing(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.as_ref();
    let stream_id = new_stream("stale");
    let first = store
        .append(&stream_id, ExpectedVersion::Exactly(0), events("first", 2))
        .await
        .expect("first append");
    let before = store.read_stream(&stream_id, 0).await.expect("read_stream");
    let head_before = read_log_until(store, LogPosition::START, first.log_position).await;

    for stale in [0, 1, 3, 7] {
        let result = store
            .append(&stream_id, ExpectedVersion::Exactly(stale), events("stale", 3))
            .await;
        assert_conflict(result, &stream_id, stale, 2);
    }
    let absent = new_stream("absent");
    assert_conflict(
        store
            .append(&absent, ExpectedVersion::Exactly(1), events("absent", 1))
            .await,
        &absent,
        1,
        0,
    );

    assert_eq!(store.read_stream(&stream_id, 0).await.expect("read_stream"), before);
    assert!(store.read_stream(&absent, 0).await.expect("read_stream").is_empty());
    assert_eq!(store.log_head().await.expect("log_head"), first.log_position);
    assert_eq!(
        store.read_log(LogPosition::START, 1_000).await.expect("read_log"),
        head_before
    );
    test.finish().await;
}

async fn any_appends_on_top_of_whatever_the_stream_holds(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.as_ref();
    let stream_id = new_stream("any");
    let created = store
        .append(&stream_id, ExpectedVersion::Any, events("create", 1))
        .await
        .expect("any on a new stream");
    assert_eq!(created.stream_version, 1);
    let extended = store
        .append(&stream_id, ExpectedVersion::Any, events("extend", 2))
        .await
        .expect("any on an existing stream");
    assert_eq!(extended.stream_version, 3);
    let checked = store
        .append(&stream_id, ExpectedVersion::Exactly(3), events("checked", 1))
        .await
        .expect("exactly after any");
    assert_eq!(checked.stream_version, 4);
    let versions: Vec<i64> = store
        .read_stream(&stream_id, 0)
        .await
        .expect("read_stream")
        .iter()
        .map(|recorded| recorded.stream_version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    test.finish().await;
}

async fn an_empty_append_changes_nothing(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.as_ref();
    let stream_id = new_stream("empty");
    let seeded = store
        .append(&stream_id, ExpectedVersion::Exactly(0), events("seed", 2))
        .await
        .expect("seed");
    let empty = store
        .append(&stream_id, ExpectedVersion::Exactly(2), Vec::new())
        .await
        .expect("an empty append at the right version");
    assert_eq!(empty, seeded, "an empty append reports the stream as it is");
    assert_conflict(
        store.append(&stream_id, ExpectedVersion::Exactly(1), Vec::new()).await,
        &stream_id,
        1,
        2,
    );
    assert_eq!(store.read_stream(&stream_id, 0).await.expect("read_stream").len(), 2);
    test.finish().await;
}

/// Many tasks append at the same expected version at the same instant: the
/// concurrency guard must let exactly one through, whatever the interleaving.
async fn racing_appends_at_one_version_let_exactly_one_win(backend: Backend) {
    let test = open(backend).await;
    let stream_id = new_stream("race");
    // Race on a brand-new stream, then again on one that already has events.
    for expected_version in [0, 1] {
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut racers = tokio::task::JoinSet::new();
        for racer in 0..RACERS {
            let store = test.store.clone();
            let barrier = barrier.clone();
            let stream_id = stream_id.clone();
            let candidate = event(&format!("racer-{racer}"));
            racers.spawn(async move {
                barrier.wait().await;
                let result = store
                    .append(
                        &stream_id,
                        ExpectedVersion::Exactly(expected_version),
                        vec![candidate.clone()],
                    )
                    .await;
                (candidate.event_id, result)
            });
        }

        let mut winners = Vec::new();
        while let Some(joined) = racers.join_next().await {
            let (event_id, result) = joined.expect("racer task");
            match result {
                Ok(outcome) => {
                    assert_eq!(outcome.stream_version, expected_version + 1);
                    winners.push(event_id);
                }
                other => assert_conflict(other, &stream_id, expected_version, expected_version + 1),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one racer at version {expected_version} wins");

        let stored = test.store.read_stream(&stream_id, 0).await.expect("read_stream");
        assert_eq!(
            stored.len() as i64,
            expected_version + 1,
            "the stream holds one event per round"
        );
        assert_eq!(stored.last().map(|recorded| recorded.event_id), Some(winners[0]));
    }
    test.finish().await;
}

/// `Any` promises no concurrency check: racing `Any` appends must all land,
/// one after another, however many writers contend for the stream.
async fn racing_any_appends_all_land(backend: Backend) {
    let test = open(backend).await;
    let stream_id = new_stream("race-any");
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = test.store.clone();
        let barrier = barrier.clone();
        let stream_id = stream_id.clone();
        racers.spawn(async move {
            barrier.wait().await;
            store
                .append(&stream_id, ExpectedVersion::Any, events(&format!("racer-{racer}"), 2))
                .await
        });
    }
    let mut final_versions = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let outcome = joined
            .expect("racer task")
            .unwrap_or_else(|error| panic!("an any append failed under contention: {error}"));
        final_versions.push(outcome.stream_version);
    }
    final_versions.sort_unstable();
    let expected: Vec<i64> = (1..=RACERS as i64).map(|round| round * 2).collect();
    assert_eq!(final_versions, expected, "each append took the next two versions");

    let stored = test.store.read_stream(&stream_id, 0).await.expect("read_stream");
    let versions: Vec<i64> = stored.iter().map(|recorded| recorded.stream_version).collect();
    assert_eq!(versions, (1..=2 * RACERS as i64).collect::<Vec<_>>());
    // An append's events stay together in its stream.
    for pair in stored.chunks(2) {
        let racer = |recorded: &RecordedEvent| {
            let label = recorded.payload["label"].as_str().unwrap_or_default().to_string();
            label.rsplit_once('-').map(|(racer, _)| racer.to_string())
        };
        assert_eq!(racer(&pair[0]), racer(&pair[1]), "one append's events are adjacent");
    }
    test.finish().await;
}

/// Writers on many streams at once: the log holds every event exactly once,
/// in strictly increasing position, each stream in version order, and every
/// append's outcome names the position of its last event.
async fn concurrent_appends_to_many_streams_form_one_ordered_log(backend: Backend) {
    const STREAMS: usize = 48;
    const APPENDS_PER_STREAM: usize = 6;
    let test = open(backend).await;
    let barrier = Arc::new(Barrier::new(STREAMS));
    let mut writers = tokio::task::JoinSet::new();
    for stream_index in 0..STREAMS {
        let store = test.store.clone();
        let barrier = barrier.clone();
        writers.spawn(async move {
            let stream_id = new_stream(&format!("many{stream_index}"));
            let mut appended = Vec::new();
            barrier.wait().await;
            let mut version = 0;
            for append_index in 0..APPENDS_PER_STREAM {
                // Batches of one to three events, so appends differ in size.
                let batch = events(
                    &format!("{stream_index}-{append_index}"),
                    1 + (stream_index + append_index) % 3,
                );
                let event_ids: Vec<Uuid> = batch.iter().map(|new_event| new_event.event_id).collect();
                let outcome = store
                    .append(&stream_id, ExpectedVersion::Exactly(version), batch)
                    .await
                    .unwrap_or_else(|error| panic!("append to {stream_id} failed: {error}"));
                version = outcome.stream_version;
                appended.push((event_ids, outcome));
            }
            (stream_id, appended)
        });
    }
    let mut appends = Vec::new();
    while let Some(joined) = writers.join_next().await {
        let (stream_id, stream_appends) = joined.expect("writer task");
        appends.extend(
            stream_appends
                .into_iter()
                .map(|(ids, outcome)| (stream_id.clone(), ids, outcome)),
        );
    }
    let target = appends
        .iter()
        .map(|(_, _, outcome)| outcome.log_position)
        .max()
        .expect("appends were made");
    let written: usize = appends.iter().map(|(_, ids, _)| ids.len()).sum();

    let log = read_log_until(test.store.as_ref(), LogPosition::START, target).await;
    assert_eq!(log.len(), written, "every event once, no more");
    assert_strictly_increasing(&log);
    let distinct: HashSet<Uuid> = log.iter().map(|recorded| recorded.event_id).collect();
    assert_eq!(distinct.len(), written, "no event twice");

    let by_event: BTreeMap<Uuid, &RecordedEvent> = log.iter().map(|recorded| (recorded.event_id, recorded)).collect();
    let mut versions_per_stream: BTreeMap<&StreamId, Vec<i64>> = BTreeMap::new();
    for recorded in &log {
        versions_per_stream
            .entry(&recorded.stream_id)
            .or_default()
            .push(recorded.stream_version);
    }
    assert_eq!(versions_per_stream.len(), STREAMS);
    for (stream_id, versions) in versions_per_stream {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected, "versions of {stream_id} in log order");
    }
    for (stream_id, event_ids, outcome) in &appends {
        let recorded: Vec<&RecordedEvent> = event_ids
            .iter()
            .map(|event_id| *by_event.get(event_id).expect("an appended event is in the log"))
            .collect();
        assert!(recorded.iter().all(|event| &event.stream_id == stream_id));
        let last = recorded.last().expect("appends are not empty");
        assert_eq!(
            last.log_position, outcome.log_position,
            "outcome of an append to {stream_id}"
        );
        assert_eq!(last.stream_version, outcome.stream_version);
    }
    assert_eq!(test.store.log_head().await.expect("log_head"), target);
    test.finish().await;
}

/// Writers on distinct streams never conflict, so however many there are,
/// every append must succeed: contention may slow them down but must not
/// surface as an error (SQLite's busy timeout used to, past a few dozen
/// writers).
async fn many_writers_on_distinct_streams_all_succeed(backend: Backend) {
    const WRITERS: usize = 128;
    const APPENDS_PER_WRITER: usize = 12;
    const EVENTS_PER_APPEND: usize = 8;
    // A connection per writer, so the contention is in the database and
    // not in the pool's queue.
    let test = open_with_pool(backend, WRITERS as u32).await;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = test.store.clone();
        let barrier = barrier.clone();
        writers.spawn(async move {
            let stream_id = new_stream(&format!("crowd{writer}"));
            barrier.wait().await;
            let mut last = LogPosition::START;
            for append_index in 0..APPENDS_PER_WRITER {
                let expected = (append_index * EVENTS_PER_APPEND) as i64;
                let outcome = store
                    .append(
                        &stream_id,
                        ExpectedVersion::Exactly(expected),
                        events(&format!("{writer}-{append_index}"), EVENTS_PER_APPEND),
                    )
                    .await
                    .unwrap_or_else(|error| panic!("append {append_index} to {stream_id} failed: {error}"));
                last = last.max(outcome.log_position);
            }
            last
        });
    }
    let mut target = LogPosition::START;
    while let Some(joined) = writers.join_next().await {
        target = target.max(joined.expect("writer task"));
    }
    let log = read_log_until(test.store.as_ref(), LogPosition::START, target).await;
    assert_eq!(log.len(), WRITERS * APPENDS_PER_WRITER * EVENTS_PER_APPEND);
    test.finish().await;
}

/// A reader tailing the log while writers append must end up with exactly the
/// log a later full read returns: each read a prefix of the later ones, so
/// nothing is skipped and nothing is delivered twice.
async fn a_tailing_reader_never_skips_an_event(backend: Backend) {
    const WRITERS: usize = 16;
    const APPENDS_PER_WRITER: usize = 15;
    let test = open(backend).await;
    let writing = Arc::new(AtomicBool::new(true));

    let reader = {
        let store = test.store.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = LogPosition::START;
            while writing.load(Ordering::Acquire) {
                // An odd page size, so pages end in the middle of appends.
                let page = store.read_log(last, 7).await.expect("read_log while writing");
                match page.last() {
                    Some(newest) => {
                        last = newest.log_position;
                        seen.extend(page);
                    }
                    None => tokio::task::yield_now().await,
                }
            }
            (seen, last)
        })
    };

    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = test.store.clone();
        writers.spawn(async move {
            let stream_id = new_stream(&format!("tail{writer}"));
            let mut last = LogPosition::START;
            for append_index in 0..APPENDS_PER_WRITER {
                let outcome = store
                    .append(
                        &stream_id,
                        ExpectedVersion::Any,
                        events(&format!("{writer}-{append_index}"), 1 + append_index % 2),
                    )
                    .await
                    .unwrap_or_else(|error| panic!("append to {stream_id} failed: {error}"));
                last = last.max(outcome.log_position);
            }
            last
        });
    }
    let mut target = LogPosition::START;
    while let Some(joined) = writers.join_next().await {
        target = target.max(joined.expect("writer task"));
    }
    writing.store(false, Ordering::Release);
    let (mut seen, last) = reader.await.expect("reader task");
    seen.extend(read_log_until(test.store.as_ref(), last, target).await);

    let full = read_log_until(test.store.as_ref(), LogPosition::START, target).await;
    let seen_ids: Vec<Uuid> = seen.iter().map(|recorded| recorded.event_id).collect();
    let full_ids: Vec<Uuid> = full.iter().map(|recorded| recorded.event_id).collect();
    assert_eq!(
        seen_ids.len(),
        full_ids.len(),
        "the tailing reader saw as many events as there are"
    );
    assert_eq!(seen_ids, full_ids, "the tailing reader saw the log in the same order");
    test.finish().await;
}

async fn read_log_pages_resume_exactly_where_they_stopped(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.as_ref();
    let streams: Vec<StreamId> = (0..4).map(|index| new_stream(&format!("page{index}"))).collect();
    // Interleave the streams so the log does not group them.
    let mut target = LogPosition::START;
    for round in 0..5 {
        for stream_id in &streams {
            let outcome = store
                .append(stream_id, ExpectedVersion::Exactly(round), events("page", 1))
                .await
                .expect("append");
            target = outcome.log_position;
        }
    }
    let full = read_log_until(store, LogPosition::START, target).await;
    assert_eq!(full.len(), 20);
    assert_eq!(store.read_log(LogPosition::START, 1_000).await.expect("read_log"), full);

    for limit in [1, 3, 7, 20, 50] {
        let page = store.read_log(LogPosition::START, limit).await.expect("read_log");
        assert_eq!(page, full[..limit.min(full.len())].to_vec(), "first page of {limit}");
    }
    // From every position in the log, paging resumes with the next event.
    for start in 0..full.len() {
        let mut after = full[start].log_position;
        let mut resumed = Vec::new();
        loop {
            let page = store.read_log(after, 3).await.expect("read_log page");
            let Some(newest) = page.last() else { break };
            after = newest.log_position;
            resumed.extend(page);
        }
        assert_eq!(
            resumed,
            full[start + 1..].to_vec(),
            "paging after {}",
            full[start].log_position
        );
    }
    assert!(store.read_log(LogPosition::START, 0).await.expect("limit 0").is_empty());
    let beyond = LogPosition {
        commit: target.commit + 1_000,
        position: target.position + 1_000,
    };
    assert!(store.read_log(beyond, 10).await.expect("read beyond").is_empty());
    test.finish().await;
}

async fn log_head_is_the_last_readable_event(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.as_ref();
    assert_eq!(store.log_head().await.expect("log_head"), LogPosition::START);
    assert!(store
        .read_log(LogPosition::START, 10)
        .await
        .expect("read_log")
        .is_empty());

    let first_stream = new_stream("head");
    let second_stream = new_stream("head");
    store
        .append(&first_stream, ExpectedVersion::Exactly(0), events("one", 2))
        .await
        .expect("append");
    let last = store
        .append(&second_stream, ExpectedVersion::Exactly(0), events("two", 3))
        .await
        .expect("append");
    let log = read_log_until(store, LogPosition::START, last.log_position).await;
    let head = store.log_head().await.expect("log_head");
    assert_eq!(head, last.log_position);
    assert_eq!(log.last().map(|recorded| recorded.log_position), Some(head));
    assert!(store.read_log(head, 10).await.expect("read after head").is_empty());
    test.finish().await;
}

/// Appends large enough to need several insert statements stay contiguous.
async fn a_batch_larger_than_one_statement_stays_in_order(backend: Backend) {
    const BATCH: usize = 2_345;
    let test = open(backend).await;
    let store = test.store.as_ref();
    let stream_id = new_stream("batch");
    let batch = events("bulk", BATCH);
    let event_ids: Vec<Uuid> = batch.iter().map(|new_event| new_event.event_id).collect();
    let outcome = store
        .append(&stream_id, ExpectedVersion::Exactly(0), batch)
        .await
        .expect("large append");
    assert_eq!(outcome.stream_version, BATCH as i64);

    let stored = store.read_stream(&stream_id, 0).await.expect("read_stream");
    assert_eq!(
        stored.iter().map(|recorded| recorded.event_id).collect::<Vec<_>>(),
        event_ids
    );
    assert_eq!(
        stored
            .iter()
            .map(|recorded| recorded.stream_version)
            .collect::<Vec<_>>(),
        (1..=BATCH as i64).collect::<Vec<_>>()
    );
    assert_strictly_increasing(&stored);
    assert_eq!(
        stored.last().map(|recorded| recorded.log_position),
        Some(outcome.log_position)
    );
    let log = read_log_until(store, LogPosition::START, outcome.log_position).await;
    assert_eq!(log, stored);
    test.finish().await;
}

async fn appended_wakes_a_waiting_consumer(backend: Backend) {
    let test = open(backend).await;
    let store = test.store.clone();
    let notify = store.appended();
    let notified = notify.notified();
    tokio::pin!(notified);
    // Registered before the append: `notify_waiters` wakes only those
    // already waiting, which is exactly how a consumer loop uses it.
    notified.as_mut().enable();

    let stream_id = new_stream("notify");
    store
        .append(&stream_id, ExpectedVersion::Exactly(0), events("wake", 1))
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("appended() fires after an append");

    // Every call hands out the same signal.
    let second_waiter = store.appended();
    let waiting = second_waiter.notified();
    tokio::pin!(waiting);
    waiting.as_mut().enable();
    store
        .append(&stream_id, ExpectedVersion::Any, events("wake again", 1))
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("appended() fires for every append");
    test.finish().await;
}

/// Every append leaves one outbox row per event, in the same transaction:
/// the relay sees each event exactly once until it is marked, in log order.
async fn every_appended_event_waits_in_the_outbox_until_marked(backend: Backend) {
    let test = open(backend).await;
    let (store, outbox) = (test.store.as_ref(), test.outbox.as_ref());
    let first = new_stream("outbox");
    let second = new_stream("outbox");
    store
        .append(&first, ExpectedVersion::Exactly(0), events("a", 3))
        .await
        .expect("append");
    store
        .append(&second, ExpectedVersion::Exactly(0), events("b", 2))
        .await
        .expect("append");
    let last = store
        .append(&first, ExpectedVersion::Exactly(3), events("c", 1))
        .await
        .expect("append");
    let stale = store
        .append(&second, ExpectedVersion::Exactly(0), events("stale", 1))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{stale:?}");

    assert_eq!(
        outbox.backlog().await.expect("backlog"),
        6,
        "a refused append leaves no row"
    );
    let pending = outbox.pending(100).await.expect("pending");
    let log = read_log_until(store, LogPosition::START, last.log_position).await;
    assert_eq!(
        pending.iter().map(|event| event.event_id).collect::<Vec<_>>(),
        log.iter().map(|event| event.event_id).collect::<Vec<_>>(),
        "the outbox holds the log's events, in its order"
    );
    assert_eq!(pending, log, "pending events carry every field of the log");

    // A page of the outbox is a prefix of it: per stream, oldest first.
    let page = outbox.pending(2).await.expect("pending page");
    assert_eq!(page, log[..2].to_vec());
    let marked: Vec<i64> = page.iter().map(|event| event.log_position.position).collect();
    assert_eq!(outbox.mark_published(&marked).await.expect("mark"), 2);
    assert_eq!(
        outbox.mark_published(&marked).await.expect("mark again"),
        0,
        "marking twice is harmless"
    );
    assert_eq!(outbox.mark_published(&[]).await.expect("mark nothing"), 0);
    let rest = outbox.pending(100).await.expect("pending");
    assert_eq!(rest, log[2..].to_vec());
    let all: Vec<i64> = rest.iter().map(|event| event.log_position.position).collect();
    outbox.mark_published(&all).await.expect("mark the rest");
    assert!(outbox.pending(100).await.expect("pending").is_empty());
    assert_eq!(outbox.backlog().await.expect("backlog"), 0);
    // The log itself keeps everything: the outbox only tracks publishing.
    assert_eq!(
        read_log_until(store, LogPosition::START, last.log_position).await.len(),
        6
    );
    test.finish().await;
}

/// One relay holds the lease at a time; it renews its own, another takes
/// it only once it has expired or been released.
async fn the_relay_lease_has_one_holder_at_a_time(backend: Backend) {
    let test = open(backend).await;
    let outbox = test.outbox.as_ref();
    let now = Utc::now();
    let lease = Duration::from_secs(10);
    assert!(outbox
        .acquire_relay_lease("relay-a", now, lease)
        .await
        .expect("acquire"));
    assert!(!outbox
        .acquire_relay_lease("relay-b", now, lease)
        .await
        .expect("contend"));
    let later = now + chrono::Duration::seconds(5);
    assert!(outbox
        .acquire_relay_lease("relay-a", later, lease)
        .await
        .expect("renew"));
    // Past the first expiry but within the renewed one: still a's.
    let past_first = now + chrono::Duration::seconds(12);
    assert!(!outbox
        .acquire_relay_lease("relay-b", past_first, lease)
        .await
        .expect("contend"));
    let past_renewal = now + chrono::Duration::seconds(16);
    assert!(outbox
        .acquire_relay_lease("relay-b", past_renewal, lease)
        .await
        .expect("take over"));
    assert!(!outbox
        .acquire_relay_lease("relay-a", past_renewal, lease)
        .await
        .expect("old holder"));
    outbox
        .release_relay_lease("relay-a")
        .await
        .expect("release by a non-holder");
    assert!(!outbox
        .acquire_relay_lease("relay-a", past_renewal, lease)
        .await
        .expect("still b's"));
    outbox.release_relay_lease("relay-b").await.expect("release");
    assert!(outbox
        .acquire_relay_lease("relay-a", past_renewal, lease)
        .await
        .expect("after release"));
    test.finish().await;
}

macro_rules! conformance_suite {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )+
        }
    };
}

conformance_suite!(
    append_then_read_stream_round_trips_every_field,
    a_stale_expected_version_conflicts_and_writes_nothing,
    any_appends_on_top_of_whatever_the_stream_holds,
    an_empty_append_changes_nothing,
    racing_appends_at_one_version_let_exactly_one_win,
    racing_any_appends_all_land,
    concurrent_appends_to_many_streams_form_one_ordered_log,
    many_writers_on_distinct_streams_all_succeed,
    a_tailing_reader_never_skips_an_event,
    read_log_pages_resume_exactly_where_they_stopped,
    log_head_is_the_last_readable_event,
    a_batch_larger_than_one_statement_stays_in_order,
    appended_wakes_a_waiting_consumer,
    every_appended_event_waits_in_the_outbox_until_marked,
    the_relay_lease_has_one_holder_at_a_time,
);

/// The Postgres visibility rule of `store/postgres.rs`: rows are ordered by
/// `(commit_id, position)` and a read only returns rows whose transaction id
/// is below its snapshot's xmin. These tests hold a transaction open on a
/// second pool, the way another process's append would be, and check that a
/// reader never moves past it.
mod postgres_visibility {
    use super::*;

    /// An insert exactly as the adapter makes it, in a transaction the test
    /// controls; returns its `(commit_id, position)`.
    async fn insert_uncommitted(
        transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        stream_id: &StreamId,
        event_id: Uuid,
    ) -> LogPosition {
        let (commit, position): (i64, i64) = sqlx::query_as(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, \
             correlation_id) VALUES ($1, 1, $2, 'conformance.late', 1, '{}'::jsonb, $3) \
             RETURNING commit_id::text::bigint, position",
        )
        .bind(stream_id.as_str())
        .bind(event_id)
        .bind(Uuid::now_v7())
        .fetch_one(&mut **transaction)
        .await
        .expect("insert in the open transaction");
        LogPosition { commit, position }
    }

    async fn side_pool(url: &str) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .expect("a second pool on the test database")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_transaction_that_commits_late_is_never_skipped() {
        let test = open(Backend::Postgres).await;
        let store = test.store.as_ref();
        let side = side_pool(&test.url).await;

        let seeded = store
            .append(&new_stream("seed"), ExpectedVersion::Exactly(0), events("seed", 1))
            .await
            .expect("seed");
        let read_so_far = read_log_until(store, LogPosition::START, seeded.log_position).await;
        let reader_at = read_so_far.last().expect("the seed event").log_position;

        // The late transaction takes its id and its position first...
        let late_stream = new_stream("late");
        let late_event = Uuid::now_v7();
        let mut late = side.begin().await.expect("begin");
        let late_position = insert_uncommitted(&mut late, &late_stream, late_event).await;

        // ...then an append that started after it commits first.
        let early_stream = new_stream("early");
        let early = store
            .append(&early_stream, ExpectedVersion::Exactly(0), events("early", 1))
            .await
            .expect("append while another transaction is open");
        assert!(
            early.log_position.position > late_position.position && early.log_position.commit > late_position.commit,
            "setup: the early-committing append {} must follow the open one {late_position}",
            early.log_position
        );

        // A reader following positions alone would return the early event
        // now and later skip the late one, whose position is lower.
        let while_open = store.read_log(reader_at, 100).await.expect("read_log while open");
        assert!(
            while_open.is_empty(),
            "the reader moved past a running transaction: {:?}",
            while_open
                .iter()
                .map(|recorded| recorded.log_position)
                .collect::<Vec<_>>()
        );
        assert_eq!(store.log_head().await.expect("log_head"), reader_at);

        late.commit().await.expect("commit the late transaction");
        let resumed = read_log_until(store, reader_at, early.log_position).await;
        let resumed_ids: Vec<Uuid> = resumed.iter().map(|recorded| recorded.event_id).collect();
        let early_event = store.read_stream(&early_stream, 0).await.expect("read_stream")[0].event_id;
        assert_eq!(
            resumed_ids,
            vec![late_event, early_event],
            "the late commit is delivered, before the append that began after it"
        );
        assert_eq!(resumed[0].log_position, late_position);
        assert!(resumed[0].log_position > reader_at);
        side.close().await;
        test.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rolled_back_transaction_releases_the_reader() {
        let test = open(Backend::Postgres).await;
        let store = test.store.as_ref();
        let side = side_pool(&test.url).await;

        let mut doomed = side.begin().await.expect("begin");
        let doomed_event = Uuid::now_v7();
        insert_uncommitted(&mut doomed, &new_stream("doomed"), doomed_event).await;
        let after = store
            .append(&new_stream("after"), ExpectedVersion::Exactly(0), events("after", 2))
            .await
            .expect("append while another transaction is open");
        assert!(store
            .read_log(LogPosition::START, 100)
            .await
            .expect("read_log")
            .is_empty());

        doomed.rollback().await.expect("roll back");
        let log = read_log_until(store, LogPosition::START, after.log_position).await;
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|recorded| recorded.event_id != doomed_event));
        side.close().await;
        test.finish().await;
    }
    /// The outbox is read by what is still there, not from a cursor: a
    /// transaction that commits after later rows were read and published
    /// still reaches the relay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_outbox_row_that_commits_late_is_still_relayed() {
        let test = open(Backend::Postgres).await;
        let (store, outbox) = (test.store.as_ref(), test.outbox.as_ref());
        let side = side_pool(&test.url).await;

        let late_stream = new_stream("late");
        let late_event = Uuid::now_v7();
        let mut late = side.begin().await.expect("begin");
        let late_position = insert_uncommitted(&mut late, &late_stream, late_event).await;
        sqlx::query("INSERT INTO outbox (position) VALUES ($1)")
            .bind(late_position.position)
            .execute(&mut *late)
            .await
            .expect("outbox row in the open transaction");

        let early = store
            .append(&new_stream("early"), ExpectedVersion::Exactly(0), events("early", 1))
            .await
            .expect("append while another transaction is open");
        let seen = outbox.pending(100).await.expect("pending");
        assert_eq!(seen.len(), 1, "only the committed append is visible");
        assert_eq!(seen[0].log_position, early.log_position);
        outbox
            .mark_published(&[early.log_position.position])
            .await
            .expect("mark");

        late.commit().await.expect("commit the late transaction");
        let after = outbox.pending(100).await.expect("pending");
        assert_eq!(
            after.iter().map(|event| event.event_id).collect::<Vec<_>>(),
            vec![late_event]
        );
        side.close().await;
        test.finish().await;
    }
}
