//! Encryption at rest through the API: nothing readable in the event log or
//! the object store, and a key rotation by `neurostash admin rotate-keys`
//! while the server runs: new data uses the new key at once, data written
//! before keeps reading.

mod common;

use actors::crypto::stream::StreamHeader;
use actors::objects::tenant_prefix;
use common::{embedded_command, spawn_app, Backend, TestApp};
use domain::TenantId;

const BEFORE: &str = "The lighthouse keeper logged a northerly gale and trimmed the lamp twice \
    before midnight.";
const AFTER: &str = "Beekeepers smoke the hive gently before lifting frames heavy with capped honey.";
const SECRETS: [&str; 7] = [
    "lighthouse keeper",
    "northerly gale",
    "capped honey",
    "keeper-log.txt",
    "hive-notes.txt",
    "grace@example.com",
    "coastal journal",
];

/// The key ids in the headers of the tenant's stored documents.
async fn document_key_ids(app: &TestApp, tenant_id: TenantId) -> Vec<String> {
    let mut ids = Vec::new();
    for key in app.app.raw_objects.list(&tenant_prefix(tenant_id)).await.unwrap() {
        if key.contains("/documents/") {
            let bytes = app.app.raw_objects.get(&key).await.unwrap();
            let (header, _) = StreamHeader::parse(&bytes).unwrap().unwrap();
            ids.push(header.key_id.to_string());
        }
    }
    ids
}

async fn assert_nothing_readable_at_rest(app: &TestApp) {
    let log = app
        .app
        .store
        .read_log(domain::LogPosition::START, 1_000_000)
        .await
        .unwrap();
    let mut places: Vec<(String, Vec<u8>)> = log
        .iter()
        .map(|event| {
            (
                format!("event {}", event.event_type),
                event.payload.to_string().into_bytes(),
            )
        })
        .collect();
    for key in app.app.raw_objects.list("").await.unwrap() {
        places.push((key.clone(), app.app.raw_objects.get(&key).await.unwrap()));
    }
    assert!(places.len() > 10, "{} places", places.len());
    for (place, bytes) in &places {
        for secret in SECRETS {
            let readable = bytes.windows(secret.len()).any(|window| window == secret.as_bytes());
            assert!(!readable, "{secret:?} readable in {place}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_keeps_old_data_readable_and_nothing_is_readable_at_rest() {
    let app = spawn_app(Backend::Sqlite).await;
    let (user_id, key) = app.create_user("grace@example.com").await;
    let tenant_id = TenantId(user_id.parse().unwrap());
    let kb = app.create_knowledge_base(&key, "coastal journal").await;
    let (status, body) = app.upload(&key, "keeper-log.txt", BEFORE, Some(&kb)).await;
    assert_eq!(status, 202, "{body}");
    let before = body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &before).await["status"], "SUCCESS");
    let old_key = app.app.vault.active_key(tenant_id).await.unwrap().id().to_string();

    let output = embedded_command(&app.config.data_dir, &["admin", "rotate-keys", "--tenant", &user_id])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let new_key = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{user_id} ")))
        .unwrap_or_else(|| panic!("no rotation printed for {user_id}: {stdout}"))
        .to_owned();
    assert_ne!(new_key, old_key);

    let (status, body) = app.upload(&key, "hive-notes.txt", AFTER, Some(&kb)).await;
    assert_eq!(status, 202, "{body}");
    let after = body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &after).await["status"], "SUCCESS");
    app.wait_indexed().await;

    let mut used = document_key_ids(&app, tenant_id).await;
    used.sort();
    let mut expected = vec![old_key.clone(), new_key.clone()];
    expected.sort();
    assert_eq!(used, expected, "one document under each key");
    let keys = app.app.vault.list(tenant_id).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys.iter()
            .filter(|k| k.expired_at.is_none())
            .map(|k| k.key_id.to_string())
            .collect::<Vec<_>>(),
        vec![new_key.clone()]
    );

    // both read back: names, status and search hits with their text
    for (id, name) in [(&before, "keeper-log.txt"), (&after, "hive-notes.txt")] {
        let (status, document) = app.get(&format!("/v1/documents/{id}"), &key).await;
        assert_eq!(
            (status, document["file_name"].as_str()),
            (200, Some(name)),
            "{document}"
        );
    }
    for (query, name) in [
        ("gale at the lighthouse", "keeper-log.txt"),
        ("honey in the hive", "hive-notes.txt"),
    ] {
        let (_, hits) = app.search(&key, &kb, query, 2).await;
        assert_eq!(hits["hits"][0]["file_name"], name, "{hits}");
    }
    let (_, kbs) = app.get("/v1/knowledge-bases", &key).await;
    assert_eq!(kbs["items"][0]["name"], "coastal journal", "{kbs}");

    // the rotation is in the audit trail, by key id only
    app.wait_audit().await;
    let (_, audit) = app.get("/v1/audit?type=EncryptionKeyRotated", &app.admin_key).await;
    assert!(audit.to_string().contains("EncryptionKeyRotated"), "{audit}");

    assert_nothing_readable_at_rest(&app).await;
    app.shutdown().await;
}
