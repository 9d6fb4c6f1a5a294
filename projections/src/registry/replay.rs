//! Switching the registry between generations and dropping one.

use actors::db::Database;
use actors::store::EventStore;
use domain::LogPosition;

use super::apply::{self, Delivery};
use super::generation::{Tables, Writer};
use super::{database_error, Registry, RegistryProjection, REGISTRY_PROJECTION};
use crate::generations::{GenerationError, GenerationName, GenerationState, Generations};
use crate::runtime::{catch_up_to_head, ProjectionError};
use crate::sql::{load_checkpoint_in, Transaction};

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    pub from: GenerationName,
    pub to: GenerationName,
    /// The checkpoint `to` went live at: the log's head at the switch.
    pub position: LogPosition,
}

/// Makes generation `to` the live registry, caught up with the log.
///
/// It is caught up to the head first without any lock; then, in one
/// transaction holding the lock the live runners take (so none of them
/// writes meanwhile) and `to`'s own, the events appended since are applied
/// to `to` and the pointer is flipped. A live runner that was writing the
/// old generation finds the new one live inside its next transaction and
/// resumes from the new checkpoint, which is at least where it was.
/// Rolling back is switching to the retired generation: it is caught up the
/// same way, so it misses nothing written while it was not live.
pub async fn switch_generation(
    db: &Database,
    store: &dyn EventStore,
    to: &GenerationName,
    batch_size: usize,
) -> Result<Switched, GenerationError> {
    let generations = Generations::new(db.clone());
    let row = generations
        .get(REGISTRY_PROJECTION, to)
        .await?
        .ok_or_else(|| GenerationError::Unknown {
            projection: REGISTRY_PROJECTION.to_owned(),
            generation: to.clone(),
        })?;
    if row.state == GenerationState::Live {
        return Err(GenerationError::AlreadyLive {
            projection: REGISTRY_PROJECTION.to_owned(),
            generation: to.clone(),
        });
    }
    let shadow = RegistryProjection::for_generation(db.clone(), to.clone());
    catch_up_to_head(store, &shadow, batch_size).await?;

    let tables = Tables::new(db, to);
    let mut transaction = Transaction::begin(db, REGISTRY_PROJECTION)
        .await
        .map_err(database_error)?;
    transaction
        .lock(&tables.projection_key())
        .await
        .map_err(database_error)?;
    let mut writer = Writer {
        transaction,
        tables: tables.clone(),
    };
    let mut position = load_checkpoint_in(&mut writer.transaction, &tables.projection_key())
        .await
        .map_err(database_error)?;
    loop {
        let batch = store
            .read_log(position, batch_size.max(1))
            .await
            .map_err(|source| ProjectionError::Store {
                projection: tables.projection_key(),
                source,
            })?;
        let Some(last) = batch.last().map(|event| event.log_position) else {
            break;
        };
        apply::apply_in(&mut writer, db, &batch, Delivery::Log).await?;
        position = last;
    }
    let from = crate::generations::switch_in(&mut writer.transaction, REGISTRY_PROJECTION, to).await?;
    writer.transaction.commit().await.map_err(database_error)?;
    Ok(Switched {
        from,
        to: to.clone(),
        position,
    })
}

/// Drops generation `name` of the registry: its tables (for `default`, the
/// migration's tables are emptied instead, since the migrations own them)
/// and its bookkeeping. The live generation is refused.
pub async fn drop_generation(db: &Database, name: &GenerationName) -> Result<(), GenerationError> {
    let generations = Generations::new(db.clone());
    let row = generations
        .get(REGISTRY_PROJECTION, name)
        .await?
        .ok_or_else(|| GenerationError::Unknown {
            projection: REGISTRY_PROJECTION.to_owned(),
            generation: name.clone(),
        })?;
    if row.state == GenerationState::Live {
        return Err(GenerationError::DropLive {
            projection: REGISTRY_PROJECTION.to_owned(),
            generation: name.clone(),
        });
    }
    // the row goes first: its delete refuses a generation made live since
    // the check above, and a generation without a row is never written
    generations.forget(REGISTRY_PROJECTION, name).await?;
    let dropped = if name.is_default() {
        Registry::at_generation(db.clone(), name.clone())
            .reset()
            .await
            .map_err(|error| error.to_string())
    } else {
        Tables::new(db, name)
            .drop_all(db)
            .await
            .map_err(|error| error.to_string())
    };
    dropped.map_err(|reason| GenerationError::Dropping {
        projection: REGISTRY_PROJECTION.to_owned(),
        generation: name.clone(),
        reason,
    })
}
