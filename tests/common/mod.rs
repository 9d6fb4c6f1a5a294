//! Test harness: a real NeuroStash on a random port, on a fresh SQLite file
//! or a fresh Postgres database, driven over HTTP.

#![allow(dead_code)]

pub mod corpus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::tenant::Role;
use domain::EventMetadata;
use neurostash::api::users::register_user;
use neurostash::app::{App, Feed};
use neurostash::config::Config;
use poem::listener::{Acceptor, Listener, TcpListener};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub app: Arc<App>,
    pub config: Config,
    server: tokio::task::JoinHandle<()>,
    _data_dir: Arc<tempfile::TempDir>,
}

async fn postgres_url() -> String {
    let admin_url = actors::db::test_postgres_url()
        .expect("NEUROSTASH_TEST_POSTGRES_URL must point at a postgres server (scripts/test.sh starts one)");
    let (_database, url) = actors::db::fresh_postgres(&admin_url)
        .await
        .expect("fresh postgres database");
    url
}

/// Points `config` at the tests' S3 server (`NEUROSTASH_TEST_S3_*`, which
/// `scripts/s3.sh` prints), in a bucket of its own.
pub fn use_test_s3(config: &mut Config) {
    let settings = actors::objects::test_s3_settings().expect(
        "NEUROSTASH_TEST_S3_ENDPOINT, _ACCESS_KEY and _SECRET_KEY must name an S3 server (scripts/test.sh starts one)",
    );
    config.s3_endpoint = Some(settings.endpoint);
    config.s3_bucket = settings.bucket;
    config.s3_access_key = Some(settings.access_key);
    config.s3_secret_key = Some(neurostash::config::Secret::new(settings.secret_key));
}

/// Every object in the configured S3 bucket with its bytes, read through
/// the minio client's own listing.
pub async fn s3_bucket_objects(config: &Config) -> std::collections::BTreeMap<String, Vec<u8>> {
    use actors::objects::ObjectStore;
    use futures::StreamExt;
    use minio::s3::types::ToStream;

    let settings = config.s3().expect("s3 is configured");
    let store = actors::objects::S3ObjectStore::new(&settings).expect("s3 client");
    let mut pages = store
        .client()
        .list_objects(settings.bucket.as_str())
        .expect("bucket name")
        .recursive(true)
        .build()
        .to_stream()
        .await;
    let mut objects = std::collections::BTreeMap::new();
    while let Some(page) = pages.next().await {
        for entry in page.expect("bucket listing").contents {
            let bytes = store.get(&entry.name).await.expect("listed object reads");
            objects.insert(entry.name, bytes);
        }
    }
    objects
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_configured(backend, |_| {}).await
}

/// Like [`spawn_app`], with the test's own changes to the configuration.
pub async fn spawn_app_configured(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut config = Config {
        data_dir: data_dir.path().to_path_buf(),
        postgres_url: match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres_url().await),
        },
        processing_lease_secs: 10,
        chunk_max_tokens: 48,
        chunk_overlap_tokens: 8,
        ..Config::default()
    };
    configure(&mut config);
    let app = App::start(config.clone()).await.expect("app starts");
    let admin = register_user(
        &app.actors,
        &app.key_hasher,
        &app.vault,
        "admin@example.com",
        Role::Admin,
        EventMetadata::system(Uuid::now_v7()),
    )
    .await
    .expect("admin is created");
    app.settle(admin.written).await;
    serve(app, config, admin.token, data_dir).await
}

async fn serve(app: Arc<App>, config: Config, admin_key: String, data_dir: Arc<tempfile::TempDir>) -> TestApp {
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind");
    let address = acceptor.local_addr()[0].as_socket_addr().copied().expect("tcp address");
    let routes = neurostash::api::routes(app.clone());
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(routes).await;
    });
    TestApp {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
        admin_key,
        app,
        config,
        server,
        _data_dir: data_dir,
    }
}

impl TestApp {
    /// Stops the server and every background role, then starts them again
    /// on the same data.
    pub async fn restart(self) -> TestApp {
        self.server.abort();
        let _ = self.server.await;
        self.app.shutdown().await;
        drop(self.app);
        let app = App::start(self.config.clone()).await.expect("app restarts");
        serve(app, self.config, self.admin_key, self._data_dir).await
    }

    /// Like [`TestApp::restart`], with the configuration changed first.
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Config)) -> TestApp {
        configure(&mut self.config);
        self.restart().await
    }

    /// Stops everything, throws away every projection (the registry rows
    /// with their checkpoint, the vector index directory), and starts again:
    /// the projections are rebuilt from position 0 of the log.
    pub async fn rebuild(self) -> TestApp {
        self.server.abort();
        let _ = self.server.await;
        self.app.shutdown().await;
        drop(self.app);
        let database = actors::db::Database::connect(&self.config.database_url(), &Default::default())
            .await
            .expect("database reopens");
        projections::registry::Registry::new(database.clone())
            .reset()
            .await
            .expect("registry is reset");
        database.close().await;
        let vectors = neurostash::app::vector_dir(&self.config);
        if vectors.exists() {
            std::fs::remove_dir_all(&vectors).expect("vector index is removed");
        }
        let app = App::start(self.config.clone()).await.expect("app restarts");
        serve(app, self.config, self.admin_key, self._data_dir).await
    }

    /// Waits until the registry has applied everything in the log.
    pub async fn wait_registry(&self) {
        match &self.app.registry_feed {
            Feed::Log(runner) => {
                let head = self.app.store.log_head().await.expect("log head");
                assert!(
                    runner.wait_for(head, Duration::from_secs(30)).await,
                    "registry did not reach {head}"
                );
            }
            Feed::Elsewhere => panic!("the test app runs its registry projector itself"),
            Feed::Kafka(_) => {
                let mut last_versions: std::collections::BTreeMap<domain::StreamId, i64> = Default::default();
                for event in self.published_log().await {
                    last_versions.insert(event.stream_id, event.stream_version);
                }
                for (stream_id, version) in last_versions {
                    assert!(
                        self.app
                            .registry
                            .wait_for_version(&stream_id, version, Duration::from_secs(30))
                            .await,
                        "registry did not reach version {version} of {stream_id}"
                    );
                }
            }
        }
    }

    /// With Kafka configured: waits until the relay has drained the outbox,
    /// then reads the whole log. The outbox shows every committed event at
    /// once; a read of the log on Postgres may stop short while another
    /// transaction on the server is open, so it is repeated until it holds
    /// everything the relay published.
    pub async fn published_log(&self) -> Vec<actors::store::RecordedEvent> {
        let relay = self
            .app
            .relay
            .as_ref()
            .expect("the relay runs when kafka is configured");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let backlog = self.app.outbox.backlog().await.expect("backlog");
            let log = self
                .app
                .store
                .read_log(domain::LogPosition::START, 100_000)
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

    pub async fn wait_audit(&self) {
        let head = self.app.store.log_head().await.expect("log head");
        assert!(
            self.app
                .audit_feed
                .log_runner()
                .wait_for(head, Duration::from_secs(30))
                .await,
            "audit log did not reach {head}"
        );
    }

    pub async fn shutdown(self) {
        self.server.abort();
        let _ = self.server.await;
        self.app.shutdown().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is sent");
        read(response).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, key, None).await
    }

    /// Creates a user through the API and returns its id and api key.
    pub async fn create_user(&self, email: &str) -> (String, String) {
        let (status, body) = self
            .post("/v1/users", &self.admin_key, json!({ "email": email, "role": "USER" }))
            .await;
        assert_eq!(status, 201, "create user: {body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["api_key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn create_knowledge_base(&self, key: &str, name: &str) -> String {
        let (status, body) = self.post("/v1/knowledge-bases", key, json!({ "name": name })).await;
        assert_eq!(status, 201, "create knowledge base: {body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn upload(
        &self,
        key: &str,
        file_name: &str,
        content: &str,
        knowledge_base: Option<&str>,
    ) -> (u16, Value) {
        self.upload_as(
            key,
            file_name,
            content.as_bytes().to_vec(),
            "text/plain",
            knowledge_base,
        )
        .await
    }

    /// A presigned upload of `content` as `file_name`, start to end: the
    /// request (201), the PUT to its URL (200), then the completion, whose
    /// answer is returned.
    pub async fn upload_presigned(&self, key: &str, file_name: &str, content: &str) -> (u16, Value) {
        let (status, ticket) = self
            .post(
                "/v1/documents/uploads",
                key,
                json!({ "file_name": file_name, "size": content.len() }),
            )
            .await;
        assert_eq!(status, 201, "request upload: {ticket}");
        let put = self
            .client
            .put(ticket["upload_url"].as_str().unwrap())
            .body(content.to_owned())
            .send()
            .await
            .expect("put is sent");
        assert_eq!(put.status(), 200, "put to the upload url");
        let response = self
            .client
            .post(self.url(&format!(
                "/v1/documents/{}/complete",
                ticket["document_id"].as_str().unwrap()
            )))
            .bearer_auth(key)
            .send()
            .await
            .expect("complete is sent");
        read(response).await
    }

    /// Uploads `bytes` as `file_name`, declared as octet-stream (what
    /// `curl -F` sends), so the extension alone says the type.
    pub async fn upload_bytes(
        &self,
        key: &str,
        file_name: &str,
        bytes: Vec<u8>,
        knowledge_base: Option<&str>,
    ) -> (u16, Value) {
        self.upload_as(key, file_name, bytes, "application/octet-stream", knowledge_base)
            .await
    }

    async fn upload_as(
        &self,
        key: &str,
        file_name: &str,
        bytes: Vec<u8>,
        content_type: &str,
        knowledge_base: Option<&str>,
    ) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name(file_name.to_owned())
                .mime_str(content_type)
                .unwrap(),
        );
        if let Some(kb) = knowledge_base {
            form = form.text("knowledge_base_id", kb.to_owned());
        }
        let response = self
            .client
            .post(self.url("/v1/documents"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("upload is sent");
        read(response).await
    }

    /// Polls a document until it leaves PENDING/PROCESSING.
    pub async fn wait_processed(&self, key: &str, document_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(&format!("/v1/documents/{document_id}"), key).await;
            assert_eq!(status, 200, "get document: {body}");
            let state = body["status"].as_str().unwrap_or_default();
            if state == "SUCCESS" || state == "FAILED" {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "document {document_id} still {state} after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a search until the vector index has caught up with `expected` hits' documents.
    pub async fn search(&self, key: &str, kb: &str, query: &str, top_k: u32) -> (u16, Value) {
        self.post(
            &format!("/v1/knowledge-bases/{kb}/search"),
            key,
            json!({ "query": query, "top_k": top_k }),
        )
        .await
    }

    /// Waits until the vector index has applied everything in the log.
    pub async fn wait_indexed(&self) {
        if let Feed::Log(runner) = &self.app.vector_feed {
            let head = self.app.store.log_head().await.expect("log head");
            assert!(
                runner.wait_for(head, Duration::from_secs(30)).await,
                "vector index did not reach {head}"
            );
            return;
        }
        let vectors = self.app.vectors.as_ref().expect("the test app keeps a vector index");
        let mut last_versions: std::collections::BTreeMap<domain::StreamId, i64> = Default::default();
        for event in self.published_log().await {
            if event.stream_id.category() != "tenant" {
                last_versions.insert(event.stream_id, event.stream_version);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (stream_id, version) in last_versions {
            while vectors.applied_version(&stream_id).await < version {
                assert!(
                    Instant::now() < deadline,
                    "vector index did not reach version {version} of {stream_id}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    if status >= 400 {
        assert!(
            content_type.starts_with("application/problem+json"),
            "error {status} is not problem+json ({content_type}): {text}"
        );
    }
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// The built binary on an embedded data dir, whatever the surrounding
/// environment configures.
pub fn embedded_command(data_dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_neurostash"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        // the tests' own model directory is not this binary's
        .env("NEUROSTASH_EMBEDDER", "hashing")
        .env_remove("NEUROSTASH_POSTGRES_URL")
        .env_remove("NEUROSTASH_KAFKA_BROKERS")
        .env_remove("NEUROSTASH_S3_ENDPOINT")
        .env_remove("NEUROSTASH_CONFIG")
        .env_remove("NEUROSTASH_DATA_DIR")
        .env("NEUROSTASH_LOG", "warn");
    command
}
