//! The process manager for uploaded documents: takes a document's processing
//! lease through its actor, extracts, chunks and embeds it, stores the result
//! as an artifact beside the document, and completes or fails it through the
//! actor again.
//!
//! Work arrives two ways: live `DocumentRegistered` events from the log, and
//! a periodic sweep of the registry for documents still PENDING or
//! PROCESSING. The sweep is what makes a crash harmless: a document whose
//! worker died keeps its lease only until it expires, then the next sweep
//! hands it to a live worker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::artifact::{ArtifactChunk, ChunkArtifact};
use actors::keys::{KeyError, KeyVault};
use actors::objects::ObjectStore;
use actors::store::{EventStore, RecordedEvent};
use actors::{ActorSystem, CommandError};
use async_trait::async_trait;
use chrono::Utc;
use domain::document::{ArtifactRef, Backoff, Document, DocumentCommand, DocumentEvent, FileName, ProcessingStage};
use domain::{
    Aggregate, ChunkingSettings, DocumentId, DomainError, EmbeddingModel, EventMetadata, KnowledgeBaseId, LogPosition,
    Protected,
};
use projections::consumed::{ConsumedProjection, OffsetStore, PartitionOffset};
use projections::registry::Registry;
use projections::runtime::{Projection, ProjectionError, ProjectionRunner, RunnerOptions};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::app::Feed;
use crate::config::Config;
use crate::pipeline::extract::{extract_with_limits, ExtractLimits};
use crate::pipeline::{chunk_text, ChunkingOptions, EmbedError, Embedder};

#[derive(Debug, Clone)]
pub struct ProcessorOptions {
    pub workers: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    /// The wait before the next attempt after one that failed for a
    /// reason that may pass.
    pub backoff: Backoff,
    pub sweep_interval: Duration,
    /// For documents uploaded outside a knowledge base, and knowledge
    /// bases from before chunking was set per knowledge base.
    pub chunking: ChunkingSettings,
    pub extract_limits: ExtractLimits,
}

impl ProcessorOptions {
    pub fn from_config(config: &Config) -> Self {
        let lease = Duration::from_secs(config.processing_lease_secs);
        ProcessorOptions {
            workers: config.processing_workers,
            lease,
            max_attempts: config.processing_max_attempts,
            backoff: Backoff {
                base: chrono::Duration::milliseconds(config.processing_retry_base_ms as i64),
                max: chrono::Duration::seconds(config.processing_retry_max_secs as i64),
            },
            sweep_interval: (lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)),
            chunking: ChunkingSettings {
                max_tokens: config.chunk_max_tokens,
                overlap_tokens: config.chunk_overlap_tokens,
            },
            extract_limits: ExtractLimits {
                time_budget: Duration::from_secs(config.extract_time_budget_secs),
                max_unpacked_bytes: config.extract_max_unpacked_bytes,
                max_text_bytes: config.extract_max_text_bytes,
                ..ExtractLimits::default()
            },
        }
    }
}

struct Shared {
    actors: ActorSystem,
    objects: Arc<dyn ObjectStore>,
    /// Opens the sealed file name, whose extension picks the extractor.
    vault: Arc<KeyVault>,
    embedder: Arc<dyn Embedder>,
    options: ProcessorOptions,
    /// Identifies this process's workers in leases.
    worker_id: String,
    queued: Mutex<HashSet<DocumentId>>,
    queue: mpsc::Sender<DocumentId>,
}

impl Shared {
    /// Queues a document unless it is already queued or being worked on.
    async fn enqueue(&self, document_id: DocumentId) {
        let fresh = self.queued.lock().expect("queue set lock").insert(document_id);
        if fresh && self.queue.send(document_id).await.is_err() {
            self.queued.lock().expect("queue set lock").remove(&document_id);
        }
    }
}

/// Where the processor hears of new documents.
pub enum WorkSource {
    /// The store's log, from its head at start.
    Log(Arc<dyn EventStore>),
    /// The document topic, as a member of the processors' consumer group:
    /// each process gets the documents of its partitions, and when one dies
    /// the others take its partitions from the offsets it stored.
    Kafka {
        settings: bus::KafkaSettings,
        offsets: OffsetStore,
    },
}

pub struct ProcessorHandle {
    feed: Feed,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ProcessorHandle {
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.feed.shutdown().await;
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("task list lock"));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

pub struct Processor;

impl Processor {
    pub async fn start(
        source: WorkSource,
        actors: ActorSystem,
        registry: Registry,
        objects: Arc<dyn ObjectStore>,
        vault: Arc<KeyVault>,
        embedder: Arc<dyn Embedder>,
        options: ProcessorOptions,
    ) -> anyhow::Result<ProcessorHandle> {
        // bounded: a flood of uploads waits here rather than in memory
        let (queue, receiver) = mpsc::channel(options.workers * 64);
        let shared = Arc::new(Shared {
            actors,
            objects,
            vault,
            embedder,
            worker_id: format!(
                "worker-{}-{}",
                std::process::id(),
                &Uuid::new_v4().simple().to_string()[..8]
            ),
            options: options.clone(),
            queued: Mutex::new(HashSet::new()),
            queue,
        });
        let (stop, stopped) = watch::channel(false);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let mut tasks = Vec::new();
        for _ in 0..options.workers {
            tasks.push(tokio::spawn(work(shared.clone(), receiver.clone(), stopped.clone())));
        }
        tasks.push(tokio::spawn(sweep(shared.clone(), registry, stopped)));
        let feed = match source {
            WorkSource::Log(store) => {
                // documents registered before now are the sweep's; the feed
                // only needs what arrives from here on
                let head = store.log_head().await?;
                Feed::Log(ProjectionRunner::spawn(
                    store,
                    Arc::new(RegistrationFeed {
                        shared,
                        applied: Mutex::new(head),
                        offsets: None,
                    }),
                    RunnerOptions::default(),
                ))
            }
            WorkSource::Kafka { settings, offsets } => {
                let options = bus::ConsumerOptions::for_projection(&settings, PROCESSOR_FEED);
                let consumer = bus::spawn_consumer(
                    &settings,
                    &[Document::CATEGORY],
                    Arc::new(RegistrationFeed {
                        shared,
                        applied: Mutex::new(LogPosition::START),
                        offsets: Some(offsets),
                    }),
                    options,
                )?;
                Feed::Kafka(consumer)
            }
        };
        Ok(ProcessorHandle {
            feed,
            stop,
            tasks: Mutex::new(tasks),
        })
    }
}

const PROCESSOR_FEED: &str = "processor";

/// Turns live `DocumentRegistered` events into work.
struct RegistrationFeed {
    shared: Arc<Shared>,
    applied: Mutex<LogPosition>,
    /// Where the Kafka feed keeps its offsets.
    offsets: Option<OffsetStore>,
}

impl RegistrationFeed {
    /// Queues every document an event leaves waiting for processing: a
    /// registration, a new version, a retry on request. The stream names
    /// the document.
    async fn enqueue_registered(&self, events: &[RecordedEvent]) {
        const STARTS_WORK: [&str; 3] = ["DocumentRegistered", "DocumentVersionAdded", "RetryRequested"];
        for event in events {
            if event.stream_id.category() != Document::CATEGORY || !STARTS_WORK.contains(&event.event_type.as_str()) {
                continue;
            }
            if let Some(document_id) = event
                .stream_id
                .as_str()
                .strip_prefix(Document::CATEGORY)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|id| Uuid::parse_str(id).ok())
            {
                self.shared.enqueue(DocumentId(document_id)).await;
            }
        }
    }
}

#[async_trait]
impl Projection for RegistrationFeed {
    fn name(&self) -> &str {
        PROCESSOR_FEED
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        Ok(*self.applied.lock().expect("feed position lock"))
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        self.enqueue_registered(events).await;
        if let Some(last) = events.last() {
            *self.applied.lock().expect("feed position lock") = last.log_position;
        }
        Ok(())
    }
}

#[async_trait]
impl ConsumedProjection for RegistrationFeed {
    fn name(&self) -> &str {
        PROCESSOR_FEED
    }

    async fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, ProjectionError> {
        match &self.offsets {
            Some(offsets) => offsets.load(partitions).await,
            None => Ok(Vec::new()),
        }
    }

    /// Queued work is durable enough to move the offsets on: a document
    /// whose worker dies stays PENDING or PROCESSING in the registry, and
    /// the sweep hands it to a live worker once its lease is out.
    async fn apply_consumed(
        &self,
        events: &[RecordedEvent],
        offsets: &[PartitionOffset],
    ) -> Result<(), ProjectionError> {
        self.enqueue_registered(events).await;
        match &self.offsets {
            Some(store) => store.save(offsets).await,
            None => Ok(()),
        }
    }
}

async fn sweep(shared: Arc<Shared>, registry: Registry, mut stopped: watch::Receiver<bool>) {
    loop {
        match registry.unfinished_documents(256).await {
            Ok(documents) => {
                for document_id in documents {
                    shared.enqueue(document_id).await;
                }
            }
            Err(error) => tracing::warn!(%error, "processor sweep could not read the registry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.options.sweep_interval) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn work(
    shared: Arc<Shared>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<DocumentId>>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = async { receiver.lock().await.recv().await } => next,
            _ = stopped.changed() => return,
        };
        let Some(document_id) = next else { return };
        if let Err(error) = process(&shared, document_id).await {
            tracing::warn!(%document_id, %error, "processing attempt did not finish");
        }
        shared.queued.lock().expect("queue set lock").remove(&document_id);
    }
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("document bytes unavailable: {0}")]
    Objects(#[from] actors::objects::ObjectStoreError),
    #[error("could not encode the artifact: {0}")]
    Artifact(#[from] actors::artifact::ArtifactError),
    #[error("document metadata unreadable: {0}")]
    Keys(#[from] actors::keys::KeyError),
    #[error("pipeline task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("embedding failed: {0}")]
    Embed(#[from] crate::pipeline::EmbedError),
}

/// One attempt at one document. Infrastructure errors leave the lease to
/// expire so a later sweep retries; a document that cannot be understood is
/// failed with the reason at once.
async fn process(shared: &Shared, document_id: DocumentId) -> Result<(), AttemptError> {
    let stream_id = document_id.stream_id();
    let documents = &shared.actors.documents;
    let (document, _) = documents.inspect(stream_id.clone()).await?;
    let (Some(tenant_id), Some(object_key), Some(file_name)) = (
        document.tenant_id,
        document.object_key.clone(),
        document.file_name.clone(),
    ) else {
        return Ok(());
    };
    let metadata = EventMetadata {
        tenant_id: Some(tenant_id),
        actor_key_id: None,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
    };
    let started = documents
        .execute(
            stream_id.clone(),
            DocumentCommand::StartProcessing {
                worker: shared.worker_id.clone(),
                now: Utc::now(),
                lease_for: chrono::Duration::from_std(shared.options.lease).unwrap_or(chrono::Duration::minutes(2)),
                max_attempts: shared.options.max_attempts,
            },
            metadata.clone(),
        )
        .await;
    match started {
        Ok(outcome)
            if outcome
                .events
                .iter()
                .any(|e| matches!(e, DocumentEvent::ProcessingFailed { .. })) =>
        {
            return Ok(());
        }
        Ok(_) => {}
        // processed, failed, deleted, another worker's lease, or waiting
        // out its backoff: not ours to do now
        Err(CommandError::Rejected(
            DomainError::LeaseHeld { .. }
            | DomainError::Conflict(_)
            | DomainError::NotFound { .. }
            | DomainError::RetryNotDue { .. },
        )) => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    // the file name is the tenant's secret: logs name the document by id
    tracing::info!(%document_id, "processing document");
    let knowledge_base_id = document.knowledge_base_id;
    match attempt(
        shared,
        document_id,
        tenant_id,
        (object_key, file_name, knowledge_base_id),
        metadata.clone(),
    )
    .await
    {
        Ok(()) => Ok(()),
        // a failure that may pass: back off and try again, or give up once
        // the attempts are used; should even that not be recorded, the lease
        // runs out and the sweep retries
        Err(error) => {
            let command = DocumentCommand::ScheduleRetry {
                worker: shared.worker_id.clone(),
                reason: error.to_string(),
                now: Utc::now(),
                max_attempts: shared.options.max_attempts,
                backoff: shared.options.backoff,
            };
            tracing::warn!(%document_id, %error, "processing attempt failed, scheduling a retry");
            finish(documents, stream_id, command, metadata).await
        }
    }
}

/// The work of one attempt, under the lease.
async fn attempt(
    shared: &Shared,
    document_id: DocumentId,
    tenant_id: domain::TenantId,
    (object_key, file_name, knowledge_base_id): (String, Protected, Option<KnowledgeBaseId>),
    metadata: EventMetadata,
) -> Result<(), AttemptError> {
    let stream_id = document_id.stream_id();
    let documents = &shared.actors.documents;
    let fail = |reason: String| DocumentCommand::FailProcessing {
        worker: shared.worker_id.clone(),
        reason,
    };
    let model = shared.embedder.model().clone();
    let settings = match knowledge_base_settings(shared, knowledge_base_id).await? {
        Ok(settings) => settings,
        Err(pinned) => {
            let reason = format!(
                "knowledge base {} is pinned to embedding model {pinned}; this server embeds with {model}: \
                 configure that model, or reindex the knowledge base",
                knowledge_base_id.map(|id| id.to_string()).unwrap_or_default()
            );
            return finish(documents, stream_id, fail(reason), metadata).await;
        }
    };

    let extension = match &file_name {
        Protected::Sealed(sealed) => match shared.vault.open(tenant_id, "file_name", sealed).await {
            Ok(name) => name,
            // the tenant was erased while its document waited: nothing of it
            // can be read again, so retrying would only spin
            Err(error @ (KeyError::Missing { .. } | KeyError::NoKeys { .. } | KeyError::Erased { .. })) => {
                let command = DocumentCommand::FailProcessing {
                    worker: shared.worker_id.clone(),
                    reason: format!("the document cannot be decrypted: {error}"),
                };
                return finish(documents, stream_id, command, metadata).await;
            }
            Err(error) => return Err(error.into()),
        },
        Protected::Plain(plain) => plain.clone(),
    };
    let extension = FileName::parse(&extension).ok().and_then(|name| name.extension());
    let bytes = shared.objects.get(&object_key).await?;
    let chunking = ChunkingOptions {
        max_tokens: (settings.max_tokens as usize).min(shared.embedder.max_input_tokens()),
        overlap_tokens: settings.overlap_tokens as usize,
    };
    let tokenizer = shared.embedder.tokenizer();
    let tokenizer_name = tokenizer.name().to_owned();
    let limits = shared.options.extract_limits.clone();
    // a file that cannot be read as its type fails at once: the same bytes
    // would fail the same way on every retry
    let cut = tokio::task::spawn_blocking(move || {
        extract_with_limits(extension.as_deref(), &bytes, &limits).map(|extracted| {
            let characters = extracted.text.chars().count() as u64;
            let chunks = chunk_text(&extracted, tokenizer.as_ref(), &chunking);
            (characters, extracted.pages, chunks)
        })
    })
    .await?;
    let (characters, pages, chunks) = match cut {
        Ok(cut) => cut,
        Err(error) => {
            return finish(documents, stream_id, fail(error.to_string()), metadata).await;
        }
    };
    let stage = |stage: ProcessingStage| record_stage(shared, &stream_id, stage, &metadata);
    if !stage(ProcessingStage::Extracted { characters, pages }).await? {
        return Ok(());
    }
    if !stage(ProcessingStage::Chunked {
        chunk_count: chunks.len() as u32,
        settings: Some(settings),
        tokenizer: Some(tokenizer_name),
    })
    .await?
    {
        return Ok(());
    }
    let embedder = shared.embedder.clone();
    let batches = chunks.len().div_ceil(EMBEDDING_BATCH) as u32;
    let mut vectors = Vec::with_capacity(chunks.len());
    for (index, batch) in chunks.chunks(EMBEDDING_BATCH).enumerate() {
        let texts: Vec<String> = batch.iter().map(|chunk| chunk.text.clone()).collect();
        // an embedder error that may pass (a model server out of reach) is
        // retried with backoff like any other; one that will not fails now
        let embedded = match embedder.embed(&texts).await {
            Ok(embedded) => embedded,
            Err(error @ EmbedError::Rejected { .. }) => {
                return finish(documents, stream_id, fail(error.to_string()), metadata).await;
            }
            Err(error) => return Err(error.into()),
        };
        vectors.extend(embedded);
        let done = ProcessingStage::Embedded {
            batch: index as u32 + 1,
            batches,
        };
        if !stage(done).await? {
            return Ok(());
        }
    }
    let artifact = ChunkArtifact {
        embedder: model.name.clone(),
        dimensions: model.dimensions,
        chunks: chunks
            .into_iter()
            .zip(vectors)
            .map(|(chunk, vector)| ArtifactChunk {
                index: chunk.index,
                text: chunk.text,
                start_byte: chunk.start_byte as u64,
                vector,
                citation: chunk.citation,
            })
            .collect(),
    };
    let (encoded, sha256) = artifact.encode()?;
    // content-addressed: a retry that produces the same artifact rewrites
    // the same object
    let artifact_key = format!("tenants/{tenant_id}/artifacts/{sha256}");
    shared.objects.put(&artifact_key, encoded).await?;
    let command = DocumentCommand::CompleteProcessing {
        worker: shared.worker_id.clone(),
        artifact: ArtifactRef {
            object_key: artifact_key,
            sha256,
            chunk_count: artifact.chunks.len() as u32,
            embedder: artifact.embedder,
            dimensions: artifact.dimensions,
            embedder_version: Some(model.version),
        },
    };
    finish(documents, stream_id, command, metadata).await
}

/// The chunking of the knowledge base a document was uploaded into, or the
/// server's; `Err` with the pinned model when the knowledge base takes only
/// vectors of another model than this server's.
async fn knowledge_base_settings(
    shared: &Shared,
    knowledge_base_id: Option<KnowledgeBaseId>,
) -> Result<Result<ChunkingSettings, EmbeddingModel>, AttemptError> {
    let Some(knowledge_base_id) = knowledge_base_id else {
        return Ok(Ok(shared.options.chunking));
    };
    let (knowledge_base, _) = shared
        .actors
        .knowledge_bases
        .inspect(knowledge_base_id.stream_id())
        .await?;
    if let Some(pinned) = knowledge_base.embedding_model {
        if pinned != *shared.embedder.model() {
            return Ok(Err(pinned));
        }
    }
    Ok(Ok(knowledge_base.chunking.unwrap_or(shared.options.chunking)))
}

/// Chunks embedded per call of the embedder, each batch a stage event.
const EMBEDDING_BATCH: usize = 32;

/// Records a stage of the attempt; `false` when the lease is no longer
/// this worker's (it expired and another took over, whose result counts),
/// so the attempt stops.
async fn record_stage(
    shared: &Shared,
    stream_id: &domain::StreamId,
    stage: ProcessingStage,
    metadata: &EventMetadata,
) -> Result<bool, AttemptError> {
    let command = DocumentCommand::RecordStage {
        worker: shared.worker_id.clone(),
        stage,
    };
    match shared
        .actors
        .documents
        .execute(stream_id.clone(), command, metadata.clone())
        .await
    {
        Ok(_) => Ok(true),
        Err(CommandError::Rejected(DomainError::NotLeaseHolder { .. } | DomainError::NotFound { .. })) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Sends the attempt's result: completed or failed.
async fn finish(
    documents: &actors::AggregateHandle<Document>,
    stream_id: domain::StreamId,
    command: DocumentCommand,
    metadata: EventMetadata,
) -> Result<(), AttemptError> {
    match documents.execute(stream_id, command, metadata).await {
        Ok(_) => Ok(()),
        // the lease expired and another worker took over: its result counts
        Err(CommandError::Rejected(DomainError::NotLeaseHolder { .. } | DomainError::NotFound { .. })) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
