//! Database connections shared by the event store and the projections:
//! a SQLite file in embedded mode, Postgres when configured.

use sqlx::{PgPool, SqlitePool};

/// One database, either backend. The event store, the registry tables and
/// the projection checkpoints live in the same database so that a
/// projection's writes and its checkpoint commit in one transaction.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}
