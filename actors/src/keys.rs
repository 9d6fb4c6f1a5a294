//! The key vault: each tenant's data keys, wrapped by the master key, in the
//! `encryption_keys` table of the event store's database. Keys are made on
//! first use, rotated on demand (the old ones keep decrypting) and destroyed
//! when the tenant is erased. Unwrapped keys are cached for a short while;
//! the active key is looked up afresh for every encryption, so a rotation on
//! any node is used by every node at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use domain::{Sealed, TenantId};
use sqlx::Row;
use uuid::Uuid;

use crate::crypto::{open_field, seal_field, CryptoError, DataKey, KeyId, MasterKey};
use crate::db::Database;

/// How long an unwrapped key stays in memory after its last lookup.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Attempts at making or rotating a key when another node does the same.
const RACE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key vault database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Destroyed by an erasure, or never made: either way nothing sealed
    /// under it can be read.
    #[error("data key {key_id} of tenant {tenant_id} does not exist: the tenant was erased or the data is not its")]
    Missing { tenant_id: TenantId, key_id: String },
    #[error("tenant {tenant_id} has no data key: it was erased or has never stored anything")]
    NoKeys { tenant_id: TenantId },
    /// Its keys were destroyed; none is made again, so nothing written for
    /// it after the erasure could be read.
    #[error("tenant {tenant_id} was erased: nothing can be encrypted or read for it")]
    Erased { tenant_id: TenantId },
    #[error("could not make a data key for tenant {tenant_id}: other nodes kept racing for it")]
    Contended { tenant_id: TenantId },
}

/// What may be shown of a data key: never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub created_at: DateTime<Utc>,
    pub expired_at: Option<DateTime<Utc>>,
}

struct Cached {
    key: Arc<DataKey>,
    last_used: Instant,
}

pub struct KeyVault {
    db: Database,
    master: MasterKey,
    cache: Mutex<HashMap<KeyId, Cached>>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

struct KeyRow {
    key_id: String,
    tenant_id: TenantId,
    wrapped_key: Vec<u8>,
    master_key_id: String,
    created_at: DateTime<Utc>,
    expired_at: Option<DateTime<Utc>>,
}

fn sqlite_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_sqlite_time(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn parse_tenant(text: &str) -> Result<TenantId, sqlx::Error> {
    Uuid::parse_str(text)
        .map(TenantId)
        .map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl KeyVault {
    pub fn new(db: Database, master: MasterKey) -> KeyVault {
        KeyVault {
            db,
            master,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn master_key_id(&self) -> &str {
        self.master.id()
    }

    /// Fails when stored keys were wrapped by another master key: a
    /// misconfiguration is reported at start, not as unreadable documents.
    pub async fn check_master_key(&self) -> Result<(), KeyError> {
        let other: Option<String> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT master_key_id FROM encryption_keys WHERE master_key_id <> ? LIMIT 1")
                    .bind(self.master.id())
                    .fetch_optional(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT master_key_id FROM encryption_keys WHERE master_key_id <> $1 LIMIT 1")
                    .bind(self.master.id())
                    .fetch_optional(pool)
                    .await?
            }
        };
        match other {
            None => Ok(()),
            Some(wrapped_by) => Err(KeyError::Crypto(CryptoError::WrongMasterKey {
                key_id: "(stored keys)".into(),
                wrapped_by,
                configured: self.master.id().to_owned(),
            })),
        }
    }

    async fn active_row(&self, tenant_id: TenantId) -> Result<Option<KeyRow>, KeyError> {
        self.select_rows(tenant_id, true, None)
            .await
            .map(|rows| rows.into_iter().next())
    }

    async fn select_rows(
        &self,
        tenant_id: TenantId,
        active_only: bool,
        key_id: Option<&KeyId>,
    ) -> Result<Vec<KeyRow>, KeyError> {
        let mut filter = String::from("user_id = $1");
        if active_only {
            filter.push_str(" AND expired_at IS NULL");
        }
        if key_id.is_some() {
            filter.push_str(" AND id = $2");
        }
        let columns = "id, user_id, wrapped_key, master_key_id, created_at, expired_at";
        let sql = format!("SELECT {columns} FROM encryption_keys WHERE {filter} ORDER BY created_at, id");
        let rows = match &self.db {
            Database::Sqlite(pool) => {
                let mut query = sqlx::query(&sql).bind(tenant_id.0.to_string());
                if let Some(key_id) = key_id {
                    query = query.bind(key_id.as_str());
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(KeyRow {
                            key_id: row.try_get("id")?,
                            tenant_id: parse_tenant(row.try_get("user_id")?)?,
                            wrapped_key: row.try_get("wrapped_key")?,
                            master_key_id: row.try_get("master_key_id")?,
                            created_at: parse_sqlite_time(row.try_get("created_at")?)?,
                            expired_at: row
                                .try_get::<Option<&str>, _>("expired_at")?
                                .map(parse_sqlite_time)
                                .transpose()?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
            Database::Postgres(pool) => {
                let mut query = sqlx::query(&sql).bind(tenant_id.0);
                if let Some(key_id) = key_id {
                    query = query.bind(key_id.as_str());
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(KeyRow {
                            key_id: row.try_get("id")?,
                            tenant_id: TenantId(row.try_get("user_id")?),
                            wrapped_key: row.try_get("wrapped_key")?,
                            master_key_id: row.try_get("master_key_id")?,
                            created_at: row.try_get("created_at")?,
                            expired_at: row.try_get("expired_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
        };
        Ok(rows)
    }

    fn unwrap_row(&self, row: KeyRow) -> Result<Arc<DataKey>, KeyError> {
        let key_id = KeyId::parse(&row.key_id).ok_or_else(|| CryptoError::Malformed {
            what: "stored data key id".into(),
            reason: format!("{:?} is not 16 hex characters", row.key_id),
        })?;
        let key = Arc::new(
            self.master
                .unwrap(key_id.clone(), row.tenant_id, &row.master_key_id, &row.wrapped_key)?,
        );
        let mut cache = self.cache.lock().expect("key cache lock");
        cache.retain(|_, cached| cached.last_used.elapsed() < CACHE_TTL);
        cache.insert(
            key_id,
            Cached {
                key: key.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(key)
    }

    async fn insert_key(&self, key: &DataKey, expire_current: bool) -> Result<bool, KeyError> {
        let wrapped = self.master.wrap(key);
        let now = Utc::now();
        let result = match &self.db {
            Database::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                if expire_current {
                    sqlx::query("UPDATE encryption_keys SET expired_at = ? WHERE user_id = ? AND expired_at IS NULL")
                        .bind(sqlite_time(now))
                        .bind(key.tenant_id().0.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                let inserted = sqlx::query(
                    "INSERT INTO encryption_keys (id, user_id, wrapped_key, master_key_id, created_at) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(key.id().as_str())
                .bind(key.tenant_id().0.to_string())
                .bind(&wrapped)
                .bind(self.master.id())
                .bind(sqlite_time(now))
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => tx.commit().await.map(|()| true),
                    Err(error) if is_unique_violation(&error) => Ok(false),
                    Err(error) => Err(error),
                }
            }
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                if expire_current {
                    sqlx::query("UPDATE encryption_keys SET expired_at = $1 WHERE user_id = $2 AND expired_at IS NULL")
                        .bind(now)
                        .bind(key.tenant_id().0)
                        .execute(&mut *tx)
                        .await?;
                }
                let inserted = sqlx::query(
                    "INSERT INTO encryption_keys (id, user_id, wrapped_key, master_key_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(key.id().as_str())
                .bind(key.tenant_id().0)
                .bind(&wrapped)
                .bind(self.master.id())
                .bind(now)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => tx.commit().await.map(|()| true),
                    Err(error) if is_unique_violation(&error) => Ok(false),
                    Err(error) => Err(error),
                }
            }
        };
        Ok(result?)
    }

    /// The key new data of the tenant is encrypted under, made on first use.
    pub async fn active_key(&self, tenant_id: TenantId) -> Result<Arc<DataKey>, KeyError> {
        for _ in 0..RACE_ATTEMPTS {
            if let Some(row) = self.active_row(tenant_id).await? {
                if let Some(key) = self.cached(&row.key_id) {
                    return Ok(key);
                }
                return self.unwrap_row(row);
            }
            if self.is_erased(tenant_id).await? {
                return Err(KeyError::Erased { tenant_id });
            }
            let key = DataKey::generate(tenant_id);
            // another node making the first key at the same moment wins the
            // unique index; its key is read on the next turn
            if self.insert_key(&key, false).await? {
                tracing::info!(%tenant_id, key_id = %key.id(), "made the first data key of a tenant");
                let key = Arc::new(key);
                self.remember(key.clone());
                return Ok(key);
            }
        }
        Err(KeyError::Contended { tenant_id })
    }

    pub async fn is_erased(&self, tenant_id: TenantId) -> Result<bool, KeyError> {
        let found: Option<i64> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT 1 FROM erased_tenants WHERE user_id = ?")
                    .bind(tenant_id.0.to_string())
                    .fetch_optional(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT 1::BIGINT FROM erased_tenants WHERE user_id = $1")
                    .bind(tenant_id.0)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(found.is_some())
    }

    /// The tenant's key of that id, for reading data sealed under it.
    pub async fn key(&self, tenant_id: TenantId, key_id: &str) -> Result<Arc<DataKey>, KeyError> {
        if let Some(key) = self.cached(key_id).filter(|key| key.tenant_id() == tenant_id) {
            return Ok(key);
        }
        let missing = || KeyError::Missing {
            tenant_id,
            key_id: key_id.to_owned(),
        };
        let parsed = KeyId::parse(key_id).ok_or_else(missing)?;
        let row = self
            .select_rows(tenant_id, false, Some(&parsed))
            .await?
            .into_iter()
            .next()
            .ok_or_else(missing)?;
        self.unwrap_row(row)
    }

    fn cached(&self, key_id: &str) -> Option<Arc<DataKey>> {
        let mut cache = self.cache.lock().expect("key cache lock");
        let parsed = KeyId::parse(key_id)?;
        let cached = cache.get_mut(&parsed)?;
        if cached.last_used.elapsed() >= CACHE_TTL {
            cache.remove(&parsed);
            return None;
        }
        cached.last_used = Instant::now();
        Some(cached.key.clone())
    }

    fn remember(&self, key: Arc<DataKey>) {
        let mut cache = self.cache.lock().expect("key cache lock");
        cache.insert(
            key.id().clone(),
            Cached {
                key,
                last_used: Instant::now(),
            },
        );
    }

    /// Makes a new active key for the tenant; the previous one is kept,
    /// expired, to decrypt what was written under it.
    pub async fn rotate(&self, tenant_id: TenantId) -> Result<KeyId, KeyError> {
        for _ in 0..RACE_ATTEMPTS {
            let key = DataKey::generate(tenant_id);
            if self.insert_key(&key, true).await? {
                tracing::info!(%tenant_id, key_id = %key.id(), "rotated the data key of a tenant");
                let id = key.id().clone();
                self.remember(Arc::new(key));
                return Ok(id);
            }
        }
        Err(KeyError::Contended { tenant_id })
    }

    /// Every tenant holding a key, for rotating them all.
    pub async fn tenants(&self) -> Result<Vec<TenantId>, KeyError> {
        let sql = "SELECT DISTINCT user_id FROM encryption_keys ORDER BY user_id";
        Ok(match &self.db {
            Database::Sqlite(pool) => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|text| parse_tenant(text))
                .collect::<Result<_, _>>()?,
            Database::Postgres(pool) => sqlx::query_scalar::<_, Uuid>(sql)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(TenantId)
                .collect(),
        })
    }

    pub async fn list(&self, tenant_id: TenantId) -> Result<Vec<KeyInfo>, KeyError> {
        let rows = self.select_rows(tenant_id, false, None).await?;
        rows.into_iter()
            .map(|row| {
                Ok(KeyInfo {
                    key_id: KeyId::parse(&row.key_id).ok_or_else(|| KeyError::Missing {
                        tenant_id,
                        key_id: row.key_id.clone(),
                    })?,
                    tenant_id: row.tenant_id,
                    created_at: row.created_at,
                    expired_at: row.expired_at,
                })
            })
            .collect()
    }

    /// Crypto-shredding: the tenant's wrapped keys are overwritten, then
    /// deleted, the tenant is marked erased (no key is made for it again),
    /// and its keys are dropped from this node's cache. Returns how many keys
    /// were destroyed (0 when they already were).
    pub async fn destroy(&self, tenant_id: TenantId) -> Result<u64, KeyError> {
        // overwriting first means the page that held the wrapped key is
        // rewritten in place, rather than only unlinked from the b-tree
        let destroyed = match &self.db {
            Database::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("UPDATE encryption_keys SET wrapped_key = zeroblob(length(wrapped_key)) WHERE user_id = ?")
                    .bind(tenant_id.0.to_string())
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query("DELETE FROM encryption_keys WHERE user_id = ?")
                    .bind(tenant_id.0.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("INSERT INTO erased_tenants (user_id, erased_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
                    .bind(tenant_id.0.to_string())
                    .bind(sqlite_time(Utc::now()))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                deleted
            }
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "UPDATE encryption_keys SET wrapped_key = decode(repeat('00', length(wrapped_key)), 'hex') \
                     WHERE user_id = $1",
                )
                .bind(tenant_id.0)
                .execute(&mut *tx)
                .await?;
                let deleted = sqlx::query("DELETE FROM encryption_keys WHERE user_id = $1")
                    .bind(tenant_id.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("INSERT INTO erased_tenants (user_id, erased_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(tenant_id.0)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                deleted
            }
        };
        self.forget(tenant_id);
        Ok(destroyed)
    }

    /// Drops the tenant's keys from this node's cache (another node erased it).
    pub fn forget(&self, tenant_id: TenantId) {
        self.cache
            .lock()
            .expect("key cache lock")
            .retain(|_, cached| cached.key.tenant_id() != tenant_id);
    }

    /// Seals a field under the tenant's active key.
    pub async fn seal(&self, tenant_id: TenantId, field: &str, plaintext: &str) -> Result<Sealed, KeyError> {
        let key = self.active_key(tenant_id).await?;
        Ok(seal_field(&key, field, plaintext))
    }

    /// Opens a field sealed under any of the tenant's keys.
    pub async fn open(&self, tenant_id: TenantId, field: &str, sealed: &Sealed) -> Result<String, KeyError> {
        let key = self.key(tenant_id, sealed.key_id()).await?;
        Ok(open_field(&key, field, sealed)?)
    }
}
