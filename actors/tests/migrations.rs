//! The migrations of both backends: up, down and up again on a fresh
//! database leaves the expected schema each time and nothing behind on the
//! way down; running up on a migrated database changes nothing.
//!
//! The Postgres half needs `NEUROSTASH_TEST_POSTGRES_URL`; without it those
//! tests fail rather than pass vacuously.

use std::collections::{BTreeMap, BTreeSet};

use actors::db::{fresh_postgres, test_postgres_url, ConnectOptions, Database, TEST_POSTGRES_URL_VAR};
use actors::store::ExpectedVersion;
use domain::{EventMetadata, StreamId};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row, SqlitePool};
use uuid::Uuid;

/// Every table the migrations create, beside sqlx's own bookkeeping table.
const EXPECTED_TABLES: [&str; 20] = [
    "api_keys",
    "audit_log",
    "document_versions",
    "documents_registry",
    "encryption_keys",
    "erased_tenants",
    "erasure_receipts",
    "events",
    "knowledge_base_documents",
    "knowledge_bases",
    "outbox",
    "outbox_relay_lease",
    "pending_uploads",
    "projection_applied",
    "projection_checkpoints",
    "projection_generations",
    "projection_offsets",
    "user_clients",
    "webhook_deliveries",
    "webhooks",
];

/// sqlx records applied migrations here; it stays after a full revert, empty.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The Postgres enum types; SQLite spells them as CHECK constraints.
const ENUM_TYPES: [(&str, &[&str]); 3] = [
    ("lock_status", &["UNLOCKED", "LOCKED"]),
    ("op_status", &["PENDING", "PROCESSING", "SUCCESS", "FAILED"]),
    ("role_type", &["USER", "ADMIN"]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// An index by what it does (table, uniqueness, columns in order) rather
/// than by its name, so the test pins the behaviour the queries rely on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IndexShape {
    table: String,
    unique: bool,
    columns: Vec<String>,
}

fn index(table: &str, unique: bool, columns: &[&str]) -> IndexShape {
    IndexShape {
        table: table.to_string(),
        unique,
        columns: columns.iter().map(|column| column.to_string()).collect(),
    }
}

/// What the migrations left in the database, bookkeeping excluded.
#[derive(Debug, PartialEq, Eq)]
struct Schema {
    tables: BTreeSet<String>,
    indexes: BTreeSet<IndexShape>,
    /// Postgres only: enum type name to its labels in order.
    enum_types: BTreeMap<String, Vec<String>>,
    applied_migrations: i64,
}

struct TestDatabase {
    database: Database,
    teardown: Teardown,
}

enum Teardown {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

async fn open(backend: Backend) -> TestDatabase {
    match backend {
        Backend::Sqlite => {
            let directory = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", directory.path().join("migrations.db").display());
            let database = Database::connect(&url, &ConnectOptions::default())
                .await
                .expect("sqlite opens");
            TestDatabase {
                database,
                teardown: Teardown::Sqlite(directory),
            }
        }
        Backend::Postgres => {
            let admin_url = test_postgres_url().unwrap_or_else(|| {
                panic!(
                    "{TEST_POSTGRES_URL_VAR} is not set: the postgres migration tests need a server \
                     (`eval \"$(bash scripts/postgres.sh start)\"` starts one, `bash scripts/test.sh` runs everything)"
                )
            });
            let (database, url) = fresh_postgres(&admin_url).await.expect("fresh postgres database");
            let without_query = url.split('?').next().unwrap_or(&url);
            let name = without_query.rsplit('/').next().unwrap_or(without_query).to_string();
            TestDatabase {
                database,
                teardown: Teardown::Postgres { admin_url, name },
            }
        }
    }
}

impl TestDatabase {
    /// Drops a Postgres test database once its test has passed; a failed
    /// test keeps its database for inspection.
    async fn finish(self) {
        self.database.close().await;
        match self.teardown {
            Teardown::Sqlite(directory) => drop(directory),
            Teardown::Postgres { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

async fn inspect(database: &Database) -> Schema {
    match database {
        Database::Sqlite(pool) => inspect_sqlite(pool).await,
        Database::Postgres(pool) => inspect_postgres(pool).await,
    }
}

async fn inspect_postgres(pool: &PgPool) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> $1",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await
    .expect("list tables");

    // Columns of every index in index order, unique constraints included:
    // they are backed by unique indexes.
    let index_rows = sqlx::query(
        "SELECT t.relname::text AS table_name, i.indisunique AS is_unique, \
                array_agg(a.attname::text ORDER BY k.ordinality) AS columns \
         FROM pg_index i \
         JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ordinality) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE n.nspname = 'public' AND t.relname <> $1 \
         GROUP BY i.indexrelid, t.relname, i.indisunique",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await
    .expect("list indexes");
    let indexes = index_rows
        .iter()
        .map(|row| IndexShape {
            table: row.get("table_name"),
            unique: row.get("is_unique"),
            columns: row.get("columns"),
        })
        .collect();

    // Any type of these names, wherever it lives and whether or not it is
    // still an enum, would mean the teardown left it behind.
    let type_names: Vec<String> = ENUM_TYPES.iter().map(|(name, _)| name.to_string()).collect();
    let enum_rows = sqlx::query(
        "SELECT t.typname::text AS name, \
                COALESCE(array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
                         FILTER (WHERE e.enumlabel IS NOT NULL), '{}') AS labels \
         FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid \
         WHERE t.typname = ANY($1) \
         GROUP BY t.oid, t.typname",
    )
    .bind(&type_names)
    .fetch_all(pool)
    .await
    .expect("list enum types");
    let enum_types = enum_rows
        .iter()
        .map(|row| (row.get("name"), row.get("labels")))
        .collect();

    Schema {
        tables: tables.into_iter().collect(),
        indexes,
        enum_types,
        applied_migrations: applied_migrations_postgres(pool).await,
    }
}

async fn applied_migrations_postgres(pool: &PgPool) -> i64 {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(pool)
        .await
        .expect("look up the migrations table");
    if !exists {
        return 0;
    }
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {MIGRATIONS_TABLE}"))
        .fetch_one(pool)
        .await
        .expect("count applied migrations")
}

async fn inspect_sqlite(pool: &SqlitePool) -> Schema {
    // `sqlite_%` are SQLite's own tables (`sqlite_sequence` outlives the
    // AUTOINCREMENT table that created it).
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name <> ?",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await
    .expect("list tables");

    let mut indexes = BTreeSet::new();
    for table in &tables {
        let index_rows = sqlx::query("SELECT name, \"unique\" AS is_unique FROM pragma_index_list(?)")
            .bind(table)
            .fetch_all(pool)
            .await
            .expect("list indexes");
        for row in index_rows {
            let index_name: String = row.get("name");
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                .bind(&index_name)
                .fetch_all(pool)
                .await
                .expect("list index columns");
            indexes.insert(IndexShape {
                table: table.clone(),
                unique: row.get::<i64, _>("is_unique") == 1,
                columns,
            });
        }
    }

    let migrations_table: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?")
            .bind(MIGRATIONS_TABLE)
            .fetch_optional(pool)
            .await
            .expect("look up the migrations table");
    let applied_migrations = match migrations_table {
        Some(_) => sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {MIGRATIONS_TABLE}"))
            .fetch_one(pool)
            .await
            .expect("count applied migrations"),
        None => 0,
    };

    Schema {
        tables: tables.into_iter().collect(),
        indexes,
        enum_types: BTreeMap::new(),
        applied_migrations,
    }
}

async fn execute(database: &Database, sql: &str) -> Result<(), sqlx::Error> {
    match database {
        Database::Sqlite(pool) => pool.execute(sql).await.map(drop),
        Database::Postgres(pool) => pool.execute(sql).await.map(drop),
    }
}

/// Rows per expected table.
async fn row_counts(database: &Database) -> BTreeMap<&'static str, i64> {
    let mut counts = BTreeMap::new();
    for table in EXPECTED_TABLES {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let count: i64 = match database {
            Database::Sqlite(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await,
            Database::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|error| panic!("count {table}: {error}"));
        counts.insert(table, count);
    }
    counts
}

fn assert_fully_migrated(backend: Backend, schema: &Schema) {
    let expected_tables: BTreeSet<String> = EXPECTED_TABLES.iter().map(|table| table.to_string()).collect();
    assert_eq!(schema.tables, expected_tables, "tables after up");

    let mut expected_indexes = vec![
        // The per-stream optimistic concurrency guard.
        index("events", true, &["stream_id", "stream_version"]),
        index("events", true, &["event_id"]),
        // One file name per tenant.
        index("documents_registry", true, &["user_id", "file_name"]),
        // A tenant's documents by status in upload order.
        index("documents_registry", false, &["user_id", "op_status", "created_at"]),
        index("projection_applied", true, &["projection", "stream_id"]),
        index("knowledge_base_documents", true, &["knowledge_base_id", "document_id"]),
        // The audit log: one record per event, read by tenant and time or by type.
        index("audit_log", true, &["event_id"]),
        index("audit_log", false, &["tenant_id", "recorded_at"]),
        index("audit_log", false, &["event_type"]),
        // One live generation per projection (a partial index).
        index("projection_generations", true, &["projection"]),
        // One active data key per tenant (a partial index).
        index("encryption_keys", true, &["user_id"]),
        // One pending upload per document; the cleaner reads them by expiry.
        index("pending_uploads", true, &["document_id"]),
        index("pending_uploads", false, &["expires_at"]),
        index("pending_uploads", false, &["user_id"]),
        // A tenant's documents by content, for dedup.
        index("documents_registry", false, &["user_id", "sha256"]),
        // Webhooks by tenant; each webhook's queue in order; one delivery
        // per webhook and event.
        index("webhooks", false, &["user_id"]),
        index("document_versions", true, &["document_id", "version"]),
        index("document_versions", false, &["user_id"]),
        index("webhook_deliveries", false, &["webhook_id", "status", "seq"]),
        index("webhook_deliveries", true, &["webhook_id", "event_id"]),
    ];
    if backend == Backend::Postgres {
        // The log order readers page by.
        expected_indexes.push(index("events", false, &["commit_id", "position"]));
    }
    for expected in expected_indexes {
        assert!(
            schema.indexes.contains(&expected),
            "missing index {expected:?}; found {:#?}",
            schema.indexes
        );
    }

    let expected_enums: BTreeMap<String, Vec<String>> = match backend {
        Backend::Sqlite => BTreeMap::new(),
        Backend::Postgres => ENUM_TYPES
            .iter()
            .map(|(name, labels)| (name.to_string(), labels.iter().map(|label| label.to_string()).collect()))
            .collect(),
    };
    assert_eq!(schema.enum_types, expected_enums, "enum types after up");
    assert_eq!(
        schema.applied_migrations,
        migration_count(backend),
        "every migration recorded"
    );
}

/// How many migrations the backend's folder holds (one `.up.sql` each).
fn migration_count(backend: Backend) -> i64 {
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = format!("{}/../migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
    let entries = std::fs::read_dir(&path).unwrap_or_else(|error| panic!("list {path}: {error}"));
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".up.sql"))
        .count() as i64
}

fn assert_fully_reverted(schema: &Schema) {
    assert!(schema.tables.is_empty(), "tables left after down: {:?}", schema.tables);
    assert!(
        schema.indexes.is_empty(),
        "indexes left after down: {:?}",
        schema.indexes
    );
    assert!(
        schema.enum_types.is_empty(),
        "enum types left after down: {:?}",
        schema.enum_types
    );
    assert_eq!(schema.applied_migrations, 0, "no migration recorded after down");
}

/// Fills every table the way the application would, so that the revert is
/// tested against data and not just an empty schema.
async fn write_sample_rows(database: &Database) {
    let store = database.event_store();
    store
        .append(
            &StreamId(format!("tenant-{}", Uuid::new_v4())),
            ExpectedVersion::Exactly(0),
            vec![actors::store::NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "tenant.registered".to_string(),
                schema_version: 1,
                data: serde_json::json!({ "email": "ada@example.com" }),
                metadata: EventMetadata::system(Uuid::now_v7()),
            }],
        )
        .await
        .expect("append an event");
    // Literals only, so the same statement fits both backends: Postgres casts
    // them to uuid, enum and timestamptz, SQLite keeps them as text.
    let statements = [
        "INSERT INTO user_clients (id, email, role, created_at, updated_at) VALUES \
         ('7b0b7f5e-0000-4000-8000-000000000001', 'ada@example.com', 'ADMIN', \
          '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO api_keys (key_id, user_id, secret_hash, role, created_at) VALUES \
         ('key_1', '7b0b7f5e-0000-4000-8000-000000000001', 'hash', 'ADMIN', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO api_keys (key_id, user_id, secret_hash, role, created_at, read_only, knowledge_base_ids) \
         VALUES ('key_2', '7b0b7f5e-0000-4000-8000-000000000001', 'hash', 'USER', '2026-01-01T00:00:00.000000Z', \
         TRUE, '[\"7b0b7f5e-0000-4000-8000-000000000003\"]')",
        "INSERT INTO knowledge_bases (id, user_id, name, created_at, updated_at) VALUES \
         ('7b0b7f5e-0000-4000-8000-000000000003', '7b0b7f5e-0000-4000-8000-000000000001', 'kb', \
          '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO knowledge_base_documents (knowledge_base_id, document_id, status, added_at, updated_at) VALUES \
         ('7b0b7f5e-0000-4000-8000-000000000003', '7b0b7f5e-0000-4000-8000-000000000002', 'PENDING', \
          '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO projection_checkpoints (name, commit_pos, position, updated_at) VALUES \
         ('registry', 1, 1, '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO projection_applied (projection, stream_id, version) VALUES ('registry', 'tenant-x', 1)",
        "INSERT INTO outbox_relay_lease (id, holder, expires_at) VALUES (1, 'relay-1', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ('registry', 't', 0, 1)",
        "INSERT INTO erasure_receipts (erasure_id, tenant_id, component, acknowledged_at, detail) VALUES \
         ('7b0b7f5e-0000-4000-8000-000000000006', '7b0b7f5e-0000-4000-8000-000000000001', 'registry', \
          '2026-01-01T00:00:00.000000Z', 'removed')",
        "INSERT INTO erased_tenants (user_id, erased_at) VALUES \
         ('7b0b7f5e-0000-4000-8000-000000000007', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO pending_uploads (document_id, user_id, upload_id, staging_key, size_bytes, sha256, \
         knowledge_base_id, expires_at, created_at) VALUES ('7b0b7f5e-0000-4000-8000-000000000008', \
         '7b0b7f5e-0000-4000-8000-000000000001', '7b0b7f5e-0000-4000-8000-000000000009', 'staging/x', 10, NULL, \
         NULL, '2026-01-01T01:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO document_versions (document_id, version, user_id, content_type, size_bytes, sha256, \
         object_key, created_at) VALUES ('7b0b7f5e-0000-4000-8000-000000000002', 1, \
         '7b0b7f5e-0000-4000-8000-000000000001', 'application/pdf', 10, 'ab', 'tenants/x', \
         '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO webhooks (id, user_id, url, event_types, secret, created_at) VALUES \
         ('7b0b7f5e-0000-4000-8000-00000000000a', '7b0b7f5e-0000-4000-8000-000000000001', 'https://example.com', \
          '[\"*\"]', 'nsf1.x.y', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO webhook_deliveries (id, webhook_id, user_id, event_id, event_type, stream_id, stream_version, \
         status, attempts, next_attempt_at, created_at) VALUES ('7b0b7f5e-0000-4000-8000-00000000000b', \
         '7b0b7f5e-0000-4000-8000-00000000000a', '7b0b7f5e-0000-4000-8000-000000000001', \
         '7b0b7f5e-0000-4000-8000-00000000000c', 'DocumentProcessed', 'document-x', 3, 'PENDING', 0, \
         '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO encryption_keys (id, user_id, wrapped_key, master_key_id, created_at) VALUES \
         ('0123456789abcdef', '7b0b7f5e-0000-4000-8000-000000000001', 'wrapped', 'master', \
          '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO audit_log (seq, event_id, log_commit, log_position, stream_id, stream_version, event_type, \
         recorded_at, tenant_id, actor_key_id, correlation_id, data_sha256, prev_hash, hash) VALUES \
         (1, '7b0b7f5e-0000-4000-8000-000000000004', 1, 1, 'tenant-x', 1, 'tenant.registered', \
          '2026-01-01T00:00:00.000000Z', NULL, NULL, '7b0b7f5e-0000-4000-8000-000000000005', \
          '0000000000000000000000000000000000000000000000000000000000000000', \
          '0000000000000000000000000000000000000000000000000000000000000000', \
          '0000000000000000000000000000000000000000000000000000000000000000')",
    ];
    for statement in statements {
        execute(database, statement)
            .await
            .unwrap_or_else(|error| panic!("sample row ({statement}): {error}"));
    }
    execute(
        database,
        &document_insert("7b0b7f5e-0000-4000-8000-000000000002", "a.pdf"),
    )
    .await
    .expect("insert a document");
}

fn document_insert(user_id: &str, file_name: &str) -> String {
    format!(
        "INSERT INTO documents_registry (id, user_id, file_name, content_type, size_bytes, sha256, object_key, \
         lock_status, op_status, attempts, created_at, updated_at) VALUES \
         ('{}', '{user_id}', '{file_name}', 'application/pdf', 10, 'abc', 'objects/x', 'UNLOCKED', 'PENDING', 0, \
          '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        Uuid::new_v4()
    )
}

/// The unique (user_id, file_name) constraint refuses a second document of
/// the same name for the same tenant and allows it for another tenant.
async fn assert_file_names_unique_per_tenant(database: &Database) {
    let tenant = "7b0b7f5e-0000-4000-8000-00000000000a";
    let other_tenant = "7b0b7f5e-0000-4000-8000-00000000000b";
    execute(database, &document_insert(tenant, "report.pdf"))
        .await
        .expect("first document");
    let duplicate = execute(database, &document_insert(tenant, "report.pdf")).await;
    assert!(
        matches!(&duplicate, Err(sqlx::Error::Database(error)) if error.is_unique_violation()),
        "a second report.pdf for one tenant must violate the unique key, got {duplicate:?}"
    );
    execute(database, &document_insert(other_tenant, "report.pdf"))
        .await
        .expect("the same name for another tenant");
}

/// A key's scopes: unscoped unless given, and a knowledge base list is a
/// JSON array or nothing.
async fn assert_api_key_scopes_are_checked(database: &Database) {
    execute(
        database,
        "INSERT INTO user_clients (id, email, role, created_at, updated_at) VALUES \
         ('7b0b7f5e-0000-4000-8000-0000000000c1', 'scoped@example.com', 'USER', \
          '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
    )
    .await
    .expect("a tenant");
    let insert = |key_id: &str, knowledge_base_ids: &str| {
        format!(
            "INSERT INTO api_keys (key_id, user_id, secret_hash, role, created_at, knowledge_base_ids) VALUES \
             ('{key_id}', '7b0b7f5e-0000-4000-8000-0000000000c1', 'hash', 'USER', '2026-01-01T00:00:00.000000Z', \
             {knowledge_base_ids})"
        )
    };
    execute(database, &insert("unscoped", "NULL"))
        .await
        .expect("a key without scopes");
    let read_only = "SELECT read_only FROM api_keys WHERE key_id = 'unscoped'";
    let read_only: bool = match database {
        Database::Sqlite(pool) => sqlx::query_scalar(read_only).fetch_one(pool).await,
        Database::Postgres(pool) => sqlx::query_scalar(read_only).fetch_one(pool).await,
    }
    .expect("read it back");
    assert!(!read_only, "a key is not read only unless said so");
    for not_an_array in ["'{\"id\": 1}'", "'\"7b0b7f5e-0000-4000-8000-000000000003\"'"] {
        let refused = execute(database, &insert("bad", not_an_array)).await;
        assert!(refused.is_err(), "knowledge_base_ids {not_an_array} was accepted");
    }
}

async fn migrations_go_up_down_and_up_again(backend: Backend) {
    let test = open(backend).await;
    let database = &test.database;
    assert_fully_reverted(&inspect(database).await);

    database.migrate_up().await.expect("first up");
    let first_up = inspect(database).await;
    assert_fully_migrated(backend, &first_up);
    assert_file_names_unique_per_tenant(database).await;
    assert_api_key_scopes_are_checked(database).await;
    write_sample_rows(database).await;

    database.migrate_down().await.expect("down");
    assert_fully_reverted(&inspect(database).await);

    database.migrate_up().await.expect("second up");
    let second_up = inspect(database).await;
    assert_eq!(second_up, first_up, "up after down rebuilds the same schema");
    // The second up starts from empty tables: nothing survived the down.
    assert_file_names_unique_per_tenant(database).await;
    write_sample_rows(database).await;
    test.finish().await;
}

async fn migrating_up_twice_is_a_no_op(backend: Backend) {
    let test = open(backend).await;
    let database = &test.database;
    database.migrate_up().await.expect("first up");
    write_sample_rows(database).await;
    let before = inspect(database).await;
    let rows_before = row_counts(database).await;
    assert!(
        rows_before.values().all(|count| *count > 0),
        "sample rows written: {rows_before:?}"
    );

    database.migrate_up().await.expect("second up");
    assert_eq!(inspect(database).await, before, "a second up changes no schema");
    assert_eq!(row_counts(database).await, rows_before, "a second up keeps every row");
    test.finish().await;
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn migrations_go_up_down_and_up_again() {
        super::migrations_go_up_down_and_up_again(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn migrating_up_twice_is_a_no_op() {
        super::migrating_up_twice_is_a_no_op(Backend::Sqlite).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn migrations_go_up_down_and_up_again() {
        super::migrations_go_up_down_and_up_again(Backend::Postgres).await;
    }

    #[tokio::test]
    async fn migrating_up_twice_is_a_no_op() {
        super::migrating_up_twice_is_a_no_op(Backend::Postgres).await;
    }
}
