//! The audit log over HTTP: admins read any tenant's records or all of
//! them, a user only its own.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::tenant::Role;
use domain::TenantId;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use projections::audit::{AuditFilter, AuditRecord, MAX_PAGE};
use uuid::Uuid;

use super::error::ApiError;
use super::{ApiKeyAuth, Caller};
use crate::app::App;

const DEFAULT_LIMIT: usize = 100;

#[derive(Tags)]
enum Tag {
    Audit,
}

/// One record of the audit log: who did what, when, with which key.
#[derive(Object)]
struct AuditRecordView {
    /// Position in the hash chain: 1, 2, 3, … without gaps.
    seq: i64,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    tenant_id: Option<Uuid>,
    /// The API key that issued the command; absent for the system itself.
    actor_key_id: Option<String>,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    correlation_id: Uuid,
    /// SHA-256 (hex) over the record and the hash of the one before it.
    hash: String,
}

impl From<AuditRecord> for AuditRecordView {
    fn from(record: AuditRecord) -> Self {
        AuditRecordView {
            seq: record.seq,
            event_id: record.event_id,
            recorded_at: record.recorded_at,
            tenant_id: record.tenant_id.map(|tenant| tenant.0),
            actor_key_id: record.actor_key_id.map(|key| key.0),
            stream_id: record.stream_id.0,
            stream_version: record.stream_version,
            event_type: record.event_type,
            correlation_id: record.correlation_id,
            hash: hex::encode(record.hash),
        }
    }
}

#[derive(Object)]
struct AuditPage {
    items: Vec<AuditRecordView>,
    /// Pass as `after` for the next page; absent on the last one.
    next_after: Option<i64>,
}

/// The tenant whose records `caller` may read given the `tenant` asked for:
/// a user reads only its own, and another tenant reads as absent (404), as
/// any foreign id does.
fn tenant_scope(caller: &Caller, asked: Option<TenantId>) -> Result<Option<TenantId>, ApiError> {
    match (caller.role, asked) {
        (Role::Admin, asked) => Ok(asked),
        (Role::User, None) => Ok(Some(caller.tenant_id)),
        (Role::User, Some(tenant)) if tenant == caller.tenant_id => Ok(Some(tenant)),
        (Role::User, Some(tenant)) => Err(ApiError::not_found("tenant", tenant)),
    }
}

fn parse_since(since: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    since
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|error| ApiError::bad_parameter("since", format!("{text:?} is not an rfc 3339 time: {error}")))
        })
        .transpose()
}

fn parse_tenant(tenant: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    tenant
        .map(|text| {
            Uuid::parse_str(text)
                .map(TenantId)
                .map_err(|error| ApiError::bad_parameter("tenant", format!("{text:?} is not a uuid: {error}")))
        })
        .transpose()
}

fn check_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    let limit = limit as usize;
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            format!("{limit} is outside 1..={MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

pub struct AuditApi;

#[OpenApi(prefix_path = "/v1")]
impl AuditApi {
    /// Audit records in chain order. An admin reads every tenant's, or one
    /// tenant's with `tenant`; a user reads only its own.
    #[oai(path = "/audit", method = "get", tag = "Tag::Audit")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        /// A tenant id; users may only name their own.
        tenant: Query<Option<String>>,
        /// An event type, such as `DocumentRegistered`.
        #[oai(name = "type")]
        event_type: Query<Option<String>>,
        /// Records recorded at or after this RFC 3339 time.
        since: Query<Option<String>>,
        /// Records per page: 1 to 1000, 100 by default.
        limit: Query<Option<u32>>,
        /// The `next_after` of the previous page.
        after: Query<Option<i64>>,
    ) -> poem::Result<Json<AuditPage>> {
        let caller = auth.0;
        caller.require_tenant_wide("read the audit log")?;
        let tenant_id = tenant_scope(&caller, parse_tenant(tenant.0.as_deref())?)?;
        let since = parse_since(since.0.as_deref())?;
        let limit = check_limit(limit.0)?;
        let records = app
            .audit
            .list(&AuditFilter {
                tenant_id,
                event_type: event_type.0,
                since,
                after_seq: after.0.unwrap_or(0).max(0),
                limit,
            })
            .await
            .map_err(ApiError::internal)?;
        let next_after = if records.len() == limit {
            records.last().map(|record| record.seq)
        } else {
            None
        };
        Ok(Json(AuditPage {
            items: records.into_iter().map(Into::into).collect(),
            next_after,
        }))
    }
}
