//! The WebSocket gateway, `GET /v1/stream` (ARCHITECTURE.md §7, ADR 0018): the handshake
//! ([`handshake`]), then one task per connection ([`connection`]) answering the client's
//! ops, feeding its subscriptions' events into its outbound queue ([`subscription`]) and
//! writing that queue to the socket at the broadcast rates ([`outbound`]), all on the bare
//! TCP stream the server's upgrade service hands over
//! ([`upgrade`]) with the gateway's own framing ([`socket`]). The protocol itself (frames,
//! queue policy, replay-then-live, who may subscribe) is `sba_application::stream`.
//!
//! The authentication middleware verifies the token of this route from any of its three
//! transports and the tenant is admitted before the handler runs, so a bad token is a 401
//! problem and never an upgrade; the rate limit middleware counts handshakes like any
//! `/v1/*` request.

mod connection;
pub(super) mod handshake;
mod metrics;
mod outbound;
mod socket;
mod subscription;
pub mod upgrade;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use sba_application::ports::EventBus;
use sba_application::stream::authorize::StreamAuthorizer;
use sba_application::stream::outbound::OutboundLimits;
use sba_application::stream::subscription::FeedLimits;
use sba_application::stream::throttle::{BroadcastThrottle, ThrottlePolicy};
use tokio::sync::watch;

use self::connection::Connection;
use super::auth::{Authenticated, TenantStanding};
use super::error::{ApiError, ProblemCode};
use crate::http::AppState;

/// The route template of the gateway.
pub const ROUTE: &str = "/v1/stream";

/// The subprotocol the server selects whenever the client offers it.
pub const SUBPROTOCOL: &str = "sba.v1";

/// How the gateway treats connections (`SBA_STREAM__*`).
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    pub max_frame_bytes: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub max_subscriptions: usize,
    pub outbound: OutboundLimits,
    pub feed: FeedLimits,
    /// How long a closing connection may take to flush what is queued (shutdown, token
    /// expiry) before it is closed anyway.
    pub flush_timeout: Duration,
}

/// What every connection of the node shares: the configuration, who may subscribe, the
/// bus, the broadcast rates, and the shutdown signal.
#[derive(Debug, Clone)]
pub struct StreamGateway(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: StreamConfig,
    authorizer: StreamAuthorizer,
    bus: Arc<dyn EventBus>,
    throttle: BroadcastThrottle,
    /// `true` once the node stops: no new upgrade, and every connection flushes and closes
    /// with 1001.
    stopping: watch::Sender<bool>,
    /// How many connections are being served.
    live: watch::Sender<usize>,
}

impl StreamGateway {
    pub fn new(
        config: StreamConfig,
        authorizer: StreamAuthorizer,
        bus: Arc<dyn EventBus>,
        throttle: ThrottlePolicy,
    ) -> Self {
        Self(Arc::new(Inner {
            config,
            authorizer,
            bus,
            throttle: BroadcastThrottle::new(throttle),
            stopping: watch::Sender::new(false),
            live: watch::Sender::new(0),
        }))
    }

    /// Refuses new upgrades and tells every connection to flush its queue and close with
    /// 1001 (see [`Self::drained`]).
    pub fn shut_down(&self) {
        self.0.stopping.send_replace(true);
    }

    /// Waits until every connection has closed, at most `patience`. Connections run in
    /// tasks of their own on the HTTP server's workers, which its graceful stop does not
    /// wait for (it would end them with the workers): the server must be stopped after
    /// this, and only paused before.
    pub async fn drained(&self, patience: Duration) {
        let mut live = self.0.live.subscribe();
        let left = tokio::time::timeout(patience, live.wait_for(|live| *live == 0)).await;
        if left.is_err() {
            tracing::warn!(
                connections = *self.0.live.borrow(),
                "WebSocket connections still open after the shutdown timeout"
            );
        }
    }

    /// Counts a connection as served (and in `sba_ws_connections`) until the returned
    /// guard drops.
    fn serving(&self) -> Serving {
        self.0.live.send_modify(|live| *live += 1);
        self::metrics::connections(1.0);
        Serving(self.clone())
    }

    fn stopping(&self) -> bool {
        *self.0.stopping.borrow()
    }
}

/// A connection being served (see [`StreamGateway::drained`]).
#[derive(Debug)]
struct Serving(StreamGateway);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.0.live.send_modify(|live| *live = live.saturating_sub(1));
        self::metrics::connections(-1.0);
    }
}

/// When the connection's token stops being accepted, recorded by the authentication
/// middleware for this route.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenExpiry(pub SystemTime);

/// `GET /v1/stream`: upgrades an authenticated request to the WebSocket stream.
#[utoipa::path(get, path = "/v1/stream", tag = "stream", operation_id = "stream",
    description = include_str!("protocol.md"),
    params(
        ("access_token" = Option<String>, Query, description = "The JWT, for clients that cannot set headers (never logged); the subprotocol list `sba.v1, bearer.<jwt>` is the other alternative to `Authorization`."),
    ),
    responses(
        (status = 101, description = "Switching protocols: the WebSocket stream (frames described above)."),
        (status = 400, description = "`invalid_request`: not a WebSocket upgrade request.", body = super::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    req: HttpRequest,
    Authenticated(ctx): Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gateway = state.stream.clone();
    if gateway.stopping() {
        return Err(ApiError::new(ProblemCode::ServerBusy, "This node is shutting down; connect again.")
            .with_retry_after_ms(1000));
    }
    let (expires_at, plan) = {
        let extensions = req.extensions();
        let expiry = extensions.get::<TokenExpiry>().map_or(SystemTime::UNIX_EPOCH, |expiry| expiry.0);
        let plan =
            extensions.get::<TenantStanding>().and_then(TenantStanding::tenant).and_then(|t| t.plan.clone());
        (expiry, plan)
    };
    let mut accept = actix_http::ws::handshake(req.head()).map_err(|_| {
        ApiError::new(ProblemCode::InvalidRequest, "`GET /v1/stream` is a WebSocket upgrade.")
    })?;
    if handshake::offers_subprotocol(&req, SUBPROTOCOL) {
        accept.insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL));
    }
    let max_message_bytes = gateway.0.config.max_frame_bytes;
    let connection = Connection::open(gateway, state.into_inner(), ctx, expires_at, plan.as_deref());
    let mut response = HttpResponse::from(accept.finish().map_into_boxed_body());
    // The server's upgrade service serves the connection once the 101 is written
    // (`upgrade::serve`).
    response.extensions_mut().insert(upgrade::Accepted { connection, max_message_bytes });
    Ok(response)
}
