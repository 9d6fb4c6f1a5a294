//! The vector projection: one HNSW index (hnsw_rs) per knowledge base over
//! the chunk embeddings of the documents linked to it.
//!
//! A document may be linked before or after it is processed, so the
//! projection keeps a little state per document — its artifact's key and
//! checksum and the knowledge bases it is in — and whichever event comes
//! second fetches the artifact and inserts the chunks. Chunks are loaded only
//! while a document is linked somewhere, and their text is kept here, so a
//! search never touches the object store.
//!
//! hnsw_rs cannot delete: removed chunks stay in the graph as tombstones
//! that searches skip (see `index.rs`), and a graph is rebuilt once
//! tombstones pass half its points.
//!
//! Delivery is at-least-once. Each event's stream version is remembered and
//! an event at or below it is ignored, so redelivered batches change
//! nothing. The node-local index persists a snapshot together with the
//! checkpoint it reflects (see `snapshot.rs`): every 1,000 events or 5 s of
//! activity, and in [`VectorProjection::persist`].
//! On open the last complete snapshot is loaded, hnsw_rs dumps included (the
//! loader hnsw_rs borrows from is leaked, see `index.rs`; a dump that does not
//! reload is rebuilt from the persisted vectors instead), and
//! [`Projection::checkpoint`] returns its position, so the runner redelivers
//! whatever the snapshot missed.

mod index;
mod persist;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use actors::artifact::ChunkArtifact;
use actors::db::Database;
use actors::objects::{ObjectStore, ObjectStoreError};
use actors::store::RecordedEvent;
use async_trait::async_trait;
use domain::document::{Document, DocumentEvent};
use domain::knowledge_base::{KnowledgeBase, KnowledgeBaseEvent};
use domain::tenant::TenantEvent;
use domain::{Aggregate, AnyEvent, DocumentId, KnowledgeBaseId, LogPosition, StreamId, TenantId};
use tokio::sync::Mutex;

use crate::consumed::{ConsumedProjection, PartitionOffset};
use crate::generations::GenerationName;
use crate::runtime::{Projection, ProjectionError};
use index::{normalised, DocumentChunks, KbGraph, KbIndex, StoredChunk};
use persist::{restore, write_snapshot};
use snapshot::ArtifactPointer;

/// The projection's name: keys its generations.
pub const VECTOR_PROJECTION: &str = "vector";
const PROJECTION_NAME: &str = VECTOR_PROJECTION;
/// A snapshot rewrites every changed graph, so it is taken when enough has
/// changed to be worth it rather than on every batch; what a crash loses is
/// simply redelivered.
const SNAPSHOT_EVERY_EVENTS: u64 = 1_000;
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Where generation `generation` of the index under `root` lives: `root`
/// itself for `default` (the layout before generations), `root/<name>`
/// otherwise. Names cannot clash with a snapshot's own entries (`gen-…`,
/// `CURRENT`), which have a hyphen or capitals.
pub fn generation_dir(root: &std::path::Path, generation: &GenerationName) -> PathBuf {
    if generation.is_default() {
        root.to_path_buf()
    } else {
        root.join(generation.as_str())
    }
}

/// Removes the snapshots of a generation's directory; for `default` only
/// its own snapshot entries, since the other generations live inside it.
pub fn remove_generation_dir(root: &std::path::Path, generation: &GenerationName) -> Result<(), VectorError> {
    let dir = generation_dir(root, generation);
    if generation.is_default() {
        return snapshot::remove_all(&dir);
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VectorError::Io { path: dir, source }),
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub document_id: DocumentId,
    pub chunk_index: u32,
    pub text: String,
    pub citation: actors::artifact::Citation,
    /// Cosine similarity to the query, in `[-1, 1]`; higher is better.
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error(
        "query has {actual} dimensions but knowledge base {knowledge_base_id} holds {expected}-dimensional vectors"
    )]
    DimensionMismatch {
        knowledge_base_id: KnowledgeBaseId,
        expected: usize,
        actual: usize,
    },
    #[error("query vector is unusable: {reason}")]
    InvalidQuery { reason: String },
    #[error("vector index i/o failed at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vector snapshot {path} is corrupt: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("dumping the index of knowledge base {knowledge_base_id} failed: {reason}")]
    Dump {
        knowledge_base_id: KnowledgeBaseId,
        reason: String,
    },
    #[error("vector index generation could not be resolved: {reason}")]
    Generation { reason: String },
    #[error("vector index task failed: {reason}")]
    Task { reason: String },
}

/// See the module documentation.
pub struct VectorProjection {
    /// The directory of the generation in use; changes only while `state`
    /// is held.
    dir: std::sync::RwLock<PathBuf>,
    generation: std::sync::RwLock<GenerationName>,
    /// Set by [`VectorProjection::open_live`]: where to look up the live
    /// generation and find its directory.
    follow: Option<Follow>,
    /// This node's name in erasure receipts.
    node: String,
    objects: Arc<dyn ObjectStore>,
    /// Everything the log decides; held for a whole batch, a snapshot or a
    /// reset, which serialises them.
    state: Mutex<State>,
    /// The graphs searches read, published apart from `state` so that a
    /// search waits for at most one graph change, never for a whole batch.
    indexes: RwLock<HashMap<KnowledgeBaseId, Arc<KbIndex>>>,
}

struct Follow {
    db: Database,
    root: PathBuf,
}

/// How an API node's index names itself in erasure receipts.
pub fn erasure_component(node: &str) -> String {
    format!("vector@{node}")
}

struct State {
    checkpoint: LogPosition,
    stream_versions: HashMap<String, i64>,
    /// The next offset of each Kafka partition, when fed from Kafka; kept
    /// in the snapshot with the state it produced.
    kafka_offsets: BTreeMap<(String, i32), i64>,
    documents: HashMap<DocumentId, DocumentState>,
    knowledge_bases: HashMap<KnowledgeBaseId, KnowledgeBaseState>,
    generation: u64,
    unsnapshotted_events: u64,
    last_snapshot: Instant,
    /// Erasures applied in memory whose snapshot (the one that removes the
    /// tenant's chunk texts from disk) is still to be written; acknowledged
    /// once it is.
    erasures_to_acknowledge: Vec<(uuid::Uuid, TenantId, usize)>,
}

impl State {
    fn empty() -> State {
        State {
            checkpoint: LogPosition::START,
            stream_versions: HashMap::new(),
            kafka_offsets: BTreeMap::new(),
            documents: HashMap::new(),
            knowledge_bases: HashMap::new(),
            generation: 0,
            unsnapshotted_events: 0,
            last_snapshot: Instant::now(),
            erasures_to_acknowledge: Vec::new(),
        }
    }

    fn snapshot_due(&self) -> bool {
        !self.erasures_to_acknowledge.is_empty()
            || self.unsnapshotted_events >= SNAPSHOT_EVERY_EVENTS
            || (self.unsnapshotted_events > 0 && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY)
    }
}

#[derive(Default)]
struct DocumentState {
    artifact: Option<ArtifactPointer>,
    linked: BTreeSet<KnowledgeBaseId>,
    /// Loaded while `linked` is not empty and the artifact had chunks.
    chunks: Option<Arc<DocumentChunks>>,
}

impl DocumentState {
    fn is_empty(&self) -> bool {
        self.artifact.is_none() && self.linked.is_empty()
    }
}

struct KnowledgeBaseState {
    members: BTreeSet<DocumentId>,
    index: Arc<KbIndex>,
    /// Whose it is: a tenant's erasure drops its knowledge bases. `None`
    /// only in a snapshot written before owners were recorded.
    tenant_id: Option<TenantId>,
}

fn event_error(event: &RecordedEvent, reason: impl Into<String>) -> ProjectionError {
    ProjectionError::Event {
        projection: PROJECTION_NAME.to_owned(),
        event_id: event.event_id,
        position: event.log_position,
        reason: reason.into(),
    }
}

fn io_failure(error: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Io {
        projection: PROJECTION_NAME.to_owned(),
        reason: error.to_string(),
    }
}

/// The entity id at the end of a `<category>-<uuid>` stream id.
fn stream_uuid(stream_id: &StreamId) -> Option<uuid::Uuid> {
    let raw = stream_id.as_str();
    raw.get(raw.len().checked_sub(36)?..)?.parse().ok()
}

/// Runs CPU-bound work that borrows the caller's state without stalling the
/// runtime's other tasks; a current-thread runtime (tests) has no other
/// worker to hand them to, so the work simply runs in place there.
fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Changes one graph on the blocking pool, holding its write lock.
async fn change_graph<R: Send + 'static>(
    index: &Arc<KbIndex>,
    change: impl FnOnce(&mut KbGraph) -> R + Send + 'static,
) -> Result<R, ProjectionError> {
    let index = Arc::clone(index);
    tokio::task::spawn_blocking(move || change(&mut index.write()))
        .await
        .map_err(|error| io_failure(format!("changing the index failed: {error}")))
}

impl VectorProjection {
    /// Opens the projection in `dir`, loading the last complete snapshot. A
    /// snapshot that fails verification is discarded with a warning and
    /// the projection starts from the beginning of the log: the index is
    /// derived data, and a full replay restores it.
    pub async fn open(dir: PathBuf, objects: Arc<dyn ObjectStore>) -> Result<VectorProjection, VectorError> {
        let root = dir.clone();
        let (state, indexes) = tokio::task::spawn_blocking(move || restore(&root))
            .await
            .map_err(|error| VectorError::Task {
                reason: error.to_string(),
            })??;
        Ok(VectorProjection {
            dir: std::sync::RwLock::new(dir),
            generation: std::sync::RwLock::new(GenerationName::default_generation()),
            follow: None,
            node: "local".to_owned(),
            objects,
            state: Mutex::new(state),
            indexes: RwLock::new(indexes),
        })
    }

    /// Opens the live generation of the index under `root` (see
    /// [`generation_dir`]) and follows the pointer: when a replay switches
    /// it, [`Projection::retargeted`] persists the generation in use, loads
    /// the new one's snapshot in its place and tells the runner to resume
    /// from that snapshot's checkpoint. Searches read the generation in use
    /// meanwhile, so they never see a half-loaded one.
    pub async fn open_live(
        root: PathBuf,
        db: Database,
        objects: Arc<dyn ObjectStore>,
    ) -> Result<VectorProjection, VectorError> {
        let live = crate::generations::live_on(&db, VECTOR_PROJECTION)
            .await
            .map_err(|error| VectorError::Generation {
                reason: error.to_string(),
            })?;
        let mut projection = VectorProjection::open(generation_dir(&root, &live), objects).await?;
        projection.generation = std::sync::RwLock::new(live);
        projection.follow = Some(Follow { db, root });
        Ok(projection)
    }

    /// Names this node in erasure receipts (`vector@<node>`).
    pub fn with_node(mut self, node: impl Into<String>) -> VectorProjection {
        self.node = node.into();
        self
    }

    /// Acknowledges the erasures whose snapshot is now on disk. Without a
    /// database (an index opened alone, in tests) there is nowhere to write.
    async fn acknowledge_erasures(&self, state: &mut State) {
        let Some(follow) = &self.follow else {
            state.erasures_to_acknowledge.clear();
            return;
        };
        let component = erasure_component(&self.node);
        let mut kept = Vec::new();
        for (erasure_id, tenant_id, dropped) in std::mem::take(&mut state.erasures_to_acknowledge) {
            let detail = format!("{dropped} knowledge bases dropped; the snapshot without them is on disk");
            if let Err(error) =
                crate::erasure::acknowledge(&follow.db, erasure_id, tenant_id, &component, &detail).await
            {
                tracing::warn!(%erasure_id, %tenant_id, %error, "could not acknowledge an erasure, retrying later");
                kept.push((erasure_id, tenant_id, dropped));
            }
        }
        state.erasures_to_acknowledge = kept;
    }

    /// The highest version of `stream_id` applied to the index (0 for a
    /// stream it has not seen): what a reader of a Kafka-fed index waits for.
    pub async fn applied_version(&self, stream_id: &StreamId) -> i64 {
        self.state
            .lock()
            .await
            .stream_versions
            .get(stream_id.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// The generation in use.
    pub fn generation(&self) -> GenerationName {
        self.generation.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn dir(&self) -> PathBuf {
        self.dir.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Loads generation `live` in place of the one in use, persisting that
    /// one first so that a rollback finds it where it stopped.
    async fn load_generation(&self, root: &std::path::Path, live: GenerationName) -> Result<(), VectorError> {
        let mut state = self.state.lock().await;
        let old_dir = self.dir();
        if let Err(error) = run_blocking(|| write_snapshot(&old_dir, &mut state)) {
            tracing::warn!(projection = PROJECTION_NAME, %error, "persisting the generation switched from failed");
        }
        let dir = generation_dir(root, &live);
        let load_from = dir.clone();
        let (restored, indexes) = tokio::task::spawn_blocking(move || restore(&load_from))
            .await
            .map_err(|error| VectorError::Task {
                reason: error.to_string(),
            })??;
        *state = restored;
        *self.indexes.write().unwrap_or_else(PoisonError::into_inner) = indexes;
        *self.dir.write().unwrap_or_else(PoisonError::into_inner) = dir;
        tracing::info!(projection = PROJECTION_NAME, generation = %live, checkpoint = %state.checkpoint, "switched generation");
        *self.generation.write().unwrap_or_else(PoisonError::into_inner) = live;
        Ok(())
    }

    /// The `top_k` chunks of knowledge base `kb` nearest to `query` by
    /// cosine similarity, best first. An unknown or empty knowledge base
    /// gives no hits.
    pub async fn search(
        &self,
        kb: KnowledgeBaseId,
        query: &[f32],
        top_k: usize,
    ) -> Result<Vec<VectorHit>, VectorError> {
        let query = normalised(query).ok_or_else(|| VectorError::InvalidQuery {
            reason: "it is empty, all zeros or not finite".to_owned(),
        })?;
        let index = self
            .indexes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&kb)
            .cloned();
        let Some(index) = index else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || {
            let graph = index.read();
            match graph.dimension() {
                None => Ok(Vec::new()),
                Some(expected) if expected != query.len() => Err(VectorError::DimensionMismatch {
                    knowledge_base_id: index.knowledge_base_id,
                    expected,
                    actual: query.len(),
                }),
                Some(_) => Ok(graph.search(&query, top_k)),
            }
        })
        .await
        .map_err(|error| VectorError::Task {
            reason: error.to_string(),
        })?
    }

    /// Writes a durable snapshot of everything applied so far.
    pub async fn persist(&self) -> Result<(), VectorError> {
        let mut state = self.state.lock().await;
        run_blocking(|| write_snapshot(&self.dir(), &mut state))
    }

    /// Drops every index and snapshot; the checkpoint goes back to the
    /// start of the log, so the runner replays it all.
    pub async fn reset(&self) -> Result<(), VectorError> {
        let mut state = self.state.lock().await;
        run_blocking(|| snapshot::remove_all(&self.dir()))?;
        let generation = state.generation;
        *state = State {
            generation,
            ..State::empty()
        };
        self.indexes.write().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }

    async fn apply_event(&self, state: &mut State, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let category = event.stream_id.category();
        if category != Document::CATEGORY && category != KnowledgeBase::CATEGORY && event.event_type != "TenantErased" {
            return Ok(());
        }
        let stream = event.stream_id.as_str();
        if state
            .stream_versions
            .get(stream)
            .is_some_and(|applied| event.stream_version <= *applied)
        {
            return Ok(());
        }
        let entity =
            stream_uuid(&event.stream_id).ok_or_else(|| event_error(event, "stream id does not end in a uuid"))?;
        let decoded = AnyEvent::decode(category, &event.event_type, event.schema_version, event.payload.clone())
            .map_err(|error| event_error(event, error.to_string()))?;
        match decoded {
            AnyEvent::Document(document_event) => {
                self.apply_document_event(state, DocumentId(entity), document_event, event)
                    .await?
            }
            AnyEvent::KnowledgeBase(kb_event) => {
                self.apply_knowledge_base_event(state, KnowledgeBaseId(entity), kb_event, event)
                    .await?
            }
            AnyEvent::Tenant(TenantEvent::TenantErased { erasure_id }) => {
                self.erase_tenant(state, TenantId(entity), erasure_id);
            }
            AnyEvent::Tenant(_) => {}
        }
        state.stream_versions.insert(stream.to_owned(), event.stream_version);
        Ok(())
    }

    async fn apply_document_event(
        &self,
        state: &mut State,
        document_id: DocumentId,
        document_event: DocumentEvent,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match document_event {
            DocumentEvent::DocumentProcessed { artifact } => {
                let pointer = ArtifactPointer {
                    object_key: artifact.object_key,
                    sha256: artifact.sha256,
                };
                let linked = state
                    .documents
                    .get(&document_id)
                    .map(|document| document.linked.clone())
                    .unwrap_or_default();
                // fetched before anything changes, so a failed fetch leaves
                // the state as it was for the redelivery
                let chunks = if linked.is_empty() {
                    None
                } else {
                    self.load_chunks(document_id, &pointer, event).await?
                };
                for kb in &linked {
                    if let Some(kb_state) = state.knowledge_bases.get(kb) {
                        insert_document(&kb_state.index, document_id, chunks.clone()).await?;
                    }
                }
                let document = state.documents.entry(document_id).or_default();
                document.artifact = Some(pointer);
                document.chunks = chunks;
            }
            DocumentEvent::DocumentDeleted {} => {
                // a deleted document leaves every knowledge base; linking it
                // again takes a new link event
                if let Some(document) = state.documents.remove(&document_id) {
                    for kb in &document.linked {
                        if let Some(kb_state) = state.knowledge_bases.get_mut(kb) {
                            kb_state.members.remove(&document_id);
                            change_graph(&kb_state.index, move |graph| graph.remove_document(document_id)).await?;
                        }
                    }
                }
            }
            DocumentEvent::DocumentRegistered { .. }
            | DocumentEvent::ProcessingStarted { .. }
            | DocumentEvent::ProcessingFailed { .. }
            | DocumentEvent::RetryScheduled { .. }
            | DocumentEvent::RetryRequested {}
            // the new version's chunks replace the old ones when it is processed
            | DocumentEvent::DocumentVersionAdded { .. }
            | DocumentEvent::TextExtracted { .. }
            | DocumentEvent::TextChunked { .. }
            | DocumentEvent::EmbeddingBatchCompleted { .. }
            | DocumentEvent::UploadRequested { .. }
            | DocumentEvent::UploadRejected { .. }
            | DocumentEvent::UploadExpired { .. } => {}
        }
        Ok(())
    }

    async fn apply_knowledge_base_event(
        &self,
        state: &mut State,
        kb: KnowledgeBaseId,
        kb_event: KnowledgeBaseEvent,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match kb_event {
            KnowledgeBaseEvent::KnowledgeBaseCreated { tenant_id, .. } => {
                self.ensure_knowledge_base(state, kb);
                if let Some(kb_state) = state.knowledge_bases.get_mut(&kb) {
                    kb_state.tenant_id = Some(tenant_id);
                }
            }
            KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id } => {
                let index = self.ensure_knowledge_base(state, kb);
                let document = state.documents.entry(document_id).or_default();
                let (loaded, artifact) = (document.chunks.clone(), document.artifact.clone());
                let chunks = match (loaded, artifact) {
                    (Some(chunks), _) => Some(chunks),
                    (None, Some(pointer)) => self.load_chunks(document_id, &pointer, event).await?,
                    (None, None) => None,
                };
                insert_document(&index, document_id, chunks.clone()).await?;
                if let Some(kb_state) = state.knowledge_bases.get_mut(&kb) {
                    kb_state.members.insert(document_id);
                }
                let document = state.documents.entry(document_id).or_default();
                document.linked.insert(kb);
                document.chunks = chunks;
            }
            KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id } => {
                if let Some(kb_state) = state.knowledge_bases.get_mut(&kb) {
                    kb_state.members.remove(&document_id);
                    change_graph(&kb_state.index, move |graph| graph.remove_document(document_id)).await?;
                }
                unlink(state, document_id, kb);
            }
            KnowledgeBaseEvent::KnowledgeBaseDeleted {} => {
                self.indexes.write().unwrap_or_else(PoisonError::into_inner).remove(&kb);
                if let Some(kb_state) = state.knowledge_bases.remove(&kb) {
                    for document_id in kb_state.members {
                        unlink(state, document_id, kb);
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops every knowledge base of the tenant, with the chunks only they
    /// held, and asks for a snapshot at once so its texts leave the disk.
    fn erase_tenant(&self, state: &mut State, tenant_id: TenantId, erasure_id: uuid::Uuid) {
        let owned: Vec<KnowledgeBaseId> = state
            .knowledge_bases
            .iter()
            .filter(|(_, kb_state)| kb_state.tenant_id == Some(tenant_id))
            .map(|(kb, _)| *kb)
            .collect();
        for kb in &owned {
            self.indexes.write().unwrap_or_else(PoisonError::into_inner).remove(kb);
            if let Some(kb_state) = state.knowledge_bases.remove(kb) {
                for document_id in kb_state.members {
                    unlink(state, document_id, *kb);
                }
            }
        }
        state.erasures_to_acknowledge.push((erasure_id, tenant_id, owned.len()));
    }

    fn ensure_knowledge_base(&self, state: &mut State, kb: KnowledgeBaseId) -> Arc<KbIndex> {
        let kb_state = state.knowledge_bases.entry(kb).or_insert_with(|| KnowledgeBaseState {
            members: BTreeSet::new(),
            index: Arc::new(KbIndex::new(kb)),
            tenant_id: None,
        });
        let index = Arc::clone(&kb_state.index);
        self.indexes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kb, Arc::clone(&index));
        index
    }

    /// Fetches and verifies a document's artifact. A missing object (the
    /// document was deleted meanwhile) counts as no chunks; a corrupt one
    /// fails the event, since skipping it would silently lose the document.
    async fn load_chunks(
        &self,
        document_id: DocumentId,
        pointer: &ArtifactPointer,
        event: &RecordedEvent,
    ) -> Result<Option<Arc<DocumentChunks>>, ProjectionError> {
        let bytes = match self.objects.get(&pointer.object_key).await {
            Ok(bytes) => bytes,
            // erased: the tenant's objects are deleted or, where a copy
            // survived, unreadable without its destroyed key
            Err(ObjectStoreError::NotFound(key) | ObjectStoreError::KeyDestroyed { key, .. }) => {
                tracing::warn!(%document_id, object_key = %key, "artifact is gone, indexing the document without chunks");
                return Ok(None);
            }
            Err(error) => {
                return Err(io_failure(format!(
                    "fetching the artifact of document {document_id}: {error}"
                )))
            }
        };
        let sha256 = pointer.sha256.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let artifact = ChunkArtifact::decode(&bytes, &sha256).map_err(|error| error.to_string())?;
            chunks_of(document_id, artifact)
        })
        .await
        .map_err(|error| io_failure(format!("decoding the artifact of document {document_id}: {error}")))?;
        match decoded {
            Ok(chunks) => Ok(Some(Arc::new(chunks))),
            Err(reason) => Err(event_error(
                event,
                format!(
                    "artifact {} of document {document_id} is corrupt: {reason}",
                    pointer.object_key
                ),
            )),
        }
    }
}

/// Normalises an artifact's vectors. A chunk whose vector has no direction
/// (all zeros) cannot be ranked by cosine and is left out; a vector of the
/// wrong length or with a NaN means the artifact is broken.
fn chunks_of(document_id: DocumentId, artifact: ChunkArtifact) -> Result<DocumentChunks, String> {
    let dimension = artifact.dimensions as usize;
    let mut chunks = Vec::with_capacity(artifact.chunks.len());
    for chunk in artifact.chunks {
        if chunk.vector.len() != dimension {
            return Err(format!(
                "chunk {} has {} dimensions, the artifact declares {dimension}",
                chunk.index,
                chunk.vector.len()
            ));
        }
        if !chunk.vector.iter().all(|value| value.is_finite()) {
            return Err(format!("chunk {} has a non-finite component", chunk.index));
        }
        let Some(vector) = normalised(&chunk.vector) else {
            tracing::warn!(%document_id, chunk_index = chunk.index, "chunk vector is all zeros, leaving it out");
            continue;
        };
        chunks.push(StoredChunk {
            index: chunk.index,
            text: chunk.text,
            vector,
            citation: chunk.citation,
        });
    }
    Ok(DocumentChunks { dimension, chunks })
}

async fn insert_document(
    index: &Arc<KbIndex>,
    document_id: DocumentId,
    chunks: Option<Arc<DocumentChunks>>,
) -> Result<(), ProjectionError> {
    let knowledge_base_id = index.knowledge_base_id;
    let outcome = change_graph(index, move |graph| graph.replace_document(document_id, chunks)).await?;
    if let Some(expected) = outcome.dimension_conflict {
        tracing::warn!(
            %document_id,
            %knowledge_base_id,
            expected,
            "document vectors have another dimension than the knowledge base, leaving them out"
        );
    }
    Ok(())
}

/// Forgets that `document_id` is in `kb`, and its chunks once it is in no
/// knowledge base at all.
fn unlink(state: &mut State, document_id: DocumentId, kb: KnowledgeBaseId) {
    let Some(document) = state.documents.get_mut(&document_id) else {
        return;
    };
    document.linked.remove(&kb);
    if document.linked.is_empty() {
        document.chunks = None;
    }
    if document.is_empty() {
        state.documents.remove(&document_id);
    }
}

#[async_trait]
impl Projection for VectorProjection {
    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    async fn checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        Ok(self.state.lock().await.checkpoint)
    }

    /// One primary-key read per round of the runner; the load itself only
    /// when the pointer moved.
    async fn retargeted(&self) -> Result<bool, ProjectionError> {
        let Some(follow) = &self.follow else {
            return Ok(false);
        };
        let live = crate::generations::live_on(&follow.db, VECTOR_PROJECTION)
            .await
            .map_err(|source| ProjectionError::Database {
                projection: PROJECTION_NAME.to_owned(),
                source,
            })?;
        if live == self.generation() {
            return Ok(false);
        }
        self.load_generation(&follow.root, live).await.map_err(io_failure)?;
        Ok(true)
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let mut state = self.state.lock().await;
        for event in events {
            if event.log_position <= state.checkpoint {
                continue;
            }
            self.apply_event(&mut state, event).await?;
            state.checkpoint = event.log_position;
            state.unsnapshotted_events += 1;
        }
        if state.snapshot_due() {
            // the batch is applied either way; a failed snapshot only means
            // a longer replay after a restart, and the next one retries
            match run_blocking(|| write_snapshot(&self.dir(), &mut state)) {
                Ok(()) => self.acknowledge_erasures(&mut state).await,
                Err(error) => tracing::warn!(projection = PROJECTION_NAME, %error, "vector snapshot failed"),
            }
        }
        Ok(())
    }
}

/// Fed from Kafka, the index keeps its offsets in its own snapshot, beside
/// the state they produced: it is node-local, like the snapshot.
#[async_trait]
impl ConsumedProjection for VectorProjection {
    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    async fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<Vec<PartitionOffset>, ProjectionError> {
        let state = self.state.lock().await;
        Ok(partitions
            .iter()
            .filter_map(|(topic, partition)| {
                state
                    .kafka_offsets
                    .get(&(topic.clone(), *partition))
                    .map(|next_offset| PartitionOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        next_offset: *next_offset,
                    })
            })
            .collect())
    }

    async fn apply_consumed(
        &self,
        events: &[RecordedEvent],
        offsets: &[PartitionOffset],
    ) -> Result<(), ProjectionError> {
        // a replay may have switched the live generation
        Projection::retargeted(self).await?;
        let mut state = self.state.lock().await;
        for event in events {
            let applied = state
                .stream_versions
                .get(event.stream_id.as_str())
                .copied()
                .unwrap_or(0);
            if event.stream_version > applied + 1 && is_indexed_category(&event.stream_id) {
                for earlier in self.missing_versions(event, applied).await? {
                    self.apply_event(&mut state, &earlier).await?;
                }
            }
            self.apply_event(&mut state, event).await?;
            state.unsnapshotted_events += 1;
        }
        for offset in offsets {
            let slot = state
                .kafka_offsets
                .entry((offset.topic.clone(), offset.partition))
                .or_insert(0);
            *slot = (*slot).max(offset.next_offset);
        }
        if state.snapshot_due() {
            if let Err(error) = run_blocking(|| write_snapshot(&self.dir(), &mut state)) {
                tracing::warn!(projection = PROJECTION_NAME, %error, "vector snapshot failed");
            }
        }
        Ok(())
    }
}

fn is_indexed_category(stream_id: &StreamId) -> bool {
    let category = stream_id.category();
    category == Document::CATEGORY || category == KnowledgeBase::CATEGORY
}

impl VectorProjection {
    /// The versions of `event`'s stream between `applied` and `event`, from
    /// the event store: a partitioned feed can skip a version that a relay
    /// sent again later.
    async fn missing_versions(
        &self,
        event: &RecordedEvent,
        applied: i64,
    ) -> Result<Vec<RecordedEvent>, ProjectionError> {
        let Some(follow) = &self.follow else {
            return Err(event_error(
                event,
                "a version is missing and this index has no event store to read it from",
            ));
        };
        let stream = follow
            .db
            .event_store()
            .read_stream(&event.stream_id, applied)
            .await
            .map_err(|source| ProjectionError::Store {
                projection: PROJECTION_NAME.to_owned(),
                source,
            })?;
        Ok(stream
            .into_iter()
            .filter(|earlier| earlier.stream_version < event.stream_version)
            .collect())
    }
}
