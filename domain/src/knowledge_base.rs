//! A knowledge base: a named set of a tenant's documents that is searched as one.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{DocumentId, KnowledgeBaseId, TenantId};
use crate::indexing::{ChunkingSettings, EmbeddingModel};
use crate::sealed::{Protected, Sealed};
use crate::{event_payload, Aggregate, Decision};

#[derive(Debug, Clone)]
pub enum KnowledgeBaseCommand {
    /// `name` and `category` are checked (they must already be normalised,
    /// see [`normalise_name`]); only their sealed forms, made by the caller
    /// under the tenant's data key, are kept.
    Create {
        knowledge_base_id: KnowledgeBaseId,
        tenant_id: TenantId,
        name: String,
        category: Option<String>,
        sealed_name: Sealed,
        sealed_category: Option<Sealed>,
        /// The model the server embeds with now; the knowledge base keeps it.
        embedding_model: EmbeddingModel,
        /// Checked by the caller against the model's input size.
        chunking: ChunkingSettings,
    },
    /// `document_tenant` and `document_model` (the model the document's
    /// vectors come from, once it is processed) are looked up by the
    /// caller: a knowledge base only takes its own tenant's documents, and
    /// only vectors of the model it is pinned to.
    AddDocument {
        document_id: DocumentId,
        document_tenant: TenantId,
        document_model: Option<EmbeddingModel>,
    },
    RemoveDocument {
        document_id: DocumentId,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum KnowledgeBaseEvent {
    KnowledgeBaseCreated {
        knowledge_base_id: KnowledgeBaseId,
        tenant_id: TenantId,
        /// Sealed under the tenant's data key.
        name: Protected,
        /// Sealed under the tenant's data key.
        category: Option<Protected>,
        /// The model every vector of the knowledge base comes from; none for
        /// knowledge bases created before models were pinned, which take
        /// any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding_model: Option<EmbeddingModel>,
        /// How its documents are chunked; none: the server's defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunking: Option<ChunkingSettings>,
    },
    DocumentAddedToKnowledgeBase {
        document_id: DocumentId,
    },
    DocumentRemovedFromKnowledgeBase {
        document_id: DocumentId,
    },
    KnowledgeBaseDeleted {},
}
event_payload!(KnowledgeBaseEvent {
    KnowledgeBaseCreated,
    DocumentAddedToKnowledgeBase,
    DocumentRemovedFromKnowledgeBase,
    KnowledgeBaseDeleted,
});

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnowledgeBase {
    pub id: Option<KnowledgeBaseId>,
    pub tenant_id: Option<TenantId>,
    pub name: Option<Protected>,
    pub embedding_model: Option<EmbeddingModel>,
    pub chunking: Option<ChunkingSettings>,
    pub documents: BTreeSet<DocumentId>,
    pub deleted: bool,
}

/// A knowledge base name as kept: trimmed, 1 to 200 printable characters.
pub fn normalise_name(name: &str) -> Result<String, DomainError> {
    validate_label("name", name, 200)
}

/// A category as kept: trimmed, 1 to 100 printable characters.
pub fn normalise_category(category: &str) -> Result<String, DomainError> {
    validate_label("category", category, 100)
}

fn validate_label(field: &'static str, value: &str, max_chars: usize) -> Result<String, DomainError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max_chars {
        return Err(DomainError::Invalid {
            field,
            reason: format!("must be 1 to {max_chars} characters"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::Invalid {
            field,
            reason: "must not contain control characters".into(),
        });
    }
    Ok(value.to_owned())
}

impl KnowledgeBase {
    fn live(&self) -> Result<(KnowledgeBaseId, TenantId), DomainError> {
        match (self.id, self.tenant_id) {
            (Some(id), Some(tenant)) if !self.deleted => Ok((id, tenant)),
            (id, _) => Err(DomainError::NotFound {
                entity: "knowledge base",
                id: id.map_or_else(|| "unregistered".into(), |id| id.to_string()),
            }),
        }
    }
}

impl Aggregate for KnowledgeBase {
    const CATEGORY: &'static str = "knowledge_base";
    type Command = KnowledgeBaseCommand;
    type Event = KnowledgeBaseEvent;

    fn decide(&self, command: &KnowledgeBaseCommand) -> Decision<KnowledgeBaseEvent> {
        match command {
            KnowledgeBaseCommand::Create {
                knowledge_base_id,
                tenant_id,
                name,
                category,
                sealed_name,
                sealed_category,
                embedding_model,
                chunking,
            } => {
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists {
                        entity: "knowledge base",
                        id: knowledge_base_id.to_string(),
                    });
                }
                if normalise_name(name)? != *name {
                    return Err(DomainError::invalid("name", "must be normalised before sealing"));
                }
                match category {
                    Some(category) if normalise_category(category)? != *category => {
                        return Err(DomainError::invalid("category", "must be normalised before sealing"));
                    }
                    _ => {}
                }
                if category.is_some() != sealed_category.is_some() {
                    return Err(DomainError::invalid("category", "sealed only when given"));
                }
                Ok(vec![KnowledgeBaseEvent::KnowledgeBaseCreated {
                    knowledge_base_id: *knowledge_base_id,
                    tenant_id: *tenant_id,
                    name: Protected::Sealed(sealed_name.clone()),
                    category: sealed_category.clone().map(Protected::Sealed),
                    embedding_model: Some(embedding_model.clone()),
                    chunking: Some(*chunking),
                }])
            }
            KnowledgeBaseCommand::AddDocument {
                document_id,
                document_tenant,
                document_model,
            } => {
                let (id, tenant) = self.live()?;
                if *document_tenant != tenant {
                    // another tenant's document is indistinguishable from a missing one
                    return Err(DomainError::NotFound {
                        entity: "document",
                        id: document_id.to_string(),
                    });
                }
                if self.documents.contains(document_id) {
                    return Err(DomainError::AlreadyExists {
                        entity: "knowledge base document",
                        id: format!("{id}/{document_id}"),
                    });
                }
                if let (Some(pinned), Some(model)) = (&self.embedding_model, document_model) {
                    if pinned != model {
                        return Err(DomainError::ModelMismatch {
                            knowledge_base_id: id.to_string(),
                            pinned: pinned.to_string(),
                            found: model.to_string(),
                        });
                    }
                }
                Ok(vec![KnowledgeBaseEvent::DocumentAddedToKnowledgeBase {
                    document_id: *document_id,
                }])
            }
            KnowledgeBaseCommand::RemoveDocument { document_id } => {
                let (id, _) = self.live()?;
                if !self.documents.contains(document_id) {
                    return Err(DomainError::NotFound {
                        entity: "knowledge base document",
                        id: format!("{id}/{document_id}"),
                    });
                }
                Ok(vec![KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase {
                    document_id: *document_id,
                }])
            }
            KnowledgeBaseCommand::Delete => {
                self.live()?;
                Ok(vec![KnowledgeBaseEvent::KnowledgeBaseDeleted {}])
            }
        }
    }

    fn apply(&mut self, event: &KnowledgeBaseEvent) {
        match event {
            KnowledgeBaseEvent::KnowledgeBaseCreated {
                knowledge_base_id,
                tenant_id,
                name,
                embedding_model,
                chunking,
                ..
            } => {
                self.id = Some(*knowledge_base_id);
                self.tenant_id = Some(*tenant_id);
                self.name = Some(name.clone());
                self.embedding_model.clone_from(embedding_model);
                self.chunking = *chunking;
            }
            KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id } => {
                self.documents.insert(*document_id);
            }
            KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id } => {
                self.documents.remove(document_id);
            }
            KnowledgeBaseEvent::KnowledgeBaseDeleted {} => {
                self.deleted = true;
            }
        }
    }
}
