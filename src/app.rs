//! Wiring of the roles: database, event store, object store, actors,
//! projections, processor and API, in one process or in processes of their
//! own (see [`Roles`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actors::db::{ConnectOptions, Database};
use actors::keys::KeyVault;
use actors::objects::{EncryptedObjectStore, LocalObjectStore, ObjectStore, S3ObjectStore};
use actors::store::{EventStore, Outbox};
use actors::{ActorOptions, ActorSystem, HandleOptions};
use anyhow::Context;
use projections::audit::{AuditLog, AuditProjection};
use projections::erasure::Eraser;
use projections::registry::{Registry, RegistryProjection};
use projections::runtime::{ProjectionHandle, ProjectionRunner, RunnerOptions};
use projections::vector::VectorProjection;

use bus::{ConsumerHandle, ConsumerOptions, OutboxRelay, RelayHandle, RelayOptions, Topics};
use domain::document::Document;
use domain::knowledge_base::KnowledgeBase;
use domain::tenant::Tenant;
use domain::Aggregate;
use projections::consumed::{ConsumedProjection, OffsetStore};
use projections::registry::REGISTRY_PROJECTION;

use crate::api::content_locks::ContentLocks;
use crate::auth::KeyHasher;
use crate::background::PeriodicTask;
use crate::config::Config;
use crate::pipeline::{embedder_from_config, Embedder};
use crate::processor::{Processor, ProcessorHandle, ProcessorOptions, WorkSource};
use crate::upload_cleaner::UploadCleaner;
use crate::webhooks::{SenderOptions, WebhookSender};
use projections::webhooks::{WebhookProjection, WebhookStore};

/// Which roles this process plays. All three by default, in one process;
/// with Postgres (and Kafka) they scale out as processes of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API, its actors, and the node-local vector index it searches.
    pub api: bool,
    /// The document pipeline's workers.
    pub process: bool,
    /// The registry and audit projectors.
    pub project: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        process: true,
        project: true,
    };
    pub const API: Roles = Roles {
        api: true,
        process: false,
        project: false,
    };
    pub const PROCESS: Roles = Roles {
        api: false,
        process: true,
        project: false,
    };
    pub const PROJECT: Roles = Roles {
        api: false,
        process: false,
        project: true,
    };
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [(self.api, "api"), (self.process, "process"), (self.project, "project")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        f.write_str(&names.join("+"))
    }
}

pub struct App {
    pub config: Arc<Config>,
    pub roles: Roles,
    pub database: Database,
    pub store: Arc<dyn EventStore>,
    pub outbox: Arc<dyn Outbox>,
    /// Encrypts every tenant's objects on the way in, decrypts on the way out.
    pub objects: Arc<dyn ObjectStore>,
    /// The store underneath, for what is not a tenant's object (the plain
    /// staging area of presigned uploads).
    pub raw_objects: Arc<dyn ObjectStore>,
    pub vault: Arc<KeyVault>,
    pub actors: ActorSystem,
    pub registry: Registry,
    /// What keeps the registry current: the log, Kafka, or another process.
    pub registry_feed: Feed,
    /// The node-local vector index; on API nodes only.
    pub vectors: Option<Arc<VectorProjection>>,
    pub vector_feed: Feed,
    pub audit: AuditLog,
    pub audit_feed: Feed,
    /// Carries out erasures: destroys keys, deletes objects.
    pub eraser_feed: Feed,
    pub embedder: Arc<dyn Embedder>,
    pub key_hasher: KeyHasher,
    /// Uploads of the same bytes by one tenant, one at a time (dedup).
    pub content_locks: ContentLocks,
    processor: Option<ProcessorHandle>,
    /// Ends presigned uploads past their expiry; on project nodes.
    pub upload_cleaner: Option<PeriodicTask>,
    /// The tenants' webhooks and their delivery outbox.
    pub webhooks: WebhookStore,
    /// Keeps the webhooks and queues their deliveries; on project nodes.
    pub webhook_feed: Feed,
    /// Sends the queued deliveries; on project nodes.
    webhook_sender: Option<PeriodicTask>,
    /// Drains the outbox into Kafka, when Kafka is configured.
    pub relay: Option<RelayHandle>,
}

/// The parts every role needs: a migrated database, its event store, the key
/// vault and the object store.
pub struct Foundation {
    pub database: Database,
    pub store: Arc<dyn EventStore>,
    pub outbox: Arc<dyn Outbox>,
    pub objects: Arc<dyn ObjectStore>,
    pub raw_objects: Arc<dyn ObjectStore>,
    pub vault: Arc<KeyVault>,
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
        Registry::new(database.clone())
            .upgrade_generations()
            .await
            .context("cannot bring the registry generations to the current columns")?;
        let (store, outbox) = database.event_log();
        let raw_objects: Arc<dyn ObjectStore> = match config.s3() {
            Some(settings) => {
                let store = S3ObjectStore::connect(&settings)
                    .await
                    .context("cannot open the s3 object store")?;
                tracing::info!(endpoint = %settings.endpoint, bucket = %settings.bucket, "objects in s3");
                Arc::new(store)
            }
            None => {
                let root = config.data_dir.join("objects");
                tracing::info!(directory = %root.display(), "objects in the local directory");
                Arc::new(LocalObjectStore::new(root))
            }
        };
        let secret = match &config.api_key_secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => crate::auth::load_or_create_secret(&config.data_dir.join("secrets").join("api-key-hmac"))
                .context("cannot read or create the api key secret")?,
        };
        let master = crate::auth::load_master_key(config)?;
        let vault = Arc::new(KeyVault::new(database.clone(), master));
        vault
            .check_master_key()
            .await
            .context("the configured master key cannot read the stored data keys")?;
        tracing::info!(
            master_key_id = vault.master_key_id(),
            "documents, artifacts and sensitive event fields are encrypted"
        );
        let objects: Arc<dyn ObjectStore> = Arc::new(EncryptedObjectStore::new(raw_objects.clone(), vault.clone()));
        Ok(Foundation {
            database,
            store,
            outbox,
            objects,
            raw_objects,
            vault,
            key_hasher: KeyHasher::new(secret),
        })
    }
}

impl App {
    /// Every role in this process.
    pub async fn start(config: Config) -> anyhow::Result<Arc<App>> {
        App::start_roles(config, Roles::ALL).await
    }

    pub async fn start_roles(config: Config, roles: Roles) -> anyhow::Result<Arc<App>> {
        let config = Arc::new(config);
        let Foundation {
            database,
            store,
            outbox,
            objects,
            raw_objects,
            vault,
            key_hasher,
        } = Foundation::open(&config).await?;
        let kafka = config.kafka();
        // every role may append (the processor through its actors); the
        // lease lets one relay publish at a time
        let relay = match &kafka {
            Some(settings) => Some(start_relay(settings, outbox.clone(), store.clone()).await?),
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
        let audit = AuditLog::new(database.clone());
        let (registry_feed, audit_feed, eraser_feed) = if roles.project {
            let registry_projection = Arc::new(RegistryProjection::new(database.clone()));
            let registry_feed = match &kafka {
                Some(settings) => Feed::Kafka(
                    join_group(settings, REGISTRY_PROJECTION, &Topics::CATEGORIES, registry_projection).await?,
                ),
                None => Feed::Log(ProjectionRunner::spawn(
                    store.clone(),
                    registry_projection,
                    RunnerOptions::default(),
                )),
            };
            let audit_feed = Feed::Log(ProjectionRunner::spawn(
                store.clone(),
                Arc::new(AuditProjection::new(database.clone())),
                RunnerOptions::default(),
            ));
            // on the log, as the audit: an erasure must be carried out even
            // when no broker is reachable
            let eraser_feed = Feed::Log(ProjectionRunner::spawn(
                store.clone(),
                Arc::new(Eraser::new(database.clone(), vault.clone(), raw_objects.clone())),
                RunnerOptions::default(),
            ));
            (registry_feed, audit_feed, eraser_feed)
        } else {
            (Feed::Elsewhere, Feed::Elsewhere, Feed::Elsewhere)
        };
        let (vectors, vector_feed) = if roles.api {
            let vectors = Arc::new(
                VectorProjection::open_live(vector_dir(&config), database.clone(), objects.clone())
                    .await
                    .context("cannot open the vector index")?
                    .with_node(node_id(&config)?),
            );
            let feed = match &kafka {
                // node-local: every api node's index reads every partition,
                // so each node is a group of its own
                Some(settings) => {
                    let group = format!("vector.{}", node_id(&config)?);
                    // the tenant topic too: an erasure drops the tenant's indexes
                    let categories = [Document::CATEGORY, KnowledgeBase::CATEGORY, Tenant::CATEGORY];
                    Feed::Kafka(join_group(settings, &group, &categories, vectors.clone()).await?)
                }
                None => Feed::Log(ProjectionRunner::spawn(
                    store.clone(),
                    vectors.clone(),
                    RunnerOptions::default(),
                )),
            };
            (Some(vectors), feed)
        } else {
            (None, Feed::Elsewhere)
        };

        let embedder = embedder_from_config(&config).await?;
        let model_max = u32::try_from(embedder.max_input_tokens()).unwrap_or(u32::MAX);
        if config.chunk_max_tokens > model_max {
            anyhow::bail!(
                "invalid configuration: NEUROSTASH_CHUNK_MAX_TOKENS {} is more than the {model_max} tokens {} reads",
                config.chunk_max_tokens,
                embedder.model().name
            );
        }
        tracing::info!(embedder = %embedder.describe(), "embedder ready");
        let processor = if roles.process {
            let source = match &kafka {
                Some(settings) => WorkSource::Kafka {
                    settings: settings.clone(),
                    offsets: OffsetStore::new(database.clone(), "processor"),
                },
                None => WorkSource::Log(store.clone()),
            };
            let processor = Processor::start(
                source,
                actors.clone(),
                registry.clone(),
                objects.clone(),
                vault.clone(),
                embedder.clone(),
                ProcessorOptions::from_config(&config),
            )
            .await
            .context("cannot start the processor")?;
            Some(processor)
        } else {
            None
        };
        let webhooks = WebhookStore::new(database.clone());
        let (webhook_feed, webhook_sender) = if roles.project {
            // on the log: a webhook sees its tenant's events in log order
            let feed = Feed::Log(ProjectionRunner::spawn(
                store.clone(),
                Arc::new(WebhookProjection::new(database.clone())),
                RunnerOptions::default(),
            ));
            let sender = WebhookSender::new(
                webhooks.clone(),
                store.clone(),
                vault.clone(),
                SenderOptions {
                    max_attempts: config.webhook_max_attempts,
                    backoff_base: Duration::from_millis(config.webhook_retry_base_ms),
                    backoff_max: Duration::from_secs(config.webhook_retry_max_secs),
                    timeout: Duration::from_secs(config.webhook_timeout_secs),
                    interval: Duration::from_millis(250),
                },
            )
            .context("cannot start the webhook sender")?;
            (feed, Some(sender.spawn()))
        } else {
            (Feed::Elsewhere, None)
        };
        let upload_cleaner = roles.project.then(|| {
            UploadCleaner::new(
                registry.clone(),
                actors.documents.clone(),
                raw_objects.clone(),
                crate::upload_cleaner::GRACE,
            )
            .spawn(Duration::from_secs(config.upload_cleanup_interval_secs))
        });
        tracing::info!(%roles, "roles started");

        Ok(Arc::new(App {
            config,
            roles,
            database,
            store,
            outbox,
            objects,
            raw_objects,
            vault,
            actors,
            registry,
            registry_feed,
            vectors,
            vector_feed,
            audit,
            audit_feed,
            eraser_feed,
            embedder,
            key_hasher,
            content_locks: ContentLocks::default(),
            processor,
            upload_cleaner,
            webhooks,
            webhook_feed,
            webhook_sender,
            relay,
        }))
    }

    /// The vector index, which only API nodes keep.
    pub fn vector_index(&self) -> Result<&Arc<VectorProjection>, crate::api::error::ApiError> {
        self.vectors
            .as_ref()
            .ok_or_else(|| crate::api::error::ApiError::Unavailable("this node keeps no vector index".into()))
    }

    /// Stops background work and persists what is kept in memory.
    pub async fn shutdown(&self) {
        if let Some(processor) = &self.processor {
            processor.shutdown().await;
        }
        if let Some(cleaner) = &self.upload_cleaner {
            cleaner.shutdown().await;
        }
        if let Some(sender) = &self.webhook_sender {
            sender.shutdown().await;
        }
        if let Some(relay) = &self.relay {
            relay.shutdown().await;
        }
        self.registry_feed.shutdown().await;
        self.vector_feed.shutdown().await;
        self.audit_feed.shutdown().await;
        self.eraser_feed.shutdown().await;
        self.webhook_feed.shutdown().await;
        if let Some(vectors) = &self.vectors {
            if let Err(error) = vectors.persist().await {
                tracing::error!(%error, "could not persist the vector index at shutdown");
            }
        }
        self.actors.stop();
    }
}

/// Joins the consumer group of a projection and waits, bounded, for its
/// share of the partitions: a node serves no reads from a projection that
/// is not consuming yet.
async fn join_group(
    settings: &bus::KafkaSettings,
    projection_name: &str,
    categories: &[&str],
    projection: Arc<dyn ConsumedProjection>,
) -> anyhow::Result<ConsumerHandle> {
    let options = ConsumerOptions::for_projection(settings, projection_name);
    let consumer = bus::spawn_consumer(settings, categories, projection, options)
        .with_context(|| format!("cannot consume kafka at {} into {projection_name}", settings.brokers))?;
    let join_timeout = settings.session_timeout * 6;
    if !consumer.wait_until(join_timeout, |progress| progress.joined).await {
        anyhow::bail!(
            "the {projection_name} consumer did not join its kafka group at {} within {join_timeout:?}",
            settings.brokers
        );
    }
    Ok(consumer)
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

/// How a projection is fed: by tailing the store's log, by a Kafka
/// consumer group, or not in this process at all.
pub enum Feed {
    Log(ProjectionHandle),
    Kafka(ConsumerHandle),
    /// Another process runs it.
    Elsewhere,
}

impl Feed {
    /// The log runner of a projection fed by the log; panics otherwise (for
    /// tests and tools that know how they configured it).
    pub fn log_runner(&self) -> &ProjectionHandle {
        match self {
            Feed::Log(runner) => runner,
            Feed::Kafka(_) | Feed::Elsewhere => panic!("this projection is not fed by the log in this process"),
        }
    }

    pub async fn shutdown(&self) {
        match self {
            Feed::Log(runner) => runner.shutdown().await,
            Feed::Kafka(consumer) => consumer.shutdown().await,
            Feed::Elsewhere => {}
        }
    }
}

/// This node's lasting identity, kept beside its vector index: the index
/// and its Kafka offsets belong to the node.
fn node_id(config: &Config) -> anyhow::Result<String> {
    let path = vector_dir(config).join("node-id");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::create_dir_all(vector_dir(config))
        .and_then(|()| std::fs::write(&path, &id))
        .with_context(|| format!("cannot write the node id to {}", path.display()))?;
    Ok(id)
}

pub fn vector_dir(config: &Config) -> PathBuf {
    config.data_dir.join("vector-index")
}
