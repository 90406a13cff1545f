//! `sba serve`: the HTTP API on the wired services, bound and served until stopped.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use sba_infrastructure::config::Settings;
use sba_infrastructure::internal_store::InternalStore;

use super::wiring::Wiring;
use crate::http;

/// A built, bound, not yet running server.
pub struct Application {
    server: Server,
    port: u16,
    store: InternalStore,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Connects every adapter, migrates the internal store and binds `host:port`.
    ///
    /// # Errors
    /// When a dependency is unreachable or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let address = (settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(address).with_context(|| format!("binding {}:{}", address.0, address.1))?;
        Self::build_with_listener(settings, listener, std::future::pending()).await
    }

    /// Like [`Self::build`] on an already bound listener (tests bind port 0); the server
    /// stops gracefully when `shutdown` completes, as it does on SIGTERM or Ctrl-C.
    ///
    /// # Errors
    /// When a dependency is unreachable or the server cannot start.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        http::metrics::recorder();
        tokio::spawn(http::metrics::upkeep());
        let wiring = Wiring::connect(&settings, settings.store.max_connections).await?;
        let state = wiring.app_state().await?;
        let store = wiring.into_store();
        let port = listener.local_addr().context("reading the bound address")?.port();
        let limits = http::Limits { max_body_bytes: settings.server.max_body_bytes };
        let data = web::Data::new(state);
        let server =
            HttpServer::new(move || App::new().configure(|cfg| http::configure(cfg, data.clone(), limits)))
                .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
                .listen(listener)
                .context("starting the HTTP server")?
                .run();
        let handle = server.handle();
        tokio::spawn(async move {
            shutdown.await;
            handle.stop(true).await;
        });

        tracing::info!(
            environment = settings.environment.as_str(),
            address = %format_args!("http://{}:{port}", settings.server.host),
            internal_store = store.description(),
            adapters = %settings.adapter_summary(),
            "sba is serving"
        );
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        Ok(Self { server, port, store })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM, Ctrl-C or the shutdown future), letting in-flight
    /// requests finish, then closes the store.
    ///
    /// # Errors
    /// When the server fails while running.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.store.close().await;
        tracing::info!("sba stopped");
        result
    }
}
