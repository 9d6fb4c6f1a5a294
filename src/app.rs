//! Wiring of the roles: database, event store, object store, actors,
//! projections, processor and API, started in one process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actors::db::{ConnectOptions, Database};
use actors::objects::{LocalObjectStore, ObjectStore};
use actors::store::{EventStore, Outbox};
use actors::{ActorOptions, ActorSystem, HandleOptions};
use anyhow::Context;
use projections::audit::{AuditLog, AuditProjection};
use projections::registry::{Registry, RegistryProjection};
use projections::runtime::{ProjectionHandle, ProjectionRunner, RunnerOptions};
use projections::vector::VectorProjection;

use bus::{OutboxRelay, RelayHandle, RelayOptions};

use crate::auth::KeyHasher;
use crate::config::Config;
use crate::pipeline::{Embedder, HashingEmbedder};
use crate::processor::{Processor, ProcessorHandle, ProcessorOptions};

pub struct App {
    pub config: Arc<Config>,
    pub database: Database,
    pub store: Arc<dyn EventStore>,
    pub outbox: Arc<dyn Outbox>,
    pub objects: Arc<dyn ObjectStore>,
    pub actors: ActorSystem,
    pub registry: Registry,
    pub registry_progress: ProjectionHandle,
    pub vectors: Arc<VectorProjection>,
    pub vector_progress: ProjectionHandle,
    pub audit: AuditLog,
    pub audit_progress: ProjectionHandle,
    pub embedder: Arc<dyn Embedder>,
    pub key_hasher: KeyHasher,
    processor: ProcessorHandle,
    /// Drains the outbox into Kafka, when Kafka is configured.
    pub relay: Option<RelayHandle>,
}

/// The parts every role needs: a migrated database, its event store and the
/// object store.
pub struct Foundation {
    pub database: Database,
    pub store: Arc<dyn EventStore>,
    pub outbox: Arc<dyn Outbox>,
    pub objects: Arc<dyn ObjectStore>,
    pub key_hasher: KeyHasher,
}

impl Foundation {
    pub async fn open(config: &Config) -> anyhow::Result<Foundation> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let database = Database::connect(
            &config.database_url(),
            &ConnectOptions {
                max_connections: config.postgres_max_connections,
                ..ConnectOptions::default()
            },
        )
        .await
        .context("cannot open the database")?;
        database.migrate_up().await.context("cannot apply migrations")?;
        let (store, outbox) = database.event_log();
        let objects: Arc<dyn ObjectStore> = Arc::new(LocalObjectStore::new(config.data_dir.join("objects")));
        let secret = match &config.api_key_secret {
            Some(secret) => secret.clone().into_bytes(),
            None => crate::auth::load_or_create_secret(&config.data_dir.join("secrets").join("api-key-hmac"))
                .context("cannot read or create the api key secret")?,
        };
        Ok(Foundation {
            database,
            store,
            outbox,
            objects,
            key_hasher: KeyHasher::new(secret),
        })
    }
}

impl App {
    pub async fn start(config: Config) -> anyhow::Result<Arc<App>> {
        let config = Arc::new(config);
        let Foundation {
            database,
            store,
            outbox,
            objects,
            key_hasher,
        } = Foundation::open(&config).await?;
        let relay = match config.kafka() {
            Some(settings) => Some(start_relay(&settings, outbox.clone(), store.clone()).await?),
            None => None,
        };
        let actors = ActorSystem::start(
            store.clone(),
            HandleOptions {
                actor: ActorOptions {
                    idle_timeout: Duration::from_secs(config.actor_idle_timeout_secs),
                    ..ActorOptions::default()
                },
                ..HandleOptions::default()
            },
        )
        .await
        .context("cannot start the actor system")?;

        let registry = Registry::new(database.clone());
        let registry_progress = ProjectionRunner::spawn(
            store.clone(),
            Arc::new(RegistryProjection::new(database.clone())),
            RunnerOptions::default(),
        );
        let vectors = Arc::new(
            VectorProjection::open_live(vector_dir(&config), database.clone(), objects.clone())
                .await
                .context("cannot open the vector index")?,
        );
        let vector_progress = ProjectionRunner::spawn(store.clone(), vectors.clone(), RunnerOptions::default());
        let audit = AuditLog::new(database.clone());
        let audit_progress = ProjectionRunner::spawn(
            store.clone(),
            Arc::new(AuditProjection::new(database.clone())),
            RunnerOptions::default(),
        );

        let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::new(config.embedding_dimensions));
        tracing::info!(embedder = embedder.name(), "embedder ready");
        let processor = Processor::start(
            store.clone(),
            actors.clone(),
            registry.clone(),
            objects.clone(),
            embedder.clone(),
            ProcessorOptions::from_config(&config),
        )
        .await
        .context("cannot start the processor")?;

        Ok(Arc::new(App {
            config,
            database,
            store,
            outbox,
            objects,
            actors,
            registry,
            registry_progress,
            vectors,
            vector_progress,
            audit,
            audit_progress,
            embedder,
            key_hasher,
            processor,
            relay,
        }))
    }

    /// Stops background work and persists what is kept in memory.
    pub async fn shutdown(&self) {
        self.processor.shutdown().await;
        if let Some(relay) = &self.relay {
            relay.shutdown().await;
        }
        self.registry_progress.shutdown().await;
        self.vector_progress.shutdown().await;
        self.audit_progress.shutdown().await;
        if let Err(error) = self.vectors.persist().await {
            tracing::error!(%error, "could not persist the vector index at shutdown");
        }
        self.actors.stop();
    }
}

/// Creates the topics (waiting, bounded, for a broker that is still
/// starting) and starts the relay. A broker that goes away later only
/// delays publishing: events wait in the outbox.
async fn start_relay(
    settings: &bus::KafkaSettings,
    outbox: Arc<dyn Outbox>,
    store: Arc<dyn EventStore>,
) -> anyhow::Result<RelayHandle> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match settings.ensure_topics().await {
            Ok(created) => {
                if !created.is_empty() {
                    tracing::info!(topics = ?created, "created kafka topics");
                }
                break;
            }
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "kafka not ready, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("kafka at {} did not answer after {ATTEMPTS} attempts", settings.brokers))
            }
        }
    }
    let relay = OutboxRelay::new(settings, outbox, RelayOptions::default())
        .with_context(|| format!("cannot start the outbox relay for kafka at {}", settings.brokers))?;
    tracing::info!(brokers = %settings.brokers, prefix = %settings.topic_prefix, "relaying events to kafka");
    Ok(relay.spawn(store.appended()))
}

pub fn vector_dir(config: &Config) -> PathBuf {
    config.data_dir.join("vector-index")
}
