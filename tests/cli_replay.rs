//! `neurostash replay` run as the built binary: SIGINT stops it between
//! batches with exit code 130 and a way to resume, and the rerun resumes
//! from the shadow's checkpoint rather than from the start, then switches.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use actors::db::Database;
use actors::store::{ExpectedVersion, NewEvent};
use domain::{EventMetadata, TenantId};
use projections::registry::Registry;
use uuid::Uuid;

const TENANTS: usize = 10_000;

fn neurostash(data_dir: &Path, args: &[&str]) -> Command {
    common::embedded_command(data_dir, args)
}

async fn open(data_dir: &Path) -> Database {
    let url = format!("sqlite://{}", data_dir.join("neurostash.db").display());
    let database = Database::connect(&url, &Default::default()).await.expect("database");
    database.migrate_up().await.expect("migrations");
    database
}

/// A log long enough that a replay in small batches takes a while.
async fn write_log(database: &Database) {
    let store = database.event_store();
    for index in 0..TENANTS {
        let tenant = TenantId(Uuid::new_v4());
        let email = format!("tenant-{index}@example.com");
        store
            .append(
                &tenant.stream_id(),
                ExpectedVersion::Exactly(0),
                vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "TenantRegistered".to_string(),
                    schema_version: 1,
                    data: serde_json::json!({ "tenant_id": tenant, "email": email, "role": "USER" }),
                    metadata: EventMetadata::system(Uuid::now_v7()),
                }],
            )
            .await
            .expect("append");
    }
}

async fn wait_for_shadow_checkpoint(database: &Database) {
    let Database::Sqlite(pool) = database else {
        panic!("the test runs on the embedded backend");
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the replay never checkpointed a shadow"
        );
        let shadows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM projection_checkpoints WHERE name LIKE 'registry@%'")
                .fetch_one(pool)
                .await
                .expect("read the checkpoints");
        if shadows > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_a_replay_that_then_resumes_where_it_stopped() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let database = open(data_dir.path()).await;
    write_log(&database).await;

    let child = neurostash(data_dir.path(), &["replay", "registry", "--batch-size", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the replay");
    // once the shadow has a checkpoint the replay is under way: interrupt
    // it as a person at a terminal would
    wait_for_shadow_checkpoint(&database).await;
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let stopped = child.wait_with_output().expect("the replay ends");
    let stderr = String::from_utf8_lossy(&stopped.stderr).into_owned();
    assert_eq!(
        stopped.status.code(),
        Some(130),
        "exit code after SIGINT; stderr: {stderr}"
    );
    let generation = stderr
        .split("into generation ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the message names the generation: {stderr}"))
        .to_string();
    assert!(stderr.contains("to resume"), "{stderr}");

    let resumed = neurostash(data_dir.path(), &["replay", "registry", "--generation", &generation])
        .output()
        .expect("rerun the replay");
    let stdout = String::from_utf8_lossy(&resumed.stdout).into_owned();
    assert!(
        resumed.status.success(),
        "the rerun finishes: {stdout} {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        stdout.contains(&format!("to {generation} at")),
        "the rerun switched to the shadow: {stdout}"
    );
    // "N events from COMMIT:POSITION": it went on from where it stopped
    let from = stdout
        .split(" events from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the summary names where the rerun began: {stdout}"));
    assert_ne!(
        from, "0:0",
        "the rerun resumed from the checkpoint, not the start: {stdout}"
    );
    let events: usize = stdout
        .split(" events from ")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("the summary counts events: {stdout}"));
    assert!(events < TENANTS, "only what the first run left: {events} of {TENANTS}");

    let users = Registry::new(database.clone()).dump().await.expect("dump");
    let user_rows = users
        .tables
        .iter()
        .find(|table| table.table == "user_clients")
        .map_or(0, |table| table.rows.len());
    assert_eq!(user_rows, TENANTS, "the switched-to generation holds every tenant");
    database.close().await;
}
