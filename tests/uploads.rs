//! Presigned uploads through HTTP, on the local directory (the API signs
//! its own upload URL) and on S3 (the URL is S3's, and the bytes never pass
//! the API): request, put, complete, processed and found; bytes that are
//! not what was declared; expiry and the cleanup the system does itself.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{read, spawn_app_configured, use_test_s3, Backend, TestApp};
use domain::document::{staging_key, DocumentCommand, FileName};
use domain::{DocumentId, EventMetadata, TenantId};
use neurostash::upload_cleaner::UploadCleaner;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
enum Objects {
    Local,
    S3,
}

async fn spawn(backend: Backend, objects: Objects) -> TestApp {
    spawn_app_configured(backend, |config| {
        config.max_upload_bytes = 64 * 1024;
        if let Objects::S3 = objects {
            use_test_s3(config);
        }
    })
    .await
}

fn sha256(bytes: &[u8]) -> String {
    actors::artifact::sha256_hex(bytes)
}

async fn request_upload(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post("/v1/documents/uploads", key, body).await
}

/// PUTs bytes to an upload URL as a client would: no API key.
async fn put(app: &TestApp, url: &str, bytes: Vec<u8>) -> u16 {
    app.client
        .put(url)
        .header("content-type", "text/markdown")
        .body(bytes)
        .send()
        .await
        .expect("put is sent")
        .status()
        .as_u16()
}

async fn complete(app: &TestApp, key: &str, document_id: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/v1/documents/{document_id}/complete")))
        .bearer_auth(key)
        .send()
        .await
        .expect("complete is sent");
    read(response).await
}

/// Every key under the staging prefix of the raw store.
async fn staged(app: &TestApp) -> Vec<String> {
    app.app.raw_objects.list("staging/").await.expect("list staging")
}

async fn presigned_upload_is_processed_and_found(backend: Backend, objects: Objects) {
    let app = spawn(backend, objects).await;
    let (tenant, key) = app.create_user("presigned@example.com").await;
    let kb = app.create_knowledge_base(&key, "presigned").await;
    let content = "# Field notes\n\nThe heron waits by the sluice gate at dawn.\n".repeat(20);
    let bytes = content.as_bytes().to_vec();

    let (status, ticket) = request_upload(
        &app,
        &key,
        json!({
            "file_name": "field-notes.md",
            "content_type": "text/markdown",
            "size": bytes.len(),
            "sha256": sha256(&bytes),
            "knowledge_base_id": kb,
        }),
    )
    .await;
    assert_eq!(status, 201, "{ticket}");
    let document_id = ticket["document_id"].as_str().unwrap().to_owned();
    let url = ticket["upload_url"].as_str().unwrap().to_owned();
    assert_eq!(ticket["method"], "PUT");
    let expires_at: chrono::DateTime<Utc> = ticket["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires_at > Utc::now() + chrono::Duration::seconds(60), "{ticket}");
    match objects {
        Objects::Local => assert!(url.starts_with(&app.base), "the api's own url: {url}"),
        Objects::S3 => {
            assert!(!url.starts_with(&app.base), "an s3 url: {url}");
            assert!(url.contains("X-Amz-Signature"), "{url}");
        }
    }
    // open, but not a document yet
    let (status, _) = app.get(&format!("/v1/documents/{document_id}"), &key).await;
    assert_eq!(status, 404);
    // the same name cannot go in beside it while it is open
    let (status, problem) = app.upload(&key, "field-notes.md", "other bytes", None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("upload_pending")),
        "{problem}"
    );
    let (status, problem) = request_upload(&app, &key, json!({ "file_name": "field-notes.md", "size": 3 })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("upload_pending")),
        "{problem}"
    );

    // completing before the bytes are there keeps the upload open
    let (status, problem) = complete(&app, &key, &document_id).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("upload_not_received")),
        "{problem}"
    );

    // another tenant can neither complete it nor see it
    let (_, stranger) = app.create_user("stranger@example.com").await;
    let (status, problem) = complete(&app, &stranger, &document_id).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("not_found")),
        "{problem}"
    );

    assert_eq!(put(&app, &url, bytes.clone()).await, 200);
    let staged_now = staged(&app).await;
    assert_eq!(staged_now.len(), 1, "{staged_now:?}");
    assert!(
        staged_now[0].starts_with(&format!("staging/{tenant}/{document_id}/")),
        "{staged_now:?}"
    );

    let (status, accepted) = complete(&app, &key, &document_id).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["id"], document_id.as_str());
    let document = app.wait_processed(&key, &document_id).await;
    assert_eq!(document["status"], "SUCCESS", "{document}");
    assert_eq!(document["file_name"], "field-notes.md");
    assert_eq!(document["content_type"], "text/markdown");
    assert_eq!(document["size_bytes"], bytes.len());
    assert_eq!(document["sha256"], sha256(&bytes));
    assert!(staged(&app).await.is_empty(), "the staged object is deleted");

    // in the knowledge base, found by its words, its stored bytes sealed
    app.wait_indexed().await;
    let (status, results) = app.search(&key, &kb, "heron sluice gate", 3).await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(results["hits"][0]["document_id"], document_id.as_str(), "{results}");
    let stored_keys = app
        .app
        .raw_objects
        .list(&format!("tenants/{tenant}/documents/{document_id}/"))
        .await
        .unwrap();
    assert_eq!(stored_keys.len(), 1, "{stored_keys:?}");
    let at_rest = app.app.raw_objects.get(&stored_keys[0]).await.unwrap();
    assert!(at_rest.starts_with(b"NSE1"), "stored encrypted");
    assert!(
        !String::from_utf8_lossy(&at_rest).contains("heron"),
        "no plaintext at rest"
    );
    assert_eq!(app.app.objects.get(&stored_keys[0]).await.unwrap(), bytes);

    // done: completing again finds nothing open
    let (status, problem) = complete(&app, &key, &document_id).await;
    assert_eq!(status, 404, "{problem}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_upload_is_processed_and_found_on_the_local_directory() {
    presigned_upload_is_processed_and_found(Backend::Sqlite, Objects::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_upload_is_processed_and_found_on_s3() {
    presigned_upload_is_processed_and_found(Backend::Postgres, Objects::S3).await;
}

async fn wrong_bytes_end_the_upload_and_leave_nothing(backend: Backend, objects: Objects) {
    let app = spawn(backend, objects).await;
    let (_, key) = app.create_user("mismatch@example.com").await;
    let declared = b"the bytes that were promised".to_vec();

    // other bytes of the same length: the checksum catches them
    let (status, ticket) = request_upload(
        &app,
        &key,
        json!({ "file_name": "promised.txt", "size": declared.len(), "sha256": sha256(&declared) }),
    )
    .await;
    assert_eq!(status, 201, "{ticket}");
    let document_id = ticket["document_id"].as_str().unwrap().to_owned();
    let forged = b"the bytes that were swapped!".to_vec();
    assert_eq!(forged.len(), declared.len());
    assert_eq!(put(&app, ticket["upload_url"].as_str().unwrap(), forged).await, 200);
    let (status, problem) = complete(&app, &key, &document_id).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("upload_checksum_mismatch")),
        "{problem}"
    );
    assert!(staged(&app).await.is_empty(), "the staged bytes are deleted");
    let (status, _) = app.get(&format!("/v1/documents/{document_id}"), &key).await;
    assert_eq!(status, 404, "no document was made");
    let (status, problem) = complete(&app, &key, &document_id).await;
    assert_eq!(status, 404, "the upload is over: {problem}");

    // fewer bytes than declared: refused at the put by the api's own url,
    // at completion behind s3's
    let (status, ticket) = request_upload(&app, &key, json!({ "file_name": "promised.txt", "size": 100 })).await;
    assert_eq!(status, 201, "the name is free again: {ticket}");
    let document_id = ticket["document_id"].as_str().unwrap().to_owned();
    let url = ticket["upload_url"].as_str().unwrap().to_owned();
    let short = put(&app, &url, vec![b's'; 40]).await;
    match objects {
        Objects::Local => {
            assert_eq!(short, 400);
            assert!(staged(&app).await.is_empty(), "a refused put keeps nothing");
            // and more than declared is cut off
            assert_eq!(put(&app, &url, vec![b'l'; 4000]).await, 413);
            assert!(staged(&app).await.is_empty(), "a refused put keeps nothing");
            let (status, problem) = complete(&app, &key, &document_id).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (409, Some("upload_not_received")),
                "{problem}"
            );
            // a url of another upload, or with its signature altered, is refused
            let tampered = url.replace("signature=", "signature=0");
            assert_eq!(put(&app, &tampered, vec![b'x'; 100]).await, 403);
            let other = url.replace(&document_id, &Uuid::now_v7().to_string());
            assert_eq!(put(&app, &other, vec![b'x'; 100]).await, 403);
            assert_eq!(put(&app, &url, vec![b'r'; 99]).await, 400);
        }
        Objects::S3 => {
            assert_eq!(short, 200, "s3 takes what it is given");
            let (status, problem) = complete(&app, &key, &document_id).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (422, Some("upload_size_mismatch")),
                "{problem}"
            );
            assert!(staged(&app).await.is_empty(), "the staged bytes are deleted");
        }
    }

    // refused at the request: too big, a hostile name, a bad digest
    for (body, expected_status, code) in [
        (
            json!({ "file_name": "big.txt", "size": 64 * 1024 + 1 }),
            413,
            "payload_too_large",
        ),
        (
            json!({ "file_name": "../../etc/passwd.txt", "size": 10 }),
            400,
            "invalid_file_name",
        ),
        (
            json!({ "file_name": "tool.exe", "size": 10 }),
            415,
            "unsupported_file_type",
        ),
        (
            json!({ "file_name": "page.txt", "content_type": "text/html", "size": 10 }),
            415,
            "unsupported_content_type",
        ),
        (
            json!({ "file_name": "digest.txt", "size": 10, "sha256": "abc" }),
            422,
            "invalid_input",
        ),
        (
            json!({ "file_name": "kb.txt", "size": 10, "knowledge_base_id": Uuid::now_v7() }),
            404,
            "not_found",
        ),
    ] {
        let (status, problem) = request_upload(&app, &key, body.clone()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (expected_status, Some(code)),
            "{body}: {problem}"
        );
    }
    app.wait_registry().await;
    let (_, documents) = app.get("/v1/documents", &key).await;
    assert_eq!(documents["total"], 0, "{documents}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_end_the_upload_and_leave_nothing_on_the_local_directory() {
    wrong_bytes_end_the_upload_and_leave_nothing(Backend::Sqlite, Objects::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_end_the_upload_and_leave_nothing_on_s3() {
    wrong_bytes_end_the_upload_and_leave_nothing(Backend::Postgres, Objects::S3).await;
}

/// Opens an upload that expires in `lifetime`, as the API would (the API's
/// own lifetime is at least a minute), and stages its bytes.
async fn open_short_upload(app: &TestApp, tenant: TenantId, file_name: &str, lifetime: Duration) -> (DocumentId, Uuid) {
    let file_name = FileName::parse(file_name).unwrap();
    let document_id = DocumentId::for_file(tenant, file_name.as_str());
    let upload_id = Uuid::now_v7();
    let sealed_file_name = app
        .app
        .vault
        .seal(tenant, "file_name", file_name.as_str())
        .await
        .unwrap();
    let now = Utc::now();
    let outcome = app
        .app
        .actors
        .documents
        .execute(
            document_id.stream_id(),
            DocumentCommand::RequestUpload {
                document_id,
                tenant_id: tenant,
                file_name,
                sealed_file_name,
                content_type: "text/plain".into(),
                size_bytes: 5,
                sha256: None,
                knowledge_base_id: None,
                upload_id,
                now,
                expires_at: now + chrono::Duration::from_std(lifetime).unwrap(),
            },
            EventMetadata::system(Uuid::now_v7()),
        )
        .await
        .expect("upload opens");
    app.app.settle(outcome.written).await;
    app.app
        .raw_objects
        .put(&staging_key(tenant, document_id, upload_id), b"hello".to_vec())
        .await
        .unwrap();
    (document_id, upload_id)
}

async fn expired_uploads_are_cleaned_up_by_the_system(backend: Backend, objects: Objects) {
    let app = spawn(backend, objects).await;
    let (tenant, key) = app.create_user("expiry@example.com").await;
    let tenant = TenantId(tenant.parse().unwrap());
    let (expiring, _) = open_short_upload(&app, tenant, "late.txt", Duration::from_secs(1)).await;
    let (lasting, _) = open_short_upload(&app, tenant, "lasting.txt", Duration::from_secs(3600)).await;
    assert_eq!(staged(&app).await.len(), 2);
    let cleaner = UploadCleaner::new(
        app.app.registry.clone(),
        app.app.actors.documents.clone(),
        app.app.raw_objects.clone(),
        Duration::ZERO,
    );
    assert_eq!(cleaner.sweep().await.unwrap(), 0, "nothing has expired yet");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // past its expiry it cannot be completed, even before the cleanup
    let (status, problem) = complete(&app, &key, &expiring.to_string()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (410, Some("upload_expired")),
        "{problem}"
    );

    assert_eq!(cleaner.sweep().await.unwrap(), 1);
    app.wait_registry().await;
    let left = staged(&app).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains(&lasting.to_string()),
        "the open upload keeps its bytes: {left:?}"
    );
    assert!(app
        .app
        .registry
        .pending_upload(tenant, expiring)
        .await
        .unwrap()
        .is_none());
    assert!(app
        .app
        .registry
        .pending_upload(tenant, lasting)
        .await
        .unwrap()
        .is_some());
    let (status, problem) = complete(&app, &key, &expiring.to_string()).await;
    assert_eq!(status, 404, "{problem}");
    // a second sweep finds nothing more, and the name is free again
    assert_eq!(cleaner.sweep().await.unwrap(), 0);
    let (status, accepted) = app.upload(&key, "late.txt", "sent directly after all", None).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["id"], expiring.to_string());

    // the log says what happened, for the auditors
    let events: Vec<String> = app
        .app
        .store
        .read_stream(&expiring.stream_id(), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_type)
        .collect();
    // (its processing may have begun since)
    assert_eq!(
        events[..3],
        ["UploadRequested", "UploadExpired", "DocumentRegistered"],
        "{events:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_uploads_are_cleaned_up_by_the_system_on_the_local_directory() {
    expired_uploads_are_cleaned_up_by_the_system(Backend::Sqlite, Objects::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_uploads_are_cleaned_up_by_the_system_on_s3() {
    expired_uploads_are_cleaned_up_by_the_system(Backend::Postgres, Objects::S3).await;
}
