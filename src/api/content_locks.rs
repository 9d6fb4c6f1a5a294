//! One upload at a time per tenant and content in this process: the
//! check for a document with the same bytes, the registration and the
//! wait for the registry to show it happen under the lock, so that the
//! same bytes sent twice at once make one document. Uploads of other
//! bytes never wait on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::TenantId;
use tokio::sync::OwnedMutexGuard;

type Key = (TenantId, String);

#[derive(Default)]
pub struct ContentLocks {
    held: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one upload of a content is decided; the entry goes with the
/// last holder or waiter, so the map holds only contents in flight.
pub struct ContentGuard<'a> {
    locks: &'a ContentLocks,
    key: Key,
    entry: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl ContentLocks {
    pub async fn lock(&self, tenant: TenantId, sha256: &str) -> ContentGuard<'_> {
        let key = (tenant, sha256.to_owned());
        let entry = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = entry.clone().lock_owned().await;
        ContentGuard {
            locks: self,
            key,
            entry,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for ContentGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.locks.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // the map's reference and this guard's: nobody else waits
        if Arc::strong_count(&self.entry) == 2 {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;

    #[tokio::test]
    async fn the_same_content_waits_and_other_content_does_not() {
        let locks = Arc::new(ContentLocks::default());
        let tenant = TenantId(Uuid::new_v4());
        let first = locks.lock(tenant, "aa").await;
        // other bytes, or the same bytes of another tenant, go ahead
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock(tenant, "bb")).await;
        assert!(other.is_ok());
        drop(other);
        let stranger =
            tokio::time::timeout(Duration::from_millis(100), locks.lock(TenantId(Uuid::new_v4()), "aa")).await;
        assert!(stranger.is_ok());
        drop(stranger);
        // the same bytes wait for the first upload
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _guard = locks.lock(tenant, "aa").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second upload of the same bytes waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter goes on once the first upload is done")
            .unwrap();
        assert_eq!(locks.in_flight(), 0, "nothing is kept once nobody holds or waits");
    }
}
