//! The object store as the rest of the system sees it: every object under
//! `tenants/<tenant id>/` is encrypted under that tenant's active data key on
//! the way in and decrypted on the way out (the format of
//! [`crate::crypto::stream`]); the bytes that reach the underlying store are
//! ciphertext only. Its tenant is read from the key, so projections and the
//! processor keep addressing objects by key alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::TenantId;
use futures::{StreamExt, TryStreamExt};

use super::{ByteStream, ObjectStore, ObjectStoreError};
use crate::crypto::stream::{decrypt_stream, encrypt_stream, read_header, DEFAULT_CHUNK_SIZE};
use crate::crypto::TAG_LEN;
use crate::keys::{KeyError, KeyVault};

/// The prefix every tenant's objects live under.
pub const TENANT_PREFIX: &str = "tenants/";

pub fn tenant_prefix(tenant_id: TenantId) -> String {
    format!("{TENANT_PREFIX}{tenant_id}/")
}

/// The tenant whose key encrypts the object at `key`.
pub fn tenant_of_key(key: &str) -> Option<TenantId> {
    let rest = key.strip_prefix(TENANT_PREFIX)?;
    let (tenant, _) = rest.split_once('/')?;
    tenant.parse().ok().map(TenantId)
}

pub struct EncryptedObjectStore {
    inner: Arc<dyn ObjectStore>,
    vault: Arc<KeyVault>,
}

impl EncryptedObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>, vault: Arc<KeyVault>) -> EncryptedObjectStore {
        EncryptedObjectStore { inner, vault }
    }

    /// The store underneath, holding ciphertext (and the plain staging
    /// objects of presigned uploads, which sit outside any tenant's prefix).
    pub fn raw(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn tenant(key: &str) -> Result<TenantId, ObjectStoreError> {
        tenant_of_key(key).ok_or_else(|| ObjectStoreError::InvalidKey(key.to_owned()))
    }
}

fn sealed_error(key: &str) -> impl FnOnce(KeyError) -> ObjectStoreError + '_ {
    move |error| match error {
        KeyError::Missing { .. } | KeyError::Erased { .. } | KeyError::NoKeys { .. } => {
            ObjectStoreError::KeyDestroyed {
                key: key.to_owned(),
                reason: error.to_string(),
            }
        }
        other => ObjectStoreError::Unreadable {
            key: key.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Every object this layer writes has a header of this length: the key ids
/// are all 16 characters.
const HEADER_LEN: u64 = 4 + 1 + 4 + 1 + 16 + 19;

/// The plaintext length of an object of `stored` bytes in the format this
/// layer writes (default chunk size).
fn plaintext_len(stored: u64) -> u64 {
    let body = stored.saturating_sub(HEADER_LEN);
    let sealed_chunk = u64::from(DEFAULT_CHUNK_SIZE) + TAG_LEN as u64;
    let chunks = body.div_ceil(sealed_chunk).max(1);
    body.saturating_sub(chunks * TAG_LEN as u64)
}

#[async_trait]
impl ObjectStore for EncryptedObjectStore {
    /// Returns the plaintext length: what the caller handed in.
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, ObjectStoreError> {
        let tenant_id = Self::tenant(key)?;
        let data_key = self.vault.active_key(tenant_id).await.map_err(sealed_error(key))?;
        let plaintext = Arc::new(AtomicU64::new(0));
        let counted = {
            let plaintext = plaintext.clone();
            body.inspect_ok(move |piece| {
                plaintext.fetch_add(piece.len() as u64, Ordering::Relaxed);
            })
            .boxed()
        };
        self.inner
            .put_stream(key, encrypt_stream(&data_key, DEFAULT_CHUNK_SIZE, counted))
            .await?;
        Ok(plaintext.load(Ordering::Relaxed))
    }

    /// A decryption failure anywhere in the object is `Unreadable`, not an
    /// i/o error: the bytes are there, they cannot be trusted.
    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectStoreError> {
        let mut stream = self.get_stream(key).await?;
        let mut bytes = Vec::new();
        while let Some(piece) = stream.next().await {
            // the format's failures are InvalidData; others are the store's
            let piece = piece.map_err(|error| match error.kind() {
                std::io::ErrorKind::InvalidData => ObjectStoreError::Unreadable {
                    key: key.to_owned(),
                    reason: error.to_string(),
                },
                _ => ObjectStoreError::Io {
                    key: key.to_owned(),
                    source: error,
                },
            })?;
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }

    /// Plaintext, released chunk by chunk once each chunk verified; a stream
    /// that ends in an error must be discarded whole.
    async fn get_stream(&self, key: &str) -> Result<ByteStream, ObjectStoreError> {
        let tenant_id = Self::tenant(key)?;
        let ciphertext = self.inner.get_stream(key).await?;
        let unreadable = |reason: String| ObjectStoreError::Unreadable {
            key: key.to_owned(),
            reason,
        };
        let (header, rest) = read_header(ciphertext)
            .await
            .map_err(|error| unreadable(error.to_string()))?;
        let data_key = self
            .vault
            .key(tenant_id, header.key_id.as_str())
            .await
            .map_err(sealed_error(key))?;
        decrypt_stream(&data_key, header, rest).map_err(|error| unreadable(error.to_string()))
    }

    /// The plaintext length, from the stored length.
    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        Self::tenant(key)?;
        Ok(self.inner.size(key).await?.map(plaintext_len))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        self.inner.list(prefix).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectStoreError> {
        self.inner.delete_prefix(prefix).await
    }

    /// None: a presigned url would move bytes past the encryption.
    async fn presign_put(&self, _key: &str, _expires_in: Duration) -> Result<Option<String>, ObjectStoreError> {
        Ok(None)
    }

    async fn presign_get(&self, _key: &str, _expires_in: Duration) -> Result<Option<String>, ObjectStoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_plaintext_length_follows_from_the_stored_length() {
        let key = crate::crypto::DataKey::generate(TenantId(Uuid::now_v7()));
        let chunk = DEFAULT_CHUNK_SIZE as usize;
        for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 17] {
            let stored = crate::crypto::stream::encrypt_bytes(&key, &vec![7u8; len]);
            assert_eq!(plaintext_len(stored.len() as u64), len as u64, "{len}");
        }
    }

    #[test]
    fn the_tenant_is_read_from_the_key() {
        let tenant = TenantId(Uuid::now_v7());
        let key = format!("{}documents/x/y", tenant_prefix(tenant));
        assert_eq!(tenant_of_key(&key), Some(tenant));
        for other in [
            "staging/x",
            "tenants/not-a-uuid/x",
            "tenants/",
            &format!("tenants/{tenant}"),
        ] {
            assert_eq!(tenant_of_key(other), None, "{other:?}");
        }
    }
}
