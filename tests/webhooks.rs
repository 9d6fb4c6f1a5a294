//! Webhooks through HTTP against a real receiver on loopback: every stage
//! of a document arrives in order, signed with the webhook's secret; a
//! receiver that keeps failing gets its attempts with backoff and the
//! delivery ends in the dead-letter list; a webhook gets only the types it
//! asked for; the secret never reaches the log in plain.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{spawn_app_configured, Backend, TestApp};
use hmac::{Hmac, Mac};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, post, EndpointExt, Route};
use serde_json::{json, Value};
use sha2::Sha256;

/// What the receiver was sent: (path, signature, delivery id, event header, body).
type Received = Arc<Mutex<Vec<(String, String, String, String, Vec<u8>)>>>;

fn header(request: &poem::Request, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[handler]
async fn receive(request: &poem::Request, body: Vec<u8>, Data(received): Data<&Received>) -> poem::http::StatusCode {
    let path = request.uri().path().to_owned();
    received.lock().unwrap().push((
        path.clone(),
        header(request, "x-neurostash-signature"),
        header(request, "x-neurostash-delivery"),
        header(request, "x-neurostash-event"),
        body,
    ));
    if path == "/fail" {
        poem::http::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        poem::http::StatusCode::NO_CONTENT
    }
}

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let address = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let routes = Route::new()
        .at("/ok", post(receive))
        .at("/fail", post(receive))
        .data(received.clone());
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(routes).await;
    });
    (format!("http://{address}"), received)
}

fn verify(secret: &str, signature: &str, body: &[u8]) -> bool {
    let Some((timestamp, mac)) = signature.strip_prefix("t=").and_then(|rest| rest.split_once(",v1=")) else {
        return false;
    };
    let mut expected = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    expected.update(format!("{timestamp}.").as_bytes());
    expected.update(body);
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap_or(0);
    hex::encode(expected.finalize().into_bytes()) == mac && (0..300).contains(&age)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(app: &TestApp, key: &str, url: &str, events: Value) -> (u16, Value) {
    app.post("/v1/webhooks", key, json!({ "url": url, "events": events }))
        .await
}

async fn receivers_see_every_stage_in_order_and_failures_end_dead(backend: Backend) {
    let app = spawn_app_configured(backend, |config| {
        config.webhook_max_attempts = 3;
        config.webhook_retry_base_ms = 100;
        config.webhook_retry_max_secs = 1;
    })
    .await;
    let (base, received) = receiver().await;
    let (_, key) = app.create_user("hooks@example.com").await;

    let (status, all) = register(&app, &key, &format!("{base}/ok"), json!(["*"])).await;
    assert_eq!(status, 201, "{all}");
    let secret = all["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    let (status, failing) = register(&app, &key, &format!("{base}/fail"), json!(["DocumentProcessed"])).await;
    assert_eq!(status, 201, "{failing}");
    let failing_id = failing["id"].as_str().unwrap().to_owned();

    let (status, accepted) = app
        .upload(&key, "hooked.txt", "The signal box opens at six.", None)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let document = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &document).await["status"], "SUCCESS");

    let ok_count = || {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, ..)| path == "/ok")
            .count()
    };
    wait_until("every stage at the receiver", || ok_count() >= 6).await;
    let deliveries: Vec<_> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, ..)| path == "/ok")
        .cloned()
        .collect();
    let types: Vec<&str> = deliveries.iter().map(|(_, _, _, event, _)| event.as_str()).collect();
    assert_eq!(
        types,
        [
            "DocumentRegistered",
            "ProcessingStarted",
            "TextExtracted",
            "TextChunked",
            "EmbeddingBatchCompleted",
            "DocumentProcessed"
        ]
    );
    let mut delivery_ids = std::collections::HashSet::new();
    for (index, (_, signature, delivery, event, body)) in deliveries.iter().enumerate() {
        assert!(verify(&secret, signature, body), "a valid signature: {signature}");
        assert!(
            !verify("another secret", signature, body),
            "a signature another secret does not make"
        );
        assert!(delivery_ids.insert(delivery.clone()), "one delivery id per delivery");
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["type"], event.as_str());
        assert_eq!(body["document_id"], document.as_str());
        assert_eq!(body["version"], index as u64 + 1);
    }
    let first: Value = serde_json::from_slice(&deliveries[0].4).unwrap();
    assert_eq!(first["data"]["file_name"], "hooked.txt", "{first}");
    assert_eq!(first["status"], "PENDING");
    let last: Value = serde_json::from_slice(&deliveries[5].4).unwrap();
    assert_eq!(last["status"], "SUCCESS");

    // the failing receiver: the one type it asked for, three attempts, dead
    let dead_path = format!("/v1/webhooks/{failing_id}/deliveries?status=DEAD");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (status, dead) = app.get(&dead_path, &key).await;
        assert_eq!(status, 200, "{dead}");
        if !dead["items"].as_array().unwrap().is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "the delivery never died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let item = &dead["items"][0];
    assert_eq!(item["event_type"], "DocumentProcessed", "{dead}");
    assert_eq!(item["attempts"], 3, "{dead}");
    assert_eq!(item["document_id"], document.as_str(), "{dead}");
    assert!(item["last_error"].as_str().unwrap().contains("500"), "{dead}");
    let attempts: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, ..)| path == "/fail")
        .map(|(_, _, delivery, event, _)| format!("{event} {delivery}"))
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts.iter().all(|attempt| *attempt == attempts[0]),
        "one delivery, retried: {attempts:?}"
    );
    let (_, delivered) = app
        .get(
            &format!(
                "/v1/webhooks/{}/deliveries?status=DELIVERED",
                all["id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(delivered["items"].as_array().unwrap().len(), 6, "{delivered}");

    // listed without secrets; refused input; another tenant's are not found
    let (_, listed) = app.get("/v1/webhooks", &key).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    assert!(!listed.to_string().contains(&secret), "the secret is shown once");
    for (url, events) in [
        ("ftp://example.com/hook", json!(["*"])),
        ("http://", json!(["*"])),
        ("http://example.com/a b", json!(["*"])),
        ("http://example.com/hook", json!(["NoSuchEvent"])),
        ("http://example.com/hook", json!(["  "])),
    ] {
        let (status, problem) = register(&app, &key, url, events.clone()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("invalid_input")),
            "{url} {events}: {problem}"
        );
    }
    let (_, stranger) = app.create_user("stranger@example.com").await;
    let (status, _) = app
        .get(&format!("/v1/webhooks/{failing_id}/deliveries"), &stranger)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.delete(&format!("/v1/webhooks/{failing_id}"), &stranger).await;
    assert_eq!(status, 404);
    let (_, theirs) = app.get("/v1/webhooks", &stranger).await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0, "{theirs}");

    // the secret is sealed in the log
    let log = app
        .app
        .store
        .read_log(domain::LogPosition::START, 100_000)
        .await
        .unwrap();
    assert!(log.iter().any(|event| event.event_type == "WebhookRegistered"));
    assert!(!log.iter().any(|event| event.payload.to_string().contains(&secret)));

    // removed: listed no more, sent nothing more
    let (status, _) = app
        .delete(&format!("/v1/webhooks/{}", all["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!(status, 204);
    let (_, listed) = app.get("/v1/webhooks", &key).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    let before = ok_count();
    let (status, _) = app.upload(&key, "after.txt", "Nobody hears of this one.", None).await;
    assert_eq!(status, 202);
    app.wait_registry().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ok_count(), before, "a removed webhook is sent nothing");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_see_every_stage_in_order_and_failures_end_dead_on_sqlite() {
    receivers_see_every_stage_in_order_and_failures_end_dead(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_see_every_stage_in_order_and_failures_end_dead_on_postgres() {
    receivers_see_every_stage_in_order_and_failures_end_dead(Backend::Postgres).await;
}
