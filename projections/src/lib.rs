//! The read side of NeuroStash: a consumer runtime that feeds the global log
//! to projections from their checkpoints, the registry tables, and one vector
//! index per knowledge base.

pub mod consumed;
pub mod registry;
pub mod runtime;
pub mod vector;
