//! An embedded app serving the API on loopback, for the benchmarks that
//! time requests through it.

use std::sync::Arc;

use anyhow::Context;
use neurostash::app::App;
use neurostash::config::Config;
use poem::listener::{Acceptor, Listener, TcpListener};
use uuid::Uuid;

pub struct Served {
    pub base: String,
    /// An admin's key.
    pub key: String,
    pub client: reqwest::Client,
    pub app: Arc<App>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// The defaults with `configure`'s changes, on a fresh data directory.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> anyhow::Result<Served> {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        configure(&mut config);
        let app = App::start(config).await?;
        let admin = neurostash::api::users::register_user(
            &app.actors,
            &app.key_hasher,
            &app.vault,
            "bench@example.com",
            domain::tenant::Role::Admin,
            domain::EventMetadata::system(Uuid::now_v7()),
        )
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
        app.settle(admin.written).await;
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let address = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .context("a tcp address")?;
        let routes = neurostash::api::routes(app.clone());
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(routes).await;
        });
        Ok(Served {
            base: format!("http://{address}"),
            key: admin.token,
            client: reqwest::Client::new(),
            app,
            server,
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.app.shutdown().await;
    }
}
