//! What the benches share: the backends and a fresh
//! database per run (a SQLite file in a temp dir, or a Postgres database of
//! its own that is dropped afterwards), for every bench.

// each bench binary compiles this module and uses a part of it
#![allow(dead_code)]

use std::time::Duration;

use actors::db::{fresh_postgres, ConnectOptions, Database};
use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A database created for one run, and how to get rid of it.
pub struct RunDatabase {
    pub database: Database,
    postgres_admin: Option<(String, String)>,
    _directory: Option<tempfile::TempDir>,
}

impl RunDatabase {
    pub async fn open(backend: Backend, postgres_url: Option<&str>, pool_size: u32) -> anyhow::Result<RunDatabase> {
        let options = ConnectOptions {
            max_connections: pool_size,
            max_attempts: 3,
            retry_delay: Duration::from_millis(200),
            ..ConnectOptions::default()
        };
        let run = match backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir().context("creating a temp dir for the sqlite file")?;
                let url = format!("sqlite://{}", directory.path().join("bench.db").display());
                let database = Database::connect(&url, &options).await?;
                RunDatabase {
                    database,
                    postgres_admin: None,
                    _directory: Some(directory),
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_url.context("postgres needs a server url")?;
                let (bootstrap, url) = fresh_postgres(admin_url).await?;
                // Reopened with a pool of the run's size.
                bootstrap.close().await;
                let database = Database::connect(&url, &options).await?;
                let without_query = url.split('?').next().unwrap_or(&url);
                let name = without_query.rsplit('/').next().unwrap_or(without_query).to_string();
                RunDatabase {
                    database,
                    postgres_admin: Some((admin_url.to_string(), name)),
                    _directory: None,
                }
            }
        };
        run.database.migrate_up().await?;
        Ok(run)
    }

    /// Opens every pooled connection up front, so the first appends do not
    /// pay for connecting and skew the latency figures.
    pub async fn warm_pool(&self, pool_size: u32) -> anyhow::Result<()> {
        match &self.database {
            Database::Sqlite(pool) => {
                let mut held = Vec::new();
                for _ in 0..pool_size {
                    held.push(pool.acquire().await.context("warming the sqlite pool")?);
                }
            }
            Database::Postgres(pool) => {
                let mut held = Vec::new();
                for _ in 0..pool_size {
                    held.push(pool.acquire().await.context("warming the postgres pool")?);
                }
            }
        }
        Ok(())
    }

    pub async fn event_count(&self) -> anyhow::Result<i64> {
        let count = match &self.database {
            Database::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await,
            Database::Postgres(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await,
        };
        count.context("counting the events written")
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.database.close().await;
        if let Some((admin_url, name)) = self.postgres_admin {
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .context("connecting to drop the benchmark database")?;
            admin
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await
                .with_context(|| format!("dropping benchmark database {name}"))?;
            admin.close().await?;
        }
        Ok(())
    }
}

/// Sorted durations at `fraction` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
