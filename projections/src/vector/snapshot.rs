//! The on-disk snapshot of the vector projection.
//!
//! Layout under the projection's directory:
//!
//! ```text
//! CURRENT                         manifest naming the complete generation
//! gen-00000000000000000007/
//!     state.json                  checkpoint, stream versions, documents, knowledge bases
//!     vectors.bin                 every indexed chunk's unit vector, f32 little-endian
//!     kb-<uuid>.hnsw.graph/.data  hnsw_rs dump per knowledge base
//! ```
//!
//! A generation is written whole into a fresh directory and synced before
//! `CURRENT` is replaced (write beside, sync, rename, sync the directory), so
//! a crash at any point leaves either the old or the new generation current,
//! never a half-written one. Directories not named by `CURRENT` are leftovers
//! and are removed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use actors::artifact::Citation;
use domain::{DocumentId, KnowledgeBaseId, LogPosition};
use serde::{Deserialize, Serialize};

use super::VectorError;

pub(crate) const FORMAT: u32 = 1;
const MANIFEST: &str = "CURRENT";
const MANIFEST_STAGING: &str = "CURRENT.partial";
const GENERATION_PREFIX: &str = "gen-";
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const VECTORS_FILE: &str = "vectors.bin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub generation: u64,
    pub state_bytes: u64,
    pub state_sha256: String,
    pub vectors_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotState {
    pub checkpoint: LogPosition,
    pub stream_versions: BTreeMap<String, i64>,
    /// Next offset per Kafka partition (topic, partition, offset), when the
    /// index is fed from Kafka; absent in snapshots written before.
    #[serde(default)]
    pub kafka_offsets: Vec<(String, i32, i64)>,
    pub documents: Vec<DocumentRecord>,
    pub knowledge_bases: Vec<KnowledgeBaseRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactPointer {
    pub object_key: String,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DocumentRecord {
    pub document_id: DocumentId,
    pub artifact: Option<ArtifactPointer>,
    pub linked: Vec<KnowledgeBaseId>,
    /// Present while the document's chunks are loaded (it is linked).
    pub chunks: Option<ChunksRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChunksRecord {
    pub dimension: usize,
    /// Index of the first vector in `vectors.bin`, in vectors.
    pub first_vector: u64,
    pub chunks: Vec<ChunkRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChunkRecord {
    pub index: u32,
    pub text: String,
    /// Absent in snapshots written before citations.
    #[serde(default)]
    pub citation: Citation,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct KnowledgeBaseRecord {
    pub knowledge_base_id: KnowledgeBaseId,
    /// Absent in snapshots written before owners were recorded.
    #[serde(default)]
    pub tenant_id: Option<domain::TenantId>,
    pub members: Vec<DocumentId>,
    pub dimension: Option<usize>,
    pub points: usize,
    pub next_point_id: usize,
    pub entries: Vec<EntryRecord>,
    /// Basename of the hnsw_rs dump in the generation directory.
    pub dump: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub point_id: usize,
    pub document_id: DocumentId,
    pub slot: usize,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VectorError + '_ {
    move |source| VectorError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> VectorError {
    VectorError::CorruptSnapshot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(crate) fn generation_dir(root: &Path, generation: u64) -> PathBuf {
    root.join(format!("{GENERATION_PREFIX}{generation:020}"))
}

/// The manifest of the current generation, `None` when nothing was ever
/// snapshotted.
pub(crate) fn read_manifest(root: &Path) -> Result<Option<Manifest>, VectorError> {
    let path = root.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|error| corrupt(&path, format!("unreadable manifest: {error}")))?;
    if manifest.format != FORMAT {
        return Err(corrupt(
            &path,
            format!("unsupported snapshot format {}", manifest.format),
        ));
    }
    Ok(Some(manifest))
}

/// Reads and verifies a generation's state and vectors.
pub(crate) fn read_generation(root: &Path, manifest: &Manifest) -> Result<(SnapshotState, Vec<f32>), VectorError> {
    let directory = generation_dir(root, manifest.generation);
    let state_path = directory.join(STATE_FILE);
    let state_bytes = fs::read(&state_path).map_err(io_error(&state_path))?;
    if state_bytes.len() as u64 != manifest.state_bytes
        || actors::artifact::sha256_hex(&state_bytes) != manifest.state_sha256
    {
        return Err(corrupt(&state_path, "does not match the manifest"));
    }
    let state: SnapshotState =
        serde_json::from_slice(&state_bytes).map_err(|error| corrupt(&state_path, error.to_string()))?;

    let vectors_path = directory.join(VECTORS_FILE);
    let mut vector_bytes = Vec::new();
    File::open(&vectors_path)
        .and_then(|mut file| file.read_to_end(&mut vector_bytes))
        .map_err(io_error(&vectors_path))?;
    if vector_bytes.len() as u64 != manifest.vectors_bytes || vector_bytes.len() % 4 != 0 {
        return Err(corrupt(&vectors_path, "does not match the manifest"));
    }
    let vectors = vector_bytes
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect();
    Ok((state, vectors))
}

/// Writes `vectors` (already flattened) to the generation directory,
/// synced; returns the byte count.
pub(crate) fn write_vectors<'a>(
    directory: &Path,
    vectors: impl Iterator<Item = &'a [f32]>,
) -> Result<u64, VectorError> {
    let path = directory.join(VECTORS_FILE);
    let file = File::create(&path).map_err(io_error(&path))?;
    let mut writer = BufWriter::new(file);
    let mut written = 0u64;
    for vector in vectors {
        for value in vector {
            writer.write_all(&value.to_le_bytes()).map_err(io_error(&path))?;
        }
        written += vector.len() as u64 * 4;
    }
    let file = writer
        .into_inner()
        .map_err(|error| io_error(&path)(error.into_error()))?;
    file.sync_all().map_err(io_error(&path))?;
    Ok(written)
}

/// Writes the state file, synced; returns its length and checksum.
pub(crate) fn write_state(directory: &Path, state: &SnapshotState) -> Result<(u64, String), VectorError> {
    let path = directory.join(STATE_FILE);
    let bytes = serde_json::to_vec(state).map_err(|error| corrupt(&path, format!("cannot serialise: {error}")))?;
    write_synced(&path, &bytes)?;
    Ok((bytes.len() as u64, actors::artifact::sha256_hex(&bytes)))
}

pub(crate) fn sync_file(path: &Path) -> Result<(), VectorError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(io_error(path))
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), VectorError> {
    // directories can be opened read-only and synced on unix; elsewhere the
    // rename is as durable as the platform makes it
    #[cfg(unix)]
    {
        sync_file(path)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), VectorError> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Makes `manifest` current: staged beside, synced, renamed over, and the
/// directory synced so the rename itself survives a crash.
pub(crate) fn switch_manifest(root: &Path, manifest: &Manifest) -> Result<(), VectorError> {
    let staging = root.join(MANIFEST_STAGING);
    let bytes = serde_json::to_vec(manifest).map_err(|error| corrupt(&staging, error.to_string()))?;
    write_synced(&staging, &bytes)?;
    let current = root.join(MANIFEST);
    fs::rename(&staging, &current).map_err(io_error(&current))?;
    sync_dir(root)
}

/// Removes every generation directory but `keep`, and a staged manifest.
pub(crate) fn remove_stale(root: &Path, keep: Option<u64>) -> Result<(), VectorError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(root)(error)),
    };
    let kept = keep.map(|generation| generation_dir(root, generation));
    for entry in entries {
        let entry = entry.map_err(io_error(root))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(GENERATION_PREFIX) && Some(&path) != kept.as_ref() {
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        } else if name == MANIFEST_STAGING {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Removes the manifest first, so a crash halfway leaves no current
/// generation rather than a partly deleted one, then everything else.
pub(crate) fn remove_all(root: &Path) -> Result<(), VectorError> {
    let manifest = root.join(MANIFEST);
    match fs::remove_file(&manifest) {
        Ok(()) => sync_dir(root)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&manifest)(error)),
    }
    remove_stale(root, None)
}
