//! Database connections shared by the event store and the projections:
//! a SQLite file in embedded mode, Postgres when configured.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor, PgConnection, PgPool, SqlitePool};
use uuid::Uuid;

use crate::store::{EventStore, Outbox, PostgresEventStore, SqliteEventStore};

/// Migrations are embedded at compile time; `build.rs` makes a new file in
/// these folders trigger a rebuild.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The environment variable naming a Postgres server the test suites may
/// create databases on (see `scripts/postgres.sh`).
pub const TEST_POSTGRES_URL_VAR: &str = "NEUROSTASH_TEST_POSTGRES_URL";

/// One database, either backend. The event store, the registry tables and
/// the projection checkpoints live in the same database so that a
/// projection's writes and its checkpoint commit in one transaction.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How to open the pool and how long to wait for the database at start-up.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// Connection attempts before giving up; a database that is still
    /// starting (a container coming up beside us) is waited for.
    pub max_attempts: u32,
    pub retry_delay: Duration,
    /// Bound on one connection attempt, so an unroutable host cannot hang
    /// the start-up for the operating system's TCP timeout.
    pub connect_timeout: Duration,
    /// How long a caller waits for a free pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 10,
            max_attempts: 30,
            retry_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url scheme {scheme:?}, expected sqlite: or postgres:")]
    UnsupportedScheme { scheme: String },
    #[error("invalid database url {url}: {source}")]
    InvalidUrl {
        /// The url with any password masked.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not connect to {target} after {attempts} attempt(s): {source}")]
    Connect {
        target: String,
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
    #[error("connecting to {target} timed out after {attempts} attempt(s) of {timeout:?} each")]
    ConnectTimeout {
        target: String,
        attempts: u32,
        timeout: Duration,
    },
    #[error("migrating {target} {direction} failed: {source}")]
    Migrate {
        target: String,
        direction: &'static str,
        #[source]
        source: MigrateError,
    },
    #[error("creating database {name} on {target} failed: {source}")]
    CreateDatabase {
        name: String,
        target: String,
        #[source]
        source: sqlx::Error,
    },
}

impl Database {
    /// Opens a pool on `url`, choosing the backend by its scheme, and waits
    /// for the database with bounded retries.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Database, DbError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
        match scheme {
            "sqlite" => connect_sqlite(url, options).await.map(Database::Sqlite),
            "postgres" | "postgresql" => connect_postgres(url, options).await.map(Database::Postgres),
            other => Err(DbError::UnsupportedScheme {
                scheme: other.to_string(),
            }),
        }
    }

    /// Applies every migration of this backend not applied yet.
    pub async fn migrate_up(&self) -> Result<(), DbError> {
        let result = match self {
            Database::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
            Database::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
        };
        result.map_err(|source| DbError::Migrate {
            target: self.describe(),
            direction: "up",
            source,
        })
    }

    /// Reverts every applied migration, newest first.
    pub async fn migrate_down(&self) -> Result<(), DbError> {
        // Migrations revert while their version is above the target, so the
        // smallest version reverts them all, whatever their numbering.
        const BEFORE_EVERY_MIGRATION: i64 = i64::MIN;
        let result = match self {
            Database::Sqlite(pool) => SQLITE_MIGRATOR.undo(pool, BEFORE_EVERY_MIGRATION).await,
            Database::Postgres(pool) => POSTGRES_MIGRATOR.undo(pool, BEFORE_EVERY_MIGRATION).await,
        };
        result.map_err(|source| DbError::Migrate {
            target: self.describe(),
            direction: "down",
            source,
        })
    }

    /// An event store on this database. Its `appended` signal fires only for
    /// appends made through the returned handle, so build it once and share
    /// it.
    pub fn event_store(&self) -> Arc<dyn EventStore> {
        self.event_log().0
    }

    /// The event store and its outbox, one adapter behind both, so that
    /// outbox writes take their turn with appends (SQLite has one writer).
    pub fn event_log(&self) -> (Arc<dyn EventStore>, Arc<dyn Outbox>) {
        match self {
            Database::Sqlite(pool) => {
                let store = Arc::new(SqliteEventStore::new(pool.clone()));
                (store.clone(), store)
            }
            Database::Postgres(pool) => {
                let store = Arc::new(PostgresEventStore::new(pool.clone()));
                (store.clone(), store)
            }
        }
    }

    /// Where this database lives, for logs and errors; never includes a
    /// password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(pool) => describe_sqlite(&pool.connect_options()),
            Database::Postgres(pool) => describe_postgres(&pool.connect_options()),
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }
}

async fn connect_sqlite(url: &str, options: &ConnectOptions) -> Result<SqlitePool, DbError> {
    let connect_options = SqliteConnectOptions::from_str(url)
        .map_err(|source| DbError::InvalidUrl {
            url: redact_url(url),
            source,
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let target = describe_sqlite(&connect_options);

    let mut pool_options = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout);
    if is_in_memory(url) {
        // An in-memory database lives as long as one connection to it, and
        // shared-cache connections fail on table locks instead of waiting:
        // keep exactly one connection for the life of the pool.
        pool_options = pool_options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }

    retry_connect(&target, options, is_retriable_sqlite, || {
        pool_options.clone().connect_with(connect_options.clone())
    })
    .await
}

async fn connect_postgres(url: &str, options: &ConnectOptions) -> Result<PgPool, DbError> {
    let connect_options = parse_postgres_url(url)?;
    let target = describe_postgres(&connect_options);

    // Probe with single connections first: the pool's own connect retries
    // until its acquire timeout, which would blur the bounded schedule.
    retry_connect(&target, options, is_retriable_postgres, || async {
        PgConnection::connect_with(&connect_options).await?.close().await
    })
    .await?;

    let pool_options = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(true)
        .after_connect(|connection, _metadata| {
            Box::pin(async move {
                // Timestamps come back and are compared in UTC whatever the
                // server's default zone is.
                connection.execute("SET TIME ZONE 'UTC'").await?;
                Ok(())
            })
        });
    retry_connect(&target, options, is_retriable_postgres, || {
        pool_options.clone().connect_with(connect_options.clone())
    })
    .await
}

/// Runs `attempt` until it succeeds, fails with an error that waiting cannot
/// fix, or `max_attempts` are spent.
async fn retry_connect<T, F, Fut>(
    target: &str,
    options: &ConnectOptions,
    is_retriable: fn(&sqlx::Error) -> bool,
    mut attempt: F,
) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let max_attempts = options.max_attempts.max(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match tokio::time::timeout(options.connect_timeout, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(source)) => {
                if attempts >= max_attempts || !is_retriable(&source) {
                    return Err(DbError::Connect {
                        target: target.to_string(),
                        attempts,
                        source,
                    });
                }
                source.to_string()
            }
            Err(_elapsed) => {
                if attempts >= max_attempts {
                    return Err(DbError::ConnectTimeout {
                        target: target.to_string(),
                        attempts,
                        timeout: options.connect_timeout,
                    });
                }
                format!("timed out after {:?}", options.connect_timeout)
            }
        };
        tracing::warn!(
            target_db = %target,
            attempt = attempts,
            max_attempts,
            error = %error,
            "database not reachable yet, retrying"
        );
        tokio::time::sleep(options.retry_delay).await;
    }
}

/// Errors a database that is still starting gives; bad credentials, a
/// missing database or a malformed url will not heal by waiting.
fn is_retriable_postgres(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database_error) => {
            let code = database_error.code().unwrap_or_default();
            // 57P03 cannot_connect_now (starting up), 53300 too many
            // connections, class 08 connection exceptions.
            code == "57P03" || code == "53300" || code.starts_with("08")
        }
        _ => false,
    }
}

fn is_retriable_sqlite(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(database_error) => {
            // SQLITE_BUSY and SQLITE_LOCKED: another process holds the file.
            matches!(database_error.code().as_deref(), Some("5") | Some("6"))
        }
        _ => false,
    }
}

fn parse_postgres_url(url: &str) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(url).map_err(|source| DbError::InvalidUrl {
        url: redact_url(url),
        source,
    })
}

fn describe_postgres(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("<default database>");
    match options.get_socket() {
        Some(socket) => format!("postgres at {}/{database}", socket.display()),
        None => format!("postgres at {}:{}/{database}", options.get_host(), options.get_port()),
    }
}

fn describe_sqlite(options: &SqliteConnectOptions) -> String {
    format!("sqlite file {}", options.get_filename().display())
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// `url` with the password of its user-info, if any, masked.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map(|(user, _)| user).unwrap_or(user_info);
            if user.len() == user_info.len() {
                url.to_string()
            } else {
                format!("{scheme}://{user}:***@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// `url` pointing at database `name` on the same server, keeping user,
/// host and query parameters.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|index| index + 3).unwrap_or(0);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// The Postgres server the test suites use, from
/// `NEUROSTASH_TEST_POSTGRES_URL`; `None` when unset or empty.
pub fn test_postgres_url() -> Option<String> {
    std::env::var(TEST_POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Creates a new, empty database `ns_test_<uuid>` on the server of
/// `admin_url` and returns a pool on it with its url. Migrations are not
/// applied, so a test can also exercise them.
pub async fn fresh_postgres(admin_url: &str) -> Result<(Database, String), DbError> {
    let test_options = ConnectOptions {
        max_attempts: 3,
        retry_delay: Duration::from_millis(200),
        ..ConnectOptions::default()
    };
    let admin_options = parse_postgres_url(admin_url)?;
    let admin_target = describe_postgres(&admin_options);
    let mut admin = retry_connect(&admin_target, &test_options, is_retriable_postgres, || {
        PgConnection::connect_with(&admin_options)
    })
    .await?;

    let name = format!("ns_test_{}", Uuid::new_v4().simple());
    let created = admin.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await;
    // The database exists or not whatever happens to the admin session now.
    let _ = admin.close().await;
    created.map_err(|source| DbError::CreateDatabase {
        name: name.clone(),
        target: admin_target,
        source,
    })?;

    let url = with_database(admin_url, &name);
    let database = Database::connect(&url, &test_options).await?;
    Ok((database, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/neuro?sslmode=disable"),
            "postgres://app:***@db:5432/neuro?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://app@db/neuro"), "postgres://app@db/neuro");
        assert_eq!(redact_url("sqlite://data/neuro.db"), "sqlite://data/neuro.db");
        assert!(!redact_url("postgres://a:p@ss@host/db").contains("p@ss"));
    }

    #[test]
    fn swaps_the_database_keeping_server_and_query() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "ns_test_x"
            ),
            "postgres://postgres@127.0.0.1:5432/ns_test_x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u:p@h:1", "d"), "postgres://u:p@h:1/d");
    }

    #[tokio::test]
    async fn rejects_an_unknown_scheme() {
        let error = Database::connect("mysql://localhost/x", &ConnectOptions::default())
            .await
            .expect_err("mysql is not a backend");
        assert!(matches!(error, DbError::UnsupportedScheme { ref scheme } if scheme == "mysql"));
    }

    #[tokio::test]
    async fn gives_up_on_an_unreachable_server_naming_it_but_not_the_password() {
        // Bind then drop a listener: nothing listens on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let options = ConnectOptions {
            max_attempts: 2,
            retry_delay: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        };
        let url = format!("postgres://app:topsecret@127.0.0.1:{port}/neuro");
        let error = Database::connect(&url, &options)
            .await
            .expect_err("nothing listens there");
        let message = error.to_string();
        assert!(matches!(error, DbError::Connect { attempts: 2, .. }), "{message}");
        assert!(message.contains(&format!("127.0.0.1:{port}/neuro")), "{message}");
        assert!(!message.contains("topsecret"), "{message}");
    }

    #[tokio::test]
    async fn opens_a_sqlite_file_in_wal_mode_creating_it() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("fresh.db");
        let url = format!("sqlite://{}", path.display());
        let database = Database::connect(&url, &ConnectOptions::default())
            .await
            .expect("sqlite opens");
        assert!(path.exists());
        let Database::Sqlite(pool) = &database else {
            panic!("a sqlite url gives a sqlite database");
        };
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .expect("pragma");
        assert_eq!(journal_mode, "wal");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .expect("pragma");
        assert_eq!(foreign_keys, 1);
        assert!(database.describe().contains("fresh.db"));
    }
}
