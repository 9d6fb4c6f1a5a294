//! `neurostash replay`: a projection rebuilt into a shadow generation while
//! the API serves, switched to, rolled back and dropped, on SQLite and on
//! Postgres; the registry and the search results agree before and after, a
//! stopped replay resumes from its checkpoint, and the running server's
//! runners write the new live generation.

mod common;

use std::time::{Duration, Instant};

use common::corpus::{searches, DOCUMENTS};
use common::{spawn_app, Backend, TestApp};
use domain::LogPosition;
use neurostash::replay::{ReplayContext, ReplayOutcome, ReplayProgress, ReplayRequest, ReplayTarget, Silent};
use projections::generations::{GenerationName, GenerationState, Generations};
use projections::registry::{Registry, RegistryDump};
use projections::runtime::Projection;
use tokio::sync::watch;

/// Asks the job to stop once it has applied its first batch.
struct StopAfterFirstBatch(watch::Sender<bool>);

impl ReplayProgress for StopAfterFirstBatch {
    fn started(&self, _: &GenerationName, _: LogPosition, _: LogPosition) {}
    fn advanced(&self, _: LogPosition, _: u64, _: LogPosition) {
        let _ = self.0.send(true);
    }
    fn switching(&self) {}
}

fn context(app: &TestApp) -> ReplayContext {
    ReplayContext {
        database: app.app.database.clone(),
        store: app.app.store.clone(),
        objects: app.app.objects.clone(),
        vector_root: neurostash::app::vector_dir(&app.config),
    }
}

fn name(text: &str) -> GenerationName {
    GenerationName::parse(text).unwrap()
}

async fn live(app: &TestApp, projection: &str) -> GenerationName {
    Generations::new(app.app.database.clone())
        .live(projection)
        .await
        .expect("live generation")
}

async fn dump_of(app: &TestApp, generation: &str) -> RegistryDump {
    Registry::at_generation(app.app.database.clone(), name(generation))
        .dump()
        .await
        .expect("registry dump")
        .entities()
}

/// Waits until the server's vector projection uses `generation` and has
/// applied the whole log in it.
async fn wait_vector_generation(app: &TestApp, generation: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let head = app.app.store.log_head().await.expect("log head");
    loop {
        let vectors = app.app.vectors.as_ref().expect("the test app keeps a vector index");
        let checkpoint = vectors.checkpoint().await.expect("checkpoint");
        if vectors.generation() == name(generation) && checkpoint >= head {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "vector index still at generation {} {checkpoint}, not {generation} {head}",
            vectors.generation()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn replay_switch_rollback(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.create_user("ada@example.com").await;
    let kb = app.create_knowledge_base(&key, "mixed").await;
    for (file, text) in DOCUMENTS {
        let (status, body) = app.upload(&key, file, text, Some(&kb)).await;
        assert_eq!(status, 202, "upload {file}: {body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(app.wait_processed(&key, &id).await["status"], "SUCCESS");
    }
    app.wait_registry().await;
    app.wait_indexed().await;
    let live_tables = app.app.registry.dump().await.expect("dump").entities();
    let live_searches = searches(&app, &key, &kb).await;
    assert_eq!(
        live_searches[0]["hits"][0]["file_name"], "tides.txt",
        "{}",
        live_searches[0]
    );
    assert_eq!(
        live_searches[1]["hits"][0]["file_name"], "bees.md",
        "{}",
        live_searches[1]
    );
    let context = context(&app);

    // a replay stopped after its first batch keeps what it applied
    let mut request = ReplayRequest::new(ReplayTarget::Registry);
    request.generation = Some(name("g2"));
    request.batch_size = 3;
    let (stop, stopped) = watch::channel(false);
    let outcome = neurostash::replay::replay(&context, &request, &StopAfterFirstBatch(stop), stopped)
        .await
        .expect("replay runs");
    let ReplayOutcome::Interrupted {
        position: stopped_at,
        events,
        ..
    } = outcome
    else {
        panic!("the replay was not stopped: {outcome:?}");
    };
    assert_eq!(events, 3, "one batch applied before stopping");
    let registry_g2 = Registry::at_generation(app.app.database.clone(), name("g2"));
    assert_eq!(
        registry_g2.generation_checkpoint(&name("g2")).await.unwrap(),
        stopped_at
    );
    assert_eq!(
        live(&app, "registry").await,
        name("default"),
        "a stopped replay switches nothing"
    );

    // the api keeps serving, and writing, while the shadow is behind
    let (status, body) = app.get(&format!("/v1/knowledge-bases/{kb}"), &key).await;
    assert_eq!(status, 200, "{body}");
    let during = app.create_knowledge_base(&key, "written during the replay").await;

    // run again: it resumes from the checkpoint, not from 0, and switches
    let (_, running) = watch::channel(false);
    let outcome = neurostash::replay::replay(&context, &request, &Silent, running.clone())
        .await
        .expect("replay resumes");
    let ReplayOutcome::Switched { started_at, from, .. } = &outcome else {
        panic!("the replay did not switch: {outcome:?}");
    };
    assert_eq!(*started_at, stopped_at, "the rerun did not resume where it stopped");
    assert_eq!(from, &name("default"));
    assert_eq!(live(&app, "registry").await, name("g2"));
    let switched_tables = app.app.registry.dump().await.expect("dump").entities();
    assert_eq!(
        switched_tables,
        dump_of(&app, "default").await,
        "the shadow differs from the generation it replaced"
    );
    assert_ne!(switched_tables, live_tables, "the write during the replay is missing");

    // the vector index too, which the server loads from the shadow's directory
    let mut request = ReplayRequest::new(ReplayTarget::Vector);
    request.generation = Some(name("v2"));
    let outcome = neurostash::replay::replay(&context, &request, &Silent, running.clone())
        .await
        .expect("vector replay");
    assert!(matches!(outcome, ReplayOutcome::Switched { .. }), "{outcome:?}");
    wait_vector_generation(&app, "v2").await;
    assert_eq!(
        searches(&app, &key, &kb).await,
        live_searches,
        "search results changed with the switch"
    );

    // after the switch the server's runner writes the new live generation
    let after = app.create_knowledge_base(&key, "written after the switch").await;
    let (status, body) = app.get(&format!("/v1/knowledge-bases/{after}"), &key).await;
    assert_eq!(status, 200, "a write after the switch is not readable: {body}");
    app.wait_registry().await;
    let with_after = app.app.registry.dump().await.expect("dump").entities();
    assert_ne!(
        with_after,
        dump_of(&app, "default").await,
        "the retired generation got the write"
    );

    // rollback: the previous generation is live again, caught up
    let (rolled_from, rolled_to) = neurostash::replay::rollback(&context, ReplayTarget::Registry)
        .await
        .expect("rollback");
    assert_eq!((rolled_from, rolled_to), (name("g2"), name("default")));
    assert_eq!(live(&app, "registry").await, name("default"));
    assert_eq!(app.app.registry.dump().await.expect("dump").entities(), with_after);
    for id in [&kb, &during, &after] {
        let (status, body) = app.get(&format!("/v1/knowledge-bases/{id}"), &key).await;
        assert_eq!(status, 200, "knowledge base {id} after the rollback: {body}");
    }
    neurostash::replay::rollback(&context, ReplayTarget::Vector)
        .await
        .expect("vector rollback");
    wait_vector_generation(&app, "default").await;
    assert_eq!(
        searches(&app, &key, &kb).await,
        live_searches,
        "search results changed with the rollback"
    );

    // generations are listed; the live one cannot be dropped, a retired one can
    let listed = neurostash::replay::list(&context, ReplayTarget::Registry)
        .await
        .expect("list");
    let states: Vec<(String, GenerationState)> = listed
        .iter()
        .map(|(row, _)| (row.name.to_string(), row.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("default".to_owned(), GenerationState::Live),
            ("g2".to_owned(), GenerationState::Retired)
        ]
    );
    let refused = neurostash::replay::drop_generation(&context, ReplayTarget::Registry, &name("default"))
        .await
        .expect_err("the live generation is dropped");
    assert!(refused.to_string().contains("is live"), "{refused}");
    neurostash::replay::drop_generation(&context, ReplayTarget::Registry, &name("g2"))
        .await
        .expect("drop g2");
    neurostash::replay::drop_generation(&context, ReplayTarget::Vector, &name("v2"))
        .await
        .expect("drop v2");
    assert!(!neurostash::app::vector_dir(&app.config).join("v2").exists());
    assert!(registry_g2.dump().await.is_err(), "the tables of g2 are still there");
    let listed = neurostash::replay::list(&context, ReplayTarget::Registry)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    // the server still serves from the live generation
    assert_eq!(searches(&app, &key, &kb).await, live_searches);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_a_shadow_switch_and_rollback_on_sqlite() {
    replay_switch_rollback(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_a_shadow_switch_and_rollback_on_postgres() {
    replay_switch_rollback(Backend::Postgres).await;
}
