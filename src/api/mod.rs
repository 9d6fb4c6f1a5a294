//! The HTTP API: authenticates, validates, sends a command to an actor and
//! answers with its decision; reads come from projections. It writes no
//! table itself.

mod audit;
mod auth_guard;
mod body_limit;
pub mod content_locks;
mod document_events;
mod documents;
mod erasures;
pub mod error;
pub mod failed_auth;
mod knowledge_bases;
mod schemas;
mod uploads;
pub mod users;
mod webhooks;

use std::sync::Arc;

use actors::aggregate_actor::Written;
use chrono::Utc;
use domain::tenant::{ApiKeyScopes, Role};
use domain::{ApiKeyId, EventMetadata, KnowledgeBaseId, TenantId};
use poem::http::Method;
use poem::middleware::Tracing;
use poem::{get, handler, EndpointExt, Request, Route};
use poem_openapi::auth::Bearer;
use poem_openapi::{OpenApiService, SecurityScheme};
use uuid::Uuid;

use crate::app::{App, Feed};
use error::ApiError;

pub use crate::event_view::UNREADABLE;

/// Who is calling: resolved from the API key on every request.
///
/// A read-only key is refused by [`authenticate`] on every route that sends
/// a command, before any route runs. A key limited to knowledge bases is
/// checked by the routes, which know what they reach: a knowledge base
/// outside the scope, or a document linked to none inside it, answers 404
/// as another tenant's would, and a route that reaches past knowledge bases
/// (the tenant's whole document list, creating a knowledge base, keys,
/// users, the audit log) answers 403.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub role: Role,
    pub key_id: ApiKeyId,
    pub scopes: ApiKeyScopes,
}

impl Caller {
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            tenant_id: Some(self.tenant_id),
            actor_key_id: Some(self.key_id.clone()),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::User => Err(ApiError::Forbidden("this route needs an admin api key".into())),
        }
    }

    /// Whether the key may reach knowledge base `id` (its tenant's
    /// ownership is checked apart).
    pub fn reaches(&self, id: KnowledgeBaseId) -> bool {
        self.scopes
            .knowledge_base_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&id))
    }

    /// Refuses a key limited to knowledge bases: `action` reaches past them.
    pub fn require_tenant_wide(&self, action: &str) -> Result<(), ApiError> {
        if self.scopes.knowledge_base_ids.is_none() {
            return Ok(());
        }
        Err(ApiError::KnowledgeBaseScopedKey {
            key_id: self.key_id.to_string(),
            action: action.to_owned(),
        })
    }
}

/// Whether a request sends a command, which a read-only key may not: every
/// method but GET and HEAD, except a search, which reads though it posts
/// its query. Deciding by the method here rather than in each route means
/// a new route that writes is refused to read-only keys without a word.
fn sends_command(method: &Method, path: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD) {
        return false;
    }
    let is_search = *method == Method::POST
        && path
            .strip_prefix("/v1/knowledge-bases/")
            .and_then(|rest| rest.strip_suffix("/search"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    !is_search
}

/// `Authorization: Bearer ns_<key id>_<secret>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "authenticate")]
pub struct ApiKeyAuth(pub Caller);

async fn authenticate(request: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let app = request
        .data::<Arc<App>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let caller = app.authenticate(&bearer.token).await?;
    if caller.scopes.read_only && sends_command(request.method(), request.original_uri().path()) {
        return Err(ApiError::ReadOnlyKey {
            key_id: caller.key_id.to_string(),
        }
        .into());
    }
    Ok(caller)
}

impl App {
    async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let Some((key_id, secret)) = crate::auth::parse_token(token) else {
            return Err(ApiError::Unauthorized);
        };
        let key = self
            .registry
            .api_key(&key_id)
            .await
            .map_err(|error| ApiError::Unavailable(format!("cannot check api key {key_id}: {error}")))?
            .ok_or(ApiError::Unauthorized)?;
        // verify before looking at revocation or expiry, so a wrong secret
        // learns nothing about the key's state
        if !self.key_hasher.verify(secret, &key.secret_hash) {
            return Err(ApiError::Unauthorized);
        }
        let expired = key.expires_at.is_some_and(|at| at <= Utc::now());
        if key.revoked_at.is_some() || expired {
            return Err(ApiError::Unauthorized);
        }
        Ok(Caller {
            tenant_id: key.tenant_id,
            role: key.role,
            key_id,
            scopes: key.scopes,
        })
    }

    /// A sealed field of the tenant's, opened for its response. Text from
    /// before fields were sealed passes as is. A value that cannot be opened
    /// (its key destroyed, its bytes altered) is shown as such and logged,
    /// rather than failing a whole listing.
    pub async fn reveal(&self, tenant_id: TenantId, field: &str, stored: &str) -> String {
        crate::event_view::reveal(&self.vault, tenant_id, field, stored).await
    }

    /// Waits, bounded, until the registry shows a write, so the client's next
    /// read sees it. A timeout is not an error: the write is durable.
    pub async fn settle(&self, written: Option<Written>) {
        let Some(written) = written else { return };
        let timeout = self.config.read_your_writes_timeout();
        let reached = match &self.registry_feed {
            Feed::Log(runner) => runner.wait_for(written.log_position, timeout).await,
            // a partitioned feed has no global position to compare, and a
            // projector in another process no local progress: wait for the
            // stream's own version in the registry instead
            Feed::Kafka(_) | Feed::Elsewhere => {
                self.registry
                    .wait_for_version(&written.stream_id, written.stream_version, timeout)
                    .await
            }
        };
        if !reached {
            tracing::warn!(
                stream_id = %written.stream_id,
                version = written.stream_version,
                position = %written.log_position,
                ?timeout,
                "registry did not reach a write in time"
            );
        }
    }
}

#[handler]
fn health() -> poem::web::Json<serde_json::Value> {
    poem::web::Json(serde_json::json!({ "status": "ok" }))
}

pub fn routes(app: Arc<App>) -> impl poem::Endpoint {
    let api = OpenApiService::new(
        (
            users::UsersApi,
            knowledge_bases::KnowledgeBasesApi,
            documents::DocumentsApi,
            uploads::UploadsApi,
            document_events::DocumentEventsApi,
            webhooks::WebhooksApi,
            schemas::SchemasApi,
            audit::AuditApi,
            erasures::ErasuresApi,
        ),
        "NeuroStash",
        env!("CARGO_PKG_VERSION"),
    )
    .description("self-hosted, multi-tenant knowledge stash: documents, knowledge bases, semantic search");
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let upload_body = app
        .config
        .max_upload_bytes
        .saturating_add(body_limit::FORM_OVERHEAD_BYTES);
    let failed_auth = auth_guard::FailedAuthGuard::new(app.config.failed_auth_limits());
    Route::new()
        .at("/health", get(health))
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/v1/uploads/:document/:upload", poem::put(uploads::put_upload))
        .nest("/", api.with(failed_auth))
        .with(body_limit::BodyLimit::new(upload_body, app.config.max_json_body_bytes))
        .with(Tracing)
        .data(app)
        .catch_all_error(error::render_any_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_but_get_sends_a_command_except_search() {
        let kb = "/v1/knowledge-bases/0191e0a4-0000-7000-8000-000000000001";
        for (method, path) in [
            (Method::GET, "/v1/documents"),
            (Method::HEAD, "/v1/documents"),
            (Method::POST, format!("{kb}/search").as_str()),
        ] {
            assert!(!sends_command(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "/v1/documents"),
            (Method::POST, "/v1/knowledge-bases"),
            (Method::POST, format!("{kb}/documents").as_str()),
            (Method::DELETE, kb),
            (Method::PUT, format!("{kb}/search").as_str()),
            (Method::POST, "/v1/knowledge-bases//search"),
            (Method::POST, "/v1/knowledge-bases/a/b/search"),
            (Method::POST, "/v1/api-keys"),
            (Method::PATCH, "/v1/documents/x"),
        ] {
            assert!(sends_command(&method, path), "{method} {path}");
        }
    }
}
