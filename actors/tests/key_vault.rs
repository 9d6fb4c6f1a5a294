//! The key vault on both backends: first use makes one active key, rotation
//! keeps the old keys readable, erasure destroys them for good, and a wrong
//! master key is named as such.
//!
//! The Postgres half needs `NEUROSTASH_TEST_POSTGRES_URL`; without it those
//! tests fail rather than pass vacuously.

use std::sync::Arc;

use actors::crypto::MasterKey;
use actors::db::{fresh_postgres, test_postgres_url, ConnectOptions, Database, TEST_POSTGRES_URL_VAR};
use actors::keys::{KeyError, KeyVault};
use domain::TenantId;
use uuid::Uuid;

async fn sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("vault.db").display());
    let db = Database::connect(&url, &ConnectOptions::default()).await.unwrap();
    db.migrate_up().await.unwrap();
    (db, dir)
}

async fn postgres() -> Database {
    let url = test_postgres_url().unwrap_or_else(|| panic!("{TEST_POSTGRES_URL_VAR} is not set"));
    let (db, _) = fresh_postgres(&url).await.unwrap();
    db.migrate_up().await.unwrap();
    db
}

fn tenant() -> TenantId {
    TenantId(Uuid::now_v7())
}

async fn rotation_keeps_old_data_readable(db: Database) {
    let vault = KeyVault::new(db, MasterKey::generate());
    let alice = tenant();
    let first = vault.active_key(alice).await.unwrap();
    assert_eq!(
        vault.active_key(alice).await.unwrap().id(),
        first.id(),
        "one active key"
    );
    let before = vault.seal(alice, "file_name", "before rotation.txt").await.unwrap();
    let rotated = vault.rotate(alice).await.unwrap();
    assert_ne!(&rotated, first.id());
    assert_eq!(
        vault.active_key(alice).await.unwrap().id(),
        &rotated,
        "new data uses the new key at once"
    );
    let after = vault.seal(alice, "file_name", "after rotation.txt").await.unwrap();
    assert_eq!(after.key_id(), rotated.as_str());
    assert_eq!(
        vault.open(alice, "file_name", &before).await.unwrap(),
        "before rotation.txt"
    );
    assert_eq!(
        vault.open(alice, "file_name", &after).await.unwrap(),
        "after rotation.txt"
    );
    let keys = vault.list(alice).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|key| key.expired_at.is_none()).count(), 1);
    assert_eq!(vault.tenants().await.unwrap(), vec![alice]);
}

async fn erasure_destroys_every_key_of_one_tenant(db: Database) {
    let master = MasterKey::parse(&MasterKey::generate().to_hex()).unwrap();
    let master_text = master.to_hex();
    let vault = KeyVault::new(db.clone(), master);
    let (alice, bob) = (tenant(), tenant());
    let sealed = vault.seal(alice, "email", "alice@example.com").await.unwrap();
    vault.rotate(alice).await.unwrap();
    let bobs = vault.seal(bob, "email", "bob@example.com").await.unwrap();
    assert_eq!(vault.destroy(alice).await.unwrap(), 2);
    assert!(matches!(
        vault.open(alice, "email", &sealed).await,
        Err(KeyError::Missing { .. })
    ));
    // a fresh vault (another node, a restart) cannot read it either
    let other_node = KeyVault::new(db, MasterKey::parse(&master_text).unwrap());
    assert!(other_node.open(alice, "email", &sealed).await.is_err());
    assert_eq!(other_node.open(bob, "email", &bobs).await.unwrap(), "bob@example.com");
    assert_eq!(
        other_node.destroy(alice).await.unwrap(),
        0,
        "destroying twice is a no-op"
    );
    // another tenant's key cannot open alice's data even when named directly
    assert!(other_node.key(bob, sealed.key_id()).await.is_err());
}

async fn a_wrong_master_key_is_named(db: Database) {
    let vault = KeyVault::new(db.clone(), MasterKey::generate());
    let alice = tenant();
    let sealed = vault.seal(alice, "file_name", "x").await.unwrap();
    vault.check_master_key().await.unwrap();
    let wrong = KeyVault::new(db, MasterKey::generate());
    let error = wrong.check_master_key().await.unwrap_err();
    assert!(
        error.to_string().contains("not by the configured master key"),
        "{error}"
    );
    let error = wrong.open(alice, "file_name", &sealed).await.unwrap_err();
    assert!(error.to_string().contains(vault.master_key_id()), "{error}");
}

async fn concurrent_first_use_makes_one_key(db: Database) {
    let master = MasterKey::generate().to_hex();
    let vaults: Vec<Arc<KeyVault>> = (0..4)
        .map(|_| Arc::new(KeyVault::new(db.clone(), MasterKey::parse(&master).unwrap())))
        .collect();
    let alice = tenant();
    let tasks: Vec<_> = vaults
        .iter()
        .map(|vault| {
            let vault = vault.clone();
            tokio::spawn(async move { vault.active_key(alice).await.map(|key| key.id().clone()) })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every node got the same active key: {ids:?}");
    assert_eq!(vaults[0].list(alice).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_rotation_keeps_old_data_readable() {
    let (db, _dir) = sqlite().await;
    rotation_keeps_old_data_readable(db).await;
}

#[tokio::test]
async fn postgres_rotation_keeps_old_data_readable() {
    rotation_keeps_old_data_readable(postgres().await).await;
}

#[tokio::test]
async fn sqlite_erasure_destroys_every_key_of_one_tenant() {
    let (db, _dir) = sqlite().await;
    erasure_destroys_every_key_of_one_tenant(db).await;
}

#[tokio::test]
async fn postgres_erasure_destroys_every_key_of_one_tenant() {
    erasure_destroys_every_key_of_one_tenant(postgres().await).await;
}

#[tokio::test]
async fn sqlite_a_wrong_master_key_is_named() {
    let (db, _dir) = sqlite().await;
    a_wrong_master_key_is_named(db).await;
}

#[tokio::test]
async fn postgres_a_wrong_master_key_is_named() {
    a_wrong_master_key_is_named(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_first_use_makes_one_key() {
    let (db, _dir) = sqlite().await;
    concurrent_first_use_makes_one_key(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_first_use_makes_one_key() {
    concurrent_first_use_makes_one_key(postgres().await).await;
}

/// The encrypting object store over a local directory: what reaches the
/// directory is ciphertext, objects written before a rotation still read,
/// an altered object is refused, and an erased tenant's objects are gone
/// for good even if a copy of their bytes survived.
#[tokio::test]
async fn encrypted_objects_hold_only_ciphertext_and_survive_rotation() {
    use actors::objects::{tenant_prefix, EncryptedObjectStore, LocalObjectStore, ObjectStore, ObjectStoreError};
    let (db, dir) = sqlite().await;
    let vault = Arc::new(KeyVault::new(db, MasterKey::generate()));
    let raw: Arc<dyn ObjectStore> = Arc::new(LocalObjectStore::new(dir.path().join("objects")));
    let objects = EncryptedObjectStore::new(raw.clone(), vault.clone());
    let alice = tenant();
    let phrase = b"the quarterly numbers are confidential ";
    let large: Vec<u8> = phrase.iter().copied().cycle().take(3 * 1024 * 1024 + 5).collect();
    let before = format!("{}documents/a", tenant_prefix(alice));
    objects.put(&before, large.clone()).await.unwrap();
    vault.rotate(alice).await.unwrap();
    let after = format!("{}documents/b", tenant_prefix(alice));
    objects
        .put(&after, b"written after the rotation".to_vec())
        .await
        .unwrap();

    for key in [&before, &after] {
        let stored = raw.get(key).await.unwrap();
        assert!(stored.starts_with(b"NSE1"));
        assert!(
            !stored.windows(12).any(|w| w == b"confidential"),
            "plaintext at rest in {key}"
        );
    }
    assert_eq!(objects.get(&before).await.unwrap(), large);
    assert_eq!(objects.get(&after).await.unwrap(), b"written after the rotation");
    assert_eq!(objects.size(&before).await.unwrap(), Some(large.len() as u64));

    // one flipped byte in the middle of the ciphertext
    let mut altered = raw.get(&after).await.unwrap();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x40;
    raw.put(&after, altered).await.unwrap();
    assert!(matches!(
        objects.get(&after).await,
        Err(ObjectStoreError::Unreadable { .. })
    ));

    // keys outside a tenant's prefix are refused: nothing is stored in plain
    assert!(objects.put("staging/x", b"plain".to_vec()).await.is_err());

    let copy = raw.get(&before).await.unwrap();
    vault.destroy(alice).await.unwrap();
    raw.put(&before, copy).await.unwrap();
    let error = objects.get(&before).await.unwrap_err();
    assert!(matches!(error, ObjectStoreError::KeyDestroyed { .. }), "{error}");
}
