//! The vector projection against real files: events are appended to a SQLite
//! event store, artifacts are encoded into a local object store, and the
//! projection is driven by the projection runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use actors::artifact::{ArtifactChunk, ChunkArtifact};
use actors::db::{ConnectOptions, Database};
use actors::objects::{LocalObjectStore, ObjectStore};
use actors::store::{EventStore, ExpectedVersion, NewEvent};
use domain::document::{ArtifactRef, DocumentEvent};
use domain::event::EventPayload;
use domain::knowledge_base::KnowledgeBaseEvent;
use domain::{DocumentId, EventMetadata, KnowledgeBaseId, LogPosition, StreamId, TenantId};
use projections::runtime::{catch_up_to_head, Projection, ProjectionError};
use projections::vector::{VectorError, VectorHit, VectorProjection};
use proptest::prelude::*;
use uuid::Uuid;

const DIMENSION: usize = 8;

struct Harness {
    directory: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    objects: Arc<LocalObjectStore>,
    tenant: TenantId,
}

impl Harness {
    async fn new() -> Harness {
        let directory = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", directory.path().join("t.db").display());
        let database = Database::connect(&url, &ConnectOptions::default())
            .await
            .expect("sqlite opens");
        database.migrate_up().await.expect("migrations apply");
        let objects = Arc::new(LocalObjectStore::new(directory.path().join("objects")));
        Harness {
            store: database.event_store(),
            objects,
            tenant: TenantId(Uuid::new_v4()),
            directory,
        }
    }

    fn vector_dir(&self) -> PathBuf {
        self.directory.path().join("vectors")
    }

    async fn open(&self) -> VectorProjection {
        let objects: Arc<dyn ObjectStore> = self.objects.clone();
        VectorProjection::open(self.vector_dir(), objects)
            .await
            .expect("vector projection opens")
    }

    async fn append(&self, stream_id: StreamId, payload: &impl EventPayload) -> LogPosition {
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: payload.event_type().to_owned(),
            schema_version: domain::SCHEMA_VERSION,
            data: payload.to_data(),
            metadata: EventMetadata::system(Uuid::new_v4()),
        };
        self.store
            .append(&stream_id, ExpectedVersion::Any, vec![event])
            .await
            .expect("append")
            .log_position
    }

    async fn create_kb(&self) -> KnowledgeBaseId {
        let kb = KnowledgeBaseId(Uuid::new_v4());
        let created = KnowledgeBaseEvent::KnowledgeBaseCreated {
            knowledge_base_id: kb,
            tenant_id: self.tenant,
            name: domain::Protected::Plain(format!("kb {kb}")),
            category: None,
            embedding_model: None,
            chunking: None,
        };
        self.append(kb.stream_id(), &created).await;
        kb
    }

    async fn link(&self, kb: KnowledgeBaseId, document_id: DocumentId) {
        let event = KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id };
        self.append(kb.stream_id(), &event).await;
    }

    async fn unlink(&self, kb: KnowledgeBaseId, document_id: DocumentId) {
        let event = KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id };
        self.append(kb.stream_id(), &event).await;
    }

    async fn delete_kb(&self, kb: KnowledgeBaseId) {
        self.append(kb.stream_id(), &KnowledgeBaseEvent::KnowledgeBaseDeleted {})
            .await;
    }

    async fn delete_document(&self, document_id: DocumentId) {
        self.append(document_id.stream_id(), &DocumentEvent::DocumentDeleted {})
            .await;
    }

    /// Stores an artifact with one chunk per vector and records the
    /// document as processed; returns the artifact's object key.
    async fn process(&self, document_id: DocumentId, chunks: &[(&str, Vec<f32>)]) -> String {
        let artifact = ChunkArtifact {
            embedder: "test".into(),
            dimensions: DIMENSION as u32,
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(index, (text, vector))| ArtifactChunk {
                    index: index as u32,
                    text: (*text).to_owned(),
                    start_byte: 0,
                    vector: vector.clone(),
                    citation: actors::artifact::Citation {
                        page_start: Some(index as u32 + 1),
                        page_end: Some(index as u32 + 1),
                        ..Default::default()
                    },
                })
                .collect(),
        };
        let (bytes, sha256) = artifact.encode().expect("artifact encodes");
        let object_key = format!("artifacts/{document_id}/{}.json", Uuid::new_v4());
        self.objects.put(&object_key, bytes).await.expect("artifact stored");
        self.record_processed(document_id, &object_key, sha256, chunks.len())
            .await;
        object_key
    }

    async fn record_processed(&self, document_id: DocumentId, object_key: &str, sha256: String, chunk_count: usize) {
        let processed = DocumentEvent::DocumentProcessed {
            artifact: ArtifactRef {
                object_key: object_key.to_owned(),
                sha256,
                chunk_count: chunk_count as u32,
                embedder: "test".into(),
                dimensions: DIMENSION as u32,
                embedder_version: None,
            },
        };
        self.append(document_id.stream_id(), &processed).await;
    }

    async fn catch_up(&self, projection: &VectorProjection) -> LogPosition {
        catch_up_to_head(self.store.as_ref(), projection, 7)
            .await
            .expect("catch up")
    }
}

/// A unit vector along `axis`, nudged towards `lean` so that neighbours have
/// an order.
fn axis(axis: usize, lean: usize, amount: f32) -> Vec<f32> {
    let mut vector = vec![0.0; DIMENSION];
    vector[axis % DIMENSION] = 1.0;
    vector[lean % DIMENSION] += amount;
    vector
}

fn new_document() -> DocumentId {
    DocumentId(Uuid::new_v4())
}

fn documents_of(hits: &[VectorHit]) -> BTreeSet<DocumentId> {
    hits.iter().map(|hit| hit.document_id).collect()
}

#[tokio::test]
async fn search_returns_the_nearest_chunk_first_with_its_text() {
    let harness = Harness::new().await;
    let kb = harness.create_kb().await;
    let document = new_document();
    harness.link(kb, document).await;
    harness
        .process(
            document,
            &[
                ("about apples", axis(0, 1, 0.1)),
                ("about pears", axis(2, 3, 0.1)),
                ("about plums", axis(4, 5, 0.1)),
            ],
        )
        .await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;

    let hits = projection.search(kb, &axis(2, 3, 0.2), 2).await.expect("search");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].document_id, document);
    assert_eq!(hits[0].chunk_index, 1);
    assert_eq!(hits[0].text, "about pears");
    assert!(hits[0].score > 0.99 && hits[0].score <= 1.0 + 1e-6, "{hits:?}");
    assert!(hits[0].score > hits[1].score);

    // the query's length does not matter, only its direction
    let scaled: Vec<f32> = axis(2, 3, 0.2).iter().map(|value| value * 40.0).collect();
    assert_eq!(projection.search(kb, &scaled, 2).await.expect("search"), hits);
}

#[tokio::test]
async fn linking_before_or_after_processing_both_index() {
    let harness = Harness::new().await;
    let kb = harness.create_kb().await;
    let linked_first = new_document();
    let processed_first = new_document();
    harness.link(kb, linked_first).await;
    harness
        .process(linked_first, &[("linked first", axis(0, 0, 0.0))])
        .await;
    harness
        .process(processed_first, &[("processed first", axis(1, 1, 0.0))])
        .await;

    let projection = harness.open().await;
    harness.catch_up(&projection).await;
    // processed but not linked yet: not searchable
    let hits = projection.search(kb, &axis(1, 1, 0.0), 10).await.unwrap();
    assert_eq!(documents_of(&hits), BTreeSet::from([linked_first]));

    harness.link(kb, processed_first).await;
    harness.catch_up(&projection).await;
    let hits = projection.search(kb, &axis(1, 1, 0.0), 10).await.unwrap();
    assert_eq!(hits[0].document_id, processed_first);
    assert_eq!(hits[0].text, "processed first");
    assert_eq!(documents_of(&hits), BTreeSet::from([linked_first, processed_first]));
}

#[tokio::test]
async fn reprocessing_replaces_the_chunks() {
    let harness = Harness::new().await;
    let kb = harness.create_kb().await;
    let document = new_document();
    harness.link(kb, document).await;
    harness
        .process(document, &[("old", axis(0, 0, 0.0)), ("old too", axis(1, 1, 0.0))])
        .await;
    harness.process(document, &[("new", axis(2, 2, 0.0))]).await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;

    let hits = projection.search(kb, &axis(0, 0, 0.0), 10).await.unwrap();
    let texts: Vec<&str> = hits.iter().map(|hit| hit.text.as_str()).collect();
    assert_eq!(texts, vec!["new"]);
}

#[tokio::test]
async fn removing_or_deleting_excludes_the_chunks() {
    let harness = Harness::new().await;
    let kb = harness.create_kb().await;
    let other_kb = harness.create_kb().await;
    let removed = new_document();
    let deleted = new_document();
    let kept = new_document();
    for document in [removed, deleted, kept] {
        harness.link(kb, document).await;
    }
    harness.link(other_kb, deleted).await;
    harness.process(removed, &[("removed", axis(0, 0, 0.0))]).await;
    harness.process(deleted, &[("deleted", axis(0, 1, 0.1))]).await;
    harness.process(kept, &[("kept", axis(0, 2, 0.3))]).await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;
    let query = axis(0, 0, 0.0);
    assert_eq!(
        documents_of(&projection.search(kb, &query, 10).await.unwrap()),
        BTreeSet::from([removed, deleted, kept])
    );

    harness.unlink(kb, removed).await;
    harness.delete_document(deleted).await;
    harness.catch_up(&projection).await;
    let hits = projection.search(kb, &query, 10).await.unwrap();
    assert_eq!(documents_of(&hits), BTreeSet::from([kept]));
    // a deleted document leaves every knowledge base
    assert!(projection.search(other_kb, &query, 10).await.unwrap().is_empty());

    harness.delete_kb(kb).await;
    harness.catch_up(&projection).await;
    assert!(projection.search(kb, &query, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn knowledge_bases_are_isolated() {
    let harness = Harness::new().await;
    let kb_a = harness.create_kb().await;
    let kb_b = harness.create_kb().await;
    let in_a = new_document();
    let in_b = new_document();
    harness.link(kb_a, in_a).await;
    harness.link(kb_b, in_b).await;
    harness.process(in_a, &[("only in a", axis(0, 0, 0.0))]).await;
    harness.process(in_b, &[("only in b", axis(5, 5, 0.0))]).await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;

    // the query sits right on a's chunk, yet b only ever answers with b
    let hits_b = projection.search(kb_b, &axis(0, 0, 0.0), 10).await.unwrap();
    assert_eq!(documents_of(&hits_b), BTreeSet::from([in_b]));
    let hits_a = projection.search(kb_a, &axis(5, 5, 0.0), 10).await.unwrap();
    assert_eq!(documents_of(&hits_a), BTreeSet::from([in_a]));
}

#[tokio::test]
async fn queries_are_checked_and_unknown_knowledge_bases_are_empty() {
    let harness = Harness::new().await;
    let kb = harness.create_kb().await;
    let empty_kb = harness.create_kb().await;
    let document = new_document();
    harness.link(kb, document).await;
    harness.process(document, &[("text", axis(0, 0, 0.0))]).await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;

    let unknown = KnowledgeBaseId(Uuid::new_v4());
    assert!(projection
        .search(unknown, &axis(0, 0, 0.0), 5)
        .await
        .unwrap()
        .is_empty());
    assert!(projection.search(empty_kb, &[1.0, 2.0], 5).await.unwrap().is_empty());
    assert!(projection.search(kb, &axis(0, 0, 0.0), 0).await.unwrap().is_empty());

    let error = projection.search(kb, &[1.0, 0.0, 0.0], 5).await.unwrap_err();
    assert!(
        matches!(error, VectorError::DimensionMismatch { expected: DIMENSION, actual: 3, knowledge_base_id } if knowledge_base_id == kb),
        "{error}"
    );
    assert!(error.to_string().contains(&kb.to_string()), "{error}");
    for unusable in [vec![], vec![0.0; DIMENSION], vec![f32::NAN; DIMENSION]] {
        let error = projection.search(kb, &unusable, 5).await.unwrap_err();
        assert!(matches!(error, VectorError::InvalidQuery { .. }), "{error}");
    }
}

#[tokio::test]
async fn a_missing_artifact_indexes_nothing_and_a_corrupt_one_fails_the_event() {
    let harness = Harness::new().await;
    let kb = harness.create_kb().await;
    let gone = new_document();
    harness.link(kb, gone).await;
    let key = harness.process(gone, &[("gone", axis(0, 0, 0.0))]).await;
    harness.objects.delete(&key).await.unwrap();
    let projection = harness.open().await;
    harness.catch_up(&projection).await;
    assert!(projection.search(kb, &axis(0, 0, 0.0), 5).await.unwrap().is_empty());

    let corrupt = new_document();
    harness.link(kb, corrupt).await;
    harness
        .objects
        .put("artifacts/corrupt.json", b"{}".to_vec())
        .await
        .unwrap();
    harness
        .record_processed(corrupt, "artifacts/corrupt.json", "0".repeat(64), 1)
        .await;
    let before = projection.checkpoint().await.unwrap();
    let error = catch_up_to_head(harness.store.as_ref(), &projection, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProjectionError::Event { ref projection, .. } if projection == "vector"),
        "{error}"
    );
    assert!(error.to_string().contains(&corrupt.to_string()), "{error}");
    // the link before it was applied, the corrupt event was not
    assert!(projection.checkpoint().await.unwrap() > before);
}

/// Searches every knowledge base with every axis.
async fn answers(projection: &VectorProjection, kbs: &[KnowledgeBaseId]) -> Vec<Vec<VectorHit>> {
    let mut answers = Vec::new();
    for kb in kbs {
        for direction in 0..DIMENSION {
            answers.push(
                projection
                    .search(*kb, &axis(direction, direction + 1, 0.2), 4)
                    .await
                    .unwrap(),
            );
        }
    }
    answers
}

/// Two knowledge bases sharing a document, with a removal so that the
/// graphs hold tombstones.
async fn populate(harness: &Harness) -> Vec<KnowledgeBaseId> {
    let kb_a = harness.create_kb().await;
    let kb_b = harness.create_kb().await;
    let documents: Vec<DocumentId> = (0..4).map(|_| new_document()).collect();
    for (number, document) in documents.iter().enumerate() {
        harness.link(kb_a, *document).await;
        if number % 2 == 0 {
            harness.link(kb_b, *document).await;
        }
        let chunks: Vec<(String, Vec<f32>)> = (0..3)
            .map(|chunk| {
                (
                    format!("doc {number} chunk {chunk}"),
                    axis(number * 2 + chunk, chunk, 0.3),
                )
            })
            .collect();
        let chunks: Vec<(&str, Vec<f32>)> = chunks
            .iter()
            .map(|(text, vector)| (text.as_str(), vector.clone()))
            .collect();
        harness.process(*document, &chunks).await;
    }
    harness.unlink(kb_a, documents[3]).await;
    vec![kb_a, kb_b]
}

#[tokio::test]
async fn persisted_state_reopens_identically_and_catches_up() {
    let harness = Harness::new().await;
    let kbs = populate(&harness).await;
    let projection = harness.open().await;
    let head = harness.catch_up(&projection).await;
    let before = answers(&projection, &kbs).await;
    projection.persist().await.expect("persist");
    drop(projection);

    let generations: Vec<String> = std::fs::read_dir(harness.vector_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        generations.iter().filter(|name| name.starts_with("gen-")).count(),
        1,
        "{generations:?}"
    );

    let reopened = harness.open().await;
    assert_eq!(reopened.checkpoint().await.unwrap(), head);
    assert_eq!(answers(&reopened, &kbs).await, before);

    let later = new_document();
    harness.link(kbs[1], later).await;
    harness
        .process(later, &[("added after reopening", axis(7, 6, 0.0))])
        .await;
    let new_head = harness.catch_up(&reopened).await;
    assert!(new_head > head);
    let hits = reopened.search(kbs[1], &axis(7, 6, 0.0), 1).await.unwrap();
    assert_eq!(hits[0].document_id, later);
    assert_eq!(hits[0].text, "added after reopening");

    // persisting again keeps one generation, reflecting the new checkpoint
    reopened.persist().await.expect("persist again");
    let again = harness.open().await;
    assert_eq!(again.checkpoint().await.unwrap(), new_head);
    assert_eq!(answers(&again, &kbs).await, answers(&reopened, &kbs).await);
}

#[tokio::test]
async fn without_a_snapshot_a_reopened_projection_starts_over() {
    let harness = Harness::new().await;
    let kbs = populate(&harness).await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;
    let expected = answers(&projection, &kbs).await;
    drop(projection);

    // a crash before any snapshot, plus a half-written generation and a
    // staged manifest left behind: both ignored and cleaned up
    let stray = harness.vector_dir().join("gen-00000000000000000042");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("state.json"), b"{ half").unwrap();
    std::fs::write(harness.vector_dir().join("CURRENT.partial"), b"{").unwrap();
    let reopened = harness.open().await;
    assert_eq!(reopened.checkpoint().await.unwrap(), LogPosition::START);
    assert!(!stray.exists());
    harness.catch_up(&reopened).await;
    assert_eq!(answers(&reopened, &kbs).await, expected);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_discarded_and_replayed() {
    let harness = Harness::new().await;
    let kbs = populate(&harness).await;
    let projection = harness.open().await;
    harness.catch_up(&projection).await;
    let expected = answers(&projection, &kbs).await;
    projection.persist().await.unwrap();
    drop(projection);

    let generation = std::fs::read_dir(harness.vector_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_string_lossy().starts_with("gen-"))
        .unwrap();
    std::fs::write(generation.join("state.json"), b"{\"tampered\": true}").unwrap();
    let reopened = harness.open().await;
    assert_eq!(reopened.checkpoint().await.unwrap(), LogPosition::START);
    harness.catch_up(&reopened).await;
    assert_eq!(answers(&reopened, &kbs).await, expected);
}

#[tokio::test]
async fn redelivery_changes_nothing() {
    let harness = Harness::new().await;
    let kbs = populate(&harness).await;
    let projection = harness.open().await;
    let head = harness.catch_up(&projection).await;
    let expected = answers(&projection, &kbs).await;

    // the whole log again, as after a lost acknowledgement, in odd batches
    let log = harness.store.read_log(LogPosition::START, 10_000).await.unwrap();
    for batch in log.chunks(3) {
        projection.apply_batch(batch).await.unwrap();
    }
    projection.apply_batch(&log).await.unwrap();
    assert_eq!(projection.checkpoint().await.unwrap(), head);
    assert_eq!(answers(&projection, &kbs).await, expected);

    // redelivered after a restart from an older snapshot: stream versions
    // still recognise every event at or below the snapshot
    projection.persist().await.unwrap();
    let reopened = harness.open().await;
    reopened.apply_batch(&log).await.unwrap();
    assert_eq!(answers(&reopened, &kbs).await, expected);
}

#[tokio::test]
async fn reset_and_replay_give_the_same_results() {
    let harness = Harness::new().await;
    let kbs = populate(&harness).await;
    let projection = harness.open().await;
    let head = harness.catch_up(&projection).await;
    let expected = answers(&projection, &kbs).await;
    projection.persist().await.unwrap();

    projection.reset().await.expect("reset");
    assert_eq!(projection.checkpoint().await.unwrap(), LogPosition::START);
    assert!(answers(&projection, &kbs).await.iter().all(Vec::is_empty));
    // nothing on disk survives a reset
    assert_eq!(harness.open().await.checkpoint().await.unwrap(), LogPosition::START);

    assert_eq!(harness.catch_up(&projection).await, head);
    assert_eq!(answers(&projection, &kbs).await, expected);
}

#[derive(Debug, Clone)]
enum Op {
    Link { document: usize, kb: usize },
    Unlink { document: usize, kb: usize },
    Process { document: usize, chunks: usize },
    Delete { document: usize },
    DeleteKb { kb: usize },
}

const DOCUMENTS: usize = 4;
const KBS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..DOCUMENTS, 0..KBS).prop_map(|(document, kb)| Op::Link { document, kb }),
        2 => (0..DOCUMENTS, 0..KBS).prop_map(|(document, kb)| Op::Unlink { document, kb }),
        3 => (0..DOCUMENTS, 1..4usize).prop_map(|(document, chunks)| Op::Process { document, chunks }),
        1 => (0..DOCUMENTS).prop_map(|document| Op::Delete { document }),
        1 => (0..KBS).prop_map(|kb| Op::DeleteKb { kb }),
    ]
}

/// Runs `ops` as the domain would allow them (a link needs a live knowledge
/// base and an unlinked document, and so on) and checks that no search ever
/// answers with a document the model says is not in that knowledge base.
async fn check_only_linked_documents_are_found(ops: Vec<Op>, batch_size: usize) -> Result<(), TestCaseError> {
    let harness = Harness::new().await;
    let projection = harness.open().await;
    let documents: Vec<DocumentId> = (0..DOCUMENTS).map(|_| new_document()).collect();
    let mut kbs = Vec::new();
    for _ in 0..KBS {
        kbs.push(harness.create_kb().await);
    }
    let mut live_kbs: BTreeSet<usize> = (0..KBS).collect();
    let mut links: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut processed: BTreeSet<usize> = BTreeSet::new();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Link { document, kb } => {
                if live_kbs.contains(&kb) && links.entry(kb).or_default().insert(document) {
                    harness.link(kbs[kb], documents[document]).await;
                }
            }
            Op::Unlink { document, kb } => {
                if live_kbs.contains(&kb) && links.entry(kb).or_default().remove(&document) {
                    harness.unlink(kbs[kb], documents[document]).await;
                }
            }
            Op::Process { document, chunks } => {
                let chunks: Vec<(String, Vec<f32>)> = (0..chunks)
                    .map(|chunk| (format!("step {step}"), axis(document + chunk, step, 0.5)))
                    .collect();
                let chunks: Vec<(&str, Vec<f32>)> = chunks
                    .iter()
                    .map(|(text, vector)| (text.as_str(), vector.clone()))
                    .collect();
                harness.process(documents[document], &chunks).await;
                processed.insert(document);
            }
            Op::Delete { document } => {
                harness.delete_document(documents[document]).await;
                processed.remove(&document);
                for linked in links.values_mut() {
                    linked.remove(&document);
                }
            }
            Op::DeleteKb { kb } => {
                if live_kbs.remove(&kb) {
                    harness.delete_kb(kbs[kb]).await;
                    links.remove(&kb);
                }
            }
        }
        catch_up_to_head(harness.store.as_ref(), &projection, batch_size)
            .await
            .map_err(|error| TestCaseError::fail(error.to_string()))?;

        for (number, kb) in kbs.iter().enumerate() {
            let allowed: BTreeSet<DocumentId> = links
                .get(&number)
                .map(|linked| linked.iter().map(|document| documents[*document]).collect())
                .unwrap_or_default();
            let mut found = BTreeSet::new();
            for direction in 0..DIMENSION {
                let hits = projection
                    .search(*kb, &axis(direction, direction, 0.0), 20)
                    .await
                    .map_err(|error| TestCaseError::fail(error.to_string()))?;
                found.extend(documents_of(&hits));
            }
            prop_assert!(
                found.is_subset(&allowed),
                "kb {number} answered {found:?}, linked {allowed:?}"
            );
            let searchable: BTreeSet<DocumentId> = links
                .get(&number)
                .map(|linked| {
                    linked
                        .iter()
                        .filter(|document| processed.contains(*document))
                        .map(|document| documents[*document])
                        .collect()
                })
                .unwrap_or_default();
            prop_assert_eq!(found, searchable, "kb {} after step {}", number, step);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn search_only_finds_linked_documents(ops in prop::collection::vec(op(), 1..24), batch_size in 1usize..5) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(check_only_linked_documents_are_found(ops, batch_size))?;
    }
}
