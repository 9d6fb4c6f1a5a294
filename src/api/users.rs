//! Users (tenants) and their API keys.

use std::collections::HashSet;
use std::sync::Arc;

use actors::aggregate_actor::Written;
use actors::keys::KeyVault;
use actors::ActorSystem;
use chrono::{DateTime, Utc};
use domain::tenant::{ApiKeyScopes, Email, Role, TenantCommand};
use domain::{ApiKeyId, EventMetadata, KnowledgeBaseId, TenantId};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use uuid::Uuid;

use super::error::ApiError;
use super::ApiKeyAuth;
use crate::app::App;
use crate::auth::KeyHasher;

#[derive(Tags)]
enum Tag {
    Users,
    ApiKeys,
}

#[derive(Object)]
struct CreateUserRequest {
    email: String,
    /// USER or ADMIN
    role: String,
}

#[derive(Object)]
struct CreatedUser {
    id: Uuid,
    email: String,
    role: String,
    /// Shown once: only a keyed hash of it is kept.
    api_key: String,
}

#[derive(ApiResponse)]
enum CreateUserResponse {
    #[oai(status = 201)]
    Created(Json<CreatedUser>),
}

#[derive(Object)]
struct CreateKeyRequest {
    label: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    /// Reads and searches only: every route that changes something refuses the key.
    #[oai(default)]
    read_only: bool,
    /// Limits the key to these of the caller's knowledge bases and the
    /// documents in them; absent for all of them.
    knowledge_base_ids: Option<Vec<Uuid>>,
}

#[derive(Object)]
struct CreatedKey {
    id: String,
    /// Shown once: only a keyed hash of it is kept.
    api_key: String,
    label: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    read_only: bool,
    knowledge_base_ids: Option<Vec<Uuid>>,
}

#[derive(ApiResponse)]
enum CreateKeyResponse {
    #[oai(status = 201)]
    Created(Json<CreatedKey>),
}

#[derive(Object)]
struct ApiKeyView {
    id: String,
    role: String,
    label: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    read_only: bool,
    /// The knowledge bases the key is limited to; absent for all of them.
    knowledge_base_ids: Option<Vec<Uuid>>,
}

fn knowledge_base_uuids(scopes: &ApiKeyScopes) -> Option<Vec<Uuid>> {
    scopes
        .knowledge_base_ids
        .as_ref()
        .map(|ids| ids.iter().map(|id| id.0).collect())
}

#[derive(Object)]
struct ApiKeyList {
    items: Vec<ApiKeyView>,
}

#[derive(ApiResponse)]
enum RevokeKeyResponse {
    #[oai(status = 204)]
    Revoked,
}

/// A user just registered, with its first key's token (shown once).
pub struct RegisteredUser {
    pub tenant_id: TenantId,
    pub email: Email,
    pub token: String,
    pub written: Option<Written>,
}

/// Registers a tenant with its first API key; shared by the API and the CLI.
pub async fn register_user(
    actors: &ActorSystem,
    key_hasher: &KeyHasher,
    vault: &KeyVault,
    email: &str,
    role: Role,
    metadata: EventMetadata,
) -> Result<RegisteredUser, ApiError> {
    let email = Email::parse(email).map_err(|error| ApiError::invalid(error.to_string()))?;
    let tenant_id = TenantId::for_email(email.as_str());
    let sealed_email = vault
        .seal(tenant_id, "email", email.as_str())
        .await
        .map_err(|error| ApiError::Unavailable(format!("cannot seal the email of tenant {tenant_id}: {error}")))?;
    actors
        .tenants
        .execute(
            tenant_id.stream_id(),
            TenantCommand::Register {
                email: email.clone(),
                sealed_email,
                role,
            },
            metadata.clone(),
        )
        .await?;
    let key = key_hasher.mint();
    let issued = actors
        .tenants
        .execute(
            tenant_id.stream_id(),
            TenantCommand::IssueApiKey {
                key_id: key.key_id,
                secret_hash: key.secret_hash,
                label: Some("initial".into()),
                expires_at: None,
                scopes: ApiKeyScopes::default(),
            },
            metadata,
        )
        .await?;
    Ok(RegisteredUser {
        tenant_id,
        email,
        token: key.token,
        written: issued.written,
    })
}

pub struct UsersApi;

#[OpenApi(prefix_path = "/v1")]
impl UsersApi {
    /// Create a user (admin only); answers its first API key, once.
    #[oai(path = "/users", method = "post", tag = "Tag::Users")]
    async fn create_user(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        body: Json<CreateUserRequest>,
    ) -> poem::Result<CreateUserResponse> {
        let caller = auth.0;
        caller.require_admin()?;
        caller.require_tenant_wide("create users")?;
        let role: Role = body
            .role
            .parse()
            .map_err(|error: domain::DomainError| ApiError::invalid(error.to_string()))?;
        let user = register_user(
            &app.actors,
            &app.key_hasher,
            &app.vault,
            &body.email,
            role,
            caller.metadata(),
        )
        .await?;
        app.settle(user.written).await;
        Ok(CreateUserResponse::Created(Json(CreatedUser {
            id: user.tenant_id.0,
            email: user.email.as_str().to_owned(),
            role: role.as_str().to_owned(),
            api_key: user.token,
        })))
    }

    /// Issue another API key for the caller.
    #[oai(path = "/api-keys", method = "post", tag = "Tag::ApiKeys")]
    async fn create_key(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        body: Json<CreateKeyRequest>,
    ) -> poem::Result<CreateKeyResponse> {
        let caller = auth.0;
        // a scoped key may only issue keys no broader than itself; the
        // simplest rule that keeps it so is that scoped keys issue none (a
        // read-only key never gets here: this route sends a command)
        caller.require_tenant_wide("issue api keys")?;
        if body.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(ApiError::invalid("expires_at must be in the future").into());
        }
        let knowledge_base_ids: Option<Vec<KnowledgeBaseId>> = body
            .knowledge_base_ids
            .as_ref()
            .map(|ids| ids.iter().copied().map(KnowledgeBaseId).collect());
        if let Some(ids) = &knowledge_base_ids {
            // one read whatever the number of ids; how many a key may name
            // is the domain's to refuse
            let owned: HashSet<KnowledgeBaseId> = app
                .registry
                .list_knowledge_bases(caller.tenant_id)
                .await
                .map_err(ApiError::internal)?
                .into_iter()
                .map(|row| row.id)
                .collect();
            if let Some(foreign) = ids.iter().find(|id| !owned.contains(id)) {
                return Err(ApiError::not_found("knowledge base", foreign).into());
            }
        }
        let scopes = ApiKeyScopes {
            read_only: body.read_only,
            knowledge_base_ids,
        };
        let key = app.key_hasher.mint();
        let outcome = app
            .actors
            .tenants
            .execute(
                caller.tenant_id.stream_id(),
                TenantCommand::IssueApiKey {
                    key_id: key.key_id.clone(),
                    secret_hash: key.secret_hash,
                    label: body.label.clone(),
                    expires_at: body.expires_at,
                    scopes: scopes.clone(),
                },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        Ok(CreateKeyResponse::Created(Json(CreatedKey {
            id: key.key_id.0,
            api_key: key.token,
            label: body.label.clone(),
            expires_at: body.expires_at,
            read_only: scopes.read_only,
            knowledge_base_ids: knowledge_base_uuids(&scopes),
        })))
    }

    /// The caller's API keys (never their secrets).
    #[oai(path = "/api-keys", method = "get", tag = "Tag::ApiKeys")]
    async fn list_keys(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth) -> poem::Result<Json<ApiKeyList>> {
        // the tenant's other keys name knowledge bases outside a scoped key's
        auth.0.require_tenant_wide("list the tenant's api keys")?;
        let keys = app
            .registry
            .list_api_keys(auth.0.tenant_id)
            .await
            .map_err(ApiError::internal)?;
        Ok(Json(ApiKeyList {
            items: keys
                .into_iter()
                .map(|key| ApiKeyView {
                    read_only: key.scopes.read_only,
                    knowledge_base_ids: knowledge_base_uuids(&key.scopes),
                    id: key.key_id.0,
                    role: key.role.as_str().to_owned(),
                    label: key.label,
                    created_at: key.created_at,
                    expires_at: key.expires_at,
                    revoked_at: key.revoked_at,
                })
                .collect(),
        }))
    }

    /// Revoke one of the caller's API keys; it is refused from the next request on.
    #[oai(path = "/api-keys/:id", method = "delete", tag = "Tag::ApiKeys")]
    async fn revoke_key(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<String>,
    ) -> poem::Result<RevokeKeyResponse> {
        let caller = auth.0;
        caller.require_tenant_wide("revoke api keys")?;
        let key_id = ApiKeyId(id.0);
        let owned = app
            .registry
            .api_key(&key_id)
            .await
            .map_err(ApiError::internal)?
            .is_some_and(|key| key.tenant_id == caller.tenant_id);
        if !owned {
            return Err(ApiError::not_found("api key", &key_id).into());
        }
        let outcome = app
            .actors
            .tenants
            .execute(
                caller.tenant_id.stream_id(),
                TenantCommand::RevokeApiKey { key_id },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        app.settle(outcome.written).await;
        Ok(RevokeKeyResponse::Revoked)
    }
}
