//! `neurostash audit` run as the built binary on an embedded data dir:
//! `tail` prints the log, `verify` passes on an intact audit log and exits
//! non-zero naming the record on a tampered one.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn neurostash(data_dir: &Path, args: &[&str]) -> Command {
    common::embedded_command(data_dir, args)
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    neurostash(data_dir, args).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn tamper(data_dir: &Path, sql: &str) {
    let url = format!("sqlite://{}", data_dir.join("neurostash.db").display());
    let database = actors::db::Database::connect(&url, &Default::default())
        .await
        .expect("the data dir's database opens");
    let actors::db::Database::Sqlite(pool) = &database else {
        panic!("a sqlite url gives a sqlite database");
    };
    let done = sqlx::query(sql).execute(pool).await.expect("tampering statement runs");
    assert_eq!(done.rows_affected(), 1, "{sql}");
    database.close().await;
}

#[tokio::test]
async fn verify_passes_then_detects_a_tampered_record() {
    let directory = tempfile::tempdir().expect("temp dir");
    let data_dir = directory.path();
    for email in ["ada@example.com", "alan@example.com"] {
        let created = run(data_dir, &["admin", "create-user", "--email", email]);
        assert!(created.status.success(), "create-user: {}", text(&created.stderr));
    }

    let intact = run(data_dir, &["audit", "verify"]);
    assert!(
        intact.status.success(),
        "verify of an intact log: {}{}",
        text(&intact.stdout),
        text(&intact.stderr)
    );
    assert!(
        text(&intact.stdout).contains("audit log intact"),
        "{}",
        text(&intact.stdout)
    );

    tamper(data_dir, "UPDATE audit_log SET event_type = 'Forged' WHERE seq = 1").await;
    let tampered = run(data_dir, &["audit", "verify"]);
    let (stdout, stderr) = (text(&tampered.stdout), text(&tampered.stderr));
    assert!(
        !tampered.status.success(),
        "verify of a tampered log succeeded: {stdout}"
    );
    assert!(stdout.contains("seq 1: record of event"), "{stdout}");
    assert!(stdout.contains("was modified"), "{stdout}");
    assert!(stderr.contains("audit log verification failed"), "{stderr}");
}

#[tokio::test]
async fn tail_prints_lines_or_json_filtered_and_follows_until_interrupted() {
    let directory = tempfile::tempdir().expect("temp dir");
    let data_dir = directory.path();
    let created = run(data_dir, &["admin", "create-user", "--email", "grace@example.com"]);
    assert!(created.status.success(), "create-user: {}", text(&created.stderr));

    let lines = run(data_dir, &["audit", "tail"]);
    assert!(lines.status.success(), "{}", text(&lines.stderr));
    let lines = text(&lines.stdout);
    assert!(
        lines
            .lines()
            .any(|line| line.contains("tenant=- key=- TenantRegistered tenant-")),
        "{lines}"
    );

    let json = run(data_dir, &["audit", "tail", "--json", "--type", "TenantRegistered"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let events: Vec<Value> = text(&json.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_type"], "TenantRegistered");
    assert!(events[0]["event_id"].is_string() && events[0]["log_position"].is_object());

    let none = run(data_dir, &["audit", "tail", "--since", "2999-01-01T00:00:00Z"]);
    assert!(none.status.success());
    assert!(none.stdout.is_empty(), "{}", text(&none.stdout));
    let bad = run(data_dir, &["audit", "tail", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("rfc 3339"), "{}", text(&bad.stderr));

    let mut follower = neurostash(data_dir, &["audit", "tail", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail --follow starts");
    let mut stdout = BufReader::new(follower.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("a first line");
    assert!(first.contains("TenantRegistered"), "{first}");

    // an event appended by another process shows up
    let another = run(data_dir, &["admin", "create-user", "--email", "hopper@example.com"]);
    assert!(another.status.success(), "{}", text(&another.stderr));
    let stream = domain::TenantId::for_email("hopper@example.com")
        .stream_id()
        .to_string();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|line: &String| line.contains(&stream)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("tail --follow did not print {stream} appended later: {seen:?}"),
        }
    }

    let interrupted = Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = follower.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "tail --follow did not stop on ctrl-c");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "tail --follow ends cleanly on ctrl-c: {status:?}");
    reader.join().expect("reader thread");
}
