//! `GET /v1/audit` through HTTP: admins read every tenant's records, a user
//! only its own, another tenant reads as absent, bad input is problem+json.

mod common;

use common::{spawn_app, Backend};
use serde_json::Value;

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

async fn audit_is_scoped_by_tenant(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice_id, alice) = app.create_user("alice@example.com").await;
    let (bob_id, bob) = app.create_user("bob@example.com").await;
    app.create_knowledge_base(&alice, "alice's").await;
    app.create_knowledge_base(&bob, "bob's").await;
    app.wait_audit().await;

    let (status, all) = app.get("/v1/audit?limit=1000", &app.admin_key).await;
    assert_eq!(status, 200, "{all}");
    let tenants: Vec<&str> = items(&all)
        .iter()
        .filter_map(|item| item["tenant_id"].as_str())
        .collect();
    assert!(tenants.contains(&alice_id.as_str()), "{all}");
    assert!(tenants.contains(&bob_id.as_str()), "{all}");
    let seqs: Vec<i64> = items(&all).iter().map(|item| item["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{all}");
    assert!(items(&all)
        .iter()
        .all(|item| item["hash"].as_str().unwrap().len() == 64));

    let (status, own) = app.get("/v1/audit", &alice).await;
    assert_eq!(status, 200, "{own}");
    assert!(!items(&own).is_empty(), "{own}");
    assert!(
        items(&own).iter().all(|item| item["tenant_id"] == alice_id.as_str()),
        "a user sees only its own records: {own}"
    );
    let created = items(&own)
        .iter()
        .find(|item| item["event_type"] == "KnowledgeBaseCreated")
        .unwrap_or_else(|| panic!("alice's knowledge base is audited: {own}"));
    let alice_key_id = alice.trim_start_matches("ns_").split_once('_').unwrap().0;
    assert_eq!(created["actor_key_id"], alice_key_id, "{created}");

    let (status, same) = app.get(&format!("/v1/audit?tenant={alice_id}"), &alice).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(items(&same).len(), items(&own).len());
    let (status, problem) = app.get(&format!("/v1/audit?tenant={bob_id}"), &alice).await;
    assert_eq!(status, 404, "another tenant's records read as absent: {problem}");
    assert_eq!(problem["code"], "not_found");

    let (status, bobs) = app.get(&format!("/v1/audit?tenant={bob_id}"), &app.admin_key).await;
    assert_eq!(status, 200, "{bobs}");
    assert!(!items(&bobs).is_empty());
    assert!(
        items(&bobs).iter().all(|item| item["tenant_id"] == bob_id.as_str()),
        "{bobs}"
    );

    let (status, typed) = app.get("/v1/audit?type=KnowledgeBaseCreated", &app.admin_key).await;
    assert_eq!(status, 200, "{typed}");
    assert_eq!(items(&typed).len(), 2, "{typed}");
    let (status, future) = app.get("/v1/audit?since=2999-01-01T00:00:00Z", &app.admin_key).await;
    assert_eq!(status, 200, "{future}");
    assert!(items(&future).is_empty(), "{future}");

    let (status, first) = app.get("/v1/audit?limit=2", &app.admin_key).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(items(&first).len(), 2);
    assert_eq!(first["next_after"], 2, "{first}");
    let (status, second) = app.get("/v1/audit?limit=2&after=2", &app.admin_key).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(items(&second)[0]["seq"], 3, "{second}");

    for bad in [
        "/v1/audit?since=yesterday",
        "/v1/audit?since=2024-13-01T00:00:00Z",
        "/v1/audit?tenant=not-a-uuid",
        "/v1/audit?limit=0",
        "/v1/audit?limit=1001",
    ] {
        let (status, problem) = app.get(bad, &app.admin_key).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert_eq!(problem["code"], "invalid_parameter", "{bad}: {problem}");
    }
    let (status, _) = app.get("/v1/audit", "nonsense").await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_is_scoped_by_tenant_on_sqlite() {
    audit_is_scoped_by_tenant(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_is_scoped_by_tenant_on_postgres() {
    audit_is_scoped_by_tenant(Backend::Postgres).await;
}
