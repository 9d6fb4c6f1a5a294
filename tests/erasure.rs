//! Erasing a tenant by crypto-shredding, through the API, on SQLite and on
//! Postgres: the receipt fills in from every part, the tenant is gone from
//! every projection and store, another tenant is untouched, and after a
//! full rebuild of the projections from the log nothing of the erased
//! tenant's plaintext can be found or decrypted anywhere.

mod common;

use std::time::{Duration, Instant};

use actors::objects::tenant_prefix;
use common::{spawn_app, Backend, TestApp};
use domain::{Protected, TenantId};
use serde_json::Value;

const DIARY: &str = "Dear diary, the heron returned to the millpond at dawn and stood motionless \
    among the reeds while the mist lifted off the water.";
const LEDGER: &str = "The harbour ledger records three schooners unloading barrels of salted cod \
    on the morning tide.";
/// What must be unrecoverable once alice is erased.
const ALICE_SECRETS: [&str; 6] = [
    "heron returned",
    "millpond",
    "motionless",
    "diary-of-alice",
    "alice@example.com",
    "alice's private notebook",
];

async fn wait_receipt(app: &TestApp, erasure_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, receipt) = app.get(&format!("/v1/erasures/{erasure_id}"), &app.admin_key).await;
        if status == 200 && receipt["complete"] == true {
            return receipt;
        }
        assert!(Instant::now() < deadline, "erasure never completed: {status} {receipt}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every byte the system keeps at rest: the files of the data dir (the
/// SQLite database and its WAL, local objects, the vector snapshots), and,
/// on Postgres, the event log and the registry as the database returns them.
async fn bytes_at_rest(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![app.config.data_dir.clone()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path.display().to_string(), bytes));
            }
        }
    }
    let log = app
        .app
        .store
        .read_log(domain::LogPosition::START, 1_000_000)
        .await
        .unwrap();
    let payloads: Vec<u8> = log
        .iter()
        .flat_map(|event| event.payload.to_string().into_bytes())
        .collect();
    found.push(("event log".into(), payloads));
    let dump = app.app.registry.dump().await.unwrap();
    found.push(("registry".into(), format!("{dump:?}").into_bytes()));
    found
}

fn assert_nothing_of_alice(places: &[(String, Vec<u8>)]) {
    for (place, bytes) in places {
        for secret in ALICE_SECRETS {
            let readable = bytes.windows(secret.len()).any(|window| window == secret.as_bytes());
            assert!(!readable, "{secret:?} readable in {place}");
        }
    }
}

/// Every sealed field in the streams of the tenant, its document and its
/// knowledge base, none of which may open.
async fn assert_sealed_fields_unreadable(app: &TestApp, tenant_id: TenantId, streams: &[String]) {
    let log = app
        .app
        .store
        .read_log(domain::LogPosition::START, 1_000_000)
        .await
        .unwrap();
    let mut sealed = 0;
    for event in log
        .iter()
        .filter(|event| streams.iter().any(|s| s == event.stream_id.as_str()))
    {
        let Value::Object(fields) = &event.payload else {
            continue;
        };
        for (field, value) in fields {
            let Some(text) = value.as_str() else { continue };
            if let Protected::Sealed(value) = Protected::from_stored(text) {
                sealed += 1;
                let opened = app.app.vault.open(tenant_id, field, &value).await;
                assert!(opened.is_err(), "{field} of {} still opens", event.event_type);
            }
        }
    }
    // the email, the file name, the knowledge base's name
    assert!(sealed >= 3, "the erased tenant's events hold sealed fields: {sealed}");
}

async fn erasure(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice_id, alice) = app.create_user("alice@example.com").await;
    let (_bob_id, bob) = app.create_user("bob@example.com").await;
    let alice_tenant = TenantId(alice_id.parse().unwrap());
    let alice_kb = app.create_knowledge_base(&alice, "alice's private notebook").await;
    let bob_kb = app.create_knowledge_base(&bob, "harbour").await;
    let (status, body) = app.upload(&alice, "diary-of-alice.txt", DIARY, Some(&alice_kb)).await;
    assert_eq!(status, 202, "{body}");
    let alice_doc = body["id"].as_str().unwrap().to_owned();
    let (status, body) = app.upload(&bob, "ledger.txt", LEDGER, Some(&bob_kb)).await;
    assert_eq!(status, 202, "{body}");
    let bob_doc = body["id"].as_str().unwrap().to_owned();
    for (key, id) in [(&alice, &alice_doc), (&bob, &bob_doc)] {
        assert_eq!(app.wait_processed(key, id).await["status"], "SUCCESS");
    }
    app.wait_indexed().await;
    let (_, hits) = app.search(&alice, &alice_kb, "heron at the millpond", 3).await;
    assert_eq!(hits["hits"][0]["file_name"], "diary-of-alice.txt", "{hits}");

    // a user cannot erase anyone; an admin cannot erase itself
    let (status, _) = app.delete(&format!("/v1/users/{alice_id}"), &bob).await;
    assert_eq!(status, 403);
    let (status, body) = app.delete(&format!("/v1/users/{alice_id}"), &app.admin_key).await;
    assert_eq!(status, 202, "{body}");
    let erasure_id = body["erasure_id"].as_str().unwrap().to_owned();
    let receipt = wait_receipt(&app, &erasure_id).await;
    let components: Vec<&str> = receipt["acknowledgements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ack| ack["component"].as_str().unwrap())
        .collect();
    for required in ["registry", "audit", "keys", "objects"] {
        assert!(components.contains(&required), "{required} missing from {receipt}");
    }
    assert!(components.iter().any(|c| c.starts_with("vector@")), "{receipt}");
    assert_eq!(receipt["tenant_id"], alice_id.as_str());

    // alice is gone: her key, her rows, her keys, her objects
    let (status, _) = app.get("/v1/documents", &alice).await;
    assert_eq!(status, 401);
    let (status, _) = app.delete(&format!("/v1/users/{alice_id}"), &app.admin_key).await;
    assert_eq!(status, 404, "erasing twice");
    assert!(app.app.registry.user(alice_tenant).await.unwrap().is_none());
    assert!(app.app.vault.list(alice_tenant).await.unwrap().is_empty());
    assert!(app.app.vault.is_erased(alice_tenant).await.unwrap());
    assert!(app
        .app
        .raw_objects
        .list(&tenant_prefix(alice_tenant))
        .await
        .unwrap()
        .is_empty());
    // bob is untouched
    let (_, hits) = app.search(&bob, &bob_kb, "schooners unloading salted cod", 3).await;
    assert_eq!(hits["hits"][0]["file_name"], "ledger.txt", "{hits}");

    // every projection rebuilt from the whole log: still nothing of alice
    let app = app.rebuild().await;
    app.wait_registry().await;
    app.wait_indexed().await;
    assert!(app.app.registry.user(alice_tenant).await.unwrap().is_none());
    let (_, hits) = app.search(&bob, &bob_kb, "schooners unloading salted cod", 3).await;
    assert_eq!(hits["hits"][0]["file_name"], "ledger.txt", "{hits}");
    let streams = [
        alice_tenant.stream_id().to_string(),
        format!("document-{alice_doc}"),
        format!("knowledge_base-{alice_kb}"),
    ];
    assert_sealed_fields_unreadable(&app, alice_tenant, &streams).await;
    assert_nothing_of_alice(&bytes_at_rest(&app).await);
    // the receipt outlives the rebuild
    let (status, receipt) = app.get(&format!("/v1/erasures/{erasure_id}"), &app.admin_key).await;
    assert_eq!((status, &receipt["complete"]), (200, &Value::Bool(true)), "{receipt}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erasing_a_tenant_leaves_nothing_readable_on_sqlite() {
    erasure(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erasing_a_tenant_leaves_nothing_readable_on_postgres() {
    erasure(Backend::Postgres).await;
}
