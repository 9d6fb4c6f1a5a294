use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for deterministic ids (UUIDv5). Deriving an entity id from its
/// natural key makes uniqueness a property of the stream itself: two
/// registrations of the same key land on the same stream and the per-stream
/// version check lets exactly one of them win.
const NAMESPACE: Uuid = Uuid::from_u128(0x6e65_7572_6f73_7461_7368_0000_0000_0001);

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $category:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn stream_id(&self) -> StreamId {
                StreamId(format!("{}-{}", $category, self.0))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// A tenant (a "user client" in the seed article): owns keys, documents
    /// and knowledge bases.
    TenantId,
    "tenant"
);
uuid_id!(DocumentId, "document");
uuid_id!(KnowledgeBaseId, "knowledge_base");

impl TenantId {
    /// Tenants are keyed by their normalised e-mail address.
    pub fn for_email(normalised_email: &str) -> Self {
        TenantId(Uuid::new_v5(
            &NAMESPACE,
            format!("tenant:{normalised_email}").as_bytes(),
        ))
    }
}

impl DocumentId {
    /// A document is keyed by its owner and file name, so a file name is
    /// unique per tenant by construction.
    pub fn for_file(tenant: TenantId, file_name: &str) -> Self {
        DocumentId(Uuid::new_v5(
            &NAMESPACE,
            format!("document:{}:{file_name}", tenant.0).as_bytes(),
        ))
    }
}

/// The public part of an API key, used to look the key up; never secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ApiKeyId(pub String);

impl std::fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<category>-<uuid>`: the unit of optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct StreamId(pub String);

impl StreamId {
    /// The category is everything before `-<uuid>`; uuids contain dashes
    /// themselves, so the cut is by length, not by the first dash.
    pub fn category(&self) -> &str {
        const UUID_WITH_DASH: usize = 37;
        self.0.get(..self.0.len().saturating_sub(UUID_WITH_DASH)).unwrap_or("")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_category_is_the_prefix_before_the_uuid() {
        let kb = KnowledgeBaseId(Uuid::new_v4());
        assert_eq!(kb.stream_id().category(), "knowledge_base");
        assert_eq!(TenantId(Uuid::new_v4()).stream_id().category(), "tenant");
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = TenantId::for_email("a@example.com");
        assert_eq!(a, TenantId::for_email("a@example.com"));
        assert_ne!(a, TenantId::for_email("b@example.com"));
        assert_ne!(DocumentId::for_file(a, "x.txt"), DocumentId::for_file(a, "y.txt"));
    }
}
