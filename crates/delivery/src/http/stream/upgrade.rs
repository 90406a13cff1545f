//! The public HTTP server, built by hand on actix-server and actix-http (what actix-web's
//! `HttpServer` does, plus an upgrade service), so that an upgraded WebSocket connection
//! leaves actix-http's dispatcher and its two 8 KiB buffers behind (ADR 0018, "Transport").
//!
//! actix-http hands every request that asks for an upgrade to [`serve`] with the
//! connection, instead of to the application. [`serve`] still runs the request through the
//! whole application (routing, CORS, authentication, admission, rate limits, the handler),
//! on an instance of its own per worker: when the handler accepted the upgrade (a 101
//! response carrying the [`Accepted`] connection), the 101 is written and the connection
//! is served on the bare TCP stream, in a task of its own (the gateway, not actix-server,
//! waits for these tasks at shutdown: `StreamGateway::drained`); any other response is written as it is and the TCP
//! connection closed after it.

use std::fmt;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::{BoxBody, MessageBody};
use actix_http::h1::{self, SendResponse};
use actix_http::{ConnectionType, HttpService, Request, Response, StatusCode};
use actix_server::Server;
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _, fn_factory, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use actix_web::web::Bytes;
use tokio::net::TcpStream;

use super::connection::Connection;
use super::socket;

/// What the handler leaves in the extensions of its 101 response: the connection to serve
/// once the response is written.
#[derive(Debug)]
pub struct Accepted {
    pub connection: Connection,
    pub max_message_bytes: usize,
}

/// Serves `app` on `listener`, one worker per core, until stopped through the server's
/// handle (no signal handling: the caller's shutdown future stops it; a graceful stop
/// waits up to `shutdown_timeout` for the requests in flight).
///
/// # Errors
/// When the listener cannot be used.
pub fn public_server<F, I, S, B>(
    listener: TcpListener,
    app: F,
    shutdown_timeout: Duration,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let builder = Server::build().shutdown_timeout(shutdown_timeout.as_secs()).disable_signals();
    let shutdown_signal = builder.graceful_shutdown_signal();
    builder
        .listen("sba-public", listener, move || {
            let signal = shutdown_signal.clone();
            let upgrade_app = app.clone();
            let upgrade = fn_factory(move || {
                let factory = upgrade_app().into_factory();
                async move {
                    let service = factory.new_service(app_config()).await.map_err(|error| {
                        tracing::error!(?error, "the application for upgraded connections could not start");
                    })?;
                    let service = Rc::new(service);
                    Ok::<_, ()>(fn_service(move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                        let service = Rc::clone(&service);
                        async move { serve(&*service, req, framed).await }
                    }))
                }
            });
            let application = app().into_factory().map_err(|error| error.into().error_response());
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .upgrade(upgrade)
                .finish(map_config(application, |()| app_config()))
                .tcp()
        })
        .map(actix_server::ServerBuilder::run)
}

/// The application's view of the server. Its host and address only feed `ConnectionInfo`
/// and `url_for`, which the service does not use (the peer's address is the request's own).
fn app_config() -> AppConfig {
    AppConfig::default()
}

/// Runs an upgrade request through the application and serves the WebSocket connection it
/// accepted, or writes its answer and closes.
async fn serve<S, B>(
    app: &S,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_http::Error>
where
    S: Service<Request>,
    S::Error: Into<actix_web::Error>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    let mut response: Response<BoxBody> = match app.call(req).await {
        Ok(response) => response.into().map_into_boxed_body(),
        Err(error) => error.into().error_response().into(),
    };
    let accepted = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        response.extensions_mut().remove::<Accepted>()
    } else {
        None
    };
    let (head, body) = response.into_parts();
    let body = actix_http::body::to_bytes(body).await.unwrap_or_else(|error| {
        tracing::warn!(%error, "an answer to an upgrade request lost its body");
        Bytes::new()
    });
    let mut response = head.set_body(body);
    let Some(Accepted { connection, max_message_bytes }) = accepted else {
        // An upgrade the application refused (or a route that does not upgrade): its answer,
        // then the end of the connection, whose bytes after the request head are unknown.
        response.head_mut().set_connection_type(ConnectionType::Close);
        SendResponse::new(framed, response).await?;
        return Ok(());
    };
    let framed = SendResponse::new(framed, response).await?;
    let parts = framed.into_parts();
    let (reader, writer) = socket::split(parts.io, &parts.read_buf, max_message_bytes);
    // The connection gets a task of its own, sized to it: the HTTP dispatcher's task (about
    // 6 KB more, whatever the connection does) and its buffers end here.
    drop((parts.read_buf, parts.write_buf, parts.codec));
    connection.spawn(reader, writer);
    Ok(())
}
