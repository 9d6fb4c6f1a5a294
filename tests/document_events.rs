//! A document's events as server-sent events, through HTTP: every stage in
//! order with its status (registered, started, extracted, chunked, each
//! embedding batch, processed), resumable with `Last-Event-ID`, new events as
//! they are appended, and the stream ends with the document.

mod common;

use std::time::Duration;

use common::{spawn_app, Backend, TestApp};
use futures::StreamExt;
use serde_json::Value;

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// An open event stream, parsed as it arrives.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp, key: &str, document: &str, last_event_id: Option<&str>) -> (u16, Option<Events>) {
        let mut request = app
            .client
            .get(app.url(&format!("/v1/documents/{document}/events")))
            .bearer_auth(key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        if status != 200 {
            return (status, None);
        }
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let body = response.bytes_stream().boxed();
        (
            status,
            Some(Events {
                body,
                buffer: String::new(),
            }),
        )
    }

    /// The next event, `None` when the stream has ended; keep-alive
    /// comments are skipped.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("event data is json");
                return Some(Sse { id, event, data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("an event within 30 s")?
                .expect("the stream reads");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

async fn stages_stream_in_order_and_resume(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.create_user("watcher@example.com").await;
    let text = "Lantern notes. The ferry leaves at nine and returns at four.";
    let (status, accepted) = app.upload(&key, "ferry.txt", text, None).await;
    assert_eq!(status, 202, "{accepted}");
    let document = accepted["id"].as_str().unwrap().to_owned();

    // opened at once: what has happened, then the rest as it happens
    let (status, events) = Events::open(&app, &key, &document, None).await;
    assert_eq!(status, 200);
    let mut events = events.unwrap();
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let done = event.event == "DocumentProcessed";
        seen.push(event);
        if done {
            break;
        }
    }
    let summary: Vec<(String, String, Option<String>)> = seen
        .iter()
        .map(|event| {
            (
                event.id.clone(),
                event.event.clone(),
                event.data["status"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected = [
        ("1", "DocumentRegistered", "PENDING"),
        ("2", "ProcessingStarted", "PROCESSING"),
        ("3", "TextExtracted", "PROCESSING"),
        ("4", "TextChunked", "PROCESSING"),
        ("5", "EmbeddingBatchCompleted", "PROCESSING"),
        ("6", "DocumentProcessed", "SUCCESS"),
    ]
    .map(|(id, event, status)| (id.to_owned(), event.to_owned(), Some(status.to_owned())));
    assert_eq!(summary, expected);
    assert_eq!(seen[0].data["type"], "DocumentRegistered");
    assert_eq!(seen[0].data["document_id"], document.as_str());
    assert_eq!(
        seen[0].data["data"]["file_name"], "ferry.txt",
        "the sealed name is opened"
    );
    assert_eq!(seen[1].data["data"]["attempt"], 1);
    assert_eq!(
        seen[2].data["data"]["characters"],
        text.chars().count(),
        "{:?}",
        seen[2]
    );
    let chunk_count = seen[3].data["data"]["chunk_count"].as_u64().unwrap();
    assert!(chunk_count >= 1, "{:?}", seen[3]);
    assert_eq!(seen[4].data["data"]["batch"], 1, "{:?}", seen[4]);
    assert_eq!(seen[4].data["data"]["batches"], 1, "{:?}", seen[4]);
    assert_eq!(seen[5].data["data"]["chunk_count"], chunk_count, "{:?}", seen[5]);
    drop(events);

    // resumed after the fifth: the sixth comes, and nothing before it
    let (_, events) = Events::open(&app, &key, &document, Some("5")).await;
    let mut events = events.unwrap();
    let resumed = events.next().await.unwrap();
    assert_eq!(
        (resumed.id.as_str(), resumed.event.as_str()),
        ("6", "DocumentProcessed")
    );

    // live: a delete is the next event, and the stream ends with it
    let (status, _) = app.delete(&format!("/v1/documents/{document}"), &key).await;
    assert_eq!(status, 204);
    let deleted = events.next().await.unwrap();
    assert_eq!((deleted.id.as_str(), deleted.event.as_str()), ("7", "DocumentDeleted"));
    assert_eq!(deleted.data["status"], Value::Null);
    assert!(events.next().await.is_none(), "the stream ends with the document");

    // a long text is embedded in batches, each its own event
    let long: String = (0..2_400).map(|n| format!("word{n} ")).collect();
    let (status, accepted) = app.upload(&key, "long.txt", &long, None).await;
    assert_eq!(status, 202, "{accepted}");
    let long_id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &long_id).await["status"], "SUCCESS");
    let (_, events) = Events::open(&app, &key, &long_id, Some("4")).await;
    let mut events = events.unwrap();
    let mut batches = Vec::new();
    while let Some(event) = events.next().await {
        if event.event == "DocumentProcessed" {
            break;
        }
        assert_eq!(event.event, "EmbeddingBatchCompleted", "{event:?}");
        batches.push((
            event.data["data"]["batch"].as_u64().unwrap(),
            event.data["data"]["batches"].as_u64().unwrap(),
        ));
    }
    let total = batches.len() as u64;
    assert!(total >= 2, "{batches:?}");
    assert_eq!(batches, (1..=total).map(|batch| (batch, total)).collect::<Vec<_>>());
    drop(events);

    // another tenant's document, and a malformed Last-Event-ID
    let (status, accepted) = app.upload(&key, "second.txt", "more notes", None).await;
    assert_eq!(status, 202, "{accepted}");
    let second = accepted["id"].as_str().unwrap();
    let (_, stranger) = app.create_user("stranger@example.com").await;
    assert_eq!(Events::open(&app, &stranger, second, None).await.0, 404);
    assert_eq!(Events::open(&app, &key, second, Some("latest")).await.0, 400);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_stream_in_order_and_resume_on_sqlite() {
    stages_stream_in_order_and_resume(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_stream_in_order_and_resume_on_postgres() {
    stages_stream_in_order_and_resume(Backend::Postgres).await;
}
