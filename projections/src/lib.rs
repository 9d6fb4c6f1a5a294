//! The read side of NeuroStash: a consumer runtime that feeds the global log
//! to projections from their checkpoints, the registry tables, one vector
//! index per knowledge base, and the tamper-evident audit log.

pub mod audit;
pub mod consumed;
pub mod erasure;
pub mod generations;
pub mod registry;
pub mod runtime;
mod sql;
pub mod vector;
pub mod webhooks;
