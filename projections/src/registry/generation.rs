//! Where a registry generation's tables are: generation `default` is the
//! tables of migration 0002 as later migrations changed them, any other is
//! the same DDL and changes under another name.
//! On Postgres that is a schema per generation (`registry_g<name>`, tables
//! created from the migration's own DDL, queries schema-qualified); SQLite
//! has no schemas inside one database file, and a second attached file
//! would not commit atomically with the checkpoint in WAL mode, so there
//! the tables are prefixed (`registry_g<name>__user_clients`). Either way
//! the projection's writes and its checkpoint stay in one transaction of
//! one database, and the queries are the same SQL with the table names
//! rewritten ([`Tables::qualify`]).

use std::borrow::Cow;

use actors::db::Database;

use crate::generations::GenerationName;
use crate::sql::{execute_script, Param, Row, Transaction};

/// The registry's entity tables, the ones a generation has its own copy
/// of; the bookkeeping tables (checkpoints, applied versions, offsets) are
/// shared and keyed by [`Tables::projection_key`].
pub(crate) const ENTITY_TABLES: [&str; 7] = [
    "user_clients",
    "api_keys",
    "documents_registry",
    "knowledge_bases",
    "knowledge_base_documents",
    "pending_uploads",
    "document_versions",
];

const POSTGRES_DDL: &str = include_str!("../../../migrations/postgres/0002_registry.up.sql");
const SQLITE_DDL: &str = include_str!("../../../migrations/sqlite/0002_registry.up.sql");
/// The later migrations that change the entity tables or add new ones,
/// oldest first: the migrator applies them to the `default` tables only,
/// so every other generation's copy gets them from [`Tables::create`].
/// Each statement must be idempotent: an `ADD COLUMN` (skipped when the
/// column is there), or a `CREATE TABLE` / `CREATE INDEX` `IF NOT EXISTS`.
const POSTGRES_CHANGES: &[&str] = &[
    include_str!("../../../migrations/postgres/0008_api_key_scopes.up.sql"),
    include_str!("../../../migrations/postgres/0010_pending_uploads.up.sql"),
    include_str!("../../../migrations/postgres/0011_document_content_hash.up.sql"),
    include_str!("../../../migrations/postgres/0013_document_versions.up.sql"),
    include_str!("../../../migrations/postgres/0014_embedding_models.up.sql"),
];
const SQLITE_CHANGES: &[&str] = &[
    include_str!("../../../migrations/sqlite/0008_api_key_scopes.up.sql"),
    include_str!("../../../migrations/sqlite/0010_pending_uploads.up.sql"),
    include_str!("../../../migrations/sqlite/0011_document_content_hash.up.sql"),
    include_str!("../../../migrations/sqlite/0013_document_versions.up.sql"),
    include_str!("../../../migrations/sqlite/0014_embedding_models.up.sql"),
];
/// Where the migration's shared bookkeeping tables begin: not copied.
const BOOKKEEPING_MARKER: &str = "CREATE TABLE IF NOT EXISTS projection_checkpoints";

/// The table names of one generation on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tables {
    generation: GenerationName,
    /// Put before each entity table's name; empty for `default`.
    prefix: String,
    /// Postgres: the generation's schema.
    schema: Option<String>,
}

impl Tables {
    pub(crate) fn new(db: &Database, generation: &GenerationName) -> Tables {
        if generation.is_default() {
            return Tables {
                generation: generation.clone(),
                prefix: String::new(),
                schema: None,
            };
        }
        match db {
            Database::Postgres(_) => {
                let schema = format!("registry_g{generation}");
                Tables {
                    generation: generation.clone(),
                    prefix: format!("{schema}."),
                    schema: Some(schema),
                }
            }
            Database::Sqlite(_) => Tables {
                generation: generation.clone(),
                prefix: format!("registry_g{generation}__"),
                schema: None,
            },
        }
    }

    pub(crate) fn generation(&self) -> &GenerationName {
        &self.generation
    }

    /// The name this generation's checkpoint and applied versions are kept
    /// under: `registry` for `default`, as before generations existed.
    pub(crate) fn projection_key(&self) -> String {
        if self.generation.is_default() {
            super::REGISTRY_PROJECTION.to_owned()
        } else {
            format!("{}@{}", super::REGISTRY_PROJECTION, self.generation)
        }
    }

    /// `sql` with every entity table name as a whole word (not already
    /// qualified) given this generation's prefix.
    pub(crate) fn qualify<'s>(&self, sql: &'s str) -> Cow<'s, str> {
        if self.prefix.is_empty() {
            return Cow::Borrowed(sql);
        }
        rewrite_words(sql, |word, preceded_by_dot| {
            (!preceded_by_dot && ENTITY_TABLES.contains(&word)).then(|| format!("{}{word}", self.prefix))
        })
    }

    /// Creates this generation's tables, or brings tables created by an
    /// older version to the current columns (idempotent).
    pub(crate) async fn create(&self, db: &Database) -> Result<(), sqlx::Error> {
        if self.generation.is_default() {
            return Ok(());
        }
        self.create_tables(db).await?;
        self.apply_changes(db).await
    }

    async fn create_tables(&self, db: &Database) -> Result<(), sqlx::Error> {
        match db {
            Database::Postgres(_) => {
                let schema = self.schema.as_deref().unwrap_or_default();
                // the enum types of 0002 stay in public, where every
                // generation's columns find them
                let tables = POSTGRES_DDL
                    .rsplit_once("END $$;")
                    .map_or(POSTGRES_DDL, |(_, rest)| rest);
                let tables = tables.split(BOOKKEEPING_MARKER).next().unwrap_or(tables);
                let ddl = format!("CREATE SCHEMA IF NOT EXISTS {schema};\n{}", self.qualify(tables));
                execute_script(db, &ddl).await
            }
            Database::Sqlite(_) => {
                let tables = SQLITE_DDL.split(BOOKKEEPING_MARKER).next().unwrap_or(SQLITE_DDL);
                execute_script(db, &self.qualify_ddl(db, tables)).await
            }
        }
    }

    /// [`Tables::qualify`] for DDL: on SQLite, whose index names are
    /// global to the file, index names (`…_idx`) are prefixed too. On
    /// Postgres an index lives in its table's schema already.
    fn qualify_ddl<'s>(&self, db: &Database, ddl: &'s str) -> Cow<'s, str> {
        match db {
            Database::Postgres(_) => self.qualify(ddl),
            Database::Sqlite(_) => self.qualify_sqlite_ddl(ddl),
        }
    }

    fn qualify_sqlite_ddl<'s>(&self, ddl: &'s str) -> Cow<'s, str> {
        rewrite_words(ddl, |word, preceded_by_dot| {
            (!preceded_by_dot && (ENTITY_TABLES.contains(&word) || word.ends_with("_idx")))
                .then(|| format!("{}{word}", self.prefix))
        })
    }

    /// Runs the statements of the later migrations against this
    /// generation's tables, in one transaction under its writers' lock, so
    /// that two processes starting at once do not both add a column. An
    /// `ADD COLUMN` whose column is there already is skipped: SQLite has no
    /// `IF NOT EXISTS` for it, and on Postgres even a no-op `ALTER TABLE`
    /// would lock the table against every reader, at every start.
    async fn apply_changes(&self, db: &Database) -> Result<(), sqlx::Error> {
        let changes = match db {
            Database::Postgres(_) => POSTGRES_CHANGES,
            Database::Sqlite(_) => SQLITE_CHANGES,
        };
        let mut transaction = Transaction::begin(db, &self.projection_key()).await?;
        if let Database::Sqlite(_) = db {
            // an ALTER TABLE finds its table and columns in the schema this
            // connection last read, which may predate the tables that
            // create_tables just made on another pooled connection; a read
            // of the schema table makes it reload a stale one first
            transaction.execute("SELECT COUNT(*) FROM sqlite_schema", &[]).await?;
        }
        for statement in changes.iter().flat_map(|script| statements(script)) {
            let statement = self.qualify_ddl(db, &statement).into_owned();
            if let Some((table, column)) = added_column(&statement) {
                let present = match db {
                    Database::Sqlite(_) => {
                        transaction
                            .fetch_optional(
                                "SELECT 1 AS present FROM pragma_table_info($1) WHERE name = $2",
                                &[Param::text(table), Param::text(column)],
                            )
                            .await?
                    }
                    Database::Postgres(_) => {
                        let (schema, table) = table.split_once('.').unwrap_or(("public", table));
                        transaction
                            .fetch_optional(
                                "SELECT 1 AS present FROM information_schema.columns \
                                 WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
                                &[Param::text(schema), Param::text(table), Param::text(column)],
                            )
                            .await?
                    }
                };
                if present.is_some() {
                    continue;
                }
            }
            transaction.execute(&statement, &[]).await?;
        }
        transaction.commit().await
    }

    /// Drops this generation's tables and its bookkeeping rows, in one
    /// transaction under the registry's lock.
    pub(crate) async fn drop_all(&self, db: &Database) -> Result<(), sqlx::Error> {
        debug_assert!(!self.generation.is_default(), "dropping the default registry tables");
        let mut transaction = Transaction::begin(db, &self.projection_key()).await?;
        match &self.schema {
            Some(schema) => {
                transaction
                    .execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[])
                    .await?;
            }
            None => {
                // links, documents and bases before keys, keys before tenants
                for table in [
                    "document_versions",
                    "pending_uploads",
                    "knowledge_base_documents",
                    "knowledge_bases",
                    "documents_registry",
                    "api_keys",
                    "user_clients",
                ] {
                    transaction
                        .execute(&format!("DROP TABLE IF EXISTS {}{table}", self.prefix), &[])
                        .await?;
                }
            }
        }
        let key = self.projection_key();
        transaction
            .execute(
                "DELETE FROM projection_checkpoints WHERE name = $1",
                &[Param::text(&key)],
            )
            .await?;
        for bookkeeping in ["projection_applied", "projection_offsets"] {
            transaction
                .execute(
                    &format!("DELETE FROM {bookkeeping} WHERE projection = $1"),
                    &[Param::text(&key)],
                )
                .await?;
        }
        transaction.commit().await
    }
}

/// A write transaction on one generation's tables: the SQL of the registry
/// written for the default tables, run against this generation's.
pub(crate) struct Writer {
    pub(crate) transaction: Transaction,
    pub(crate) tables: Tables,
}

impl Writer {
    pub(crate) async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
        let sql = self.tables.qualify(sql);
        self.transaction.execute(&sql, params).await
    }

    pub(crate) async fn fetch_optional(&mut self, sql: &str, params: &[Param]) -> Result<Option<Row>, sqlx::Error> {
        let sql = self.tables.qualify(sql);
        self.transaction.fetch_optional(&sql, params).await
    }

    pub(crate) async fn fetch_all(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, sqlx::Error> {
        let sql = self.tables.qualify(sql);
        self.transaction.fetch_all(&sql, params).await
    }
}

/// The statements of a migration script, comments removed. The
/// migrations these are read from put no `;` and no `--` inside a literal.
fn statements(script: &str) -> Vec<String> {
    let without_comments: String = script
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `(table, column)` of an `ALTER TABLE <table> ADD COLUMN [IF NOT EXISTS]
/// <column> …`.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = statement.split_whitespace().take(9).collect();
    let keywords = |at: usize, expected: &[&str]| {
        words.len() >= at + expected.len()
            && words[at..at + expected.len()]
                .iter()
                .zip(expected)
                .all(|(word, keyword)| word.eq_ignore_ascii_case(keyword))
    };
    if !keywords(0, &["alter", "table"]) || !keywords(3, &["add", "column"]) {
        return None;
    }
    let column_at = if keywords(5, &["if", "not", "exists"]) { 8 } else { 5 };
    Some((words[2], *words.get(column_at)?))
}

/// Replaces identifier words of `sql` for which `replace` returns a
/// replacement; single-quoted literals and `--` comments are left alone
/// (a comment's apostrophe is not a literal's start).
fn rewrite_words<'s>(sql: &'s str, replace: impl Fn(&str, bool) -> Option<String>) -> Cow<'s, str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len() + 64);
    let mut changed = false;
    let mut in_literal = false;
    let mut previous: Option<char> = None;
    let mut chars = sql.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !in_literal && c == '-' && sql[start..].starts_with("--") {
            let end = sql[start..].find('\n').map_or(sql.len(), |offset| start + offset);
            out.push_str(&sql[start..end]);
            while chars.peek().is_some_and(|&(at, _)| at < end) {
                chars.next();
            }
            previous = None;
            continue;
        }
        if c == '\'' {
            in_literal = !in_literal;
            out.push(c);
            previous = Some(c);
            continue;
        }
        if in_literal || !is_word(c) || previous.is_some_and(is_word) {
            out.push(c);
            previous = Some(c);
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(at, next)) = chars.peek() {
            if !is_word(next) {
                break;
            }
            end = at + next.len_utf8();
            chars.next();
        }
        let word = &sql[start..end];
        match replace(word, previous == Some('.')) {
            Some(replacement) => {
                out.push_str(&replacement);
                changed = true;
            }
            None => out.push_str(word),
        }
        previous = word.chars().last();
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed(prefix: &str) -> Tables {
        Tables {
            generation: GenerationName::parse("g2").unwrap(),
            prefix: prefix.to_owned(),
            schema: None,
        }
    }

    #[test]
    fn qualify_renames_whole_table_words_only() {
        let tables = prefixed("registry_gg2.");
        assert_eq!(
            tables.qualify(
                "SELECT kb.id, knowledge_base_id FROM knowledge_bases kb JOIN knowledge_base_documents link \
                 ON link.knowledge_base_id = kb.id WHERE x.api_keys = 'user_clients' AND api_keys_user_id_idx = 1"
            ),
            "SELECT kb.id, knowledge_base_id FROM registry_gg2.knowledge_bases kb JOIN \
             registry_gg2.knowledge_base_documents link ON link.knowledge_base_id = kb.id WHERE x.api_keys = \
             'user_clients' AND api_keys_user_id_idx = 1"
        );
        assert!(matches!(
            tables.qualify("SELECT 1 FROM projection_applied"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn comments_do_not_open_literals() {
        let tables = prefixed("p__");
        assert_eq!(
            tables.qualify("-- a tenant's keys\nCREATE TABLE api_keys (x TEXT DEFAULT 'api_keys');"),
            "-- a tenant's keys\nCREATE TABLE p__api_keys (x TEXT DEFAULT 'api_keys');"
        );
    }

    #[test]
    fn the_default_generation_is_the_migration_tables() {
        let tables = prefixed("");
        assert!(matches!(tables.qualify("SELECT * FROM api_keys"), Cow::Borrowed(_)));
        let default = Tables {
            generation: GenerationName::default_generation(),
            ..prefixed("")
        };
        assert_eq!(default.projection_key(), "registry");
        assert_eq!(prefixed("x").projection_key(), "registry@g2");
    }

    /// What a statement of a later migration does, for the tests: the
    /// column it adds, or the entity table it creates or indexes.
    fn change_of(statement: &str) -> Option<(&str, String)> {
        if let Some((table, column)) = added_column(statement) {
            return Some((table, format!("add column {column}")));
        }
        let words: Vec<&str> = statement.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|word| word.to_ascii_uppercase()).collect();
        match upper.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["CREATE", "TABLE", "IF", "NOT", "EXISTS", ..] => Some((words[5], "create table".to_owned())),
            ["CREATE", "INDEX", "IF", "NOT", "EXISTS", _, "ON", ..] => {
                Some((words[7], format!("create index {}", words[5])))
            }
            _ => None,
        }
    }

    #[test]
    fn later_changes_split_into_idempotent_statements_on_entity_tables_only() {
        let expected = vec![
            ("api_keys", "add column read_only".to_owned()),
            ("api_keys", "add column knowledge_base_ids".to_owned()),
            ("pending_uploads", "create table".to_owned()),
            (
                "pending_uploads",
                "create index pending_uploads_expires_at_idx".to_owned(),
            ),
            ("pending_uploads", "create index pending_uploads_user_id_idx".to_owned()),
            (
                "documents_registry",
                "create index documents_registry_user_sha256_idx".to_owned(),
            ),
            ("document_versions", "create table".to_owned()),
            (
                "document_versions",
                "create index document_versions_user_id_idx".to_owned(),
            ),
            ("knowledge_bases", "add column embedding_model".to_owned()),
            ("knowledge_bases", "add column chunking".to_owned()),
            ("documents_registry", "add column embedding_model".to_owned()),
        ];
        for changes in [SQLITE_CHANGES, POSTGRES_CHANGES] {
            let statements: Vec<String> = changes.iter().flat_map(|script| statements(script)).collect();
            let found: Vec<(&str, String)> = statements
                .iter()
                .map(|statement| {
                    change_of(statement).unwrap_or_else(|| {
                        panic!("not an idempotent change: make it so on both backends, then here: {statement}")
                    })
                })
                .collect();
            assert_eq!(found, expected, "{statements:#?}");
            for statement in &statements {
                let (table, _) = change_of(statement).unwrap();
                assert!(ENTITY_TABLES.contains(&table), "{statement}");
                assert!(!statement.contains("--"), "a comment survived: {statement}");
            }
        }
        assert_eq!(added_column("ALTER TABLE t ADD COLUMN"), None);
        assert_eq!(added_column("ALTER TABLE t DROP COLUMN c"), None);
        assert_eq!(
            added_column("alter table t add column if not exists c INT"),
            Some(("t", "c"))
        );
        let qualified = prefixed("registry_gg2.")
            .qualify(&statements(POSTGRES_CHANGES[0])[0])
            .into_owned();
        assert!(
            qualified.starts_with("ALTER TABLE registry_gg2.api_keys ADD COLUMN IF NOT EXISTS read_only"),
            "{qualified}"
        );
    }

    #[test]
    fn sqlite_generations_prefix_the_index_names_of_later_changes() {
        let tables = prefixed("registry_gg2__");
        let index = statements(SQLITE_CHANGES[1])
            .into_iter()
            .find(|statement| statement.contains("expires_at_idx"))
            .expect("the expiry index");
        let qualified = tables.qualify_sqlite_ddl(&index);
        assert_eq!(
            qualified,
            "CREATE INDEX IF NOT EXISTS registry_gg2__pending_uploads_expires_at_idx ON \
             registry_gg2__pending_uploads (expires_at)"
        );
    }

    #[test]
    fn the_copied_ddl_and_later_changes_create_every_entity_table_and_no_bookkeeping() {
        for (ddl, changes) in [(POSTGRES_DDL, POSTGRES_CHANGES), (SQLITE_DDL, SQLITE_CHANGES)] {
            let tables = ddl.split(BOOKKEEPING_MARKER).next().unwrap();
            assert!(ddl.contains(BOOKKEEPING_MARKER), "the marker moved");
            for table in ENTITY_TABLES {
                let create = format!("CREATE TABLE IF NOT EXISTS {table} (");
                assert!(
                    tables.contains(&create) || changes.iter().any(|change| change.contains(&create)),
                    "{table} missing"
                );
            }
            for change in changes {
                assert!(
                    !change.contains(BOOKKEEPING_MARKER),
                    "a later change creates bookkeeping"
                );
            }
        }
    }
}
