//! The write side of NeuroStash: one ractor actor per live aggregate under a
//! supervisor, the event-store port with its SQLite and Postgres adapters,
//! and the object-store port with its local-directory adapter.

pub mod aggregate_actor;
pub mod artifact;
pub mod crypto;
pub mod db;
pub mod keys;
pub mod objects;
pub mod store;
pub mod supervisor;
pub mod system;

pub use aggregate_actor::{ActorOptions, CommandError, CommandOutcome};
pub use supervisor::{AggregateHandle, HandleOptions};
pub use system::ActorSystem;
