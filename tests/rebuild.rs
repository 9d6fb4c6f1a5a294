//! Projections are disposable: dropping the registry rows and the vector
//! indexes and replaying the log from position 0 gives identical tables and
//! the same search results, on SQLite and on Postgres.

mod common;

use common::corpus::{searches, DOCUMENTS};
use common::{spawn_app, Backend};
use serde_json::json;

async fn rebuild_equals_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.create_user("grace@example.com").await;
    let (_, other_key) = app.create_user("linus@example.com").await;
    let kb = app.create_knowledge_base(&key, "nature").await;
    let other_kb = app.create_knowledge_base(&other_key, "other").await;

    let mut ids = Vec::new();
    for (name, text) in DOCUMENTS {
        let (status, body) = app.upload(&key, name, text, Some(&kb)).await;
        assert_eq!(status, 202, "upload {name}: {body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = app
        .upload(&other_key, "tides.txt", DOCUMENTS[0].1, Some(&other_kb))
        .await;
    assert_eq!(status, 202, "{body}");
    for id in &ids {
        assert_eq!(app.wait_processed(&key, id).await["status"], "SUCCESS");
    }
    // history the replay has to reproduce, not just creations: a link
    // removed, a document deleted, a key revoked, a knowledge base deleted
    let (status, body) = app
        .delete(&format!("/v1/knowledge-bases/{kb}/documents/{}", ids[3]), &key)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = app.delete(&format!("/v1/documents/{}", ids[2]), &key).await;
    assert_eq!(status, 204, "{body}");
    let (status, issued) = app.post("/v1/api-keys", &key, json!({ "label": "spare" })).await;
    assert_eq!(status, 201, "{issued}");
    let (status, body) = app
        .delete(&format!("/v1/api-keys/{}", issued["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = app.delete(&format!("/v1/knowledge-bases/{other_kb}"), &other_key).await;
    assert_eq!(status, 204, "{body}");

    app.wait_registry().await;
    app.wait_indexed().await;
    let live_tables = app.app.registry.dump().await.expect("registry dump");
    let live_searches = searches(&app, &key, &kb).await;
    // the searches found what they should, so equality below means something
    assert_eq!(
        live_searches[0]["hits"][0]["file_name"], "tides.txt",
        "{}",
        live_searches[0]
    );
    assert_eq!(
        live_searches[1]["hits"][0]["file_name"], "bees.md",
        "{}",
        live_searches[1]
    );
    for result in &live_searches {
        for hit in result["hits"].as_array().unwrap() {
            assert_ne!(
                hit["file_name"], "volcanoes.txt",
                "a deleted document is searchable: {result}"
            );
            assert_ne!(
                hit["file_name"], "compilers.txt",
                "an unlinked document is searchable: {result}"
            );
        }
    }

    let app = app.rebuild().await;
    app.wait_registry().await;
    app.wait_indexed().await;
    let rebuilt_tables = app.app.registry.dump().await.expect("registry dump");
    assert_eq!(
        rebuilt_tables, live_tables,
        "the replayed registry differs from the live one"
    );
    let rebuilt_searches = searches(&app, &key, &kb).await;
    assert_eq!(
        rebuilt_searches, live_searches,
        "search results changed after the rebuild"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_zero_equals_live_on_sqlite() {
    rebuild_equals_live(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_zero_equals_live_on_postgres() {
    rebuild_equals_live(Backend::Postgres).await;
}
