//! The write side of NeuroStash: one ractor actor per live aggregate under a
//! supervisor, the event-store port with its SQLite and Postgres adapters,
//! and the object-store port with its local-directory adapter.

pub mod artifact;
pub mod db;
pub mod objects;
pub mod store;
