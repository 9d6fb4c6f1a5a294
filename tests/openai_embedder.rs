//! The OpenAI-compatible embedder against a real server:
//! `scripts/embedding_server.py`, which computes all-MiniLM-L6-v2 vectors
//! with sentence-transformers and can be told to fail in the ways a remote
//! server does. Needs `NEUROSTASH_ST_PYTHONPATH` and
//! `NEUROSTASH_EMBED_MODEL_DIR`, which `bash scripts/test.sh` provides.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neurostash::pipeline::{EmbedError, Embedder, OpenAiEmbedder, OpenAiSettings};
use serde::Deserialize;

const MODEL: &str = "all-MiniLM-L6-v2";

fn tools_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: `bash scripts/test.sh` provides it"))
}

/// One `embedding_server.py`, stopped when dropped.
struct EmbeddingServer {
    child: Child,
    port: u16,
}

#[derive(Debug, Deserialize)]
struct Stats {
    requests: usize,
    statuses: Vec<u16>,
    batch_sizes: Vec<usize>,
}

impl EmbeddingServer {
    fn start(options: &[&str]) -> EmbeddingServer {
        let python_path = tools_env("NEUROSTASH_ST_PYTHONPATH");
        let model_dir = tools_env("NEUROSTASH_EMBED_MODEL_DIR");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/embedding_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0", "--model-dir", &model_dir])
            .args(options)
            .env("PYTHONPATH", python_path)
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 scripts/embedding_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("server stdout"))
            .read_line(&mut line)
            .expect("read the server's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the embedding server printed {line:?}, not its port"));
        EmbeddingServer { child, port }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn settings(&self) -> OpenAiSettings {
        OpenAiSettings {
            // the first request that needs vectors loads the model
            timeout: Duration::from_secs(120),
            max_retries: 3,
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            ..OpenAiSettings::new(self.base_url(), MODEL)
        }
    }

    async fn stats(&self) -> Stats {
        reqwest::get(format!("http://127.0.0.1:{}/stats", self.port))
            .await
            .expect("GET /stats")
            .json()
            .await
            .expect("stats json")
    }
}

impl Drop for EmbeddingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sentence-transformers' own vectors for `texts`, computed outside the
/// server.
fn reference_vectors(texts: &[String]) -> Vec<Vec<f32>> {
    let program = "import json, sys\n\
        from sentence_transformers import SentenceTransformer\n\
        model = SentenceTransformer(sys.argv[1], device='cpu')\n\
        print(json.dumps(model.encode(json.load(sys.stdin)).tolist()))\n";
    let mut child = Command::new("python3")
        .args(["-c", program, &tools_env("NEUROSTASH_EMBED_MODEL_DIR")])
        .env("PYTHONPATH", tools_env("NEUROSTASH_ST_PYTHONPATH"))
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the sentence-transformers reference");
    serde_json::to_writer(child.stdin.take().expect("stdin"), texts).expect("write texts");
    let output = child.wait_with_output().expect("reference output");
    assert!(output.status.success(), "the sentence-transformers reference failed");
    serde_json::from_slice(&output.stdout).expect("reference vectors")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (norm(a) * norm(b))
}

fn norm(vector: &[f32]) -> f32 {
    vector.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|text| text.to_string()).collect()
}

#[tokio::test]
async fn vectors_are_sentence_transformers_vectors_at_unit_length() {
    let key = "sk-test-correct-key-0042";
    // a server that does not normalise, behind a key
    let server = EmbeddingServer::start(&["--scale", "2.5", "--require-key", key]);
    let embedder = OpenAiEmbedder::connect(OpenAiSettings {
        api_key: Some(key.to_owned()),
        ..server.settings()
    })
    .await
    .expect("connect");

    assert_eq!(embedder.model().name, MODEL);
    assert_eq!(embedder.model().dimensions, 384);
    assert_eq!(embedder.model().version, format!("{MODEL}@127.0.0.1:{}", server.port));
    assert_eq!(embedder.max_input_tokens(), 256);
    let described = embedder.describe();
    assert!(
        described.contains(MODEL) && described.contains(&server.base_url()),
        "{described}"
    );
    assert!(!described.contains(key) && !format!("{embedder:?}").contains(key));

    let inputs = texts(&[
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
        "Rust's borrow checker enforces lifetimes.",
        "Ein Hund läuft über die Wiese.",
    ]);
    let vectors = embedder.embed(&inputs).await.expect("embed");
    let reference = reference_vectors(&inputs);
    assert_eq!(vectors.len(), inputs.len());
    for (index, (vector, expected)) in vectors.iter().zip(&reference).enumerate() {
        assert_eq!(vector.len(), 384);
        assert!(
            (norm(vector) - 1.0).abs() < 1e-4,
            "vector {index} has norm {}",
            norm(vector)
        );
        let similarity = cosine(vector, expected);
        assert!(
            similarity > 0.999,
            "text {index}: cosine {similarity} with sentence-transformers"
        );
    }
    // the well-known pair stays as close as the model makes it
    let pair = cosine(&vectors[0], &vectors[1]);
    assert!((pair - 0.7553).abs() < 0.01, "cosine of the food pair {pair}");
    assert!(embedder.embed(&[]).await.expect("no texts").is_empty());
}

#[tokio::test]
async fn texts_go_in_batches_and_come_back_in_order() {
    // the server lists its vectors last first: order must come from `index`
    let server = EmbeddingServer::start(&["--reverse-data"]);
    let embedder = OpenAiEmbedder::connect(OpenAiSettings {
        batch_size: 32,
        ..server.settings()
    })
    .await
    .expect("connect");
    let subjects = [
        "rivers",
        "compilers",
        "bread",
        "tennis",
        "volcanoes",
        "violins",
        "taxes",
    ];
    let inputs: Vec<String> = (0..70)
        .map(|i| format!("Note {i}: a few words about {}.", subjects[i % subjects.len()]))
        .collect();
    let vectors = embedder.embed(&inputs).await.expect("embed 70 texts");
    assert_eq!(vectors.len(), 70);
    let stats = server.stats().await;
    // the connection check, then 32 + 32 + 6
    assert_eq!(stats.batch_sizes, [1, 32, 32, 6]);

    for index in [0, 1, 30, 31, 32, 33, 63, 64, 65, 69] {
        let alone = embedder.embed(&inputs[index..=index]).await.expect("embed one");
        let nearest = vectors
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| cosine(a, &alone[0]).total_cmp(&cosine(b, &alone[0])))
            .map(|(at, _)| at);
        assert_eq!(nearest, Some(index), "text {index} came back at another place");
        assert!(cosine(&vectors[index], &alone[0]) > 0.9999);
    }
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let server = EmbeddingServer::start(&["--fail-first", "2"]);
    let embedder = OpenAiEmbedder::connect(server.settings())
        .await
        .expect("connect after two 503s");
    assert_eq!(server.stats().await.statuses, [503, 503, 200]);
    let vectors = embedder
        .embed(&texts(&["first", "second", "third"]))
        .await
        .expect("embed");
    assert_eq!(vectors.len(), 3);

    // the same server shortens its vectors when asked, as OpenAI's do
    let shortened = OpenAiEmbedder::connect(OpenAiSettings {
        dimensions: Some(64),
        ..server.settings()
    })
    .await
    .expect("connect with dimensions");
    assert_eq!(shortened.model().dimensions, 64);
    let vectors = shortened.embed(&texts(&["short"])).await.expect("embed shortened");
    assert_eq!(vectors[0].len(), 64);
    assert!((norm(&vectors[0]) - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_a_transient_failure_after_the_retries() {
    let server = EmbeddingServer::start(&["--fail-first", "1000000"]);
    let error = OpenAiEmbedder::connect(OpenAiSettings {
        max_retries: 2,
        ..server.settings()
    })
    .await
    .expect_err("never answered");
    assert!(matches!(error, EmbedError::Failed { .. }), "{error}");
    assert!(error.is_transient());
    let message = error.to_string();
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert!(
        message.contains("503") && message.contains("the model is loading"),
        "{message}"
    );
    assert_eq!(server.stats().await.requests, 3);
}

#[tokio::test]
async fn a_wrong_key_is_rejected_without_showing_it() {
    let server = EmbeddingServer::start(&["--require-key", "sk-right"]);
    let wrong = "sk-wrong-key-never-shown-7781";
    let error = OpenAiEmbedder::connect(OpenAiSettings {
        api_key: Some(wrong.to_owned()),
        ..server.settings()
    })
    .await
    .expect_err("wrong key");
    assert!(matches!(error, EmbedError::Rejected { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("refused the api key (401)"), "{message}");
    // the server echoes the key it was given; the error must not
    assert!(!message.contains(wrong) && message.contains("[redacted]"), "{message}");
    // permanent: no retries
    assert_eq!(server.stats().await.requests, 1);

    let error = OpenAiEmbedder::connect(server.settings()).await.expect_err("no key");
    assert!(error.to_string().contains("requires an api key (401)"), "{error}");
}

#[tokio::test]
async fn a_slow_server_is_a_timeout() {
    let server = EmbeddingServer::start(&["--delay-ms", "3000"]);
    let started = Instant::now();
    let error = OpenAiEmbedder::connect(OpenAiSettings {
        timeout: Duration::from_millis(300),
        max_retries: 1,
        ..server.settings()
    })
    .await
    .expect_err("too slow");
    assert!(matches!(error, EmbedError::Failed { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("gave up after 2 attempts") && message.contains("timed out"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_dimension_is_rejected_at_start_up() {
    let server = EmbeddingServer::start(&["--dimensions-override", "100"]);
    let error = OpenAiEmbedder::connect(OpenAiSettings {
        dimensions: Some(384),
        ..server.settings()
    })
    .await
    .expect_err("wrong dimension");
    assert!(matches!(error, EmbedError::Rejected { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("100-dimensional") && message.contains("dimensions is set to 384"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_model_is_rejected() {
    let server = EmbeddingServer::start(&[]);
    let error = OpenAiEmbedder::connect(OpenAiSettings {
        model: "text-embedding-3-large".to_owned(),
        ..server.settings()
    })
    .await
    .expect_err("unknown model");
    assert!(matches!(error, EmbedError::Rejected { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("no model text-embedding-3-large") && message.contains("(404)"),
        "{message}"
    );
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_failure() {
    // a port just freed: nothing listens there
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let error = OpenAiEmbedder::connect(OpenAiSettings {
        max_retries: 1,
        retry_base: Duration::from_millis(10),
        ..OpenAiSettings::new(format!("http://127.0.0.1:{port}/v1"), MODEL)
    })
    .await
    .expect_err("nothing listens");
    assert!(error.is_transient(), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{error}"
    );
}

/// The whole server configured for the OpenAI-compatible embedder and
/// the served model's tokenizer: a knowledge base is pinned to the served
/// model, a document is chunked in the model's tokens, embedded through the
/// server in batches and found by a search.
#[tokio::test]
async fn the_server_embeds_and_searches_through_an_openai_compatible_api() {
    let server = EmbeddingServer::start(&[]);
    let base_url = server.base_url();
    let tokenizer_path = std::path::Path::new(&tools_env("NEUROSTASH_EMBED_MODEL_DIR")).join("tokenizer.json");
    let configured_tokenizer = tokenizer_path.clone();
    let app = common::spawn_app_configured(common::Backend::Sqlite, |config| {
        config.embedder = Some(neurostash::config::EmbedderKind::Openai);
        config.embed_url = Some(base_url);
        config.embed_model = Some(MODEL.to_owned());
        config.embed_batch_size = 3;
        config.embed_timeout_secs = 120;
        config.embed_tokenizer = Some(configured_tokenizer);
    })
    .await;
    let (_, key) = app.create_user("ada@example.com").await;
    let max_tokens = 24;
    let (status, kb) = app
        .post(
            "/v1/knowledge-bases",
            &key,
            serde_json::json!({ "name": "remote", "chunking": { "max_tokens": max_tokens, "overlap_tokens": 0 } }),
        )
        .await;
    assert_eq!(status, 201, "{kb}");
    assert_eq!(kb["embedding_model"]["name"], MODEL);
    assert_eq!(kb["embedding_model"]["dimensions"], 384);
    assert!(
        kb["embedding_model"]["version"]
            .as_str()
            .unwrap()
            .ends_with(&format!("@127.0.0.1:{}", server.port)),
        "{kb}"
    );
    let kb = kb["id"].as_str().unwrap();
    let text = (0..12)
        .map(|i| format!("Paragraph {i} describes the migration of arctic terns along the coast.\n\n"))
        .collect::<String>()
        + "The harbour master keeps the tide tables in a brass cabinet.";
    let (status, document) = app.upload(&key, "terns.md", &text, Some(kb)).await;
    assert_eq!(status, 202, "{document}");
    let document = app.wait_processed(&key, document["id"].as_str().unwrap()).await;
    assert_eq!(document["status"], "SUCCESS", "{document}");
    let chunks = document["chunk_count"].as_u64().unwrap() as usize;
    assert!(chunks > 3, "more chunks than one batch: {document}");
    app.wait_indexed().await;
    let (status, found) = app.search(&key, kb, "where are the tide tables kept?", 3).await;
    assert_eq!(status, 200, "{found}");
    assert!(
        found["hits"][0]["text"].as_str().unwrap().contains("brass cabinet"),
        "{found}"
    );
    // every chunk within the size in the model's own tokens, which word
    // tokens undercount ("terns" is two)
    let (status, all) = app.search(&key, kb, "arctic terns", chunks as u32).await;
    assert_eq!(status, 200, "{all}");
    let hits = all["hits"].as_array().unwrap();
    assert_eq!(hits.len(), chunks, "{all}");
    // the file pads and cuts at 128, as all-MiniLM-L6-v2's does
    let mut tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).unwrap();
    tokenizer.with_padding(None).with_truncation(None).unwrap();
    for hit in hits {
        let text = hit["text"].as_str().unwrap();
        let tokens = tokenizer.encode(text, false).unwrap().len();
        assert!(tokens <= max_tokens, "{tokens} model tokens in {text:?}");
    }
    // the connect probe, the chunks in batches of 3, the query, the search above
    let stats = server.stats().await;
    assert!(stats.batch_sizes.iter().all(|size| *size <= 3), "{stats:?}");
    assert_eq!(stats.batch_sizes.iter().sum::<usize>(), 1 + chunks + 2, "{stats:?}");
    app.shutdown().await;
}
