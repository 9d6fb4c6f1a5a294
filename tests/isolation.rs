//! The tenant isolation matrix: tenant B, with its own valid key, aims every
//! route that takes an id at tenant A's ids (knowledge base, document, link,
//! api key, pending upload, audit tenant) and gets 404 exactly as for an id
//! that does not exist, and changes nothing of A's; and nothing of A's shows
//! in B's listings, searches or audit records. The admin-only routes
//! (users, erasures) refuse a user's key by its role (403), whatever the id.

mod common;

use common::{spawn_app_configured, use_test_s3, Backend, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// What A owns, and the words only A's document holds.
struct TenantA {
    tenant: String,
    key: String,
    kb: String,
    document: String,
    key_id: String,
    pending_upload: String,
}

const SECRET_PHRASE: &str = "kestrel ledger amber quarry";

async fn tenant_a(app: &TestApp) -> TenantA {
    let (tenant, key) = app.create_user("alice@example.com").await;
    let kb = app.create_knowledge_base(&key, "alice-private").await;
    let text = format!("Quarterly notes. The {SECRET_PHRASE} is filed under north. More notes follow.");
    let (status, accepted) = app.upload(&key, "alice-notes.txt", &text, Some(&kb)).await;
    assert_eq!(status, 202, "{accepted}");
    let document = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &document).await["status"], "SUCCESS");
    let (status, issued) = app.post("/v1/api-keys", &key, json!({ "label": "alice-ci" })).await;
    assert_eq!(status, 201, "{issued}");
    let (status, ticket) = app
        .post(
            "/v1/documents/uploads",
            &key,
            json!({ "file_name": "alice-later.md", "size": 10 }),
        )
        .await;
    assert_eq!(status, 201, "{ticket}");
    app.wait_indexed().await;
    TenantA {
        tenant,
        key,
        kb,
        document,
        key_id: issued["id"].as_str().unwrap().to_owned(),
        pending_upload: ticket["document_id"].as_str().unwrap().to_owned(),
    }
}

/// Every route with an id in it, aimed at A's ids, with a body where the
/// route takes one.
fn aimed_at(a: &TenantA, own_kb: &str, own_document: &str) -> Vec<(Method, String, Option<Value>)> {
    let (kb, document) = (&a.kb, &a.document);
    vec![
        (Method::GET, format!("/v1/knowledge-bases/{kb}"), None),
        (Method::DELETE, format!("/v1/knowledge-bases/{kb}"), None),
        (Method::GET, format!("/v1/knowledge-bases/{kb}/documents"), None),
        (
            Method::POST,
            format!("/v1/knowledge-bases/{kb}/documents"),
            Some(json!({ "document_id": own_document })),
        ),
        // A's document into B's own knowledge base
        (
            Method::POST,
            format!("/v1/knowledge-bases/{own_kb}/documents"),
            Some(json!({ "document_id": document })),
        ),
        (
            Method::DELETE,
            format!("/v1/knowledge-bases/{kb}/documents/{document}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/knowledge-bases/{kb}/search"),
            Some(json!({ "query": SECRET_PHRASE, "top_k": 5 })),
        ),
        (Method::GET, format!("/v1/documents/{document}"), None),
        (Method::DELETE, format!("/v1/documents/{document}"), None),
        (
            Method::POST,
            format!("/v1/documents/{}/complete", a.pending_upload),
            None,
        ),
        (Method::DELETE, format!("/v1/api-keys/{}", a.key_id), None),
        (Method::GET, format!("/v1/audit?tenant={}", a.tenant), None),
    ]
}

/// The same route with A's ids swapped for ids nobody has: what B must not
/// be able to tell A's ids apart from.
fn unknown(path: &str, a: &TenantA) -> String {
    [&a.kb, &a.document, &a.pending_upload, &a.tenant]
        .into_iter()
        .fold(path.to_owned(), |path, id| {
            path.replace(id.as_str(), &Uuid::now_v7().to_string())
        })
        .replace(&a.key_id, "0123456789ab")
}

/// A problem's detail with every id in it (uuids, api key ids) blanked.
fn ids_redacted(detail: &Value) -> String {
    let is_key_id = |word: &str| word.len() == 12 && word.bytes().all(|b| b.is_ascii_hexdigit());
    detail
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .map(|word| {
            if Uuid::parse_str(word).is_ok() || is_key_id(word) {
                "<id>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything of A's that B might reach, read as A sees it.
async fn snapshot_of_a(app: &TestApp, a: &TenantA) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/v1/knowledge-bases".to_owned(),
        "/v1/documents".to_owned(),
        "/v1/api-keys".to_owned(),
        format!("/v1/knowledge-bases/{}/documents", a.kb),
        format!("/v1/documents/{}", a.document),
    ] {
        let (status, body) = app.get(&path, &a.key).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.push(body);
    }
    let (status, hits) = app.search(&a.key, &a.kb, SECRET_PHRASE, 5).await;
    assert_eq!(status, 200, "{hits}");
    seen.push(hits);
    seen
}

async fn tenants_see_nothing_of_each_other(backend: Backend, s3: bool) {
    let app = spawn_app_configured(backend, |config| {
        if s3 {
            use_test_s3(config);
        }
    })
    .await;
    let a = tenant_a(&app).await;
    let (b_tenant, b_key) = app.create_user("bob@example.com").await;
    let b_kb = app.create_knowledge_base(&b_key, "bob-own").await;
    let (status, accepted) = app
        .upload(&b_key, "bob-notes.txt", "Bob keeps notes about gardening.", Some(&b_kb))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let b_document = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&b_key, &b_document).await["status"], "SUCCESS");
    app.wait_indexed().await;
    app.wait_registry().await;
    let before = snapshot_of_a(&app, &a).await;

    for (method, path, body) in aimed_at(&a, &b_kb, &b_document) {
        let on_a = app.request(method.clone(), &path, &b_key, body.clone()).await;
        assert_eq!(on_a.0, 404, "{method} {path}: {}", on_a.1);
        assert_eq!(on_a.1["code"], "not_found", "{method} {path}: {}", on_a.1);
        let unknown_path = unknown(&path, &a);
        let unknown_body = body.map(|body| serde_json::from_str(&unknown(&body.to_string(), &a)).unwrap());
        let on_nothing = app.request(method.clone(), &unknown_path, &b_key, unknown_body).await;
        assert_eq!(on_nothing.0, 404, "{method} {unknown_path}: {}", on_nothing.1);
        // the detail names only the id asked for: the same words either way
        assert_eq!(
            ids_redacted(&on_a.1["detail"]),
            ids_redacted(&on_nothing.1["detail"]),
            "{method} {path}: a's id and an unknown one answer alike"
        );
    }
    // the admin-only routes refuse b by its role, not by what the id is
    for (method, path) in [
        (Method::DELETE, format!("/v1/users/{}", a.tenant)),
        (Method::GET, format!("/v1/erasures/{}", Uuid::now_v7())),
    ] {
        let (status, problem) = app.request(method.clone(), &path, &b_key, None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {problem}"
        );
    }
    app.wait_registry().await;
    assert_eq!(snapshot_of_a(&app, &a).await, before, "b changed nothing of a's");

    // b's listings, searches and audit records hold nothing of a's
    let b_views = [
        app.get("/v1/knowledge-bases", &b_key).await,
        app.get("/v1/documents", &b_key).await,
        app.get("/v1/api-keys", &b_key).await,
        app.get(&format!("/v1/knowledge-bases/{b_kb}/documents"), &b_key).await,
        app.search(&b_key, &b_kb, SECRET_PHRASE, 10).await,
        app.get("/v1/audit?limit=1000", &b_key).await,
    ];
    let a_marks = [
        a.tenant.as_str(),
        a.kb.as_str(),
        a.document.as_str(),
        a.key_id.as_str(),
        a.pending_upload.as_str(),
        "alice",
        "kestrel",
    ];
    for (status, view) in &b_views {
        assert_eq!(*status, 200, "{view}");
        let text = view.to_string();
        for mark in a_marks {
            assert!(!text.contains(mark), "b sees {mark:?} of a in {text}");
        }
    }
    let (_, audit) = &b_views[5];
    let records = audit["items"].as_array().unwrap();
    assert!(!records.is_empty(), "b's own records are there");
    assert!(
        records.iter().all(|record| record["tenant_id"] == b_tenant.as_str()),
        "{audit}"
    );
    let (_, hits) = &b_views[4];
    assert!(
        hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|hit| hit["document_id"] == b_document.as_str()),
        "{hits}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_nothing_of_each_other_on_sqlite() {
    tenants_see_nothing_of_each_other(Backend::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_nothing_of_each_other_on_postgres_and_s3() {
    tenants_see_nothing_of_each_other(Backend::Postgres, true).await;
}
