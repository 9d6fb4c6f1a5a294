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
use std::time::{Duration, Instant};

use common::{spawn_app_configured, Backend, TestApp};
use domain::LogPosition;
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

/// Waits until the relay has drained the outbox, then reads the whole log.
/// The outbox shows every committed event at once; a read of the log on
/// Postgres may stop short while another transaction on the server is
/// open, so it is repeated until it holds everything the relay published.
async fn published_log(app: &TestApp) -> Vec<actors::store::RecordedEvent> {
    let relay = app.app.relay.as_ref().expect("the relay runs when kafka is configured");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let backlog = app.app.outbox.backlog().await.expect("backlog");
        let log = app
            .app
            .store
            .read_log(LogPosition::START, 10_000)
            .await
            .expect("read log");
        if backlog == 0 && log.len() as u64 == relay.progress().published {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not drain the outbox: backlog {backlog}, {:?}, log holds {}",
            relay.progress(),
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    let log = published_log(&app).await;

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
