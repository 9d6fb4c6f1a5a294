//! The audit projection against real databases: events appended through
//! the real event store, recorded by the projection, read back and verified
//! through `AuditLog`, and tampered with by direct SQL. Every scenario runs
//! on SQLite and on Postgres (`NEUROSTASH_TEST_POSTGRES_URL`, which must be
//! set).

#[macro_use]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::db::Database;
use actors::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use chrono::{DateTime, Utc};
use domain::{ApiKeyId, EventMetadata, LogPosition, StreamId, TenantId};
use projections::audit::{chain, AuditFilter, AuditLog, AuditProjection, AuditRecord, VerifyReport, GENESIS_HASH};
use projections::runtime::{catch_up, Projection};
use serde_json::json;
use support::Backend;
use uuid::Uuid;

on_both_backends!(
    the_chain_follows_the_log_and_reads_filter_and_page,
    redelivered_events_change_nothing,
    reset_and_replay_rebuild_an_identical_chain,
    verify_detects_a_modified_record,
    verify_detects_deleted_records,
    verify_detects_inserted_records,
    verify_detects_data_that_differs_from_the_store,
);

struct Harness {
    db: Database,
    store: Arc<dyn EventStore>,
    projection: AuditProjection,
    audit: AuditLog,
    /// The position of the last append made here.
    appended: Mutex<LogPosition>,
    alice: TenantId,
    bob: TenantId,
    /// Keeps the SQLite file alive for the test.
    _directory: Option<tempfile::TempDir>,
}

impl Harness {
    async fn open(backend: Backend) -> Harness {
        let (db, directory) = support::open_database(backend).await;
        Harness {
            store: db.event_store(),
            projection: AuditProjection::new(db.clone()),
            audit: AuditLog::new(db.clone()),
            db,
            appended: Mutex::new(LogPosition::START),
            alice: TenantId(Uuid::new_v4()),
            bob: TenantId(Uuid::new_v4()),
            _directory: directory,
        }
    }

    async fn append(&self, stream: &str, event_type: &str, tenant: Option<TenantId>, key: Option<&str>) {
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            schema_version: domain::SCHEMA_VERSION,
            // keys out of order on purpose: JSONB reorders them, SQLite keeps them
            data: json!({ "z": [1, 2.5, "three"], "a": { "nested": true, "n": null }, "stream": stream }),
            metadata: EventMetadata {
                tenant_id: tenant,
                actor_key_id: key.map(|key| ApiKeyId(key.to_owned())),
                correlation_id: Uuid::new_v4(),
                causation_id: None,
            },
        };
        let position = self
            .store
            .append(&StreamId(stream.to_owned()), ExpectedVersion::Any, vec![event])
            .await
            .expect("append")
            .log_position;
        let mut appended = self.appended.lock().expect("not poisoned");
        *appended = (*appended).max(position);
    }

    /// Waits until every append made here is readable from the log. On
    /// Postgres a read only sees transactions older than every one running
    /// on the server, other tests' included, so an append can stay out of
    /// sight for a moment after it returned.
    async fn wait_until_readable(&self) -> LogPosition {
        let target = *self.appended.lock().expect("not poisoned");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let head = self.store.log_head().await.expect("log head");
            if head >= target {
                return target;
            }
            assert!(
                Instant::now() < deadline,
                "the log head stayed at {head}, short of {target}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Seven events of two tenants and the system over three streams.
    async fn seed(&self) {
        let (alice, bob) = (Some(self.alice), Some(self.bob));
        self.append("tenant-a", "TenantRegistered", None, None).await;
        self.append("tenant-a", "ApiKeyIssued", alice, Some("aaaaaaaaaaaa"))
            .await;
        self.append("tenant-b", "TenantRegistered", None, None).await;
        self.append("knowledge_base-1", "KnowledgeBaseCreated", alice, Some("aaaaaaaaaaaa"))
            .await;
        self.append("tenant-b", "ApiKeyIssued", bob, Some("bbbbbbbbbbbb")).await;
        self.append("knowledge_base-1", "KnowledgeBaseRenamed", alice, Some("aaaaaaaaaaaa"))
            .await;
        self.append("tenant-b", "ApiKeyRevoked", bob, Some("bbbbbbbbbbbb"))
            .await;
    }

    /// Applies the log up to the last append in batches of 3, so that
    /// batch boundaries fall between the records of one chain.
    async fn catch_up(&self) -> LogPosition {
        let target = self.wait_until_readable().await;
        let reached = catch_up(self.store.as_ref(), &self.projection, target, 3)
            .await
            .expect("audit projection catches up");
        assert_eq!(reached, target);
        reached
    }

    async fn all(&self) -> Vec<AuditRecord> {
        self.audit
            .list(&AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("list")
    }

    async fn log(&self) -> Vec<RecordedEvent> {
        self.wait_until_readable().await;
        self.store.read_log(LogPosition::START, 10_000).await.expect("read log")
    }

    async fn verify(&self) -> VerifyReport {
        self.audit.verify(self.store.as_ref()).await.expect("verify runs")
    }

    async fn execute(&self, sql: &str) {
        let result = match &self.db {
            Database::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|done| done.rows_affected()),
            Database::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|done| done.rows_affected()),
        };
        let affected = result.unwrap_or_else(|error| panic!("{sql}: {error}"));
        assert!(affected > 0, "{sql} changed nothing");
    }

    /// Writes `record` into the table with literal SQL that both backends
    /// accept, as someone with database access would.
    async fn insert_raw(&self, record: &AuditRecord) {
        let optional = |value: Option<String>| value.map_or("NULL".to_owned(), |value| format!("'{value}'"));
        self.execute(&format!(
            "INSERT INTO audit_log (seq, event_id, log_commit, log_position, stream_id, stream_version, event_type, \
             recorded_at, tenant_id, actor_key_id, correlation_id, data_sha256, prev_hash, hash) VALUES \
             ({}, '{}', {}, {}, '{}', {}, '{}', '{}', {}, {}, '{}', '{}', '{}', '{}')",
            record.seq,
            record.event_id,
            record.log_position.commit,
            record.log_position.position,
            record.stream_id.as_str(),
            record.stream_version,
            record.event_type,
            record.recorded_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            optional(record.tenant_id.map(|tenant| tenant.0.to_string())),
            optional(record.actor_key_id.as_ref().map(|key| key.0.clone())),
            record.correlation_id,
            hex::encode(record.data_sha256),
            hex::encode(record.prev_hash),
            hex::encode(record.hash),
        ))
        .await;
    }

    /// Rewrites the chain from `records[from]` on with its hashes
    /// recomputed, as someone who knows the encoding would to hide a change.
    async fn rechain(&self, records: &mut [AuditRecord], from: usize) {
        for index in from..records.len() {
            if index > 0 {
                records[index].prev_hash = records[index - 1].hash;
            }
            records[index].hash = chain::record_hash(&records[index]);
            let record = &records[index];
            self.execute(&format!(
                "UPDATE audit_log SET data_sha256 = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
                hex::encode(record.data_sha256),
                hex::encode(record.prev_hash),
                hex::encode(record.hash),
                record.seq
            ))
            .await;
        }
    }
}

fn assert_clean(report: &VerifyReport) {
    assert!(report.is_clean(), "{report}");
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid time")
        .with_timezone(&Utc)
}

async fn the_chain_follows_the_log_and_reads_filter_and_page(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    let head = harness.catch_up().await;
    assert_eq!(harness.audit.checkpoint().await.expect("checkpoint"), head);

    let records = harness.all().await;
    let log = harness.log().await;
    assert_eq!(records.len(), 7);
    let mut previous = GENESIS_HASH;
    for (index, (record, event)) in records.iter().zip(&log).enumerate() {
        assert_eq!(record.seq, index as i64 + 1, "seqs are dense from 1");
        assert_eq!(
            record.prev_hash, previous,
            "seq {} links to the record before it",
            record.seq
        );
        assert!(record.hash_matches(), "seq {} hash", record.seq);
        assert_eq!(record.event_id, event.event_id, "records follow log order");
        assert_eq!(record.log_position, event.log_position);
        assert_eq!(record.event_type, event.event_type);
        assert_eq!(record.tenant_id, event.metadata.tenant_id);
        assert_eq!(record.actor_key_id, event.metadata.actor_key_id);
        assert_eq!(record.data_sha256, chain::data_sha256(&event.payload));
        previous = record.hash;
    }
    let report = harness.verify().await;
    assert_clean(&report);
    assert_eq!(
        (report.records_checked, report.events_checked, report.head_seq),
        (7, 7, 7)
    );

    let alice = harness
        .audit
        .list(&AuditFilter {
            tenant_id: Some(harness.alice),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(alice.iter().map(|record| record.seq).collect::<Vec<_>>(), vec![2, 4, 6]);
    let issued = harness
        .audit
        .list(&AuditFilter {
            event_type: Some("ApiKeyIssued".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(issued.iter().map(|record| record.seq).collect::<Vec<_>>(), vec![2, 5]);
    let since_fifth = harness
        .audit
        .list(&AuditFilter {
            since: Some(records[4].recorded_at),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("list");
    assert!(since_fifth
        .iter()
        .all(|record| record.recorded_at >= records[4].recorded_at));
    assert!(since_fifth.iter().any(|record| record.seq == 7), "{since_fifth:?}");
    let future = harness
        .audit
        .list(&AuditFilter {
            since: Some(Utc::now() + chrono::Duration::hours(1)),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("list");
    assert!(future.is_empty());

    let mut paged = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = harness
            .audit
            .list(&AuditFilter {
                after_seq,
                limit: 3,
                ..AuditFilter::default()
            })
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3);
        after_seq = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, records, "pages by the after-seq cursor cover the log once");
}

async fn redelivered_events_change_nothing(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    let before = harness.all().await;
    let log = harness.log().await;

    // the whole log again, then a batch holding one event twice
    harness.projection.apply_batch(&log).await.expect("redelivery");
    harness
        .projection
        .apply_batch(&[log[2].clone(), log[2].clone()])
        .await
        .expect("duplicate in a batch");
    assert_eq!(harness.all().await, before);

    // a checkpoint lost behind the records: the event ids still match
    harness
        .execute("DELETE FROM projection_checkpoints WHERE name = 'audit'")
        .await;
    assert_eq!(
        harness.audit.checkpoint().await.expect("checkpoint"),
        LogPosition::START
    );
    harness.catch_up().await;
    assert_eq!(harness.all().await, before);
    assert_clean(&harness.verify().await);

    // and new events still chain on
    harness
        .append("tenant-a", "ApiKeyRevoked", Some(harness.alice), None)
        .await;
    harness.catch_up().await;
    let after = harness.all().await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[before.len()].prev_hash, before[before.len() - 1].hash);
    assert_clean(&harness.verify().await);
}

async fn reset_and_replay_rebuild_an_identical_chain(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    let before = harness.all().await;

    harness.audit.reset().await.expect("reset");
    assert!(harness.all().await.is_empty());
    assert_eq!(
        harness.audit.checkpoint().await.expect("checkpoint"),
        LogPosition::START
    );
    harness.catch_up().await;
    assert_eq!(
        harness.all().await,
        before,
        "the replayed chain is the same, hash for hash"
    );
    assert_clean(&harness.verify().await);
}

async fn verify_detects_a_modified_record(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    assert_clean(&harness.verify().await);

    harness
        .execute("UPDATE audit_log SET actor_key_id = 'cccccccccccc' WHERE seq = 2")
        .await;
    let report = harness.verify().await;
    assert!(report.has("modified", Some(2)), "{report}");
    assert!(report.has("envelope_mismatch", Some(2)), "{report}");
    assert!(
        !report.has("broken_link", Some(3)),
        "the stored hash still links: {report}"
    );
    assert!(report.to_string().contains("seq 2: record of event"), "{report}");

    // hiding the change by rehashing the record breaks the next link instead
    let mut records = harness.all().await;
    records[1].hash = chain::record_hash(&records[1]);
    harness
        .execute(&format!(
            "UPDATE audit_log SET hash = '{}' WHERE seq = 2",
            hex::encode(records[1].hash)
        ))
        .await;
    let report = harness.verify().await;
    assert!(!report.has("modified", Some(2)), "{report}");
    assert!(report.has("broken_link", Some(3)), "{report}");
    assert!(report.has("envelope_mismatch", Some(2)), "{report}");
}

async fn verify_detects_deleted_records(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    let records = harness.all().await;

    harness.execute("DELETE FROM audit_log WHERE seq = 3").await;
    let report = harness.verify().await;
    assert!(report.has("sequence_gap", Some(4)), "{report}");
    assert!(report.has("broken_link", Some(4)), "{report}");
    assert!(
        report.findings.iter().any(|finding| matches!(
            finding,
            projections::audit::Finding::MissingRecord { event_id, .. } if *event_id == records[2].event_id
        )),
        "{report}"
    );
    assert_eq!(report.records_checked, 6);

    // cutting the tail leaves a valid chain: the log still shows it
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    harness.execute("DELETE FROM audit_log WHERE seq >= 6").await;
    let report = harness.verify().await;
    assert!(!report.has("sequence_gap", Some(6)), "{report}");
    assert_eq!(report.counts.get("missing_record"), Some(&2), "{report}");
    assert_eq!(report.total_findings(), 2, "{report}");
}

async fn verify_detects_inserted_records(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    let head = harness.catch_up().await;
    let records = harness.all().await;
    let last = records.last().expect("records").clone();

    // a record chained and hashed exactly as the projection would, for an
    // event that never happened: only the log gives it away
    let mut forged = AuditRecord {
        seq: last.seq + 1,
        event_id: Uuid::new_v4(),
        log_position: LogPosition {
            commit: head.commit,
            position: head.position + 1,
        },
        stream_id: StreamId("tenant-a".into()),
        stream_version: 99,
        event_type: "ApiKeyIssued".into(),
        recorded_at: time("2026-01-01T00:00:00Z"),
        tenant_id: Some(harness.alice),
        actor_key_id: Some(ApiKeyId("ffffffffffff".into())),
        correlation_id: Uuid::new_v4(),
        data_sha256: chain::data_sha256(&json!({ "forged": true })),
        prev_hash: last.hash,
        hash: GENESIS_HASH,
    };
    forged.hash = chain::record_hash(&forged);
    harness.insert_raw(&forged).await;
    let report = harness.verify().await;
    assert!(report.has("unknown_event", Some(forged.seq)), "{report}");
    assert!(!report.has("modified", Some(forged.seq)), "{report}");
    assert!(!report.has("broken_link", Some(forged.seq)), "{report}");

    // one that does not even link
    let mut unlinked = forged.clone();
    unlinked.seq += 1;
    unlinked.event_id = Uuid::new_v4();
    unlinked.log_position.position += 1;
    unlinked.prev_hash = [7; 32];
    unlinked.hash = chain::record_hash(&unlinked);
    harness.insert_raw(&unlinked).await;
    let report = harness.verify().await;
    assert!(report.has("broken_link", Some(unlinked.seq)), "{report}");
    assert!(report.has("unknown_event", Some(unlinked.seq)), "{report}");
}

async fn verify_detects_data_that_differs_from_the_store(backend: Backend) {
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    let mut records = harness.all().await;

    // the event itself rewritten in the store after it was audited
    harness
        .execute(&format!(
            "UPDATE events SET data = '{{\"forged\":true}}' WHERE event_id = '{}'",
            records[3].event_id
        ))
        .await;
    let report = harness.verify().await;
    assert!(report.has("data_mismatch", Some(4)), "{report}");
    assert_eq!(report.total_findings(), 1, "{report}");

    // the record's data hash rewritten and the whole chain after it
    // recomputed: the chain is consistent again, the log is not
    let harness = Harness::open(backend).await;
    harness.seed().await;
    harness.catch_up().await;
    records = harness.all().await;
    records[1].data_sha256 = chain::data_sha256(&json!({ "rewritten": 1 }));
    harness.rechain(&mut records, 1).await;
    let report = harness.verify().await;
    assert!(report.has("data_mismatch", Some(2)), "{report}");
    assert_eq!(report.total_findings(), 1, "{report}");
}
