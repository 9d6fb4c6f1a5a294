//! Erasing a tenant (crypto-shredding) and the receipt that tells which
//! parts of the system have carried it out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::tenant::TenantCommand;
use domain::TenantId;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use projections::erasure::{receipt, REQUIRED_COMPONENTS};
use uuid::Uuid;

use super::error::ApiError;
use super::ApiKeyAuth;
use crate::app::App;

#[derive(Tags)]
enum Tag {
    Erasures,
}

#[derive(Object)]
struct ErasureAccepted {
    erasure_id: Uuid,
    tenant_id: Uuid,
    /// Where the receipt is read.
    receipt_url: String,
}

#[derive(ApiResponse)]
enum EraseResponse {
    /// The erasure is recorded; its parts are carried out in the background.
    #[oai(status = 202)]
    Accepted(Json<ErasureAccepted>),
}

#[derive(Object)]
struct AcknowledgementView {
    /// registry, audit, keys, objects, or vector@<node>
    component: String,
    acknowledged_at: DateTime<Utc>,
    detail: String,
}

#[derive(Object)]
struct ReceiptView {
    erasure_id: Uuid,
    tenant_id: Uuid,
    /// Every required part has acknowledged.
    complete: bool,
    /// The required parts still to acknowledge.
    pending: Vec<String>,
    /// Every part required for completion.
    required: Vec<String>,
    acknowledgements: Vec<AcknowledgementView>,
}

pub struct ErasuresApi;

#[OpenApi(prefix_path = "/v1")]
impl ErasuresApi {
    /// Erase a user (admin only): its data keys are destroyed, its objects
    /// deleted and it leaves every projection. Its events stay in the log,
    /// unreadable. Answers the id of the erasure's receipt.
    #[oai(path = "/users/:id", method = "delete", tag = "Tag::Erasures")]
    async fn erase(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<EraseResponse> {
        let caller = auth.0;
        caller.require_admin()?;
        caller.require_tenant_wide("erasing a user")?;
        let tenant_id = TenantId(id.0);
        if tenant_id == caller.tenant_id {
            return Err(ApiError::Conflict {
                code: "cannot_erase_self",
                message: format!("tenant {tenant_id} cannot erase itself: use another admin's key"),
            }
            .into());
        }
        app.registry
            .user(tenant_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user", tenant_id))?;
        let erasure_id = Uuid::now_v7();
        let outcome = app
            .actors
            .tenants
            .execute(
                tenant_id.stream_id(),
                TenantCommand::Erase { erasure_id },
                caller.metadata(),
            )
            .await
            .map_err(ApiError::from)?;
        if outcome.events.is_empty() {
            // erased meanwhile by another request: its receipt is the one
            return Err(ApiError::not_found("user", tenant_id).into());
        }
        app.settle(outcome.written).await;
        tracing::info!(%tenant_id, %erasure_id, key_id = %caller.key_id, "tenant erasure recorded");
        Ok(EraseResponse::Accepted(Json(ErasureAccepted {
            erasure_id,
            tenant_id: tenant_id.0,
            receipt_url: format!("/v1/erasures/{erasure_id}"),
        })))
    }

    /// The receipt of an erasure (admin only): which parts acknowledged it.
    #[oai(path = "/erasures/:id", method = "get", tag = "Tag::Erasures")]
    async fn receipt(&self, app: Data<&Arc<App>>, auth: ApiKeyAuth, id: Path<Uuid>) -> poem::Result<Json<ReceiptView>> {
        let caller = auth.0;
        caller.require_admin()?;
        caller.require_tenant_wide("reading erasure receipts")?;
        let found = receipt(&app.database, id.0)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("erasure", id.0))?;
        let pending: Vec<String> = found.pending().into_iter().map(str::to_owned).collect();
        Ok(Json(ReceiptView {
            erasure_id: found.erasure_id,
            tenant_id: found.tenant_id.0,
            complete: pending.is_empty(),
            pending,
            required: REQUIRED_COMPONENTS.iter().map(|c| (*c).to_owned()).collect(),
            acknowledgements: found
                .acknowledgements
                .into_iter()
                .map(|ack| AcknowledgementView {
                    component: ack.component,
                    acknowledged_at: ack.acknowledged_at,
                    detail: ack.detail,
                })
                .collect(),
        }))
    }
}
