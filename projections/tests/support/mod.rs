//! What the projection tests share: the two backends, a macro running a
//! scenario on both, and a fresh migrated database for each run.

use actors::db::{ConnectOptions, Database};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `<scenario>::sqlite` and `<scenario>::postgres` for each
/// `async fn <scenario>(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn sqlite() {
                    super::$scenario(super::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$scenario(super::Backend::Postgres).await;
                }
            }
        )+
    };
}

/// A migrated, empty database: a SQLite file in a temp dir (kept alive by
/// the returned guard) or a fresh database on the test Postgres server.
pub async fn open_database(backend: Backend) -> (Database, Option<tempfile::TempDir>) {
    let (db, directory) = match backend {
        Backend::Sqlite => {
            let directory = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", directory.path().join("t.db").display());
            let db = Database::connect(&url, &ConnectOptions::default())
                .await
                .expect("sqlite opens");
            (db, Some(directory))
        }
        Backend::Postgres => {
            let admin_url = actors::db::test_postgres_url()
                .expect("NEUROSTASH_TEST_POSTGRES_URL must point at a postgres server (scripts/test.sh starts one)");
            let (db, _url) = actors::db::fresh_postgres(&admin_url)
                .await
                .expect("fresh postgres database");
            (db, None)
        }
    };
    db.migrate_up().await.expect("migrations apply");
    (db, directory)
}
