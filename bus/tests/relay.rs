//! The outbox relay against a real Kafka-protocol broker (the test command
//! starts one and exports `NEUROSTASH_TEST_KAFKA_BROKERS`) and real
//! databases, SQLite and Postgres. Each test writes to topics of its own
//! prefix, so tests sharing the broker never see each other's messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::db::{fresh_postgres, test_postgres_url, ConnectOptions, Database, TEST_POSTGRES_URL_VAR};
use actors::store::{EventStore, ExpectedVersion, NewEvent, Outbox};
use bus::relay::Round;
use bus::testing::ScriptBroker;
use bus::{CloudEvent, KafkaSettings, OutboxRelay, RelayOptions};
use domain::{EventMetadata, StreamId, TenantId};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use uuid::Uuid;

const BROKERS_VAR: &str = "NEUROSTASH_TEST_KAFKA_BROKERS";
const DEADLINE: Duration = Duration::from_secs(60);

fn brokers() -> String {
    std::env::var(BROKERS_VAR)
        .ok()
        .filter(|brokers| !brokers.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{BROKERS_VAR} is not set: the kafka tests need a broker \
                 (`eval \"$(bash scripts/kafka.sh start)\"` starts one, `bash scripts/test.sh` runs everything)"
            )
        })
}

fn settings_for(brokers: &str) -> KafkaSettings {
    let mut settings = KafkaSettings::new(brokers);
    settings.topic_prefix = format!("test-{}", Uuid::new_v4().simple());
    settings.partitions = 4;
    settings
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

struct TestLog {
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
    database: Database,
    _directory: Option<tempfile::TempDir>,
}

impl TestLog {
    async fn open(backend: Backend) -> TestLog {
        let (database, directory) = match backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", directory.path().join("events.db").display());
                let database = Database::connect(&url, &ConnectOptions::default())
                    .await
                    .expect("sqlite opens");
                (database, Some(directory))
            }
            Backend::Postgres => {
                let admin = test_postgres_url()
                    .unwrap_or_else(|| panic!("{TEST_POSTGRES_URL_VAR} is not set: postgres tests need a server"));
                let (database, _url) = fresh_postgres(&admin).await.expect("fresh postgres database");
                (database, None)
            }
        };
        database.migrate_up().await.expect("migrations apply");
        let (store, outbox) = database.event_log();
        TestLog {
            store,
            outbox,
            database,
            _directory: directory,
        }
    }

    /// Appends `per_stream` events to each of `streams` new document
    /// streams, interleaved; returns the stream ids.
    async fn append(&self, streams: usize, per_stream: usize) -> Vec<StreamId> {
        let ids: Vec<StreamId> = (0..streams)
            .map(|_| StreamId(format!("document-{}", Uuid::new_v4())))
            .collect();
        let tenant = TenantId(Uuid::new_v4());
        for version in 0..per_stream {
            for stream_id in &ids {
                self.store
                    .append(
                        stream_id,
                        ExpectedVersion::Exactly(version as i64),
                        vec![NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "DocumentDeleted".to_string(),
                            schema_version: 1,
                            data: json!({}),
                            metadata: EventMetadata {
                                tenant_id: Some(tenant),
                                actor_key_id: None,
                                correlation_id: Uuid::now_v7(),
                                causation_id: None,
                            },
                        }],
                    )
                    .await
                    .expect("append");
            }
        }
        ids
    }
}

fn relay(settings: &KafkaSettings, log: &TestLog, holder: &str) -> OutboxRelay {
    OutboxRelay::new(
        settings,
        log.outbox.clone(),
        RelayOptions {
            holder: holder.to_string(),
            lease_for: Duration::from_secs(2),
            poll_interval: Duration::from_millis(50),
            ..RelayOptions::default()
        },
    )
    .expect("relay")
}

/// Rounds until the outbox is empty.
async fn drain(relay: &OutboxRelay) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match relay.relay_once().await.expect("relay round") {
            Round::Idle => return,
            Round::Published { .. } => {}
            Round::NotLeader => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        assert!(Instant::now() < deadline, "the outbox did not drain in {DEADLINE:?}");
    }
}

/// A message as read from a topic.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    partition: i32,
    key: String,
    content_type: Option<String>,
    event: CloudEvent,
}

/// Reads every partition of the topics from the start until `count`
/// messages have arrived (the broker's high watermark is not relied on).
fn consume(brokers: &str, topics: &[String], count: usize, partitions: i32) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + DEADLINE;
    let mut received = Vec::new();
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages arrived in {DEADLINE:?}",
            received.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let content_type = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == "content-type")
                .and_then(|header| header.value)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        });
        received.push(Received {
            topic: message.topic().to_string(),
            partition: message.partition(),
            key: String::from_utf8_lossy(message.key().expect("a key")).into_owned(),
            content_type,
            event: CloudEvent::from_json(message.payload().expect("a payload")).expect("a cloudevent"),
        });
    }
    received
}

/// Per stream, the versions in the order they were read.
fn versions_by_stream(received: &[Received]) -> HashMap<String, Vec<i64>> {
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for message in received {
        versions
            .entry(message.event.subject.clone())
            .or_default()
            .push(message.event.streamversion);
    }
    versions
}

async fn every_event_reaches_its_topic_as_a_cloudevent_in_stream_order(backend: Backend) {
    let brokers = brokers();
    let settings = settings_for(&brokers);
    let created = settings.ensure_topics().await.expect("create topics");
    assert_eq!(created.len(), 3, "all three topics are new: {created:?}");
    assert!(
        settings.ensure_topics().await.expect("topics again").is_empty(),
        "existing topics are left alone"
    );
    let log = TestLog::open(backend).await;
    let streams = log.append(12, 5).await;
    let relay = relay(&settings, &log, "relay-a");
    drain(&relay).await;
    assert_eq!(log.outbox.backlog().await.expect("backlog"), 0);

    let topic = settings.topics().for_category("document");
    let received = consume(&brokers, std::slice::from_ref(&topic), 60, settings.partitions);
    // Streams, not the global log: on Postgres a log read stops short while
    // any other test's transaction is open on the server.
    let mut recorded = Vec::new();
    for stream in &streams {
        recorded.extend(log.store.read_stream(stream, 0).await.expect("read_stream"));
    }
    let by_id: HashMap<Uuid, _> = recorded.iter().map(|event| (event.event_id, event)).collect();
    let mut partitions_of_stream: HashMap<String, i32> = HashMap::new();
    for message in &received {
        let event = &message.event;
        let original = by_id.get(&event.id).expect("every message is an event of the log");
        assert_eq!(message.topic, topic);
        assert_eq!(message.key, original.stream_id.as_str(), "keyed by stream id");
        assert_eq!(
            message.content_type.as_deref(),
            Some("application/cloudevents+json; charset=UTF-8")
        );
        assert_eq!(event.specversion, "1.0");
        assert_eq!(event.event_type, "neurostash.document.DocumentDeleted");
        assert_eq!(event.dataschema, "urn:neurostash:schema:document.DocumentDeleted:v1");
        assert_eq!(event.subject, original.stream_id.as_str());
        assert_eq!(event.position, original.log_position.position);
        assert_eq!(event.tenantid, original.metadata.tenant_id.map(|tenant| tenant.0));
        assert_eq!(&event.clone().into_recorded().expect("back to the envelope"), *original);
        let partition = partitions_of_stream
            .entry(event.subject.clone())
            .or_insert(message.partition);
        assert_eq!(*partition, message.partition, "a stream stays on one partition");
    }
    let versions = versions_by_stream(&received);
    assert_eq!(versions.len(), streams.len());
    for stream in &streams {
        assert_eq!(
            versions[stream.as_str()],
            vec![1, 2, 3, 4, 5],
            "{stream} in version order, once"
        );
    }
    log.database.close().await;
}

async fn a_relay_that_dies_between_publishing_and_marking_loses_nothing(backend: Backend) {
    let brokers = brokers();
    let settings = settings_for(&brokers);
    settings.ensure_topics().await.expect("create topics");
    let log = TestLog::open(backend).await;
    let streams = log.append(6, 3).await;

    // The first relay takes the lease, sends everything, and dies before
    // it marks anything: the process is gone, its lease runs out.
    let doomed = relay(&settings, &log, "relay-doomed");
    assert!(log
        .outbox
        .acquire_relay_lease("relay-doomed", chrono::Utc::now(), Duration::from_secs(2))
        .await
        .expect("lease"));
    let pending = log.outbox.pending(1000).await.expect("pending");
    let publication = doomed.publish(&pending).await;
    assert!(publication.failed.is_empty(), "{:?}", publication.failed);
    assert_eq!(publication.markable.len(), 18);
    drop(doomed);
    assert_eq!(log.outbox.backlog().await.expect("backlog"), 18, "nothing was marked");

    // Its successor waits for the lease, then sends everything again.
    let successor = relay(&settings, &log, "relay-successor");
    assert_eq!(successor.relay_once().await.expect("round"), Round::NotLeader);
    drain(&successor).await;
    assert_eq!(log.outbox.backlog().await.expect("backlog"), 0);

    let topic = settings.topics().for_category("document");
    let received = consume(&brokers, &[topic], 36, settings.partitions);
    let versions = versions_by_stream(&received);
    for stream in &streams {
        assert_eq!(
            versions[stream.as_str()],
            vec![1, 2, 3, 1, 2, 3],
            "{stream}: every event arrived, the unmarked ones twice and in order"
        );
    }
    log.database.close().await;
}

macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )+
        }
    };
}

on_both_backends!(
    every_event_reaches_its_topic_as_a_cloudevent_in_stream_order,
    a_relay_that_dies_between_publishing_and_marking_loses_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_publishes_and_a_released_lease_passes_at_once() {
    let brokers = brokers();
    let settings = settings_for(&brokers);
    settings.ensure_topics().await.expect("create topics");
    let log = TestLog::open(Backend::Sqlite).await;
    log.append(2, 2).await;
    let first = relay(&settings, &log, "relay-first");
    let second = relay(&settings, &log, "relay-second");
    assert!(matches!(
        first.relay_once().await.expect("round"),
        Round::Published { marked: 4, failed: 0 }
    ));
    log.append(1, 1).await;
    assert_eq!(second.relay_once().await.expect("round"), Round::NotLeader);
    assert_eq!(log.outbox.backlog().await.expect("backlog"), 1);

    let handle = first.spawn(log.store.appended());
    assert!(
        handle.wait_for_published(1, DEADLINE).await,
        "the running relay publishes"
    );
    handle.shutdown().await;
    log.append(1, 1).await;
    assert!(
        matches!(
            second.relay_once().await.expect("round"),
            Round::Published { marked: 1, .. }
        ),
        "after a clean shutdown the lease is free at once"
    );
    log.database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_while_the_broker_is_away_and_all_arrive_when_it_returns() {
    let broker = ScriptBroker::start();
    let settings = settings_for(broker.brokers());
    settings.ensure_topics().await.expect("create topics");
    let log = TestLog::open(Backend::Postgres).await;
    let handle = relay(&settings, &log, "relay-paused").spawn(log.store.appended());
    let mut streams = log.append(4, 2).await;
    assert!(
        handle.wait_for_published(8, DEADLINE).await,
        "published before the pause"
    );

    broker.pause();
    // The store keeps accepting appends: nothing on the write path waits
    // for Kafka.
    let started = Instant::now();
    streams.extend(log.append(4, 3).await);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "appends did not wait for the broker"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        log.outbox.backlog().await.expect("backlog") > 0,
        "the paused broker acknowledged nothing"
    );
    broker.resume();

    assert!(
        handle.wait_for_published(20, DEADLINE).await,
        "everything published after the pause"
    );
    handle.shutdown().await;
    assert_eq!(log.outbox.backlog().await.expect("backlog"), 0);
    let topic = settings.topics().for_category("document");
    let received = consume(broker.brokers(), &[topic], 20, settings.partitions);
    let versions = versions_by_stream(&received);
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (index, stream) in streams.iter().enumerate() {
        expected.insert(
            stream.as_str().to_string(),
            if index < 4 { vec![1, 2] } else { vec![1, 2, 3] },
        );
    }
    let found: BTreeMap<String, Vec<i64>> = versions.into_iter().collect();
    assert_eq!(found, expected);
    log.database.close().await;
}
