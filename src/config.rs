//! Typed configuration: defaults, then an optional TOML file, then
//! `NEUROSTASH_*` environment variables. Validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the embedded database, objects and index dumps live.
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    /// Postgres instead of the embedded SQLite file when set.
    pub postgres_url: Option<String>,
    pub postgres_max_connections: u32,
    /// Secret under which API key secrets are hashed (HMAC-SHA256). When
    /// unset, one is generated once and kept in `<data_dir>/secrets/`.
    #[serde(skip_serializing)]
    pub api_key_secret: Option<Secret>,
    /// The master key that wraps every tenant's data key: 32 bytes as 64
    /// hex characters or base64. Never serialized, never shown by `Debug`.
    #[serde(skip_serializing)]
    pub master_key: Option<Secret>,
    /// A file holding the master key instead (e.g. a mounted secret). With
    /// neither set, one is generated once in `<data_dir>/secrets/master.key`.
    pub master_key_file: Option<PathBuf>,
    pub actor_idle_timeout_secs: u64,
    /// How long a write waits for the registry to show it before answering.
    pub read_your_writes_timeout_ms: u64,
    /// The most bytes of one uploaded file; the multipart body around it
    /// may add 64 KiB of form fields and headers.
    pub max_upload_bytes: usize,
    /// The most bytes of any other request body (JSON): far below the
    /// upload bound, so a route that parses its body whole never holds an
    /// upload's worth of it.
    pub max_json_body_bytes: usize,
    /// How long a presigned upload stays open: its URL is valid that long,
    /// and the upload is cleaned up once it has passed uncompleted.
    pub upload_url_ttl_secs: u64,
    /// How often expired presigned uploads are looked for and cleaned up.
    pub upload_cleanup_interval_secs: u64,
    /// The address clients reach this API at (`https://stash.example.com`),
    /// for the upload URLs it signs itself when the object store cannot
    /// (the local directory). Unset, the request's `Host` is used.
    pub public_url: Option<String>,
    /// Failed authentications from one address within
    /// `auth_failure_window_secs` after which the address is refused (429)
    /// until that window closes.
    pub auth_failure_limit: u32,
    pub auth_failure_window_secs: u64,
    /// How many addresses the count keeps at most; the oldest is forgotten.
    pub auth_failure_sources: usize,
    pub processing_workers: usize,
    pub processing_lease_secs: u64,
    pub processing_max_attempts: u32,
    /// The wait after a failed attempt, doubled after each next one, up to
    /// `processing_retry_max_secs`.
    pub processing_retry_base_ms: u64,
    pub processing_retry_max_secs: u64,
    /// Attempts at a webhook delivery before it is dead (the dead-letter
    /// list); the wait between them starts at `webhook_retry_base_ms` and
    /// doubles up to `webhook_retry_max_secs`.
    pub webhook_max_attempts: u32,
    pub webhook_retry_base_ms: u64,
    pub webhook_retry_max_secs: u64,
    /// How long a receiver may take to answer.
    pub webhook_timeout_secs: u64,
    /// Chunk size and overlap in the embedding model's tokens, for
    /// knowledge bases created without their own; at most what the model
    /// reads (254 for all-MiniLM-L6-v2).
    pub chunk_max_tokens: u32,
    pub chunk_overlap_tokens: u32,
    /// `local`, `openai` or `hashing`. Unset: `local` when a model
    /// directory is there, else `hashing`.
    pub embedder: Option<EmbedderKind>,
    /// all-MiniLM-L6-v2's `model.safetensors`, `config.json` and
    /// `tokenizer.json`. Unset: `<data_dir>/models/all-MiniLM-L6-v2`.
    pub embed_model_dir: Option<PathBuf>,
    /// Threads the local model computes on; 0: one per core.
    pub embed_threads: usize,
    /// An OpenAI-compatible API (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1` for Ollama, vLLM, TEI).
    pub embed_url: Option<String>,
    /// Never serialized, never shown by `Debug`.
    #[serde(skip_serializing)]
    pub embed_api_key: Option<Secret>,
    /// The model the server is asked for.
    pub embed_model: Option<String>,
    /// Asked of models that can shorten their vectors; unset: the model's own.
    pub embed_dimensions: Option<u32>,
    /// Texts per request to the embedding server.
    pub embed_batch_size: usize,
    pub embed_timeout_secs: u64,
    /// Retries of a request that failed in a way that may pass.
    pub embed_max_retries: u32,
    /// The longest input sent to the server, in the tokens of
    /// `embed_tokenizer`, or in word tokens without one.
    pub embed_max_input_tokens: usize,
    /// The served model's `tokenizer.json`, to measure chunks in its tokens.
    pub embed_tokenizer: Option<PathBuf>,
    /// Dimensions of the hashing embedder.
    pub embedding_dimensions: usize,
    /// The most time extracting one file may take; past it the document
    /// fails (`timeout`).
    pub extract_time_budget_secs: u64,
    /// The most bytes a docx, xlsx or pptx may unpack to, and text any file
    /// may extract to; past them the document fails (`too_large`).
    pub extract_max_unpacked_bytes: u64,
    pub extract_max_text_bytes: usize,
    /// Kafka brokers (`host:port,…`); when set, every event is relayed from
    /// the outbox to Kafka.
    pub kafka_brokers: Option<String>,
    /// Topics are `<prefix>.<stream category>`.
    pub kafka_topic_prefix: String,
    /// Partitions of the topics created at start.
    pub kafka_partitions: i32,
    pub kafka_replication_factor: i32,
    /// How soon a consumer group notices a member that died.
    pub kafka_session_timeout_ms: u64,
    /// An S3 endpoint (`http(s)://host:port`); when set, document bytes and
    /// artifacts live in S3 instead of `<data_dir>/objects`.
    pub s3_endpoint: Option<String>,
    /// The bucket, created at start when it is missing.
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_access_key: Option<String>,
    /// Never serialized, never shown by `Debug`.
    #[serde(skip_serializing)]
    pub s3_secret_key: Option<Secret>,
}

/// Which embedder turns chunks into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 in this process, from `embed_model_dir`.
    Local,
    /// An OpenAI-compatible `/v1/embeddings` server at `embed_url`.
    Openai,
    /// Deterministic word hashing: for tests, not a language model.
    Hashing,
}

/// A setting that must not show up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            postgres_url: None,
            postgres_max_connections: 16,
            api_key_secret: None,
            master_key: None,
            master_key_file: None,
            actor_idle_timeout_secs: 300,
            read_your_writes_timeout_ms: 5_000,
            max_upload_bytes: 25 * 1024 * 1024,
            max_json_body_bytes: 64 * 1024,
            upload_url_ttl_secs: 15 * 60,
            upload_cleanup_interval_secs: 60,
            public_url: None,
            auth_failure_limit: 20,
            auth_failure_window_secs: 60,
            auth_failure_sources: 10_000,
            processing_workers: 2,
            processing_lease_secs: 120,
            processing_max_attempts: 3,
            processing_retry_base_ms: 2_000,
            processing_retry_max_secs: 300,
            webhook_max_attempts: 8,
            webhook_retry_base_ms: 1_000,
            webhook_retry_max_secs: 600,
            webhook_timeout_secs: 10,
            chunk_max_tokens: 200,
            chunk_overlap_tokens: 32,
            embedder: None,
            embed_model_dir: None,
            embed_threads: 0,
            embed_url: None,
            embed_api_key: None,
            embed_model: None,
            embed_dimensions: None,
            embed_batch_size: 64,
            embed_timeout_secs: 30,
            embed_max_retries: 4,
            embed_max_input_tokens: 256,
            embed_tokenizer: None,
            embedding_dimensions: 384,
            extract_time_budget_secs: 30,
            extract_max_unpacked_bytes: 256 * 1024 * 1024,
            extract_max_text_bytes: 16 * 1024 * 1024,
            kafka_brokers: None,
            kafka_topic_prefix: "neurostash.events".to_string(),
            kafka_partitions: 6,
            kafka_replication_factor: 1,
            kafka_session_timeout_ms: 10_000,
            s3_endpoint: None,
            s3_bucket: "neurostash".to_string(),
            s3_region: "us-east-1".to_string(),
            s3_access_key: None,
            s3_secret_key: None,
        }
    }
}

/// Bounds of `max_json_body_bytes`.
const MIN_JSON_BODY_BYTES: usize = 16 * 1024;
const MAX_JSON_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {setting} {reason}")]
    Invalid { setting: &'static str, reason: String },
}

/// `NEUROSTASH_` variables that are not settings: the configuration file,
/// the log filter, and the test harness's own.
const NOT_SETTINGS: &[&str] = &[
    "CONFIG",
    "LOG",
    "TEST_POSTGRES_URL",
    "PG_STATE",
    "TEST_KAFKA_BROKERS",
    "KAFKA_STATE",
    "KAFKA_RUST_LOG",
    "TANSU_BIN",
    "TOOLS_DIR",
    "WRITE_SCHEMAS",
    "TEST_PYTHONPATH",
    "FIXTURES_PYTHONPATH",
    "ST_PYTHONPATH",
    "TEST_S3_ENDPOINT",
    "TEST_S3_ACCESS_KEY",
    "TEST_S3_SECRET_KEY",
    "S3_STATE",
    "WEED_BIN",
];

impl Config {
    /// Loads the configuration: defaults < `file` (or `NEUROSTASH_CONFIG`)
    /// < environment.
    pub fn load(file: Option<PathBuf>) -> Result<Config, ConfigError> {
        let file = file.or_else(|| std::env::var_os("NEUROSTASH_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid {
                    setting: "NEUROSTASH_CONFIG",
                    reason: format!("file {} does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        // these NEUROSTASH_ variables are read elsewhere, not settings; any
        // other unknown one is refused, so a misspelt setting is not ignored
        figment = figment.merge(Env::prefixed("NEUROSTASH_").ignore(NOT_SETTINGS));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The model directory to load the local embedder from.
    pub fn model_dir(&self) -> PathBuf {
        self.embed_model_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models").join("all-MiniLM-L6-v2"))
    }

    /// The embedder to use: as set, or the local model when its directory
    /// holds one, or the hashing embedder.
    pub fn embedder_kind(&self) -> EmbedderKind {
        self.embedder.unwrap_or_else(|| {
            if self.model_dir().join("model.safetensors").is_file() {
                EmbedderKind::Local
            } else {
                EmbedderKind::Hashing
            }
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        if let Some(url) = &self.postgres_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "NEUROSTASH_POSTGRES_URL",
                    "must start with postgres:// or postgresql://",
                );
            }
        }
        if let Some(secret) = &self.api_key_secret {
            if secret.expose().len() < 32 {
                return invalid("NEUROSTASH_API_KEY_SECRET", "must be at least 32 characters");
            }
        }
        if let Some(key) = &self.master_key {
            if self.master_key_file.is_some() {
                return invalid(
                    "NEUROSTASH_MASTER_KEY",
                    "set either it or NEUROSTASH_MASTER_KEY_FILE, not both",
                );
            }
            // the parse error names the expected shape, never the value
            if let Err(error) = actors::crypto::MasterKey::parse(key.expose()) {
                return invalid("NEUROSTASH_MASTER_KEY", &error.to_string());
            }
        }
        let chunking = domain::ChunkingSettings {
            max_tokens: self.chunk_max_tokens,
            overlap_tokens: self.chunk_overlap_tokens,
        };
        // the model's own bound is checked once the embedder is loaded
        if let Err(error) = chunking.validate(u32::MAX) {
            return invalid("NEUROSTASH_CHUNK_MAX_TOKENS", &error.to_string());
        }
        if self.embedder == Some(EmbedderKind::Openai) && (self.embed_url.is_none() || self.embed_model.is_none()) {
            return invalid(
                "NEUROSTASH_EMBEDDER",
                "openai needs NEUROSTASH_EMBED_URL and NEUROSTASH_EMBED_MODEL",
            );
        }
        if let Some(url) = &self.embed_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("NEUROSTASH_EMBED_URL", "must be an http:// or https:// address");
            }
        }
        if !(1..=2048).contains(&self.embed_batch_size) {
            return invalid("NEUROSTASH_EMBED_BATCH_SIZE", "must be between 1 and 2048");
        }
        if !(1..=600).contains(&self.embed_timeout_secs) {
            return invalid("NEUROSTASH_EMBED_TIMEOUT_SECS", "must be between 1 and 600");
        }
        if self.embed_max_retries > 20 {
            return invalid("NEUROSTASH_EMBED_MAX_RETRIES", "must be at most 20");
        }
        if !(1..=3_600).contains(&self.extract_time_budget_secs) {
            return invalid("NEUROSTASH_EXTRACT_TIME_BUDGET_SECS", "must be between 1 and 3600");
        }
        if self.extract_max_unpacked_bytes < 1024 * 1024 || self.extract_max_text_bytes < 64 * 1024 {
            return invalid(
                "NEUROSTASH_EXTRACT_MAX_UNPACKED_BYTES",
                "must be at least 1 MiB, and NEUROSTASH_EXTRACT_MAX_TEXT_BYTES at least 64 KiB",
            );
        }
        if self.embed_threads > 1024 {
            return invalid("NEUROSTASH_EMBED_THREADS", "must be at most 1024");
        }
        if self.embedding_dimensions == 0 || self.embedding_dimensions > 4096 {
            return invalid("NEUROSTASH_EMBEDDING_DIMENSIONS", "must be between 1 and 4096");
        }
        if self.processing_workers == 0 || self.processing_max_attempts == 0 {
            return invalid(
                "NEUROSTASH_PROCESSING_WORKERS",
                "workers and max attempts must be positive",
            );
        }
        if !(1..=3_600_000).contains(&self.processing_retry_base_ms) {
            return invalid("NEUROSTASH_PROCESSING_RETRY_BASE_MS", "must be between 1 and 3600000");
        }
        if !(1..=86_400).contains(&self.processing_retry_max_secs) {
            return invalid("NEUROSTASH_PROCESSING_RETRY_MAX_SECS", "must be between 1 and 86400");
        }
        if !(1..=100).contains(&self.webhook_max_attempts) {
            return invalid("NEUROSTASH_WEBHOOK_MAX_ATTEMPTS", "must be between 1 and 100");
        }
        if !(1..=3_600_000).contains(&self.webhook_retry_base_ms) {
            return invalid("NEUROSTASH_WEBHOOK_RETRY_BASE_MS", "must be between 1 and 3600000");
        }
        if !(1..=86_400).contains(&self.webhook_retry_max_secs) {
            return invalid("NEUROSTASH_WEBHOOK_RETRY_MAX_SECS", "must be between 1 and 86400");
        }
        if !(1..=300).contains(&self.webhook_timeout_secs) {
            return invalid("NEUROSTASH_WEBHOOK_TIMEOUT_SECS", "must be between 1 and 300");
        }
        if self.max_upload_bytes == 0 {
            return invalid("NEUROSTASH_MAX_UPLOAD_BYTES", "must be positive");
        }
        // the bodies the API takes stay below the lower bound (a search
        // query of 4096 characters is at most 16 KiB of utf-8, an api key
        // naming 100 knowledge bases about 4 KiB), so each can be sent
        if !(MIN_JSON_BODY_BYTES..=MAX_JSON_BODY_BYTES).contains(&self.max_json_body_bytes) {
            return invalid(
                "NEUROSTASH_MAX_JSON_BODY_BYTES",
                &format!("must be between {MIN_JSON_BODY_BYTES} and {MAX_JSON_BODY_BYTES}"),
            );
        }
        // S3 signs a presigned URL for at most 7 days
        if !(60..=7 * 24 * 3600).contains(&self.upload_url_ttl_secs) {
            return invalid("NEUROSTASH_UPLOAD_URL_TTL_SECS", "must be between 60 and 604800");
        }
        if !(1..=86_400).contains(&self.upload_cleanup_interval_secs) {
            return invalid("NEUROSTASH_UPLOAD_CLEANUP_INTERVAL_SECS", "must be between 1 and 86400");
        }
        if let Some(url) = &self.public_url {
            let url = url.trim_end_matches('/');
            let valid = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ']));
            if !valid {
                return invalid("NEUROSTASH_PUBLIC_URL", "must be an http:// or https:// address");
            }
        }
        if self.auth_failure_limit == 0 {
            return invalid("NEUROSTASH_AUTH_FAILURE_LIMIT", "must be positive");
        }
        if !(1..=86_400).contains(&self.auth_failure_window_secs) {
            return invalid("NEUROSTASH_AUTH_FAILURE_WINDOW_SECS", "must be between 1 and 86400");
        }
        if !(1..=1_000_000).contains(&self.auth_failure_sources) {
            return invalid("NEUROSTASH_AUTH_FAILURE_SOURCES", "must be between 1 and 1000000");
        }
        if self
            .kafka_brokers
            .as_deref()
            .is_some_and(|brokers| brokers.trim().is_empty())
        {
            return invalid("NEUROSTASH_KAFKA_BROKERS", "must name at least one host:port when set");
        }
        if !(1_000..=300_000).contains(&self.kafka_session_timeout_ms) {
            return invalid("NEUROSTASH_KAFKA_SESSION_TIMEOUT_MS", "must be between 1000 and 300000");
        }
        if self.kafka_partitions < 1 || self.kafka_replication_factor < 1 {
            return invalid(
                "NEUROSTASH_KAFKA_PARTITIONS",
                "partitions and replication factor must be positive",
            );
        }
        let prefix_ok = !self.kafka_topic_prefix.is_empty()
            && self.kafka_topic_prefix.len() <= 200
            && self
                .kafka_topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !prefix_ok {
            return invalid(
                "NEUROSTASH_KAFKA_TOPIC_PREFIX",
                "must be 1 to 200 of the characters a-z A-Z 0-9 . _ -",
            );
        }
        self.validate_s3()
    }

    fn validate_s3(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        let bucket = &self.s3_bucket;
        // S3's bucket naming rules, the common subset every server accepts
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
            && !bucket.contains("..");
        if !bucket_ok {
            return invalid(
                "NEUROSTASH_S3_BUCKET",
                "must be 3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit",
            );
        }
        let region_ok =
            !self.s3_region.is_empty() && self.s3_region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !region_ok {
            return invalid("NEUROSTASH_S3_REGION", "must be a region name such as us-east-1");
        }
        let Some(endpoint) = &self.s3_endpoint else {
            return Ok(());
        };
        let host = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        let host_ok = host.is_some_and(|rest| {
            let authority = rest.trim_end_matches('/');
            !authority.is_empty() && !authority.contains(['/', '?', '#', '@', ' '])
        });
        if !host_ok {
            return invalid(
                "NEUROSTASH_S3_ENDPOINT",
                "must be an http:// or https:// url of a host (and port), without a path",
            );
        }
        if self.s3_access_key.as_deref().is_none_or(|key| key.trim().is_empty()) {
            return invalid(
                "NEUROSTASH_S3_ACCESS_KEY",
                "is required when NEUROSTASH_S3_ENDPOINT is set",
            );
        }
        if self
            .s3_secret_key
            .as_ref()
            .is_none_or(|secret| secret.expose().trim().is_empty())
        {
            return invalid(
                "NEUROSTASH_S3_SECRET_KEY",
                "is required when NEUROSTASH_S3_ENDPOINT is set",
            );
        }
        Ok(())
    }

    /// S3 settings when S3 is configured.
    pub fn s3(&self) -> Option<actors::objects::S3Settings> {
        let endpoint = self.s3_endpoint.as_deref()?;
        Some(actors::objects::S3Settings {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            bucket: self.s3_bucket.clone(),
            region: self.s3_region.clone(),
            access_key: self.s3_access_key.clone().unwrap_or_default(),
            secret_key: self
                .s3_secret_key
                .as_ref()
                .map(|secret| secret.expose().to_owned())
                .unwrap_or_default(),
        })
    }

    pub fn database_url(&self) -> String {
        match &self.postgres_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("neurostash.db").display()),
        }
    }

    /// Kafka settings when Kafka is configured.
    pub fn kafka(&self) -> Option<bus::KafkaSettings> {
        let brokers = self.kafka_brokers.as_deref()?.trim();
        let mut settings = bus::KafkaSettings::new(brokers);
        settings.topic_prefix = self.kafka_topic_prefix.clone();
        settings.partitions = self.kafka_partitions;
        settings.replication_factor = self.kafka_replication_factor;
        settings.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms);
        Some(settings)
    }

    pub fn read_your_writes_timeout(&self) -> Duration {
        Duration::from_millis(self.read_your_writes_timeout_ms)
    }

    pub fn failed_auth_limits(&self) -> crate::api::failed_auth::FailedAuthLimits {
        crate::api::failed_auth::FailedAuthLimits {
            max_failures: self.auth_failure_limit,
            window: Duration::from_secs(self.auth_failure_window_secs),
            max_sources: self.auth_failure_sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        let config = Config {
            postgres_url: Some("mysql://x".into()),
            ..Config::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("NEUROSTASH_POSTGRES_URL"), "{message}");
    }

    #[test]
    fn failed_authentication_limits_must_be_positive() {
        for (config, variable) in [
            (
                Config {
                    auth_failure_limit: 0,
                    ..Config::default()
                },
                "NEUROSTASH_AUTH_FAILURE_LIMIT",
            ),
            (
                Config {
                    auth_failure_window_secs: 0,
                    ..Config::default()
                },
                "NEUROSTASH_AUTH_FAILURE_WINDOW_SECS",
            ),
            (
                Config {
                    auth_failure_sources: 0,
                    ..Config::default()
                },
                "NEUROSTASH_AUTH_FAILURE_SOURCES",
            ),
        ] {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(variable), "{message}");
        }
        let limits = Config::default().failed_auth_limits();
        assert_eq!(
            (limits.max_failures, limits.window, limits.max_sources),
            (20, Duration::from_secs(60), 10_000)
        );
    }

    #[test]
    fn the_json_body_bound_is_validated() {
        assert_eq!(Config::default().max_json_body_bytes, 64 * 1024);
        for bytes in [0, MIN_JSON_BODY_BYTES - 1, MAX_JSON_BODY_BYTES + 1] {
            let config = Config {
                max_json_body_bytes: bytes,
                ..Config::default()
            };
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("NEUROSTASH_MAX_JSON_BODY_BYTES"), "{bytes}: {message}");
        }
        for bytes in [MIN_JSON_BODY_BYTES, MAX_JSON_BODY_BYTES] {
            let config = Config {
                max_json_body_bytes: bytes,
                ..Config::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn s3_settings_are_validated_and_the_secret_is_never_shown() {
        let configured = Config {
            s3_endpoint: Some("http://127.0.0.1:8333".into()),
            s3_access_key: Some("access".into()),
            s3_secret_key: Some(Secret::new("hunter2-very-secret")),
            ..Config::default()
        };
        configured.validate().unwrap();
        assert!(!format!("{configured:?}").contains("hunter2-very-secret"));
        assert!(!format!("{:?}", configured.s3().unwrap()).contains("hunter2-very-secret"));
        assert_eq!(configured.s3().unwrap().secret_key, "hunter2-very-secret");
        assert!(Config::default().s3().is_none());

        let cases: [(&str, Config); 5] = [
            (
                "NEUROSTASH_S3_ENDPOINT",
                Config {
                    s3_endpoint: Some("s3.example.com".into()),
                    ..configured.clone()
                },
            ),
            (
                "NEUROSTASH_S3_ENDPOINT",
                Config {
                    s3_endpoint: Some("http://host/path".into()),
                    ..configured.clone()
                },
            ),
            (
                "NEUROSTASH_S3_ACCESS_KEY",
                Config {
                    s3_access_key: None,
                    ..configured.clone()
                },
            ),
            (
                "NEUROSTASH_S3_SECRET_KEY",
                Config {
                    s3_secret_key: None,
                    ..configured.clone()
                },
            ),
            (
                "NEUROSTASH_S3_BUCKET",
                Config {
                    s3_bucket: "Upper_Case".into(),
                    ..configured.clone()
                },
            ),
        ];
        for (setting, config) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(setting), "{setting}: {message}");
            assert!(!message.contains("hunter2-very-secret"), "{message}");
        }
    }

    #[test]
    fn the_api_key_secret_is_checked_and_never_shown() {
        let short = Config {
            api_key_secret: Some(Secret::new("too-short")),
            ..Config::default()
        };
        let message = short.validate().unwrap_err().to_string();
        assert!(message.contains("NEUROSTASH_API_KEY_SECRET"), "{message}");
        let configured = Config {
            api_key_secret: Some(Secret::new("an-api-key-secret-of-32-characters-or-more")),
            ..Config::default()
        };
        configured.validate().unwrap();
        assert!(!format!("{configured:?}").contains("an-api-key-secret"));
    }

    #[test]
    fn the_master_key_is_checked_and_never_shown() {
        let key = "ab".repeat(32);
        let malformed = Config {
            master_key: Some(Secret::new(format!("{key}00"))),
            ..Config::default()
        };
        let message = malformed.validate().unwrap_err().to_string();
        assert!(message.contains("NEUROSTASH_MASTER_KEY"), "{message}");
        assert!(!message.contains(&key), "{message}");
        let both = Config {
            master_key: Some(Secret::new(key.clone())),
            master_key_file: Some(PathBuf::from("/run/secrets/master.key")),
            ..Config::default()
        };
        assert!(both.validate().is_err());
        let configured = Config {
            master_key: Some(Secret::new(key.clone())),
            ..Config::default()
        };
        configured.validate().unwrap();
        assert!(!format!("{configured:?}").contains(&key));
    }

    #[test]
    // figment's Jail fixes the closure's error type to figment::Error
    #[allow(clippy::result_large_err)]
    fn s3_settings_load_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NEUROSTASH_TEST_S3_ENDPOINT", "http://ignored:1");
            jail.set_env("NEUROSTASH_TEST_S3_SECRET_KEY", "ignored");
            jail.set_env("NEUROSTASH_S3_ENDPOINT", "https://s3.example.com");
            jail.set_env("NEUROSTASH_S3_ACCESS_KEY", "AKIDEXAMPLE");
            jail.set_env("NEUROSTASH_S3_SECRET_KEY", "from-the-environment");
            jail.set_env("NEUROSTASH_S3_REGION", "eu-west-1");
            let config = Config::load(None).map_err(|error| error.to_string())?;
            let settings = config.s3().expect("s3 configured");
            assert_eq!(settings.endpoint, "https://s3.example.com");
            assert_eq!(settings.bucket, "neurostash");
            assert_eq!(settings.region, "eu-west-1");
            assert_eq!(settings.secret_key, "from-the-environment");
            Ok(())
        });
    }

    #[test]
    // figment's Jail fixes the closure's error type to figment::Error
    #[allow(clippy::result_large_err)]
    fn environment_settings_load_and_unknown_ones_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NEUROSTASH_LOG", "debug");
            jail.set_env("NEUROSTASH_TEST_POSTGRES_URL", "postgres://ignored");
            jail.set_env("NEUROSTASH_PROCESSING_WORKERS", "7");
            let config = Config::load(None).map_err(|error| error.to_string())?;
            assert_eq!(config.processing_workers, 7);

            jail.set_env("NEUROSTASH_PROCESING_WORKERS", "7");
            let message = Config::load(None).unwrap_err().to_string();
            assert!(message.contains("procesing_workers"), "{message}");
            Ok(())
        });
    }
}
