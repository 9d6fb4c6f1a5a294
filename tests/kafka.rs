//! NeuroStash with Kafka configured, through the HTTP API: every event the
//! journey appends reaches the topics, and a consumer with nothing but a
//! plain Kafka client and the published schemas (a Python script) reads and
//! validates all of it. Needs the broker and the Python tools the test
//! command provides (`NEUROSTASH_TEST_KAFKA_BROKERS`,
//! `NEUROSTASH_TEST_PYTHONPATH`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{spawn_app_configured, Backend, TestApp};
use neurostash::app::Feed;
use projections::registry::{Registry, RegistryDump, RegistryProjection};
use projections::runtime::Projection;
use serde_json::Value;
use uuid::Uuid;

fn required_env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| panic!("{name} is not set: `bash scripts/test.sh` provides it"))
}

async fn spawn_with_kafka(backend: Backend) -> (TestApp, Vec<String>) {
    let brokers = required_env("NEUROSTASH_TEST_KAFKA_BROKERS");
    let prefix = format!("e2e-{}", Uuid::new_v4().simple());
    let app = spawn_app_configured(backend, |config| {
        config.kafka_brokers = Some(brokers);
        config.kafka_topic_prefix = prefix;
        config.kafka_partitions = 3;
        // the test broker holds a joining member for half of it
        config.kafka_session_timeout_ms = 2_000;
    })
    .await;
    let topics = app.config.kafka().expect("kafka configured").topics().all();
    (app, topics)
}

/// Runs the outside consumer and returns its summary.
fn outside_consumer(brokers: &str, topics: &[String], expect: usize) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(root.join("scripts/cloudevents_consumer.py"))
        .args(["--brokers", brokers, "--topics", &topics.join(",")])
        .arg("--schemas")
        .arg(root.join("schemas/events"))
        .args(["--expect", &expect.to_string(), "--timeout", "60"])
        .env("PYTHONPATH", required_env("NEUROSTASH_TEST_PYTHONPATH"))
        .output()
        .expect("run the outside consumer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "outside consumer printed no summary ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "outside consumer failed: {summary}");
    summary
}

async fn journey_reaches_kafka_and_validates(backend: Backend) {
    let (app, topics) = spawn_with_kafka(backend).await;
    let (_user, key) = app.create_user("kafka@example.com").await;
    let kb = app.create_knowledge_base(&key, "on kafka").await;
    let mut documents = Vec::new();
    for (name, text) in [
        (
            "backups.md",
            "# Backups\nWe back the database up every night to cold storage.",
        ),
        ("cats.txt", "The cat sat on the mat and purred all afternoon."),
    ] {
        let (status, body) = app.upload(&key, name, text, Some(&kb)).await;
        assert_eq!(status, 202, "upload {name}: {body}");
        documents.push(body["id"].as_str().unwrap().to_owned());
    }
    for document in &documents {
        let processed = app.wait_processed(&key, document).await;
        assert_eq!(processed["status"], "SUCCESS", "{processed}");
    }

    // the schemas the API serves are the ones the consumer validates with
    let (status, served) = app.get("/v1/schemas/events", &key).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served, bus::schemas::catalogue());
    assert!(served["events"]["urn:neurostash:schema:document.DocumentProcessed:v1"].is_object());

    let log = app.published_log().await;

    let brokers = required_env("NEUROSTASH_TEST_KAFKA_BROKERS");
    let summary = outside_consumer(&brokers, &topics, log.len());
    assert_eq!(summary["invalid"], Value::Array(vec![]), "{summary}");
    let seen: BTreeSet<String> = summary["event_ids"]
        .as_array()
        .expect("event ids")
        .iter()
        .map(|id| id.as_str().expect("an id").to_owned())
        .collect();
    let logged: BTreeSet<String> = log.iter().map(|event| event.event_id.to_string()).collect();
    assert_eq!(
        seen, logged,
        "every event of the log, and nothing else, is on the topics"
    );
    // `audit tail` reads the same stream from the topics
    let tail = Command::new(env!("CARGO_BIN_EXE_neurostash"))
        .args(["audit", "tail", "--json"])
        .env("NEUROSTASH_KAFKA_BROKERS", &brokers)
        .env("NEUROSTASH_KAFKA_TOPIC_PREFIX", &app.config.kafka_topic_prefix)
        .env("NEUROSTASH_DATA_DIR", &app.config.data_dir)
        .output()
        .expect("run audit tail");
    assert!(
        tail.status.success(),
        "audit tail: {}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let tailed: BTreeSet<String> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("a json line per event");
            event["event_id"].as_str().expect("event id").to_owned()
        })
        .collect();
    assert_eq!(tailed, logged, "audit tail on kafka shows every event once");
    let processed = Command::new(env!("CARGO_BIN_EXE_neurostash"))
        .args(["audit", "tail", "--type", "DocumentProcessed"])
        .env("NEUROSTASH_KAFKA_BROKERS", &brokers)
        .env("NEUROSTASH_KAFKA_TOPIC_PREFIX", &app.config.kafka_topic_prefix)
        .env("NEUROSTASH_DATA_DIR", &app.config.data_dir)
        .output()
        .expect("run audit tail");
    let lines = String::from_utf8_lossy(&processed.stdout).lines().count();
    assert_eq!(lines, 2, "one DocumentProcessed per document");
    for event_type in [
        "neurostash.tenant.TenantRegistered",
        "neurostash.knowledge_base.KnowledgeBaseCreated",
        "neurostash.document.DocumentRegistered",
        "neurostash.document.DocumentProcessed",
    ] {
        assert!(
            summary["types"][event_type].as_u64().unwrap_or(0) > 0,
            "{event_type} in {summary}"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journey_reaches_kafka_and_validates_on_sqlite() {
    journey_reaches_kafka_and_validates(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journey_reaches_kafka_and_validates_on_postgres() {
    journey_reaches_kafka_and_validates(Backend::Postgres).await;
}

/// Runs a journey on a Kafka-fed registry and returns the app with the
/// registry's entities as Kafka built them.
async fn journey_on_kafka(backend: Backend) -> (TestApp, RegistryDump) {
    let (app, _topics) = spawn_with_kafka(backend).await;
    assert!(
        matches!(app.app.registry_feed, Feed::Kafka(_)),
        "with kafka configured the registry consumes the topics"
    );
    let (_user, key) = app.create_user("fed@example.com").await;
    let kb = app.create_knowledge_base(&key, "fed by kafka").await;
    let (status, body) = app
        .upload(&key, "notes.md", "# Notes\nKafka feeds the registry.", Some(&kb))
        .await;
    assert_eq!(status, 202, "{body}");
    let document = body["id"].as_str().unwrap().to_owned();
    // read-your-writes holds on a registry fed by kafka too
    let (status, listed) = app.get(&format!("/v1/knowledge-bases/{kb}/documents"), &key).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
    let (status, body) = app
        .upload(
            &key,
            "weather.txt",
            "Rain is expected all week in the valley.",
            Some(&kb),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let other = body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &document).await["status"], "SUCCESS");
    assert_eq!(app.wait_processed(&key, &other).await["status"], "SUCCESS");
    app.wait_registry().await;
    // the node-local vector index is fed from the topics too
    assert!(matches!(app.app.vector_feed, Feed::Kafka(_)));
    app.wait_indexed().await;
    let (status, found) = app.search(&key, &kb, "what feeds the registry", 2).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["hits"][0]["file_name"], "notes.md", "{found}");
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(2), "{found}");
    let dump = app.app.registry.dump().await.expect("dump").entities();
    (app, dump)
}

/// The registry as a replay of the log in its own order builds it, in the
/// same database once the app is stopped.
async fn replayed_from_the_log(app: &TestApp) -> RegistryDump {
    let log = app.published_log().await;
    let database = actors::db::Database::connect(&app.config.database_url(), &Default::default())
        .await
        .expect("database reopens");
    let registry = Registry::new(database.clone());
    registry.reset().await.expect("reset");
    RegistryProjection::new(database.clone())
        .apply_batch(&log)
        .await
        .expect("replay the log");
    let dump = registry.dump().await.expect("dump").entities();
    database.close().await;
    dump
}

async fn the_registry_built_from_kafka_equals_a_replay_of_the_log(backend: Backend) {
    let (app, from_kafka) = journey_on_kafka(backend).await;
    assert!(from_kafka
        .tables
        .iter()
        .any(|table| table.table == "documents_registry" && table.rows.len() == 2));
    let log_length = app.published_log().await.len();
    let consumed = match &app.app.registry_feed {
        Feed::Kafka(consumer) => consumer.progress(),
        Feed::Log(_) | Feed::Elsewhere => unreachable!("checked above"),
    };
    assert!(
        consumed.delivered >= log_length as u64,
        "{consumed:?} for {log_length} events"
    );
    app.app.shutdown().await;
    assert_eq!(replayed_from_the_log(&app).await, from_kafka);
}

/// Offsets set back to the start make the group read everything again;
/// every event is recognised as applied and nothing changes.
async fn redelivering_every_event_changes_nothing(backend: Backend) {
    let (app, before) = journey_on_kafka(backend).await;
    let published = app.published_log().await.len() as u64;
    let database = app.app.database.clone();
    let app = {
        app.app.shutdown().await;
        let rewound = match &database {
            actors::db::Database::Sqlite(pool) => {
                sqlx::query("DELETE FROM projection_offsets WHERE projection = 'registry'")
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            }
            actors::db::Database::Postgres(pool) => {
                sqlx::query("DELETE FROM projection_offsets WHERE projection = 'registry'")
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            }
        }
        .expect("rewind the offsets");
        assert!(rewound > 0, "the consumer had stored offsets");
        app.restart().await
    };
    let Feed::Kafka(consumer) = &app.app.registry_feed else {
        panic!("kafka feed after restart")
    };
    assert!(
        consumer
            .wait_until(Duration::from_secs(60), |progress| progress.delivered >= published)
            .await,
        "the rewound consumer read the topics again: {:?}",
        consumer.progress()
    );
    let after = app.app.registry.dump().await.expect("dump").entities();
    assert_eq!(after, before);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_built_from_kafka_equals_a_replay_of_the_log_on_sqlite() {
    the_registry_built_from_kafka_equals_a_replay_of_the_log(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_built_from_kafka_equals_a_replay_of_the_log_on_postgres() {
    the_registry_built_from_kafka_equals_a_replay_of_the_log(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivering_every_event_changes_nothing_on_sqlite() {
    redelivering_every_event_changes_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivering_every_event_changes_nothing_on_postgres() {
    redelivering_every_event_changes_nothing(Backend::Postgres).await;
}

/// The broker goes away during ingest (SIGSTOP: alive but silent, like a
/// broker behind a partition): the API still accepts every upload, and
/// once the broker is back everything reaches the topics, the registry and
/// the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_goes_on_while_the_broker_is_away() {
    let broker = bus::testing::ScriptBroker::start();
    let brokers = broker.brokers().to_string();
    let app = spawn_app_configured(Backend::Postgres, |config| {
        config.kafka_brokers = Some(brokers);
        config.kafka_topic_prefix = format!("outage-{}", Uuid::new_v4().simple());
        config.kafka_partitions = 3;
        config.kafka_session_timeout_ms = 2_000;
        // a write does not wait long for a registry that cannot hear it
        config.read_your_writes_timeout_ms = 300;
    })
    .await;
    let (_user, key) = app.create_user("outage@example.com").await;
    let kb = app.create_knowledge_base(&key, "through an outage").await;

    broker.pause();
    let mut documents = Vec::new();
    for index in 0..4 {
        let text = format!("Written while the broker was away, part {index}.");
        let (status, body) = app.upload(&key, &format!("away-{index}.txt"), &text, Some(&kb)).await;
        assert_eq!(status, 202, "the api accepts uploads without the broker: {body}");
        documents.push(body["id"].as_str().unwrap().to_owned());
    }
    assert!(
        app.app.outbox.backlog().await.expect("backlog") > 0,
        "the events wait in the outbox"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.resume();

    // the registry learns of the uploads once the broker is back
    app.wait_registry().await;
    for document in &documents {
        assert_eq!(app.wait_processed(&key, document).await["status"], "SUCCESS");
    }
    app.wait_registry().await;
    let (status, listed) = app.get(&format!("/v1/knowledge-bases/{kb}/documents"), &key).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(4), "{listed}");
    assert_eq!(app.app.outbox.backlog().await.expect("backlog"), 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schemas_need_an_api_key() {
    let app = common::spawn_app(Backend::Sqlite).await;
    let response = app
        .client
        .get(app.url("/v1/schemas/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    app.shutdown().await;
}
