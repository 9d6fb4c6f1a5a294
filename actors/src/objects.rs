//! The object-store port (document bytes and artifacts) and its adapters: a
//! local directory for the embedded mode, and S3 ([`S3ObjectStore`]) for
//! deployments that share objects between processes.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

mod encrypted;
mod s3;

pub use encrypted::{tenant_of_key, tenant_prefix, EncryptedObjectStore, TENANT_PREFIX};

pub use s3::{
    test_s3_settings, S3ObjectStore, S3Settings, TEST_S3_ACCESS_KEY_VAR, TEST_S3_ENDPOINT_VAR, TEST_S3_SECRET_KEY_VAR,
};

#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object store i/o failed for {key}: {source}")]
    Io {
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
    /// An encrypted object that cannot be opened: its key is destroyed (the
    /// tenant was erased), or its bytes fail authentication.
    #[error("object {key} cannot be decrypted: {reason}")]
    Unreadable { key: String, reason: String },
    /// The S3 settings cannot be used (endpoint, region, bucket name).
    #[error("invalid object store settings: {0}")]
    Settings(String),
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, replacing any object there; a reader never
    /// sees a partly written object.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectStoreError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectStoreError>;
    /// Deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError>;
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

#[async_trait]
impl ObjectStore for LocalObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectStoreError> {
        let path = self.path_of(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error(key))?;
        }
        // write beside the target, then rename: readers see the old or the new
        // object, never a torn one
        let staging = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&staging, &bytes).await.map_err(io_error(key))?;
        if let Err(error) = tokio::fs::rename(&staging, &path).await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(io_error(key)(error));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectStoreError> {
        let path = self.path_of(key)?;
        tokio::fs::read(&path).await.map_err(io_error(key))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(key)(error)),
        }
    }
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
