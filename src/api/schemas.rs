//! The JSON Schemas of the events NeuroStash publishes, for consumers of
//! the Kafka topics (the same files are kept under `schemas/events/`).

use std::sync::OnceLock;

use poem_openapi::payload::Json;
use poem_openapi::{OpenApi, Tags};

use super::ApiKeyAuth;

#[derive(Tags)]
enum Tag {
    Schemas,
}

pub struct SchemasApi;

#[OpenApi(prefix_path = "/v1")]
impl SchemasApi {
    /// The CloudEvents envelope schema (`cloudevent`) and the schema of every
    /// event type, keyed by the `dataschema` its messages carry (`events`).
    #[oai(path = "/schemas/events", method = "get", tag = "Tag::Schemas")]
    async fn event_schemas(&self, _auth: ApiKeyAuth) -> Json<serde_json::Value> {
        // generated from the types, so the same for the life of the process
        static CATALOGUE: OnceLock<serde_json::Value> = OnceLock::new();
        Json(CATALOGUE.get_or_init(bus::schemas::catalogue).clone())
    }
}
