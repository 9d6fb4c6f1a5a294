//! The distributed deployment on one machine: NeuroStash's roles as
//! separate `neurostash` processes on one Postgres and one Kafka broker,
//! killed with SIGKILL mid-stream. Needs the services the test command
//! starts (`NEUROSTASH_TEST_POSTGRES_URL`, `NEUROSTASH_TEST_KAFKA_BROKERS`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actors::db::{fresh_postgres, test_postgres_url, Database};
use domain::LogPosition;
use projections::registry::{Registry, RegistryProjection};
use projections::runtime::Projection;
use serde_json::{json, Value};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(90);

/// One deployment: the settings every process of it shares.
struct Deployment {
    database_url: String,
    data_dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Deployment {
    async fn new() -> Deployment {
        let admin_url =
            test_postgres_url().expect("NEUROSTASH_TEST_POSTGRES_URL is not set: `bash scripts/test.sh` provides it");
        let brokers = std::env::var("NEUROSTASH_TEST_KAFKA_BROKERS")
            .expect("NEUROSTASH_TEST_KAFKA_BROKERS is not set: `bash scripts/test.sh` provides it");
        let (database, database_url) = fresh_postgres(&admin_url).await.expect("fresh database");
        database.close().await;
        let data_dir = tempfile::tempdir().expect("data dir");
        let env = vec![
            ("NEUROSTASH_POSTGRES_URL", database_url.clone()),
            ("NEUROSTASH_KAFKA_BROKERS", brokers),
            (
                "NEUROSTASH_KAFKA_TOPIC_PREFIX",
                format!("roles-{}", Uuid::new_v4().simple()),
            ),
            ("NEUROSTASH_KAFKA_PARTITIONS", "4".to_string()),
            ("NEUROSTASH_KAFKA_SESSION_TIMEOUT_MS", "2000".to_string()),
            // shared by every node, as a real deployment's would be
            (
                "NEUROSTASH_API_KEY_SECRET",
                "roles-test-secret-of-at-least-32-characters".to_string(),
            ),
            ("NEUROSTASH_DATA_DIR", data_dir.path().display().to_string()),
            ("NEUROSTASH_PROCESSING_LEASE_SECS", "3".to_string()),
            // a write waits this long for a projector that may be dead
            ("NEUROSTASH_READ_YOUR_WRITES_TIMEOUT_MS", "500".to_string()),
            ("NEUROSTASH_LOG", "info".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        Deployment {
            database_url,
            data_dir,
            env,
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.data_dir.path().join(format!("{name}.log"))
    }

    /// Starts `neurostash ARGS`; its stdout and stderr go to files named
    /// after `name`.
    fn start(&self, name: &str, args: &[&str], extra: &[(&str, String)]) -> Node {
        let stdout = std::fs::File::create(self.data_dir.path().join(format!("{name}.out"))).expect("stdout file");
        let stderr = std::fs::File::create(self.log_path(name)).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_neurostash"));
        command
            .args(args)
            // the nodes embed alike whatever model directory the tests have
            .env("NEUROSTASH_EMBEDDER", "hashing")
            .envs(self.env.iter().map(|(name, value)| (name.as_str(), value.as_str())))
            .envs(extra.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command.spawn().expect("start neurostash");
        Node {
            name: name.to_string(),
            child,
            log: self.log_path(name),
            stdout: self.data_dir.path().join(format!("{name}.out")),
        }
    }

    fn start_api(&self, name: &str, roles: &str) -> (Node, String) {
        let port = free_port();
        let node = self.start(
            name,
            &["serve", "--roles", roles],
            &[("NEUROSTASH_BIND", format!("127.0.0.1:{port}"))],
        );
        (node, format!("http://127.0.0.1:{port}"))
    }

    async fn database(&self) -> Database {
        Database::connect(&self.database_url, &Default::default())
            .await
            .expect("database")
    }
}

struct Node {
    name: String,
    child: Child,
    log: PathBuf,
    stdout: PathBuf,
}

impl Node {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the node's log shows `needle`.
    async fn wait_for_log(&mut self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {needle:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The api key the first `serve` prints on stdout.
    async fn first_admin_key(&mut self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let printed = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(key) = printed.lines().find(|line| line.starts_with("ns_")) {
                return key.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no admin key:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn wait_healthy(base: &str) -> Client {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DEADLINE;
        while http.get(format!("{base}/health")).send().await.is_err() {
            assert!(Instant::now() < deadline, "{base} never answered /health");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Client {
            base: base.to_string(),
            http,
        }
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, key: &str, kb: &str, name: &str, text: &str) -> String {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(text.as_bytes().to_vec())
                    .file_name(name.to_string())
                    .mime_str("text/plain")
                    .expect("mime"),
            )
            .text("knowledge_base_id", kb.to_string());
        let response = self
            .http
            .post(format!("{}/v1/documents", self.base))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("upload answer");
        assert_eq!(status, 202, "upload {name}: {body}");
        body["id"].as_str().expect("document id").to_string()
    }

    /// A user and a knowledge base of its own; returns (key, kb id).
    async fn tenant(&self, admin: &str, email: &str) -> (String, String) {
        let deadline = Instant::now() + DEADLINE;
        // the admin key exists once the projector has caught up
        loop {
            let (status, user) = self
                .post("/v1/users", admin, json!({ "email": email, "role": "USER" }))
                .await;
            if status == 201 {
                let key = user["api_key"].as_str().expect("api key").to_string();
                let kb = loop {
                    let (status, kb) = self
                        .post("/v1/knowledge-bases", &key, json!({ "name": "shared" }))
                        .await;
                    if status == 201 {
                        break kb["id"].as_str().expect("kb id").to_string();
                    }
                    assert!(Instant::now() < deadline, "knowledge base not created: {status} {kb}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                return (key, kb);
            }
            assert!(Instant::now() < deadline, "user not created: {status} {user}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every document is SUCCESS (failing on FAILED).
    async fn wait_all_processed(&self, key: &str, documents: &[String]) {
        let deadline = Instant::now() + DEADLINE;
        let mut pending: BTreeSet<&String> = documents.iter().collect();
        while !pending.is_empty() {
            let mut done = Vec::new();
            for document in &pending {
                let (status, body) = self.get(&format!("/v1/documents/{document}"), key).await;
                if status == 200 {
                    match body["status"].as_str() {
                        Some("SUCCESS") => done.push(*document),
                        Some("FAILED") => panic!("document {document} failed: {body}"),
                        _ => {}
                    }
                }
            }
            for document in done {
                pending.remove(document);
            }
            assert!(Instant::now() < deadline, "documents still unprocessed: {pending:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Reads the whole log (repeating while another transaction on the server
/// holds the read horizon back, until two reads agree).
async fn whole_log(database: &Database) -> Vec<actors::store::RecordedEvent> {
    let store = database.event_store();
    let mut previous = usize::MAX;
    loop {
        let log = store.read_log(LogPosition::START, 1_000_000).await.expect("read log");
        if log.len() == previous {
            return log;
        }
        previous = log.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_mid_stream_resumes_and_equals_a_fresh_replay() {
    let deployment = Deployment::new().await;
    let mut projector = deployment.start("projector", &["project"], &[]);
    projector.wait_for_log("roles started").await;
    let (mut api, base) = deployment.start_api("api", "api,process");
    let admin = api.first_admin_key().await;
    let client = Client::wait_healthy(&base).await;
    let (key, kb) = client.tenant(&admin, "ada@example.com").await;

    let mut documents = Vec::new();
    for index in 0..24 {
        if index == 8 {
            // mid-stream: the projector dies without a chance to clean up
            projector.kill();
        }
        if index == 16 {
            projector = deployment.start("projector-again", &["project"], &[]);
        }
        let text = format!("Document {index} is about topic {} and nothing else.", index % 5);
        documents.push(client.upload(&key, &kb, &format!("doc-{index}.txt"), &text).await);
    }
    client.wait_all_processed(&key, &documents).await;
    let (status, listed) = client.get(&format!("/v1/knowledge-bases/{kb}/documents"), &key).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(24), "{listed}");
    api.stop();
    projector.stop();

    let database = deployment.database().await;
    let registry = Registry::new(database.clone());
    let consumed = registry.dump().await.expect("dump").entities();
    let log = whole_log(&database).await;
    registry.reset().await.expect("reset");
    RegistryProjection::new(database.clone())
        .apply_batch(&log)
        .await
        .expect("fresh replay");
    let replayed = registry.dump().await.expect("dump").entities();
    assert_eq!(
        consumed, replayed,
        "the registry the killed projector left equals a fresh replay"
    );
    database.close().await;
}

/// The worker id each ProcessingStarted names, per document.
fn workers_by_document(log: &[actors::store::RecordedEvent]) -> BTreeMap<String, Vec<String>> {
    let mut workers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in log {
        if event.event_type == "ProcessingStarted" {
            let worker = event.payload["worker"].as_str().unwrap_or_default().to_string();
            workers
                .entry(event.stream_id.as_str().to_string())
                .or_default()
                .push(worker);
        }
    }
    workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processors_share_the_work_and_killing_one_loses_nothing() {
    let deployment = Deployment::new().await;
    let (mut api, base) = deployment.start_api("api", "api,project");
    let admin = api.first_admin_key().await;
    let client = Client::wait_healthy(&base).await;
    let mut first = deployment.start("processor-a", &["process"], &[]);
    let mut second = deployment.start("processor-b", &["process"], &[]);
    first.wait_for_log("partitions assigned").await;
    second.wait_for_log("partitions assigned").await;
    let (key, kb) = client.tenant(&admin, "grace@example.com").await;
    let first_worker = format!("worker-{}-", first.pid());
    let second_worker = format!("worker-{}-", second.pid());

    let mut documents = Vec::new();
    for index in 0..16 {
        let text = format!("Shared work item {index} mentions the word {}.", index * 7);
        documents.push(client.upload(&key, &kb, &format!("work-{index}.md"), &text).await);
    }
    client.wait_all_processed(&key, &documents).await;
    let database = deployment.database().await;
    let shared = workers_by_document(&whole_log(&database).await);
    let by_first = shared
        .values()
        .flatten()
        .filter(|worker| worker.starts_with(&first_worker))
        .count();
    let by_second = shared
        .values()
        .flatten()
        .filter(|worker| worker.starts_with(&second_worker))
        .count();
    assert!(
        by_first > 0 && by_second > 0,
        "both processors took documents: {by_first} and {by_second} of {}",
        documents.len()
    );

    // one dies; documents keep coming and all of them still end SUCCESS
    first.kill();
    for index in 16..32 {
        let text = format!("Later work item {index} mentions the word {}.", index * 11);
        documents.push(client.upload(&key, &kb, &format!("work-{index}.md"), &text).await);
    }
    client.wait_all_processed(&key, &documents).await;
    let log = whole_log(&database).await;
    let processed: BTreeMap<String, usize> = log.iter().filter(|event| event.event_type == "DocumentProcessed").fold(
        BTreeMap::new(),
        |mut counts, event| {
            *counts.entry(event.stream_id.as_str().to_string()).or_default() += 1;
            counts
        },
    );
    assert_eq!(processed.len(), documents.len(), "every document processed");
    assert!(
        processed.values().all(|count| *count == 1),
        "each exactly once: {processed:?}"
    );
    let late = workers_by_document(&log);
    let late_by_second = late
        .values()
        .flatten()
        .filter(|worker| worker.starts_with(&second_worker))
        .count();
    assert!(
        late_by_second >= 16,
        "the survivor took over: {late_by_second} documents"
    );
    api.stop();
    second.stop();
    database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_document_loses_its_lease_and_another_finishes_it_exactly_once() {
    let deployment = Deployment::new().await;
    let (mut api, base) = deployment.start_api("api", "api,project");
    let admin = api.first_admin_key().await;
    let client = Client::wait_healthy(&base).await;
    let mut doomed = deployment.start("processor-doomed", &["process"], &[]);
    doomed.wait_for_log("partitions assigned").await;
    let (key, kb) = client.tenant(&admin, "linus@example.com").await;
    let doomed_worker = format!("worker-{}-", doomed.pid());

    // long enough to be embedded in a hundred batches or more
    let text: String = (0..75_000)
        .map(|i| format!("Sentence {i} of a long report about tides and harbours. "))
        .collect();
    let document = client.upload(&key, &kb, "long-report.md", &text).await;
    let stream = format!("document-{document}");
    let database = deployment.database().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = whole_log(&database).await;
        let of_document: Vec<&str> = log
            .iter()
            .filter(|event| event.stream_id.as_str() == stream)
            .map(|event| event.event_type.as_str())
            .collect();
        assert!(
            !of_document.contains(&"DocumentProcessed"),
            "the document was done before the worker could be killed: {of_document:?}"
        );
        if of_document.contains(&"EmbeddingBatchCompleted") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no embedding batch recorded: {of_document:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // mid-document: it holds the lease and has embedded some batches
    doomed.kill();
    let mut rescuer = deployment.start("processor-rescuer", &["process"], &[]);
    client.wait_all_processed(&key, std::slice::from_ref(&document)).await;

    let log = whole_log(&database).await;
    let events: Vec<_> = log.iter().filter(|event| event.stream_id.as_str() == stream).collect();
    let processed = events
        .iter()
        .filter(|event| event.event_type == "DocumentProcessed")
        .count();
    assert_eq!(processed, 1, "processed exactly once");
    let workers: Vec<&str> = events
        .iter()
        .filter(|event| event.event_type == "ProcessingStarted")
        .map(|event| event.payload["worker"].as_str().expect("worker"))
        .collect();
    assert!(
        workers.len() >= 2
            && workers[0].starts_with(&doomed_worker)
            && !workers.last().unwrap().starts_with(&doomed_worker),
        "the dead worker's lease went to another: {workers:?}"
    );
    // the search finds the document the rescuer finished, once the api
    // node's index has loaded its chunks
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, found) = client
            .post(
                &format!("/v1/knowledge-bases/{kb}/search"),
                &key,
                json!({ "query": "Sentence 74999 of a long report", "top_k": 5 }),
            )
            .await;
        assert_eq!(status, 200, "{found}");
        let hits = found["hits"].as_array().unwrap();
        if !hits.is_empty() {
            assert!(
                hits.iter().all(|hit| hit["document_id"] == document.as_str()),
                "{found}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the document is not searchable: {found}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.stop();
    rescuer.stop();
    database.close().await;
}
