//! The registry projection against real databases: events are appended
//! through the real event store, applied by the projection runtime, and
//! read back through `Registry`. Every scenario runs on SQLite and on
//! Postgres (`NEUROSTASH_TEST_POSTGRES_URL`, which must be set).

#[macro_use]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actors::db::Database;
use actors::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use chrono::{DateTime, Duration, Utc};
use domain::document::{ArtifactRef, DocumentEvent, DocumentStatus, FileName};
use domain::event::EventPayload;
use domain::knowledge_base::KnowledgeBaseEvent;
use domain::tenant::{ApiKeyScopes, Email, Role, TenantEvent};
use domain::{ApiKeyId, DocumentId, EventMetadata, KnowledgeBaseId, LogPosition, Protected, StreamId, TenantId};
use projections::generations::{GenerationName, Generations};
use projections::registry::{Registry, RegistryProjection};
use projections::runtime::{catch_up, catch_up_to_head, Projection, ProjectionError};
use support::Backend;
use uuid::Uuid;

on_both_backends!(
    lifecycle_reaches_every_table_and_mirrors_status_onto_links,
    redelivered_events_change_nothing,
    reads_are_scoped_to_the_tenant,
    reset_and_replay_rebuild_an_equal_registry,
    documents_page_with_a_total,
    undecodable_events_stop_the_projection_and_roll_back_the_batch,
    api_key_scopes_reach_every_generation_old_ones_included,
    pending_uploads_open_and_close_in_every_generation,
);

struct Harness {
    store: Arc<dyn EventStore>,
    /// The position of the last append made here.
    appended: Mutex<LogPosition>,
    projection: RegistryProjection,
    registry: Registry,
    db: Database,
    /// Keeps the SQLite file alive for the test.
    _directory: Option<tempfile::TempDir>,
}

impl Harness {
    async fn open(backend: Backend) -> Harness {
        let (db, directory) = support::open_database(backend).await;
        Harness {
            store: db.event_store(),
            appended: Mutex::new(LogPosition::START),
            projection: RegistryProjection::new(db.clone()),
            registry: Registry::new(db.clone()),
            db,
            _directory: directory,
        }
    }

    async fn append<E: EventPayload>(&self, stream: &StreamId, events: &[E]) -> LogPosition {
        let new_events = events
            .iter()
            .map(|event| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: event.event_type().to_owned(),
                schema_version: domain::SCHEMA_VERSION,
                data: event.to_data(),
                metadata: EventMetadata::system(Uuid::new_v4()),
            })
            .collect();
        self.append_raw(stream, new_events).await
    }

    async fn append_raw(&self, stream: &StreamId, events: Vec<NewEvent>) -> LogPosition {
        let position = self
            .store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .expect("append")
            .log_position;
        let mut appended = self.appended.lock().expect("not poisoned");
        *appended = (*appended).max(position);
        position
    }

    /// Waits until every append made here is readable from the log. On
    /// Postgres a read only sees transactions older than every one running
    /// on the server, other tests' included, so an append can stay out of
    /// sight for a moment after it returned.
    async fn wait_until_readable(&self) -> LogPosition {
        let target = *self.appended.lock().expect("not poisoned");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let head = self.store.log_head().await.expect("log head");
            if head >= target {
                return target;
            }
            assert!(
                Instant::now() < deadline,
                "the log head stayed at {head}, short of {target}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Applies the log up to the last append in small batches, so that batch
    /// boundaries fall inside streams.
    async fn catch_up(&self) -> LogPosition {
        let target = self.wait_until_readable().await;
        let reached = catch_up(&*self.store, &self.projection, target, 3)
            .await
            .expect("projection catches up");
        assert_eq!(reached, target);
        assert_eq!(self.projection.checkpoint().await.expect("checkpoint"), reached);
        reached
    }

    async fn whole_log(&self) -> Vec<RecordedEvent> {
        self.wait_until_readable().await;
        self.store.read_log(LogPosition::START, 10_000).await.expect("read log")
    }

    async fn recorded_at(&self, stream: &StreamId, version: i64) -> DateTime<Utc> {
        let events = self.store.read_stream(stream, version - 1).await.expect("read stream");
        events.first().expect("event at that version").recorded_at
    }
}

fn tenant_registered(email: &str, role: Role) -> (TenantId, TenantEvent) {
    let tenant_id = TenantId::for_email(email);
    let event = TenantEvent::TenantRegistered {
        tenant_id,
        // the registry keeps the field as stored, sealed or not
        email: Protected::Plain(Email::parse(email).expect("valid email").as_str().to_owned()),
        role,
    };
    (tenant_id, event)
}

fn key_issued(key: &str, role: Role, label: Option<&str>, expires_at: Option<DateTime<Utc>>) -> TenantEvent {
    TenantEvent::ApiKeyIssued {
        key_id: ApiKeyId(key.to_owned()),
        secret_hash: format!("hash-of-{key}"),
        role,
        label: label.map(str::to_owned),
        expires_at,
        scopes: Default::default(),
    }
}

fn document_registered(tenant_id: TenantId, file_name: &str) -> (DocumentId, DocumentEvent) {
    let document_id = DocumentId::for_file(tenant_id, file_name);
    let event = DocumentEvent::DocumentRegistered {
        document_id,
        tenant_id,
        file_name: Protected::Plain(FileName::parse(file_name).expect("valid file name").as_str().to_owned()),
        content_type: "text/markdown".to_owned(),
        size_bytes: 1234,
        sha256: format!("sha-of-{file_name}"),
        object_key: format!("{tenant_id}/{file_name}"),
        knowledge_base_id: None,
    };
    (document_id, event)
}

fn upload_requested(
    tenant_id: TenantId,
    file_name: &str,
    upload: u128,
    expires_at: DateTime<Utc>,
) -> (DocumentId, DocumentEvent) {
    let document_id = DocumentId::for_file(tenant_id, file_name);
    let upload_id = Uuid::from_u128(upload);
    let event = DocumentEvent::UploadRequested {
        document_id,
        tenant_id,
        upload_id,
        file_name: Protected::Plain(file_name.to_owned()),
        content_type: "text/plain".to_owned(),
        size_bytes: 42,
        sha256: upload.is_multiple_of(2).then(|| "ab".repeat(32)),
        knowledge_base_id: (upload % 2 == 1).then_some(KnowledgeBaseId(Uuid::from_u128(upload))),
        staging_key: domain::document::staging_key(tenant_id, document_id, upload_id),
        expires_at,
    };
    (document_id, event)
}

fn kb_created(tenant_id: TenantId, name: &str) -> (KnowledgeBaseId, KnowledgeBaseEvent) {
    let knowledge_base_id = KnowledgeBaseId(Uuid::new_v4());
    let event = KnowledgeBaseEvent::KnowledgeBaseCreated {
        knowledge_base_id,
        tenant_id,
        name: Protected::Plain(name.to_owned()),
        category: Some(Protected::Plain("research".to_owned())),
        embedding_model: Some(domain::EmbeddingModel {
            name: "all-MiniLM-L6-v2".to_owned(),
            dimensions: 384,
            version: "sha256:53aa".to_owned(),
        }),
        chunking: Some(domain::ChunkingSettings {
            max_tokens: 200,
            overlap_tokens: 32,
        }),
    };
    (knowledge_base_id, event)
}

fn started(attempt: u32) -> DocumentEvent {
    DocumentEvent::ProcessingStarted {
        worker: "worker-1".to_owned(),
        attempt,
        lease_expires_at: Utc::now() + Duration::seconds(30),
    }
}

fn processed(chunk_count: u32) -> DocumentEvent {
    DocumentEvent::DocumentProcessed {
        artifact: ArtifactRef {
            object_key: "artifacts/x".to_owned(),
            sha256: "artifact-sha".to_owned(),
            chunk_count,
            embedder: "hash-embedder".to_owned(),
            dimensions: 64,
            embedder_version: Some("1".to_owned()),
        },
    }
}

/// Appends events, applying each append at once when `live`, as a running
/// projection would, or leaving them all for one later catch-up.
struct History<'h> {
    harness: &'h Harness,
    live: bool,
}

impl History<'_> {
    async fn append<E: EventPayload>(&self, stream: &StreamId, events: &[E]) {
        self.harness.append(stream, events).await;
        if self.live {
            self.harness.catch_up().await;
        }
    }
}

/// A history touching every event type across two tenants.
async fn write_history(harness: &Harness, live: bool) {
    let history = History { harness, live };
    let (alice, alice_registered) = tenant_registered("alice@example.com", Role::Admin);
    let (bob, bob_registered) = tenant_registered("bob@example.com", Role::User);
    let expires = Utc::now() + Duration::days(30);
    history
        .append(
            &alice.stream_id(),
            &[
                alice_registered,
                key_issued("key-a1", Role::Admin, Some("laptop"), Some(expires)),
                key_issued("key-a2", Role::Admin, None, None),
            ],
        )
        .await;
    history
        .append(
            &bob.stream_id(),
            &[bob_registered, key_issued("key-b1", Role::User, None, None)],
        )
        .await;
    let revoke = TenantEvent::ApiKeyRevoked {
        key_id: ApiKeyId("key-a1".to_owned()),
    };
    history.append(&alice.stream_id(), &[revoke]).await;

    let (kb, kb_event) = kb_created(alice, "papers");
    let (bob_kb, bob_kb_event) = kb_created(bob, "bob's");
    history.append(&kb.stream_id(), &[kb_event]).await;
    history.append(&bob_kb.stream_id(), &[bob_kb_event]).await;

    let (kept, kept_registered) = document_registered(alice, "kept.md");
    let (failed, failed_registered) = document_registered(alice, "failed.md");
    let (deleted, deleted_registered) = document_registered(alice, "deleted.md");
    let (bobs, bobs_registered) = document_registered(bob, "bob.md");
    history.append(&kept.stream_id(), &[kept_registered]).await;
    history.append(&failed.stream_id(), &[failed_registered]).await;
    history.append(&deleted.stream_id(), &[deleted_registered]).await;
    history.append(&bobs.stream_id(), &[bobs_registered]).await;

    let added = |document_id| KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id };
    history
        .append(&kb.stream_id(), &[added(kept), added(failed), added(deleted)])
        .await;
    history.append(&bob_kb.stream_id(), &[added(bobs)]).await;
    history.append(&kept.stream_id(), &[started(1), processed(7)]).await;
    let failure = DocumentEvent::ProcessingFailed {
        reason: "extraction failed".to_owned(),
        attempt: 1,
    };
    history.append(&failed.stream_id(), &[started(1), failure]).await;
    history.append(&deleted.stream_id(), &[started(1)]).await;
    history
        .append(&deleted.stream_id(), &[DocumentEvent::DocumentDeleted {}])
        .await;
    let removed = KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id: failed };
    history.append(&kb.stream_id(), &[removed]).await;
    history
        .append(&bob_kb.stream_id(), &[KnowledgeBaseEvent::KnowledgeBaseDeleted {}])
        .await;

    // presigned uploads: one left open, one completed, one expired
    let soon = expires - Duration::days(29);
    let (open, open_requested) = upload_requested(alice, "open.txt", 1, soon);
    let (completed, completed_requested) = upload_requested(bob, "completed.txt", 2, soon);
    let (expired, expired_requested) = upload_requested(alice, "expired.txt", 3, soon);
    history.append(&open.stream_id(), &[open_requested]).await;
    history.append(&completed.stream_id(), &[completed_requested]).await;
    history.append(&expired.stream_id(), &[expired_requested]).await;
    let (_, completed_registered) = document_registered(bob, "completed.txt");
    history.append(&completed.stream_id(), &[completed_registered]).await;
    let expiry = DocumentEvent::UploadExpired {
        upload_id: Uuid::from_u128(3),
    };
    history.append(&expired.stream_id(), &[expiry]).await;
}

async fn lifecycle_reaches_every_table_and_mirrors_status_onto_links(backend: Backend) {
    let harness = Harness::open(backend).await;
    let registry = &harness.registry;

    // a tenant and its keys
    let (alice, registered) = tenant_registered("alice@example.com", Role::User);
    let expires = Utc::now() + Duration::days(7);
    harness
        .append(
            &alice.stream_id(),
            &[
                registered,
                key_issued("key-1", Role::User, Some("ci"), Some(expires)),
                key_issued("key-2", Role::User, None, None),
            ],
        )
        .await;
    let revoke = TenantEvent::ApiKeyRevoked {
        key_id: ApiKeyId("key-1".to_owned()),
    };
    harness.append(&alice.stream_id(), &[revoke]).await;
    harness.catch_up().await;

    let user = registry.user(alice).await.expect("read").expect("user row");
    assert_eq!(
        (user.id, user.email.as_str(), user.role),
        (alice, "alice@example.com", Role::User)
    );
    assert_eq!(user.created_at, harness.recorded_at(&alice.stream_id(), 1).await);
    let key = registry
        .api_key(&ApiKeyId("key-1".to_owned()))
        .await
        .expect("read")
        .expect("key row");
    assert_eq!((key.tenant_id, key.role), (alice, Role::User));
    assert_eq!(key.secret_hash, "hash-of-key-1");
    assert_eq!(key.label.as_deref(), Some("ci"));
    assert_eq!(key.created_at, harness.recorded_at(&alice.stream_id(), 2).await);
    assert_eq!(
        key.expires_at.map(|time| time.timestamp_micros()),
        Some(expires.timestamp_micros())
    );
    assert_eq!(key.revoked_at, Some(harness.recorded_at(&alice.stream_id(), 4).await));
    let keys = registry.list_api_keys(alice).await.expect("list keys");
    let key_ids: Vec<&str> = keys.iter().map(|key| key.key_id.0.as_str()).collect();
    assert_eq!(key_ids, ["key-1", "key-2"]);
    assert_eq!(
        (keys[1].label.clone(), keys[1].expires_at, keys[1].revoked_at),
        (None, None, None)
    );
    assert!(registry
        .api_key(&ApiKeyId("nope".to_owned()))
        .await
        .expect("read")
        .is_none());

    // a knowledge base with a document that goes through processing
    let (kb, created) = kb_created(alice, "papers");
    harness.append(&kb.stream_id(), &[created]).await;
    let (doc, doc_registered) = document_registered(alice, "notes.md");
    harness.append(&doc.stream_id(), &[doc_registered]).await;
    harness
        .append(
            &kb.stream_id(),
            &[KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id: doc }],
        )
        .await;
    harness.catch_up().await;

    let row = registry.knowledge_base(alice, kb).await.expect("read").expect("kb row");
    assert_eq!(
        (row.name.as_str(), row.category.as_deref()),
        ("papers", Some("research"))
    );
    assert_eq!((row.tenant_id, row.document_count), (alice, 1));
    assert_eq!(
        row.embedding_model
            .as_ref()
            .map(|model| (model.name.as_str(), model.dimensions)),
        Some(("all-MiniLM-L6-v2", 384))
    );
    assert_eq!(row.chunking.map(|chunking| chunking.max_tokens), Some(200));
    assert_eq!(row.created_at, harness.recorded_at(&kb.stream_id(), 1).await);
    assert_eq!(row.updated_at, harness.recorded_at(&kb.stream_id(), 2).await);
    let document = registry
        .document(alice, doc)
        .await
        .expect("read")
        .expect("document row");
    assert_eq!(document.file_name, "notes.md");
    assert_eq!(
        (document.content_type.as_str(), document.size_bytes),
        ("text/markdown", 1234)
    );
    assert_eq!(document.sha256, "sha-of-notes.md");
    assert_eq!(document.object_key, format!("{alice}/notes.md"));
    assert_eq!(
        (document.op_status, document.attempts, document.chunk_count),
        (DocumentStatus::Pending, 0, None)
    );
    assert_eq!(document.created_at, harness.recorded_at(&doc.stream_id(), 1).await);
    assert_eq!(document.updated_at, document.created_at);
    let links = registry.knowledge_base_documents(alice, kb).await.expect("links");
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].document_id, links[0].file_name.as_str()), (doc, "notes.md"));
    assert_eq!(links[0].status, DocumentStatus::Pending);
    assert_eq!(links[0].added_at, harness.recorded_at(&kb.stream_id(), 2).await);
    assert_eq!(registry.unfinished_documents(10).await.expect("sweep"), [doc]);

    let expect_status = move |status: DocumentStatus, attempts: i64| async move {
        let document = registry
            .document(alice, doc)
            .await
            .expect("read")
            .expect("document row");
        assert_eq!((document.op_status, document.attempts), (status, attempts));
        let links = registry.knowledge_base_documents(alice, kb).await.expect("links");
        assert_eq!(links[0].status, status, "the link mirrors the document");
        document
    };

    harness.append(&doc.stream_id(), &[started(1)]).await;
    harness.catch_up().await;
    let document = expect_status(DocumentStatus::Processing, 1).await;
    assert_eq!(document.updated_at, harness.recorded_at(&doc.stream_id(), 2).await);
    assert_eq!(registry.unfinished_documents(10).await.expect("sweep"), [doc]);

    let failure = DocumentEvent::ProcessingFailed {
        reason: "embedder timed out".to_owned(),
        attempt: 1,
    };
    harness.append(&doc.stream_id(), &[failure]).await;
    harness.catch_up().await;
    let document = expect_status(DocumentStatus::Failed, 1).await;
    assert_eq!(document.error.as_deref(), Some("embedder timed out"));
    assert!(registry.unfinished_documents(10).await.expect("sweep").is_empty());

    harness.append(&doc.stream_id(), &[started(2), processed(12)]).await;
    harness.catch_up().await;
    let document = expect_status(DocumentStatus::Success, 2).await;
    assert_eq!((document.error, document.chunk_count), (None, Some(12)));

    // a link made before the document's registration reached the registry
    // is hidden until it does, then follows the document
    let (late, late_registered) = document_registered(alice, "late.md");
    harness
        .append(
            &kb.stream_id(),
            &[KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id: late }],
        )
        .await;
    harness.catch_up().await;
    assert_eq!(
        registry.knowledge_base_documents(alice, kb).await.expect("links").len(),
        1
    );
    assert_eq!(
        registry
            .knowledge_base(alice, kb)
            .await
            .expect("read")
            .expect("kb")
            .document_count,
        1
    );
    harness.append(&late.stream_id(), &[late_registered, started(1)]).await;
    harness.catch_up().await;
    let links = registry.knowledge_base_documents(alice, kb).await.expect("links");
    let statuses: Vec<_> = links.iter().map(|link| (link.document_id, link.status)).collect();
    assert_eq!(
        statuses,
        [(doc, DocumentStatus::Success), (late, DocumentStatus::Processing)]
    );
    assert_eq!(
        registry
            .knowledge_base(alice, kb)
            .await
            .expect("read")
            .expect("kb")
            .document_count,
        2
    );
    let names = registry.document_file_names(alice, &[doc, late]).await.expect("names");
    assert_eq!(names.get(&doc).map(String::as_str), Some("notes.md"));
    assert_eq!(names.get(&late).map(String::as_str), Some("late.md"));

    // removal, deletion of a document, deletion of the knowledge base
    let removed = KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id: late };
    harness.append(&kb.stream_id(), &[removed]).await;
    harness.catch_up().await;
    let links = registry.knowledge_base_documents(alice, kb).await.expect("links");
    assert_eq!(links.iter().map(|link| link.document_id).collect::<Vec<_>>(), [doc]);
    assert!(
        registry.document(alice, late).await.expect("read").is_some(),
        "removal keeps the document"
    );

    harness
        .append(&doc.stream_id(), &[DocumentEvent::DocumentDeleted {}])
        .await;
    harness.catch_up().await;
    assert!(registry.document(alice, doc).await.expect("read").is_none());
    assert!(registry
        .knowledge_base_documents(alice, kb)
        .await
        .expect("links")
        .is_empty());
    assert_eq!(
        registry
            .knowledge_base(alice, kb)
            .await
            .expect("read")
            .expect("kb")
            .document_count,
        0
    );
    let (documents, total) = registry.list_documents(alice, 10, 0).await.expect("list");
    assert_eq!((documents.len(), total), (1, 1));
    assert_eq!(documents[0].id, late);
    let link_table = harness.registry.dump().await.expect("dump").tables;
    let links_dumped = link_table
        .iter()
        .find(|table| table.table == "knowledge_base_documents")
        .expect("links table dumped");
    assert!(links_dumped.rows.is_empty(), "{links_dumped:?}");

    harness
        .append(&kb.stream_id(), &[KnowledgeBaseEvent::KnowledgeBaseDeleted {}])
        .await;
    let head = harness.catch_up().await;
    assert!(registry.knowledge_base(alice, kb).await.expect("read").is_none());
    assert!(registry.list_knowledge_bases(alice).await.expect("list").is_empty());
    assert_eq!(harness.projection.checkpoint().await.expect("checkpoint"), head);
}

async fn redelivered_events_change_nothing(backend: Backend) {
    let harness = Harness::open(backend).await;
    write_history(&harness, false).await;
    let head = harness.catch_up().await;
    let applied_once = harness.registry.dump().await.expect("dump");

    let log = harness.whole_log().await;
    assert!(log.len() > 20, "the history has {} events", log.len());
    // the whole log again, an overlapping suffix, and a prefix far behind
    // the checkpoint: every event in them is already applied
    harness.projection.apply_batch(&log).await.expect("redelivery");
    harness
        .projection
        .apply_batch(&log[log.len() / 3..])
        .await
        .expect("redelivery");
    harness.projection.apply_batch(&log[..4]).await.expect("redelivery");
    assert_eq!(harness.registry.dump().await.expect("dump"), applied_once);
    assert_eq!(harness.projection.checkpoint().await.expect("checkpoint"), head);

    // a redelivery that overlaps what is applied and brings new events
    harness.registry.reset().await.expect("reset");
    let half = log.len() / 2;
    harness.projection.apply_batch(&log[..half]).await.expect("first half");
    harness
        .projection
        .apply_batch(&log[half / 2..])
        .await
        .expect("overlapping rest");
    assert_eq!(harness.registry.dump().await.expect("dump"), applied_once);
    assert_eq!(harness.projection.checkpoint().await.expect("checkpoint"), head);
}

async fn reads_are_scoped_to_the_tenant(backend: Backend) {
    let harness = Harness::open(backend).await;
    let registry = &harness.registry;
    let (alice, alice_registered) = tenant_registered("alice@example.com", Role::User);
    let (bob, bob_registered) = tenant_registered("bob@example.com", Role::User);
    harness
        .append(
            &alice.stream_id(),
            &[alice_registered, key_issued("key-a", Role::User, None, None)],
        )
        .await;
    harness
        .append(
            &bob.stream_id(),
            &[bob_registered, key_issued("key-b", Role::User, None, None)],
        )
        .await;
    let (alice_kb, alice_kb_created) = kb_created(alice, "alice's");
    let (bob_kb, bob_kb_created) = kb_created(bob, "bob's");
    harness.append(&alice_kb.stream_id(), &[alice_kb_created]).await;
    harness.append(&bob_kb.stream_id(), &[bob_kb_created]).await;
    // same file name, different tenants: different documents
    let (alice_doc, alice_doc_registered) = document_registered(alice, "same.md");
    let (bob_doc, bob_doc_registered) = document_registered(bob, "same.md");
    assert_ne!(alice_doc, bob_doc);
    harness.append(&alice_doc.stream_id(), &[alice_doc_registered]).await;
    harness.append(&bob_doc.stream_id(), &[bob_doc_registered]).await;
    let added = |document_id| KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id };
    harness.append(&alice_kb.stream_id(), &[added(alice_doc)]).await;
    harness.append(&bob_kb.stream_id(), &[added(bob_doc)]).await;
    harness.catch_up().await;

    assert!(registry.knowledge_base(alice, bob_kb).await.expect("read").is_none());
    assert!(registry.knowledge_base(alice, alice_kb).await.expect("read").is_some());
    assert!(registry.document(alice, bob_doc).await.expect("read").is_none());
    assert!(registry.document(alice, alice_doc).await.expect("read").is_some());
    assert!(registry
        .knowledge_base_documents(alice, bob_kb)
        .await
        .expect("links")
        .is_empty());
    assert_eq!(
        registry
            .document_knowledge_bases(alice, alice_doc)
            .await
            .expect("bases"),
        [alice_kb]
    );
    for (tenant, document) in [(alice, bob_doc), (bob, alice_doc)] {
        assert!(
            registry
                .document_knowledge_bases(tenant, document)
                .await
                .expect("bases")
                .is_empty(),
            "another tenant's document shows its knowledge bases"
        );
    }
    let names = registry
        .document_file_names(alice, &[alice_doc, bob_doc])
        .await
        .expect("names");
    assert_eq!(names.keys().collect::<Vec<_>>(), [&alice_doc]);

    let kbs = registry.list_knowledge_bases(alice).await.expect("list");
    assert_eq!(kbs.iter().map(|kb| kb.id).collect::<Vec<_>>(), [alice_kb]);
    let (documents, total) = registry.list_documents(alice, 10, 0).await.expect("list");
    assert_eq!(
        (documents.iter().map(|doc| doc.id).collect::<Vec<_>>(), total),
        (vec![alice_doc], 1)
    );
    let keys = registry.list_api_keys(alice).await.expect("keys");
    assert_eq!(
        keys.iter().map(|key| key.key_id.0.as_str()).collect::<Vec<_>>(),
        ["key-a"]
    );
    // a key is looked up by its id alone; its row names its owner
    let bobs_key = registry
        .api_key(&ApiKeyId("key-b".to_owned()))
        .await
        .expect("read")
        .expect("key row");
    assert_eq!(bobs_key.tenant_id, bob);
    assert!(registry.user(TenantId(Uuid::new_v4())).await.expect("read").is_none());
}

async fn reset_and_replay_rebuild_an_equal_registry(backend: Backend) {
    let harness = Harness::open(backend).await;
    write_history(&harness, true).await;
    let head = harness.catch_up().await;
    let live = harness.registry.dump().await.expect("dump");
    let row_count: usize = live.tables.iter().map(|table| table.rows.len()).sum();
    assert!(row_count > 15, "the history fills the registry: {live:?}");

    harness.registry.reset().await.expect("reset");
    assert_eq!(
        harness.projection.checkpoint().await.expect("checkpoint"),
        LogPosition::START
    );
    let emptied = harness.registry.dump().await.expect("dump");
    assert!(emptied.tables.iter().all(|table| table.rows.is_empty()), "{emptied:?}");
    assert!(harness
        .registry
        .user(TenantId::for_email("alice@example.com"))
        .await
        .expect("read")
        .is_none());

    // replayed in other batch sizes than the live run
    let replayed = catch_up_to_head(&*harness.store, &harness.projection, 5)
        .await
        .expect("replay");
    assert_eq!(replayed, head);
    assert_eq!(harness.registry.dump().await.expect("dump"), live);
}

async fn documents_page_with_a_total(backend: Backend) {
    let harness = Harness::open(backend).await;
    let (alice, alice_registered) = tenant_registered("alice@example.com", Role::User);
    let (bob, bob_registered) = tenant_registered("bob@example.com", Role::User);
    harness.append(&alice.stream_id(), &[alice_registered]).await;
    harness.append(&bob.stream_id(), &[bob_registered]).await;
    for index in 0..7 {
        let (doc, registered) = document_registered(alice, &format!("doc-{index}.md"));
        harness.append(&doc.stream_id(), &[registered]).await;
    }
    for index in 0..2 {
        let (doc, registered) = document_registered(bob, &format!("doc-{index}.md"));
        harness.append(&doc.stream_id(), &[registered]).await;
    }
    harness.catch_up().await;
    let registry = &harness.registry;

    let (everything, total) = registry.list_documents(alice, 100, 0).await.expect("list");
    assert_eq!((everything.len(), total), (7, 7));
    assert!(everything.iter().all(|doc| doc.tenant_id == alice));
    let order: Vec<_> = everything.iter().map(|doc| (doc.created_at, doc.id)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "documents come in upload order");

    let mut paged = Vec::new();
    for offset in [0, 3, 6] {
        let (page, total) = registry.list_documents(alice, 3, offset).await.expect("page");
        assert_eq!(total, 7);
        paged.extend(page);
    }
    assert_eq!(paged, everything);
    let (beyond, total) = registry.list_documents(alice, 3, 10).await.expect("page past the end");
    assert_eq!((beyond.len(), total), (0, 7));
    let (none, total) = registry.list_documents(alice, 0, 0).await.expect("empty page");
    assert_eq!((none.len(), total), (0, 7));
    let (bobs, total) = registry.list_documents(bob, 1, 1).await.expect("bob's page");
    assert_eq!((bobs.len(), total), (1, 2));
    let (nobody, total) = registry
        .list_documents(TenantId(Uuid::new_v4()), 10, 0)
        .await
        .expect("stranger's page");
    assert_eq!((nobody.len(), total), (0, 0));

    let unfinished = registry.unfinished_documents(4).await.expect("sweep");
    assert_eq!(unfinished.len(), 4, "the sweep is bounded by its limit");
}

async fn undecodable_events_stop_the_projection_and_roll_back_the_batch(backend: Backend) {
    let harness = Harness::open(backend).await;
    let (alice, registered) = tenant_registered("alice@example.com", Role::User);
    harness.append(&alice.stream_id(), &[registered]).await;
    let unknown = |event_type: &str| NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        schema_version: domain::SCHEMA_VERSION,
        data: serde_json::json!({}),
        metadata: EventMetadata::system(Uuid::new_v4()),
    };
    let mystery = StreamId(format!("mystery-{}", Uuid::new_v4()));
    harness.append_raw(&mystery, vec![unknown("Appeared")]).await;

    let failing = harness.whole_log().await;
    let error = catch_up_to_head(&*harness.store, &harness.projection, 10)
        .await
        .expect_err("an unknown category is refused");
    match &error {
        ProjectionError::Event {
            projection, event_id, ..
        } => {
            assert_eq!(projection, "registry");
            assert_eq!(*event_id, failing[1].event_id);
        }
        other => panic!("expected an event error, got {other}"),
    }
    assert!(error.to_string().contains("mystery"), "{error}");
    // the registration shared the failing batch: nothing of it was kept
    assert!(harness.registry.user(alice).await.expect("read").is_none());
    assert_eq!(
        harness.projection.checkpoint().await.expect("checkpoint"),
        LogPosition::START
    );

    // an unknown type in a known category is refused too
    let other = Harness::open(backend).await;
    other
        .append_raw(&alice.stream_id(), vec![unknown("TenantExploded")])
        .await;
    other.wait_until_readable().await;
    let error = catch_up_to_head(&*other.store, &other.projection, 10)
        .await
        .expect_err("an unknown event type is refused");
    assert!(matches!(error, ProjectionError::Event { .. }), "{error}");
    assert!(error.to_string().contains("TenantExploded"), "{error}");
}

/// SQLite looks up the column of an `ALTER TABLE … DROP COLUMN` in the
/// schema its connection last read, without the retry on a stale schema
/// other statements get: a pooled connection that has not read since
/// another one added the column would not find it. So the statements run
/// on one connection, after a read that refreshes its schema.
async fn execute_on_one_connection(db: &Database, statements: &[String]) {
    match db {
        Database::Sqlite(pool) => {
            let mut connection = pool.acquire().await.expect("connection");
            sqlx::query("SELECT COUNT(*) FROM sqlite_schema")
                .execute(&mut *connection)
                .await
                .expect("schema read");
            for sql in statements {
                sqlx::query(sql)
                    .execute(&mut *connection)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
            }
        }
        Database::Postgres(pool) => {
            for sql in statements {
                sqlx::query(sql)
                    .execute(pool)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
            }
        }
    }
}

/// A key issued with scopes reads back with them, and a key issued before
/// scopes existed (its event has no `scopes` field) reads as unscoped, in
/// the default tables and in a generation whose tables were created before
/// the scope columns existed, once `upgrade_generations` has run.
async fn api_key_scopes_reach_every_generation_old_ones_included(backend: Backend) {
    let harness = Harness::open(backend).await;
    let (alice, registered) = tenant_registered("alice@example.com", Role::User);
    let scopes = ApiKeyScopes {
        read_only: true,
        knowledge_base_ids: Some(vec![
            KnowledgeBaseId(Uuid::from_u128(2)),
            KnowledgeBaseId(Uuid::from_u128(1)),
        ]),
    };
    let scoped = TenantEvent::ApiKeyIssued {
        key_id: ApiKeyId("key-scoped".to_owned()),
        secret_hash: "hash-of-key-scoped".to_owned(),
        role: Role::User,
        label: None,
        expires_at: None,
        scopes: scopes.clone(),
    };
    harness.append(&alice.stream_id(), &[registered, scoped]).await;
    harness
        .append_raw(
            &alice.stream_id(),
            vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "ApiKeyIssued".to_owned(),
                schema_version: domain::SCHEMA_VERSION,
                data: serde_json::json!({
                    "key_id": "key-old",
                    "secret_hash": "hash-of-key-old",
                    "role": "USER",
                    "label": null,
                    "expires_at": null,
                }),
                metadata: EventMetadata::system(Uuid::new_v4()),
            }],
        )
        .await;

    // a generation made by a version without the scope columns
    let g2 = GenerationName::parse("g2").unwrap();
    Generations::new(harness.db.clone())
        .create("registry", &g2)
        .await
        .expect("generation row");
    harness
        .registry
        .create_generation(&g2)
        .await
        .expect("generation tables");
    let old_table = match backend {
        Backend::Sqlite => "registry_gg2__api_keys",
        Backend::Postgres => "registry_gg2.api_keys",
    };
    let drops: Vec<String> = ["knowledge_base_ids", "read_only"]
        .iter()
        .map(|column| format!("ALTER TABLE {old_table} DROP COLUMN {column}"))
        .collect();
    execute_on_one_connection(&harness.db, &drops).await;
    // twice: the second finds every column in place
    for _ in 0..2 {
        harness.registry.upgrade_generations().await.expect("upgrade");
    }

    harness.catch_up().await;
    let shadow = RegistryProjection::for_generation(harness.db.clone(), g2.clone());
    catch_up_to_head(&*harness.store, &shadow, 2)
        .await
        .expect("shadow catches up");
    let in_g2 = Registry::at_generation(harness.db.clone(), g2);
    for registry in [&harness.registry, &in_g2] {
        let key = |id: &str| {
            let id = ApiKeyId(id.to_owned());
            async move { registry.api_key(&id).await.expect("read").expect("key row") }
        };
        assert_eq!(key("key-scoped").await.scopes, scopes, "the order of the ids is kept");
        assert_eq!(key("key-old").await.scopes, ApiKeyScopes::default());
        let listed: Vec<ApiKeyScopes> = registry
            .list_api_keys(alice)
            .await
            .expect("list")
            .into_iter()
            .map(|key| key.scopes)
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&scopes), "{listed:?}");
    }
    assert_eq!(
        in_g2.dump().await.expect("dump").entities(),
        harness.registry.dump().await.expect("dump").entities(),
        "the upgraded generation differs from the default tables"
    );
}

/// A pending upload is a row from its request until it is completed,
/// rejected or expired, or its tenant is erased; the expired ones are
/// listed for the cleaner, oldest expiry first; reads by tenant see only
/// the tenant's. A generation made before the table existed gets it from
/// `upgrade_generations` and ends up equal to the default tables.
async fn pending_uploads_open_and_close_in_every_generation(backend: Backend) {
    let harness = Harness::open(backend).await;
    let registry = &harness.registry;
    let (alice, alice_registered) = tenant_registered("alice@example.com", Role::User);
    let (bob, bob_registered) = tenant_registered("bob@example.com", Role::User);
    harness.append(&alice.stream_id(), &[alice_registered]).await;
    harness.append(&bob.stream_id(), &[bob_registered]).await;
    let now = Utc::now();
    let (later, later_requested) = upload_requested(alice, "later.txt", 1, now + Duration::hours(1));
    let (past, past_requested) = upload_requested(alice, "past.txt", 2, now - Duration::minutes(1));
    let (older, older_requested) = upload_requested(bob, "older.txt", 3, now - Duration::minutes(5));
    let (rejected, rejected_requested) = upload_requested(bob, "rejected.txt", 4, now + Duration::hours(1));
    for (document, event) in [
        (later, later_requested),
        (past, past_requested),
        (older, older_requested),
        (rejected, rejected_requested),
    ] {
        harness.append(&document.stream_id(), &[event]).await;
    }
    harness.catch_up().await;

    let row = registry
        .pending_upload(alice, later)
        .await
        .expect("read")
        .expect("pending");
    assert_eq!(
        (row.tenant_id, row.upload_id, row.size_bytes, row.sha256.as_deref()),
        (alice, Uuid::from_u128(1), 42, None)
    );
    assert_eq!(row.knowledge_base_id, Some(KnowledgeBaseId(Uuid::from_u128(1))));
    assert_eq!(
        row.staging_key,
        format!("staging/{alice}/{later}/{}", Uuid::from_u128(1))
    );
    assert!(
        registry.pending_upload(bob, later).await.expect("read").is_none(),
        "another tenant's upload reads as absent"
    );
    assert_eq!(
        registry
            .pending_upload_by_id(later, Uuid::from_u128(1))
            .await
            .expect("read")
            .map(|row| row.tenant_id),
        Some(alice)
    );
    assert!(registry
        .pending_upload_by_id(later, Uuid::from_u128(9))
        .await
        .expect("read")
        .is_none());
    let expired: Vec<DocumentId> = registry
        .expired_pending_uploads(now, 10)
        .await
        .expect("expired")
        .into_iter()
        .map(|row| row.document_id)
        .collect();
    assert_eq!(expired, vec![older, past], "the longest expired first");
    assert_eq!(
        registry.expired_pending_uploads(now, 1).await.expect("expired").len(),
        1
    );

    // a generation made by a version without the table
    let g2 = GenerationName::parse("g2").unwrap();
    Generations::new(harness.db.clone())
        .create("registry", &g2)
        .await
        .expect("generation row");
    registry.create_generation(&g2).await.expect("generation tables");
    let old_table = match backend {
        Backend::Sqlite => "registry_gg2__pending_uploads",
        Backend::Postgres => "registry_gg2.pending_uploads",
    };
    execute_on_one_connection(&harness.db, &[format!("DROP TABLE {old_table}")]).await;
    for _ in 0..2 {
        registry.upgrade_generations().await.expect("upgrade");
    }

    // each way out of pending
    let (_, later_registered) = document_registered(alice, "later.txt");
    harness.append(&later.stream_id(), &[later_registered]).await;
    let expiry = DocumentEvent::UploadExpired {
        upload_id: Uuid::from_u128(2),
    };
    harness.append(&past.stream_id(), &[expiry]).await;
    let rejection = DocumentEvent::UploadRejected {
        upload_id: Uuid::from_u128(4),
        reason: "size differs".to_owned(),
    };
    harness.append(&rejected.stream_id(), &[rejection]).await;
    harness.catch_up().await;
    for document in [later, past] {
        assert!(registry.pending_upload(alice, document).await.expect("read").is_none());
    }
    assert!(registry.pending_upload(bob, rejected).await.expect("read").is_none());
    assert!(registry.pending_upload(bob, older).await.expect("read").is_some());

    let shadow = RegistryProjection::for_generation(harness.db.clone(), g2.clone());
    catch_up_to_head(&*harness.store, &shadow, 2)
        .await
        .expect("shadow catches up");
    let in_g2 = Registry::at_generation(harness.db.clone(), g2);
    assert_eq!(
        in_g2.dump().await.expect("dump").entities(),
        registry.dump().await.expect("dump").entities(),
        "the upgraded generation differs from the default tables"
    );
    assert_eq!(
        in_g2
            .expired_pending_uploads(now, 10)
            .await
            .expect("expired")
            .into_iter()
            .map(|row| row.document_id)
            .collect::<Vec<_>>(),
        vec![older]
    );

    // erasing bob removes his last pending upload
    let erased = TenantEvent::TenantErased {
        erasure_id: Uuid::from_u128(77),
    };
    harness.append(&bob.stream_id(), &[erased]).await;
    harness.catch_up().await;
    assert!(registry.pending_upload(bob, older).await.expect("read").is_none());
    assert!(registry
        .expired_pending_uploads(now, 10)
        .await
        .expect("expired")
        .is_empty());
}
