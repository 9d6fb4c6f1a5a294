//! Turning the projection's state into a snapshot generation and back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use domain::{DocumentId, KnowledgeBaseId};

use super::index::{self, DocumentChunks, KbGraph, KbIndex, Restored, StoredChunk};
use super::snapshot::{self, Manifest, SnapshotState};
use super::{DocumentState, KnowledgeBaseState, State, VectorError, PROJECTION_NAME};

/// Writes a new generation reflecting `state` and makes it current. Graphs
/// unchanged since the last snapshot are hard-linked from it instead of
/// dumped again.
pub(super) fn write_snapshot(root: &Path, state: &mut State) -> Result<(), VectorError> {
    let generation = state.generation + 1;
    let directory = snapshot::generation_dir(root, generation);
    if directory.exists() {
        std::fs::remove_dir_all(&directory).map_err(snapshot::io_error(&directory))?;
    }
    std::fs::create_dir_all(&directory).map_err(snapshot::io_error(&directory))?;

    let mut document_ids: Vec<&DocumentId> = state.documents.keys().collect();
    document_ids.sort();
    let mut documents = Vec::with_capacity(document_ids.len());
    let mut next_vector = 0u64;
    for document_id in &document_ids {
        let document = &state.documents[*document_id];
        let chunks = document.chunks.as_ref().map(|chunks| {
            let record = snapshot::ChunksRecord {
                dimension: chunks.dimension,
                first_vector: next_vector,
                chunks: chunks
                    .chunks
                    .iter()
                    .map(|chunk| snapshot::ChunkRecord {
                        index: chunk.index,
                        text: chunk.text.clone(),
                        citation: chunk.citation.clone(),
                    })
                    .collect(),
            };
            next_vector += chunks.chunks.len() as u64;
            record
        });
        documents.push(snapshot::DocumentRecord {
            document_id: **document_id,
            artifact: document.artifact.clone(),
            linked: document.linked.iter().copied().collect(),
            chunks,
        });
    }
    let vectors = document_ids
        .iter()
        .filter_map(|document_id| state.documents[*document_id].chunks.as_ref())
        .flat_map(|chunks| chunks.chunks.iter().map(|chunk| chunk.vector.as_slice()));
    let vectors_bytes = snapshot::write_vectors(&directory, vectors)?;

    let mut kb_ids: Vec<&KnowledgeBaseId> = state.knowledge_bases.keys().collect();
    kb_ids.sort();
    let mut knowledge_bases = Vec::with_capacity(kb_ids.len());
    for kb in kb_ids {
        let kb_state = &state.knowledge_bases[kb];
        let graph = kb_state.index.read();
        let mut entries: Vec<snapshot::EntryRecord> = graph
            .live_entries()
            .map(|(point_id, entry)| {
                debug_assert!(
                    state
                        .documents
                        .get(&entry.document_id)
                        .and_then(|document| document.chunks.as_ref())
                        .is_some_and(|chunks| Arc::ptr_eq(chunks, &entry.chunks)),
                    "kb {kb} indexes chunks of document {} that the document no longer holds",
                    entry.document_id
                );
                snapshot::EntryRecord {
                    point_id,
                    document_id: entry.document_id,
                    slot: entry.slot,
                }
            })
            .collect();
        entries.sort_by_key(|entry| entry.point_id);
        let dump = dump_graph(&graph, *kb, &directory)?;
        knowledge_bases.push(snapshot::KnowledgeBaseRecord {
            knowledge_base_id: *kb,
            tenant_id: kb_state.tenant_id,
            members: kb_state.members.iter().copied().collect(),
            dimension: graph.dimension(),
            points: graph.points(),
            next_point_id: graph.next_point_id(),
            entries,
            dump,
        });
    }

    let record = SnapshotState {
        checkpoint: state.checkpoint,
        stream_versions: state
            .stream_versions
            .iter()
            .map(|(stream, version)| (stream.clone(), *version))
            .collect(),
        kafka_offsets: state
            .kafka_offsets
            .iter()
            .map(|((topic, partition), next)| (topic.clone(), *partition, *next))
            .collect(),
        documents,
        knowledge_bases,
    };
    let (state_bytes, state_sha256) = snapshot::write_state(&directory, &record)?;
    snapshot::sync_dir(&directory)?;
    snapshot::switch_manifest(
        root,
        &Manifest {
            format: snapshot::FORMAT,
            generation,
            state_bytes,
            state_sha256,
            vectors_bytes,
        },
    )?;

    for (kb, kb_record) in record.knowledge_bases.iter().map(|kb| (kb.knowledge_base_id, kb)) {
        if let Some(kb_state) = state.knowledge_bases.get(&kb) {
            let mut graph = kb_state.index.write();
            graph.dirty = false;
            graph.last_dump = kb_record.dump.clone().map(|basename| (directory.clone(), basename));
        }
    }
    state.generation = generation;
    state.unsnapshotted_events = 0;
    state.last_snapshot = Instant::now();
    if let Err(error) = snapshot::remove_stale(root, Some(generation)) {
        tracing::warn!(projection = PROJECTION_NAME, %error, "could not remove old vector snapshots");
    }
    Ok(())
}

/// Puts the graph's dump into `directory`: hard links to the last dump when
/// the graph has not changed since, a fresh dump otherwise.
fn dump_graph(graph: &KbGraph, kb: KnowledgeBaseId, directory: &Path) -> Result<Option<String>, VectorError> {
    if graph.points() == 0 {
        return Ok(None);
    }
    if let (false, Some((previous, basename))) = (graph.dirty, graph.last_dump.as_ref()) {
        let linked = DUMP_SUFFIXES.iter().all(|suffix| {
            std::fs::hard_link(
                previous.join(format!("{basename}{suffix}")),
                directory.join(format!("{basename}{suffix}")),
            )
            .is_ok()
        });
        if linked {
            return Ok(Some(basename.clone()));
        }
    }
    let basename = graph
        .dump(directory, &format!("kb-{kb}"))
        .map_err(|reason| VectorError::Dump {
            knowledge_base_id: kb,
            reason,
        })?;
    if let Some(basename) = &basename {
        for suffix in DUMP_SUFFIXES {
            snapshot::sync_file(&directory.join(format!("{basename}{suffix}")))?;
        }
    }
    Ok(basename)
}

/// The files hnsw_rs's `file_dump` writes for a basename.
const DUMP_SUFFIXES: [&str; 2] = [".hnsw.graph", ".hnsw.data"];

/// Loads the current snapshot, or starts empty when there is none or it is
/// corrupt; leftovers of interrupted snapshots are removed either way.
pub(super) fn restore(root: &Path) -> Result<(State, HashMap<KnowledgeBaseId, Arc<KbIndex>>), VectorError> {
    std::fs::create_dir_all(root).map_err(snapshot::io_error(root))?;
    let loaded = snapshot::read_manifest(root).and_then(|manifest| match manifest {
        None => Ok(None),
        Some(manifest) => {
            let (record, vectors) = snapshot::read_generation(root, &manifest)?;
            let directory = snapshot::generation_dir(root, manifest.generation);
            rebuild_state(&directory, manifest.generation, record, &vectors).map(Some)
        }
    });
    match loaded {
        Ok(Some((state, indexes))) => {
            snapshot::remove_stale(root, Some(state.generation))?;
            Ok((state, indexes))
        }
        Ok(None) => {
            snapshot::remove_stale(root, None)?;
            Ok((State::empty(), HashMap::new()))
        }
        Err(error @ VectorError::CorruptSnapshot { .. }) => {
            tracing::warn!(projection = PROJECTION_NAME, %error, "discarding the vector snapshot, replaying the log from the start");
            snapshot::remove_all(root)?;
            Ok((State::empty(), HashMap::new()))
        }
        Err(error) => Err(error),
    }
}

fn rebuild_state(
    directory: &Path,
    generation: u64,
    record: SnapshotState,
    vectors: &[f32],
) -> Result<(State, HashMap<KnowledgeBaseId, Arc<KbIndex>>), VectorError> {
    let corrupt = |reason: String| VectorError::CorruptSnapshot {
        path: directory.join(snapshot::STATE_FILE),
        reason,
    };
    let mut documents = HashMap::with_capacity(record.documents.len());
    for document in record.documents {
        let chunks = match document.chunks {
            None => None,
            Some(chunks) => {
                let start = usize::try_from(chunks.first_vector)
                    .ok()
                    .and_then(|first| first.checked_mul(chunks.dimension));
                let length = chunks.chunks.len().checked_mul(chunks.dimension);
                let slice = start
                    .zip(length)
                    .and_then(|(start, length)| vectors.get(start..start.checked_add(length)?))
                    .ok_or_else(|| corrupt(format!("vectors of document {} are out of range", document.document_id)))?;
                let stored = chunks
                    .chunks
                    .into_iter()
                    .zip(slice.chunks_exact(chunks.dimension.max(1)))
                    .map(|(chunk, vector)| StoredChunk {
                        index: chunk.index,
                        text: chunk.text,
                        vector: vector.to_vec(),
                        citation: chunk.citation,
                    })
                    .collect();
                Some(Arc::new(DocumentChunks {
                    dimension: chunks.dimension,
                    chunks: stored,
                }))
            }
        };
        documents.insert(
            document.document_id,
            DocumentState {
                artifact: document.artifact,
                linked: document.linked.into_iter().collect(),
                chunks,
            },
        );
    }

    let mut knowledge_bases = HashMap::with_capacity(record.knowledge_bases.len());
    let mut indexes = HashMap::with_capacity(record.knowledge_bases.len());
    for kb in record.knowledge_bases {
        let mut entries = Vec::with_capacity(kb.entries.len());
        for entry in kb.entries {
            let chunks = documents
                .get(&entry.document_id)
                .and_then(|document: &DocumentState| document.chunks.clone())
                .filter(|chunks| entry.slot < chunks.chunks.len())
                .ok_or_else(|| {
                    corrupt(format!(
                        "knowledge base {} indexes a missing chunk of document {}",
                        kb.knowledge_base_id, entry.document_id
                    ))
                })?;
            entries.push((
                entry.point_id,
                index::Entry {
                    document_id: entry.document_id,
                    chunks,
                    slot: entry.slot,
                },
            ));
        }
        let dump = kb.dump.as_deref().map(|basename| (directory, basename));
        let (graph, restored) = KbGraph::restore(dump, kb.dimension, kb.points, kb.next_point_id, entries);
        if let Restored::Rebuilt { reason } = restored {
            if kb.points > 0 {
                tracing::warn!(knowledge_base_id = %kb.knowledge_base_id, %reason, "rebuilt the index from its vectors");
            }
        }
        let index = Arc::new(KbIndex::from_graph(kb.knowledge_base_id, graph));
        indexes.insert(kb.knowledge_base_id, Arc::clone(&index));
        knowledge_bases.insert(
            kb.knowledge_base_id,
            KnowledgeBaseState {
                members: kb.members.into_iter().collect(),
                index,
                tenant_id: kb.tenant_id,
            },
        );
    }

    let state = State {
        checkpoint: record.checkpoint,
        stream_versions: record.stream_versions.into_iter().collect(),
        kafka_offsets: record
            .kafka_offsets
            .into_iter()
            .map(|(topic, partition, next)| ((topic, partition), next))
            .collect(),
        documents,
        knowledge_bases,
        generation,
        unsnapshotted_events: 0,
        last_snapshot: Instant::now(),
        erasures_to_acknowledge: Vec::new(),
    };
    Ok((state, indexes))
}
