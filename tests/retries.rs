//! Retries through the real processor and HTTP: a document whose bytes
//! cannot be read (they are not in the store yet) is retried with growing
//! waits, fails for good after the configured attempts with the reason and
//! the count, never holds up another document, and once its bytes are there
//! `POST /v1/documents/{id}/retry` processes it to SUCCESS.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{spawn_app_configured, Backend, TestApp};
use domain::document::{DocumentCommand, FileName};
use domain::{DocumentId, EventMetadata, TenantId};
use serde_json::Value;
use uuid::Uuid;

const MAX_ATTEMPTS: u32 = 3;

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_configured(backend, |config| {
        config.processing_max_attempts = MAX_ATTEMPTS;
        config.processing_retry_base_ms = 300;
        config.processing_retry_max_secs = 5;
        // the sweep, which hands out due retries, runs every second
        config.processing_lease_secs = 4;
    })
    .await
}

/// Registers a document whose bytes are not in the store: every attempt
/// at it fails on reading them, as it would with the store out of reach.
async fn register_without_bytes(app: &TestApp, tenant: TenantId, name: &str, text: &str) -> (DocumentId, String) {
    let file_name = FileName::parse(name).unwrap();
    let document_id = DocumentId::for_file(tenant, file_name.as_str());
    let object_key = format!("tenants/{tenant}/documents/{document_id}/{}", Uuid::now_v7());
    let sealed_file_name = app.app.vault.seal(tenant, "file_name", name).await.unwrap();
    let outcome = app
        .app
        .actors
        .documents
        .execute(
            document_id.stream_id(),
            DocumentCommand::Register {
                document_id,
                tenant_id: tenant,
                file_name,
                sealed_file_name,
                content_type: "text/plain".into(),
                size_bytes: text.len() as u64,
                sha256: actors::artifact::sha256_hex(text.as_bytes()),
                object_key: object_key.clone(),
                knowledge_base_id: None,
            },
            EventMetadata::system(Uuid::now_v7()),
        )
        .await
        .expect("document registers");
    app.app.settle(outcome.written).await;
    (document_id, object_key)
}

async fn wait_status(app: &TestApp, key: &str, document_id: DocumentId, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, document) = app.get(&format!("/v1/documents/{document_id}"), key).await;
        assert_eq!(code, 200, "{document}");
        if document["status"] == status {
            return document;
        }
        assert!(Instant::now() < deadline, "document never reached {status}: {document}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn failing_documents_back_off_fail_and_are_retried_on_request(backend: Backend) {
    let app = spawn(backend).await;
    let (tenant, key) = app.create_user("retries@example.com").await;
    let tenant = TenantId(tenant.parse().unwrap());
    let text = "The lighthouse keeper logs the fog horn hours.";
    let (poison, object_key) = register_without_bytes(&app, tenant, "unreadable.txt", text).await;

    // another document goes through while the first one keeps failing
    let (status, accepted) = app.upload(&key, "healthy.txt", "Plain words about tides.", None).await;
    assert_eq!(status, 202, "{accepted}");
    let healthy = app.wait_processed(&key, accepted["id"].as_str().unwrap()).await;
    assert_eq!(healthy["status"], "SUCCESS", "{healthy}");

    let failed = wait_status(&app, &key, poison, "FAILED").await;
    assert_eq!(failed["attempts"], MAX_ATTEMPTS, "{failed}");
    let reason = failed["error"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "gave up after {MAX_ATTEMPTS} attempts: document bytes unavailable"
        )),
        "{failed}"
    );

    // in the log: each failed attempt scheduled the next one, each wait
    // longer than the one before, then the last failed the document
    let events = app.app.store.read_stream(&poison.stream_id(), 0).await.unwrap();
    let types: Vec<&str> = events.iter().map(|event| event.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "DocumentRegistered",
            "ProcessingStarted",
            "RetryScheduled",
            "ProcessingStarted",
            "RetryScheduled",
            "ProcessingStarted",
            "ProcessingFailed",
        ],
        "{types:?}"
    );
    let waits: Vec<chrono::Duration> = events
        .iter()
        .filter(|event| event.event_type == "RetryScheduled")
        .map(|event| {
            let retry_at: DateTime<Utc> = event.payload["retry_at"].as_str().unwrap().parse().unwrap();
            retry_at - event.recorded_at
        })
        .collect();
    // (recorded_at is stored to the millisecond, so it may read up to 1 ms
    // before the instant the wait was counted from)
    let slack = chrono::Duration::milliseconds(2);
    assert!(waits[0] <= chrono::Duration::milliseconds(300) + slack, "{waits:?}");
    assert!(
        waits[1] > waits[0] && waits[1] <= chrono::Duration::milliseconds(600) + slack,
        "{waits:?}"
    );
    let started: Vec<DateTime<Utc>> = events
        .iter()
        .filter(|event| event.event_type == "ProcessingStarted")
        .map(|event| event.recorded_at)
        .collect();
    for (index, wait) in waits.iter().enumerate() {
        assert!(
            started[index + 1] - started[index] >= *wait,
            "a retry ran before it was due"
        );
    }

    // a document that has not failed is not retried, another tenant's is not found
    let (status, problem) = app
        .post(
            &format!("/v1/documents/{}/retry", healthy["id"].as_str().unwrap()),
            &key,
            Value::Null,
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("conflict")), "{problem}");
    let (_, stranger) = app.create_user("stranger@example.com").await;
    let (status, problem) = app
        .post(&format!("/v1/documents/{poison}/retry"), &stranger, Value::Null)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("not_found")),
        "{problem}"
    );

    // the bytes arrive; a retry on request starts over and succeeds
    app.app
        .objects
        .put(&object_key, text.as_bytes().to_vec())
        .await
        .unwrap();
    let (status, accepted) = app
        .post(&format!("/v1/documents/{poison}/retry"), &key, Value::Null)
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "PENDING");
    let done = wait_status(&app, &key, poison, "SUCCESS").await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(done["error"], Value::Null, "{done}");
    let types: Vec<String> = app
        .app
        .store
        .read_stream(&poison.stream_id(), 7)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "RetryRequested",
            "ProcessingStarted",
            "TextExtracted",
            "TextChunked",
            "EmbeddingBatchCompleted",
            "DocumentProcessed",
        ],
        "{types:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_documents_back_off_fail_and_are_retried_on_request_on_sqlite() {
    failing_documents_back_off_fail_and_are_retried_on_request(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_documents_back_off_fail_and_are_retried_on_request_on_postgres() {
    failing_documents_back_off_fail_and_are_retried_on_request(Backend::Postgres).await;
}
