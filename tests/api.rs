//! Authentication, API keys and refusals of bad input, through HTTP.

mod common;

use common::{read, spawn_app, Backend};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_get_401_problem_json() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, _) = read(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200, "health needs no key");

    let (status, problem) = read(app.client.get(app.url("/v1/knowledge-bases")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(problem["code"], "unauthorized");
    for token in [
        "nonsense",
        "ns_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let (status, problem) = app.get("/v1/knowledge-bases", token).await;
        assert_eq!(status, 401, "{token}: {problem}");
    }
    // a real key id with a wrong secret is refused the same way
    let (key_id, _) = app.admin_key.trim_start_matches("ns_").split_once('_').unwrap();
    let forged = format!("ns_{key_id}_{}", "f".repeat(64));
    let (status, _) = app.get("/v1/knowledge-bases", &forged).await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_issued_listed_and_revoked_at_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, first) = app.create_user("key-owner@example.com").await;
    let (status, created) = app.post("/v1/api-keys", &first, json!({ "label": "ci" })).await;
    assert_eq!(status, 201, "{created}");
    let second = created["api_key"].as_str().unwrap().to_owned();
    let second_id = created["id"].as_str().unwrap().to_owned();

    let (status, list) = app.get("/v1/api-keys", &second).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert!(
        !list
            .to_string()
            .contains(second.trim_start_matches("ns_").split_once('_').unwrap().1),
        "a secret leaked into the listing"
    );

    let (status, _) = app.delete(&format!("/v1/api-keys/{second_id}"), &first).await;
    assert_eq!(status, 204);
    let (status, _) = app.get("/v1/api-keys", &second).await;
    assert_eq!(status, 401, "a revoked key is refused from the next request on");
    let (status, _) = app.get("/v1/api-keys", &first).await;
    assert_eq!(status, 200, "other keys keep working");

    // another tenant cannot revoke or even see this tenant's key
    let (_, other) = app.create_user("other@example.com").await;
    let (_, list) = app.get("/v1/api-keys", &first).await;
    let first_id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["revoked_at"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app.delete(&format!("/v1/api-keys/{first_id}"), &other).await;
    assert_eq!(status, 404);

    // an expired key is refused
    let expiry = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let (status, created) = app.post("/v1/api-keys", &first, json!({ "expires_at": expiry })).await;
    assert_eq!(status, 201, "{created}");
    let short_lived = created["api_key"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let (status, _) = app.get("/v1/api-keys", &short_lived).await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_create_users_and_bad_input_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, user) = app.create_user("plain@example.com").await;
    let (status, problem) = app
        .post("/v1/users", &user, json!({ "email": "x@example.com", "role": "USER" }))
        .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "forbidden");

    let (status, problem) = app
        .post(
            "/v1/users",
            &app.admin_key,
            json!({ "email": "not-an-email", "role": "USER" }),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_input");
    let (status, problem) = app
        .post(
            "/v1/users",
            &app.admin_key,
            json!({ "email": "plain@example.com", "role": "USER" }),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "already_exists");
    let (status, _) = app.post("/v1/knowledge-bases", &user, json!({ "name": "" })).await;
    assert_eq!(status, 422);
    let (status, problem) = app.post("/v1/knowledge-bases", &user, json!({ "nme": 1 })).await;
    assert_eq!(status, 400, "{problem}");

    let kb = app.create_knowledge_base(&user, "kb").await;
    let (status, problem) = app.upload(&user, "report.exe", "MZ", Some(&kb)).await;
    assert_eq!(status, 415, "{problem}");
    assert_eq!(problem["code"], "unsupported_file_type");
    for hostile in [
        "../../etc/passwd.txt",
        "dir/inner.txt",
        &format!("{}.txt", "n".repeat(300)),
    ] {
        let (status, problem) = app.upload(&user, hostile, "text", Some(&kb)).await;
        assert_eq!(status, 400, "{hostile}: {problem}");
        assert_eq!(problem["code"], "invalid_file_name", "{problem}");
    }
    // a control character breaks the multipart header itself: refused before
    // the file name is even looked at
    let (status, problem) = app.upload(&user, "bad\u{7}name.txt", "text", Some(&kb)).await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = app.upload(&user, "a.txt", "text", Some("not-a-uuid")).await;
    assert_eq!(status, 422, "{problem}");
    let (_, listing) = app.get("/v1/documents", &user).await;
    assert_eq!(listing["total"], 0, "nothing is stored for a refused upload: {listing}");

    let (status, problem) = app.search(&user, &kb, "", 3).await;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = app.get("/v1/no-such-route", &user).await;
    assert_eq!(status, 404);
    let (status, spec) = read(app.client.get(app.url("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(spec["paths"]["/v1/knowledge-bases/{id}/search"].is_object(), "{spec}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_read_ends_failed_with_a_reason() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, user) = app.create_user("broken@example.com").await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![0xff, 0xfe, 0x00, 0xc3, 0x28]).file_name("binary.txt"),
    );
    let (status, body) = read(
        app.client
            .post(app.url("/v1/documents"))
            .bearer_auth(&user)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let document = app.wait_processed(&user, body["id"].as_str().unwrap()).await;
    assert_eq!(document["status"], "FAILED");
    assert!(document["error"].as_str().unwrap().contains("utf-8"), "{document}");
    app.shutdown().await;
}
