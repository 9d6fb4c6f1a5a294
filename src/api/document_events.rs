//! `GET /v1/documents/{id}/events`: a document's events as server-sent
//! events, read from its stream in the log: everything so far, then each new
//! one as it is appended, so a client watches processing instead of polling.
//! Each SSE id is the event's stream version: a client that reconnects with
//! `Last-Event-ID` (or `?after=`) misses nothing and sees nothing twice.

use std::sync::Arc;
use std::time::Duration;

use actors::store::{EventStore, RecordedEvent};
use chrono::{DateTime, Utc};
use domain::document::{Document, DocumentEvent};
use domain::{Aggregate, DocumentId, StreamId, TenantId};
use futures::stream::BoxStream;
use futures::StreamExt;
use poem::web::sse::Event;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
use poem_openapi::types::ToJSON;
use poem_openapi::{Object, OpenApi, Tags};
use serde_json::Value;
use uuid::Uuid;

use super::documents::reachable_document;
use super::error::ApiError;
use super::ApiKeyAuth;
use crate::app::App;
use crate::event_view::{decode, event_data};

#[derive(Tags)]
enum Tag {
    Documents,
}

/// How often the stream is read again when no append in this process woke
/// it (appends by other processes, a worker in another process).
const POLL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read from the log at once.
const PAGE: usize = 256;

/// One event of a document, as its tenant sees it.
#[derive(Object)]
struct DocumentEventView {
    document_id: Uuid,
    /// The event's version in the document's stream; the SSE id.
    version: i64,
    /// The event type, e.g. `ProcessingStarted`; also the SSE event name.
    #[oai(rename = "type")]
    event_type: String,
    recorded_at: DateTime<Utc>,
    /// The document's status after this event: PENDING, PROCESSING,
    /// SUCCESS or FAILED (absent for an upload not yet completed or a
    /// deleted document).
    status: Option<String>,
    /// The event's own fields, sealed ones opened.
    data: Value,
}

pub struct DocumentEventsApi;

#[OpenApi(prefix_path = "/v1")]
impl DocumentEventsApi {
    /// A document's events, as server-sent events: those so far, then each
    /// new one. Resume with `Last-Event-ID` (or `after`), the last version seen.
    #[oai(path = "/documents/:id/events", method = "get", tag = "Tag::Documents")]
    async fn events(
        &self,
        app: Data<&Arc<App>>,
        auth: ApiKeyAuth,
        id: Path<Uuid>,
        /// The last version the client has seen (the SSE id).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// The same, for clients that cannot set the header.
        after: Query<Option<i64>>,
    ) -> poem::Result<EventStream<BoxStream<'static, DocumentEventView>>> {
        let caller = auth.0;
        let document = reachable_document(&app, &caller, id.0).await?;
        let from_header = match last_event_id.0.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| ApiError::BadRequest {
                code: "invalid_parameter",
                message: format!("header Last-Event-ID: {raw:?} is not an event version"),
            })?),
        };
        let after = from_header.or(after.0).unwrap_or(0).max(0);
        let events = watch(app.0.clone(), document.tenant_id, document.id, after);
        Ok(EventStream::new(events)
            .keep_alive(KEEP_ALIVE)
            .to_event(|view: DocumentEventView| {
                Event::message(view.to_json_string())
                    .id(view.version.to_string())
                    .event_type(view.event_type.clone())
            }))
    }
}

/// The events of `document` after version `after`, then each new one,
/// until the client goes away or the document is deleted.
fn watch(app: Arc<App>, tenant: TenantId, document: DocumentId, after: i64) -> BoxStream<'static, DocumentEventView> {
    let stream_id = document.stream_id();
    let state = Watch {
        app,
        tenant,
        document,
        stream_id,
        after,
        replayed: None,
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let views = state.next_page().await?;
        Some((futures::stream::iter(views), state))
    })
    .flatten()
    .boxed()
}

struct Watch {
    app: Arc<App>,
    tenant: TenantId,
    document: DocumentId,
    stream_id: StreamId,
    after: i64,
    /// The document as of `after`, for the status each event leads to.
    replayed: Option<Document>,
    ended: bool,
}

impl Watch {
    /// The next events there are, waiting for them when there are none;
    /// `None` ends the stream.
    async fn next_page(&mut self) -> Option<Vec<DocumentEventView>> {
        if self.ended {
            return None;
        }
        let store: Arc<dyn EventStore> = self.app.store.clone();
        if self.replayed.is_none() {
            // the state before the first event sent, for its status
            let earlier = read(&store, &self.stream_id, 0).await?;
            let mut document = Document::default();
            for event in earlier.iter().filter(|event| event.stream_version <= self.after) {
                if let Some(decoded) = decode(event) {
                    document.apply(&decoded);
                }
            }
            self.replayed = Some(document);
        }
        let appended = store.appended();
        loop {
            // registered before the read, so an append between the read and
            // the wait is not missed
            let woken = appended.notified();
            let events = read(&store, &self.stream_id, self.after).await?;
            if !events.is_empty() {
                let mut views = Vec::with_capacity(events.len().min(PAGE));
                for event in events.into_iter().take(PAGE) {
                    self.after = event.stream_version;
                    let Some(decoded) = decode(&event) else { continue };
                    let document = self.replayed.as_mut().expect("replayed above");
                    document.apply(&decoded);
                    if matches!(decoded, DocumentEvent::DocumentDeleted {}) {
                        self.ended = true;
                    }
                    let status = (!document.deleted)
                        .then(|| document.status.map(|status| status.as_str().to_owned()))
                        .flatten();
                    views.push(DocumentEventView {
                        document_id: self.document.0,
                        version: event.stream_version,
                        event_type: event.event_type.clone(),
                        recorded_at: event.recorded_at,
                        status,
                        data: event_data(&self.app.vault, self.tenant, &decoded).await,
                    });
                    if self.ended {
                        break;
                    }
                }
                return Some(views);
            }
            let _ = tokio::time::timeout(POLL, woken).await;
        }
    }
}

async fn read(store: &Arc<dyn EventStore>, stream_id: &StreamId, after: i64) -> Option<Vec<RecordedEvent>> {
    match store.read_stream(stream_id, after).await {
        Ok(events) => Some(events),
        Err(error) => {
            // the client reconnects with its Last-Event-ID and loses nothing
            tracing::warn!(%stream_id, %error, "document event stream ends: the log cannot be read");
            None
        }
    }
}
