//! A knowledge base keeps the embedding model it was created with and its
//! own chunking: its documents are chunked with its settings, the settings
//! are in the events, and vectors of another model are refused.

mod common;

use common::{spawn_app_configured, TestApp};
use domain::document::Document;
use domain::document::DocumentEvent;
use domain::{Aggregate, EventPayload};
use serde_json::{json, Value};

async fn create(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post("/v1/knowledge-bases", key, body).await
}

/// The `TextChunked` events of a document, decoded from the log.
async fn chunked_events(app: &TestApp, document_id: &str) -> Vec<DocumentEvent> {
    let log = app
        .app
        .store
        .read_log(domain::LogPosition::START, 100_000)
        .await
        .expect("read log");
    log.iter()
        .filter(|event| event.stream_id.as_str().ends_with(document_id) && event.event_type == "TextChunked")
        .map(|event| {
            assert_eq!(event.stream_id.category(), Document::CATEGORY);
            DocumentEvent::from_data(&event.event_type, event.schema_version, event.payload.clone())
                .expect("event decodes")
        })
        .collect()
}

fn long_text(topic: &str) -> String {
    (0..30)
        .map(|i| format!("Sentence {i} is about {topic} and has a few more words in it."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn documents_are_chunked_with_their_knowledge_base_s_settings_as_the_events_record() {
    let app = spawn_app_configured(common::Backend::Sqlite, |_| {}).await;
    let (_, key) = app.create_user("ada@example.com").await;

    let (status, small) = create(
        &app,
        &key,
        json!({"name": "small", "chunking": {"max_tokens": 20, "overlap_tokens": 4}}),
    )
    .await;
    assert_eq!(status, 201, "{small}");
    assert_eq!(small["chunking"], json!({"max_tokens": 20, "overlap_tokens": 4}));
    assert_eq!(small["embedding_model"]["name"], "hashing-v1-384");
    assert_eq!(small["embedding_model"]["dimensions"], 384);
    assert_eq!(small["embedding_model"]["version"], "1");
    let (status, large) = create(&app, &key, json!({"name": "large"})).await;
    assert_eq!(status, 201, "{large}");
    // the server's defaults when none are given (the tests' are 48 and 8)
    assert_eq!(large["chunking"], json!({"max_tokens": 48, "overlap_tokens": 8}));
    let (status, listed) = app
        .get(&format!("/v1/knowledge-bases/{}", small["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!((status, &listed["chunking"]), (200, &small["chunking"]));

    for (chunking, field) in [
        (json!({"max_tokens": 8, "overlap_tokens": 0}), "chunking.max_tokens"),
        // more than the hashing embedder reads
        (json!({"max_tokens": 600, "overlap_tokens": 0}), "chunking.max_tokens"),
        (
            json!({"max_tokens": 40, "overlap_tokens": 20}),
            "chunking.overlap_tokens",
        ),
    ] {
        let (status, body) = create(&app, &key, json!({"name": "bad", "chunking": chunking})).await;
        assert_eq!(status, 422, "{chunking}: {body}");
        assert_eq!(body["code"], "invalid_input", "{body}");
        assert!(body["detail"].as_str().unwrap().contains(field), "{body}");
    }

    let small_id = small["id"].as_str().unwrap();
    let large_id = large["id"].as_str().unwrap();
    let (status, in_small) = app
        .upload(&key, "small.txt", &long_text("rivers"), Some(small_id))
        .await;
    assert_eq!(status, 202, "{in_small}");
    let (status, in_large) = app
        .upload(&key, "large.txt", &long_text("mountains"), Some(large_id))
        .await;
    assert_eq!(status, 202, "{in_large}");
    let in_small = app.wait_processed(&key, in_small["id"].as_str().unwrap()).await;
    let in_large = app.wait_processed(&key, in_large["id"].as_str().unwrap()).await;
    assert_eq!(
        (in_small["status"].as_str(), in_large["status"].as_str()),
        (Some("SUCCESS"), Some("SUCCESS"))
    );
    let (small_chunks, large_chunks) = (
        in_small["chunk_count"].as_u64().unwrap(),
        in_large["chunk_count"].as_u64().unwrap(),
    );
    assert!(
        small_chunks > large_chunks * 2,
        "20-token chunks ({small_chunks}) outnumber 48-token ones ({large_chunks})"
    );
    for (document, max_tokens, overlap_tokens) in [(&in_small, 20, 4), (&in_large, 48, 8)] {
        let events = chunked_events(&app, document["id"].as_str().unwrap()).await;
        match events.as_slice() {
            [DocumentEvent::TextChunked {
                settings: Some(settings),
                tokenizer: Some(tokenizer),
                chunk_count,
                ..
            }] => {
                assert_eq!(
                    (settings.max_tokens, settings.overlap_tokens),
                    (max_tokens, overlap_tokens)
                );
                assert_eq!(tokenizer, "words-v1");
                assert_eq!(u64::from(*chunk_count), document["chunk_count"].as_u64().unwrap());
            }
            other => panic!("expected one TextChunked with settings, found {other:?}"),
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_knowledge_base_takes_only_vectors_of_the_model_it_is_pinned_to() {
    let app = spawn_app_configured(common::Backend::Sqlite, |_| {}).await;
    let (_, key) = app.create_user("ada@example.com").await;
    let pinned = app.create_knowledge_base(&key, "pinned to 384").await;
    let (status, earlier) = app
        .upload(&key, "earlier.txt", "vectors of the first model", None)
        .await;
    assert_eq!(status, 202, "{earlier}");
    let earlier = earlier["id"].as_str().unwrap().to_owned();
    app.wait_processed(&key, &earlier).await;

    // the operator changes the model: the knowledge base stays pinned to the old one
    let app = app.restart_with(|config| config.embedding_dimensions = 256).await;
    let (status, later) = app.upload(&key, "later.txt", "vectors of the second model", None).await;
    assert_eq!(status, 202, "{later}");
    let later = later["id"].as_str().unwrap().to_owned();
    app.wait_processed(&key, &later).await;
    let (status, body) = app
        .post(
            &format!("/v1/knowledge-bases/{pinned}/documents"),
            &key,
            json!({ "document_id": later }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "embedding_model_mismatch", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("hashing-v1-384"), "{body}");

    // uploaded into the pinned knowledge base, a document fails with the reason
    let (status, into) = app
        .upload(&key, "into.txt", "meant for the old model", Some(&pinned))
        .await;
    assert_eq!(status, 202, "{into}");
    let into = app.wait_processed(&key, into["id"].as_str().unwrap()).await;
    assert_eq!(into["status"], "FAILED", "{into}");
    let error = into["error"].as_str().unwrap();
    assert!(
        error.contains("pinned to embedding model hashing-v1-384") && error.contains("hashing-v1-256"),
        "{error}"
    );

    // a knowledge base created now is pinned to the new model and refuses the old vectors
    let (status, newer) = create(&app, &key, json!({"name": "pinned to 256"})).await;
    assert_eq!(
        (status, newer["embedding_model"]["dimensions"].as_u64()),
        (201, Some(256))
    );
    let newer = newer["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/knowledge-bases/{newer}/documents"),
            &key,
            json!({ "document_id": earlier }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("embedding_model_mismatch")),
        "{body}"
    );
    let (status, body) = app
        .post(
            &format!("/v1/knowledge-bases/{newer}/documents"),
            &key,
            json!({ "document_id": later }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.shutdown().await;
}
