//! The three aggregate types' supervisors, started together.

use std::sync::Arc;

use domain::document::Document;
use domain::knowledge_base::KnowledgeBase;
use domain::tenant::Tenant;

use crate::store::EventStore;
use crate::supervisor::{AggregateHandle, HandleOptions};

#[derive(Clone)]
pub struct ActorSystem {
    pub tenants: AggregateHandle<Tenant>,
    pub documents: AggregateHandle<Document>,
    pub knowledge_bases: AggregateHandle<KnowledgeBase>,
}

impl ActorSystem {
    pub async fn start(store: Arc<dyn EventStore>, options: HandleOptions) -> Result<Self, ractor::SpawnErr> {
        Ok(ActorSystem {
            tenants: AggregateHandle::start(store.clone(), options.clone()).await?,
            documents: AggregateHandle::start(store.clone(), options.clone()).await?,
            knowledge_bases: AggregateHandle::start(store, options).await?,
        })
    }

    pub fn stop(&self) {
        self.tenants.stop();
        self.documents.stop();
        self.knowledge_bases.stop();
    }
}
