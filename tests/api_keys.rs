//! API keys through HTTP against the real app: revocation and expiry take
//! effect on the next request, read-only keys read and search but send no
//! command, keys limited to knowledge bases reach those alone, and an
//! address that fails to authenticate too often is refused for a while.

mod common;

use std::time::{Duration, Instant};

use common::{read, spawn_app, spawn_app_configured, Backend, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

/// Issues a key with `body` through `key`; returns its token and id.
async fn issue(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let (status, created) = app.post("/v1/api-keys", key, body).await;
    assert_eq!(status, 201, "{created}");
    (
        created["api_key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

/// Uploads a document into `kb` and waits until it is processed.
async fn processed_upload(app: &TestApp, key: &str, file: &str, text: &str, kb: Option<&str>) -> String {
    let (status, body) = app.upload(key, file, text, kb).await;
    assert_eq!(status, 202, "upload {file}: {body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(key, &id).await["status"], "SUCCESS");
    id
}

#[track_caller]
fn assert_problem(answer: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    assert_eq!(answer.1["code"], code, "{what}: {}", answer.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_keys_are_refused_from_the_next_request() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, owner) = app.create_user("owner@example.com").await;
    let (second, second_id) = issue(&app, &owner, json!({ "label": "ci" })).await;
    assert_eq!(app.get("/v1/knowledge-bases", &second).await.0, 200);

    let (status, _) = app.delete(&format!("/v1/api-keys/{second_id}"), &owner).await;
    assert_eq!(status, 204);
    let refused = app.get("/v1/knowledge-bases", &second).await;
    assert_problem(&refused, 401, "unauthorized", "a revoked key");
    assert_eq!(
        refused.1["detail"], "a valid api key is required",
        "a revoked key learns no more than a wrong one"
    );
    assert_eq!(
        app.get("/v1/knowledge-bases", &owner).await.0,
        200,
        "other keys keep working"
    );
    let (_, keys) = app.get("/v1/api-keys", &owner).await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["id"] == second_id.as_str())
        .expect("the revoked key is still listed");
    assert!(listed["revoked_at"].is_string(), "{listed}");

    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (short_lived, _) = issue(&app, &owner, json!({ "expires_at": expires_at.to_rfc3339() })).await;
    assert_eq!(
        app.get("/v1/knowledge-bases", &short_lived).await.0,
        200,
        "a key works until it expires"
    );
    let until_expired = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_expired + Duration::from_millis(100)).await;
    let refused = app.get("/v1/knowledge-bases", &short_lived).await;
    assert_problem(&refused, 401, "unauthorized", "an expired key");
    app.shutdown().await;
}

async fn read_only_keys_read_and_search_but_send_no_command(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, owner) = app.create_user("reader@example.com").await;
    let kb = app.create_knowledge_base(&owner, "notes").await;
    let document = processed_upload(
        &app,
        &owner,
        "tides.txt",
        "Tides rise and fall twice a day because the moon pulls the oceans.",
        Some(&kb),
    )
    .await;
    app.wait_indexed().await;
    let (status, created) = app
        .post(
            "/v1/api-keys",
            &owner,
            json!({ "label": "dashboard", "read_only": true }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["read_only"], true);
    assert!(created["knowledge_base_ids"].is_null(), "{created}");
    let reader = created["api_key"].as_str().unwrap().to_owned();
    let reader_id = created["id"].as_str().unwrap().to_owned();

    for path in [
        "/v1/knowledge-bases".to_owned(),
        format!("/v1/knowledge-bases/{kb}"),
        format!("/v1/knowledge-bases/{kb}/documents"),
        "/v1/documents".to_owned(),
        format!("/v1/documents/{document}"),
        "/v1/api-keys".to_owned(),
        "/v1/audit".to_owned(),
    ] {
        let (status, body) = app.get(&path, &reader).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    let (status, hits) = app.search(&reader, &kb, "why do tides rise", 3).await;
    assert_eq!(status, 200, "a search is a read: {hits}");
    assert_eq!(hits["hits"][0]["file_name"], "tides.txt", "{hits}");
    let (_, keys) = app.get("/v1/api-keys", &owner).await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["id"] == reader_id.as_str())
        .expect("the read-only key is listed");
    assert_eq!(listed["read_only"], true, "{listed}");

    let refusals = [
        ("upload", app.upload(&reader, "new.txt", "text", Some(&kb)).await),
        (
            "create a knowledge base",
            app.post("/v1/knowledge-bases", &reader, json!({ "name": "mine" }))
                .await,
        ),
        (
            "link a document",
            app.post(
                &format!("/v1/knowledge-bases/{kb}/documents"),
                &reader,
                json!({ "document_id": document }),
            )
            .await,
        ),
        (
            "unlink a document",
            app.delete(&format!("/v1/knowledge-bases/{kb}/documents/{document}"), &reader)
                .await,
        ),
        (
            "delete a document",
            app.delete(&format!("/v1/documents/{document}"), &reader).await,
        ),
        (
            "delete a knowledge base",
            app.delete(&format!("/v1/knowledge-bases/{kb}"), &reader).await,
        ),
        ("issue a key", app.post("/v1/api-keys", &reader, json!({})).await),
        (
            "revoke a key",
            app.delete(&format!("/v1/api-keys/{reader_id}"), &reader).await,
        ),
    ];
    for (what, answer) in &refusals {
        assert_problem(answer, 403, "read_only_key", what);
        assert!(
            answer.1["detail"].as_str().unwrap().contains("read only"),
            "{what}: {}",
            answer.1
        );
    }
    // a read-only admin key creates no user either
    let (admin_reader, _) = issue(&app, &app.admin_key, json!({ "read_only": true })).await;
    let answer = app
        .post(
            "/v1/users",
            &admin_reader,
            json!({ "email": "x@example.com", "role": "USER" }),
        )
        .await;
    assert_problem(&answer, 403, "read_only_key", "create a user");

    // nothing changed
    let (status, _) = app.get(&format!("/v1/knowledge-bases/{kb}"), &owner).await;
    assert_eq!(status, 200);
    let (_, links) = app.get(&format!("/v1/knowledge-bases/{kb}/documents"), &owner).await;
    assert_eq!(links["items"].as_array().unwrap().len(), 1, "{links}");
    let (_, documents) = app.get("/v1/documents", &owner).await;
    assert_eq!(documents["total"], 1, "{documents}");
    assert_eq!(app.get("/v1/api-keys", &reader).await.0, 200, "the key was not revoked");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_keys_read_and_search_but_send_no_command_on_sqlite() {
    read_only_keys_read_and_search_but_send_no_command(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_keys_read_and_search_but_send_no_command_on_postgres() {
    read_only_keys_read_and_search_but_send_no_command(Backend::Postgres).await;
}

/// The detail of a 404 with the id it names replaced, to compare refusals
/// of different ids.
fn detail_without(answer: &(u16, Value), id: &str) -> String {
    answer.1["detail"].as_str().unwrap_or_default().replace(id, "<id>")
}

async fn keys_limited_to_knowledge_bases_reach_only_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, owner) = app.create_user("scoped@example.com").await;
    let (_, stranger) = app.create_user("stranger@example.com").await;
    let inside = app.create_knowledge_base(&owner, "inside").await;
    let outside = app.create_knowledge_base(&owner, "outside").await;
    let strangers = app.create_knowledge_base(&stranger, "not yours").await;
    let in_inside = processed_upload(&app, &owner, "in.txt", "bees dance in the hive", Some(&inside)).await;
    let in_outside = processed_upload(&app, &owner, "out.txt", "magma rises", Some(&outside)).await;
    let in_both = processed_upload(&app, &owner, "both.txt", "tides and moons", Some(&inside)).await;
    let (status, body) = app
        .post(
            &format!("/v1/knowledge-bases/{outside}/documents"),
            &owner,
            json!({ "document_id": in_both }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let in_none = processed_upload(&app, &owner, "loose.txt", "compilers lower code", None).await;
    app.wait_indexed().await;

    // only the caller's own knowledge bases, each once, at least one
    for (ids, status, what) in [
        (json!([strangers]), 404, "another tenant's knowledge base"),
        (json!([Uuid::now_v7()]), 404, "a knowledge base that does not exist"),
        (json!([]), 422, "no knowledge base"),
        (json!([inside, inside]), 422, "one knowledge base twice"),
    ] {
        let (answer, body) = app
            .post("/v1/api-keys", &owner, json!({ "knowledge_base_ids": ids }))
            .await;
        assert_eq!(answer, status, "{what}: {body}");
    }
    let (status, created) = app
        .post(
            "/v1/api-keys",
            &owner,
            json!({ "label": "inside only", "knowledge_base_ids": [inside] }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["knowledge_base_ids"], json!([inside]));
    assert_eq!(created["read_only"], false);
    let scoped = created["api_key"].as_str().unwrap().to_owned();
    let (_, keys) = app.get("/v1/api-keys", &owner).await;
    assert!(
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|key| key["knowledge_base_ids"] == json!([inside])),
        "{keys}"
    );

    // the list shows the knowledge bases in scope; the others read as absent
    let (status, list) = app.get("/v1/knowledge-bases", &scoped).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kb| kb["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [inside.as_str()]);
    let foreign = app.get(&format!("/v1/knowledge-bases/{strangers}"), &scoped).await;
    assert_problem(&foreign, 404, "not_found", "another tenant's knowledge base");
    for path in [
        format!("/v1/knowledge-bases/{outside}"),
        format!("/v1/knowledge-bases/{outside}/documents"),
    ] {
        let answer = app.get(&path, &scoped).await;
        assert_problem(&answer, 404, "not_found", &path);
        assert_eq!(
            detail_without(&answer, &outside),
            detail_without(&foreign, &strangers),
            "an out-of-scope knowledge base must read exactly as another tenant's"
        );
    }
    assert_problem(
        &app.search(&scoped, &outside, "magma", 3).await,
        404,
        "not_found",
        "search outside",
    );
    assert_problem(
        &app.delete(&format!("/v1/knowledge-bases/{outside}"), &scoped).await,
        404,
        "not_found",
        "delete outside",
    );
    assert_problem(
        &app.upload(&scoped, "sneaky.txt", "text", Some(&outside)).await,
        404,
        "not_found",
        "upload outside",
    );

    // inside the scope it works as ever
    let (status, links) = app
        .get(&format!("/v1/knowledge-bases/{inside}/documents"), &scoped)
        .await;
    assert_eq!(status, 200, "{links}");
    assert_eq!(links["items"].as_array().unwrap().len(), 2, "{links}");
    let (status, hits) = app.search(&scoped, &inside, "bees dance in the hive", 5).await;
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["hits"][0]["file_name"], "in.txt", "{hits}");
    for document in [&in_inside, &in_both] {
        let (status, body) = app.get(&format!("/v1/documents/{document}"), &scoped).await;
        assert_eq!(status, 200, "{body}");
    }
    for document in [&in_outside, &in_none] {
        let answer = app.get(&format!("/v1/documents/{document}"), &scoped).await;
        assert_problem(&answer, 404, "not_found", "a document in no knowledge base in scope");
    }
    // a document the key cannot see does not come in through a link
    for document in [&in_outside, &in_none] {
        let answer = app
            .post(
                &format!("/v1/knowledge-bases/{inside}/documents"),
                &scoped,
                json!({ "document_id": document }),
            )
            .await;
        assert_problem(&answer, 404, "not_found", "linking an unreachable document");
    }
    let (status, body) = app.upload(&scoped, "new.txt", "fresh words", Some(&inside)).await;
    assert_eq!(status, 202, "{body}");

    // what reaches past the scope is refused outright
    let refusals = [
        ("list every document", app.get("/v1/documents", &scoped).await),
        (
            "create a knowledge base",
            app.post("/v1/knowledge-bases", &scoped, json!({ "name": "another" }))
                .await,
        ),
        (
            "upload outside a knowledge base",
            app.upload(&scoped, "bare.txt", "text", None).await,
        ),
        ("issue a key", app.post("/v1/api-keys", &scoped, json!({})).await),
        (
            "issue a narrower key",
            app.post(
                "/v1/api-keys",
                &scoped,
                json!({ "read_only": true, "knowledge_base_ids": [inside] }),
            )
            .await,
        ),
        ("list keys", app.get("/v1/api-keys", &scoped).await),
        ("revoke a key", app.delete("/v1/api-keys/0123456789ab", &scoped).await),
        ("read the audit log", app.get("/v1/audit", &scoped).await),
        (
            "delete a document also outside",
            app.delete(&format!("/v1/documents/{in_both}"), &scoped).await,
        ),
    ];
    for (what, answer) in &refusals {
        assert_problem(answer, 403, "knowledge_base_scoped_key", what);
        let detail = answer.1["detail"].as_str().unwrap();
        assert!(detail.contains("limited to knowledge bases"), "{what}: {detail}");
        assert!(
            !detail.contains(&outside),
            "{what} names the knowledge base outside: {detail}"
        );
    }
    let (status, _) = app.get("/v1/schemas/events", &scoped).await;
    assert_eq!(status, 200, "the schemas are no tenant's data");
    let (status, body) = app.delete(&format!("/v1/documents/{in_inside}"), &scoped).await;
    assert_eq!(status, 204, "a document only in scope can be deleted: {body}");
    let (_, both) = app.get(&format!("/v1/documents/{in_both}"), &owner).await;
    assert_eq!(both["id"], in_both.as_str(), "the refused delete kept the document");

    // an admin key limited to a knowledge base is no admin of the tenants
    let admins = app.create_knowledge_base(&app.admin_key, "admin's").await;
    let (scoped_admin, _) = issue(&app, &app.admin_key, json!({ "knowledge_base_ids": [admins] })).await;
    let answer = app
        .post(
            "/v1/users",
            &scoped_admin,
            json!({ "email": "y@example.com", "role": "USER" }),
        )
        .await;
    assert_problem(&answer, 403, "knowledge_base_scoped_key", "create a user");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limited_to_knowledge_bases_reach_only_them_on_sqlite() {
    keys_limited_to_knowledge_bases_reach_only_them(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limited_to_knowledge_bases_reach_only_them_on_postgres() {
    keys_limited_to_knowledge_bases_reach_only_them(Backend::Postgres).await;
}

/// A request with `token` from the test's address, with its `Retry-After`.
async fn attempt(app: &TestApp, token: Option<&str>) -> (u16, Value, Option<u64>) {
    let mut request = app.client.get(app.url("/v1/knowledge-bases"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request is sent");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let (status, body) = read(response).await;
    (status, body, retry_after)
}

/// Once an address has failed to authenticate `auth_failure_limit` times in
/// a window, every request from it answers 429 until the window closes,
/// even with a good key: checking the key is what the refusal saves, and
/// what someone guessing keys wants done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_failing_to_authenticate_too_often_is_refused_until_its_window_closes() {
    let app = spawn_app_configured(Backend::Sqlite, |config| {
        config.auth_failure_limit = 3;
        config.auth_failure_window_secs = 2;
    })
    .await;
    let good = app.admin_key.clone();
    let wrong_secret = {
        let (key_id, _) = good.trim_start_matches("ns_").split_once('_').unwrap();
        format!("ns_{key_id}_{}", "0".repeat(64))
    };
    for _ in 0..5 {
        assert_eq!(attempt(&app, Some(&good)).await.0, 200, "successes count for nothing");
    }
    let window_opened = Instant::now();
    for token in ["nonsense", wrong_secret.as_str(), "ns_000000000000_00"] {
        let (status, problem, _) = attempt(&app, Some(token)).await;
        assert_eq!(status, 401, "{token}: {problem}");
        assert_eq!(
            problem["detail"], "a valid api key is required",
            "the same answer for any failure"
        );
    }
    for token in [Some(wrong_secret.as_str()), Some(good.as_str()), None] {
        let (status, problem, retry_after) = attempt(&app, token).await;
        assert_eq!(status, 429, "{token:?}: {problem}");
        assert_eq!(problem["code"], "too_many_failed_authentications", "{problem}");
        let retry_after = retry_after.expect("a Retry-After header");
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    }
    let (status, _) = read(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200, "health is not limited");

    let closes = window_opened + Duration::from_secs(2);
    tokio::time::sleep(closes.saturating_duration_since(Instant::now()) + Duration::from_millis(200)).await;
    assert_eq!(attempt(&app, Some(&good)).await.0, 200, "the window closed");
    assert_eq!(attempt(&app, Some(&wrong_secret)).await.0, 401, "counting starts again");
    app.shutdown().await;
}
