//! Versions through HTTP: other bytes under the name of an existing
//! document are its next version, whose chunks replace the old ones in
//! search; every version stays listed; deleting the document removes the
//! bytes of all of them.

mod common;

use common::{spawn_app, Backend};

async fn a_new_version_replaces_the_old_in_search(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, key) = app.create_user("versions@example.com").await;
    let kb = app.create_knowledge_base(&key, "policies").await;

    let first = "Backup policy. Tapes rotate weekly and the vault copy is kept offsite.";
    let (status, v1) = app.upload(&key, "policy.md", first, Some(&kb)).await;
    assert_eq!(status, 202, "{v1}");
    assert_eq!(v1["version"], 1);
    let id = v1["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_processed(&key, &id).await["status"], "SUCCESS");
    app.wait_indexed().await;
    let (_, hits) = app.search(&key, &kb, "tapes rotate weekly", 5).await;
    assert_eq!(hits["hits"][0]["document_id"], id.as_str(), "{hits}");

    let second = "Backup policy. Snapshots replicate hourly to the second region.";
    let (status, v2) = app.upload(&key, "policy.md", second, Some(&kb)).await;
    assert_eq!(status, 202, "{v2}");
    assert_eq!(
        (v2["id"].as_str(), v2["version"].as_u64()),
        (Some(id.as_str()), Some(2)),
        "{v2}"
    );
    let document = app.wait_processed(&key, &id).await;
    assert_eq!(document["status"], "SUCCESS", "{document}");
    assert_eq!(
        document["sha256"],
        actors::artifact::sha256_hex(second.as_bytes()),
        "{document}"
    );
    app.wait_indexed().await;

    // only the new version's text is searched
    let (_, hits) = app.search(&key, &kb, "snapshots replicate hourly", 5).await;
    assert_eq!(hits["hits"][0]["document_id"], id.as_str(), "{hits}");
    let (_, hits) = app.search(&key, &kb, "tapes rotate weekly", 10).await;
    for hit in hits["hits"].as_array().unwrap() {
        let text = hit["text"].as_str().unwrap();
        assert!(
            !text.contains("Tapes"),
            "an old version's chunk is still searched: {hits}"
        );
    }
    let (_, links) = app.get(&format!("/v1/knowledge-bases/{kb}/documents"), &key).await;
    assert_eq!(
        links["items"].as_array().unwrap().len(),
        1,
        "one document, one link: {links}"
    );

    // both versions listed, the last current
    let (status, versions) = app.get(&format!("/v1/documents/{id}/versions"), &key).await;
    assert_eq!(status, 200, "{versions}");
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{versions}");
    assert_eq!(items[0]["version"], 1);
    assert_eq!(items[0]["sha256"], actors::artifact::sha256_hex(first.as_bytes()));
    assert_eq!(items[0]["current"], false);
    assert_eq!(items[1]["version"], 2);
    assert_eq!(items[1]["current"], true);
    let (_, stranger) = app.create_user("stranger@example.com").await;
    let (status, _) = app.get(&format!("/v1/documents/{id}/versions"), &stranger).await;
    assert_eq!(status, 404);

    // the current bytes again are the document itself, no third version
    let (status, same) = app.upload(&key, "policy.md", second, None).await;
    assert_eq!((status, same["duplicate"].as_bool()), (200, Some(true)), "{same}");

    // deleting the document removes every version's bytes
    let folder = format!("tenants/{tenant}/documents/{id}/");
    assert_eq!(app.app.raw_objects.list(&folder).await.unwrap().len(), 2);
    let (status, _) = app.delete(&format!("/v1/documents/{id}"), &key).await;
    assert_eq!(status, 204);
    assert!(app.app.raw_objects.list(&folder).await.unwrap().is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_old_in_search_on_sqlite() {
    a_new_version_replaces_the_old_in_search(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_old_in_search_on_postgres() {
    a_new_version_replaces_the_old_in_search(Backend::Postgres).await;
}
