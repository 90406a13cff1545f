//! `sba serve`: the HTTP API on the wired services, bound and served until stopped.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use sba_infrastructure::config::Settings;
use sba_infrastructure::internal_store::InternalStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::wiring::Wiring;
use super::worker::Worker;
use crate::http;

/// A built, bound, not yet running server.
pub struct Application {
    server: Server,
    port: u16,
    /// The admin listener's server and port, when `SBA_SERVER__ADMIN_PORT` is set.
    admin: Option<(Server, u16)>,
    store: InternalStore,
    /// The worker `SBA_WORKER__IN_PROCESS` runs beside the server, stopped with it.
    worker: Option<InProcessWorker>,
}

/// A [`Worker`] running as a task of the server's process.
struct InProcessWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl InProcessWorker {
    /// Builds the same worker `sba worker` runs (its own store pool) and starts it; it
    /// stops when `stop` is sent or dropped.
    async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let worker = Worker::build(settings).await.context("building the in-process worker")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self { stop, task })
    }

    /// Asks it to stop and waits until its current work is done.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the in-process worker failed");
        }
    }
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("admin_port", &self.admin_port())
            .field("in_process_worker", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects every adapter, migrates the internal store and binds `host:port`; the server
    /// stops gracefully on SIGTERM or Ctrl-C.
    ///
    /// # Errors
    /// When a dependency is unreachable or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = bind(settings.server.host, settings.server.port)?;
        let admin = settings.server.admin_port.map(|port| bind(settings.server.host, port)).transpose()?;
        Self::build_with_listeners(settings, listener, admin, super::signal::shutdown_signal()).await
    }

    /// Like [`Self::build`] on an already bound listener (tests bind port 0), without an
    /// admin listener; the server stops gracefully when `shutdown` completes: WebSocket
    /// connections flush what is queued and close with 1001, then in-flight requests finish.
    ///
    /// # Errors
    /// When a dependency is unreachable or the server cannot start.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        Self::build_with_listeners(settings, listener, None, shutdown).await
    }

    /// Like [`Self::build_with_listener`], with the admin listener: when there is one it
    /// serves `/metrics`, `/openapi.json` and `/docs`, and the public listener does not.
    /// With `SBA_WORKER__IN_PROCESS` the worker starts here too, and stops with the server.
    ///
    /// # Errors
    /// When a dependency is unreachable or a server cannot start.
    pub async fn build_with_listeners(
        settings: Settings,
        listener: TcpListener,
        admin_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        http::metrics::recorder();
        tokio::spawn(http::metrics::upkeep());
        let wiring = Wiring::connect(&settings, settings.store.max_connections).await?;
        let state = wiring.app_state().await?;
        let store = wiring.into_store();
        let worker =
            if settings.worker.in_process { Some(InProcessWorker::start(&settings).await?) } else { None };
        let port = listener.local_addr().context("reading the bound address")?.port();
        let limits = http::Limits { max_body_bytes: settings.server.max_body_bytes };
        let gateway = state.stream.clone();
        let data = web::Data::new(state);
        let admin_routes =
            if admin_listener.is_some() { http::AdminRoutes::Separate } else { http::AdminRoutes::Public };
        let shutdown_timeout = settings.server.shutdown_timeout;
        // Signals are not handled there: the shutdown future below is the one stop.
        let server = http::stream::upgrade::public_server(
            listener,
            move || App::new().configure(|cfg| http::configure(cfg, data.clone(), limits, admin_routes)),
            shutdown_timeout,
        )
        .context("starting the HTTP server")?;
        let admin =
            admin_listener.map(|listener| admin_server(listener, shutdown_timeout.as_secs())).transpose()?;
        let handles: Vec<ServerHandle> =
            std::iter::once(server.handle()).chain(admin.as_ref().map(|(admin, _)| admin.handle())).collect();
        let public = server.handle();
        tokio::spawn(async move {
            shutdown.await;
            // No new connection is accepted from here on (before the WebSocket clients are
            // told to reconnect, so that none reconnects here); the WebSocket connections,
            // which run beside the server's tracked requests, flush and close with 1001
            // before the graceful stop ends the workers they run on.
            public.pause().await;
            gateway.shut_down();
            gateway.drained(shutdown_timeout).await;
            for handle in handles {
                handle.stop(true).await;
            }
        });

        tracing::info!(
            environment = settings.environment.as_str(),
            address = %format_args!("http://{}:{port}", settings.server.host),
            admin_port = admin.as_ref().map(|(_, port)| *port),
            in_process_worker = worker.is_some(),
            internal_store = store.description(),
            adapters = %settings.adapter_summary(),
            "sba is serving"
        );
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        Ok(Self { server, port, admin, store, worker })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port, when there is one.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, port)| *port)
    }

    /// A handle to stop the server from elsewhere (the admin listener stops with it).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM, Ctrl-C or the shutdown future), letting in-flight
    /// requests finish, then stops the in-process worker (its current work finishes) and
    /// closes the store.
    ///
    /// # Errors
    /// When the server fails while running.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let admin = self.admin.map(|(admin, _)| (admin.handle(), tokio::spawn(admin)));
        let result = self.server.await;
        // The admin listener lives as long as the public one, however that one stopped.
        if let Some((handle, task)) = admin {
            handle.stop(true).await;
            if let Ok(Err(error)) = task.await {
                tracing::warn!(error = %error, "the admin HTTP server failed");
            }
        }
        if let Some(worker) = self.worker {
            worker.stop().await;
        }
        self.store.close().await;
        tracing::info!("sba stopped");
        result
    }
}

/// The admin listener's server (`/metrics`, `/openapi.json`, `/docs`) and its port.
fn admin_server(listener: TcpListener, shutdown_timeout: u64) -> anyhow::Result<(Server, u16)> {
    let port = listener.local_addr().context("reading the admin address")?.port();
    let server = HttpServer::new(|| App::new().configure(http::configure_admin))
        // Scrapes and the docs page: one worker is plenty.
        .workers(1)
        .shutdown_timeout(shutdown_timeout)
        .disable_signals()
        .listen(listener)
        .context("starting the admin HTTP server")?
        .run();
    Ok((server, port))
}

/// For a process without the public API (`sba worker`): the admin listener on
/// `SBA_SERVER__ADMIN_PORT`, when it is set, so that the process's metrics (the worker's
/// lag, persisted events and dead letters) are scraped like a node's. Its port and a handle
/// to stop it; the server runs on its own task.
///
/// # Errors
/// When the port cannot be bound.
pub fn standalone_admin_server(settings: &Settings) -> anyhow::Result<Option<(ServerHandle, u16)>> {
    let Some(port) = settings.server.admin_port else { return Ok(None) };
    http::metrics::recorder();
    tokio::spawn(http::metrics::upkeep());
    let (server, port) =
        admin_server(bind(settings.server.host, port)?, settings.server.shutdown_timeout.as_secs())?;
    let handle = server.handle();
    tokio::spawn(server);
    tracing::info!(admin_port = port, "serving /metrics on the admin port");
    Ok(Some((handle, port)))
}

fn bind(host: std::net::IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port)).with_context(|| format!("binding {host}:{port}"))
}
