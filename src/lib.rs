//! NeuroStash: a self-hosted, multi-tenant knowledge stash built as an
//! event-sourced actor system. This crate wires the roles together: the
//! HTTP API, the document processor and the projections, over the actors and
//! stores of the `actors` crate.

pub mod api;
pub mod app;
pub mod auth;
pub mod background;
pub mod cli;
pub mod config;
pub mod event_view;
pub mod pipeline;
pub mod processor;
pub mod replay;
pub mod upload_cleaner;
pub mod webhooks;
