//! Dedup by content through HTTP: bytes a tenant already has, uploaded
//! again under any name (directly or presigned), answer with the existing
//! document and store nothing new; another tenant's bytes are its own; a
//! deleted document's bytes make a new document.

mod common;

use common::{spawn_app, Backend, TestApp};

async fn document_objects(app: &TestApp, tenant: &str) -> Vec<String> {
    app.app
        .raw_objects
        .list(&format!("tenants/{tenant}/documents/"))
        .await
        .expect("list objects")
}

async fn the_same_bytes_are_one_document(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, key) = app.create_user("dedup@example.com").await;
    let kb = app.create_knowledge_base(&key, "dedup").await;
    let bytes = "Minutes of the harbour committee: the crane is repaired.";

    let (status, first) = app.upload(&key, "minutes.txt", bytes, None).await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &id).await["status"], "SUCCESS");

    // again, under another name and into a knowledge base: the same document
    let (status, again) = app.upload(&key, "minutes-copy.txt", bytes, Some(&kb)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str(), "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["status"], "SUCCESS");
    let (_, links) = app.get(&format!("/v1/knowledge-bases/{kb}/documents"), &key).await;
    assert_eq!(links["items"].as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links["items"][0]["document_id"], id.as_str(), "{links}");
    // and once more into the same knowledge base: still fine, still one link
    let (status, _) = app.upload(&key, "third.txt", bytes, Some(&kb)).await;
    assert_eq!(status, 200);
    let (_, documents) = app.get("/v1/documents", &key).await;
    assert_eq!(documents["total"], 1, "{documents}");
    assert_eq!(document_objects(&app, &tenant).await.len(), 1, "no copy is stored");

    // presigned: the upload ends, the existing document answers
    let (status, answer) = app.upload_presigned(&key, "presigned-copy.txt", bytes).await;
    assert_eq!((status, answer["id"].as_str()), (200, Some(id.as_str())), "{answer}");
    assert!(app.app.raw_objects.list("staging/").await.unwrap().is_empty());
    assert_eq!(document_objects(&app, &tenant).await.len(), 1, "no copy is stored");

    // other bytes are another document; another tenant's same bytes its own
    let (status, other) = app.upload(&key, "other.txt", "Different words entirely.", None).await;
    assert_eq!(status, 202, "{other}");
    let (stranger_tenant, stranger) = app.create_user("stranger@example.com").await;
    let (status, theirs) = app.upload(&stranger, "minutes.txt", bytes, None).await;
    assert_eq!(status, 202, "{theirs}");
    assert_ne!(theirs["id"], id.as_str());
    assert_eq!(document_objects(&app, &stranger_tenant).await.len(), 1);

    // once the document is deleted, the bytes make a new one
    let (status, _) = app.delete(&format!("/v1/documents/{id}"), &key).await;
    assert_eq!(status, 204);
    app.wait_registry().await;
    let (status, fresh) = app.upload(&key, "minutes-again.txt", bytes, None).await;
    assert_eq!(status, 202, "{fresh}");
    assert_ne!(fresh["id"], id.as_str());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_are_one_document_on_sqlite() {
    the_same_bytes_are_one_document(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_are_one_document_on_postgres() {
    the_same_bytes_are_one_document(Backend::Postgres).await;
}

/// The same bytes sent many times at once, under different names, direct
/// and presigned: one request makes the document, every other is answered
/// with it, and one copy is stored.
async fn the_same_bytes_sent_at_once_are_one_document(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, key) = app.create_user("racing@example.com").await;
    let bytes = "Tide tables for the northern channel, spring and neap.";
    let direct = (0..8).map(|n| {
        let (app, key) = (&app, &key);
        async move { app.upload(key, &format!("tides-{n}.txt"), bytes, None).await }
    });
    let presigned = (0..4).map(|n| {
        let (app, key) = (&app, &key);
        async move {
            app.upload_presigned(key, &format!("tides-presigned-{n}.txt"), bytes)
                .await
        }
    });
    let (direct, presigned) = tokio::join!(futures::future::join_all(direct), futures::future::join_all(presigned));
    let answers: Vec<(u16, serde_json::Value)> = direct.into_iter().chain(presigned).collect();
    let made: Vec<&serde_json::Value> = answers
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(made.len(), 1, "one request makes the document: {answers:?}");
    let id = made[0]["id"].as_str().unwrap();
    for (status, answer) in &answers {
        assert!(
            *status == 202 || (*status == 200 && answer["duplicate"] == true),
            "{status} {answer}"
        );
        assert_eq!(
            answer["id"], id,
            "every request is answered with the one document: {answer}"
        );
    }
    app.wait_registry().await;
    let (_, documents) = app.get("/v1/documents", &key).await;
    assert_eq!(documents["total"], 1, "{documents}");
    assert_eq!(document_objects(&app, &tenant).await.len(), 1, "no copy is stored");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_sent_at_once_are_one_document_on_sqlite() {
    the_same_bytes_sent_at_once_are_one_document(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_sent_at_once_are_one_document_on_postgres() {
    the_same_bytes_sent_at_once_are_one_document(Backend::Postgres).await;
}
