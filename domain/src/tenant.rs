//! A tenant: a user client of the seed article, with its role and API keys.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ids::{ApiKeyId, KnowledgeBaseId, TenantId};
use crate::sealed::{Protected, Sealed};
use crate::{event_payload, Aggregate, Decision};

/// How many unrevoked keys a tenant may hold at once; bounds what a leaked
/// key can mint.
pub const MAX_ACTIVE_API_KEYS: usize = 50;

/// How many knowledge bases one key may be limited to: the scope is read on
/// every request the key makes.
pub const MAX_KEY_KNOWLEDGE_BASES: usize = 100;

/// What a key may reach within its tenant. The default, an unscoped key,
/// reaches everything its role allows; events written before scopes existed
/// decode to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyScopes {
    /// Reads and searches only: every route that sends a command is refused.
    #[serde(default)]
    pub read_only: bool,
    /// Only these knowledge bases and the documents linked to them; null
    /// for all of the tenant's. The API checks that they are the tenant's
    /// own when the key is issued: the tenant's stream does not know them.
    #[serde(default)]
    pub knowledge_base_ids: Option<Vec<KnowledgeBaseId>>,
}

impl ApiKeyScopes {
    fn validate(&self) -> Result<(), DomainError> {
        let Some(ids) = &self.knowledge_base_ids else {
            return Ok(());
        };
        if ids.is_empty() || ids.len() > MAX_KEY_KNOWLEDGE_BASES {
            return Err(DomainError::invalid(
                "knowledge_base_ids",
                format!("must name 1 to {MAX_KEY_KNOWLEDGE_BASES} knowledge bases, or be absent for all of them"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(duplicate) = ids.iter().find(|id| !seen.insert(**id)) {
            return Err(DomainError::invalid(
                "knowledge_base_ids",
                format!("knowledge base {duplicate} is named twice"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Admin => "ADMIN",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "USER" => Ok(Role::User),
            "ADMIN" => Ok(Role::Admin),
            _ => Err(DomainError::invalid("role", format!("{s:?} is not USER or ADMIN"))),
        }
    }
}

/// A syntactically valid, normalised (trimmed, lowercased) e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, DomainError> {
        let normalised = raw.trim().to_lowercase();
        let invalid = |reason: &str| Err(DomainError::invalid("email", reason));
        if normalised.is_empty() || normalised.len() > 254 {
            return invalid("must be 1 to 254 characters");
        }
        if normalised.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("must not contain spaces or control characters");
        }
        let Some((local, domain)) = normalised.split_once('@') else {
            return invalid("must contain @");
        };
        if local.is_empty() || domain.is_empty() || domain.contains('@') || !domain.contains('.') {
            return invalid("must look like name@domain.tld");
        }
        Ok(Email(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub enum TenantCommand {
    /// `email` names the tenant (its id is derived from it); only
    /// `sealed_email`, made by the caller under the tenant's data key, is kept.
    Register {
        email: Email,
        sealed_email: Sealed,
        role: Role,
    },
    /// The secret itself never reaches the domain: only its keyed hash.
    IssueApiKey {
        key_id: ApiKeyId,
        secret_hash: String,
        label: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        scopes: ApiKeyScopes,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
    /// Records, for the audit trail, that the tenant's data key was rotated:
    /// `key_id` is the new active key's public id, never key material.
    RecordKeyRotation {
        key_id: String,
    },
    /// Erases the tenant: its keys are destroyed and it leaves every
    /// projection. `erasure_id` names the receipt.
    Erase {
        erasure_id: Uuid,
    },
    /// A URL that is to receive the tenant's document events of
    /// `event_types` (`*` for all), signed with `secret` (sealed by the
    /// caller under the tenant's data key: the signer must read it back).
    RegisterWebhook {
        webhook_id: Uuid,
        url: String,
        event_types: Vec<String>,
        secret: Sealed,
    },
    RemoveWebhook {
        webhook_id: Uuid,
    },
}

/// The most webhooks a tenant may have at once.
pub const MAX_WEBHOOKS: usize = 10;
/// The longest webhook URL taken.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum TenantEvent {
    TenantRegistered {
        tenant_id: TenantId,
        /// Sealed under the tenant's data key.
        email: Protected,
        role: Role,
    },
    ApiKeyIssued {
        key_id: ApiKeyId,
        /// HMAC-SHA256 of the secret under the server's key-hashing secret.
        secret_hash: String,
        role: Role,
        label: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        /// Absent from events written before keys had scopes: unscoped.
        #[serde(default)]
        scopes: ApiKeyScopes,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
    /// A new data key became the tenant's active one; older keys still
    /// decrypt what was written under them.
    EncryptionKeyRotated {
        key_id: String,
    },
    /// The tenant's data keys are destroyed (crypto-shredding): its events
    /// stay in the log, their sealed fields unreadable forever.
    TenantErased {
        erasure_id: Uuid,
    },
    WebhookRegistered {
        webhook_id: Uuid,
        url: String,
        /// Document event types, or `*` for all of them.
        event_types: Vec<String>,
        /// The signing secret, sealed under the tenant's data key.
        secret: Sealed,
    },
    WebhookRemoved {
        webhook_id: Uuid,
    },
}
event_payload!(TenantEvent {
    TenantRegistered,
    ApiKeyIssued,
    ApiKeyRevoked,
    EncryptionKeyRotated,
    TenantErased,
    WebhookRegistered,
    WebhookRemoved,
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyState {
    pub revoked: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    pub id: Option<TenantId>,
    pub email: Option<Protected>,
    pub role: Option<Role>,
    pub api_keys: BTreeMap<ApiKeyId, ApiKeyState>,
    /// Set once erased: the tenant takes no command again.
    pub erased: Option<Uuid>,
    pub webhooks: std::collections::BTreeSet<Uuid>,
}

impl Tenant {
    fn registered(&self) -> Result<(TenantId, Role), DomainError> {
        if self.erased.is_some() {
            return Err(DomainError::NotFound {
                entity: "tenant",
                id: self.id.map_or_else(|| "erased".into(), |id| id.to_string()),
            });
        }
        match (self.id, self.role) {
            (Some(id), Some(role)) => Ok((id, role)),
            _ => Err(DomainError::NotFound {
                entity: "tenant",
                id: "unregistered".into(),
            }),
        }
    }
}

impl Aggregate for Tenant {
    const CATEGORY: &'static str = "tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;

    fn decide(&self, command: &TenantCommand) -> Decision<TenantEvent> {
        match command {
            TenantCommand::Register {
                email,
                sealed_email,
                role,
            } => {
                let tenant_id = TenantId::for_email(email.as_str());
                if self.erased.is_some() {
                    // the id is derived from the email, so a new tenant of
                    // the same email would be this stream again
                    return Err(DomainError::Conflict(format!(
                        "tenant {tenant_id} was erased: its email cannot be registered again"
                    )));
                }
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists {
                        entity: "tenant",
                        id: tenant_id.to_string(),
                    });
                }
                Ok(vec![TenantEvent::TenantRegistered {
                    tenant_id,
                    email: Protected::Sealed(sealed_email.clone()),
                    role: *role,
                }])
            }
            TenantCommand::IssueApiKey {
                key_id,
                secret_hash,
                label,
                expires_at,
                scopes,
            } => {
                let (tenant_id, role) = self.registered()?;
                if self.api_keys.contains_key(key_id) {
                    return Err(DomainError::AlreadyExists {
                        entity: "api key",
                        id: key_id.to_string(),
                    });
                }
                let active = self.api_keys.values().filter(|key| !key.revoked).count();
                if active >= MAX_ACTIVE_API_KEYS {
                    return Err(DomainError::Conflict(format!(
                        "tenant {tenant_id} already holds {MAX_ACTIVE_API_KEYS} active api keys: revoke one first"
                    )));
                }
                if let Some(label) = label {
                    if label.chars().count() > 100 || label.chars().any(char::is_control) {
                        return Err(DomainError::invalid("label", "at most 100 printable characters"));
                    }
                }
                scopes.validate()?;
                Ok(vec![TenantEvent::ApiKeyIssued {
                    key_id: key_id.clone(),
                    secret_hash: secret_hash.clone(),
                    role,
                    label: label.clone(),
                    expires_at: *expires_at,
                    scopes: scopes.clone(),
                }])
            }
            TenantCommand::RevokeApiKey { key_id } => {
                self.registered()?;
                match self.api_keys.get(key_id) {
                    None => Err(DomainError::NotFound {
                        entity: "api key",
                        id: key_id.to_string(),
                    }),
                    // revoking twice is a retry, not an error
                    Some(key) if key.revoked => Ok(vec![]),
                    Some(_) => Ok(vec![TenantEvent::ApiKeyRevoked { key_id: key_id.clone() }]),
                }
            }
            TenantCommand::RecordKeyRotation { key_id } => {
                self.registered()?;
                let well_formed = key_id.len() == 16 && key_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !well_formed {
                    return Err(DomainError::invalid("key_id", "must be 16 lowercase hex characters"));
                }
                Ok(vec![TenantEvent::EncryptionKeyRotated { key_id: key_id.clone() }])
            }
            TenantCommand::RegisterWebhook {
                webhook_id,
                url,
                event_types,
                secret,
            } => {
                self.registered()?;
                if self.webhooks.contains(webhook_id) {
                    return Err(DomainError::AlreadyExists {
                        entity: "webhook",
                        id: webhook_id.to_string(),
                    });
                }
                if self.webhooks.len() >= MAX_WEBHOOKS {
                    return Err(DomainError::invalid(
                        "webhooks",
                        format!("a tenant has at most {MAX_WEBHOOKS} webhooks"),
                    ));
                }
                let url = url.trim();
                let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                if !matches!(scheme, "http" | "https") || host.is_empty() {
                    return Err(DomainError::invalid(
                        "url",
                        "must be an http:// or https:// url with a host",
                    ));
                }
                if url.len() > MAX_WEBHOOK_URL_BYTES || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(DomainError::invalid(
                        "url",
                        format!("must be at most {MAX_WEBHOOK_URL_BYTES} bytes, without spaces or control characters"),
                    ));
                }
                let mut types: Vec<String> = event_types.iter().map(|name| name.trim().to_owned()).collect();
                types.sort();
                types.dedup();
                if types.is_empty() {
                    return Err(DomainError::invalid("events", "name at least one event type, or *"));
                }
                let known = crate::document::DocumentEvent::TYPES;
                if let Some(unknown) = types
                    .iter()
                    .find(|name| *name != "*" && !known.contains(&name.as_str()))
                {
                    return Err(DomainError::invalid(
                        "events",
                        format!(
                            "{unknown:?} is not a document event type: one of {}, or *",
                            known.join(", ")
                        ),
                    ));
                }
                Ok(vec![TenantEvent::WebhookRegistered {
                    webhook_id: *webhook_id,
                    url: url.to_owned(),
                    event_types: types,
                    secret: secret.clone(),
                }])
            }
            TenantCommand::RemoveWebhook { webhook_id } => {
                self.registered()?;
                if !self.webhooks.contains(webhook_id) {
                    return Err(DomainError::NotFound {
                        entity: "webhook",
                        id: webhook_id.to_string(),
                    });
                }
                Ok(vec![TenantEvent::WebhookRemoved {
                    webhook_id: *webhook_id,
                }])
            }
            TenantCommand::Erase { erasure_id } => {
                // erasing twice is a retry: the first erasure stands
                if self.erased.is_some() {
                    return Ok(vec![]);
                }
                self.registered()?;
                Ok(vec![TenantEvent::TenantErased {
                    erasure_id: *erasure_id,
                }])
            }
        }
    }

    fn apply(&mut self, event: &TenantEvent) {
        match event {
            TenantEvent::TenantRegistered { tenant_id, email, role } => {
                self.id = Some(*tenant_id);
                self.email = Some(email.clone());
                self.role = Some(*role);
            }
            TenantEvent::ApiKeyIssued { key_id, expires_at, .. } => {
                self.api_keys.insert(
                    key_id.clone(),
                    ApiKeyState {
                        revoked: false,
                        expires_at: *expires_at,
                    },
                );
            }
            TenantEvent::ApiKeyRevoked { key_id } => {
                if let Some(key) = self.api_keys.get_mut(key_id) {
                    key.revoked = true;
                }
            }
            TenantEvent::EncryptionKeyRotated { .. } => {}
            TenantEvent::WebhookRegistered { webhook_id, .. } => {
                self.webhooks.insert(*webhook_id);
            }
            TenantEvent::WebhookRemoved { webhook_id } => {
                self.webhooks.remove(webhook_id);
            }
            TenantEvent::TenantErased { erasure_id } => {
                self.erased = Some(*erasure_id);
                self.email = None;
                self.api_keys.clear();
                self.webhooks.clear();
            }
        }
    }
}
