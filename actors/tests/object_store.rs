//! One conformance suite for the object-store port, run against both
//! adapters: the local directory and S3 on a real server.
//!
//! Every property is written once as an `async fn(&dyn ObjectStore)` and
//! instantiated per adapter by `conformance_suite!` at the bottom. The S3
//! half needs `NEUROSTASH_TEST_S3_ENDPOINT`, `…_ACCESS_KEY` and
//! `…_SECRET_KEY` (`scripts/s3.sh start` prints them); without them those
//! tests fail rather than pass vacuously. Each S3 test works in a bucket of
//! its own.

use actors::objects::{
    test_s3_settings, LocalObjectStore, ObjectStore, ObjectStoreError, S3ObjectStore, S3Settings, TEST_S3_ENDPOINT_VAR,
};
use minio::s3::types::S3Api;

/// The settings of the tests' S3 server, with a fresh bucket name.
fn s3_settings() -> S3Settings {
    test_s3_settings().unwrap_or_else(|| {
        panic!(
            "{TEST_S3_ENDPOINT_VAR} and its _ACCESS_KEY and _SECRET_KEY must name an S3 server \
             (scripts/test.sh starts one; or eval \"$(bash scripts/s3.sh start)\")"
        )
    })
}

/// A store of the kind under test with nothing in it, and what keeps it
/// alive.
enum Fixture {
    Local {
        store: LocalObjectStore,
        _dir: tempfile::TempDir,
    },
    S3(S3ObjectStore),
}

impl Fixture {
    async fn local() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        Fixture::Local {
            store: LocalObjectStore::new(dir.path().join("objects")),
            _dir: dir,
        }
    }

    async fn s3() -> Fixture {
        Fixture::S3(S3ObjectStore::connect(&s3_settings()).await.expect("s3 store connects"))
    }

    fn store(&self) -> &dyn ObjectStore {
        match self {
            Fixture::Local { store, .. } => store,
            Fixture::S3(store) => store,
        }
    }
}

fn five_mib() -> Vec<u8> {
    // not all one byte value, so a shifted or truncated body shows
    (0..5 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn round_trip(store: &dyn ObjectStore) {
    let large = five_mib();
    for (key, bytes) in [
        ("tenant/a/doc.bin", b"hello".to_vec()),
        ("empty", Vec::new()),
        ("tenant/a/large.bin", large.clone()),
        ("tenant/b/name with spaces & ünïcode.txt", b"odd names".to_vec()),
    ] {
        store
            .put(key, bytes.clone())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        let read = store.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(read.len(), bytes.len(), "{key}");
        assert!(read == bytes, "{key} came back different");
    }
}

async fn overwrite_replaces(store: &dyn ObjectStore) {
    store.put("k/doc", b"first version, longer".to_vec()).await.unwrap();
    store.put("k/doc", b"second".to_vec()).await.unwrap();
    assert_eq!(store.get("k/doc").await.unwrap(), b"second");
}

async fn get_missing_is_not_found(store: &dyn ObjectStore) {
    match store.get("nothing/here").await {
        Err(ObjectStoreError::NotFound(key)) => assert_eq!(key, "nothing/here"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn delete_twice_is_fine(store: &dyn ObjectStore) {
    store.put("d/doc", b"x".to_vec()).await.unwrap();
    store.delete("d/doc").await.unwrap();
    assert!(matches!(store.get("d/doc").await, Err(ObjectStoreError::NotFound(_))));
    store.delete("d/doc").await.unwrap();
    store.delete("never/written").await.unwrap();
}

async fn invalid_keys_are_refused(store: &dyn ObjectStore) {
    for key in [
        "../x",
        "a/../../x",
        "/abs",
        "",
        "a//b",
        "a\\b",
        "a/./b",
        "trailing/",
        "a\u{0}b",
        "tab\there",
    ] {
        assert!(
            matches!(store.put(key, vec![1]).await, Err(ObjectStoreError::InvalidKey(_))),
            "put {key:?} accepted"
        );
        assert!(
            matches!(store.get(key).await, Err(ObjectStoreError::InvalidKey(_))),
            "get {key:?} accepted"
        );
        assert!(
            matches!(store.delete(key).await, Err(ObjectStoreError::InvalidKey(_))),
            "delete {key:?} accepted"
        );
    }
}

macro_rules! conformance_suite {
    ($($property:ident),* $(,)?) => {
        mod local {
            use super::*;
            $(
                #[tokio::test]
                async fn $property() {
                    let fixture = Fixture::local().await;
                    super::$property(fixture.store()).await;
                }
            )*
        }
        mod s3 {
            use super::*;
            $(
                #[tokio::test]
                async fn $property() {
                    let fixture = Fixture::s3().await;
                    super::$property(fixture.store()).await;
                }
            )*
        }
    };
}

conformance_suite!(
    round_trip,
    overwrite_replaces,
    get_missing_is_not_found,
    delete_twice_is_fine,
    invalid_keys_are_refused,
);

/// What only the S3 adapter has: its bucket, its credentials.
mod s3_only {
    use super::*;

    #[tokio::test]
    async fn the_bucket_is_created_at_start_and_reused() {
        let settings = s3_settings();
        let store = S3ObjectStore::connect(&settings).await.expect("creates the bucket");
        let exists = store
            .client()
            .bucket_exists(settings.bucket.as_str())
            .unwrap()
            .build()
            .send()
            .await
            .unwrap()
            .exists();
        assert!(exists, "bucket {} was not created", settings.bucket);
        store.put("kept/doc", b"kept".to_vec()).await.unwrap();
        // a second process on the same bucket finds it and its objects
        let again = S3ObjectStore::connect(&settings).await.expect("reuses the bucket");
        assert_eq!(again.get("kept/doc").await.unwrap(), b"kept");
    }

    #[tokio::test]
    async fn objects_are_stored_under_their_key() {
        let store = S3ObjectStore::connect(&s3_settings()).await.unwrap();
        store.put("tenant/x/doc.bin", b"bytes".to_vec()).await.unwrap();
        // read back through the client itself, not through the adapter
        let response = store
            .client()
            .get_object(store.bucket(), "tenant/x/doc.bin")
            .unwrap()
            .build()
            .send()
            .await
            .expect("the object is in the bucket under its key");
        let bytes = response
            .content()
            .unwrap()
            .to_segmented_bytes()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&bytes[..], b"bytes");
    }

    #[tokio::test]
    async fn a_wrong_secret_key_is_refused_clearly() {
        let good = s3_settings();
        // the bucket exists, so the refusal is about the credentials alone
        let store = S3ObjectStore::connect(&good).await.unwrap();
        store.put("secret/doc", b"x".to_vec()).await.unwrap();
        let wrong = S3Settings {
            secret_key: "not-the-secret-key-at-all".to_owned(),
            ..good.clone()
        };
        for error in [
            S3ObjectStore::connect(&wrong).await.unwrap_err(),
            S3ObjectStore::new(&wrong).unwrap().get("secret/doc").await.unwrap_err(),
            S3ObjectStore::new(&wrong)
                .unwrap()
                .put("secret/doc", vec![1])
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(error, ObjectStoreError::AccessDenied { .. }), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(&good.bucket), "{message}");
            assert!(message.contains("access key and secret key"), "{message}");
            assert!(!message.contains(&wrong.secret_key), "{message}");
            assert!(!message.contains(&good.secret_key), "{message}");
            eprintln!("refused as expected: {message}");
        }
        // and the object is untouched
        assert_eq!(store.get("secret/doc").await.unwrap(), b"x");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_at_start() {
        let settings = S3Settings {
            // a port nothing listens on (discard)
            endpoint: "http://127.0.0.1:9".to_owned(),
            bucket: "neurostash-unreachable".to_owned(),
            region: "us-east-1".to_owned(),
            access_key: "access".to_owned(),
            secret_key: "secret".to_owned(),
        };
        let message = S3ObjectStore::connect(&settings).await.unwrap_err().to_string();
        assert!(message.contains(&settings.bucket), "{message}");
    }
}
