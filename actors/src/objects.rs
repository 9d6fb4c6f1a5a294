//! The object-store port (document bytes and artifacts) and its adapters: a
//! local directory for the embedded mode, and S3 ([`S3ObjectStore`]) for
//! deployments that share objects between processes.
//!
//! Objects go in and out as [`ByteStream`]s, so that an object of any size
//! passes in bounded memory; `put` and `get` of a whole `Vec<u8>` are
//! shorthands over the streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::AsyncWriteExt;

mod encrypted;
mod s3;

pub use encrypted::{tenant_of_key, tenant_prefix, EncryptedObjectStore, TENANT_PREFIX};

pub use s3::{
    test_s3_settings, S3ObjectStore, S3Settings, STREAM_PART_SIZE, TEST_S3_ACCESS_KEY_VAR, TEST_S3_ENDPOINT_VAR,
    TEST_S3_SECRET_KEY_VAR,
};

/// The bytes of an object, in chunks of any size (empty ones included). An
/// `Err` item means the bytes could not be produced: a `put_stream` given
/// one stores nothing, and a reader of `get_stream` must not trust what it
/// read so far.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// The longest a presigned URL may stay valid: S3's limit for signature v4.
pub const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// A prefix that is not a folder of plain segments, or an empty one
    /// given to `delete_prefix`.
    #[error("invalid object prefix {0:?}")]
    InvalidPrefix(String),
    #[error("invalid presigned url expiry {0:?}: it must be from 1 second to 7 days")]
    InvalidExpiry(Duration),
    #[error("object store i/o failed for {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The body stream given to `put_stream` failed: the caller's side, not
    /// the store's, and nothing was stored.
    #[error("the body for object {key} failed: {source}")]
    Body {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The S3 server refused the credentials or the request's permissions.
    #[error("object store refused access to {target}: {reason} (check the access key and secret key)")]
    AccessDenied { target: String, reason: String },
    /// The S3 bucket is missing and could not be created, or cannot be used.
    #[error("object store bucket {bucket} is unavailable: {reason}")]
    Bucket { bucket: String, reason: String },
    /// An S3 request failed for another reason (network, server error).
    #[error("object store request for {target} failed: {reason}")]
    Request { target: String, reason: String },
    /// An encrypted object whose key no longer exists: its tenant was
    /// erased, and the object is as good as gone.
    #[error("object {key} can never be read again: {reason}")]
    KeyDestroyed { key: String, reason: String },
    /// An encrypted object that cannot be opened: its bytes fail
    /// authentication, or its key cannot be read.
    #[error("object {key} cannot be decrypted: {reason}")]
    Unreadable { key: String, reason: String },
    /// The S3 settings cannot be used (endpoint, region, bucket name).
    #[error("invalid object store settings: {0}")]
    Settings(String),
}

/// Where document bytes and artifacts live.
///
/// Keys are `/`-separated plain segments ([`validate_key`]), the same for
/// every adapter. A prefix names a folder of keys: `tenants/a` and
/// `tenants/a/` both mean the keys below `tenants/a/`, at any depth, and never
/// `tenants/ab/…` nor an object named `tenants/a` itself.
///
/// A layer that wraps a store and changes the bytes on their way (encryption,
/// compression) implements `put_stream` and `get_stream` and can leave `put`
/// and `get` to their defaults, which go through those two. It must decide
/// for itself what `size` reports and must not hand out the inner store's
/// presigned URLs, which would move bytes past it: returning `Ok(None)` makes
/// the API carry the bytes through the layer instead.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, replacing any object there; a reader never
    /// sees a partly written object.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectStoreError> {
        let body = futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed();
        self.put_stream(key, body).await.map(|_| ())
    }

    /// Stores a body of any length under `key` in bounded memory, replacing
    /// any object there, and returns the number of bytes stored. Readers see
    /// the old object until the new one is whole. An error (from the body:
    /// [`ObjectStoreError::Body`], or from the store) stores nothing and
    /// leaves an object already under `key` as it was.
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, ObjectStoreError>;

    /// The whole object in memory; prefer `get_stream` for large ones.
    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectStoreError> {
        let mut stream = self.get_stream(key).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ObjectStoreError::Io {
                key: key.to_owned(),
                source,
            })?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// The object's bytes as they are read, in bounded memory. A missing
    /// object is `NotFound` here, before any byte.
    async fn get_stream(&self, key: &str) -> Result<ByteStream, ObjectStoreError>;

    /// The object's length in bytes, `None` when there is no object under
    /// `key`.
    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError>;

    /// Deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError>;

    /// The keys under `prefix` (see the trait's doc), sorted; `""` lists the
    /// whole store.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError>;

    /// Deletes every object under `prefix` and returns how many there were:
    /// what erasing a tenant (`tenants/<id>/`) needs. An empty prefix, which
    /// would mean the whole store, is refused. Objects put under the prefix
    /// while it runs may survive, so stop the writers first.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectStoreError>;

    /// A URL a client can PUT the object's bytes to directly until
    /// `expires_in` has passed, or `None` when this store cannot hand one out
    /// (then the API takes the upload itself).
    async fn presign_put(&self, key: &str, expires_in: Duration) -> Result<Option<String>, ObjectStoreError>;

    /// A URL a client can GET the object from directly until `expires_in`
    /// has passed, or `None` as for `presign_put`.
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<Option<String>, ObjectStoreError>;
}

/// Objects as files under a root directory; keys are `/`-separated paths of
/// plain segments.
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
}

impl LocalObjectStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalObjectStore { root: root.into() }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectStoreError> {
        validate_key(key)?;
        Ok(self.root.join(Path::new(key)))
    }
}

/// The keys every adapter accepts: `/`-separated plain segments (no empty,
/// `.` or `..` segment, no backslash, no control character).
pub fn validate_key(key: &str) -> Result<(), ObjectStoreError> {
    let plain_segments = !key.is_empty()
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && !segment.contains('\\')
                && !segment.chars().any(char::is_control)
        });
    if plain_segments {
        Ok(())
    } else {
        Err(ObjectStoreError::InvalidKey(key.to_owned()))
    }
}

/// The folder a prefix names, without its trailing `/`: `""` for the whole
/// store, else plain segments as in a key.
fn folder_of(prefix: &str) -> Result<&str, ObjectStoreError> {
    let folder = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() || validate_key(folder).is_ok() {
        Ok(folder)
    } else {
        Err(ObjectStoreError::InvalidPrefix(prefix.to_owned()))
    }
}

/// The whole seconds of a presigned URL's lifetime; shorter than a second
/// or longer than S3 allows is refused rather than silently rounded up.
fn presigned_expiry_seconds(expires_in: Duration) -> Result<u32, ObjectStoreError> {
    if expires_in < Duration::from_secs(1) || expires_in > MAX_PRESIGNED_EXPIRY {
        return Err(ObjectStoreError::InvalidExpiry(expires_in));
    }
    // at most 604 800 by the check above
    Ok(expires_in.as_secs() as u32)
}

fn io_error(key: &str) -> impl FnOnce(std::io::Error) -> ObjectStoreError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ObjectStoreError::NotFound(key.to_owned())
        } else {
            ObjectStoreError::Io {
                key: key.to_owned(),
                source,
            }
        }
    }
}

/// A staging file is `<stem>.partial-<uuid>` beside its target.
const STAGING_EXTENSION: &str = "partial-";

/// Whether a file name is a staging file, which no listing shows.
fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('.')
        .and_then(|(_, extension)| extension.strip_prefix(STAGING_EXTENSION))
        .is_some_and(|id| uuid::Uuid::try_parse(id).is_ok())
}

/// A file being written beside its target. Dropped before `commit`, on an
/// error or when the put is cancelled, it removes itself, so that no
/// half-written file stays behind.
struct StagingFile {
    path: Option<PathBuf>,
}

impl StagingFile {
    fn beside(target: &Path) -> StagingFile {
        let staging = target.with_extension(format!("{STAGING_EXTENSION}{}", uuid::Uuid::new_v4()));
        StagingFile { path: Some(staging) }
    }

    fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("a staging file is only used before its commit")
    }

    /// Renames the staging file over `target`: readers see the old or the
    /// new object, never a torn one.
    async fn commit(mut self, target: &Path) -> std::io::Result<()> {
        let staging = self.path.take().expect("a staging file is committed once");
        if let Err(error) = tokio::fs::rename(&staging, target).await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(error);
        }
        Ok(())
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // blocking, but one unlink; a Drop cannot await
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The size of the chunks `get_stream` reads a local file in.
const LOCAL_READ_CHUNK: usize = 64 * 1024;

#[async_trait]
impl ObjectStore for LocalObjectStore {
    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<u64, ObjectStoreError> {
        let path = self.path_of(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error(key))?;
        }
        let staging = StagingFile::beside(&path);
        let mut file = tokio::fs::File::create(staging.path()).await.map_err(io_error(key))?;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| ObjectStoreError::Body {
                key: key.to_owned(),
                source,
            })?;
            file.write_all(&chunk).await.map_err(io_error(key))?;
            written += chunk.len() as u64;
        }
        // tokio writes in the background: flush to see the last write's error,
        // and sync so that the rename never publishes a file a crash empties
        file.flush().await.map_err(io_error(key))?;
        file.sync_data().await.map_err(io_error(key))?;
        drop(file);
        staging.commit(&path).await.map_err(io_error(key))?;
        Ok(written)
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, ObjectStoreError> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(io_error(key))?;
        // a folder opens like a file but is no object (as in S3, where
        // `a` is missing when only `a/b` exists)
        let metadata = file.metadata().await.map_err(io_error(key))?;
        if !metadata.is_file() {
            return Err(ObjectStoreError::NotFound(key.to_owned()));
        }
        Ok(tokio_util::io::ReaderStream::with_capacity(file, LOCAL_READ_CHUNK).boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Ok(None),
            Err(error) if is_missing(&error) => Ok(None),
            Err(error) => Err(io_error(key)(error)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(key)(error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        let folder = folder_of(prefix)?;
        let mut keys = Vec::new();
        let mut folders = vec![(self.root.join(folder), folder.to_owned())];
        while let Some((directory, key_prefix)) = folders.pop() {
            let mut entries = match tokio::fs::read_dir(&directory).await {
                Ok(entries) => entries,
                // nothing was ever stored there, or it is an object, not a folder
                Err(error) if is_missing(&error) => continue,
                Err(error) => return Err(io_error(prefix)(error)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io_error(prefix))? {
                let file_name = entry.file_name();
                // no key spells a name that is not UTF-8
                let Some(name) = file_name.to_str() else {
                    continue;
                };
                let key = if key_prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{key_prefix}/{name}")
                };
                // the entry's own type: a symbolic link is not followed
                let file_type = entry.file_type().await.map_err(io_error(prefix))?;
                if file_type.is_dir() {
                    folders.push((entry.path(), key));
                } else if file_type.is_file() && !is_staging_file(name) {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectStoreError> {
        let folder = folder_of(prefix)?;
        if folder.is_empty() {
            return Err(ObjectStoreError::InvalidPrefix(prefix.to_owned()));
        }
        let deleted = self.list(prefix).await?.len() as u64;
        // the whole folder, staging files a crash left behind included: an
        // erasure leaves no byte of it
        match tokio::fs::remove_dir_all(self.root.join(folder)).await {
            Ok(()) => Ok(deleted),
            Err(error) if is_missing(&error) => Ok(deleted),
            Err(error) => Err(io_error(prefix)(error)),
        }
    }

    async fn presign_put(&self, key: &str, expires_in: Duration) -> Result<Option<String>, ObjectStoreError> {
        validate_key(key)?;
        presigned_expiry_seconds(expires_in)?;
        Ok(None)
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<Option<String>, ObjectStoreError> {
        validate_key(key)?;
        presigned_expiry_seconds(expires_in)?;
        Ok(None)
    }
}

/// Whether a path error means there is no object or folder there: missing,
/// or a segment of it is a file.
fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        store.put("tenant/a/doc.bin", b"hello".to_vec()).await.unwrap();
        assert_eq!(store.get("tenant/a/doc.bin").await.unwrap(), b"hello");
        store.delete("tenant/a/doc.bin").await.unwrap();
        assert!(matches!(
            store.get("tenant/a/doc.bin").await,
            Err(ObjectStoreError::NotFound(_))
        ));
        store.delete("tenant/a/doc.bin").await.unwrap();
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        for key in ["../x", "a/../../x", "/abs", "", "a//b", "a\\b"] {
            assert!(
                matches!(store.put(key, vec![]).await, Err(ObjectStoreError::InvalidKey(_))),
                "{key:?} accepted"
            );
        }
    }
}
