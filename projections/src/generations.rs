//! Generations of a projection: the live one that readers and the live
//! runners use, and shadows rebuilt beside it by `neurostash replay`
//! (`migrations/*/0006_generations.up.sql`).
//!
//! Per projection exactly one generation is `live` (a partial unique index
//! holds that); a shadow is `building` until it is switched to, and the
//! generation it replaced becomes `retired`, kept until dropped so that a
//! switch can be rolled back. A switch is one transaction that retires the
//! live row and makes another live: readers resolving the live generation
//! see either the old one or the new one, never neither.
//!
//! Generation `default` is what existed before generations did, so an
//! installation that never replays reads and writes exactly what it did.

use std::fmt;

use actors::db::Database;
use chrono::{DateTime, Utc};

use crate::sql::{fetch_all, fetch_optional, Param, Row, Transaction};

/// The generation every projection starts with.
pub const DEFAULT_GENERATION: &str = "default";

/// A generation's name: 1 to 32 of `a-z 0-9 _`, because it becomes part of
/// table, schema and directory names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GenerationName(String);

impl GenerationName {
    pub fn parse(name: &str) -> Result<GenerationName, GenerationError> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(GenerationName(name.to_owned()))
        } else {
            Err(GenerationError::InvalidName { name: name.to_owned() })
        }
    }

    pub fn default_generation() -> GenerationName {
        GenerationName(DEFAULT_GENERATION.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_GENERATION
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GenerationName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationState {
    Building,
    Live,
    Retired,
}

impl GenerationState {
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationState::Building => "building",
            GenerationState::Live => "live",
            GenerationState::Retired => "retired",
        }
    }

    fn parse(text: &str) -> Option<GenerationState> {
        [
            GenerationState::Building,
            GenerationState::Live,
            GenerationState::Retired,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for GenerationState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRow {
    pub projection: String,
    pub name: GenerationName,
    pub state: GenerationState,
    pub created_at: DateTime<Utc>,
    pub switched_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("generation name {name:?} must be 1 to 32 of the characters a-z 0-9 _")]
    InvalidName { name: String },
    #[error("projection {projection} has no generation {generation}")]
    Unknown {
        projection: String,
        generation: GenerationName,
    },
    #[error("generation {generation} of projection {projection} is live; switch to another one before dropping it")]
    DropLive {
        projection: String,
        generation: GenerationName,
    },
    #[error("generation {generation} of projection {projection} is already live")]
    AlreadyLive {
        projection: String,
        generation: GenerationName,
    },
    #[error("projection {projection} has no retired generation to roll back to")]
    NoPrevious { projection: String },
    #[error("generations of projection {projection}: {action} failed: {source}")]
    Database {
        projection: String,
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("dropping generation {generation} of projection {projection} failed: {reason}")]
    Dropping {
        projection: String,
        generation: GenerationName,
        reason: String,
    },
    #[error(transparent)]
    Projection(#[from] crate::runtime::ProjectionError),
    #[error("generation row {generation} of projection {projection} is corrupt: {reason}")]
    Corrupt {
        projection: String,
        generation: String,
        reason: String,
    },
}

const COLUMNS: &str = "SELECT projection, name, state, created_at, switched_at, retired_at FROM projection_generations";

/// Reads and changes `projection_generations`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Generations {
    db: Database,
}

impl Generations {
    pub fn new(db: Database) -> Generations {
        Generations { db }
    }

    /// Every generation of `projection`, oldest first.
    pub async fn list(&self, projection: &str) -> Result<Vec<GenerationRow>, GenerationError> {
        let sql = format!("{COLUMNS} WHERE projection = $1 ORDER BY created_at, name");
        let rows = fetch_all(&self.db, &sql, &[Param::text(projection)])
            .await
            .map_err(failed(projection, "list"))?;
        rows.iter().map(|row| decode(projection, row)).collect()
    }

    pub async fn get(&self, projection: &str, name: &GenerationName) -> Result<Option<GenerationRow>, GenerationError> {
        let sql = format!("{COLUMNS} WHERE projection = $1 AND name = $2");
        fetch_optional(&self.db, &sql, &[Param::text(projection), Param::text(name.as_str())])
            .await
            .map_err(failed(projection, "read"))?
            .map(|row| decode(projection, &row))
            .transpose()
    }

    /// The live generation of `projection`.
    pub async fn live(&self, projection: &str) -> Result<GenerationName, GenerationError> {
        live_on(&self.db, projection)
            .await
            .map_err(failed(projection, "resolve live"))
    }

    /// Records `name` as a `building` generation of `projection` unless it
    /// exists; returns its row either way, so that a rerun finds the
    /// generation it started.
    pub async fn create(&self, projection: &str, name: &GenerationName) -> Result<GenerationRow, GenerationError> {
        crate::sql::execute(
            &self.db,
            "INSERT INTO projection_generations (projection, name, state, created_at) VALUES ($1, $2, 'building', $3) \
             ON CONFLICT (projection, name) DO NOTHING",
            &[
                Param::text(projection),
                Param::text(name.as_str()),
                Param::Time(Utc::now()),
            ],
        )
        .await
        .map_err(failed(projection, "create"))?;
        self.get(projection, name)
            .await?
            .ok_or_else(|| GenerationError::Unknown {
                projection: projection.to_owned(),
                generation: name.clone(),
            })
    }

    /// The generation a rollback returns to: the one retired last.
    pub async fn previous(&self, projection: &str) -> Result<GenerationName, GenerationError> {
        let sql =
            format!("{COLUMNS} WHERE projection = $1 AND state = 'retired' ORDER BY retired_at DESC, name LIMIT 1");
        let row = fetch_optional(&self.db, &sql, &[Param::text(projection)])
            .await
            .map_err(failed(projection, "find the previous generation"))?;
        match row {
            Some(row) => Ok(decode(projection, &row)?.name),
            None => Err(GenerationError::NoPrevious {
                projection: projection.to_owned(),
            }),
        }
    }

    /// Forgets generation `name`, refusing the live one; the caller drops
    /// its tables or directory.
    pub async fn forget(&self, projection: &str, name: &GenerationName) -> Result<(), GenerationError> {
        let row = self
            .get(projection, name)
            .await?
            .ok_or_else(|| GenerationError::Unknown {
                projection: projection.to_owned(),
                generation: name.clone(),
            })?;
        if row.state == GenerationState::Live {
            return Err(GenerationError::DropLive {
                projection: projection.to_owned(),
                generation: name.clone(),
            });
        }
        // the state is checked again by the delete itself: a switch to it
        // between the read and here leaves it in place
        let deleted = crate::sql::execute(
            &self.db,
            "DELETE FROM projection_generations WHERE projection = $1 AND name = $2 AND state <> 'live'",
            &[Param::text(projection), Param::text(name.as_str())],
        )
        .await
        .map_err(failed(projection, "drop"))?;
        if deleted == 0 {
            return Err(GenerationError::DropLive {
                projection: projection.to_owned(),
                generation: name.clone(),
            });
        }
        Ok(())
    }

    /// Switches `projection` to generation `to` on its own, for projections
    /// whose effects are not in the database (the vector index).
    pub async fn switch(&self, projection: &str, to: &GenerationName) -> Result<GenerationName, GenerationError> {
        let mut transaction = Transaction::begin(&self.db, &format!("{projection}:generations"))
            .await
            .map_err(failed(projection, "begin the switch"))?;
        let from = switch_in(&mut transaction, projection, to).await?;
        transaction
            .commit()
            .await
            .map_err(failed(projection, "commit the switch"))?;
        Ok(from)
    }
}

/// The live generation of `projection`; `default` where no row says
/// otherwise (a database migrated before any projection was registered).
pub(crate) async fn live_on(db: &Database, projection: &str) -> Result<GenerationName, sqlx::Error> {
    let row = fetch_optional(
        db,
        "SELECT name FROM projection_generations WHERE projection = $1 AND state = 'live'",
        &[Param::text(projection)],
    )
    .await?;
    Ok(live_name(row))
}

/// [`live_on`] inside a transaction.
pub(crate) async fn live_in(transaction: &mut Transaction, projection: &str) -> Result<GenerationName, sqlx::Error> {
    let row = transaction
        .fetch_optional(
            "SELECT name FROM projection_generations WHERE projection = $1 AND state = 'live'",
            &[Param::text(projection)],
        )
        .await?;
    Ok(live_name(row))
}

/// The state of generation `name` inside a transaction; `None` when it has
/// no row.
pub(crate) async fn state_in(
    transaction: &mut Transaction,
    projection: &str,
    name: &GenerationName,
) -> Result<Option<GenerationState>, sqlx::Error> {
    let row = transaction
        .fetch_optional(
            "SELECT state FROM projection_generations WHERE projection = $1 AND name = $2",
            &[Param::text(projection), Param::text(name.as_str())],
        )
        .await?;
    Ok(row
        .and_then(|row| row.text("state").ok().flatten())
        .and_then(|state| GenerationState::parse(&state)))
}

fn live_name(row: Option<Row>) -> GenerationName {
    row.and_then(|row| row.text("name").ok().flatten())
        .and_then(|name| GenerationName::parse(&name).ok())
        .unwrap_or_else(GenerationName::default_generation)
}

/// Retires the live generation of `projection` and makes `to` live, in the
/// caller's transaction; returns the generation it replaced.
pub(crate) async fn switch_in(
    transaction: &mut Transaction,
    projection: &str,
    to: &GenerationName,
) -> Result<GenerationName, GenerationError> {
    let from = live_in(transaction, projection)
        .await
        .map_err(failed(projection, "resolve live"))?;
    if &from == to {
        return Err(GenerationError::AlreadyLive {
            projection: projection.to_owned(),
            generation: to.clone(),
        });
    }
    let now = Utc::now();
    // retired first: the partial unique index allows one live row at a time
    transaction
        .execute(
            "UPDATE projection_generations SET state = 'retired', retired_at = $3 \
             WHERE projection = $1 AND name = $2",
            &[Param::text(projection), Param::text(from.as_str()), Param::Time(now)],
        )
        .await
        .map_err(failed(projection, "retire the live generation"))?;
    let made_live = transaction
        .execute(
            "UPDATE projection_generations SET state = 'live', switched_at = $3, retired_at = NULL \
             WHERE projection = $1 AND name = $2",
            &[Param::text(projection), Param::text(to.as_str()), Param::Time(now)],
        )
        .await
        .map_err(failed(projection, "make the generation live"))?;
    if made_live == 0 {
        return Err(GenerationError::Unknown {
            projection: projection.to_owned(),
            generation: to.clone(),
        });
    }
    Ok(from)
}

fn decode(projection: &str, row: &Row) -> Result<GenerationRow, GenerationError> {
    let corrupt = |generation: &str, reason: String| GenerationError::Corrupt {
        projection: projection.to_owned(),
        generation: generation.to_owned(),
        reason,
    };
    let name = row.text("name").ok().flatten().unwrap_or_default();
    let state_text = row.text("state").map_err(|reason| corrupt(&name, reason))?;
    let state = state_text
        .as_deref()
        .and_then(GenerationState::parse)
        .ok_or_else(|| corrupt(&name, format!("state {state_text:?} is not a generation state")))?;
    let created_at = row
        .time("created_at")
        .map_err(|reason| corrupt(&name, reason))?
        .ok_or_else(|| corrupt(&name, "created_at is null".to_owned()))?;
    Ok(GenerationRow {
        projection: projection.to_owned(),
        state,
        created_at,
        switched_at: row.time("switched_at").map_err(|reason| corrupt(&name, reason))?,
        retired_at: row.time("retired_at").map_err(|reason| corrupt(&name, reason))?,
        name: GenerationName::parse(&name).map_err(|error| corrupt(&name, error.to_string()))?,
    })
}

fn failed(projection: &str, action: &str) -> impl FnOnce(sqlx::Error) -> GenerationError {
    let (projection, action) = (projection.to_owned(), action.to_owned());
    move |source| GenerationError::Database {
        projection,
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_tables_and_directories_can_hold() {
        for good in ["default", "g2", "model_v2", "a"] {
            assert_eq!(GenerationName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "G2", "gen-1", "a.b", "../x", &"x".repeat(33)] {
            assert!(GenerationName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(GenerationName::default_generation().is_default());
    }
}
