//! The JSON Schemas of the events on the topics, generated from the event
//! types themselves (schemars), one schema per event type and schema
//! version, plus the CloudEvents envelope. They are served by the API and
//! kept under `schemas/` in the repository, so that a consumer with no
//! NeuroStash code can validate every message it reads: the `dataschema`
//! attribute of a message names the schema its `data` follows.

use std::collections::BTreeMap;
use std::path::Path;

use domain::document::{Document, DocumentEvent};
use domain::knowledge_base::{KnowledgeBase, KnowledgeBaseEvent};
use domain::tenant::{Tenant, TenantEvent};
use domain::{Aggregate, SCHEMA_VERSION};
use serde_json::{Map, Value};

use crate::cloudevent::CloudEvent;

/// File of the envelope schema in the schema folder.
pub const ENVELOPE_FILE: &str = "cloudevent.json";

/// The schema of one event type at one schema version.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    pub category: &'static str,
    pub event_type: String,
    pub schema_version: u16,
    pub schema: Value,
}

impl EventSchema {
    pub fn dataschema(&self) -> String {
        dataschema_uri(self.category, &self.event_type, self.schema_version)
    }

    pub fn file_name(&self) -> String {
        format!("{}.{}.v{}.json", self.category, self.event_type, self.schema_version)
    }
}

/// The `dataschema` of an event: a URN rather than a URL, because a
/// self-hosted installation has no public address to promise.
pub fn dataschema_uri(category: &str, event_type: &str, schema_version: u16) -> String {
    format!("urn:neurostash:schema:{category}.{event_type}:v{schema_version}")
}

/// Every event type of every aggregate, at the current schema version.
pub fn event_schemas() -> Vec<EventSchema> {
    let mut schemas = Vec::new();
    for (category, enum_schema) in [
        (Tenant::CATEGORY, schemars::schema_for!(TenantEvent)),
        (Document::CATEGORY, schemars::schema_for!(DocumentEvent)),
        (KnowledgeBase::CATEGORY, schemars::schema_for!(KnowledgeBaseEvent)),
    ] {
        schemas.extend(split_variants(category, enum_schema.as_value()));
    }
    schemas
}

/// The schema of the CloudEvents envelope as NeuroStash writes it.
pub fn envelope_schema() -> Value {
    let mut schema = schemars::schema_for!(CloudEvent).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".into(),
            Value::String("urn:neurostash:schema:cloudevent:v1".into()),
        );
    }
    schema
}

/// What `GET /v1/schemas/events` answers: the envelope and every event
/// schema keyed by its `dataschema`.
pub fn catalogue() -> Value {
    let events: Map<String, Value> = event_schemas()
        .into_iter()
        .map(|schema| (schema.dataschema(), schema.schema))
        .collect();
    serde_json::json!({ "cloudevent": envelope_schema(), "events": events })
}

/// The files of the schema folder, by name, as they should be.
pub fn schema_files() -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = event_schemas()
        .into_iter()
        .map(|schema| (schema.file_name(), pretty(&schema.schema)))
        .collect();
    files.insert(ENVELOPE_FILE.to_string(), pretty(&envelope_schema()));
    files
}

/// Writes the schema folder afresh: every current file, nothing else.
pub fn write_schema_files(folder: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let wanted = schema_files();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !wanted.contains_key(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    for (name, contents) in wanted {
        std::fs::write(folder.join(name), contents)?;
    }
    Ok(())
}

/// What differs between the folder and the current schemas: files missing,
/// stale or left over; empty when the folder is current.
pub fn stale_schema_files(folder: &Path) -> std::io::Result<Vec<String>> {
    let wanted = schema_files();
    let mut problems = Vec::new();
    for (name, contents) in &wanted {
        match std::fs::read_to_string(folder.join(name)) {
            Ok(found) if &found == contents => {}
            Ok(_) => problems.push(format!("{name} is stale")),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => problems.push(format!("{name} is missing")),
            Err(error) => return Err(error),
        }
    }
    if folder.is_dir() {
        for entry in std::fs::read_dir(folder)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !wanted.contains_key(&name) {
                problems.push(format!("{name} names no current event type"));
            }
        }
    }
    problems.sort();
    Ok(problems)
}

fn pretty(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// An event enum is adjacently tagged (`{"type": …, "data": …}`), so its
/// schema is a `oneOf` of one object per variant; each variant's `data`
/// becomes a schema of its own, carrying the definitions it may refer to.
fn split_variants(category: &'static str, enum_schema: &Value) -> Vec<EventSchema> {
    let definitions = enum_schema.get("$defs").cloned();
    let dialect = enum_schema.get("$schema").cloned();
    let variants = enum_schema
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    variants
        .iter()
        .filter_map(|variant| {
            let properties = variant.get("properties")?;
            let tag = properties.get("type")?;
            let event_type = tag
                .get("const")
                .and_then(Value::as_str)
                .or_else(|| tag.get("enum")?.as_array()?.first()?.as_str())?
                .to_string();
            let data = properties.get("data").cloned().unwrap_or(Value::Object(Map::new()));
            let mut schema = Map::new();
            if let Some(dialect) = &dialect {
                schema.insert("$schema".into(), dialect.clone());
            }
            schema.insert(
                "$id".into(),
                Value::String(dataschema_uri(category, &event_type, SCHEMA_VERSION)),
            );
            schema.insert("title".into(), Value::String(format!("{category}.{event_type}")));
            if let Some(description) = variant.get("description") {
                schema.insert("description".into(), description.clone());
            }
            if let Value::Object(fields) = data {
                for (key, value) in fields {
                    schema.entry(key).or_insert(value);
                }
            }
            if let Some(definitions) = &definitions {
                schema.insert("$defs".into(), definitions.clone());
            }
            Some(EventSchema {
                category,
                event_type,
                schema_version: SCHEMA_VERSION,
                schema: Value::Object(schema),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::AnyEvent;

    fn repository_folder() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/events")
    }

    #[test]
    fn every_event_type_has_a_schema_with_its_fields() {
        let schemas = event_schemas();
        let names: Vec<String> = schemas.iter().map(EventSchema::file_name).collect();
        for expected in [
            "tenant.TenantRegistered.v1.json",
            "tenant.ApiKeyIssued.v1.json",
            "document.DocumentRegistered.v1.json",
            "document.DocumentProcessed.v1.json",
            "knowledge_base.KnowledgeBaseCreated.v1.json",
        ] {
            assert!(
                names.iter().any(|name| name == expected),
                "{expected} missing from {names:?}"
            );
        }
        let registered = schemas
            .iter()
            .find(|schema| schema.event_type == "DocumentRegistered")
            .expect("DocumentRegistered");
        let properties = registered.schema["properties"].as_object().expect("properties");
        for field in ["document_id", "tenant_id", "file_name", "sha256", "object_key"] {
            assert!(properties.contains_key(field), "{field} in {properties:?}");
        }
        assert_eq!(
            registered.dataschema(),
            "urn:neurostash:schema:document.DocumentRegistered:v1"
        );
    }

    #[test]
    fn no_two_event_types_share_a_file_or_a_uri() {
        let schemas = event_schemas();
        let files: std::collections::BTreeSet<String> = schemas.iter().map(EventSchema::file_name).collect();
        let uris: std::collections::BTreeSet<String> = schemas.iter().map(EventSchema::dataschema).collect();
        assert_eq!(files.len(), schemas.len());
        assert_eq!(uris.len(), schemas.len());
    }

    /// The files under `schemas/events/` are what consumers without our code
    /// validate against: they must be exactly what the types generate.
    /// `NEUROSTASH_WRITE_SCHEMAS=1 cargo test -p bus schemas` rewrites them.
    #[test]
    fn schema_files_in_the_repository_are_current() {
        let folder = repository_folder();
        if std::env::var_os("NEUROSTASH_WRITE_SCHEMAS").is_some() {
            write_schema_files(&folder).expect("write the schema files");
        }
        let stale = stale_schema_files(&folder).expect("read the schema folder");
        assert!(
            stale.is_empty(),
            "schemas/events is out of date ({}); run `NEUROSTASH_WRITE_SCHEMAS=1 cargo test -p bus schemas` and commit",
            stale.join(", ")
        );
    }

    #[test]
    fn a_changed_or_extra_file_is_reported() {
        let folder = tempfile::tempdir().expect("temp dir");
        write_schema_files(folder.path()).expect("write");
        assert!(stale_schema_files(folder.path()).expect("check").is_empty());
        std::fs::write(folder.path().join(ENVELOPE_FILE), "{}").expect("tamper");
        std::fs::write(folder.path().join("tenant.Gone.v1.json"), "{}").expect("extra");
        std::fs::remove_file(folder.path().join("document.DocumentRegistered.v1.json")).expect("remove");
        assert_eq!(
            stale_schema_files(folder.path()).expect("check"),
            vec![
                "cloudevent.json is stale".to_string(),
                "document.DocumentRegistered.v1.json is missing".to_string(),
                "tenant.Gone.v1.json names no current event type".to_string(),
            ]
        );
    }

    /// Every event decodes from what its schema describes: the schemas
    /// cover the real serialisation, not a parallel description of it.
    #[test]
    fn every_variant_of_the_log_has_a_schema() {
        let schemas = event_schemas();
        let all = schemars::schema_for!(AnyEvent).to_value();
        let variant_count: usize = ["TenantEvent", "DocumentEvent", "KnowledgeBaseEvent"]
            .iter()
            .map(|name| {
                all["$defs"][name]["oneOf"]
                    .as_array()
                    .map_or(0, |variants| variants.len())
            })
            .sum();
        assert!(variant_count > 0, "AnyEvent schema has its enums in $defs: {all}");
        assert_eq!(schemas.len(), variant_count);
    }
}
