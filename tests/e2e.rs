//! End to end through HTTP, on SQLite and on Postgres, with the objects in
//! the local data dir or in S3.

mod common;

use common::{s3_bucket_objects, spawn_app, spawn_app_configured, use_test_s3, Backend, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const SOLAR: &str = "Solar panels convert sunlight into electricity. Photovoltaic cells made of silicon \
    absorb photons and release electrons. Inverters turn the direct current of the panels into \
    alternating current for the grid. Panel efficiency falls as the cells grow hot in summer.";
const SOURDOUGH: &str = "# Sourdough\n\nA sourdough starter is flour and water fermented by wild yeast \
    and lactic acid bacteria. Feed the starter daily. The dough rises slowly overnight, and the loaf \
    is baked in a hot dutch oven until the crust is dark and crisp.";
const GLACIERS: &str = "Glaciers are rivers of ice that flow under their own weight. Moraines of rock \
    and gravel mark where a glacier once reached. As the climate warms, alpine glaciers retreat \
    and their meltwater feeds lakes in the valleys below.";

async fn ingest_three(app: &TestApp, key: &str, kb: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (name, text) in [
        ("solar.txt", SOLAR),
        ("sourdough.md", SOURDOUGH),
        ("glaciers.txt", GLACIERS),
    ] {
        let (status, body) = app.upload(key, name, text, Some(kb)).await;
        assert_eq!(status, 202, "upload {name}: {body}");
        assert_eq!(body["status"], "PENDING");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let document = app.wait_processed(key, id).await;
        assert_eq!(document["status"], "SUCCESS", "document {id}: {document}");
        assert!(document["chunk_count"].as_i64().unwrap() >= 1, "{document}");
    }
    app.wait_indexed().await;
    ids
}

fn top_file(search: &Value) -> &str {
    search["hits"][0]["file_name"].as_str().unwrap_or("<no hits>")
}

/// Where the journey's document bytes must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Objects {
    Local,
    S3,
}

/// Every file under `dir`, keyed by its path relative to `dir` (none when
/// it does not exist).
fn files_under(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let key = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                files.insert(key, std::fs::read(&path).expect("file reads"));
            }
        }
    }
    files
}

/// Phrases of the uploads that must never be readable at rest.
const PHRASES: [&str; 6] = [
    "Photovoltaic",
    "Inverters turn",
    "sourdough starter",
    "lactic acid",
    "Moraines",
    "meltwater",
];

/// The uploaded bytes are in the store the app was configured with, and
/// only there, and only as ciphertext: every object is in the encrypted
/// format, no phrase of any upload shows in it, and each upload decrypts
/// back from exactly one object.
async fn assert_uploads_stored(app: &TestApp, objects: Objects) {
    let local = files_under(&app.config.data_dir.join("objects"));
    let stored = match objects {
        Objects::Local => local,
        Objects::S3 => {
            assert!(local.is_empty(), "{} objects in the local data dir", local.len());
            s3_bucket_objects(&app.config).await
        }
    };
    assert!(stored.len() >= 6, "3 documents and 3 artifacts: {:?}", stored.keys());
    for (key, bytes) in &stored {
        assert!(key.starts_with("tenants/"), "{key}");
        assert!(bytes.starts_with(b"NSE1"), "{key} is not in the encrypted format");
        for phrase in PHRASES {
            let plain = bytes.windows(phrase.len()).any(|window| window == phrase.as_bytes());
            assert!(!plain, "{phrase:?} readable in stored object {key}");
        }
    }
    for text in [SOLAR, SOURDOUGH, GLACIERS] {
        let mut holders = Vec::new();
        for key in stored.keys().filter(|key| key.contains("/documents/")) {
            if app.app.objects.get(key).await.expect("document decrypts") == text.as_bytes() {
                holders.push(key.clone());
            }
        }
        assert_eq!(holders.len(), 1, "{text:.20}… decrypts from {holders:?}");
    }
}

async fn full_journey(backend: Backend) {
    journey(spawn_app(backend).await, Objects::Local).await;
}

async fn journey(app: TestApp, objects: Objects) {
    let (_user_id, key) = app.create_user("ada@example.com").await;
    let kb = app.create_knowledge_base(&key, "notes").await;
    let ids = ingest_three(&app, &key, &kb).await;
    assert_uploads_stored(&app, objects).await;

    let (status, links) = app.get(&format!("/v1/knowledge-bases/{kb}/documents"), &key).await;
    assert_eq!(status, 200);
    let items = links["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|link| link["status"] == "SUCCESS"), "{links}");

    for (query, expected) in [
        ("how do photovoltaic panels make electricity", "solar.txt"),
        ("feeding a sourdough starter with flour", "sourdough.md"),
        ("retreating alpine glaciers and moraines", "glaciers.txt"),
    ] {
        let (status, result) = app.search(&key, &kb, query, 3).await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(top_file(&result), expected, "query {query:?}: {result}");
        let hit = &result["hits"][0];
        assert!(hit["text"].as_str().unwrap().len() > 10);
        assert!(hit["score"].as_f64().unwrap() > 0.0);
    }

    let (status, page) = app.get("/v1/documents?limit=2", &key).await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, rest) = app.get("/v1/documents?limit=2&offset=2", &key).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);

    // the same file again is the document it already is: answered with it,
    // nothing stored twice (other bytes under its name would be a new
    // version, tests/versions.rs)
    let (status, same) = app.upload(&key, "solar.txt", SOLAR, Some(&kb)).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(
        (same["id"].as_str(), same["duplicate"].as_bool()),
        (Some(ids[0].as_str()), Some(true)),
        "{same}"
    );
    let (_, page) = app.get("/v1/documents", &key).await;
    assert_eq!(page["total"], 3, "{page}");

    // removing a document from the knowledge base removes it from search
    let (status, _) = app
        .delete(&format!("/v1/knowledge-bases/{kb}/documents/{}", ids[0]), &key)
        .await;
    assert_eq!(status, 204);
    app.wait_indexed().await;
    let (_, result) = app.search(&key, &kb, "photovoltaic panels electricity", 3).await;
    assert!(
        result["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|hit| hit["file_name"] != "solar.txt"),
        "{result}"
    );

    // deleting a document removes it everywhere
    let (status, _) = app.delete(&format!("/v1/documents/{}", ids[1]), &key).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&format!("/v1/documents/{}", ids[1]), &key).await;
    assert_eq!(status, 404);
    app.wait_indexed().await;
    let (_, result) = app.search(&key, &kb, "sourdough starter", 3).await;
    assert!(
        result["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|hit| hit["file_name"] != "sourdough.md"),
        "{result}"
    );
    if objects == Objects::S3 {
        // the deleted document's bytes are gone from the bucket too
        let bucket = s3_bucket_objects(&app.config).await;
        assert!(
            bucket.values().all(|bytes| bytes.as_slice() != SOURDOUGH.as_bytes()),
            "the deleted document is still in the bucket"
        );
        assert!(
            bucket.values().all(|bytes| bytes.as_slice() != b"other text"),
            "the refused upload left its bytes in the bucket"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journey_on_sqlite() {
    full_journey(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journey_on_postgres() {
    full_journey(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journey_on_postgres_with_s3_objects() {
    let app = spawn_app_configured(Backend::Postgres, use_test_s3).await;
    journey(app, Objects::S3).await;
}

async fn tenants_are_isolated(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, alice) = app.create_user("alice@example.com").await;
    let (_, bob) = app.create_user("bob@example.com").await;
    let kb = app.create_knowledge_base(&alice, "private").await;
    let ids = ingest_three(&app, &alice, &kb).await;
    let document = &ids[0];

    let kb_routes = [
        format!("/v1/knowledge-bases/{kb}"),
        format!("/v1/knowledge-bases/{kb}/documents"),
    ];
    for path in &kb_routes {
        let (status, problem) = app.get(path, &bob).await;
        assert_eq!(status, 404, "{path}: {problem}");
        assert_eq!(problem["code"], "not_found");
    }
    let (status, _) = app.get(&format!("/v1/documents/{document}"), &bob).await;
    assert_eq!(status, 404);
    let (status, _) = app.search(&bob, &kb, "solar", 3).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            &format!("/v1/knowledge-bases/{kb}/documents"),
            &bob,
            json!({ "document_id": document }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.delete(&format!("/v1/documents/{document}"), &bob).await;
    assert_eq!(status, 404);
    let (status, _) = app.delete(&format!("/v1/knowledge-bases/{kb}"), &bob).await;
    assert_eq!(status, 404);
    // bob's own knowledge base cannot take alice's document either
    let bobs_kb = app.create_knowledge_base(&bob, "mine").await;
    let (status, _) = app
        .post(
            &format!("/v1/knowledge-bases/{bobs_kb}/documents"),
            &bob,
            json!({ "document_id": document }),
        )
        .await;
    assert_eq!(status, 404);
    // an id that does not exist answers exactly like another tenant's id
    let (status, _) = app
        .get(&format!("/v1/knowledge-bases/{}", uuid::Uuid::now_v7()), &bob)
        .await;
    assert_eq!(status, 404);

    let (_, listing) = app.get("/v1/documents", &bob).await;
    assert_eq!(listing["total"], 0, "{listing}");
    let (_, kbs) = app.get("/v1/knowledge-bases", &bob).await;
    assert_eq!(kbs["items"].as_array().unwrap().len(), 1, "{kbs}");
    // and alice still sees all of hers
    let (status, _) = app.get(&format!("/v1/documents/{document}"), &alice).await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_sqlite() {
    tenants_are_isolated(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_postgres() {
    tenants_are_isolated(Backend::Postgres).await;
}

async fn restart_keeps_everything(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.create_user("grace@example.com").await;
    let kb = app.create_knowledge_base(&key, "kept").await;
    ingest_three(&app, &key, &kb).await;
    let (_, before) = app.search(&key, &kb, "glaciers moraines meltwater", 3).await;
    let (_, documents_before) = app.get("/v1/documents", &key).await;

    let app = app.restart().await;
    let (status, after) = app.search(&key, &kb, "glaciers moraines meltwater", 3).await;
    assert_eq!(status, 200, "the key still works after a restart: {after}");
    assert_eq!(after, before);
    let (_, documents_after) = app.get("/v1/documents", &key).await;
    assert_eq!(documents_after, documents_before);
    // and the restarted system keeps working
    let (status, body) = app
        .upload(&key, "later.txt", "written after the restart", Some(&kb))
        .await;
    assert_eq!(status, 202, "{body}");
    let document = app.wait_processed(&key, body["id"].as_str().unwrap()).await;
    assert_eq!(document["status"], "SUCCESS");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_on_sqlite() {
    restart_keeps_everything(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_on_postgres() {
    restart_keeps_everything(Backend::Postgres).await;
}
