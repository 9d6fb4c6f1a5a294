//! The HTTP API: authenticates, validates, sends a command to an actor and
//! answers with its decision; reads come from projections. It writes no
//! table itself.

mod audit;
mod body_limit;
mod documents;
pub mod error;
mod knowledge_bases;
mod schemas;
pub mod users;

use std::sync::Arc;

use actors::aggregate_actor::Written;
use chrono::Utc;
use domain::tenant::Role;
use domain::{ApiKeyId, EventMetadata, TenantId};
use poem::middleware::Tracing;
use poem::{get, handler, EndpointExt, Request, Route};
use poem_openapi::auth::Bearer;
use poem_openapi::{OpenApiService, SecurityScheme};
use uuid::Uuid;

use crate::app::{App, Feed};
use error::ApiError;

/// Shown in place of a sealed value that cannot be opened.
pub const UNREADABLE: &str = "(unreadable)";

/// Who is calling: resolved from the API key on every request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub role: Role,
    pub key_id: ApiKeyId,
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
}

/// `Authorization: Bearer ns_<key id>_<secret>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "authenticate")]
pub struct ApiKeyAuth(pub Caller);

async fn authenticate(request: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let app = request
        .data::<Arc<App>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    app.authenticate(&bearer.token).await.map_err(poem::Error::from)
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
        })
    }

    /// A sealed field of the tenant's, opened for its response. Text from
    /// before fields were sealed passes as is. A value that cannot be opened
    /// (its key destroyed, its bytes altered) is shown as such and logged,
    /// rather than failing a whole listing.
    pub async fn reveal(&self, tenant_id: TenantId, field: &str, stored: &str) -> String {
        match domain::Protected::from_stored(stored) {
            domain::Protected::Plain(text) => text,
            domain::Protected::Sealed(sealed) => match self.vault.open(tenant_id, field, &sealed).await {
                Ok(text) => text,
                Err(error) => {
                    tracing::warn!(%tenant_id, field, key_id = sealed.key_id(), %error, "cannot open a sealed field");
                    UNREADABLE.to_owned()
                }
            },
        }
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
            schemas::SchemasApi,
            audit::AuditApi,
        ),
        "NeuroStash",
        env!("CARGO_PKG_VERSION"),
    )
    .description("self-hosted, multi-tenant knowledge stash: documents, knowledge bases, semantic search");
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let max_body = app.config.max_upload_bytes + 64 * 1024;
    Route::new()
        .at("/health", get(health))
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", api)
        .with(body_limit::BodyLimit::new(max_body))
        .with(Tracing)
        .data(app)
        .catch_all_error(error::render_any_error)
}
