//! Limits and hostile input, through HTTP: over-size uploads (with and
//! without a declared length), hostile file names, content types the
//! extension does not allow, JSON bodies over their bound. Each refusal is
//! checked to leave nothing behind: the registry's document list, the event
//! log and every object in the store (staging files included) are as they
//! were before it.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{read, spawn_app_configured, Backend, TestApp};

use serde_json::{json, Value};

/// The upload bound of these tests: small, so that over-size bodies are cheap.
const MAX_UPLOAD: usize = 128 * 1024;

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_configured(backend, |config| config.max_upload_bytes = MAX_UPLOAD).await
}

/// Everything a request could have left behind.
#[derive(Debug, PartialEq)]
struct Stored {
    documents: Value,
    /// (stream, version, type) of every event of the log.
    events: Vec<(String, i64, String)>,
    /// The store's keys, as it lists them.
    objects: Vec<String>,
    /// Every file under the local store's directory, staging files included.
    files: Vec<String>,
}

fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

async fn stored(app: &TestApp, key: &str) -> Stored {
    let (status, documents) = app.get("/v1/documents?limit=500", key).await;
    assert_eq!(status, 200, "{documents}");
    let events = app
        .app
        .store
        .read_log(domain::LogPosition::START, 100_000)
        .await
        .expect("read log")
        .into_iter()
        .map(|event| (event.stream_id.to_string(), event.stream_version, event.event_type))
        .collect();
    Stored {
        documents,
        events,
        objects: app.app.raw_objects.list("").await.expect("list objects"),
        files: files_under(&app.config.data_dir.join("objects")),
    }
}

/// A user with one document processed, so that the log is quiet (no
/// processing going on) when the refusals start.
async fn settled_user(app: &TestApp, email: &str) -> (String, String) {
    let (_, key) = app.create_user(email).await;
    let kb = app.create_knowledge_base(&key, "limits").await;
    let (status, body) = app
        .upload(&key, "baseline.txt", "a document that was accepted", Some(&kb))
        .await;
    assert_eq!(status, 202, "{body}");
    let document = app.wait_processed(&key, body["id"].as_str().unwrap()).await;
    assert_eq!(document["status"], "SUCCESS", "{document}");
    app.wait_registry().await;
    (key, kb)
}

/// A part of a hand-made multipart body: the file name goes into the
/// header byte for byte, as a hostile client would send it.
struct Part<'a> {
    name: &'a str,
    file_name: Option<&'a [u8]>,
    content_type: Option<&'a str>,
    body: Vec<u8>,
}

impl<'a> Part<'a> {
    fn file(file_name: &'a [u8], content_type: Option<&'a str>, body: impl Into<Vec<u8>>) -> Part<'a> {
        Part {
            name: "file",
            file_name: Some(file_name),
            content_type,
            body: body.into(),
        }
    }

    fn text(name: &'a str, value: &str) -> Part<'a> {
        Part {
            name,
            file_name: None,
            content_type: None,
            body: value.as_bytes().to_vec(),
        }
    }
}

const BOUNDARY: &str = "limits-test-boundary-7f3a";

fn form(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{}\"", part.name).as_bytes());
        if let Some(file_name) = part.file_name {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(file_name);
            body.extend_from_slice(b"\"");
        }
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&part.body);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A client of its own for a request whose body the server may refuse
/// unread: the server then closes the connection, which must not be left
/// in the shared client's pool for the next request to find broken.
fn one_off_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

/// Sends a multipart body with its Content-Length.
async fn post_form(app: &TestApp, key: &str, parts: &[Part<'_>]) -> (u16, Value) {
    let response = one_off_client()
        .post(app.url("/v1/documents"))
        .bearer_auth(key)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(form(parts))
        .send()
        .await
        .expect("upload is sent");
    read(response).await
}

/// A body sent chunked, without a Content-Length, piece by piece, over a
/// plain TCP connection that reads the answer while the body is still being
/// written: a server may answer early and then close on the rest, and an
/// HTTP client that reports its failed write instead of the answer it was
/// sent would hide what the server said. Returns the status, the problem
/// and how many bytes of the body were written before the answer came.
async fn post_chunked(
    app: &TestApp,
    path: &str,
    key: &str,
    content_type: &str,
    pieces: impl Iterator<Item = Vec<u8>> + Send + Sync + 'static,
) -> (u16, Value, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = app.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for piece in pieces {
            if piece.is_empty() {
                continue;
            }
            writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
            writer.write_all(&piece).await?;
            writer.write_all(b"\r\n").await?;
            counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        writer.write_all(b"0\r\n\r\n").await?;
        writer.flush().await
    });
    // everything the server sends until it closes; a reset after the
    // answer ends the read with what came before it
    let mut answer = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
        }
    }
    let written = pulled.load(Ordering::Relaxed);
    writing.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an answer to {content_type} at {path}: {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head:?}"));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, value, written)
}

/// The payload of a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `body` in pieces of 8 KiB.
fn pieces_of(body: Vec<u8>) -> impl Iterator<Item = Vec<u8>> + Send + Sync + 'static {
    body.chunks(8 * 1024)
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter()
}

/// `head`, then `fill` bytes of `byte` made as they are pulled, then `tail`.
fn long_body(
    head: Vec<u8>,
    byte: u8,
    fill: usize,
    tail: Vec<u8>,
) -> impl Iterator<Item = Vec<u8>> + Send + Sync + 'static {
    const PIECE: usize = 64 * 1024;
    let pieces = fill.div_ceil(PIECE);
    std::iter::once(head)
        .chain((0..pieces).map(move |index| vec![byte; PIECE.min(fill - index * PIECE)]))
        .chain(std::iter::once(tail))
}

/// A body far larger than any bound and the socket buffers between
/// client and server, so that a server reading it to its end is noticed.
const FLOOD: usize = 48 * 1024 * 1024;

fn assert_problem(status: u16, problem: &Value, expected_status: u16, expected_code: &str, what: &str) {
    assert_eq!(status, expected_status, "{what}: {problem}");
    assert_eq!(problem["code"], expected_code, "{what}: {problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty() && !detail.ends_with('.'), "{what}: {problem}");
}

async fn oversize_uploads_are_refused_and_leave_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let (key, kb) = settled_user(&app, "sizes@example.com").await;
    let before = stored(&app, &key).await;

    // the file one byte over, the body within the multipart bound: the
    // route's own count stops it
    let over = vec![b'a'; MAX_UPLOAD + 1];
    let (status, problem) = post_form(
        &app,
        &key,
        &[
            Part::text("knowledge_base_id", &kb),
            Part::file(b"big.txt", Some("text/plain"), over.clone()),
        ],
    )
    .await;
    assert_problem(status, &problem, 413, "payload_too_large", "one byte over, declared");
    assert!(
        problem["detail"].as_str().unwrap().contains(&MAX_UPLOAD.to_string()),
        "{problem}"
    );
    assert_eq!(stored(&app, &key).await, before, "one byte over, declared");

    // a declared length past the multipart bound: refused before any byte is read
    let (status, problem) = post_form(&app, &key, &[Part::file(b"huge.txt", None, vec![b'a'; 4 * MAX_UPLOAD])]).await;
    assert_problem(
        status,
        &problem,
        413,
        "payload_too_large",
        "declared length over the bound",
    );
    assert_eq!(stored(&app, &key).await, before, "declared length over the bound");

    // chunked, without a length: the file's count stops it as soon as it
    // passes the limit, long before the end of the body
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let whole = form(&[Part::file(b"streamed.txt", Some("text/plain"), "#")]);
    let split = whole.iter().position(|byte| *byte == b'#').unwrap();
    let body = long_body(whole[..split].to_vec(), b'a', FLOOD, whole[split + 1..].to_vec());
    let (status, problem, pulled) = post_chunked(&app, "/v1/documents", &key, &content_type, body).await;
    assert_problem(
        status,
        &problem,
        413,
        "payload_too_large",
        "chunked file over the limit",
    );
    assert!(
        pulled < FLOOD as u64 / 4,
        "the server read {pulled} of {FLOOD} bytes before refusing"
    );
    assert_eq!(stored(&app, &key).await, before, "chunked file over the limit");

    // chunked, the file small but the form around it over the bound: the
    // body bound cuts it, and it is still a 413
    let body = form(&[
        Part::text("padding", &"p".repeat(2 * MAX_UPLOAD)),
        Part::file(b"small.txt", Some("text/plain"), "small"),
    ]);
    let (status, problem, _) = post_chunked(&app, "/v1/documents", &key, &content_type, pieces_of(body)).await;
    assert_problem(
        status,
        &problem,
        413,
        "payload_too_large",
        "chunked form over the bound",
    );
    assert_eq!(stored(&app, &key).await, before, "chunked form over the bound");

    // exactly at the limit is taken, declared or chunked, and the size and
    // hash are the file's
    let exact = vec![b'b'; MAX_UPLOAD];
    let (status, accepted) = post_form(&app, &key, &[Part::file(b"exact.txt", None, exact.clone())]).await;
    assert_eq!(status, 202, "{accepted}");
    let (_, document) = app
        .get(&format!("/v1/documents/{}", accepted["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!(document["size_bytes"], MAX_UPLOAD as u64, "{document}");
    assert_eq!(document["sha256"], actors::artifact::sha256_hex(&exact), "{document}");
    // other bytes: the same ones again would be answered with the first document
    let exact = vec![b'c'; MAX_UPLOAD];
    let body = form(&[Part::file(b"exact-chunked.txt", None, exact.clone())]);
    let (status, accepted, _) = post_chunked(&app, "/v1/documents", &key, &content_type, pieces_of(body)).await;
    assert_eq!(status, 202, "{accepted}");
    let (_, document) = app
        .get(&format!("/v1/documents/{}", accepted["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!(document["size_bytes"], MAX_UPLOAD as u64, "{document}");
    assert_eq!(document["sha256"], actors::artifact::sha256_hex(&exact), "{document}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_uploads_are_refused_and_leave_nothing_on_sqlite() {
    oversize_uploads_are_refused_and_leave_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_uploads_are_refused_and_leave_nothing_on_postgres() {
    oversize_uploads_are_refused_and_leave_nothing(Backend::Postgres).await;
}

async fn hostile_uploads_are_refused_and_leave_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let (key, kb) = settled_user(&app, "hostile@example.com").await;
    let before = stored(&app, &key).await;

    let long_name = format!("{}.txt", "n".repeat(296));
    for (file_name, reason) in [
        (&b"../etc/passwd"[..], "path separator"),
        (b"../../etc/passwd.txt", "path separator"),
        (b"a/b.txt", "path separator"),
        (b"a\\b.txt", "path separator"),
        (b"..\\windows\\win.ini.txt", "path separator"),
        ("bad\u{85}name.txt".as_bytes(), "control characters"),
        ("two\u{2028}lines.txt".as_bytes(), "control characters"),
        // shows as "invoicetxt.md" with the extension .md hidden in the middle
        ("invoice\u{202e}dm.txt".as_bytes(), "bidirectional formatting"),
        ("isolate\u{2067}.txt".as_bytes(), "bidirectional formatting"),
        (long_name.as_bytes(), "at most 255 bytes"),
        (format!("{}.txt", "c".repeat(197)).as_bytes(), "at most 200 characters"),
        (b"", "must not be empty"),
        (b"   ", "must not be empty"),
        (b"..", "dots only"),
        (b".", "dots only"),
    ] {
        let shown = String::from_utf8_lossy(file_name).into_owned();
        let (status, problem) = post_form(
            &app,
            &key,
            &[
                Part::text("knowledge_base_id", &kb),
                Part::file(file_name, Some("text/plain"), "text"),
            ],
        )
        .await;
        assert_problem(status, &problem, 400, "invalid_file_name", &shown);
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{shown:?}: {problem}"
        );
        assert_eq!(stored(&app, &key).await, before, "{shown:?}");
    }

    // a C0 control character breaks the part's header itself: the form is
    // refused before its file name is looked at
    for file_name in [&b"bad\x07name.txt"[..], b"nul\x00byte.txt", b"esc\x1b[31m.txt"] {
        let (status, problem) = post_form(&app, &key, &[Part::file(file_name, Some("text/plain"), "text")]).await;
        assert_eq!(status, 400, "{file_name:?}: {problem}");
        assert!(
            ["invalid_upload", "invalid_file_name"].contains(&problem["code"].as_str().unwrap()),
            "{problem}"
        );
        assert_eq!(stored(&app, &key).await, before, "{file_name:?}");
    }

    // a file part without a file name, and forms without a file or with two
    let no_name = Part {
        name: "file",
        file_name: None,
        content_type: Some("text/plain"),
        body: b"text".to_vec(),
    };
    let (status, problem) = post_form(&app, &key, &[no_name]).await;
    assert_problem(status, &problem, 400, "invalid_file_name", "no file name");
    let (status, problem) = post_form(&app, &key, &[Part::text("knowledge_base_id", &kb)]).await;
    assert_problem(status, &problem, 400, "invalid_upload", "no file");
    let (status, problem) = post_form(
        &app,
        &key,
        &[Part::file(b"one.txt", None, "one"), Part::file(b"two.txt", None, "two")],
    )
    .await;
    assert_problem(status, &problem, 400, "invalid_upload", "two files");
    assert_eq!(stored(&app, &key).await, before, "malformed forms");

    // content types the extension does not allow, and extensions not supported
    for (file_name, content_type) in [
        (&b"page.txt"[..], "text/html"),
        (b"notes.md", "application/pdf"),
        (b"notes.txt", "text/markdown"),
        (b"script.txt", "application/javascript; charset=utf-8"),
        (b"image.md", "image/svg+xml"),
    ] {
        let (status, problem) = post_form(&app, &key, &[Part::file(file_name, Some(content_type), "text")]).await;
        assert_problem(status, &problem, 415, "unsupported_content_type", content_type);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("text/plain") && detail.contains("application/octet-stream"),
            "{problem}"
        );
        assert_eq!(stored(&app, &key).await, before, "{content_type}");
    }
    for file_name in [&b"report.exe"[..], b"archive.tar.gz", b"Makefile", b"trailing."] {
        let (status, problem) = post_form(&app, &key, &[Part::file(file_name, None, "MZ")]).await;
        assert_problem(
            status,
            &problem,
            415,
            "unsupported_file_type",
            &String::from_utf8_lossy(file_name),
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("txt, text, md, markdown"),
            "{problem}"
        );
        assert_eq!(stored(&app, &key).await, before, "{file_name:?}");
    }

    // a knowledge base that is not the caller's, before the file (nothing
    // is read of it) and after it (its bytes were stored and are removed)
    let (_, other_key) = app.create_user("someone-else@example.com").await;
    let foreign_kb = app.create_knowledge_base(&other_key, "theirs").await;
    app.wait_registry().await;
    let before = stored(&app, &key).await;
    for parts in [
        vec![
            Part::text("knowledge_base_id", &foreign_kb),
            Part::file(b"into-theirs.txt", None, "text"),
        ],
        vec![
            Part::file(b"into-theirs.txt", None, "text"),
            Part::text("knowledge_base_id", &foreign_kb),
        ],
    ] {
        let (status, problem) = post_form(&app, &key, &parts).await;
        assert_problem(status, &problem, 404, "not_found", "another tenant's knowledge base");
        assert_eq!(stored(&app, &key).await, before, "another tenant's knowledge base");
    }
    let (status, problem) = post_form(
        &app,
        &key,
        &[
            Part::file(b"bad-kb.txt", None, "text"),
            Part::text("knowledge_base_id", "not-a-uuid"),
        ],
    )
    .await;
    assert_problem(
        status,
        &problem,
        422,
        "invalid_input",
        "a malformed knowledge base id after the file",
    );
    assert_eq!(
        stored(&app, &key).await,
        before,
        "a malformed knowledge base id after the file"
    );

    // a key limited to a knowledge base uploading outside any: refused once
    // the form shows no knowledge base, after its file was stored
    let (status, scoped) = app
        .post("/v1/api-keys", &key, json!({ "knowledge_base_ids": [kb] }))
        .await;
    assert_eq!(status, 201, "{scoped}");
    app.wait_registry().await;
    let before = stored(&app, &key).await;
    let scoped_key = scoped["api_key"].as_str().unwrap();
    let (status, problem) = post_form(&app, scoped_key, &[Part::file(b"outside.txt", None, "text")]).await;
    assert_problem(
        status,
        &problem,
        403,
        "knowledge_base_scoped_key",
        "scoped key outside its knowledge bases",
    );
    assert_eq!(
        stored(&app, &key).await,
        before,
        "scoped key outside its knowledge bases"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_refused_and_leave_nothing_on_sqlite() {
    hostile_uploads_are_refused_and_leave_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_refused_and_leave_nothing_on_postgres() {
    hostile_uploads_are_refused_and_leave_nothing(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_content_types_are_recorded_as_the_allow_list_spells_them() {
    let app = spawn(Backend::Sqlite).await;
    let (_, key) = app.create_user("types@example.com").await;
    for (file_name, declared, recorded) in [
        (&b"plain.txt"[..], Some("text/plain; charset=UTF-8"), "text/plain"),
        (b"notes.md", Some("text/plain"), "text/plain"),
        (b"notes2.md", Some("Text/X-Markdown"), "text/x-markdown"),
        (b"curl.md", Some("application/octet-stream"), "text/markdown"),
        (b"silent.TXT", None, "text/plain"),
    ] {
        // bytes of its own each, or the later ones would be answered as duplicates
        let text = format!("some text of {}", String::from_utf8_lossy(file_name));
        let (status, accepted) = post_form(&app, &key, &[Part::file(file_name, declared, text)]).await;
        assert_eq!(status, 202, "{declared:?}: {accepted}");
        let (_, document) = app
            .get(&format!("/v1/documents/{}", accepted["id"].as_str().unwrap()), &key)
            .await;
        assert_eq!(document["content_type"], recorded, "{document}");
    }
    // one name, one spelling: the decomposed name is the composed one's document
    let (_, first) = post_form(
        &app,
        &key,
        &[Part::file("re\u{301}sume\u{301}.txt".as_bytes(), None, "v1")],
    )
    .await;
    let (status, second) = post_form(&app, &key, &[Part::file("r\u{e9}sum\u{e9}.txt".as_bytes(), None, "v2")]).await;
    // the same document: other bytes under its name are its next version
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["id"], first["id"], "{second}");
    assert_eq!(second["version"], 2, "{second}");
    let (_, document) = app
        .get(&format!("/v1/documents/{}", first["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!(document["file_name"], "r\u{e9}sum\u{e9}.txt", "{document}");
    app.shutdown().await;
}

async fn json_bodies_over_their_bound_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let (key, kb) = settled_user(&app, "json@example.com").await;
    let bound = app.config.max_json_body_bytes;
    assert_eq!(bound, 64 * 1024, "the default bound");
    let before = stored(&app, &key).await;

    // declared: refused before it is read
    let name = "n".repeat(bound + 1);
    for path in [
        "/v1/knowledge-bases".to_owned(),
        format!("/v1/knowledge-bases/{kb}/search"),
    ] {
        let response = one_off_client()
            .post(app.url(&path))
            .bearer_auth(&key)
            .json(&json!({ "name": name, "query": name }))
            .send()
            .await
            .expect("request is sent");
        let (status, problem) = read(response).await;
        assert_problem(status, &problem, 413, "payload_too_large", &path);
        assert!(
            problem["detail"].as_str().unwrap().contains(&bound.to_string()),
            "{problem}"
        );
        assert_eq!(stored(&app, &key).await, before, "{path}");
    }
    // chunked: cut off as it passes the bound, long before its end
    let body = long_body(br#"{"name":""#.to_vec(), b'n', FLOOD, br#""}"#.to_vec());
    let (status, problem, pulled) = post_chunked(&app, "/v1/knowledge-bases", &key, "application/json", body).await;
    assert_problem(status, &problem, 413, "payload_too_large", "chunked json");
    assert!(
        pulled < FLOOD as u64 / 4,
        "the server read {pulled} of {FLOOD} bytes before refusing"
    );
    assert_eq!(stored(&app, &key).await, before, "chunked json");

    // a JSON route does not take the upload bound by declaring a form
    let (status, problem, _) = post_chunked(
        &app,
        "/v1/knowledge-bases",
        &key,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        pieces_of(vec![b'x'; 4 * bound]),
    )
    .await;
    assert_eq!(status, 415, "{problem}");
    assert_eq!(stored(&app, &key).await, before, "a form to a json route");

    // within the bound, a body goes on to be judged on its content
    let (status, problem) = app
        .post("/v1/knowledge-bases", &key, json!({ "name": "n".repeat(bound / 2) }))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, body, _) = post_chunked(
        &app,
        "/v1/knowledge-bases",
        &key,
        "application/json",
        pieces_of(serde_json::to_vec(&json!({ "name": "chunked but small" })).unwrap()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // and an upload past the json bound is still an upload
    let (status, accepted) = post_form(&app, &key, &[Part::file(b"mid.txt", None, vec![b'm'; bound + 1])]).await;
    assert_eq!(status, 202, "{accepted}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_over_their_bound_are_refused_on_sqlite() {
    json_bodies_over_their_bound_are_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_over_their_bound_are_refused_on_postgres() {
    json_bodies_over_their_bound_are_refused(Backend::Postgres).await;
}
