//! The object store as the rest of the system sees it: every object under
//! `tenants/<tenant id>/` is encrypted under that tenant's active data key on
//! the way in and decrypted on the way out (the format of
//! [`crate::crypto::stream`]); the bytes that reach the underlying store are
//! ciphertext only. Its tenant is read from the key, so projections and the
//! processor keep addressing objects by key alone.

use std::sync::Arc;

use async_trait::async_trait;
use domain::TenantId;

use super::{ObjectStore, ObjectStoreError};
use crate::crypto::stream::{decrypt_bytes, encrypt_bytes};
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
    move |error| ObjectStoreError::Unreadable {
        key: key.to_owned(),
        reason: error.to_string(),
    }
}

#[async_trait]
impl ObjectStore for EncryptedObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectStoreError> {
        let tenant_id = Self::tenant(key)?;
        let data_key = self.vault.active_key(tenant_id).await.map_err(sealed_error(key))?;
        let ciphertext = tokio::task::spawn_blocking(move || encrypt_bytes(&data_key, &bytes))
            .await
            .map_err(|error| ObjectStoreError::Unreadable {
                key: key.to_owned(),
                reason: format!("encryption task failed: {error}"),
            })?;
        self.inner.put(key, ciphertext).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectStoreError> {
        let tenant_id = Self::tenant(key)?;
        let ciphertext = self.inner.get(key).await?;
        let key_id = crate::crypto::stream::StreamHeader::parse(&ciphertext)
            .ok()
            .flatten()
            .map(|(header, _)| header.key_id);
        let data_key = match key_id {
            Some(key_id) => Some(
                self.vault
                    .key(tenant_id, key_id.as_str())
                    .await
                    .map_err(sealed_error(key))?,
            ),
            None => None,
        };
        let object_key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            decrypt_bytes(&ciphertext, |_| {
                data_key.ok_or_else(|| crate::crypto::CryptoError::Malformed {
                    what: "encrypted object header".into(),
                    reason: "missing or unreadable".into(),
                })
            })
        })
        .await
        .map_err(|error| ObjectStoreError::Unreadable {
            key: object_key.clone(),
            reason: format!("decryption task failed: {error}"),
        })?
        .map_err(|error| ObjectStoreError::Unreadable {
            key: object_key,
            reason: error.to_string(),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

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
